"""JDBC collection by watermark: each batch is the half-open window (last landed, source max].

The lower bound is read back from bronze itself, so the offset is committed with the data: a run that
dies before its Delta commit is simply repeated, and one that dies after it finds nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
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
        F.date_format(F.max("_source_ts"), "yyyy-MM-dd HH:mm:ss.SSSSSS")).first()[0]
    with mariadb_engine(source.database).connect() as conn:
        newest = conn.execute(sa.text(f"SELECT MAX({table.watermark}) FROM {table.name}")).scalar()
    high = newest.strftime(WATERMARK_FORMAT) if newest else None
    if high is None or (low is not None and high <= low):
        return TableResult(source.name, table.name, 0, low)
    window = f"{table.watermark} <= '{high}'"
    if low is not None:
        window = f"{table.watermark} > '{low}' AND {window}"
    rows = _jdbc_read(spark, source, f"SELECT * FROM {table.name} WHERE {window}")
    version = (newest - datetime(1970, 1, 1)) // timedelta(microseconds=1)  # monotonic per table
    batch_id = f"{source.name}.{table.name.lower()}.{version}"
    key = F.concat_ws("|", *[F.col(k).cast("string") for k in table.keys])
    landed = add_bronze_columns(
        rows, op="r", source_ts=F.col(table.watermark),
        source_pos=F.concat_ws("|", F.date_format(table.watermark, "yyyyMMddHHmmssSSS"), key),
        batch_id=batch_id, source_system=source.name, org_code=source.org_code, ingested_at=started)
    append_batch(landed, path, app_id=f"{source.name}.{table.name.lower()}", version=version)
    count = read_delta(spark, path).where(F.col("_batch_id") == batch_id).count()
    record_batch(BatchRecord(batch_id, source.name, table.name, source.org_code, source.mode, count,
                             low, high, started, datetime.now().astimezone(), "success"))
    return TableResult(source.name, table.name, count, high)


def ingest_source(spark: SparkSession, source: SourceConfig) -> list[TableResult]:
    return [ingest_table(spark, source, table) for table in source.tables]
