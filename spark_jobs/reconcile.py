"""Reconciliation per source, table and business day: where every row the source sent went.

For each mapped bronze table and each (institution, business day), the newest version of every source record
is accounted for exactly once: deleted at the source (CDC or snapshot difference), withdrawn by the source's
void flag (作废), meant for another entity of the same table (the mapping's ``where``), in silver, or in
quarantine with its rule. A record in none of these was lost; one in silver and quarantine at once, or a silver
or quarantine row whose record bronze does not hold as current, is an error too. Counts that merely agree with
themselves cannot hide a loss: every record is followed by its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.spark import read_delta
from ingestion.bronze import batch_version, bronze_path, business_date_column, latest_versions
from ingestion.registry import TableConfig, load_sources
from spark_jobs.model import mapped_sources, source_mapping
from spark_jobs.standardize import is_void, load_state, quarantine_path, silver_path, source_key

COUNTS = (
    "landed_versions",
    "current_records",
    "pending",
    "deleted",
    "withdrawn",
    "other_entity",
    "in_silver",
    "quarantined",
    "in_both",
    "lost",
    "stale",
)
PROBLEMS = {  # count -> what it means and what to do (the error a reconciliation raises)
    "lost": "current source records neither in silver nor in quarantine; re-run ./drc silver --source {s} --full",
    "in_both": "records both in silver and in quarantine; re-run ./drc silver --source {s} --full",
    "stale": "silver or quarantine rows whose record the source deleted, withdrew or never sent; "
    "re-run ./drc silver --source {s} --full",
}
EXAMPLES = 3


@dataclass(frozen=True)
class Discrepancy:
    source_system: str
    bronze_table: str
    entity: str
    org_code: str | None
    business_date: date | None
    problem: str
    rows: int
    example_keys: list[str]

    def __str__(self) -> str:
        where = f"{self.source_system}.{self.bronze_table} → silver.{self.entity}, {self.org_code} {self.business_date}"
        hint = PROBLEMS[self.problem].format(s=self.source_system)
        return f"{where}: {self.rows} {hint} (e.g. key {', '.join(self.example_keys)})"


def classify(latest: DataFrame, spec: dict[str, Any], where: str, standardized_through: int | None) -> Column:
    """Why a record's newest version is not expected in silver, or 'live' when it is: landed after the last
    standardisation of its table (``pending``), then the order of spark_jobs.standardize: a delete, the void
    flag, the mapping's ``where``."""
    pending = (
        F.lit(True)
        if standardized_through is None
        else F.coalesce(batch_version() > standardized_through, F.lit(False))
    )
    bucket = F.when(pending, F.lit("pending")).when(F.col("_op") == "d", F.lit("deleted"))
    if spec.get("void"):
        bucket = bucket.when(is_void(latest, spec, where), F.lit("withdrawn"))
    if "where" in spec:
        bucket = bucket.when(~F.coalesce(F.expr(spec["where"]), F.lit(False)), F.lit("other_entity"))
    return bucket.otherwise(F.lit("live"))


def reconcile_table(
    bronze: DataFrame,
    silver_keys: DataFrame,
    quarantine_keys: DataFrame,
    spec: dict[str, Any],
    day: Column,
    where: str,
    standardized_through: int | None,
) -> DataFrame:
    """Counts per (org_code, business_date) of one mapped table (pure; see the module docstring).

    ``silver_keys`` and ``quarantine_keys`` hold the ``source_key`` of this table's rows in silver and in
    quarantine; ``standardized_through`` the bronze version silver last read (None: never). Each output row
    also names a few example keys per problem.
    """
    dated = bronze.withColumn("_day", day)
    landed = dated.groupBy("_org_code", "_day").agg(F.count(F.lit(1)).alias("landed_versions"))
    latest = latest_versions(dated, spec["key"])
    latest = latest.withColumn("_bucket", classify(latest, spec, where, standardized_through)).withColumn(
        "source_key", source_key(spec["key"])
    )
    placed = (
        silver_keys.select("source_key", F.lit(True).alias("_in_silver"))
        .distinct()
        .join(
            quarantine_keys.select("source_key", F.lit(True).alias("_in_quarantine")).distinct(),
            "source_key",
            "full_outer",
        )
    )
    joined = latest.join(placed, "source_key", "full_outer")
    live = F.col("_bucket") == "live"
    settled = F.coalesce(F.col("_bucket") != "pending", F.lit(True))  # a pending record may still be anywhere
    in_silver, in_quarantine = F.coalesce("_in_silver", F.lit(False)), F.coalesce("_in_quarantine", F.lit(False))
    problem = (
        F.when(live & ~in_silver & ~in_quarantine, "lost")
        .when(live & in_silver & in_quarantine, "in_both")
        .when(settled & ~F.coalesce(live, F.lit(False)) & (in_silver | in_quarantine), "stale")
    )

    def count(condition: Column) -> Column:
        return F.count(F.when(condition, 1))

    def examples(name: str) -> Column:
        return F.slice(F.sort_array(F.collect_list(F.when(problem == name, F.col("source_key")))), 1, EXAMPLES)

    counts = joined.groupBy("_org_code", "_day").agg(
        count(F.col("_bucket").isNotNull()).alias("current_records"),
        count(F.col("_bucket") == "pending").alias("pending"),
        count(F.col("_bucket") == "deleted").alias("deleted"),
        count(F.col("_bucket") == "withdrawn").alias("withdrawn"),
        count(F.col("_bucket") == "other_entity").alias("other_entity"),
        count(live & in_silver & ~in_quarantine).alias("in_silver"),
        count(live & in_quarantine & ~in_silver).alias("quarantined"),
        *[count(problem == name).alias(name) for name in PROBLEMS],
        *[examples(name).alias(f"{name}_examples") for name in PROBLEMS],
    )
    return counts.join(landed, ["_org_code", "_day"], "full_outer").select(
        F.col("_org_code").alias("org_code"),
        F.col("_day").alias("business_date"),
        *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in COUNTS],
        *[F.col(f"{name}_examples") for name in PROBLEMS],
    )


def _table_config(source_system: str, bronze_table: str) -> TableConfig:
    tables = {t.name.lower(): t for t in load_sources()[source_system].tables}
    return tables[bronze_table.lower()]


def reconcile(spark: SparkSession, sources: list[str] | None = None, day: date | None = None) -> list[dict[str, Any]]:
    """One row per mapped table × institution × business day (optionally one day only), with every count."""
    parts = []
    quarantine = read_delta(spark, quarantine_path())
    for source in sources or mapped_sources():
        checkpoints = load_state(source)
        for spec in source_mapping(source)["tables"]:
            checkpoint = checkpoints.get(f"{spec['entity']}/{spec['bronze_table']}")
            bronze = read_delta(spark, bronze_path(source, spec["bronze_table"]))
            silver = read_delta(spark, silver_path(spec["entity"]))
            if bronze is None or silver is None or quarantine is None:
                continue
            mine = (F.col("source_system") == source) & (F.col("source_table") == spec["bronze_table"])
            table = _table_config(source, spec["bronze_table"])
            counts = reconcile_table(
                bronze,
                silver.where(mine).select("source_key"),
                quarantine.where(mine & (F.col("entity") == spec["entity"])).select(
                    F.col("record_key").alias("source_key")
                ),
                spec,
                business_date_column(table),
                f"{source}.{spec['bronze_table']}",
                checkpoint["versions"][spec["bronze_table"]] if checkpoint else None,
            )
            if day is not None:
                counts = counts.where(F.col("business_date") == F.lit(day))
            parts.append(
                counts.select(
                    F.lit(source).alias("source_system"),
                    F.lit(spec["bronze_table"]).alias("bronze_table"),
                    F.lit(spec["entity"]).alias("entity"),
                    "*",
                )
            )
    if not parts:
        return []
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return [r.asDict() for r in union.collect()]


def discrepancies(rows: list[dict[str, Any]]) -> list[Discrepancy]:
    return [
        Discrepancy(
            r["source_system"],
            r["bronze_table"],
            r["entity"],
            r["org_code"],
            r["business_date"],
            name,
            r[name],
            list(r[f"{name}_examples"] or []),
        )
        for r in rows
        for name in PROBLEMS
        if r[name]
    ]
