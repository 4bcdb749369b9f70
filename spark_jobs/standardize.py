"""Bronze -> silver: current state per business key, mapped to the canonical model, bad rows quarantined.

The transformations (``current_state`` ... ``standardize_frame``) are pure DataFrame -> DataFrame functions
driven by a mapping entry of config/mappings/<source>.yaml. The job (``run_standardize``) applies them
incrementally: per mapped table it remembers the bronze versions it has read, takes the business keys whose
rows arrived since, recomputes those keys' current state from their whole bronze history (so late,
out-of-order and deleted rows come out right) and MERGEs the result into the silver table and the quarantine.
A changed mapping, concept map or model re-standardises the table's whole history instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import gb11643
from core.privacy import MASKS_FOR_SQL
from core.settings import get_settings
from core.spark import newest_commit, read_delta
from ingestion.bronze import bronze_path, bronze_version, files_added_since, landed_between, uses_column_mapping
from ingestion.registry import load_sources
from spark_jobs.codes import (
    CANONICAL,
    CANONICAL_COL,
    VALID_COL,
    bind,
    code_rules,
    normalize_code,
    normalize_code_col,
)
from spark_jobs.model import (
    canonical_model,
    column_code_system,
    concept_map,
    entity_columns,
    entity_key,
    known_organizations,
    source_mapping,
    table_fingerprint,
)

QUARANTINE_COLUMNS = {  # silver/_quarantine (and ods.quarantine): column -> Spark type
    "source_system": "string",
    "source_table": "string",
    "entity": "string",
    "record_key": "string",
    "rule_id": "string",
    "reason": "string",
    "raw_payload": "string",
    "org_code": "string",
    "source_position": "string",
    "source_updated_at": "timestamp",
    "detected_at": "timestamp",
}
HALF_WIDTH = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in HALF_WIDTH[:-1]) + "\u3000"  # ０…９Ａ…ｚ and the ideographic space
TRANSFORMS = {
    "trim": lambda c: F.trim(c.cast("string")),
    "upper": lambda c: F.upper(F.trim(c.cast("string"))),
    "lower": lambda c: F.lower(F.trim(c.cast("string"))),
    "digits": lambda c: F.regexp_replace(c.cast("string"), "[^0-9]", ""),
    "fullwidth_to_halfwidth": lambda c: F.trim(F.translate(c.cast("string"), FULL_WIDTH, HALF_WIDTH)),
}
log = logging.getLogger(__name__)

BUILT_IN_RULES = {
    "STD-KEY": "业务主键缺失",
    "STD-PARSE": "无法解析的值",
    "STD-ORG": "未知机构（不在机构目录 config/organizations.csv）",
}


# --- current state ---------------------------------------------------------------------------------------
def current_state(bronze: DataFrame, keys: list[str], row_keys: list[str] | None = None) -> DataFrame:
    """Latest version of each business key by source position; deleted keys are dropped.

    An entity carried on rows of another key (the patient on every visit row of a file export, a department on
    every registration) is taken from the live rows only: deleting one visit withdraws that visit, not the
    patient the other visits still carry.
    """
    if row_keys and sorted(row_keys) != sorted(keys):
        bronze = current_state(bronze, row_keys)
    order = Window.partitionBy(*keys).orderBy(F.col("_source_pos").desc(), F.col("_ingested_at").desc())
    return (
        bronze.withColumn("_rank", F.row_number().over(order))
        .where((F.col("_rank") == 1) & (F.col("_op") != "d"))
        .drop("_rank")
    )


def source_key(keys: list[str]) -> Column:
    """The bronze business key as one string (silver's link back to the source row)."""
    return F.concat_ws("|", *[F.coalesce(F.col(f"`{k}`").cast("string"), F.lit("")) for k in keys])


# --- void flags -------------------------------------------------------------------------------------------
def void_values(spec: dict[str, Any]) -> dict[str, list[str]]:
    """The mapping's ``void: {column: value or [values]}`` as column -> the values that mean 作废/删除."""
    return {
        column: [str(v) for v in (values if isinstance(values, list) else [values])]
        for column, values in (spec.get("void") or {}).items()
    }


def is_void(df: DataFrame, spec: dict[str, Any], where: str) -> Column:
    """True only where a void flag holds one of its void values; NULL, empty or any other value is not void.

    A condition like ``del_flag <> '1'`` is NULL (so false) for a row without a flag, and such rows vanished
    from silver without a trace. A flag column missing from bronze (a source that never had it, or a removed
    column whose drift was accepted) withdraws nothing: it is logged, and every row stays.
    """
    present = {c.lower() for c in df.columns}
    voided = F.lit(False)
    for column, values in void_values(spec).items():
        if column.lower() not in present:
            log.warning(
                "%s: void flag column %s is not in bronze, so no row is withdrawn by it; check the "
                "source's schema changes (./drc ingest status) and the mapping's `void`",
                where,
                column,
            )
            continue
        flag = F.trim(F.col(f"`{column}`").cast("string"))
        voided = voided | F.coalesce(flag.isin(values), F.lit(False))
    return voided


def without_void(df: DataFrame, spec: dict[str, Any], where: str) -> DataFrame:
    """The rows a void flag does not withdraw (see :func:`is_void`)."""
    return df.where(~is_void(df, spec, where)) if spec.get("void") else df


# --- column mapping ---------------------------------------------------------------------------------------
def _present(column: Column) -> Column:
    return column.isNotNull() & (F.trim(column.cast("string")) != "")


def _typed(column: Column, spec: dict[str, Any]) -> Column:
    kind = spec["type"]
    formats = spec.get("formats") or ([spec["format"]] if "format" in spec else [])
    if kind in ("date", "timestamp") and formats:
        text = F.trim(column.cast("string"))
        parse = F.to_date if kind == "date" else F.to_timestamp
        return F.coalesce(*[parse(text, f) for f in formats])
    if kind == "boolean":
        return column.cast("boolean")
    return F.when(_present(column), column.cast(kind))


def _lookup_map(codes: dict[Any, Any]) -> Column:
    return F.create_map(*[F.lit(x) for code, target in codes.items() for x in (str(code), target)])


def _keyed_by(codes: dict[str, str], key: Any) -> dict[str, str]:
    """The concept map keyed by another form of its local codes; a form two codes with different targets
    share is left out (it would be a guess)."""
    keyed: dict[str, str] = {}
    clashes = set()
    for code, target in codes.items():
        form = key(code)
        if form is None:
            continue
        if keyed.setdefault(form, target) != target:
            clashes.add(form)
    return {form: target for form, target in keyed.items() if form not in clashes}


def concept_lookup(key: Column, codes: dict[str, str], code_system: str | None = None) -> Column:
    """The standard code for a local code: the first of

    1. the concept map entry for the code as sent;
    2. the entry for its normalised form (full-width, blanks, case: ``ｉ１０`` finds ``I10``), any source;
    3. if the column's code system has code rules (ICD-10): the entry for its canonical form (``j189`` finds
       ``J18.9``), else the canonical code itself when it is in the code system (a WHO code, or a 国临版
       extension code of one: ``J18.900x001`` is kept exact).

    NULL when none applies: the caller flags the code ``UNMAPPED`` (the terminology worklist).
    """
    normalized = _keyed_by(codes, normalize_code)
    # every local code already in its normalised form: the normalised lookup finds the exact ones too
    candidates = [_lookup_map(codes)[key]] if codes and normalized != codes else []
    if normalized:
        candidates.append(_lookup_map(normalized)[normalize_code_col(key)])
    rules = code_rules(code_system)
    if rules:  # the canonical form is computed once (bind), and only for codes the lookups above missed
        by_canonical = _keyed_by(codes, CANONICAL[rules])

        def standard(canonical: Column) -> Column:
            accepted = F.when(VALID_COL[rules](canonical), canonical)
            return F.coalesce(_lookup_map(by_canonical)[canonical], accepted) if by_canonical else accepted

        candidates.append(bind(CANONICAL_COL[rules](key), standard))
    if not candidates:
        return F.lit(None).cast("string")
    return F.coalesce(*candidates) if len(candidates) > 1 else candidates[0]


def column_expression(
    target: str, spec: dict[str, Any], source_system: str, code_system: str | None = None
) -> tuple[Column, Column, Column]:
    """(value, quality flag or NULL, parse error or NULL) for one canonical column.

    ``code_system``: the label of the canonical column's code system (config/model), which a concept map
    lookup may use (:func:`concept_lookup`).
    """
    if "constant" in spec:
        source = F.lit(spec["constant"])
    elif "expr" in spec:
        source = F.expr(spec["expr"])
    else:
        source = F.col(f"`{spec['from']}`")
    value = TRANSFORMS[spec["transform"]](source) if "transform" in spec else source
    no_flag = F.lit(None).cast("string")
    flag, error = no_flag, no_flag
    codes = spec.get("values")
    if "concept_map" in spec:
        codes = concept_map(source_system, spec["concept_map"])
    if codes is not None:
        key = F.trim(value.cast("string"))
        if "concept_map" in spec:
            value = concept_lookup(key, codes, code_system)
        else:
            value = _lookup_map(codes)[key] if codes else F.lit(None)
        flag = F.when(_present(key) & value.isNull(), F.concat(F.lit(f"UNMAPPED:{target}:"), key))
    if "type" in spec:
        typed = _typed(value, spec)
        failed = _present(value) & typed.isNull()
        if spec.get("on_error") == "flag":
            flag = F.coalesce(flag, F.when(failed, F.lit(f"UNPARSEABLE:{target}")))
        else:
            error = F.when(failed, F.concat(F.lit(f"{target}="), value.cast("string")))
        value = typed
    elif codes is None:
        value = F.when(_present(value), value) if "constant" not in spec else value
    return value.alias(target), flag, error


def _non_null(items: list[Column]) -> Column:
    if not items:
        return F.array().cast("array<string>")
    return F.filter(F.array(*items), lambda item: item.isNotNull())


def map_columns(
    df: DataFrame, columns: dict[str, dict[str, Any]], source_system: str, entity: str | None = None
) -> DataFrame:
    """Canonical columns from source columns, plus dq_flags, _parse_errors and the raw row as JSON."""
    values, flags, errors = [], [], []
    for target, spec in columns.items():
        label = column_code_system(entity, target) if entity else None
        value, flag, error = column_expression(target, spec, source_system, label)
        values.append(value)
        flags.append(flag)
        errors.append(error)
    raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns if not c.startswith("_")]))
    bronze = [F.col(c) for c in df.columns if c.startswith("_")]
    return df.select(
        *values,
        _non_null(flags).alias("dq_flags"),
        _non_null(errors).alias("_parse_errors"),
        *bronze,
        raw.alias("_raw"),
    )


def with_lookup(
    df: DataFrame,
    lookup_rows: DataFrame | None,
    spec: dict[str, Any],
    source_system: str,
    where: str = "lookup",
    entity: str | None = None,
) -> DataFrame:
    """Left-join columns of a related table (e.g. the discharge of an admission): its newest matching row."""
    if lookup_rows is None:  # the related table has not landed yet: its columns stay empty
        return df.select("*", *[F.lit(None).alias(c) for c in spec["columns"]])
    ((join_column, target),) = spec["join_on"].items()
    rows = without_void(current_state(lookup_rows, spec["key"]), spec, f"{where} ({spec['bronze_table']})")
    if "where" in spec:
        rows = rows.where(spec["where"])
    rows = rows.withColumn("_join_key", F.col(f"`{join_column}`").cast("string"))
    newest = Window.partitionBy("_join_key").orderBy(F.col("_source_pos").desc())
    looked_up = (
        map_columns(rows, spec["columns"], source_system, entity)
        .withColumn("_rank", F.row_number().over(newest))
        .where("_rank = 1")
        .select(
            "_join_key",
            *spec["columns"],
            F.col("dq_flags").alias("_lookup_flags"),
            F.col("_parse_errors").alias("_lookup_errors"),
        )
    )
    return (
        df.join(looked_up, F.col(target).cast("string") == looked_up["_join_key"], "left")
        .withColumn("dq_flags", F.concat("dq_flags", F.coalesce("_lookup_flags", F.array())))
        .withColumn("_parse_errors", F.concat("_parse_errors", F.coalesce("_lookup_errors", F.array())))
        .drop("_join_key", "_lookup_flags", "_lookup_errors")
    )


# --- validation -------------------------------------------------------------------------------------------
def redact_personal_col(text: Column) -> Column:
    """``text`` with ID numbers and mobile numbers masked as core.privacy masks them for display: a parse error
    quotes the failing value, which may be an ID number sent in the wrong field, and quarantine reasons are read
    by engineers and stewards, not clinicians."""
    for pattern, replacement in MASKS_FOR_SQL:
        text = F.regexp_replace(text, pattern, replacement)
    return text


def rule_checks(entity: str, rules: list[dict[str, Any]]) -> list[tuple[str, Column, Column]]:
    """(rule id, failed?, reason) for the built-in rules and the mapping's own rules."""
    key_missing = F.lit(False)
    for column in entity_key(entity):
        key_missing = key_missing | ~_present(F.col(column))
    known = sorted(known_organizations())
    checks = [
        ("STD-KEY", key_missing, F.lit(BUILT_IN_RULES["STD-KEY"])),
        (
            "STD-PARSE",
            F.size("_parse_errors") > 0,
            F.concat(
                F.lit(BUILT_IN_RULES["STD-PARSE"] + "："), redact_personal_col(F.array_join("_parse_errors", "，"))
            ),
        ),
        (
            "STD-ORG",
            F.col("org_code").isNull() | ~F.col("org_code").isin(known),
            F.concat(F.lit(BUILT_IN_RULES["STD-ORG"] + "："), F.coalesce(F.col("org_code"), F.lit("空"))),
        ),
    ]
    for rule in rules:
        failed = F.lit(False)
        for column in rule.get("required", []):
            failed = failed | ~_present(F.col(column))
        if "expression" in rule:
            failed = failed | ~F.coalesce(F.expr(rule["expression"]), F.lit(False))
        checks.append((rule["id"], failed, F.lit(rule["reason"])))
    return checks


def with_violations(df: DataFrame, entity: str, rules: list[dict[str, Any]]) -> DataFrame:
    """Adds ``_violations``: array of (rule_id, reason) the row fails; empty for a valid row."""
    failures = [
        F.when(failed, F.struct(F.lit(rule_id).alias("rule_id"), reason.alias("reason")))
        for rule_id, failed, reason in rule_checks(entity, rules)
    ]
    return df.withColumn("_violations", F.filter(F.array(*failures), lambda v: v.isNotNull()))


# --- entity enrichment ------------------------------------------------------------------------------------
def id_check_char(first17: Column) -> Column:
    """The GB 11643 (ISO 7064 MOD 11-2) check character of 17 digits, as a column (core/gb11643.py's rule)."""
    # digits zipped with their weights: the column appears once in the expression tree, not 17 times (ID
    # numbers are checked inside larger expressions; 17 copies of each made plans megabytes large)
    digits = F.transform(F.slice(F.split(first17, ""), 1, 17), lambda digit: digit.cast("int"))
    products = F.zip_with(digits, F.array(*[F.lit(w) for w in gb11643.WEIGHTS]), lambda digit, w: digit * w)
    weighted = F.aggregate(products, F.lit(0), lambda total, product: total + product)
    return F.substring(F.lit(gb11643.CHECK_CHARS), (weighted % 11 + 1).cast("int"), 1)


def id_number_is_valid(id_number: Column) -> Column:
    """GB 11643: 18 characters, 17 digits, a real birth date, and the ISO 7064 MOD 11-2 check char."""
    check = id_check_char(F.substring(id_number, 1, 17))
    return F.coalesce(
        (F.length(id_number) == 18)
        & F.substring(id_number, 1, 17).rlike("^[0-9]{17}$")
        & F.to_date(F.substring(id_number, 7, 8), "yyyyMMdd").isNotNull()
        & (F.upper(F.substring(id_number, 18, 1)) == check),
        F.lit(False),
    )


LEGACY_ID_PATTERN = "^[0-9]{15}$"  # the 15-digit number issued before 1999: 6 area, yyMMdd (19yy), 3 order


def id_birth_date(id_number: Column, valid: Column) -> Column:
    """The birth date an ID number carries: digits 7-14 of a valid 18-digit number, 19 + digits 7-12 of a
    15-digit legacy one; null for any other number (an invalid 18-digit number's digits prove nothing)."""
    return F.when(valid, F.to_date(F.substring(id_number, 7, 8), "yyyyMMdd")).when(
        id_number.rlike(LEGACY_ID_PATTERN), F.to_date(F.concat(F.lit("19"), F.substring(id_number, 7, 6)), "yyyyMMdd")
    )


def id_sex_code(id_number: Column, valid: Column) -> Column:
    """GB/T 2261.1 sex from the order code's last digit (the 17th of 18, the 15th of 15): odd 1 男, even 2 女."""
    digit = (
        F.when(valid, F.substring(id_number, 17, 1))
        .when(id_number.rlike(LEGACY_ID_PATTERN), F.substring(id_number, 15, 1))
        .cast("int")
    )
    return F.when(digit.isNotNull(), F.when(digit % 2 == 1, F.lit("1")).otherwise(F.lit("2")))


def enrich(entity: str, df: DataFrame) -> DataFrame:
    if entity == "person":  # the master id is the EMPI step's (spark_jobs/empi), written after matching
        return (
            df.withColumn("id_number_valid", id_number_is_valid(F.col("id_number")))
            .withColumn("id_birth_date", id_birth_date(F.col("id_number"), F.col("id_number_valid")))
            .withColumn("id_sex_code", id_sex_code(F.col("id_number"), F.col("id_number_valid")))
            .withColumn("master_id", F.lit(None).cast("string"))
        )
    if entity == "encounter":
        return df.withColumn("visit_date", F.coalesce(F.col("visit_date"), F.to_date("visit_at")))
    return df


def to_canonical(df: DataFrame, entity: str) -> DataFrame:
    return df.select(*[F.col(c["name"]).cast(c["type"]).alias(c["name"]) for c in entity_columns(entity)])


def table_keys(source_system: str, table: str) -> list[str] | None:
    """The bronze table's own row key from the source registry (None for a table it does not list)."""
    source = load_sources().get(source_system)
    found = [t for t in (source.tables if source else ()) if t.name.lower() == table.lower()]
    return list(found[0].keys) if found else None


def _standardized(
    bronze: DataFrame, spec: dict[str, Any], source_system: str, lookups: dict[str, DataFrame | None]
) -> DataFrame:
    """Mapped, enriched rows of the current state with their ``_violations`` (not yet split)."""
    entity = spec["entity"]
    tag = f"{source_system}.{spec['bronze_table']} → {entity}"
    state = current_state(bronze, spec["key"], table_keys(source_system, spec["bronze_table"])).withColumn(
        "_source_key", source_key(spec["key"])
    )
    state = without_void(state, spec, tag)  # 作废: withdrawn only where the flag says so
    if "where" in spec:  # a table feeding several entities: only its rows of this entity (e.g. by order type)
        state = state.where(spec["where"])
    mapped = map_columns(state, spec["columns"], source_system, entity)
    for name, lookup in (spec.get("lookups") or {}).items():
        mapped = with_lookup(mapped, lookups.get(name), lookup, source_system, f"{tag}, lookup {name}", entity)
    mapped = (
        mapped.withColumn("source_system", F.lit(source_system))
        .withColumn("source_table", F.lit(spec["bronze_table"]))
        .withColumn("source_key", F.col("_source_key"))
        .withColumn("org_code", F.col("_org_code"))
        .withColumn("source_updated_at", F.col("_source_ts"))
        .withColumn("source_position", F.col("_source_pos"))
    )
    for column in [c["name"] for c in entity_columns(entity)]:
        if column not in mapped.columns:
            mapped = mapped.withColumn(column, F.lit(None))
    checked = with_violations(mapped, entity, spec.get("rules") or [])
    return enrich(entity, checked)


def _split(checked: DataFrame, entity: str, detected_at: datetime) -> tuple[DataFrame, DataFrame]:
    valid = to_canonical(checked.where(F.size("_violations") == 0), entity)
    violations = checked.select(F.explode("_violations").alias("_v"), "*").select(
        "source_system",
        "source_table",
        F.lit(entity).alias("entity"),
        F.col("source_key").alias("record_key"),
        "_v.rule_id",
        "_v.reason",
        F.col("_raw").alias("raw_payload"),
        "org_code",
        "source_position",
        "source_updated_at",
        F.lit(detected_at).cast("timestamp").alias("detected_at"),
    )
    return valid, violations


def standardize_frame(
    bronze: DataFrame, spec: dict[str, Any], source_system: str, lookups: dict[str, DataFrame] | None = None
) -> tuple[DataFrame, DataFrame]:
    """Raw bronze rows of one mapped table -> (silver rows, quarantine rows)."""
    checked = _standardized(bronze, spec, source_system, lookups or {})
    return _split(checked, spec["entity"], datetime.now().astimezone())


# --- job --------------------------------------------------------------------------------------------------
def silver_path(entity: str) -> str:
    return get_settings().lake_path("silver", entity)


def quarantine_path() -> str:
    return get_settings().lake_path("silver", "_quarantine")


def _state_file(source_system: str) -> Path:
    return Path(get_settings().lake_path("silver", "_state", f"{source_system}.json"))


def load_state(source_system: str) -> dict[str, Any]:
    path = _state_file(source_system)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _save_state(source_system: str, state: dict[str, Any]) -> None:
    path = _state_file(source_system)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True)
class TableReport:
    source_system: str
    entity: str
    bronze_table: str
    mode: str  # full | incremental | no_change | no_bronze
    changed_keys: int = 0
    silver_rows: int = 0  # rows written (full) or inserted by the MERGE (incremental)
    removed: int = 0  # silver rows replaced or deleted by the MERGE
    quarantined: int = 0  # violations written


def _commit_metrics(path: str) -> dict[str, int]:
    metrics = newest_commit(path)[1].get("operationMetrics") or {}
    return {k: int(v) for k, v in metrics.items() if str(v).isdigit()}


def _exists(path: str) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def _replace_slice(df: DataFrame, path: str, source_system: str, table: str, entity: str | None = None) -> None:
    predicate = f"source_system = '{source_system}' AND source_table = '{table}'"
    if entity:
        predicate += f" AND entity = '{entity}'"
    df.write.format("delta").mode("overwrite").option("replaceWhere", predicate).save(path)


def _merge_keys(
    spark: SparkSession,
    df: DataFrame,
    rows: int,
    touched: DataFrame,
    path: str,
    key_column: str,
    source_system: str,
    table: str,
    entity: str | None = None,
) -> tuple[int, int]:
    """Replace the rows of the touched keys by ``df`` (``rows`` rows) in one atomic commit: (inserted, deleted).

    When no touched key has a row yet (a day's new records, most of a day's keys) the commit is an append: a
    MERGE costs four times the Spark jobs to find nothing to replace. Which case holds is asked of the table
    itself (one semi-join on the source's partition), so it cannot drift from what the table holds. The append
    carries the table version the check read as its transaction version: of two runs of one source at once, Delta
    skips the second's append of the same rows (where two MERGEs would have conflicted).
    """
    scope = (F.col("source_system") == source_system) & (F.col("source_table") == table)
    if entity:
        scope &= F.col("entity") == entity
    keys = F.broadcast(touched.select(F.col("source_key").alias(key_column)))
    checked_version = newest_commit(path)[0]
    if read_delta(spark, path).where(scope).join(keys, key_column, "left_semi").isEmpty():
        if rows:
            app = f"silver.{source_system}.{table}.{entity or 'rows'}"
            writer = df.write.format("delta").mode("append").option("txnAppId", app)
            writer.option("txnVersion", checked_version).save(path)
        return rows, 0
    condition = f"t.source_system = '{source_system}' AND t.source_table = '{table}'"
    if entity:
        condition += f" AND t.entity = '{entity}'"
    changes = touched.select(F.col("source_key").alias("_key"), F.lit("touched").alias("_kind")).unionByName(
        df.select(F.col(key_column).alias("_key"), F.lit("row").alias("_kind"), "*"), allowMissingColumns=True
    )
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(changes.alias("s"), f"{condition} AND t.{key_column} = s._key AND s._kind = 'touched'")
        .whenMatchedDelete()
        .whenNotMatchedInsert(condition="s._kind = 'row'", values={c: f"s.`{c}`" for c in df.columns})
        .execute()
    )
    metrics = _commit_metrics(path)
    return metrics.get("numTargetRowsInserted", 0), metrics.get("numTargetRowsDeleted", 0)


def _read_bronze(spark: SparkSession, source_system: str, table: str) -> DataFrame | None:
    return read_delta(spark, bronze_path(source_system, table))


def _rows_added(
    spark: SparkSession, source_system: str, table: str, since: int, until: int, schema: Any
) -> DataFrame | None:
    files = files_added_since(source_system, table, since, until)
    if files is None:
        return None
    if not files:
        return spark.createDataFrame([], schema)
    if uses_column_mapping(source_system, table):
        # Physical column names differ from the logical ones: the files read by name would give NULL keys, and
        # every changed row would be lost. Read through Delta, by the version in each row's batch id.
        return landed_between(_read_bronze(spark, source_system, table), since, until)
    return spark.read.schema(schema).parquet(*files)


def _touched_keys(
    spark: SparkSession,
    source_system: str,
    spec: dict[str, Any],
    main: DataFrame,
    since: dict[str, int],
    until: dict[str, int],
) -> DataFrame | None:
    """Business keys (as ``source_key``) whose silver row may have changed since the checkpoint."""
    main_table = spec["bronze_table"]
    added = _rows_added(spark, source_system, main_table, since[main_table], until[main_table], main.schema)
    if added is None:
        return None
    touched = added.select(source_key(spec["key"]).alias("source_key"))
    for lookup in (spec.get("lookups") or {}).values():
        table = lookup["bronze_table"]
        if until.get(table) is None or since.get(table) == until[table]:
            continue
        rows = _read_bronze(spark, source_system, table)
        start = since.get(table)
        added = rows if start is None else _rows_added(spark, source_system, table, start, until[table], rows.schema)
        if added is None:
            return None
        ((join_column, target),) = lookup["join_on"].items()
        main_column = spec["columns"][target]["from"]
        joined = added.select(F.col(f"`{join_column}`").cast("string").alias("_v")).distinct()
        touched = touched.unionByName(
            main.join(joined, F.col(f"`{main_column}`").cast("string") == joined["_v"], "left_semi").select(
                source_key(spec["key"]).alias("source_key")
            )
        )
    return touched.distinct()


def _lookup_rows(
    spark: SparkSession, source_system: str, spec: dict[str, Any], main_rows: DataFrame | None
) -> dict[str, DataFrame | None]:
    """Bronze rows of each lookup table; only those joining the given main rows when there are any."""
    result = {}
    for name, lookup in (spec.get("lookups") or {}).items():
        rows = _read_bronze(spark, source_system, lookup["bronze_table"])
        if rows is not None and main_rows is not None:
            ((join_column, target),) = lookup["join_on"].items()
            values = main_rows.select(F.col(f"`{spec['columns'][target]['from']}`").cast("string").alias("_v"))
            rows = rows.join(values.distinct(), F.col(f"`{join_column}`").cast("string") == F.col("_v"), "left_semi")
        result[name] = rows
    return result


def standardize_table(
    spark: SparkSession, source_system: str, spec: dict[str, Any], state: dict[str, Any], full: bool = False
) -> TableReport:
    """Bring one mapped table's silver rows and quarantine up to date with bronze; updates ``state``."""
    entity, table = spec["entity"], spec["bronze_table"]
    tag = f"{entity}/{table}"
    tables = [table] + [lookup["bronze_table"] for lookup in (spec.get("lookups") or {}).values()]
    until = {t: bronze_version(source_system, t) for t in tables}
    if until[table] is None:
        return TableReport(source_system, entity, table, "no_bronze")
    fingerprint = table_fingerprint(source_system, spec)
    checkpoint = state.get(tag)
    incremental = (
        not full
        and checkpoint is not None
        and checkpoint["fingerprint"] == fingerprint
        and _exists(silver_path(entity))
    )
    if incremental and checkpoint["versions"] == until:
        return TableReport(source_system, entity, table, "no_change")
    main = _read_bronze(spark, source_system, table)
    detected_at = datetime.now().astimezone()
    touched = _touched_keys(spark, source_system, spec, main, checkpoint["versions"], until) if incremental else None
    if touched is None:
        checked = _standardized(main, spec, source_system, _lookup_rows(spark, source_system, spec, None))
        checked = checked.persist()
        silver, quarantine = _split(checked, entity, detected_at)
        _replace_slice(silver, silver_path(entity), source_system, table)
        _replace_slice(quarantine, quarantine_path(), source_system, table, entity)
        written, quarantined = _outcome_counts(checked)
        checked.unpersist()
        report = TableReport(source_system, entity, table, "full", silver_rows=written, quarantined=quarantined)
    else:
        touched = touched.persist()
        keys = touched.count()
        rows = main.join(touched, source_key(spec["key"]) == touched["source_key"], "left_semi")
        checked = _standardized(rows, spec, source_system, _lookup_rows(spark, source_system, spec, rows))
        checked = checked.persist()
        silver, quarantine = _split(checked, entity, detected_at)
        valid, violations = _outcome_counts(checked)
        inserted, deleted = _merge_keys(
            spark, silver, valid, touched, silver_path(entity), "source_key", source_system, table
        )
        quarantined, _ = _merge_keys(
            spark, quarantine, violations, touched, quarantine_path(), "record_key", source_system, table, entity
        )
        checked.unpersist()
        touched.unpersist()
        report = TableReport(source_system, entity, table, "incremental", keys, inserted, deleted, quarantined)
    state[tag] = {"versions": until, "fingerprint": fingerprint}
    return report


def _outcome_counts(checked: DataFrame) -> tuple[int, int]:
    """(rows that pass every rule, violations) of a checked batch, in one Spark job."""
    passed = F.sum((F.size("_violations") == 0).cast("int"))
    return tuple(n or 0 for n in checked.agg(passed, F.sum(F.size("_violations"))).first())


# 2: silver partitioned by source_system, lineage with source_table/source_key.
# 3: rebuilt once from bronze: incremental runs before it lost the new rows of column-mapped (file-drop) tables.
SILVER_LAYOUT = "3"


def _layout_file() -> Path:
    return Path(get_settings().lake_path("silver", "_state", "layout"))


def _canonical_schema(entity: str) -> str:
    return ", ".join(f"`{c['name']}` {c['type']}" for c in entity_columns(entity))


def prepare_silver(spark: SparkSession) -> bool:
    """Create every silver table (and the quarantine) partitioned by source system, before any writer runs.

    Sources are then standardised in parallel without Delta conflicts (each writes its own partition). A lake
    from an older layout is rebuilt from bronze; a column the model gained is added. True when rebuilt.
    """
    rebuilt = False
    layout = _layout_file()
    if not layout.exists() or layout.read_text(encoding="utf-8").strip() != SILVER_LAYOUT:
        for path in [silver_path(e) for e in canonical_model()["entities"]] + [quarantine_path()]:
            rebuilt |= _exists(path)
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(layout.parent, ignore_errors=True)
    tables = [(silver_path(e), _canonical_schema(e)) for e in canonical_model()["entities"]]
    tables.append((quarantine_path(), ", ".join(f"`{c}` {t}" for c, t in QUARANTINE_COLUMNS.items())))
    for path, schema in tables:
        empty = spark.createDataFrame([], schema)
        if not _exists(path):
            empty.write.format("delta").partitionBy("source_system").save(path)
        elif set(empty.columns) - set(read_delta(spark, path).columns):
            empty.write.format("delta").mode("append").option("mergeSchema", "true").save(path)
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text(SILVER_LAYOUT, encoding="utf-8")
    return rebuilt


@dataclass(frozen=True)
class TableFailure:
    source_system: str
    entity: str  # "*" when the source failed before any table (e.g. its mapping does not load)
    bronze_table: str
    error: str

    def __str__(self) -> str:
        return f"{self.source_system}.{self.bronze_table} → silver.{self.entity}: {self.error}"


class StandardizeError(RuntimeError):
    """Mapped tables that could not be standardised, each named with its source and table.

    Every other table was still brought up to date (``reports``); a failed table keeps its silver rows and
    checkpoint from its last good run, so the next ``./drc silver`` retries exactly what failed.
    """

    def __init__(self, failures: list[TableFailure], reports: list[TableReport]) -> None:
        self.failures, self.reports = failures, reports
        sources = sorted({f.source_system for f in failures})
        super().__init__(
            f"{len(failures)} table(s) could not be standardised: "
            + "; ".join(map(str, failures))
            + f". The other tables are up to date. Fix the cause (the log has each traceback), then run "
            f"`./drc silver --source {' --source '.join(sources)}`."
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def standardize_sources(
    spark: SparkSession, sources: list[str], full: bool = False, progress: Any = None, workers: int = 3
) -> list[TableReport]:
    """Every mapped table of these sources; sources run side by side (Spark fills the cores meanwhile).

    A table that fails in the parallel pass (e.g. a Delta conflict) is retried alone, where such a conflict
    cannot recur. Every failure is logged with its source and table; those still failing after the retry are
    raised together as one StandardizeError, after every other table has run.
    """
    prepare_silver(spark)
    reports: list[TableReport] = []
    retry: dict[str, set[tuple[str, str]] | None] = {}  # source -> failed (entity, table); None = whole source
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="silver") as pool:
        futures = {pool.submit(run_standardize, spark, source, full, progress): source for source in sources}
        for future in as_completed(futures):
            source = futures[future]
            try:
                reports += future.result()
            except StandardizeError as exc:
                reports += exc.reports
                for failure in exc.failures:
                    log.warning("silver %s failed in the parallel pass, retrying it alone", failure)
                retry[source] = {(f.entity, f.bronze_table) for f in exc.failures}
            except Exception as exc:
                log.warning(
                    "silver %s failed in the parallel pass (%s), retrying it alone",
                    source,
                    _describe(exc),
                    exc_info=exc,
                )
                retry[source] = None
    failures: list[TableFailure] = []
    for source, tables in retry.items():
        try:
            reports += run_standardize(spark, source, full, progress, tables)
        except StandardizeError as exc:
            reports += exc.reports
            failures += exc.failures
        except Exception as exc:
            log.error("silver %s failed: %s", source, _describe(exc), exc_info=exc)
            failures.append(TableFailure(source, "*", "*", _describe(exc)))
    if failures:
        raise StandardizeError(failures, reports)
    return reports


def run_standardize(
    spark: SparkSession,
    source_system: str,
    full: bool = False,
    progress: Any = None,
    tables: set[tuple[str, str]] | None = None,
) -> list[TableReport]:
    """Standardise every mapped table of one source (or only ``tables``: (entity, bronze table) pairs).

    ``progress(report)`` is called after each table. A failing table does not stop the others: each failure
    is logged with its source and table, and all of them are raised together as a StandardizeError.
    """
    mapping = source_mapping(source_system)
    state = load_state(source_system)
    reports: list[TableReport] = []
    failures: list[TableFailure] = []
    for spec in mapping["tables"]:
        if tables is not None and (spec["entity"], spec["bronze_table"]) not in tables:
            continue
        try:
            report = standardize_table(spark, source_system, spec, state, full)
        except Exception as exc:
            failure = TableFailure(source_system, spec["entity"], spec["bronze_table"], _describe(exc))
            log.error("silver %s", failure, exc_info=exc)
            failures.append(failure)
            continue
        _save_state(source_system, state)
        reports.append(report)
        if progress:
            progress(report)
    if failures:
        raise StandardizeError(failures, reports)
    return reports
