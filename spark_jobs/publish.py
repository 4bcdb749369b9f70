"""Publish silver Delta tables to the warehouse's ``ods`` schema, where dbt takes over.

Every ods table exists from the first publish on: one per entity of the canonical model (config/model/, lineage
columns included), ``ods.quarantine``, ``ods.terminology_worklist`` and the master patient index
(``ods.empi_*``). A table whose silver side has no data yet is created empty from its columns, so the dbt staging
views over it always build. A column the model gains is added to the existing table first, and a column the
model drops stays in ods (nullable) until no view reads it.

A reload is atomic for readers (Superset, the API, dbt): Spark loads the rows into a staging table of the
``ods_load`` schema, then one PostgreSQL transaction truncates the ods table, copies the staging rows in and
drops the staging table. A reader (READ COMMITTED, PostgreSQL's default) sees the old rows or the new ones,
never an empty or half-loaded table (it waits for the few seconds of the copy), and a load that fails leaves
the old rows in place. The ods table itself is never dropped or renamed: dbt's staging models are views over
it, and a PostgreSQL view is bound to the table it was created on, so a swap by rename would leave them
reading the old table (and block dropping it); copying within one transaction keeps every view as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.db import ensure_schemas, warehouse_engine
from core.settings import get_settings
from core.spark import read_delta
from expectations.store import blocked_sources
from spark_jobs.empi.identity import empi_path
from spark_jobs.model import canonical_model, entity_columns
from spark_jobs.standardize import QUARANTINE_COLUMNS, quarantine_path, silver_path
from spark_jobs.terminology import worklist_path

STAGE_SCHEMA = "ods_load"  # where a reload lands before it is swapped into ods in one transaction

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
WORKLIST_COLUMNS = {  # as spark_jobs.terminology.refresh_worklist writes silver/_terminology_worklist
    "source_system": "string",
    "entity": "string",
    "source_table": "string",
    "column": "string",
    "source_code": "string",
    "rows": "bigint",
    "example_keys": "string",
    "concept_map": "string",
}
# The master patient index (spark_jobs/empi): cross-reference, golden records, review queue, event log.
EMPI_TABLES = {
    "pix": (
        "records",
        {
            "record_id": "string",
            "source_system": "string",
            "local_patient_id": "string",
            "master_id": "string",
            "decision": "string",
            "score": "double",
            "id_valid": "boolean",
            "matched_at": "timestamp",
        },
    ),
    "golden": (
        "golden",
        {
            "master_id": "string",
            "name": "string",
            "sex_code": "string",
            "birth_date": "date",
            "id_number": "string",
            "id_number_valid": "boolean",
            "phone": "string",
            "address": "string",
            "record_count": "bigint",
            "last_updated_at": "timestamp",
        },
    ),
    "review_queue": (
        "review_queue",
        {
            "record_id": "string",
            "candidate": "string",
            "candidate_record": "string",
            "evidence": "string",
            "score": "double",
            "second": "double",
            "queued_at": "timestamp",
        },
    ),
    "events": (
        "events",
        {
            "event_id": "string",
            "at": "timestamp",
            "actor": "string",
            "action": "string",
            "reason": "string",
            "record_ids": "array<string>",
            "master_ids": "array<string>",
        },
    ),
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
    tables = [
        (silver_path(entity), f"ods.{entity}", {c["name"]: c["type"] for c in entity_columns(entity)})
        for entity in canonical_model()["entities"]
    ]
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
        existing = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = :schema AND table_name = :table"
                ),
                {"schema": schema, "table": table},
            ).all()
        )
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


def _qualified(name: str) -> str:
    quote = warehouse_engine().dialect.identifier_preparer.quote
    return ".".join(quote(part) for part in name.split("."))


def stage_table(target: str) -> str:
    """A fresh, empty staging table shaped exactly like ``target`` (same columns and types, so values convert
    as they would into ``target``); a leftover of an interrupted publish is replaced."""
    schema, table = target.split(".")
    stage = f"{STAGE_SCHEMA}.{schema}__{table}"
    ensure_schemas(STAGE_SCHEMA)
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {_qualified(stage)}"))
        conn.execute(sa.text(f"CREATE TABLE {_qualified(stage)} (LIKE {_qualified(target)} INCLUDING DEFAULTS)"))
    return stage


def swap_in(target: str, stage: str, names: list[str], keep_sources: list[str] | None = None) -> int:
    """Replace ``target``'s rows by ``stage``'s in one transaction and drop ``stage``; rows now in ``target``.

    TRUNCATE takes an exclusive lock until the commit, so a reader waits for the copy instead of seeing an
    empty table; a failure rolls back to the old rows. ``keep_sources``: sources a blocking quality rule holds
    back, whose rows stay as last published.
    """
    columns = ", ".join(warehouse_engine().dialect.identifier_preparer.quote(n) for n in names)
    with warehouse_engine().begin() as conn:
        if keep_sources:
            conn.execute(
                sa.text(
                    f"INSERT INTO {_qualified(stage)} ({columns}) SELECT {columns} "
                    f"FROM {_qualified(target)} WHERE source_system = ANY(:keep)"
                ),
                {"keep": keep_sources},
            )
        conn.execute(sa.text(f"TRUNCATE {_qualified(target)}"))
        rows = conn.execute(
            sa.text(f"INSERT INTO {_qualified(target)} ({columns}) SELECT {columns} FROM {_qualified(stage)}")
        ).rowcount
        conn.execute(sa.text(f"DROP TABLE {_qualified(stage)}"))
    return rows


def publish_table(spark: SparkSession, path: str, target: str, columns: dict[str, str]) -> int | None:
    """Reload ``target`` from the Delta table at ``path``; rows published, or None when ``path`` has no data yet.

    The table is created from ``columns`` first if need be, so it exists even while its silver table does not
    (then it is left as it is: 0 rows when just created). The rows are loaded into a staging table first and
    swapped in atomically (:func:`swap_in`).
    """
    df = read_delta(spark, path)
    if df is not None:
        df = df.select(*[c for c in columns if c in df.columns])  # the declared columns only (e.g. no features)
        # PostgreSQL gets arrays as text[]; keep flags readable for analysts as a comma list instead.
        for field in df.schema.fields:
            if field.dataType.typeName() == "array":
                df = df.withColumn(field.name, F.array_join(field.name, ","))
    created = ensure_table(target, columns)
    if df is None:
        return 0 if created else None
    held_back = blocked_sources(target.split(".")[1]) if "source_system" in df.columns else []
    if held_back:
        df = df.where(~F.col("source_system").isin(held_back))
    stage = stage_table(target)
    url, props = get_settings().warehouse_jdbc
    (
        df.write.format("jdbc")
        .mode("append")
        .option("url", url)
        .option("dbtable", stage)
        .option("batchsize", "5000")
        .options(**props)
        .save()
    )
    return swap_in(target, stage, df.columns, held_back)


def run_publish(spark: SparkSession) -> dict[str, int]:
    ensure_schemas("ods")
    published = {}
    for path, target, columns in ods_tables():
        rows = publish_table(spark, path, target, columns)
        if rows is not None:
            published[target] = rows
    return published
