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

After the first load a table with a change key (the lineage key of every entity, the event id of the EMPI log)
is published by its changes: Delta's change data feed (switched on for the silver table at its first load) names
the keys written since the version last published, and one transaction replaces the ods rows of those keys by
their rows now (deletes included), so a county day moves thousands of rows, not millions. The version published
is kept per table and per source (``ods_load.publish_state``, in the same transaction): a source a blocking rule
holds back keeps its version and catches up when released. Anything the feed cannot answer — a table created
anew, a column added, versions no longer in the log, a key with a NULL — falls back to a whole reload. A table
(keyed or not) whose newest version and commit time are those published is left as it is without a Spark job.
Each change is also written to ``ods.published_change`` for dbt's incremental marts (dbt/macros/incremental.sql).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.db import ensure_schemas, warehouse_engine
from core.settings import get_settings
from core.spark import newest_commit, read_delta
from expectations.store import blocked_sources
from spark_jobs.empi.identity import empi_path
from spark_jobs.model import canonical_model, entity_columns
from spark_jobs.standardize import QUARANTINE_COLUMNS, quarantine_path, silver_path
from spark_jobs.terminology import worklist_path

STAGE_SCHEMA = "ods_load"  # where a reload lands before it is swapped into ods in one transaction
STATE_TABLE = f"{STAGE_SCHEMA}.publish_state"  # the silver version each ods table (and held-back source) holds
BASE = ""  # the state row of every source not held back
LINEAGE_KEY = ("source_system", "source_table", "source_key")  # the rows one source row became
# What each publish changed, for dbt's incremental models: each lineage key replaced (``before`` NULL) and each row
# it replaced as it was (``before``, so a deleted fee still names its encounter), a source's whole slice (key NULL)
# or the whole table (source NULL too), with the transaction that wrote it (``xact``); kept CHANGE_LOG_DAYS.
CHANGE_LOG = "ods.published_change"
CHANGE_LOG_DAYS = 35

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
# The master patient index (spark_jobs/empi): cross-reference, golden records, review queue, event log. The
# first three are rewritten whole by every EMPI run, so they are reloaded whole; the log only grows.
EMPI_KEYS = {"events": ("event_id",)}
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


@dataclass(frozen=True)
class OdsTable:
    path: str  # the silver (or EMPI) Delta table
    target: str  # schema.table in the warehouse
    columns: dict[str, str]  # name -> Spark type
    key: tuple[str, ...] | None = None  # the columns naming the rows a change replaces; None: reloaded whole


@dataclass(frozen=True)
class Published:
    mode: str  # created (empty), full, changes, unchanged
    rows: int  # rows loaded: all of them (full) or those of the changed keys (changes)
    removed: int = 0  # rows the changed keys replaced or deleted (changes)


def _columns(entity: str) -> dict[str, str]:
    return {c["name"]: c["type"] for c in entity_columns(entity)}


def ods_tables() -> list[OdsTable]:
    """Every table publish maintains."""
    tables = [
        OdsTable(silver_path(entity), f"ods.{entity}", _columns(entity), LINEAGE_KEY)
        for entity in canonical_model()["entities"]
    ]
    tables.append(OdsTable(quarantine_path(), "ods.quarantine", QUARANTINE_COLUMNS))
    tables.append(OdsTable(worklist_path(), "ods.terminology_worklist", WORKLIST_COLUMNS))
    tables += [
        OdsTable(empi_path(delta), f"ods.empi_{name}", columns, EMPI_KEYS.get(name))
        for name, (delta, columns) in EMPI_TABLES.items()
    ]
    return tables


def ensure_table(target: str, columns: dict[str, str], key: tuple[str, ...] | None = None) -> str | None:
    """Create ``target`` (schema.table) with ``columns`` if it is missing, else add the columns it lacks.

    Columns the table has beyond ``columns`` are left in place (views may read them) but made nullable, so a
    reload without them still inserts. ``key``: indexed, for the deletes of a publish by changes. Returns
    "created" or "widened" (columns added: the rows it holds lack them), None when the table was as declared.
    """
    schema, table = target.split(".")
    quote = warehouse_engine().dialect.identifier_preparer.quote
    qualified = f"{quote(schema)}.{quote(table)}"
    changed = None
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
            changed = "created"
        for name, kind in columns.items():
            if existing and name not in existing:
                conn.execute(sa.text(f"ALTER TABLE {qualified} ADD COLUMN {quote(name)} {pg_type(kind)}"))
                changed = "widened"
        for name, nullable in existing.items():
            if name not in columns and nullable == "NO":
                conn.execute(sa.text(f"ALTER TABLE {qualified} ALTER COLUMN {quote(name)} DROP NOT NULL"))
        if key:
            index = quote(f"{table}_change_key")
            conn.execute(
                sa.text(f"CREATE INDEX IF NOT EXISTS {index} ON {qualified} ({', '.join(quote(c) for c in key)})")
            )
    return changed


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


@lru_cache(maxsize=1)
def ensure_publish_tables() -> None:
    """Publish's bookkeeping (state, change log) exists with today's columns: dbt's incremental marts read the
    change log, so a transform run before the first publish of a new version must find it too. Once per process
    (every table's publish asks)."""
    ensure_schemas(STAGE_SCHEMA, "ods")
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (target text NOT NULL, source_system text NOT NULL, "
                "table_id text NOT NULL, version bigint, published_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (target, source_system))"
            )
        )
        conn.execute(sa.text(f"ALTER TABLE {STATE_TABLE} ADD COLUMN IF NOT EXISTS commit_ts bigint"))
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (dataset text NOT NULL, source_system text, "
                "source_table text, source_key text, published_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        conn.execute(sa.text(f"ALTER TABLE {CHANGE_LOG} ADD COLUMN IF NOT EXISTS before jsonb"))
        # the writing transaction: a reader takes exactly the rows of transactions older than its snapshot's xmin
        # (all committed), where a time would miss a long publish that commits after a later one was read
        conn.execute(
            sa.text(
                f"ALTER TABLE {CHANGE_LOG} ADD COLUMN IF NOT EXISTS xact xid8 NOT NULL DEFAULT pg_current_xact_id()"
            )
        )
        # the marts read a range of transactions per dataset (dbt/macros/incremental.sql), many times per build
        conn.execute(sa.text("DROP INDEX IF EXISTS ods.published_change_at"))
        conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS published_change_window ON {CHANGE_LOG} (dataset, xact)"))


def _log_changes(conn: sa.Connection, table: OdsTable, sources: list[str | None], key_stage: str | None = None) -> None:
    """Write what this publish replaced into the change log (entity tables only): the keys staged in
    ``key_stage``, and each of ``sources`` whole (None: the whole table)."""
    if table.key != LINEAGE_KEY:
        return
    dataset = table.target.split(".")[1]
    if key_stage:
        conn.execute(
            sa.text(
                f"INSERT INTO {CHANGE_LOG} (dataset, source_system, source_table, source_key) "
                f"SELECT :d, source_system, source_table, source_key FROM {_qualified(key_stage)}"
            ),
            {"d": dataset},
        )
    for source in sources:
        conn.execute(
            sa.text(f"INSERT INTO {CHANGE_LOG} (dataset, source_system) VALUES (:d, :s)"), {"d": dataset, "s": source}
        )


def _delete_keys(conn: sa.Connection, table: OdsTable, key_stage: str, matches: str) -> int:
    """Delete the rows of the staged keys from ``table``; an entity's rows go to the change log as they were."""
    deleting = f"DELETE FROM {_qualified(table.target)} t USING {_qualified(key_stage)} k WHERE {matches}"
    if table.key != LINEAGE_KEY:
        return conn.execute(sa.text(deleting)).rowcount
    return conn.execute(
        sa.text(
            f"WITH gone AS ({deleting} RETURNING t.*) INSERT INTO {CHANGE_LOG} "
            "(dataset, source_system, source_table, source_key, before) "
            "SELECT :d, source_system, source_table, source_key, to_jsonb(gone) FROM gone"
        ),
        {"d": table.target.split(".")[1]},
    ).rowcount


def _published_state(target: str, table_id: str) -> dict[str, int | None]:
    """Source -> the silver version its ods rows are at (``BASE``: every source not named); empty when ``target``
    was never published from this Delta table (a table made anew has another id)."""
    ensure_publish_tables()
    with warehouse_engine().connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT source_system, table_id, version FROM {STATE_TABLE} WHERE target = :t"), {"t": target}
        ).all()
    state = {source: version for source, table, version in rows if table == table_id}
    return state if BASE in state and len(state) == len(rows) else {}


def _save_state(
    conn: sa.Connection, target: str, table_id: str, state: dict[str, int | None], commit_ts: int | None = None
) -> None:
    """Replace ``target``'s state; ``commit_ts``: the commit time of the base version (see :func:`_up_to_date`)."""
    conn.execute(sa.text(f"DELETE FROM {STATE_TABLE} WHERE target = :t"), {"t": target})
    for source, version in state.items():
        conn.execute(
            sa.text(
                f"INSERT INTO {STATE_TABLE} (target, source_system, table_id, version, commit_ts) "
                "VALUES (:t, :s, :i, :v, :c)"
            ),
            {"t": target, "s": source, "i": table_id, "v": version, "c": commit_ts if source == BASE else None},
        )


def _newest_commit(path: str) -> tuple[int, int]:
    """(version, commit time in ms) of the newest commit: the time tells a table made anew apart from one at
    the same version."""
    version, info = newest_commit(path)
    return version, int(info.get("timestamp", 0))


def _up_to_date(path: str, target: str, held: list[str]) -> bool:
    """Whether ``target`` holds the newest version of ``path`` for every source not held back (no Spark job:
    most tables have not changed since the last publish)."""
    if not (Path(path) / "_delta_log").is_dir():
        return False
    version, stamp = _newest_commit(path)
    ensure_publish_tables()
    with warehouse_engine().connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT source_system, version, commit_ts FROM {STATE_TABLE} WHERE target = :t"), {"t": target}
        ).all()
    state = {source: (published, at) for source, published, at in rows}
    return state.get(BASE) == (version, stamp) and all(
        published == version or source in held for source, (published, _) in state.items()
    )


def _with_change_feed(spark: SparkSession, path: str) -> str:
    """Switch Delta's change data feed on for the table (from its next version on); the table's id."""
    detail = DeltaTable.forPath(spark, path).detail().select("id", "properties").first()
    if detail["properties"].get("delta.enableChangeDataFeed") != "true":
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    return detail["id"]


def _write_stage(df: DataFrame, stage: str) -> None:
    url, props = get_settings().warehouse_jdbc
    df.write.format("jdbc").mode("append").option("url", url).option("dbtable", stage).option(
        "batchsize", "5000"
    ).options(**props).save()


def _changed_keys(
    spark: SparkSession, path: str, key: tuple[str, ...], state: dict[str, int | None], version: int, held: list[str]
) -> DataFrame | None:
    """The keys written since each source's published version (a source held back: none), or None when the
    change feed cannot say (versions gone from the log, the feed off for some of them)."""
    since = min(v for s, v in state.items() if v is not None and s not in held)
    if since >= version:
        return spark.createDataFrame([], ", ".join(f"`{c}` string" for c in key))
    newer: Column = F.col("_commit_version") > F.lit(state[BASE])
    if "source_system" in key:
        by_source = F.when(F.col("source_system").isin(held), F.lit(False))
        for source, published in state.items():
            if source != BASE:
                by_source = by_source.when(
                    F.col("source_system") == source,
                    F.lit(False) if published is None else F.col("_commit_version") > F.lit(published),
                )
        newer = by_source.otherwise(newer)
    try:
        changes = (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", since + 1)
            .option("endingVersion", version)
            .load(path)
        )
        keys = changes.where(newer).select(*key).distinct().localCheckpoint()
    except AnalysisException:
        return None
    return keys


def _publish_changes(
    spark: SparkSession,
    df: DataFrame,
    table: OdsTable,
    table_id: str,
    state: dict[str, int | None],
    commit: tuple[int, int],
    held: list[str],
) -> Published | None:
    """Replace the ods rows of the keys changed since the published versions by their rows now, in one
    transaction with the new state; None when a whole reload is needed instead."""
    key = table.key or ()
    version, stamp = commit
    keys = _changed_keys(spark, table.path, key, state, version, held)
    if keys is None or keys.where(" OR ".join(f"`{c}` IS NULL" for c in key)).limit(1).count():
        return None
    # a source released after being held back from a whole reload has no version: its rows are reloaded
    reload = [s for s, v in state.items() if s != BASE and v is None and s not in held]
    rows = df.join(keys, list(key), "left_semi")
    if reload:
        rows = rows.unionByName(df.where(F.col("source_system").isin(reload)))
    new_state = {BASE: version} | {s: state.get(s, state[BASE]) for s in held}
    if not keys.limit(1).count() and not reload:
        with warehouse_engine().begin() as conn:
            _save_state(conn, table.target, table_id, new_state, stamp)
        return Published("unchanged", 0)
    key_stage, row_stage = f"{STAGE_SCHEMA}.keys__{table.target.replace('.', '__')}", stage_table(table.target)
    quote = warehouse_engine().dialect.identifier_preparer.quote
    key_list = ", ".join(quote(c) for c in key)
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {_qualified(key_stage)}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {_qualified(key_stage)} AS SELECT {key_list} FROM {_qualified(table.target)} LIMIT 0"
            )
        )
    _write_stage(keys, key_stage)
    _write_stage(rows, row_stage)
    columns = ", ".join(quote(c) for c in df.columns)
    matches = " AND ".join(f"t.{quote(c)} = k.{quote(c)}" for c in key)
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"ANALYZE {_qualified(key_stage)}"))
        removed = _delete_keys(conn, table, key_stage, matches)
        if reload:
            removed += conn.execute(
                sa.text(f"DELETE FROM {_qualified(table.target)} WHERE source_system = ANY(:reload)"),
                {"reload": reload},
            ).rowcount
        inserted = conn.execute(
            sa.text(f"INSERT INTO {_qualified(table.target)} ({columns}) SELECT {columns} FROM {_qualified(row_stage)}")
        ).rowcount
        _log_changes(conn, table, reload, key_stage)
        conn.execute(sa.text(f"DROP TABLE {_qualified(key_stage)}, {_qualified(row_stage)}"))
        _save_state(conn, table.target, table_id, new_state, stamp)
    return Published("changes", inserted, removed)


def publish_table(
    spark: SparkSession,
    path: str,
    target: str,
    columns: dict[str, str],
    key: tuple[str, ...] | None = None,
    whole: bool = False,
) -> Published:
    """Bring ``target`` up to the Delta table at ``path``: by its changes when it has a change key and was
    published before from the same table, else (or ``whole``) by a whole reload.

    The table is created from ``columns`` first if need be, so it exists even while its silver table does not
    (then it is left as it is: 0 rows when just created). A whole reload is loaded into a staging table first
    and swapped in atomically (:func:`swap_in`).
    """
    table = OdsTable(path, target, columns, key)
    shape = ensure_table(target, columns, key)
    held = blocked_sources(target.split(".")[1]) if "source_system" in columns else []
    if shape is None and not whole and _up_to_date(path, target, held):
        return Published("unchanged", 0)
    df = None
    if (Path(path) / "_delta_log").is_dir():  # the rows of the version recorded as published, whatever lands meanwhile
        table_id = _with_change_feed(spark, path) if key else ""
        version, stamp = _newest_commit(path)
        df = read_delta(spark, path, version)
    if df is not None:
        df = df.select(*[c for c in columns if c in df.columns])  # the declared columns only (e.g. no features)
        # PostgreSQL gets arrays as text[]; keep flags readable for analysts as a comma list instead.
        for field in df.schema.fields:
            if field.dataType.typeName() == "array":
                df = df.withColumn(field.name, F.array_join(field.name, ","))
    if df is None:
        return Published("created" if shape == "created" else "unchanged", 0)
    current = df.where(~F.col("source_system").isin(held)) if held else df
    if key:
        state = _published_state(target, table_id)
        if state and shape is None and not whole:
            done = _publish_changes(spark, current, table, table_id, state, (version, stamp), held)
            if done is not None:
                return done
        with warehouse_engine().begin() as conn:  # until the reload is in, the next run must reload too
            _save_state(conn, target, table_id, {})
    stage = stage_table(target)
    _write_stage(current, stage)
    rows = swap_in(target, stage, df.columns, held)
    # a source held back keeps the version it was at (none known: reloaded whole when released)
    held_at = {s: state.get(s) for s in held} if key else dict.fromkeys(held)
    with warehouse_engine().begin() as conn:
        _log_changes(conn, table, [None])
        _save_state(conn, target, table_id, {BASE: version} | held_at, stamp)
    return Published("full", rows)


def run_publish(spark: SparkSession, whole: bool = False) -> dict[str, Published]:
    ensure_publish_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(f"DELETE FROM {CHANGE_LOG} WHERE published_at < now() - make_interval(days => :d)"),
            {"d": CHANGE_LOG_DAYS},
        )
    return {
        table.target: publish_table(spark, table.path, table.target, table.columns, table.key, whole)
        for table in ods_tables()
    }
