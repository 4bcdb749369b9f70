"""Silver over the whole simulated county: every source row is in silver or quarantine, every defect caught."""

from __future__ import annotations

from collections import defaultdict

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from cli.main import main as drc_main
from core.spark import read_delta
from ingestion.bronze import bronze_path
from ingestion.registry import load_sources
from simulator.answer_key import DATABASE as ANSWER_KEY
from simulator.connections import source_pg_engine
from spark_jobs.dictionary import DICTIONARY_FILE, render_dictionary
from spark_jobs.model import (
    code_system,
    column_code_system,
    concept_map_path,
    entity_key,
    mapped_sources,
    source_mapping,
)
from spark_jobs.standardize import current_state, quarantine_path, silver_path, source_key, without_void
from spark_jobs.terminology import add_concept_mapping, read_worklist

CODE_DEFECTS = ("unknown_local_code", "unknown_sex_code")
LOGIC_DEFECTS = {"discharge_before_admission": "discharged_at"}  # defect -> column its rule must check
RARE_EVENTS = {"birth": "event_birth"}  # entity -> its answer-key event table


def _mapped_tables() -> list[tuple[str, dict]]:
    return [(source, spec) for source in mapped_sources() for spec in source_mapping(source)["tables"]]


@pytest.fixture(scope="module")
def silver_state(spark, pipeline_done):
    """Per (source, table, entity): the bronze current keys, silver keys and quarantined keys."""
    silver_keys: dict[tuple, set] = defaultdict(set)
    flags: dict[tuple, list] = {}
    for entity in {spec["entity"] for _, spec in _mapped_tables()}:
        table = read_delta(spark, silver_path(entity))
        for r in table.select("source_system", "source_table", "source_key", "dq_flags").collect():
            silver_keys[(r.source_system, r.source_table, entity)].add(r.source_key)
            flags[(r.source_system, r.source_key)] = flags.get((r.source_system, r.source_key), []) + r.dq_flags
    quarantined: dict[tuple, set] = defaultdict(set)
    rules: dict[tuple, set] = defaultdict(set)
    for r in read_delta(spark, quarantine_path()).collect():
        quarantined[(r.source_system, r.source_table, r.entity)].add(r.record_key)
        rules[(r.source_system, r.record_key)].add(r.rule_id)
    return silver_keys, quarantined, flags, rules


def test_every_source_row_is_in_silver_or_quarantine(spark, silver_state):
    silver_keys, quarantined, _, _ = silver_state
    checked = 0
    for source, spec in _mapped_tables():
        bronze = read_delta(spark, bronze_path(source, spec["bronze_table"]))
        if bronze is None:
            continue
        state = current_state(bronze, spec["key"])
        if "where" in spec:
            state = state.where(spec["where"])
        state = without_void(state, spec, f"{source}.{spec['bronze_table']}")  # 作废 rows are withdrawn
        keys = {r.k for r in state.select(source_key(spec["key"]).alias("k")).collect()}
        slot = (source, spec["bronze_table"], spec["entity"])
        assert silver_keys[slot] | quarantined[slot] == keys, f"{slot}: rows lost or invented"
        assert not silver_keys[slot] & quarantined[slot], f"{slot}: a row is both in silver and quarantine"
        checked += 1
    assert checked >= 60, f"only {checked} mapped tables had bronze: is every source collected and mapped?"


def test_silver_business_keys_are_unique(spark, pipeline_done):
    for entity in {spec["entity"] for _, spec in _mapped_tables()}:
        table = read_delta(spark, silver_path(entity))
        key = ["source_system", *entity_key(entity)]
        duplicates = table.groupBy(*key).count().where("count > 1").limit(3).collect()
        assert not duplicates, f"silver.{entity} repeats a business key: {duplicates}"


def test_every_injected_code_and_logic_defect_is_flagged_or_quarantined(spark, silver_state):
    _, _, flags, rules = silver_state
    rule_columns = {
        (source, rule["id"]): rule.get("expression", "")
        for source, spec in _mapped_tables()
        for rule in spec.get("rules") or []
    }
    with source_pg_engine("sim_truth").connect() as conn:
        defects = conn.execute(
            sa.text("SELECT source_system, table_name, record_id, defect FROM defect_log WHERE defect = ANY(:kinds)"),
            {"kinds": [*CODE_DEFECTS, *LOGIC_DEFECTS]},
        ).all()
    assert defects, "the simulated county should contain code and logic defects"
    sex_codes = {
        (r.source_system, r.local_patient_id): r.sex_code
        for r in read_delta(spark, silver_path("person"))
        .select("source_system", "local_patient_id", "sex_code")
        .collect()
    }
    missed = []
    for d in defects:
        if d.source_system not in mapped_sources():
            continue
        found = (d.source_system, d.record_id)
        if d.defect == "unknown_sex_code":  # mapped: the vendor's own 未知 codes mean GB/T 2261.1 '0'/'9'
            ok = sex_codes.get(found) in ("0", "9") or found in rules
        elif d.defect in CODE_DEFECTS:
            ok = any(f.startswith("UNMAPPED:") for f in flags.get(found, [])) or found in rules
        else:
            column = LOGIC_DEFECTS[d.defect]
            ok = any(column in rule_columns.get((d.source_system, rule), "") for rule in rules.get(found, ()))
        if not ok:
            missed.append(tuple(d))
    assert not missed, f"{len(missed)} injected defects passed silently, e.g. {missed[:5]}"


def test_unmapped_codes_reach_the_worklist_and_a_new_mapping_fixes_history(spark, pipeline_done):
    worklist = read_worklist(spark)
    assert worklist, "unknown local codes were injected: the worklist cannot be empty"
    assert all(item["concept_map"] and item["rows"] > 0 and item["example_keys"] for item in worklist)
    item = next(i for i in worklist if code_system(column_code_system(i["entity"], i["column"]) or "-"))
    target = next(iter(code_system(column_code_system(item["entity"], item["column"]))))
    path = concept_map_path(item["source_system"], item["concept_map"])
    original = path.read_bytes()
    flag = f"UNMAPPED:{item['column']}:{item['source_code']}"
    try:
        add_concept_mapping(
            item["source_system"],
            item["concept_map"],
            item["source_code"],
            target,
            note="test: terminology admin maps a worklist code",
        )
        with pytest.raises(ValueError, match="already mapped"):
            add_concept_mapping(item["source_system"], item["concept_map"], item["source_code"], target)
        assert drc_main(["silver", "--source", item["source_system"]]) == 0
        fixed = read_delta(spark, silver_path(item["entity"])).where(
            (F.col("source_system") == item["source_system"]) & F.array_contains("dq_flags", flag)
        )
        assert fixed.count() == 0, "adding the mapping must re-standardise rows already in silver"
        assert all(
            i["source_code"] != item["source_code"] or i["concept_map"] != item["concept_map"]
            for i in read_worklist(spark)
        )
    finally:
        path.write_bytes(original)
        assert drc_main(["silver", "--source", item["source_system"]]) == 0


def test_re_running_silver_is_a_no_op(spark, pipeline_done):
    before = {e: read_delta(spark, silver_path(e)).count() for e in ("person", "encounter", "diagnosis")}
    quarantine_before = read_delta(spark, quarantine_path()).count()
    assert drc_main(["silver"]) == 0
    assert {e: read_delta(spark, silver_path(e)).count() for e in before} == before
    assert read_delta(spark, quarantine_path()).count() == quarantine_before


def test_data_dictionary_is_generated_from_the_model():
    text = render_dictionary()
    assert "| name | string | 姓名 | DE02.01.039.00 |" in text
    assert DICTIONARY_FILE.read_text(encoding="utf-8") == text, "run ./drc dictionary and commit the result"


def _true_events_at_mapping_sources(table: str, entity: str) -> int:
    """The answer key's events of one kind at institutions whose source maps them into ``entity``."""
    sources = load_sources()
    orgs = sorted({sources[source].org_code for source, spec in _mapped_tables() if spec["entity"] == entity})
    with source_pg_engine(ANSWER_KEY).connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE org_code = ANY(:orgs)"), {"orgs": orgs}
        ).scalar_one()


def test_silver_entities_have_rows(spark, pipeline_done):
    counts = {e: read_delta(spark, silver_path(e)).count() for e in {spec["entity"] for _, spec in _mapped_tables()}}
    # rare events may be absent from the three test days (≈ 0.4 births at the 妇幼 of 10,000 residents): their
    # table may be empty only when the answer key has none of them at an institution whose source maps them
    may_be_empty = {
        entity for entity, table in RARE_EVENTS.items() if _true_events_at_mapping_sources(table, entity) == 0
    }
    empty = sorted(e for e, n in counts.items() if n == 0 and e not in may_be_empty)
    assert not empty, f"silver tables without rows after the pipeline: {empty}"
