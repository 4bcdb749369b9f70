"""JDBC collection by watermark, exactly once.

Each run reads the window (last landed watermark - late-arrival window, source max] and lands only the
row versions bronze does not hold yet (matched on ``_source_pos`` = watermark|key), so rows committed
late with an older watermark are still caught and nothing lands twice. The offset is read back from
bronze itself, so it commits with the data; each batch is appended with Delta ``txnAppId`` and
``txnVersion`` = bronze table version + 1, so two concurrent runs cannot both land the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.db import mariadb_engine
from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import add_bronze_columns, append_batch, bronze_path
from ingestion.monitoring import BatchRecord, record_batch
from ingestion.registry import SourceConfig, TableConfig

FETCH_SIZE = "10000"


@dataclass(frozen=True)
class TableResult:
    source: str
    table: str
    rows: int
    watermark_to: str | None


def _jdbc_read(spark: SparkSession, source: SourceConfig, query: str):
    url, props = get_settings().mariadb_jdbc(source.database)
    return (spark.read.format("jdbc").option("url", url).option("query", query)
            .option("fetchsize", FETCH_SIZE).options(**props).load())


WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # to microseconds, so strings order like the timestamps


def ingest_table(spark: SparkSession, source: SourceConfig, table: TableConfig) -> TableResult:
    started = datetime.now().astimezone()
    path = bronze_path(source.name, table.name)
    bronze = read_delta(spark, path)
    # Watermarks travel as strings in the source's local time: no driver/time-zone conversion in between.
    low = None if bronze is None else bronze.agg(
        F.date_format(F.max("_source_ts") - F.expr(f"INTERVAL {table.late_arrival_minutes} MINUTES"),
                      "yyyy-MM-dd HH:mm:ss.SSSSSS")).first()[0]
    with mariadb_engine(source.database).connect() as conn:
        newest = conn.execute(sa.text(f"SELECT MAX({table.watermark}) FROM {table.name}")).scalar()
    if newest is None:
        return TableResult(source.name, table.name, 0, None)
    high = newest.strftime(WATERMARK_FORMAT)
    window = f"{table.watermark} <= '{high}'" if low is None else \
        f"{table.watermark} > '{low}' AND {table.watermark} <= '{high}'"
    rows = _jdbc_read(spark, source, f"SELECT * FROM {table.name} WHERE {window}")
    key = F.concat_ws("|", *[F.col(k).cast("string") for k in table.keys])
    position = F.concat_ws("|", F.date_format(table.watermark, "yyyyMMddHHmmssSSS"), key)
    new_rows = rows.withColumn("_pos", position)
    if bronze is not None:
        # Only bronze rows inside the re-read window can match: compare against those, not all history.
        landed = bronze.where(F.col("_source_ts") > F.to_timestamp(F.lit(low))) if low else bronze
        new_rows = new_rows.join(landed.select(F.col("_source_pos").alias("_pos")), "_pos", "left_anti")
    new_rows = new_rows.persist()
    try:
        if new_rows.isEmpty():
            return TableResult(source.name, table.name, 0, high)
        version = 0 if bronze is None else DeltaTable.forPath(spark, path).history(1).first()["version"] + 1
        batch_id = f"{source.name}.{table.name.lower()}.{version}"
        landed = add_bronze_columns(
            new_rows.drop("_pos"), op="r", source_ts=F.col(table.watermark), source_pos=position,
            batch_id=batch_id, source_system=source.name, org_code=source.org_code, ingested_at=started)
        append_batch(landed, path, app_id=f"{source.name}.{table.name.lower()}", version=version)
    finally:
        new_rows.unpersist()
    count = read_delta(spark, path).where(F.col("_batch_id") == batch_id).count()
    record_batch(BatchRecord(batch_id, source.name, table.name, source.org_code, source.mode, count,
                             low, high, started, datetime.now().astimezone(), "success"))
    return TableResult(source.name, table.name, count, high)


def ingest_source(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    return [ingest_table(spark, source, table) for table in source.tables]
