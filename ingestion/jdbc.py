"""JDBC collection (MariaDB/MySQL or PostgreSQL): incremental by watermark, and full snapshot with diff.

Incremental (``jdbc_incremental``): each run reads the window (newest landed watermark - late-arrival
window, source max] and lands only row versions bronze does not hold yet (matched on ``_source_pos`` =
watermark|key), so rows committed late with an older watermark are caught and nothing lands twice.
What a watermark cannot see:
 - physical deletes: use it for sources that never delete (flags/status updates instead);
 - a row committed more than ``late_arrival_minutes`` after a newer watermark already landed (a long
   transaction, a batch job back-dating its rows): it falls below the window and is never read. Size the
   window to the source's longest transaction, or collect the table by snapshot;
 - rows whose watermark is NULL: no comparison selects them, so each run reads them separately
   (``<watermark> IS NULL``), lands those bronze does not hold with the same content (position ``0<read
   time>|key``, before every dated version of the key), and reports how many there are
   (``table_run.counts.null_watermark``) with sample keys;
 - a source that goes back (reset, restored from an older backup): its rows written again with watermarks
   below bronze's newest would fall below the window. When the source's newest watermark is older than
   bronze's, the table stops (``guard_rewind``) until ``./drc ingest accept-rewind`` confirms it; from then on
   each run reads the table whole (landing only versions bronze lacks) until the source passes bronze's newest.

Snapshot (``jdbc_snapshot``): each run reads the whole table and lands only the difference to bronze's
current state: new keys as ``c``, changed rows as ``u``, keys gone from the source as ``d``. Re-running on an
unchanged source lands nothing. Suits dictionaries and small tables without a reliable change column. An
empty or shrunken read (wrong query, emptied view, lost permission) looks like a mass delete: a diff that
would delete more than ``max_delete_share`` of the live keys stops the table (bronze.guard_deletes) until
``./drc ingest accept-deletes`` confirms it.

Both read in parallel partitions (``strategy.parallelism``) on a numeric key or ``partition_column``.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ingestion.bronze import (
    SourceWentBack,
    TableResult,
    bronze_path,
    committed_offset,
    delta_exists,
    guard_deletes,
    land,
    latest_versions,
)
from ingestion.registry import SourceConfig, TableConfig
from ingestion.runner import run_table

log = logging.getLogger(__name__)

FETCH_SIZE = "10000"
POSITION_TIME = "yyyyMMddHHmmssSSSSSS"
WATERMARK_TEXT = "yyyy-MM-dd HH:mm:ss.SSSSSS"  # as the source compares it (and as offsets are kept)
NULL_POSITION = "0"  # positions of NULL-watermark rows start with 0: before every dated one (yyyy… ≥ 1000)
SAMPLE_KEYS = 5


def qualified(source: SourceConfig, table: TableConfig) -> str:
    schema = table.options.get("schema", source.connection.schema)
    return f"{schema}.{table.name}" if schema else table.name


def _engine(source: SourceConfig) -> sa.Engine:
    return sa.create_engine(source.connection.sqlalchemy_url(), hide_parameters=True, poolclass=sa.pool.NullPool)


def read_table(spark: SparkSession, source: SourceConfig, table: TableConfig, where: str | None = None) -> DataFrame:
    """Parallel JDBC read of one table (optionally filtered), partitioned on a numeric column when there is one."""
    url, props = source.connection.jdbc()
    name = qualified(source, table)
    partition = table.options.get("partition_column")
    reader = spark.read.format("jdbc").option("url", url).option("fetchsize", FETCH_SIZE).options(**props)
    if partition and source.strategy.parallelism > 1:
        with _engine(source).connect() as conn:
            low, high = conn.execute(
                sa.text(f"SELECT MIN({partition}), MAX({partition}) FROM {name}" + (f" WHERE {where}" if where else ""))
            ).one()
        if low is not None and high > low:
            return (
                reader.option("dbtable", f"(SELECT * FROM {name}{f' WHERE {where}' if where else ''}) AS t")
                .option("partitionColumn", partition)
                .option("lowerBound", str(low))
                .option("upperBound", str(high + 1))
                .option("numPartitions", source.strategy.parallelism)
                .load()
            )
    return reader.option("query", f"SELECT * FROM {name}" + (f" WHERE {where}" if where else "")).load()


def _key(table: TableConfig):
    return F.concat_ws("|", *[F.col(k).cast("string") for k in table.keys])


def _landed(spark: SparkSession, source: SourceConfig, table: TableConfig) -> DataFrame | None:
    path = bronze_path(source.name, table.name)
    return spark.read.format("delta").load(path) if delta_exists(spark, path) else None


def collect_incremental_table(spark: SparkSession, source: SourceConfig, table: TableConfig) -> TableResult:
    """Land new row versions inside the watermark window, then the rows whose watermark is NULL."""
    bronze = _landed(spark, source, table)
    window_minutes = source.strategy.late_arrival_minutes
    # Watermarks travel as strings in the source's local time: no driver/time-zone conversion in between.
    # NULL-watermark rows carry their read time as _source_ts: they must not move the window.
    dated = None if bronze is None else bronze.where(F.col("_source_pos") >= "1")
    low, bronze_newest = (
        (None, None)
        if dated is None
        else dated.agg(
            F.date_format(F.max("_source_ts") - F.expr(f"INTERVAL {window_minutes} MINUTES"), WATERMARK_TEXT),
            F.date_format(F.max("_source_ts"), WATERMARK_TEXT),
        ).first()
    )
    name = qualified(source, table)
    with _engine(source).connect() as conn:
        newest, nulls = conn.execute(
            sa.text(f"SELECT MAX({table.watermark}), COUNT(*) - COUNT({table.watermark}) FROM {name}")
        ).one()
        sample = (
            conn.execute(
                sa.text(
                    f"SELECT {', '.join(table.keys)} FROM {name} WHERE {table.watermark} IS NULL ORDER BY "
                    f"{', '.join(table.keys)} LIMIT {SAMPLE_KEYS}"
                )
            ).all()
            if nulls
            else []
        )
    landed = 0
    offset = committed_offset(spark, source.name, table.name)
    if newest is not None:
        offset = newest.strftime("%Y-%m-%d %H:%M:%S.%f")
        if bronze_newest is not None and offset < bronze_newest:
            guard_rewind(source, table, source_newest=offset, bronze_newest=bronze_newest)
            low = None  # accepted: read it whole, land what bronze lacks
        window = f"{table.watermark} <= '{offset}'" + (f" AND {table.watermark} > '{low}'" if low else "")
        position = F.concat_ws("|", F.date_format(table.watermark, POSITION_TIME), _key(table))
        rows = read_table(spark, source, table, window).withColumn("_source_pos", position)
        if dated is not None:
            # Only bronze rows inside the re-read window can match: compare against those, not all history.
            recent = dated.where(F.col("_source_ts") > F.to_timestamp(F.lit(low))) if low else dated
            rows = rows.join(recent.select("_source_pos"), "_source_pos", "left_anti")
        rows = rows.withColumn("_op", F.lit("r")).withColumn("_source_ts", F.col(table.watermark)).persist()
        try:
            if not rows.isEmpty():
                landed = land(spark, rows, source=source, table=table, offset=offset, offset_from=low)
        finally:
            rows.unpersist()
    if not nulls:
        return TableResult(source.name, table.name, landed, "success" if landed else "no_change")
    null_landed = _collect_null_watermark(spark, source, table, bronze, offset)
    keys = ", ".join("|".join(str(v) for v in row) for row in sample) + (", …" if nulls > len(sample) else "")
    note = (
        f"{source.name}.{table.name}: {nulls:,} row(s) have no {table.watermark} (NULL), e.g. key {keys}; "
        f"a watermark never selects them, so they are read apart ({null_landed:,} new or changed landed now, "
        f"each with its read time as _source_ts). Ask the source to fill {table.watermark}."
    )
    log.warning(note)
    total = landed + null_landed
    return TableResult(
        source.name,
        table.name,
        total,
        "success" if total else "no_change",
        error=note,
        counts={"null_watermark": int(nulls), "null_watermark_landed": null_landed},
    )


def guard_rewind(source: SourceConfig, table: TableConfig, *, source_newest: str, bronze_newest: str) -> None:
    """Stop a watermark table whose source went back below what bronze holds, unless an operator accepted it.

    The window starts at bronze's newest change, so after a reset or a restore from an older backup every row
    the source writes (again) with an older watermark would be skipped without a word.
    """
    from ingestion import monitoring

    if monitoring.rewind_accepted(source.name, table.name, bronze_newest):
        return
    monitoring.record_rewind(source.name, table.name, source_newest=source_newest, bronze_newest=bronze_newest)
    raise SourceWentBack(
        f"{source.name}.{table.name}: the source's newest {table.watermark} is {source_newest}, older than the "
        f"newest change bronze already holds ({bronze_newest}): the source was reset or restored from an older "
        "backup, and rows it writes again with an older watermark would never be read. Nothing landed and "
        "collection of this table is stopped; other tables keep flowing. Check with the source's administrator; "
        f"then run `./drc ingest accept-rewind --source {source.name} --table {table.name}`, and each run reads "
        "the table whole (landing only what bronze lacks) until the source passes bronze's newest change."
    )


def _collect_null_watermark(
    spark: SparkSession, source: SourceConfig, table: TableConfig, bronze: DataFrame | None, offset: str | None
) -> int:
    """Rows whose watermark is NULL: land those bronze does not hold with the same content (new or changed).

    Their position (``0<read time>|key``) sorts before every dated version of the key, so once the source
    fills the watermark, that version supersedes them; among NULL-watermark versions the later read wins.
    """
    taken_at = datetime.now()
    rows = read_table(spark, source, table, f"{table.watermark} IS NULL")
    keys = list(table.keys)
    if bronze is not None:
        columns = [c for c in rows.columns if c in set(bronze.columns)]
        known = latest_versions(bronze.where(F.col("_source_pos") < "1"), keys).select(
            *keys, _row_hash(columns).alias("_hash")
        )
        rows = rows.withColumn("_hash", _row_hash(columns)).join(known, [*keys, "_hash"], "left_anti").drop("_hash")
    stamp = NULL_POSITION + taken_at.strftime("%Y%m%d%H%M%S%f")[:19]
    rows = (
        rows.withColumn("_source_pos", F.concat_ws("|", F.lit(stamp), _key(table)))
        .withColumn("_op", F.lit("r"))
        .withColumn("_source_ts", F.lit(taken_at).cast("timestamp"))
        .persist()
    )
    try:
        if rows.isEmpty():
            return 0
        return land(spark, rows, source=source, table=table, offset=offset, offset_from=offset)
    finally:
        rows.unpersist()


def _row_hash(columns: list[str]):
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in sorted(columns)])), 256)


def snapshot_diff(snapshot: DataFrame, current: DataFrame | None, keys: list[str], taken_at: datetime) -> DataFrame:
    """Rows to land so that bronze's current state equals the snapshot: inserts, changes, deletes (pure)."""
    columns = [c for c in snapshot.columns if not c.startswith("_")]
    fresh = snapshot.withColumn("_hash", _row_hash(columns))
    if current is None:
        changed = fresh.withColumn("_op", F.lit("c"))
    else:
        state = current.where(F.col("_op") != "d").withColumn("_hash", _row_hash(columns))
        changed = (
            fresh.join(state.select(*keys, F.col("_hash").alias("_old")), keys, "left")
            .where(F.col("_old").isNull() | (F.col("_old") != F.col("_hash")))
            .withColumn("_op", F.when(F.col("_old").isNull(), "c").otherwise("u"))
            .drop("_old")
        )
        gone = state.join(fresh.select(*keys), keys, "left_anti").select(*columns).withColumn("_op", F.lit("d"))
        changed = changed.drop("_hash").unionByName(gone, allowMissingColumns=True)
    stamp = taken_at.strftime("%Y%m%d%H%M%S%f")
    return (
        changed.drop("_hash")
        .withColumn("_source_ts", F.lit(taken_at).cast("timestamp"))
        .withColumn("_source_pos", F.concat_ws("|", F.lit(stamp), *[F.col(k).cast("string") for k in keys]))
    )


def collect_snapshot_table(spark: SparkSession, source: SourceConfig, table: TableConfig) -> TableResult:
    """Land the difference between a full read and bronze; a read that would delete too much stops first."""
    taken_at = datetime.now()
    bronze = _landed(spark, source, table)
    current = None if bronze is None else latest_versions(bronze, list(table.keys))
    rows = snapshot_diff(read_table(spark, source, table), current, list(table.keys), taken_at).persist()
    try:
        ops = {r["_op"]: r["count"] for r in rows.groupBy("_op").count().collect()}
        if not ops:
            return TableResult(source.name, table.name, 0, "no_change")
        deletes = ops.get("d", 0)
        counts = {"inserted": ops.get("c", 0), "updated": ops.get("u", 0), "deleted": deletes}
        if deletes:
            live = current.where(F.col("_op") != "d").count()
            read = live - deletes + counts["inserted"]
            if guard_deletes(source, table, deletes=deletes, current=live, read=read):
                counts["deletes_accepted"] = deletes
        landed = land(spark, rows, source=source, table=table, offset=taken_at.isoformat())
        return TableResult(source.name, table.name, landed, "success" if landed else "no_change", counts=counts)
    finally:
        rows.unpersist()


def collect(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    """Watermark tables incrementally; tables marked ``snapshot: true`` (dictionaries) by snapshot diff."""
    return [
        run_table(
            spark,
            source,
            table,
            lambda t=table: (collect_snapshot_table if t.options.get("snapshot") else collect_incremental_table)(
                spark, source, t
            ),
        )
        for table in source.tables
    ]


def collect_snapshot(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    return [
        run_table(spark, source, table, lambda t=table: collect_snapshot_table(spark, source, t))
        for table in source.tables
    ]
