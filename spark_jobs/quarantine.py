"""The per-source quarantine report: which rows failed which rule, with examples to look up in the source."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.spark import read_delta
from spark_jobs.standardize import quarantine_path


def quarantine_report(spark: SparkSession, source_system: str | None = None) -> list[dict]:
    quarantine = read_delta(spark, quarantine_path())
    if quarantine is None:
        return []
    if source_system:
        quarantine = quarantine.where(F.col("source_system") == source_system)
    grouped = (
        quarantine.groupBy("source_system", "source_table", "entity", "rule_id", "reason")
        .agg(
            F.count("*").alias("rows"),
            F.array_join(F.slice(F.sort_array(F.collect_set("record_key")), 1, 3), ", ").alias("example_keys"),
        )
        .orderBy("source_system", "source_table", "rule_id")
    )
    return [r.asDict() for r in grouped.collect()]
