"""Check every rule of the library on the lake: one pass per dataset, all rules at once.

GX on Spark runs a job per expectation; here a dataset's row rules become one array of checks per row
(rule id, applies, failed, value), exploded once, so checked and failed counts per 稽核条目 (rule × institution
× source × day) and the failing rows come out of a single scan per dataset, and all datasets together are one
Spark job. Cross-row rules (reference, query) are joined in as a flag column first. Quarantined rows (the
silver mapping rules) count as failed rows of their rule. Pure functions from DataFrame to DataFrame; reading
and writing is the caller's (:mod:`expectations.store`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from functools import reduce

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.spark import read_delta
from expectations.rules import Library, Rule, row_condition
from spark_jobs.model import canonical_model
from spark_jobs.standardize import quarantine_path, silver_path

log = logging.getLogger(__name__)
ROWS_CHECK = "__rows__"  # a pseudo-rule every row meets: the dataset's row count per institution and day
CHECK_COLUMNS = [
    "dataset",
    "rule_id",
    "source_system",
    "source_table",
    "source_key",
    "org_code",
    "business_date",
    "applies",
    "failed",
    "value",
]


@dataclass
class Evaluation:
    checks: DataFrame  # one row per (row, rule) applied: CHECK_COLUMNS
    quarantine: DataFrame | None


def load_datasets(spark: SparkSession) -> dict[str, DataFrame]:
    """Every silver table that has data, registered as a view under its entity name (for query rules)."""
    datasets = {}
    for entity in canonical_model()["entities"]:
        df = read_delta(spark, silver_path(entity))
        if df is not None:
            df.createOrReplaceTempView(entity)
            datasets[entity] = df
    return datasets


def register_views(spark: SparkSession, library: Library) -> Library:
    """Register the library's derived views (config/quality/views.yaml) over the registered entities; returns
    the library without the query rules that read a view an entity with no data yet keeps from being made (a
    new county's first run), each named in a warning."""
    unavailable = []
    for name, sql in library.views.items():
        try:
            spark.sql(sql).createOrReplaceTempView(name)
        except AnalysisException as error:
            spark.catalog.dropTempView(name)
            unavailable.append(name)
            log.warning(
                "quality view %s cannot be made yet (%s): the rules reading it are skipped this run",
                name,
                str(error).splitlines()[0],
            )
    reading = {
        r.rule_id
        for r in library.rules
        if r.kind == "query" and any(re.search(rf"\b{name}\b", r.definition["query"]) for name in unavailable)
    }
    for rule_id in sorted(reading):
        log.warning("quality rule %s skipped: it reads a view that cannot be made yet", rule_id)
    return replace(library, rules=tuple(r for r in library.rules if r.rule_id not in reading))


def business_date(expression: str | None) -> Column:
    """The day a row is scored on: its own business date, else the day the source last changed it."""
    own = [F.expr(expression)] if expression else []
    return F.coalesce(*own, F.to_date("source_updated_at"), F.current_date()).cast("date")


def _with_cross_row_flags(
    spark: SparkSession, df: DataFrame, rules: list[Rule], datasets: dict[str, DataFrame]
) -> tuple[DataFrame, dict[str, str]]:
    """Join a pass/fail column for each reference and query rule; returns the frame and each rule's condition."""
    conditions = {}
    for i, rule in enumerate(rules):
        flag = f"_x{i}"
        if rule.kind == "reference":
            spec = rule.definition["reference"]
            target = datasets.get(spec["dataset"])
            pairs = list(zip(spec["columns"], spec["to_columns"], strict=True))
            if target is None:  # the parent dataset has no rows at all: every child row is an orphan
                df = df.withColumn(flag, F.lit(None).cast("boolean"))
            else:
                keys = [F.col(t).cast("string").alias(f"{flag}_{n}") for n, (_, t) in enumerate(pairs)]
                parents = (
                    target.select(F.col("source_system").alias(f"{flag}_src"), *keys)
                    .distinct()
                    .withColumn(flag, F.lit(True))
                )
                on = [F.col("source_system") == F.col(f"{flag}_src")] + [
                    F.col(c).cast("string") == F.col(f"{flag}_{n}") for n, (c, _) in enumerate(pairs)
                ]
                df = df.join(parents, reduce(lambda a, b: a & b, on), "left").drop(
                    f"{flag}_src", *[f"{flag}_{n}" for n in range(len(pairs))]
                )
            present = " AND ".join(f"`{c}` IS NOT NULL" for c, _ in pairs)
            conditions[rule.rule_id] = f"NOT ({present}) OR {flag} IS NOT NULL"
        elif rule.kind == "query":
            failing = (
                spark.sql(rule.definition["query"])
                .select(F.col("source_system").alias("_qs"), F.col("source_key").alias("_qk"))
                .distinct()
                .withColumn(flag, F.lit(True))
            )
            df = df.join(
                failing, (F.col("source_system") == F.col("_qs")) & (F.col("source_key") == F.col("_qk")), "left"
            ).drop("_qs", "_qk")
            conditions[rule.rule_id] = f"{flag} IS NULL"
    return df, conditions


def dataset_checks(
    spark: SparkSession, dataset: str, df: DataFrame, library: Library, datasets: dict[str, DataFrame]
) -> DataFrame:
    """One row per (source row, rule): whether the rule applies, whether the row failed it, the value shown."""
    rules = library.for_dataset(dataset, "expect", "condition", "flag", "reference", "query")
    df, cross_row = _with_cross_row_flags(spark, df, rules, datasets)
    checks = [
        F.struct(
            F.lit(ROWS_CHECK).alias("rule_id"),
            F.lit(True).alias("applies"),
            F.lit(False).alias("failed"),
            F.lit(None).cast("string").alias("value"),
        )
    ]
    for rule in rules:
        passes = F.expr(cross_row.get(rule.rule_id) or row_condition(rule))
        applies = F.coalesce(F.expr(rule.where), F.lit(False)) if rule.where else F.lit(True)
        value = F.expr(rule.value).cast("string") if rule.value else F.lit(None).cast("string")
        checks.append(
            F.struct(
                F.lit(rule.rule_id).alias("rule_id"),
                applies.alias("applies"),
                (applies & ~F.coalesce(passes, F.lit(False))).alias("failed"),
                value.alias("value"),
            )
        )
    return df.select(
        F.lit(dataset).alias("dataset"),
        "source_system",
        "source_table",
        "source_key",
        "org_code",
        business_date(library.business_dates.get(dataset)).alias("business_date"),
        F.explode(F.array(*checks)).alias("c"),
    ).select(*CHECK_COLUMNS[:1], "c.rule_id", *CHECK_COLUMNS[2:7], "c.applies", "c.failed", "c.value")


def evaluate(spark: SparkSession, library: Library) -> Evaluation:
    datasets = load_datasets(spark)
    library = register_views(spark, library)
    frames = [dataset_checks(spark, name, df, library, datasets) for name, df in datasets.items()]
    checks = reduce(DataFrame.unionByName, frames) if frames else None
    quarantine = read_delta(spark, quarantine_path())
    if quarantine is not None:
        quarantine = quarantine.select(
            F.col("entity").alias("dataset"),
            "rule_id",
            "source_system",
            "source_table",
            F.col("record_key").alias("source_key"),
            "org_code",
            F.coalesce(F.to_date("source_updated_at"), F.to_date("detected_at"), F.current_date()).alias(
                "business_date"
            ),
            F.col("reason").alias("value"),
        )
    return Evaluation(checks, quarantine)


def audit_counts(checks: DataFrame) -> DataFrame:
    """Checked and failed rows per rule × dataset × institution × source × day."""
    return (
        checks.where("applies")
        .groupBy("dataset", "rule_id", "org_code", "source_system", "business_date")
        .agg(F.count(F.lit(1)).alias("checked_rows"), F.sum(F.col("failed").cast("long")).alias("failed_rows"))
    )


def quarantine_counts(quarantine: DataFrame) -> DataFrame:
    return quarantine.groupBy("dataset", "rule_id", "org_code", "source_system", "business_date").agg(
        F.count(F.lit(1)).alias("failed_rows")
    )


def failures(evaluation: Evaluation) -> DataFrame:
    """Every failing row, from the checks and from the quarantine (their rule ids as the library names them)."""
    columns = [
        "dataset",
        "rule_id",
        "source_system",
        "source_table",
        "source_key",
        "org_code",
        "business_date",
        "value",
    ]
    failed = evaluation.checks.where("failed").select(*columns)
    if evaluation.quarantine is None:
        return failed
    return failed.unionByName(evaluation.quarantine.select(*columns))
