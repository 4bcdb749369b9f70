"""Publish silver Delta tables to the warehouse's ``ods`` schema, where dbt takes over.

Tables are truncated and reloaded in place (not dropped), so dbt views on them survive a publish.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.db import ensure_schemas
from core.settings import get_settings
from core.spark import read_delta
from spark_jobs.model import canonical_model
from spark_jobs.standardize import quarantine_path, silver_path


def publish_table(spark: SparkSession, path: str, target: str) -> int | None:
    df = read_delta(spark, path)
    if df is None:
        return None
    # PostgreSQL gets arrays as text[]; keep flags readable for analysts as a comma list instead.
    for field in df.schema.fields:
        if field.dataType.typeName() == "array":
            df = df.withColumn(field.name, F.array_join(field.name, ","))
    url, props = get_settings().warehouse_jdbc
    (df.write.format("jdbc").mode("overwrite").option("truncate", "true").option("url", url)
       .option("dbtable", target).option("batchsize", "5000").options(**props).save())
    return df.count()


def run_publish(spark: SparkSession) -> dict[str, int]:
    ensure_schemas("ods")
    published = {}
    for entity in canonical_model()["entities"]:
        rows = publish_table(spark, silver_path(entity), f"ods.{entity}")
        if rows is not None:
            published[f"ods.{entity}"] = rows
    rows = publish_table(spark, quarantine_path(), "ods.quarantine")
    if rows is not None:
        published["ods.quarantine"] = rows
    return published
