"""PostgreSQL log-based CDC (logical decoding, wal2json format 2) into bronze, exactly once.

One logical replication slot per source (``drc_<source>``, or ``connection.slot``) in the source database.

A run:
 1. Takes a session advisory lock in the source database (one run per source at a time; it dies with the
    process), creates the slot when it is missing (its consistent point is where the stream starts), then
    reads the slot's confirmed position ``F`` and each table's committed bronze offset.
 2. Peeks (``pg_logical_slot_peek_changes``, never ``get``) every whole transaction committed from ``F`` up
    to the current WAL position, only the YAML tables (``add-tables``), and spools each table's events to
    JSON-lines files under ``$DRC_STATE_DIR/spool`` (rotated at transaction boundaries every
    ``strategy.batch_size`` rows; Spark reads them, so the driver's disk must be visible to the executors),
    skipping events at or before the table's own committed offset: a ``kill -9`` between landing and
    advancing the slot re-reads them and drops what already landed.
 3. Per table (``runner.run_table``): a table without an offset is first snapshotted with a parallel Spark
    JDBC read (``_op='r'``, position ``F`` so it sorts before every streamed change; changes committed between
    ``F`` and the read land again as changes, which leaves the latest version per key correct), then each
    spool file lands as one bronze commit whose offset is the position of its last event.
 4. Advances the slot (``pg_replication_slot_advance``) to the end of the last transaction read only when
    every table landed everything; a table that stopped (schema drift) or failed holds the slot at its own
    committed offset, so nothing it has not landed is released (the WAL is retained meanwhile, and each run
    re-reads from there while the other tables keep flowing past their offsets). The hold is capped: when it
    would make the source keep more than ``strategy.max_slot_wal_mb`` of WAL, the holding tables are
    released and re-synchronised by snapshot difference on their next successful run; the retained WAL is
    recorded every run (``ingest.replication_slot``, ``v_source_status.slot_retained_bytes``) and reported
    above ``strategy.alert_slot_wal_mb``.

``_source_pos`` = ``<commit LSN>/<change LSN>/<n>`` (16 hex digits, 16 hex digits, 4 digits; ``n`` numbers the
rows of one multi-insert WAL record): string order is commit order, then order within the transaction.
A snapshot row has ``<F>/0000000000000000/0000/<key>`` (unique per row, before every streamed change).
``_source_ts`` = the table's ``commit_time`` column for snapshot rows, inserts and updates (falling back to
the transaction's commit timestamp, or the snapshot time); for deletes the transaction's commit timestamp,
since a delete carries only the replica identity (the primary key unless ``REPLICA IDENTITY FULL``).

Column types come from wal2json (format 2 carries each column's name and type, so added columns arrive) and
are mapped the way Spark's JDBC reader maps them, so streamed batches and the snapshot agree; a retyped or
dropped column makes :func:`ingestion.bronze.land` stop that table. An update that changes a key lands as a
delete of the old key followed by the new row. A TRUNCATE fails the table (its rows cannot be listed).
If the slot disappears (dropped by a DBA) while bronze holds offsets, the slot is recreated and every table is
re-synchronised by snapshot difference (inserts, updates and deletes against bronze's current state); the
pending list is kept in the source checkpoint until each table has done it.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg2
from psycopg2 import sql
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from core.alerts import Alert, raise_alert, resolve_alerts
from core.settings import get_settings
from ingestion import monitoring
from ingestion.bronze import (
    TableResult,
    bronze_path,
    committed_offset,
    delta_exists,
    guard_deletes,
    land,
    latest_versions,
)
from ingestion.jdbc import snapshot_diff
from ingestion.registry import SourceConfig, TableConfig
from ingestion.runner import run_table

log = logging.getLogger(__name__)

PLUGIN = "wal2json"
FETCH_ROWS = 5000
SLOT_WAIT_SECONDS = 300
JDBC_FETCH_SIZE = "10000"
OK_STATUSES = ("success", "no_change")
INTEGER_TYPES = ("smallint", "integer", "bigint")
# PostgreSQL type (format_type) -> Spark type, as Spark's JDBC PostgresDialect maps it.
SIMPLE_TYPES = {
    "smallint": "smallint",
    "integer": "int",
    "bigint": "bigint",
    "real": "float",
    "double precision": "double",
    "boolean": "boolean",
    "date": "date",
    "bytea": "binary",
}
UNSUPPORTED = re.compile(r"\[\]$|^time\b|^time\(|^money$|^bit\b|^bit\(")
# Numbers stay as PostgreSQL wrote them: numeric precision must not pass through floats.
DECODER = json.JSONDecoder(parse_float=str, parse_int=str)
ENCODER = json.JSONEncoder(ensure_ascii=False)


class UnsupportedColumnType(ValueError):
    """A column type the stream cannot decode the way the JDBC snapshot reads it."""


def spark_type(pg_type: str) -> str:
    """The Spark type of a PostgreSQL column type as wal2json names it (``numeric(10,2)``, ``character(1)``…)."""
    text = pg_type.lower()
    if UNSUPPORTED.search(text):
        raise UnsupportedColumnType(f"column type {pg_type} is not supported by pg_logical")
    numeric = re.fullmatch(r"numeric(?:\((\d+),(\d+)\))?", text)
    if numeric:
        if numeric.group(1) is None:
            return "decimal(38,18)"
        return f"decimal({min(int(numeric.group(1)), 38)},{min(int(numeric.group(2)), 38)})"
    if text.startswith("timestamp"):
        return "timestamp"
    return SIMPLE_TYPES.get(text, "string")


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def position(commit_lsn: int, change_lsn: int = 0, n: int = 0) -> str:
    return f"{commit_lsn:016X}/{change_lsn:016X}/{n:04d}"


def position_lsn(pos: str) -> int:
    """The commit LSN of a position: the slot may advance to it without releasing that transaction."""
    return int(pos[:16], 16)


def slot_name(source: SourceConfig) -> str:
    return source.connection.options.get("slot") or f"drc_{source.name}"


def schema_name(source: SourceConfig) -> str:
    return source.connection.schema or "public"


def connect(source: SourceConfig) -> Any:
    host, port = source.connection.address()
    return psycopg2.connect(
        host=host,
        port=port,
        dbname=source.connection.database,
        user=source.connection.user,
        password=source.connection.secret(),
        application_name="drc_pg_logical",
        connect_timeout=10,
        options="-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3",
    )


# ---------------------------------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class SourceTable:
    columns: dict[str, str]  # column -> PostgreSQL type, in table order
    identity: tuple[str, ...]  # columns a DELETE carries (replica identity)
    primary_key: tuple[str, ...]


def read_catalog(conn: Any, schema: str, names: list[str]) -> dict[str, SourceTable]:
    """Columns, replica identity and primary key of the listed tables that exist."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), c.relreplident,
                   coalesce(a.attnum = ANY(ri.indkey), false), coalesce(a.attnum = ANY(pk.indkey), false)
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
            LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident
            WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
            ORDER BY c.relname, a.attnum""",
            (schema, names),
        )
        rows = cur.fetchall()
    tables: dict[str, SourceTable] = {}
    for name in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == name]
        replident = mine[0][3]
        primary_key = tuple(r[1] for r in mine if r[5])
        identity = {"f": tuple(r[1] for r in mine), "d": primary_key, "i": tuple(r[1] for r in mine if r[4])}.get(
            replident, ()
        )
        tables[name] = SourceTable({r[1]: r[2] for r in mine}, identity, primary_key)
    return tables


def check_table(source: SourceConfig, table: TableConfig, info: SourceTable | None) -> SourceTable:
    """A table the stream can carry: it exists and its deletes carry the business keys."""
    where = f"{source.name}.{table.name}"
    if info is None:
        raise ValueError(
            f"{where}: no table {schema_name(source)}.{table.name} in database {source.connection.database}"
        )
    identity = {c.lower() for c in info.identity}
    missing = [k for k in table.keys if k.lower() not in identity]
    if missing:
        raise ValueError(
            f"{where}: keys {missing} are not in the table's replica identity {list(info.identity)}, "
            "so deletes would not carry them; list the primary key as keys or ask the vendor for "
            "REPLICA IDENTITY FULL"
        )
    return info


# ------------------------------------------------------------------------------------------------------- slot


def slot_position(conn: Any, slot: str) -> int | None:
    """The slot's confirmed position (None when the slot does not exist)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT database, plugin, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        )
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("SELECT current_database()")
        database = cur.fetchone()[0]
    if row[0] != database or row[1] != PLUGIN:
        raise ValueError(
            f"replication slot {slot} belongs to database {row[0]} with plugin {row[1]}, "
            f"not {database} with {PLUGIN}; name another slot with connection.slot"
        )
    return lsn_int(row[2])


def lock_source(conn: Any, slot: str, timeout: float = SLOT_WAIT_SECONDS) -> None:
    """One collection per source at a time (a session lock in the source database, released when the
    connection or the process ends): a second run would read offsets the first is about to move."""
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"drc_pg_logical:{slot}",))
            if cur.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"another collection holds slot {slot} for more than {timeout:.0f} s")
            time.sleep(1)


def wait_until_free(conn: Any, slot: str, timeout: float = SLOT_WAIT_SECONDS) -> None:
    """Wait while another backend holds the slot: a killed collector's backend finishes its decoding before it
    notices the client is gone, and a concurrent run of the same source holds it while it reads."""
    deadline = time.monotonic() + timeout
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
        if row is None or row[0] is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"replication slot {slot} is still in use by backend {row[0]} after {timeout:.0f} s "
                "(another collection of this source?)"
            )
        time.sleep(1)


def create_slot(conn: Any, slot: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN))
        return lsn_int(cur.fetchone()[0])


def drop_slot(source: SourceConfig) -> bool:
    """Remove the source's slot (when decommissioning a source: an abandoned slot retains WAL forever)."""
    with closing(connect(source)) as conn:
        conn.autocommit = True
        if slot_position(conn, slot_name(source)) is None:
            return False
        with conn.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (slot_name(source),))
        return True


def _load_state(source: SourceConfig) -> dict[str, Any]:
    text = monitoring.load_checkpoint(source.name)
    try:
        state = json.loads(text) if text else {}
    except ValueError:
        state = {}
    return state if isinstance(state, dict) else {}


def _save_state(source: SourceConfig, lsn: int, resync: set[str]) -> None:
    monitoring.save_checkpoint(
        source.name, json.dumps({"slot": slot_name(source), "lsn": lsn_text(lsn), "resync": sorted(resync)})
    )


# ------------------------------------------------------------------------------------------------------ spool


@dataclass
class SpoolFile:
    path: Path | None  # None marks a TRUNCATE at ``last_pos``
    rows: int = 0
    last_pos: str = ""
    types: dict[str, str] = field(default_factory=dict)


class Spool:
    """Each table's change events as JSON-lines files, a new file at the first transaction boundary after
    ``batch_size`` rows. Values stay PostgreSQL's text (numbers as written, never through floats)."""

    def __init__(self, directory: Path, batch_size: int):
        self.directory = directory
        self.batch_size = batch_size
        self.files: dict[str, list[SpoolFile]] = {}
        self._open: dict[str, IO[str]] = {}
        self._count = 0

    def write(
        self, table: str, op: str, pos: str, ts: str | None, row: dict[str, str | None], types: dict[str, str]
    ) -> None:
        handle = self._open.get(table)
        files = self.files.setdefault(table, [])
        if handle is None:
            self._count += 1
            files.append(SpoolFile(self.directory / f"{self._count:06d}.jsonl"))
            handle = self._open[table] = files[-1].path.open("w", encoding="utf-8")
        current = files[-1]
        handle.write(ENCODER.encode({"o": op, "p": pos, "t": ts, "r": row}) + "\n")
        current.rows += 1
        current.last_pos = pos
        current.types.update(types)

    def truncate(self, table: str, pos: str) -> None:
        self._close(table)
        self.files.setdefault(table, []).append(SpoolFile(None, last_pos=pos))

    def end_transaction(self) -> None:
        for table in [t for t in self._open if self.files[t][-1].rows >= self.batch_size]:
            self._close(table)

    def _close(self, table: str) -> None:
        handle = self._open.pop(table, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        for table in list(self._open):
            self._close(table)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return "true" if value is True else "false" if value is False else json.dumps(value, ensure_ascii=False)


def _row(columns: list[dict[str, Any]]) -> tuple[dict[str, str | None], dict[str, str]]:
    return {c["name"]: _text(c["value"]) for c in columns}, {c["name"]: c["type"] for c in columns}


def _escape(name: str) -> str:
    return re.sub(r"([\\,.*])", r"\\\1", name)


def current_lsn(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text")
        return lsn_int(cur.fetchone()[0])


def peek_changes(conn: Any, source: SourceConfig, slot: str, upto: int) -> Iterator[dict[str, Any]]:
    """Every whole transaction committed before ``upto`` on the source's tables, as wal2json format-2 messages."""
    tables = ",".join(f"{_escape(schema_name(source))}.{_escape(t.name)}" for t in source.tables)
    options = [
        "format-version",
        "2",
        "include-timestamp",
        "1",
        "include-lsn",
        "1",
        "include-typmod",
        "1",
        "add-tables",
        tables,
    ]
    conn.autocommit = False
    try:
        with conn.cursor(name="drc_pg_logical") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(
                "SELECT data FROM pg_logical_slot_peek_changes(%s, %s::pg_lsn, NULL, VARIADIC %s::text[])",
                (slot, lsn_text(upto), options),
            )
            for (data,) in cur:
                yield DECODER.decode(data)
        conn.commit()
    finally:
        conn.rollback()
        conn.autocommit = True


def spool_changes(
    messages: Iterator[dict[str, Any]], source: SourceConfig, floors: dict[str, str], spool: Spool
) -> int | None:
    """Write the change events beyond each table's floor position to the spool; returns the end LSN of the
    last transaction read (None when there was none)."""
    commit_time = {t.name: t.commit_time for t in source.tables}
    keys = {t.name: t.keys for t in source.tables}
    end_lsn = None
    commit_lsn = previous_lsn = 0
    commit_ts = None
    n = 0
    for message in messages:
        action = message["action"]
        if action == "B":
            commit_lsn, commit_ts, previous_lsn = lsn_int(message["lsn"]), message.get("timestamp"), 0
        elif action == "C":
            spool.end_transaction()
            end_lsn = lsn_int(message["nextlsn"])
        elif action in ("I", "U", "D", "T"):
            table = message["table"]
            if table not in floors:
                continue
            change_lsn = lsn_int(message["lsn"])
            n = n + 1 if change_lsn == previous_lsn else 0
            previous_lsn = change_lsn
            pos = position(commit_lsn, change_lsn, n)
            if pos <= floors[table]:
                continue
            if action == "T":
                spool.truncate(table, pos)
                continue
            if action == "D":
                row, types = _row(message.get("identity") or [])
                spool.write(table, "d", pos, commit_ts, row, types)
                continue
            row, types = _row(message["columns"])
            old, old_types = _row(message.get("identity") or [])
            if action == "U" and any(k in old and old[k] != row.get(k) for k in keys[table]):
                n += 1  # the key changed: the old key is deleted first, then the new row follows
                spool.write(table, "d", position(commit_lsn, change_lsn, n - 1), commit_ts, old, old_types)
                pos = position(commit_lsn, change_lsn, n)
            stamp = row.get(commit_time[table]) if commit_time[table] else None
            spool.write(table, "c" if action == "I" else "u", pos, stamp or commit_ts, row, types)
    spool.close()
    return end_lsn


# --------------------------------------------------------------------------------------------------- landing


def _cast(column: Column, pg_type: str) -> Column:
    target = spark_type(pg_type)
    return F.unhex(column) if target == "binary" else column.cast(target)


def spool_frame(spark: SparkSession, path: Path, types: dict[str, str]) -> DataFrame:
    """One spool file as source columns (typed like the JDBC snapshot) plus ``_op/_source_ts/_source_pos``."""
    row = StructType([StructField(name, StringType()) for name in types])
    schema = StructType(
        [
            StructField("o", StringType()),
            StructField("p", StringType()),
            StructField("t", StringType()),
            StructField("r", row),
        ]
    )
    raw = spark.read.schema(schema).option("mode", "FAILFAST").json(str(path))
    return raw.select(
        *[_cast(F.col("r").getField(name), pg_type).alias(name) for name, pg_type in types.items()],
        F.col("o").alias("_op"),
        F.col("t").cast("timestamp").alias("_source_ts"),
        F.col("p").alias("_source_pos"),
    )


def _quoted(*names: str) -> str:
    return ".".join('"' + n.replace('"', '""') + '"' for n in names)


def snapshot_frame(
    spark: SparkSession, conn: Any, source: SourceConfig, table: TableConfig, info: SourceTable
) -> DataFrame:
    """The whole table over JDBC, in ``strategy.parallelism`` partitions: ranges of a numeric key, or hash
    buckets of the primary key when there is none."""
    url, props = source.connection.jdbc()
    props = {**props, "fetchsize": JDBC_FETCH_SIZE}
    name = _quoted(schema_name(source), table.name)
    parts = source.strategy.parallelism
    column = table.options.get("partition_column")
    if column is None and len(info.primary_key) == 1 and info.columns[info.primary_key[0]] in INTEGER_TYPES:
        column = info.primary_key[0]
    if parts > 1 and column:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT min({c}), max({c}) FROM {t}").format(
                    c=sql.Identifier(column), t=sql.Identifier(schema_name(source), table.name)
                )
            )
            low, high = cur.fetchone()
        if low is not None and high > low:
            return spark.read.jdbc(
                url,
                name,
                column=_quoted(column),
                lowerBound=int(low),
                upperBound=int(high) + 1,
                numPartitions=parts,
                properties=props,
            )
    elif parts > 1 and info.primary_key:
        key = "concat_ws('|', " + ", ".join(f"{_quoted(k)}::text" for k in info.primary_key) + ")"
        predicates = [f"(hashtext({key}) & 2147483647) % {parts} = {i}" for i in range(parts)]
        return spark.read.jdbc(url, name, predicates=predicates, properties=props)
    return spark.read.jdbc(url, name, properties=props)


def snapshot_offset(lsn: int) -> dict[str, Any]:
    return {"pos": position(lsn), "lsn": lsn_text(lsn), "snapshot": True}


def land_snapshot(
    spark: SparkSession, conn: Any, source: SourceConfig, table: TableConfig, info: SourceTable, lsn: int
) -> int:
    """First collection of a table: every row as ``r``. After the slot was lost: only the difference to
    bronze's current state (so deletes in the gap show up too)."""
    taken_at = datetime.now().astimezone()
    frame = snapshot_frame(spark, conn, source, table, info)
    stamp = F.lit(taken_at).cast("timestamp")
    source_ts = F.coalesce(F.col(table.commit_time).cast("timestamp"), stamp) if table.commit_time else stamp
    path = bronze_path(source.name, table.name)
    current = None
    if delta_exists(spark, path):
        current = latest_versions(spark.read.format("delta").load(path), list(table.keys))
        rows = snapshot_diff(frame, current, list(table.keys), taken_at).withColumn(
            "_source_ts", F.when(F.col("_op") == "d", stamp).otherwise(source_ts)
        )
    else:
        rows = frame.withColumn("_op", F.lit("r")).withColumn("_source_ts", source_ts)
    # Unique per row (the key after the position), and before every streamed change of that key.
    key = F.concat_ws("|", *[F.col(k).cast("string") for k in table.keys])
    rows = rows.withColumn("_source_pos", F.concat(F.lit(position(lsn) + "/"), key)).persist()
    try:
        if rows.isEmpty():
            return 0
        if current is not None:  # a re-synchronisation: an empty or shrunken read must not delete everything
            ops = {r["_op"]: r["count"] for r in rows.groupBy("_op").count().collect()}
            if ops.get("d"):
                live = current.where(F.col("_op") != "d").count()
                guard_deletes(source, table, deletes=ops["d"], current=live, read=live - ops["d"] + ops.get("c", 0))
        return land(spark, rows, source=source, table=table, offset=snapshot_offset(lsn))
    finally:
        rows.unpersist()


def land_stream(
    spark: SparkSession,
    source: SourceConfig,
    table: TableConfig,
    info: SourceTable,
    files: list[SpoolFile],
    offset: Any,
) -> int:
    """Land each spool file as one bronze commit, in order, with the position of its last event."""
    landed = 0
    for spooled in files:
        if spooled.path is None:
            raise ValueError(
                f"{source.name}.{table.name} was truncated at the source (position "
                f"{spooled.last_pos}); its rows cannot be listed as deletes. Re-collect the table "
                "(drop its bronze table; the next run snapshots it)"
            )
        # Event types win over the catalog's: the catalog is now, the events are when they happened.
        types = {name: spooled.types.get(name, pg_type) for name, pg_type in info.columns.items()}
        types.update({name: pg_type for name, pg_type in spooled.types.items() if name not in types})
        new_offset = {"pos": spooled.last_pos, "lsn": lsn_text(position_lsn(spooled.last_pos))}
        landed += land(
            spark,
            spool_frame(spark, spooled.path, types),
            source=source,
            table=table,
            offset=new_offset,
            offset_from=offset,
        )
        offset = new_offset
    return landed


# ------------------------------------------------------------------------------------------------------- run


def _spool_dir() -> Path:
    directory = get_settings().state_dir / "spool"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def collect(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    slot = slot_name(source)
    with closing(connect(source)) as conn:
        conn.autocommit = True
        lock_source(conn, slot)
        wait_until_free(conn, slot)
        offsets = {t.name: committed_offset(spark, source.name, t.name) for t in source.tables}
        for name, offset in offsets.items():
            if offset is not None and not (isinstance(offset, dict) and "pos" in offset):
                raise ValueError(f"{source.name}.{name}: bronze holds offset {offset!r} from another mode")
        resync = set(_load_state(source).get("resync") or [])
        start = slot_position(conn, slot)
        if start is None:
            landed = {name for name, offset in offsets.items() if offset is not None}
            if landed:
                log.warning(
                    "%s: replication slot %s is missing though bronze holds offsets; recreating it and "
                    "re-synchronising %s by snapshot difference",
                    source.name,
                    slot,
                    sorted(landed),
                )
                resync |= landed
                _save_state(source, 0, resync)  # the intent first: a kill after creating the slot still resyncs
            start = create_slot(conn, slot)
            _save_state(source, start, resync)
        catalog = read_catalog(conn, schema_name(source), [t.name for t in source.tables])
        snapshot = {name for name, offset in offsets.items() if offset is None or name in resync}
        floors = {t.name: position(start) if t.name in snapshot else offsets[t.name]["pos"] for t in source.tables}
        with tempfile.TemporaryDirectory(prefix=f"{source.name}-", dir=_spool_dir()) as directory:
            spool = Spool(Path(directory), source.strategy.batch_size)
            # Read up to the WAL position now. The slot may then move that far even when the member's database
            # had no transaction: its WAL is shared with every other database of the server (a quiet database
            # must not make the server keep the WAL the others write).
            upto = current_lsn(conn)
            end = max(spool_changes(peek_changes(conn, source, slot, upto), source, floors, spool) or 0, upto)

            def collect_table(table: TableConfig) -> int:
                info = check_table(source, table, catalog.get(table.name))
                rows = land_snapshot(spark, conn, source, table, info, start) if table.name in snapshot else 0
                offset = snapshot_offset(start) if rows else offsets[table.name]
                return rows + land_stream(spark, source, table, info, spool.files.get(table.name, []), offset)

            results = [run_table(spark, source, t, lambda t=t: collect_table(t)) for t in source.tables]
        resync -= {r.table for r in results if r.status in OK_STATUSES}
        note = advance(conn, source, results, start, end, resync, spark)
    if note:
        results.append(TableResult(source.name, "*", 0, "no_change", error=note))
    return results


def _wal_bytes(conn: Any, sql_text: str, params: tuple = ()) -> int | None:
    with conn.cursor() as cur:
        cur.execute(sql_text, params)
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def advance(
    conn: Any,
    source: SourceConfig,
    results: list[TableResult],
    start: int,
    end: int | None,
    resync: set[str],
    spark: SparkSession,
) -> str | None:
    """Move the slot to ``end`` unless a table that did not land everything holds it at its own offset.

    A held slot makes the member's database keep its WAL: a platform problem (a table stopped by drift) must
    not become the hospital's full disk. When holding would retain more than ``strategy.max_slot_wal_mb``,
    the holding tables are released: the slot moves on and they are re-synchronised by snapshot difference
    on their next successful run (like after a lost slot). Returns an alert for the run's output when the
    slot retains more than ``strategy.alert_slot_wal_mb`` or tables were released; every run records the
    slot's retained WAL in ``ingest.replication_slot``.
    """
    slot = slot_name(source)
    target, holders = end, []
    for result in results:
        if result.status in OK_STATUSES or target is None or result.table in resync:
            continue  # a table due for re-synchronisation is re-read by snapshot: it need not hold the slot
        offset = committed_offset(spark, source.name, result.table)
        target = None if offset is None else min(target, position_lsn(offset["pos"]))
        holders.append(result.table)
    released: list[str] = []
    if end is not None and holders:
        held_at = start if target is None else max(start, target)
        would_retain = (
            _wal_bytes(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn_text(held_at),))
            or 0
        )
        if would_retain > source.strategy.max_slot_wal_mb * 2**20:
            released, target = holders, end
            resync |= set(holders)
            _save_state(source, start, resync)  # the intent first: a kill after the advance still resyncs them
            log.error(
                "%s: slot %s would retain %.1f MB of WAL for %s, more than max_slot_wal_mb %s: released; "
                "they re-synchronise by snapshot difference on their next successful run",
                source.name,
                slot,
                would_retain / 2**20,
                ", ".join(holders),
                source.strategy.max_slot_wal_mb,
            )
    if target is not None and target > start:
        wait_until_free(conn, slot)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn_text(target)))
        start = target
    if end is not None and end > start:
        log.warning(
            "%s: slot %s held at %s by %s",
            source.name,
            slot,
            lsn_text(start),
            ", ".join(f"{r.table} ({r.status})" for r in results if r.status not in OK_STATUSES),
        )
    _save_state(source, start, resync)
    retained = (
        _wal_bytes(
            conn,
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        or 0
    )
    held_by = [] if released else holders
    monitoring.record_slot(source.name, slot, retained, held_by, released)
    if not released and retained <= source.strategy.alert_slot_wal_mb * 2**20:
        resolve_alerts("slot_wal", source.name, "the slot retains less than alert_slot_wal_mb again")
        return None
    note = f"replication slot {slot} retains {retained / 2**20:,.1f} MB of WAL in {source.connection.describe()}" + (
        f", held by {', '.join(held_by)}" if held_by else ""
    )
    if released:
        note += (
            f"; {', '.join(released)} would have held more than max_slot_wal_mb "
            f"{source.strategy.max_slot_wal_mb:g}: released, they re-synchronise by snapshot difference on "
            "their next successful run (fix the cause: see their errors in `./drc ingest status`)"
        )
    else:
        note += (
            f", more than alert_slot_wal_mb {source.strategy.alert_slot_wal_mb:g}; at max_slot_wal_mb "
            f"{source.strategy.max_slot_wal_mb:g} the holding tables are released and re-synchronised"
        )
    log.warning(note)
    raise_alert(Alert("slot_wal", "error" if released else "warning", source.name, note, source_system=source.name))
    return note
