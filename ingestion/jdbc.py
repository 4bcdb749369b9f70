"""JDBC collection (MariaDB/MySQL or PostgreSQL): incremental by watermark, and full snapshot with diff.

Incremental (``jdbc_incremental``): each run reads the window (newest landed watermark - late-arrival
window, source max] and lands only row versions bronze does not hold yet (matched on ``_source_pos`` =
watermark|key), so rows committed late with an older watermark are caught and nothing lands twice. Physical
deletes are invisible to a watermark: use it for sources that never delete (flags/status updates instead).

Snapshot (``jdbc_snapshot``): each run reads the whole table and lands only the difference to bronze's
current state: new keys as ``c``, changed rows as ``u``, keys gone from the source as ``d``. Re-running on an
unchanged source lands nothing. Suits dictionaries and small tables without a reliable change column.

Both read in parallel partitions (``strategy.parallelism``) on a numeric key or ``partition_column``.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ingestion.bronze import TableResult, bronze_path, delta_exists, land, latest_versions
from ingestion.registry import SourceConfig, TableConfig
from ingestion.runner import run_table

FETCH_SIZE = "10000"
POSITION_TIME = "yyyyMMddHHmmssSSSSSS"


def qualified(source: SourceConfig, table: TableConfig) -> str:
    schema = table.options.get("schema", source.connection.schema)
    return f"{schema}.{table.name}" if schema else table.name


def _engine(source: SourceConfig) -> sa.Engine:
    return sa.create_engine(source.connection.sqlalchemy_url(), hide_parameters=True, poolclass=sa.pool.NullPool)


def read_table(spark: SparkSession, source: SourceConfig, table: TableConfig, where: str | None = None
               ) -> DataFrame:
    """Parallel JDBC read of one table (optionally filtered), partitioned on a numeric column when there is one."""
    url, props = source.connection.jdbc()
    name = qualified(source, table)
    partition = table.options.get("partition_column")
    reader = spark.read.format("jdbc").option("url", url).option("fetchsize", FETCH_SIZE).options(**props)
    if partition and source.strategy.parallelism > 1:
        with _engine(source).connect() as conn:
            low, high = conn.execute(sa.text(
                f"SELECT MIN({partition}), MAX({partition}) FROM {name}" + (f" WHERE {where}" if where else ""))).one()
        if low is not None and high > low:
            return (reader.option("dbtable", f"(SELECT * FROM {name}{f' WHERE {where}' if where else ''}) AS t")
                    .option("partitionColumn", partition).option("lowerBound", str(low))
                    .option("upperBound", str(high + 1)).option("numPartitions", source.strategy.parallelism)
                    .load())
    return reader.option("query", f"SELECT * FROM {name}" + (f" WHERE {where}" if where else "")).load()


def _key(table: TableConfig):
    return F.concat_ws("|", *[F.col(k).cast("string") for k in table.keys])


def _landed(spark: SparkSession, source: SourceConfig, table: TableConfig) -> DataFrame | None:
    path = bronze_path(source.name, table.name)
    return spark.read.format("delta").load(path) if delta_exists(spark, path) else None


def collect_incremental_table(spark: SparkSession, source: SourceConfig, table: TableConfig) -> int:
    bronze = _landed(spark, source, table)
    window_minutes = source.strategy.late_arrival_minutes
    # Watermarks travel as strings in the source's local time: no driver/time-zone conversion in between.
    low = None if bronze is None else bronze.agg(F.date_format(
        F.max("_source_ts") - F.expr(f"INTERVAL {window_minutes} MINUTES"), "yyyy-MM-dd HH:mm:ss.SSSSSS")).first()[0]
    with _engine(source).connect() as conn:
        newest = conn.execute(sa.text(f"SELECT MAX({table.watermark}) FROM {qualified(source, table)}")).scalar()
    if newest is None:
        return 0
    high = newest.strftime("%Y-%m-%d %H:%M:%S.%f")
    window = f"{table.watermark} <= '{high}'" + (f" AND {table.watermark} > '{low}'" if low else "")
    position = F.concat_ws("|", F.date_format(table.watermark, POSITION_TIME), _key(table))
    rows = read_table(spark, source, table, window).withColumn("_source_pos", position)
    if bronze is not None:
        # Only bronze rows inside the re-read window can match: compare against those, not all history.
        recent = bronze.where(F.col("_source_ts") > F.to_timestamp(F.lit(low))) if low else bronze
        rows = rows.join(recent.select("_source_pos"), "_source_pos", "left_anti")
    rows = rows.withColumn("_op", F.lit("r")).withColumn("_source_ts", F.col(table.watermark)).persist()
    try:
        if rows.isEmpty():
            return 0
        return land(spark, rows, source=source, table=table, offset=high, offset_from=low)
    finally:
        rows.unpersist()


def _row_hash(columns: list[str]):
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in sorted(columns)])), 256)


def snapshot_diff(snapshot: DataFrame, current: DataFrame | None, keys: list[str], taken_at: datetime
                  ) -> DataFrame:
    """Rows to land so that bronze's current state equals the snapshot: inserts, changes, deletes (pure)."""
    columns = [c for c in snapshot.columns if not c.startswith("_")]
    fresh = snapshot.withColumn("_hash", _row_hash(columns))
    if current is None:
        changed = fresh.withColumn("_op", F.lit("c"))
    else:
        state = current.where(F.col("_op") != "d").withColumn("_hash", _row_hash(columns))
        changed = (fresh.join(state.select(*keys, F.col("_hash").alias("_old")), keys, "left")
                   .where(F.col("_old").isNull() | (F.col("_old") != F.col("_hash")))
                   .withColumn("_op", F.when(F.col("_old").isNull(), "c").otherwise("u")).drop("_old"))
        gone = state.join(fresh.select(*keys), keys, "left_anti").select(*columns).withColumn("_op", F.lit("d"))
        changed = changed.drop("_hash").unionByName(gone, allowMissingColumns=True)
    stamp = taken_at.strftime("%Y%m%d%H%M%S%f")
    return (changed.drop("_hash").withColumn("_source_ts", F.lit(taken_at).cast("timestamp"))
            .withColumn("_source_pos", F.concat_ws("|", F.lit(stamp), *[F.col(k).cast("string") for k in keys])))


def collect_snapshot_table(spark: SparkSession, source: SourceConfig, table: TableConfig) -> int:
    taken_at = datetime.now()
    bronze = _landed(spark, source, table)
    current = None if bronze is None else latest_versions(bronze, list(table.keys))
    rows = snapshot_diff(read_table(spark, source, table), current, list(table.keys), taken_at).persist()
    try:
        if rows.isEmpty():
            return 0
        return land(spark, rows, source=source, table=table, offset=taken_at.isoformat())
    finally:
        rows.unpersist()


def collect(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    """Watermark tables incrementally; tables marked ``snapshot: true`` (dictionaries) by snapshot diff."""
    return [run_table(spark, source, table, lambda t=table: (
                collect_snapshot_table if t.options.get("snapshot") else collect_incremental_table)(spark, source, t))
            for table in source.tables]


def collect_snapshot(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    return [run_table(spark, source, table, lambda t=table: collect_snapshot_table(spark, source, t))
            for table in source.tables]
