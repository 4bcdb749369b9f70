"""MariaDB/MySQL log-based CDC (mode ``mysql_binlog``): the row binlog becomes c/u/d rows in bronze, exactly once.

Why the binlog: deletes (作废) and every intermediate version are only visible there, and reading it costs the
source nothing. The server needs ``binlog_format=ROW``, ``binlog_row_image=FULL`` and ``binlog_row_metadata=FULL``
(column names travel with each event, so an ALTER TABLE needs no schema lookup); the user needs REPLICATION SLAVE
and BINLOG MONITOR (or REPLICATION CLIENT).

- First run of a table (no bronze yet): note the binlog end P, snapshot the table with Spark JDBC and land it as
  ``_op='r'`` with offset P. Rows changed after P may already show their new state in the snapshot; their events
  are replayed afterwards and sort later, so the newest version per key is still right.
- Every run then reads events from the resume point (min of the source checkpoint and the offsets of stopped
  tables; before the first checkpoint, the lowest table offset) to the binlog end seen at its start, never
  waiting for new ones, in batches of ``strategy.batch_size`` row changes cut at transaction ends (XID, or a DDL
  statement). Per table, changes at or before its committed offset are dropped; the rest land as one commit
  whose offset is the batch end. The checkpoint moves to the batch end once every table still flowing has
  committed it (held back at a table that failed or stopped in this run).
- ``_op``: WriteRows → 'c'; UpdateRows → 'u' with the after image (an update that changes the key also lands
  'd' for the old key); DeleteRows → 'd' with the before image.
- ``_source_pos`` = ``<binlog file number:6>-<event end position:12>-<row:16>``, unique per landed row: for an
  event the row's 1-based index within it; for snapshot rows position P and a unique row id, so they sort after
  every event that ended by P and before every later one.
- ``_source_ts``: for r/c/u the table's ``commit_time`` column (XGSJ, the row's own commit time); for 'd' the
  binlog event timestamp (whole seconds), because a before image only carries the previous change's time. When
  the commit-time column is missing or NULL, c/u use the event timestamp and r the snapshot time.
- Schema drift: events carry their own column list. An added column is typed from the source's current JDBC
  schema and lands (bronze merges it); an event lacking a column makes ``land`` raise SchemaDriftError, so that
  table stops (the rows before the change still land) while the others keep flowing.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from ingestion import monitoring
from ingestion.bronze import TableResult, bronze_path, committed_offset, delta_exists, land
from ingestion.registry import SourceConfig, TableConfig
from ingestion.runner import run_table

BEIJING = ZoneInfo("Asia/Shanghai")  # DATETIME columns without zone are Beijing time
FETCH_SIZE = "10000"
MODE_FIELDS = [
    T.StructField("_op", T.StringType()),
    T.StructField("_source_ts", T.TimestampType()),
    T.StructField("_source_pos", T.StringType()),
]
REQUIRED_SETTINGS = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


@dataclass(frozen=True, order=True)
class Position:
    """A place in the binlog, ordered across file rotations by (file number, byte offset)."""

    seq: int
    pos: int
    file: str = field(compare=False)

    @classmethod
    def at(cls, file: str, pos: int) -> Position:
        match = re.search(r"(\d+)$", file)
        if match is None:
            raise ValueError(f"binlog file name {file!r} does not end in a sequence number")
        return cls(int(match.group(1)), int(pos), file)

    @classmethod
    def parse(cls, offset: Any) -> Position | None:
        """From a committed offset or checkpoint: {"file", "pos"} or its JSON text."""
        if offset is None:
            return None
        value = json.loads(offset) if isinstance(offset, str) else offset
        return cls.at(value["file"], value["pos"])

    def offset(self) -> dict[str, Any]:
        return {"file": self.file, "pos": self.pos}

    def text(self) -> str:
        return json.dumps(self.offset())

    def prefix(self) -> str:
        return f"{self.seq:06d}-{self.pos:012d}-"

    def source_pos(self, row: int) -> str:
        return f"{self.prefix()}{row:016d}"


@dataclass(frozen=True)
class Change:
    """One row change read from the binlog."""

    table: str  # the table's name as configured
    op: str  # c | u | d
    values: dict[str, Any]  # column (source spelling) -> value
    at: datetime  # event timestamp (aware)
    end: Position  # end of the event: the change is covered by any offset >= end
    row: int  # 1-based among the event's changes


# --- the server -----------------------------------------------------------------------------------------------


def _settings(source: SourceConfig) -> dict[str, Any]:
    host, port = source.connection.address()
    return {
        "host": host,
        "port": port,
        "user": source.connection.user,
        "password": source.connection.secret(),
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }


def _query(source: SourceConfig, sql: str) -> list[tuple]:
    connection = pymysql.connect(**_settings(source))
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()


def check_server(source: SourceConfig) -> None:
    """Refuse a server whose binlog would silently miss changes (statement format, minimal images)."""
    names = ", ".join(f"@@{name}" for name in REQUIRED_SETTINGS)
    try:
        values = _query(source, f"SELECT {names}")[0]
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == 1193:  # unknown system variable: too old for row metadata
            raise RuntimeError(
                f"{source.connection.describe()}: mysql_binlog needs MariaDB >= 10.5 or MySQL "
                ">= 8.0.14 (binlog_row_metadata)"
            ) from None
        raise
    actual = dict(zip(REQUIRED_SETTINGS, values, strict=True))
    wrong = [
        f"{name}={actual[name]} (needs {need})"
        for name, need in REQUIRED_SETTINGS.items()
        if str(actual[name]).upper() != need
    ]
    if wrong:
        raise RuntimeError(f"{source.connection.describe()}: binlog not usable for CDC: {', '.join(wrong)}")


def binlog_end(source: SourceConfig) -> Position:
    """The position after the last committed transaction."""
    try:
        rows = _query(source, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:  # MySQL 8.4 renamed it
        rows = _query(source, "SHOW BINARY LOG STATUS")
    if not rows:
        raise RuntimeError(f"{source.connection.describe()}: binary logging is off (log_bin); mysql_binlog needs it")
    return Position.at(rows[0][0], rows[0][1])


def _check_available(source: SourceConfig, start: Position) -> None:
    files = {row[0] for row in _query(source, "SHOW BINARY LOGS")}
    if start.file not in files:
        raise RuntimeError(
            f"{source.connection.describe()}: binlog {start.file} (resume point of {source.name}) has been purged; "
            "changes since then are lost to CDC. Remove the source's bronze tables and checkpoint to snapshot again, "
            "and keep binlogs longer than the collection interval (binlog_expire_logs_seconds)."
        )


def _server_id() -> int:
    """A replica id unique per process: the server drops an older dump connection with the same id."""
    return 1_000_000 + os.getpid()


# --- reading the binlog ---------------------------------------------------------------------------------------


def _row_changes(event: Any, table: TableConfig, end: Position) -> list[Change]:
    at = datetime.fromtimestamp(event.timestamp, BEIJING)
    keys = [k.lower() for k in table.keys]
    images: list[tuple[str, dict[str, Any]]] = []
    for row in event.rows:
        if isinstance(event, WriteRowsEvent):
            images.append(("c", row["values"]))
        elif isinstance(event, DeleteRowsEvent):
            images.append(("d", row["values"]))
        else:
            before, after = row["before_values"], row["after_values"]
            lower_before = {k.lower(): v for k, v in before.items()}
            lower_after = {k.lower(): v for k, v in after.items()}
            if any(lower_before.get(k) != lower_after.get(k) for k in keys):
                images.append(("d", before))
            images.append(("u", after))
    return [Change(table.name, op, values, at, end, i) for i, (op, values) in enumerate(images, start=1)]


def read_changes(
    source: SourceConfig, tables: dict[str, TableConfig], start: Position, end: Position, limit: int
) -> tuple[list[Change], Position]:
    """Row changes of ``tables`` (lower-case name → config) after ``start``, whole transactions only, stopping
    at the first transaction end at or past ``end`` or once ``limit`` changes are read.

    Returns the changes and the position after the last whole transaction read (the batch end).
    """
    stream = BinLogStreamReader(
        connection_settings=_settings(source),
        server_id=_server_id(),
        resume_stream=True,
        log_file=start.file,
        log_pos=start.pos,
        blocking=False,
        only_schemas=[source.database],
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent],
        enable_logging=False,
    )
    changes: list[Change] = []
    pending: list[Change] = []
    cut = start
    try:
        for event in stream:
            here = Position.at(stream.log_file, stream.log_pos)
            if isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and event.query.strip().upper() != "BEGIN"
            ):
                changes += pending
                pending = []
                cut = here
                if len(changes) >= limit or here >= end:
                    break
            elif isinstance(event, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                table = tables.get(event.table.lower())
                if table is not None:
                    pending += _row_changes(event, table, here)
    finally:
        stream.close()
    return changes, cut


# --- building the batch ---------------------------------------------------------------------------------------


def _converter(data_type: T.DataType) -> Callable[[Any], Any]:
    """Turn a binlog value into what Arrow expects for the bronze column's type."""
    if isinstance(data_type, T.TimestampType):
        return lambda v: v.replace(tzinfo=BEIJING) if isinstance(v, datetime) and v.tzinfo is None else v
    if isinstance(data_type, T.StringType):
        return lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    if isinstance(data_type, T.BooleanType):
        return bool
    if isinstance(data_type, T.IntegralType):
        return int
    if isinstance(data_type, T.DecimalType):
        return lambda v: v if isinstance(v, Decimal) else Decimal(str(v))
    if isinstance(data_type, T.FractionalType):
        return float
    if isinstance(data_type, T.DateType):
        return lambda v: v.date() if isinstance(v, datetime) else v if isinstance(v, date) else None
    return lambda v: v


def changes_frame(
    spark: SparkSession, changes: list[Change], types: dict[str, T.DataType], commit_time: str | None
) -> DataFrame:
    """The changes as one DataFrame: their columns (source order) typed by ``types`` (lower-case name →
    type; unknown columns as text), plus ``_op``, ``_source_ts``, ``_source_pos``. Built through Arrow."""
    columns = list(dict.fromkeys(name for change in changes for name in change.values))
    fields = [T.StructField(name, types.get(name.lower(), T.StringType())) for name in columns]
    schema = T.StructType(fields + MODE_FIELDS)
    arrays = []
    for f in fields:
        convert = _converter(f.dataType)
        arrays.append([None if (v := change.values.get(f.name)) is None else convert(v) for change in changes])
    commit = next((name for name in columns if commit_time and name.lower() == commit_time.lower()), None)
    to_ts = _converter(T.TimestampType())
    stamps = [
        change.at
        if change.op == "d" or commit is None or change.values.get(commit) is None
        else to_ts(change.values[commit])
        for change in changes
    ]
    arrays += [[change.op for change in changes], stamps, [change.end.source_pos(change.row) for change in changes]]
    arrow_schema = to_arrow_schema(schema)
    columns = [pa.array(values, type=f.type) for values, f in zip(arrays, arrow_schema, strict=True)]
    table = pa.Table.from_arrays(columns, schema=arrow_schema)
    return spark.createDataFrame(table)  # typed by the Arrow schema; passing ``schema`` again is 5x slower


def _jdbc_schema(spark: SparkSession, source: SourceConfig, table: TableConfig) -> T.StructType:
    url, props = source.connection.jdbc()
    return spark.read.jdbc(url, f"`{table.name}`", properties=props).schema


def _column_types(
    spark: SparkSession, source: SourceConfig, table: TableConfig, columns: set[str]
) -> dict[str, T.DataType]:
    """Bronze's column types; the source's current JDBC types for columns bronze does not hold yet."""
    path = bronze_path(source.name, table.name)
    types = (
        {f.name.lower(): f.dataType for f in spark.read.format("delta").load(path).schema if not f.name.startswith("_")}
        if delta_exists(spark, path)
        else {}
    )
    if {c.lower() for c in columns} - set(types):
        types = {**{f.name.lower(): f.dataType for f in _jdbc_schema(spark, source, table)}, **types}
    return types


def split_at_dropped_column(changes: list[Change]) -> list[list[Change]]:
    """Cut before the first change lacking a column an earlier one had, so rows before a dropped column
    land and the rest meets the drift check on its own."""
    seen: set[str] = set()
    for i, change in enumerate(changes):
        if not seen <= change.values.keys():
            return [changes[:i], changes[i:]] if i else [changes]
        seen |= change.values.keys()
    return [changes]


def _land_changes(
    spark: SparkSession,
    source: SourceConfig,
    table: TableConfig,
    changes: list[Change],
    batch_end: Position,
    offsets: dict[str, Position],
) -> int:
    """Land one table's changes of a batch; ``offsets[table]`` follows every commit."""
    landed = 0
    segments = split_at_dropped_column(changes)
    for i, segment in enumerate(segments):
        reach = batch_end if i == len(segments) - 1 else segment[-1].end
        types = _column_types(spark, source, table, {c for change in segment for c in change.values})
        rows = changes_frame(spark, segment, types, table.commit_time)
        landed += land(
            spark, rows, source=source, table=table, offset=reach.offset(), offset_from=offsets[table.name].offset()
        )
        offsets[table.name] = reach
    return landed


# --- snapshot -------------------------------------------------------------------------------------------------


def _snapshot_read(spark: SparkSession, source: SourceConfig, table: TableConfig) -> DataFrame:
    """Parallel JDBC read: ranges of a single numeric key, otherwise hash buckets of the keys."""
    url, props = source.connection.jdbc()
    props = {**props, "fetchsize": FETCH_SIZE}
    parts = max(1, source.strategy.parallelism)
    name = f"`{table.name}`"
    if parts > 1 and len(table.keys) == 1:
        key = table.keys[0]
        key_type = next((f.dataType for f in _jdbc_schema(spark, source, table) if f.name.lower() == key.lower()), None)
        if isinstance(key_type, T.IntegralType):
            low, high = _query(source, f"SELECT MIN(`{key}`), MAX(`{key}`) FROM `{source.database}`.{name}")[0]
            if low is not None:
                return spark.read.jdbc(
                    url,
                    name,
                    column=key,
                    lowerBound=int(low),
                    upperBound=int(high) + 1,
                    numPartitions=parts,
                    properties=props,
                )
    keys = ", ".join(f"`{k}`" for k in table.keys)
    buckets = [f"MOD(CRC32(CONCAT_WS('|', {keys})), {parts}) = {i}" for i in range(parts)]
    return spark.read.jdbc(url, name, predicates=buckets, properties=props)


def _snapshot(spark: SparkSession, source: SourceConfig, table: TableConfig, offsets: dict[str, Position]) -> int:
    """Initial load at the current binlog end; lands even an empty table so its offset and schema exist."""
    position = binlog_end(source)  # taken first: every change after it is replayed over the snapshot
    commit = F.col(table.commit_time).cast("timestamp") if table.commit_time else F.lit(None).cast("timestamp")
    rows = _snapshot_read(spark, source, table).select(
        "*",
        F.lit("r").alias("_op"),
        F.coalesce(commit, F.current_timestamp()).alias("_source_ts"),
        F.concat(F.lit(position.prefix()), F.lpad(F.monotonically_increasing_id().cast("string"), 16, "0")).alias(
            "_source_pos"
        ),
    )
    landed = land(spark, rows, source=source, table=table, offset=position.offset())
    offsets[table.name] = position
    return landed


# --- the run --------------------------------------------------------------------------------------------------


def _summary(source: SourceConfig, table: str, runs: list[TableResult], offset: Position | None) -> TableResult:
    rows = sum(r.rows for r in runs)
    bad = next((r for r in runs if r.status in ("stopped", "failed")), None)
    status = bad.status if bad else "success" if rows else "no_change"
    return TableResult(source.name, table, rows, status, offset.text() if offset else None, bad.error if bad else None)


def _stream(
    spark: SparkSession,
    source: SourceConfig,
    start: Position,
    end: Position,
    flowing: set[str],
    offsets: dict[str, Position],
    runs: dict[str, list[TableResult]],
) -> None:
    """Land batches from ``start`` to ``end``; tables that stop or fail leave ``flowing``."""
    tables = {t.name: t for t in source.tables}
    held: list[Position] = []  # offsets of tables that dropped out: the checkpoint must not pass them
    while start < end and flowing:
        changes, cut = read_changes(
            source, {n.lower(): tables[n] for n in flowing}, start, end, source.strategy.batch_size
        )
        if cut == start:
            break
        per_table: dict[str, list[Change]] = defaultdict(list)
        for change in changes:
            if change.end > offsets[change.table]:
                per_table[change.table].append(change)
        for name, table_changes in per_table.items():
            result = run_table(
                spark,
                source,
                tables[name],
                partial(_land_changes, spark, source, tables[name], table_changes, cut, offsets),
            )
            runs[name].append(result)
            if result.status in ("stopped", "failed"):
                flowing.discard(name)
                held.append(offsets[name])
        monitoring.save_checkpoint(source.name, min([cut, *held]).text())
        start = cut


def collect(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    """Snapshot new tables, then land every committed change up to the binlog end seen now."""
    check_server(source)
    tables = {t.name: t for t in source.tables}
    offsets: dict[str, Position] = {}
    for name in tables:
        landed = Position.parse(committed_offset(spark, source.name, name))
        if landed is not None:
            offsets[name] = landed
    runs: dict[str, list[TableResult]] = defaultdict(list)
    for name in [n for n in tables if n not in offsets]:
        runs[name].append(
            run_table(spark, source, tables[name], partial(_snapshot, spark, source, tables[name], offsets))
        )
    flowing = set(offsets)  # a table whose snapshot failed is snapshotted again next run
    stopped = monitoring.stopped_tables(source.name) & flowing
    checkpoint = Position.parse(monitoring.load_checkpoint(source.name))
    floor = [offsets[n] for n in stopped] + ([checkpoint] if checkpoint else [offsets[n] for n in flowing])
    start, end = min(floor, default=None), binlog_end(source)
    if start is not None and start < end:
        _check_available(source, start)
        _stream(spark, source, start, end, flowing, offsets, runs)
    for name in tables:
        if not runs[name]:  # nothing new: still record the run, so monitoring shows the table was checked
            runs[name].append(run_table(spark, source, tables[name], lambda: 0))
    return [_summary(source, name, runs[name], offsets.get(name)) for name in tables]
