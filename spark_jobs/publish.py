"""Publish silver Delta tables to the warehouse's ``ods`` schema, where dbt takes over.

Every ods table exists from the first publish on: one per entity of the canonical model (config/model/, lineage
columns included), ``ods.quarantine``, ``ods.terminology_worklist`` and the master patient index
(``ods.empi_*``). A table whose silver side has no data yet is created empty from its columns, so the dbt staging
views over it always build. Tables are truncated and
reloaded in place (not dropped), so dbt views on them survive a publish; a column the model gains is added to the
existing table first, and a column the model drops stays in ods (nullable) until no view reads it.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.db import ensure_schemas, warehouse_engine
from core.settings import get_settings
from core.spark import read_delta
from spark_jobs.empi.identity import empi_path
from spark_jobs.model import canonical_model, entity_columns
from spark_jobs.standardize import quarantine_path, silver_path
from spark_jobs.terminology import worklist_path

# Spark type (config/model's `type`, or a DataFrame field's simpleString) -> the PostgreSQL type Spark's JDBC
# writer creates for it. Arrays are published as comma-joined text (see publish_table).
PG_TYPES = {
    "string": "text",
    "boolean": "boolean",
    "tinyint": "smallint",
    "smallint": "smallint",
    "int": "integer",
    "integer": "integer",
    "bigint": "bigint",
    "long": "bigint",
    "float": "real",
    "double": "double precision",
    "date": "date",
    "timestamp": "timestamp with time zone",
    "timestamp_ntz": "timestamp",
}

# Columns of the two tables that are not entities of the canonical model (name -> Spark type).
QUARANTINE_COLUMNS = {  # as spark_jobs.standardize._split writes silver/_quarantine
    "source_system": "string", "source_table": "string", "entity": "string", "record_key": "string",
    "rule_id": "string", "reason": "string", "raw_payload": "string", "org_code": "string",
    "source_position": "string", "source_updated_at": "timestamp", "detected_at": "timestamp",
}
WORKLIST_COLUMNS = {  # as spark_jobs.terminology.refresh_worklist writes silver/_terminology_worklist
    "source_system": "string", "entity": "string", "source_table": "string", "column": "string",
    "source_code": "string", "rows": "bigint", "example_keys": "string", "concept_map": "string",
}
# The master patient index (spark_jobs/empi): cross-reference, golden records, review queue, event log.
EMPI_TABLES = {
    "pix": ("records", {
        "record_id": "string", "source_system": "string", "local_patient_id": "string", "master_id": "string",
        "decision": "string", "score": "double", "id_valid": "boolean", "matched_at": "timestamp"}),
    "golden": ("golden", {
        "master_id": "string", "name": "string", "sex_code": "string", "birth_date": "date", "id_number": "string",
        "id_number_valid": "boolean", "phone": "string", "address": "string", "record_count": "bigint",
        "last_updated_at": "timestamp"}),
    "review_queue": ("review_queue", {
        "record_id": "string", "candidate": "string", "score": "double", "second": "double",
        "queued_at": "timestamp"}),
    "events": ("events", {
        "event_id": "string", "at": "timestamp", "actor": "string", "action": "string", "reason": "string",
        "record_ids": "array<string>", "master_ids": "array<string>"}),
}


def pg_type(spark_type: str) -> str:
    """PostgreSQL column type for a Spark type, e.g. ``decimal(12,2)`` -> ``numeric(12,2)``."""
    name = spark_type.strip().lower().replace(" ", "")
    if name.startswith("array"):
        return "text"
    if name.startswith("decimal"):
        return "numeric" + name.removeprefix("decimal")
    if name not in PG_TYPES:
        raise ValueError(f"no PostgreSQL type for Spark type '{spark_type}': add it to PG_TYPES in {__file__}")
    return PG_TYPES[name]


def ods_tables() -> list[tuple[str, str, dict[str, str]]]:
    """(silver Delta path, ods table, columns as name -> Spark type) of every table publish maintains."""
    tables = [(silver_path(entity), f"ods.{entity}", {c["name"]: c["type"] for c in entity_columns(entity)})
              for entity in canonical_model()["entities"]]
    tables.append((quarantine_path(), "ods.quarantine", QUARANTINE_COLUMNS))
    tables.append((worklist_path(), "ods.terminology_worklist", WORKLIST_COLUMNS))
    tables += [(empi_path(delta), f"ods.empi_{name}", columns) for name, (delta, columns) in EMPI_TABLES.items()]
    return tables


def ensure_table(target: str, columns: dict[str, str]) -> bool:
    """Create ``target`` (schema.table) with ``columns`` if it is missing, else add the columns it lacks.

    Columns the table has beyond ``columns`` are left in place (views may read them) but made nullable, so a
    reload without them still inserts. Returns True when the table was created.
    """
    schema, table = target.split(".")
    quote = warehouse_engine().dialect.identifier_preparer.quote
    qualified = f"{quote(schema)}.{quote(table)}"
    with warehouse_engine().begin() as conn:
        existing = dict(conn.execute(sa.text(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = :schema AND table_name = :table"), {"schema": schema, "table": table}).all())
        if not existing:
            definition = ", ".join(f"{quote(name)} {pg_type(kind)}" for name, kind in columns.items())
            conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {qualified} ({definition})"))
            return True
        for name, kind in columns.items():
            if name not in existing:
                conn.execute(sa.text(f"ALTER TABLE {qualified} ADD COLUMN {quote(name)} {pg_type(kind)}"))
        for name, nullable in existing.items():
            if name not in columns and nullable == "NO":
                conn.execute(sa.text(f"ALTER TABLE {qualified} ALTER COLUMN {quote(name)} DROP NOT NULL"))
    return False


def publish_table(spark: SparkSession, path: str, target: str, columns: dict[str, str]) -> int | None:
    """Reload ``target`` from the Delta table at ``path``; rows published, or None when ``path`` has no data yet.

    The table is created from ``columns`` first if need be, so it exists even while its silver table does not
    (then it is left as it is: 0 rows when just created).
    """
    df = read_delta(spark, path)
    if df is not None:
        df = df.select(*[c for c in columns if c in df.columns])   # the declared columns only (e.g. no features)
        # PostgreSQL gets arrays as text[]; keep flags readable for analysts as a comma list instead.
        for field in df.schema.fields:
            if field.dataType.typeName() == "array":
                df = df.withColumn(field.name, F.array_join(field.name, ","))
    created = ensure_table(target, columns)
    if df is None:
        return 0 if created else None
    url, props = get_settings().warehouse_jdbc
    (df.write.format("jdbc").mode("overwrite").option("truncate", "true").option("url", url)
       .option("dbtable", target).option("batchsize", "5000").options(**props).save())
    return df.count()


def run_publish(spark: SparkSession) -> dict[str, int]:
    ensure_schemas("ods")
    published = {}
    for path, target, columns in ods_tables():
        rows = publish_table(spark, path, target, columns)
        if rows is not None:
            published[target] = rows
    return published
