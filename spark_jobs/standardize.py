"""Bronze -> silver: current state per business key, mapped to the canonical model, bad rows quarantined.

All functions here except ``run_standardize`` are pure DataFrame -> DataFrame transformations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import BRONZE_COLUMNS, bronze_path
from spark_jobs.model import canonical_model, concept_map, entity_columns, source_mapping

QUARANTINE_COLUMNS = ("source_system", "entity", "bronze_table", "record_key", "rule_id", "reason",
                      "raw_payload", "detected_at")
TRANSFORMS = {"trim": F.trim, "upper": lambda c: F.upper(F.trim(c))}


def current_state(bronze: DataFrame, keys: list[str]) -> DataFrame:
    """Latest version of each business key by source position; deleted keys are dropped."""
    order = Window.partitionBy(*keys).orderBy(F.col("_source_pos").desc(), F.col("_ingested_at").desc())
    return (bronze.withColumn("_rank", F.row_number().over(order))
                  .where((F.col("_rank") == 1) & (F.col("_op") != "d")).drop("_rank"))


def _typed(column: Column, spec: dict[str, Any]) -> Column:
    kind = spec.get("type")
    if kind == "date":
        return F.to_date(column.cast("string"), spec["format"]) if "format" in spec else column.cast("date")
    if kind == "timestamp":
        return F.to_timestamp(column.cast("string"), spec["format"]) if "format" in spec else column.cast("timestamp")
    return column.cast(kind or "string")


def mapped_columns(columns: dict[str, dict[str, Any]], source_system: str) -> tuple[list[Column], list[Column]]:
    """Canonical column expressions, and flag expressions for unmapped codes and unparseable values."""
    projections, flags = [], []
    for target, spec in columns.items():
        if "constant" in spec:
            projections.append(F.lit(spec["constant"]).alias(target))
            continue
        source = F.col(spec["from"])
        value = TRANSFORMS[spec["transform"]](source) if "transform" in spec else source
        if "concept_map" in spec:
            codes = concept_map(source_system, spec["concept_map"])
            lookup = F.create_map(*[F.lit(x) for pair in codes.items() for x in pair])
            value = lookup[value.cast("string")]
            flags.append(F.when(source.isNotNull() & value.isNull(),
                                F.concat(F.lit(f"UNMAPPED:{target}:"), source.cast("string"))))
        elif "type" in spec:
            value = _typed(value, spec)
            flags.append(F.when(source.isNotNull() & value.isNull(), F.lit(f"UNPARSEABLE:{target}")))
        projections.append(value.alias(target))
    return projections, flags


def _flag_array(flags: list[Column]) -> Column:
    if not flags:
        return F.array().cast("array<string>")
    return F.filter(F.array(*flags), lambda flag: flag.isNotNull())


def map_columns(df: DataFrame, columns: dict[str, dict[str, Any]], source_system: str) -> DataFrame:
    """Project source columns onto canonical ones, keeping bronze lineage and the raw row as JSON."""
    projections, flags = mapped_columns(columns, source_system)
    raw = F.to_json(F.struct(*[F.col(c) for c in df.columns if not c.startswith("_")]))
    return df.select(*projections, _flag_array(flags).alias("dq_flags"),
                     *[F.col(c) for c in BRONZE_COLUMNS], raw.alias("_raw"))


def apply_rules(df: DataFrame, rules: list[dict[str, Any]], key: list[str]) -> tuple[DataFrame, DataFrame]:
    """Split rows into (valid, violations); a row failing several rules gets one violation per rule."""
    violations = []
    failed_any = F.lit(False)
    for rule in rules:
        failed = F.lit(False)
        for column in rule.get("required", []):
            failed = failed | F.col(column).isNull() | (F.trim(F.col(column).cast("string")) == "")
        if "expression" in rule:
            failed = failed | ~F.coalesce(F.expr(rule["expression"]), F.lit(False))
        failed_any = failed_any | failed
        violations.append(df.where(failed).select(
            F.concat_ws("|", *[F.col(k).cast("string") for k in key]).alias("record_key"),
            F.lit(rule["id"]).alias("rule_id"), F.lit(rule["reason"]).alias("reason"),
            F.col("_raw").alias("raw_payload")))
    valid = df.where(~failed_any)
    quarantined = violations[0]
    for more in violations[1:]:
        quarantined = quarantined.unionByName(more)
    return valid, quarantined


def with_lookup(df: DataFrame, lookup_rows: DataFrame, spec: dict[str, Any], source_system: str) -> DataFrame:
    """Left-join columns from a related source table (e.g. the main diagnosis of a visit)."""
    rows = lookup_rows.where(spec["where"]) if "where" in spec else lookup_rows
    (source_col, target_col), = spec["join_on"].items()
    projections, flags = mapped_columns(spec["columns"], source_system)
    looked_up = rows.select(F.col(source_col).alias("_join_key"), *projections,
                            _flag_array(flags).alias("_lookup_flags")).dropDuplicates(["_join_key"])
    return (df.join(looked_up, df[target_col] == looked_up["_join_key"], "left")
              .withColumn("dq_flags", F.concat("dq_flags", F.coalesce("_lookup_flags", F.array())))
              .drop("_join_key", "_lookup_flags"))


# --- entity enrichment ----------------------------------------------------------------------------
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number_is_valid(id_number: Column) -> Column:
    """GB 11643: 18 characters, 17 digits, a real birth date, and the ISO 7064 MOD 11-2 check char."""
    weighted = sum(F.substring(id_number, i + 1, 1).cast("int") * w for i, w in enumerate(ID_WEIGHTS))
    check = F.substring(F.lit("10X98765432"), (weighted % 11 + 1).cast("int"), 1)
    return F.coalesce(
        (F.length(id_number) == 18) & F.substring(id_number, 1, 17).rlike("^[0-9]{17}$")
        & F.to_date(F.substring(id_number, 7, 8), "yyyyMMdd").isNotNull()
        & (F.upper(F.substring(id_number, 18, 1)) == check),
        F.lit(False))


def assign_master_id(person: DataFrame, salt: str) -> DataFrame:
    """First master patient index rule: the same valid 18-digit ID number is the same person.

    Records without a valid ID number each get their own master id (never guessed into a merge).
    The id is a salted hash, so it is stable across runs and does not reveal the ID number.
    """
    valid = id_number_is_valid(F.col("id_number"))
    identity = F.when(valid, F.concat(F.lit("ID|"), F.upper(F.col("id_number")))).otherwise(
        F.concat_ws("|", F.lit("LOCAL"), F.col("source_system"), F.col("local_patient_id")))
    return (person.withColumn("id_number_valid", valid)
                  .withColumn("master_id", F.concat(F.lit("M"),
                              F.substring(F.sha2(F.concat(F.lit(salt), identity), 256), 1, 16))))


def enrich(entity: str, df: DataFrame) -> DataFrame:
    if entity == "person":
        return assign_master_id(df, get_settings().empi_salt)
    if entity == "encounter":
        return df.withColumn("visit_date", F.to_date("visit_at"))
    return df


def to_canonical(df: DataFrame, entity: str) -> DataFrame:
    columns = entity_columns(entity)
    return df.select(*[F.col(c["name"]).cast(c["type"]).alias(c["name"]) for c in columns])


# --- job -------------------------------------------------------------------------------------------
def silver_path(entity: str) -> str:
    return get_settings().lake_path("silver", entity)


def quarantine_path() -> str:
    return get_settings().lake_path("silver", "_quarantine")


def standardize_entity(spark: SparkSession, source_system: str, entity: str,
                       spec: dict[str, Any]) -> tuple[DataFrame, DataFrame] | None:
    bronze = read_delta(spark, bronze_path(source_system, spec["bronze_table"]))
    if bronze is None:
        return None
    mapped = map_columns(current_state(bronze, spec["key"]), spec["columns"], source_system)
    for lookup in spec.get("lookups", {}).values():
        rows = read_delta(spark, bronze_path(source_system, lookup["bronze_table"]))
        if rows is not None:
            mapped = with_lookup(mapped, current_state(rows, lookup["key"]), lookup, source_system)
    mapped = (mapped.withColumn("source_system", F.lit(source_system))
                    .withColumn("org_code", F.col("_org_code"))
                    .withColumn("source_updated_at", F.col("_source_ts")))
    for column in {c["name"] for c in entity_columns(entity)} - set(mapped.columns):
        mapped = mapped.withColumn(column, F.lit(None))
    key = [k for k in canonical_model()["entities"][entity]["key"] if k != "source_system"]
    valid, violations = apply_rules(mapped, spec.get("rules", []), key)
    detected = datetime.now().astimezone()
    quarantine = violations.select(F.lit(source_system).alias("source_system"), F.lit(entity).alias("entity"),
                                   F.lit(spec["bronze_table"]).alias("bronze_table"), "record_key", "rule_id",
                                   "reason", "raw_payload", F.lit(detected).cast("timestamp").alias("detected_at"))
    return to_canonical(enrich(entity, valid), entity), quarantine


def _replace_source(df: DataFrame, path: str, predicate: str) -> None:
    """Overwrite one source's slice of a silver table: re-running gives the same table."""
    (df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
       .option("mergeSchema", "true").save(path))


def run_standardize(spark: SparkSession, source_system: str) -> dict[str, dict[str, int]]:
    mapping = source_mapping(source_system)
    report = {}
    for entity, spec in mapping["entities"].items():
        result = standardize_entity(spark, source_system, entity, spec)
        if result is None:
            continue
        silver, quarantine = result
        _replace_source(silver, silver_path(entity), f"source_system = '{source_system}'")
        _replace_source(quarantine, quarantine_path(),
                        f"source_system = '{source_system}' AND entity = '{entity}'")
        report[entity] = {
            "silver_rows": spark.read.format("delta").load(silver_path(entity))
                               .where(F.col("source_system") == source_system).count(),
            "quarantined_rows": spark.read.format("delta").load(quarantine_path())
                                     .where((F.col("source_system") == source_system)
                                            & (F.col("entity") == entity)).count(),
        }
    return report
