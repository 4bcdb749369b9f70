"""The bronze contract: every landed row carries where it came from, when, and in which batch."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.settings import get_settings

BRONZE_COLUMNS = ("_op", "_source_ts", "_source_pos", "_ingested_at", "_batch_id", "_source_system", "_org_code")


def bronze_path(source: str, table: str) -> str:
    return get_settings().lake_path("bronze", source, table.lower())


def add_bronze_columns(df: DataFrame, *, op: str | Column, source_ts: Column, source_pos: Column,
                       batch_id: str, source_system: str, org_code: str, ingested_at: datetime) -> DataFrame:
    """Append the bronze contract columns to rows exactly as the source sent them."""
    return (df.withColumn("_op", op if isinstance(op, Column) else F.lit(op))
              .withColumn("_source_ts", source_ts.cast("timestamp"))
              .withColumn("_source_pos", source_pos.cast("string"))
              .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
              .withColumn("_batch_id", F.lit(batch_id))
              .withColumn("_source_system", F.lit(source_system))
              .withColumn("_org_code", F.lit(org_code)))


def append_batch(df: DataFrame, path: str, app_id: str, version: int) -> None:
    """Append idempotently: Delta skips a (txnAppId, txnVersion) it has already committed."""
    (df.write.format("delta").mode("append")
       .option("txnAppId", app_id).option("txnVersion", version)
       .option("mergeSchema", "true").save(path))
