"""Standardisation transforms on tiny frames: current state, code mapping, quarantine, master ids."""

from __future__ import annotations

import json
from datetime import datetime

from pyspark.sql import functions as F

from spark_jobs.standardize import apply_rules, assign_master_id, current_state, map_columns

BRONZE = ("_op string, _source_ts timestamp, _source_pos string, _ingested_at timestamp, _batch_id string, "
          "_source_system string, _org_code string")
T0 = datetime(2026, 11, 1, 8)


def _bronze(spark, rows, columns):
    return spark.createDataFrame(rows, f"{columns}, {BRONZE}")


def test_current_state_keeps_latest_version_and_drops_deleted_keys(spark):
    rows = [("A", "张三", "r", T0, "001|A", T0, "b1", "his", "o"),
            ("A", "张叁", "u", T0, "002|A", T0, "b2", "his", "o"),
            ("B", "李四", "r", T0, "001|B", T0, "b1", "his", "o"),
            ("B", "李四", "d", T0, "003|B", T0, "b3", "his", "o")]
    state = current_state(_bronze(spark, rows, "BRID string, XM string"), ["BRID"])
    assert [(r.BRID, r.XM) for r in state.collect()] == [("A", "张叁")]


def test_local_codes_are_mapped_and_unknown_codes_flagged_not_dropped(spark):
    rows = [("1", "男", "1980-01-02", "r", T0, "1", T0, "b", "rmyy_his", "o"),
            ("2", "W", "not a date", "r", T0, "2", T0, "b", "rmyy_his", "o")]
    df = _bronze(spark, rows, "BRID string, XB string, CSRQ string")
    mapped = map_columns(df, {"local_patient_id": {"from": "BRID"},
                              "sex_code": {"from": "XB", "concept_map": "sex"},
                              "birth_date": {"from": "CSRQ", "type": "date"}}, "rmyy_his")
    result = {r.local_patient_id: r for r in mapped.collect()}
    assert result["1"].sex_code == "1" and result["1"].dq_flags == []
    assert result["2"].sex_code is None and result["2"].birth_date is None
    assert result["2"].dq_flags == ["UNMAPPED:sex_code:W", "UNPARSEABLE:birth_date"]
    assert json.loads(result["2"]._raw) == {"BRID": "2", "XB": "W", "CSRQ": "not a date"}


def test_rule_violations_go_to_quarantine_with_rule_id_reason_and_raw_row(spark):
    df = spark.createDataFrame([("E1", "P1", T0, "{}"), ("E2", None, T0, '{"JZID": "E2"}'),
                                ("E3", "P3", None, '{"JZID": "E3"}')],
                               "encounter_id string, local_patient_id string, visit_at timestamp, _raw string")
    rules = [{"id": "ENC001", "required": ["encounter_id", "local_patient_id"], "reason": "缺少患者标识"},
             {"id": "ENC002", "required": ["visit_at"], "reason": "就诊时间缺失"}]
    valid, quarantined = apply_rules(df, rules, ["encounter_id"])
    assert [r.encounter_id for r in valid.collect()] == ["E1"]
    assert sorted((r.record_key, r.rule_id, r.reason, r.raw_payload) for r in quarantined.collect()) == [
        ("E2", "ENC001", "缺少患者标识", '{"JZID": "E2"}'), ("E3", "ENC002", "就诊时间缺失", '{"JZID": "E3"}')]


def test_master_id_links_same_valid_id_number_and_never_guesses_otherwise(spark):
    people = spark.createDataFrame([
        ("his", "1", "41018219800101001X"),   # same person at two institutions
        ("phis", "9", "41018219800101001x"),  #   (lower-case check character)
        ("his", "2", "410182198001010016"),   # wrong check character: must not link to the above
        ("his", "3", None),                   # no ID number
        ("his", "4", None),                   # no ID number either: still a different person
        ("his", "5", "410182199212310025"),   # twin sibling: own valid ID, own master id
    ], "source_system string, local_patient_id string, id_number string")
    ids = {(r.source_system, r.local_patient_id): r for r in assign_master_id(people, "salt").collect()}
    assert ids[("his", "1")].master_id == ids[("phis", "9")].master_id
    assert len({r.master_id for r in ids.values()}) == 5
    assert [ids[("his", k)].id_number_valid for k in "12345"] == [True, False, False, False, True]
    assert all(r.master_id.startswith("M") and len(r.master_id) == 17 for r in ids.values())
    again = assign_master_id(people, "salt").select("master_id").collect()
    assert sorted(r.master_id for r in again) == sorted(r.master_id for r in ids.values())
    salted = assign_master_id(people, "other salt").where(F.col("local_patient_id") == "1").first()
    assert salted.master_id != ids[("his", "1")].master_id
