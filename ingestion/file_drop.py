"""File drop (前置机 inbox): files a vendor drops into a folder land in bronze exactly once, as sent.

A file is the unit of collection: one file = one Delta commit whose offset ``{"file", "sha256", "rows",
"business_date"}`` is stored with its rows (bronze.land). Every column lands as the string the file holds
(parsing is silver's job) plus ``_source_file``/``_source_line``; ``_source_pos`` = business date of the
file | file name | delivery time | line, fixed width, so a correction file (later date, or ``_XG`` after
``.``) sorts after the rows it corrects. The Delta history is the truth about what landed;
``ingest.file_ledger`` (PostgreSQL) records every file seen (landed / duplicate / quarantined) for monitoring
and for duplicate checks beyond the Delta log retention.

Order of effects per file: commit → ledger row → move to ``archive/<yyyymmdd>/``. A ``kill -9`` anywhere
leaves the file in the inbox; the next run finds its sha256 committed and only archives it. The same bytes
for the same business day under any name (a ``_1`` re-send, a vendor re-run) are a duplicate: recorded and
archived, nothing lands (header-only files of different days are identical bytes, yet each lands). A bad
file (name, encoding, columns, a value against its format, empty body) moves to the quarantine with
``<name>.reason.txt``; the run goes on with the other files.

Table options in the source YAML (besides name/keys/business_time/commit_time):
  pattern       regex on the file name (full match); named groups ``date`` (business date, parsed with
                ``date_format``, default ``%Y%m%d``) and ``correction`` (non-empty: a correction file)
  format        csv (default) | excel | json (an array of objects, or JSON lines)
  delimiter, quoting   csv only: delimiter (default ``,``); ``quoting: none`` for feeds that never quote
  encoding      auto (UTF-8 with/without BOM, else GB18030 ⊇ GBK) or a Python codec name
  columns       the header the file must carry (any order; a missing or unexpected column rejects the file)
  required      columns that must not be blank
  formats       column -> ``%Y/%m/%d %H:%M:%S`` (strftime pattern; the value must round-trip exactly),
                ``integer``, ``decimal``, ``decimal(N)`` (exactly N decimals), ``regex:<RE2>`` or ``enum:a|b``;
                blank values are not checked (see ``required``)
  allow_empty   a header-only file is valid (default false)
  snapshot_file true: every file is the table's whole state (e.g. the monthly population register). A key
                live in bronze but missing from the newest file has left (moved away, died): a delete
                (``_op`` d) for it lands in the same commit as the file. When the deletes exceed
                ``max_delete_share`` of the live keys (table option, else ``strategy.max_delete_share``) the
                table stops, nothing lands and the file stays in the inbox until an operator runs
                ``./drc ingest accept-deletes --source S --table T``
  correction    {operation_column, extra_columns, ops: {修改: u, 作废: d}}: correction files carry these
                columns too; ``ops`` maps the operation to ``_op`` (normal rows are ``r``)
  sheet         excel only: the sheet to read (default the first)
``commit_time`` (when set) is the column giving ``_source_ts`` (its ``formats`` entry parses it); otherwise
``_source_ts`` is the file's delivery time (the later of mtime and ctime: the rename into the inbox).
Connection options: ``inbox`` (``${DRC_STATE_DIR}``-style variables allowed), optional ``archive`` and
``quarantine`` (default ``$DRC_STATE_DIR/archive/<source>`` and ``$DRC_STATE_DIR/quarantine/files/<source>``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from core.db import warehouse_engine
from core.privacy import redact_personal
from core.settings import get_settings
from ingestion.bronze import (
    TableResult,
    TooManyDeletes,
    bronze_path,
    commit_log,
    delta_exists,
    guard_deletes,
    land,
    latest_versions,
)
from ingestion.monitoring import ensure_tables
from ingestion.registry import SourceConfig, SourceConfigError, TableConfig
from ingestion.runner import SourceUnavailable, run_table

log = logging.getLogger(__name__)

TZ = "Asia/Shanghai"
NAME_WIDTH = 80  # file names are padded to this width inside _source_pos
LINE_WIDTH = 9
MAX_REPORTED = 20  # violations listed in a reason file
ROWS_PER_PARTITION = 250_000
FORMATS = ("csv", "excel", "json")
# The columns bronze.land adds to every batch (BRONZE_COLUMNS beyond the mode's), with their types.
LANDED_COLUMNS = (
    ("_ingested_at", TimestampType()),
    ("_batch_id", StringType()),
    ("_source_system", StringType()),
    ("_org_code", StringType()),
)


class FileRejected(Exception):
    """A file breaks a rule of its table; it goes to quarantine with the rule and the offending lines. The lines
    name rows by their key and values, so ID and mobile numbers in them are replaced (core.privacy) before the
    reason reaches the reason file, the file ledger or a log."""

    def __init__(self, rule: str, details: list[str] | None = None) -> None:
        rule = redact_personal(rule)
        super().__init__(rule)
        self.rule = rule
        self.details = [redact_personal(line) for line in details or []]


# --- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Correction:
    operation_column: str
    extra_columns: tuple[str, ...]
    ops: dict[str, str]


@dataclass(frozen=True)
class FileSpec:
    """What a table's files must look like (parsed from the table's YAML options)."""

    table: TableConfig
    pattern: re.Pattern
    date_format: str = "%Y%m%d"
    format: str = "csv"
    delimiter: str = ","
    quote: bool = True
    encoding: str = "auto"
    columns: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    formats: dict[str, str] = field(default_factory=dict)
    allow_empty: bool = False
    correction: Correction | None = None
    sheet: str | None = None
    snapshot: bool = False  # snapshot_file: each file is the whole table; missing keys are deleted

    @classmethod
    def of(cls, source: SourceConfig, table: TableConfig) -> FileSpec:
        at = f"{source.name}.yaml: table {table.name}"
        opts = table.options
        if not opts.get("pattern") or not opts.get("columns"):
            raise SourceConfigError(f"{at}: file_drop tables need 'pattern' and 'columns'")
        try:
            pattern = re.compile(opts["pattern"])
        except re.error as exc:
            raise SourceConfigError(f"{at}: pattern is not a valid regex ({exc})") from None
        fmt = opts.get("format", "csv")
        if fmt not in FORMATS:
            raise SourceConfigError(f"{at}: format '{fmt}' is not one of {list(FORMATS)}")
        correction = None
        if opts.get("correction"):
            raw = opts["correction"]
            ops = {str(k): str(v) for k, v in (raw.get("ops") or {}).items()}
            if not raw.get("operation_column") or not ops or set(ops.values()) - {"c", "u", "d", "r"}:
                raise SourceConfigError(f"{at}: correction needs operation_column and ops mapping to c/u/d/r")
            correction = Correction(raw["operation_column"], tuple(raw.get("extra_columns") or ()), ops)
        spec = cls(
            table=table,
            pattern=pattern,
            date_format=opts.get("date_format", "%Y%m%d"),
            format=fmt,
            delimiter=str(opts.get("delimiter", ",")),
            quote=opts.get("quoting", "minimal") != "none",
            encoding=opts.get("encoding", "auto"),
            columns=tuple(opts["columns"]),
            required=tuple(opts.get("required") or ()),
            formats=dict(opts.get("formats") or {}),
            allow_empty=bool(opts.get("allow_empty", False)),
            correction=correction,
            sheet=opts.get("sheet"),
            snapshot=bool(opts.get("snapshot_file", False)),
        )
        unknown = (set(spec.required) | set(spec.formats) | set(table.keys)) - set(spec.bronze_columns)
        if unknown:
            raise SourceConfigError(f"{at}: {sorted(unknown)} not among the table's columns")
        for column, rule in spec.formats.items():
            try:
                valid_mask(pa.array([""]), str(rule))
            except (ValueError, pa.ArrowInvalid) as exc:
                raise SourceConfigError(f"{at}: formats.{column} '{rule}' is not a valid rule ({exc})") from None
        if table.commit_time and "%" not in spec.formats.get(table.commit_time, ""):
            raise SourceConfigError(f"{at}: commit_time {table.commit_time} needs a date-time entry in 'formats'")
        if spec.encoding != "auto":
            try:
                codecs.lookup(spec.encoding)
            except LookupError:
                raise SourceConfigError(f"{at}: unknown encoding '{spec.encoding}'") from None
        return spec

    @property
    def bronze_columns(self) -> tuple[str, ...]:
        """Every column the bronze table has: the file's, then the correction file's own columns."""
        if self.correction is None:
            return self.columns
        return (*self.columns, self.correction.operation_column, *self.correction.extra_columns)

    def expected(self, is_correction: bool) -> tuple[str, ...]:
        return self.bronze_columns if is_correction else self.columns


def _expand(path: str, where: str) -> Path:
    expanded = os.path.expandvars(os.path.expanduser(str(path)))
    if "$" in expanded:
        raise SourceConfigError(f"{where}: '{path}' names an environment variable that is not set")
    return Path(expanded)


@dataclass(frozen=True)
class Folders:
    inbox: Path
    archive: Path
    quarantine: Path

    @classmethod
    def of(cls, source: SourceConfig) -> Folders:
        opts, state = source.connection.options, get_settings().state_dir
        where = f"{source.name}.yaml: connection"
        return cls(
            _expand(opts["inbox"], where),
            _expand(opts.get("archive") or state / "archive" / source.name, where),
            _expand(opts.get("quarantine") or state / "quarantine" / "files" / source.name, where),
        )


# --- files ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivered:
    """A visible file in the inbox, read once."""

    path: Path
    data: bytes
    sha256: str
    received_at: datetime

    @classmethod
    def read(cls, path: Path) -> Delivered:
        data = path.read_bytes()
        stat = path.stat()
        # The rename into the inbox sets ctime; a file held back by the sender keeps its older mtime.
        received = datetime.fromtimestamp(max(stat.st_mtime, stat.st_ctime)).astimezone()
        return cls(path, data, hashlib.sha256(data).hexdigest(), received)

    @property
    def name(self) -> str:
        return self.path.name


def pending_files(inbox: Path) -> list[Path]:
    """Visible files in name order; dot-names are still being written (``.<name>.tmp``)."""
    if not inbox.is_dir():  # e.g. the 前置机 share is not mounted: retried and reported like a source down
        raise SourceUnavailable(f"inbox {inbox} is not reachable")
    return sorted(p for p in inbox.iterdir() if not p.name.startswith(".") and p.is_file())


def business_date(spec: FileSpec, name: str) -> date | None:
    match = spec.pattern.fullmatch(name)
    text = match and match.groupdict().get("date")
    if not text:
        return None
    try:
        return datetime.strptime(text, spec.date_format).date()
    except ValueError:
        raise FileRejected("file name", [f"date '{text}' in the name is not a valid {spec.date_format}"]) from None


def is_correction(spec: FileSpec, name: str) -> bool:
    match = spec.pattern.fullmatch(name)
    return bool(spec.correction and match and match.groupdict().get("correction"))


def decode(data: bytes, encoding: str) -> tuple[str, str]:
    """The text and the codec that decoded it; ``auto`` tries strict UTF-8 (BOM allowed), then GB18030."""
    candidates = ["utf-8", "gb18030"] if encoding == "auto" else [encoding]
    if encoding == "auto" and data.startswith(codecs.BOM_UTF8):
        candidates, data = ["utf-8"], data[len(codecs.BOM_UTF8) :]
    failures = []
    for codec in candidates:
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            failures.append(f"not {codec}: byte {exc.start} on line {line} cannot be decoded")
    raise FileRejected("encoding", failures)


@dataclass(frozen=True)
class Records:
    """A file read into header + rows (each with its line number), before validation."""

    header: list[str]
    lines: list[int]
    rows: list[list[Any]]


def read_csv(text: str, spec: FileSpec) -> Records:
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=spec.delimiter,
        strict=True,
        quoting=csv.QUOTE_MINIMAL if spec.quote else csv.QUOTE_NONE,
    )
    try:
        header = next(reader, None)
        if header is None:
            raise FileRejected("empty file", ["no header line"])
        lines, rows, last = [], [], reader.line_num
        for values in reader:
            if values:
                lines.append(last + 1)
                rows.append(values)
            last = reader.line_num
    except csv.Error as exc:
        raise FileRejected("csv syntax", [f"line {reader.line_num}: {exc}"]) from None
    return Records(header, lines, rows)


def _cell(value: Any) -> str | None:
    """An Excel cell as text: what the sender typed, as closely as the cell type allows."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, date) else str(value)


def read_excel(data: bytes, spec: FileSpec) -> Records:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a file that is not a workbook
        raise FileRejected("excel", [f"not a readable .xlsx workbook: {type(exc).__name__}: {exc}"]) from None
    if spec.sheet and spec.sheet not in book.sheetnames:
        raise FileRejected("excel", [f"no sheet '{spec.sheet}' (sheets: {book.sheetnames})"])
    sheet = book[spec.sheet] if spec.sheet else book.worksheets[0]
    header: list[str] | None = None
    lines, rows = [], []
    for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
        cells = [_cell(v) for v in values]
        while cells and cells[-1] in (None, ""):
            cells.pop()
        if not cells:
            continue
        if header is None:
            header = [c or "" for c in cells]
        else:
            lines.append(number)
            rows.append(cells + [None] * (len(header) - len(cells)))
    book.close()
    if header is None:
        raise FileRejected("empty file", ["the sheet has no header row"])
    return Records(header, lines, rows)


def read_json(text: str, spec: FileSpec) -> Records:
    try:
        parsed = json.loads(text)
        items, lines = (parsed, list(range(1, len(parsed) + 1))) if isinstance(parsed, list) else ([parsed], [1])
    except json.JSONDecodeError:
        items, lines = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise FileRejected("json syntax", [f"line {number}: {exc.msg}"]) from None
                lines.append(number)
    bad = [n for n, item in zip(lines, items, strict=True) if not isinstance(item, dict)]
    if bad:
        raise FileRejected("json structure", [f"record {n} is not an object" for n in bad[:MAX_REPORTED]])
    # JSON omits keys freely: the header is every key that occurs; a key absent from a record is null.
    header = list(dict.fromkeys(k for item in items for k in item)) or list(spec.columns)
    rows = [
        [
            v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for v in (item.get(k) for k in header)
        ]
        for item in items
    ]
    return Records(header, lines, rows)


def read_records(spec: FileSpec, data: bytes) -> tuple[Records, str | None]:
    if spec.format == "excel":
        return read_excel(data, spec), None
    text, codec = decode(data, spec.encoding)
    return (read_json(text, spec) if spec.format == "json" else read_csv(text, spec)), codec


# --- validation -----------------------------------------------------------------------------------
def check_header(records: Records, expected: tuple[str, ...]) -> list[str]:
    """The header as column names, or rejected: duplicates, missing or unexpected columns."""
    header = [h.strip() for h in records.header]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    missing = [c for c in expected if c not in header]
    unexpected = [h for h in header if h not in expected]
    problems = (
        ([f"duplicate column(s) {duplicates}"] if duplicates else [])
        + ([f"missing column(s) {missing}"] if missing else [])
        + (
            [f"unexpected column(s) {unexpected} (add them to the table's columns to take them in)"]
            if unexpected
            else []
        )
    )
    if problems:
        raise FileRejected("columns", [f"line 1 (header): {p}" for p in problems])
    width = len(header)
    wrong = [(n, len(r)) for n, r in zip(records.lines, records.rows, strict=True) if len(r) != width]
    if wrong:
        raise FileRejected(
            "field count",
            [f"line {n}: {got} fields, the header has {width}" for n, got in wrong[:MAX_REPORTED]] + _more(len(wrong)),
        )
    return header


def _more(count: int) -> list[str]:
    return [f"... {count - MAX_REPORTED} more"] if count > MAX_REPORTED else []


def valid_mask(values: pa.Array, rule: str) -> pa.Array:
    """True where a non-blank value satisfies the format rule (vectorised: files can hold millions of rows)."""
    decimals = re.fullmatch(r"decimal\((\d+)\)", rule)
    if "%" in rule:
        parsed = pc.strptime(values, format=rule, unit="s", error_is_null=True)
        ok = pc.equal(pc.strftime(parsed, format=rule), values)  # round trip: no 2026/2/30, no 2026/1/5
    elif rule.startswith("enum:"):
        ok = pc.is_in(values, value_set=pa.array(rule[5:].split("|")))
    elif rule.startswith("regex:") or rule in ("integer", "decimal") or decimals:
        regex = {"integer": r"-?\d+", "decimal": r"-?\d+(\.\d+)?"}.get(rule) or (
            rf"-?\d+\.\d{{{decimals.group(1)}}}" if decimals else rule.removeprefix("regex:")
        )
        ok = pc.match_substring_regex(values, f"^(?:{regex})$")
    else:
        raise ValueError("use a strftime pattern, integer, decimal, decimal(N), regex:<RE2> or enum:a|b")
    return pc.fill_null(ok, False)


def _blank(values: pa.Array) -> pa.Array:
    return pc.fill_null(pc.equal(values, ""), True)


def validate(spec: FileSpec, columns: dict[str, pa.Array], lines: list[int], correction: bool) -> None:
    """Reject the file if any value breaks a rule; the reason names line, row key, column and rule."""
    checks: list[tuple[str, str, pa.Array]] = []  # (column, rule text, bad mask)
    required = (*spec.required, spec.correction.operation_column) if correction else spec.required
    for column in required:
        checks.append((column, f"{column} is required", _blank(columns[column])))
    rules = dict(spec.formats)
    if correction:
        rules[spec.correction.operation_column] = "enum:" + "|".join(spec.correction.ops)
    for column, rule in rules.items():
        if column in columns:
            values = columns[column]
            bad = pc.and_(pc.invert(_blank(values)), pc.invert(valid_mask(values, rule)))
            checks.append((column, f"{column} format '{rule}'", bad))
    found: list[tuple[int, str, str]] = []
    violated: list[str] = []
    total = 0
    for column, rule, bad in checks:
        where = pc.indices_nonzero(bad).to_pylist()
        if where:
            violated.append(rule)
            total += len(where)
            found += [(i, column, rule) for i in where[:MAX_REPORTED]]
    if not found:
        return
    found.sort()
    details = []
    for i, column, rule in found[:MAX_REPORTED]:
        key = ", ".join(f"{k}={columns[k][i].as_py()}" for k in spec.table.keys if k in columns)
        details.append(f"line {lines[i]} ({key}): {column} = {columns[column][i].as_py()!r} breaks {rule}")
    raise FileRejected("; ".join(violated), details + _more(total))


# --- one file into bronze -----------------------------------------------------------------------
def frame_schema(spec: FileSpec) -> StructType:
    return StructType(
        [StructField(c, StringType()) for c in spec.bronze_columns]
        + [
            StructField("_source_line", LongType()),
            StructField("_source_ts", TimestampType()),
            StructField("_op", StringType()),
        ]
    )


def parse_file(spec: FileSpec, file: Delivered) -> tuple[pa.Table, str | None]:
    """The file as an Arrow table of bronze columns (strings as sent), ``_source_line``, ``_source_ts``, ``_op``.

    Raises FileRejected for anything that breaks the table's rules. Pure: the bytes were read by Delivered.
    """
    if len(file.name) > NAME_WIDTH:
        raise FileRejected("file name", [f"longer than {NAME_WIDTH} characters"])
    correction = is_correction(spec, file.name)
    records, codec = read_records(spec, file.data)
    header = check_header(records, spec.expected(correction))
    if not records.rows and not spec.allow_empty:
        raise FileRejected("empty file", ["header only; this table expects rows (allow_empty: false)"])
    count = len(records.rows)
    transposed = list(zip(*records.rows, strict=True)) if count else [()] * len(header)
    columns = {name: pa.array(values, pa.string()) for name, values in zip(header, transposed, strict=True)}
    validate(spec, columns, records.lines, correction)
    delivered = pa.scalar(file.received_at, pa.timestamp("us", tz=TZ))
    if spec.table.commit_time:
        parsed = pc.strptime(
            columns[spec.table.commit_time], format=spec.formats[spec.table.commit_time], unit="s", error_is_null=True
        )
        local = pc.assume_timezone(parsed, timezone=TZ, ambiguous="earliest", nonexistent="earliest")
        source_ts = pc.fill_null(pc.cast(local, pa.timestamp("us", tz=TZ)), delivered)
    else:
        source_ts = pa.array([file.received_at] * count, pa.timestamp("us", tz=TZ))
    if correction:
        ops = pa.array([spec.correction.ops[v] for v in columns[spec.correction.operation_column].to_pylist()])
    else:
        ops = pa.array(["r"] * count, pa.string())
    arrays = [columns.get(c, pa.nulls(count, pa.string())) for c in spec.bronze_columns]
    arrays += [pa.array(records.lines, pa.int64()), source_ts, ops]
    names = [*spec.bronze_columns, "_source_line", "_source_ts", "_op"]
    return pa.Table.from_arrays(arrays, names=names), codec


def position_prefix(spec: FileSpec, file: Delivered) -> str:
    """``yyyymmdd|name (padded)|delivery time|``: the line number completes a fixed-width ``_source_pos``."""
    day = business_date(spec, file.name) or file.received_at.date()
    return f"{day:%Y%m%d}|{file.name:<{NAME_WIDTH}}|{file.received_at:%Y%m%d%H%M%S}|"


def to_frame(spark: SparkSession, spec: FileSpec, file: Delivered, rows: pa.Table, parallelism: int) -> DataFrame:
    frame = spark.createDataFrame(rows, schema=frame_schema(spec))
    partitions = max(1, min(parallelism, rows.num_rows // ROWS_PER_PARTITION + 1))
    return (
        frame.coalesce(partitions)
        .withColumn("_source_file", F.lit(file.name))
        .withColumn(
            "_source_pos",
            F.concat(F.lit(position_prefix(spec, file)), F.lpad(F.col("_source_line").cast("string"), LINE_WIDTH, "0")),
        )
    )


def ensure_bronze_table(spark: SparkSession, source: SourceConfig, table: TableConfig, schema: StructType) -> None:
    """Create the bronze table before its first batch, for two table properties land() cannot set:
    column mapping (vendors' headers hold characters Delta forbids, '体重(kg)'), and file statistics only on the
    columns anything filters on (keys, batch, positions): statistics on every text column slow writes ~40%.
    """
    path = bronze_path(source.name, table.name)
    if delta_exists(spark, path):
        return
    if Path(path).exists():  # a creation killed before its first commit: no data, and Delta refuses the place
        log.warning("%s.%s: removing %s, left without a commit by an interrupted run", source.name, table.name, path)
        shutil.rmtree(path)
    landed = StructType(
        schema.fields + [StructField(name, kind) for name, kind in LANDED_COLUMNS if name not in schema.fieldNames()]
    )
    indexed = [*table.keys, "_batch_id", "_source_pos", "_source_ts", "_source_file", "_ingested_at"]
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(landed)
        .property("delta.columnMapping.mode", "name")
        .property("delta.minReaderVersion", "2")
        .property("delta.minWriterVersion", "5")
        .property("delta.dataSkippingStatsColumns", ",".join(f"`{c}`" for c in indexed))
        .execute()
    )


def delivery_key(sha256: str, day: date | None) -> str:
    """What makes a delivery unique: its bytes for its business day. Header-only files of two days are
    byte-identical yet two deliveries; a ``_1`` re-send or a vendor re-run has the same day and bytes."""
    return f"{sha256}@{day:%Y%m%d}" if day else sha256


@dataclass
class Landed:
    """A delivery known to be in bronze (from the Delta history and/or the ledger)."""

    file: str
    table: str
    sha256: str
    day: date | None
    batch_id: str
    rows: int
    table_id: str
    in_ledger: bool = False
    moved: bool = False
    withdrawn: int = 0  # deletes a snapshot file landed for keys it no longer lists

    @property
    def key(self) -> str:
        return delivery_key(self.sha256, self.day)


def table_id(spark: SparkSession, source: SourceConfig, table: TableConfig) -> str | None:
    """The bronze table's Delta id: a table deleted and rebuilt gets a new one, so older ledger rows lapse."""
    path = bronze_path(source.name, table.name)
    return DeltaTable.forPath(spark, path).detail().first()["id"] if delta_exists(spark, path) else None


def committed_files(spark: SparkSession, source: SourceConfig, table: TableConfig, delta_id: str) -> dict[str, Landed]:
    """Every delivery committed to this bronze table: the truth about what has landed."""
    found = []
    for commit in commit_log(source.name, table.name):
        meta = json.loads(commit["userMetadata"])
        offset = meta.get("offset")
        if isinstance(offset, dict) and offset.get("sha256"):
            day = date.fromisoformat(offset["business_date"]) if offset.get("business_date") else None
            found.append(
                Landed(
                    offset["file"],
                    table.name,
                    offset["sha256"],
                    day,
                    meta["batch_id"],
                    int(offset.get("rows", 0)),
                    delta_id,
                )
            )
    return {landed.key: landed for landed in found}


def with_withdrawals(
    spark: SparkSession, source: SourceConfig, spec: FileSpec, file: Delivered, frame: DataFrame
) -> tuple[DataFrame, int]:
    """A snapshot file's rows plus a delete (``_op`` d) for every key live in bronze that the newest snapshot
    no longer lists (a resident who moved away or died), and how many deletes that is.

    The deletes sort after every older row of their key and before the newest file's lines (its position
    prefix, line 0). A late older file is measured against the newest one too, so it cannot bring back a
    key that has left. Raises TooManyDeletes (via ``guard_deletes``) when they exceed the table's share and
    no operator accepted them: a truncated or wrong file must not withdraw half the county.
    """
    table = spec.table
    path = bronze_path(source.name, table.name)
    if not delta_exists(spark, path):
        return frame, 0
    present = spark.read.format("delta").load(path)
    landed = present.select(
        *[
            F.col(f"`{c}`") if c in present.columns else F.lit(None).cast(frame.schema[c].dataType).alias(c)
            for c in frame.columns
        ]
    )
    keys = list(table.keys)
    newest = landed.where(F.col("_op") == "r").agg(F.max("_source_pos")).first()[0]
    prefix = max(position_prefix(spec, file), newest[:-LINE_WIDTH] if newest else "")
    live = latest_versions(landed, keys).where(F.col("_op") != "d").count()
    leavers = latest_versions(landed.unionByName(frame), keys).where(
        (F.col("_op") != "d") & (F.col("_source_pos") < F.lit(prefix))
    )
    count = leavers.count()
    if not count:
        return frame, 0
    try:
        guard_deletes(source, table, deletes=count, current=live, read=frame.count())
    except TooManyDeletes as exc:
        raise TooManyDeletes(
            f"{exc} (snapshot file {file.name}: it stays in the inbox and lands with its "
            "deletes once they are accepted; if the file is wrong, replace it with the "
            "sender's corrected one)"
        ) from None
    deletes = (
        leavers.withColumn("_op", F.lit("d"))
        .withColumn("_source_pos", F.lit(prefix + "0" * LINE_WIDTH))
        .withColumn("_source_ts", F.lit(file.received_at).cast("timestamp"))
        .withColumn("_source_file", F.lit(file.name))
        .withColumn("_source_line", F.lit(None).cast("long"))
    )
    log.info("%s.%s: %s withdraws %d key(s) it no longer lists", source.name, table.name, file.name, count)
    return frame.unionByName(deletes.select(*frame.columns)), count


def land_file(spark: SparkSession, source: SourceConfig, spec: FileSpec, file: Delivered, rows: pa.Table) -> Landed:
    """One Delta commit holding the file's rows and ``{"file", "sha256", "rows", "business_date"}`` as offset
    (and, for a snapshot file, the deletes of the keys it no longer lists: one commit, so never one without
    the other)."""
    table, day = spec.table, business_date(spec, file.name)
    frame = to_frame(spark, spec, file, rows, source.strategy.parallelism)
    withdrawn = 0
    if spec.snapshot:
        frame, withdrawn = with_withdrawals(spark, source, spec, file, frame)
    ensure_bronze_table(spark, source, table, frame.schema)
    offset = {
        "file": file.name,
        "sha256": file.sha256,
        "rows": rows.num_rows,
        "business_date": day.isoformat() if day else None,
    }
    land(spark, frame, source=source, table=table, offset=offset, ingested_at=datetime.now().astimezone())
    latest = DeltaTable.forPath(spark, bronze_path(source.name, table.name)).history(1).first()
    meta = json.loads(latest["userMetadata"] or "{}")
    if (meta.get("offset") or {}).get("sha256") != file.sha256:
        raise RuntimeError(f"{source.name}.{table.name}: another collector committed while {file.name} was landing")
    return Landed(
        file.name,
        table.name,
        file.sha256,
        day,
        meta["batch_id"],
        rows.num_rows,
        table_id(spark, source, table),
        withdrawn=withdrawn,
    )


# --- the ledger (PostgreSQL) ----------------------------------------------------------------------
def ledger_landed(source: str, table_ids: dict[str, str]) -> dict[str, Landed]:
    """Files the ledger records as landed in bronze tables that still exist (same Delta id)."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT sha256, business_date, file_name, table_name, batch_id, rows, delta_table_id, "
                "moved_at IS NOT NULL AS moved FROM ingest.file_ledger WHERE source_system = :s AND status = 'landed'"
            ),
            {"s": source},
        )
        found = [
            Landed(
                r.file_name,
                r.table_name,
                r.sha256,
                r.business_date,
                r.batch_id,
                r.rows,
                r.delta_table_id,
                True,
                r.moved,
            )
            for r in rows
            if r.delta_table_id and table_ids.get(r.table_name) == r.delta_table_id
        ]
        return {landed.key: landed for landed in found}


def record_file(
    source: str,
    table: str | None,
    file: Delivered,
    status: str,
    *,
    reason: str | None = None,
    landed: Landed | None = None,
    day: date | None = None,
    encoding: str | None = None,
    moved_to: Path | None = None,
) -> None:
    """One ledger row; a content recorded as landed before (a bronze table since rebuilt) is updated."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.file_ledger (source_system, table_name, file_name, sha256, bytes, encoding, "
                "status, "
                "reason, rows, batch_id, delta_table_id, business_date, received_at, moved_to, moved_at) VALUES (:s, "
                ":t, "
                ":f, :sha, :bytes, :enc, :status, :reason, :rows, :batch, :tid, :day, :received, :moved_to, "
                "CASE WHEN :moved_to IS NULL THEN NULL ELSE now() END) "
                "ON CONFLICT (source_system, sha256, business_date) WHERE status = 'landed' DO UPDATE SET "
                "table_name = excluded.table_name, file_name = excluded.file_name, reason = excluded.reason, "
                "rows = excluded.rows, batch_id = excluded.batch_id, delta_table_id = excluded.delta_table_id, "
                "processed_at = excluded.processed_at, moved_to = NULL, moved_at = NULL"
            ),
            {
                "s": source,
                "t": table,
                "f": file.name,
                "sha": file.sha256,
                "bytes": len(file.data),
                "enc": encoding,
                "status": status,
                "reason": reason,
                "rows": landed.rows if landed else 0,
                "batch": landed.batch_id if landed else None,
                "tid": landed.table_id if landed else None,
                "day": day,
                "received": file.received_at,
                "moved_to": None if moved_to is None else str(moved_to),
            },
        )


def record_archived(source: str, landed: Landed, moved_to: Path) -> None:
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ingest.file_ledger SET moved_to = :p, moved_at = now() WHERE source_system = :s "
                "AND sha256 = :sha AND business_date IS NOT DISTINCT FROM :day AND status = 'landed'"
            ),
            {"s": source, "sha": landed.sha256, "day": landed.day, "p": str(moved_to)},
        )


# --- moving files -------------------------------------------------------------------------------
def archive(folders: Folders, file: Delivered, day: date | None) -> Path:
    """Move out of the inbox into ``archive/<yyyymmdd>/``; an older different file of that name is kept."""
    target_dir = folders.archive / f"{day or file.received_at.date():%Y%m%d}"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / file.name
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() != file.sha256:
        target = target_dir / f"{file.path.stem}.{file.sha256[:12]}{file.path.suffix}"
    shutil.move(file.path, target)
    return target


def quarantine(
    folders: Folders, source: SourceConfig, table: str | None, file: Delivered, rejected: FileRejected
) -> Path:
    """Reason first, then the file: a quarantined file always has its reason next to it."""
    folders.quarantine.mkdir(parents=True, exist_ok=True)
    target = folders.quarantine / file.name
    reason = [
        f"source: {source.name}",
        f"file: {file.name}",
        f"table: {table or '(no table matches the name)'}",
        f"sha256: {file.sha256}",
        f"received: {file.received_at:%Y-%m-%d %H:%M:%S}",
        f"quarantined: {datetime.now():%Y-%m-%d %H:%M:%S}",
        f"rule: {rejected.rule}",
        *rejected.details,
        "",
        "Fix the file (or the table's rules in config/sources/<source>.yaml) and put it back in the inbox.",
    ]
    Path(f"{target}.reason.txt").write_text("\n".join(reason) + "\n", encoding="utf-8")
    shutil.move(file.path, target)
    return target


# --- collection -----------------------------------------------------------------------------------
@dataclass
class Run:
    """One collection run over one inbox: the landed deliveries are shared by the tables of the source."""

    spark: SparkSession
    source: SourceConfig
    folders: Folders
    landed: dict[str, Landed]
    notes: dict[str, list[str]] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)  # per table: deletes landed by snapshot files

    def note(self, table: str, text: str) -> None:
        self.notes.setdefault(table, []).append(text)
        log.warning("%s.%s: %s", self.source.name, table, text)

    def already_landed(self, spec: FileSpec | None, file: Delivered, day: date | None) -> bool:
        """Archive a delivery already in bronze: a leftover of an interrupted run, or a duplicate.

        A file no table claims is a duplicate when its bytes landed on any day.
        """
        prior = (
            self.landed.get(delivery_key(file.sha256, day))
            if spec
            else next((landed for landed in self.landed.values() if landed.sha256 == file.sha256), None)
        )
        if prior is None:
            return False
        if prior.file == file.name and not prior.moved:
            # Committed (and maybe recorded) before a crash: finish the job, land nothing.
            if not prior.in_ledger:
                record_file(
                    self.source.name,
                    prior.table,
                    file,
                    "landed",
                    landed=prior,
                    day=day,
                    reason="committed by an interrupted run; archived on restart",
                )
            record_archived(self.source.name, prior, archive(self.folders, file, day))
            prior.in_ledger = prior.moved = True
            return True
        moved_to = archive(self.folders, file, day)
        record_file(
            self.source.name,
            spec.table.name if spec else None,
            file,
            "duplicate",
            reason=f"duplicate of {prior.file}",
            day=day,
            moved_to=moved_to,
        )
        self.note(spec.table.name if spec else "*", f"{file.name}: duplicate of {prior.file}, nothing landed")
        return True

    def take(self, spec: FileSpec, path: Path) -> int:
        """One file of a table: land it, or recognise it as landed already, or quarantine it. Rows landed."""
        file = Delivered.read(path)
        table = spec.table.name
        try:
            day = business_date(spec, file.name)
            if self.already_landed(spec, file, day):
                return 0
            rows, codec = parse_file(spec, file)
        except FileRejected as rejected:
            self.reject(table, file, rejected)
            return 0
        landed = land_file(self.spark, self.source, spec, file, rows)
        self.landed[landed.key] = landed
        self.withdrawn[table] = self.withdrawn.get(table, 0) + landed.withdrawn
        record_file(self.source.name, table, file, "landed", landed=landed, day=day, encoding=codec)
        landed.in_ledger = True
        record_archived(self.source.name, landed, archive(self.folders, file, day))
        landed.moved = True
        return landed.rows

    def reject(self, table: str | None, file: Delivered, rejected: FileRejected) -> None:
        moved_to = quarantine(self.folders, self.source, table, file, rejected)
        reason = f"{rejected.rule}: {rejected.details[0]}" if rejected.details else rejected.rule
        record_file(self.source.name, table, file, "quarantined", reason=reason, moved_to=moved_to)
        self.note(table or "*", f"{file.name} quarantined ({reason})")

    def collect_table(self, spec: FileSpec, paths: list[Path]) -> TableResult:
        rows = sum(self.take(spec, path) for path in paths)
        name = spec.table.name
        notes = self.notes.pop(name, [])
        deleted = self.withdrawn.pop(name, 0)
        status = "success" if rows or deleted else "no_change"
        return TableResult(
            self.source.name,
            name,
            rows,
            status,
            error="; ".join(notes) or None,
            counts={"deleted": deleted} if deleted else None,
        )


def match_table(specs: list[FileSpec], name: str) -> FileSpec | None:
    """The first table whose pattern matches the whole file name."""
    return next((s for s in specs if s.pattern.fullmatch(name)), None)


def known_files(spark: SparkSession, source: SourceConfig) -> dict[str, Landed]:
    """Every landed content: the Delta histories (truth, recent commits) overlaid with the ledger (all time)."""
    landed: dict[str, Landed] = {}
    ids = {t.name: delta_id for t in source.tables if (delta_id := table_id(spark, source, t))}
    for table in source.tables:
        if table.name in ids:
            landed.update(committed_files(spark, source, table, ids[table.name]))
    landed.update(ledger_landed(source.name, ids))
    return landed


def collect(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    """Collect every visible file of the inbox, table by table, each file in name order.

    One collector per inbox at a time: the runner holds the source's lock (monitoring.source_lock).
    """
    specs = [FileSpec.of(source, t) for t in source.tables]
    folders = Folders.of(source)
    paths = pending_files(folders.inbox)
    run = Run(spark, source, folders, known_files(spark, source))
    groups: dict[str, list[Path]] = {s.table.name: [] for s in specs}
    unmatched = []
    for path in paths:
        spec = match_table(specs, path.name)
        (groups[spec.table.name] if spec else unmatched).append(path)
    results = [run_table(spark, source, s.table, lambda s=s: run.collect_table(s, groups[s.table.name])) for s in specs]
    for path in unmatched:
        file = Delivered.read(path)
        if not run.already_landed(None, file, None):
            patterns = ", ".join(s.pattern.pattern for s in specs)
            run.reject(None, file, FileRejected("file name", [f"matches no table's pattern ({patterns})"]))
    if run.notes:
        results.append(
            TableResult(
                source.name, "*", 0, "no_change", error="; ".join(n for notes in run.notes.values() for n in notes)
            )
        )
    return results


def check_config(source: SourceConfig) -> None:
    """``ingest validate``: name patterns, columns, format rules and folders of every file type."""
    Folders.of(source)
    for table in source.tables:
        FileSpec.of(source, table)
