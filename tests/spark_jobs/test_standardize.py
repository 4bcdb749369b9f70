"""The standardisation engine on small frames: current state, mapping, flags, quarantine, incremental MERGE."""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from core.spark import newest_commit, read_delta
from ingestion.bronze import bronze_path
from spark_jobs import standardize
from spark_jobs.model import mapped_sources, mapping_problems, source_mapping
from spark_jobs.standardize import (
    current_state,
    prepare_silver,
    quarantine_path,
    silver_path,
    standardize_frame,
    standardize_table,
)
from tests.spark_jobs.bronze_rows import T0, bronze_frame

ADMISSIONS = {
    "entity": "encounter",
    "bronze_table": "ADM",
    "key": ["ID"],
    "columns": {
        "encounter_id": {"expr": "concat('ZY', ID)"},
        "local_patient_id": {"from": "PID", "transform": "fullwidth_to_halfwidth"},
        "encounter_class_code": {"constant": "300"},
        "encounter_class_source_value": {"from": "KIND"},
        "visit_at": {"from": "IN_AT", "type": "timestamp", "formats": ["yyyy-MM-dd HH:mm:ss", "yyyyMMddHHmmss"]},
        "admitted_at": {"from": "IN_AT", "type": "timestamp", "formats": ["yyyy-MM-dd HH:mm:ss", "yyyyMMddHHmmss"]},
        "is_first_visit": {"from": "FIRST", "values": {"1": True, "2": False}},
        "length_of_stay_days": {"from": "DAYS", "type": "int", "on_error": "flag"},
    },
    "lookups": {
        "discharge": {
            "bronze_table": "DIS",
            "key": ["ADM_ID"],
            "join_on": {"ADM_ID": "local_patient_id"},
            "where": "VOID = '0'",
            "columns": {"discharged_at": {"from": "OUT_AT", "type": "timestamp"}},
        }
    },
    "rules": [
        {
            "id": "ENC900",
            "expression": "discharged_at IS NULL OR discharged_at >= admitted_at",
            "reason": "出院时间早于入院时间",
        }
    ],
}
# In the spec above the lookup joins on local_patient_id only to keep the fixture small: ADM_ID = PID.


ADMISSION_COLUMNS = ("ID", "PID", "KIND", "IN_AT", "FIRST", "DAYS")


def _admissions(spark, rows, org_code="410182001"):
    return bronze_frame(
        spark, "unit_src", [dict(zip(ADMISSION_COLUMNS, r, strict=True)) for r in rows], org_code=org_code
    )


def test_current_state_keeps_latest_version_and_drops_deleted_keys(spark):
    rows = [
        {"BRID": "A", "XM": "张三", "_source_pos": "001"},
        {"BRID": "A", "XM": "张叁", "_source_pos": "002"},
        {"BRID": "B", "XM": "李四", "_source_pos": "001"},
        {"BRID": "B", "XM": "李四", "_op": "d", "_source_pos": "003"},
    ]
    state = current_state(bronze_frame(spark, "his", rows), ["BRID"])
    assert [(r.BRID, r.XM) for r in state.collect()] == [("A", "张叁")]


def test_a_deleted_visit_does_not_delete_the_patient_its_other_visits_carry(spark):
    """fy_files: the patient is denormalised on every visit row; 作废 of one visit (a delete of that row) must
    leave the patient, whose later visit still names them. A patient whose only visit is deleted goes."""
    rows = [
        {"JZLSH": "V1", "HZBH": "P1", "XM": "李刚华", "_source_pos": "001"},
        {"JZLSH": "V2", "HZBH": "P1", "XM": "李刚华", "_source_pos": "002"},
        {"JZLSH": "V1", "HZBH": "P1", "XM": "李刚华", "_op": "d", "_source_pos": "003"},
        {"JZLSH": "V3", "HZBH": "P2", "XM": "王五", "_source_pos": "001"},
        {"JZLSH": "V3", "HZBH": "P2", "XM": "王五", "_op": "d", "_source_pos": "004"},
    ]
    state = current_state(bronze_frame(spark, "fy", rows), ["HZBH"], row_keys=["JZLSH"])
    assert [(r.HZBH, r.JZLSH) for r in state.collect()] == [("P1", "V2")]


def test_mapping_types_values_lookups_and_rules(spark):
    admissions = _admissions(
        spark,
        [
            ("1", "Ｐ１", "住院", "2026-11-01 08:00:00", "1", "3"),
            ("2", "P2", "住院", "20261101090000", "9", "x"),  # compact time; unknown value; bad number
            ("3", "P3", "住院", "2026-11-01 10:00:00", "2", "1"),  # discharged before admission
            ("4", "P4", "住院", "2026-13-45", "1", "1"),  # unparseable admission time
            ("5", "P5", "住院", "2026-11-01 11:00:00", "1", "1"),
        ],
    )
    discharges = bronze_frame(
        spark,
        "unit_src",
        [
            {"ADM_ID": "P1", "OUT_AT": "2026-11-04 09:00:00", "VOID": "0"},
            {"ADM_ID": "P3", "OUT_AT": "2026-10-30 09:00:00", "VOID": "0"},
            {"ADM_ID": "P5", "OUT_AT": "2026-10-30 09:00:00", "VOID": "1"},
        ],
    )  # voided: not a discharge
    silver, quarantine = standardize_frame(admissions, ADMISSIONS, "unit_src", {"discharge": discharges})
    rows = {r.encounter_id: r for r in silver.collect()}
    assert sorted(rows) == ["ZY1", "ZY2", "ZY5"]
    assert rows["ZY1"].local_patient_id == "P1" and rows["ZY1"].is_first_visit is True
    assert rows["ZY1"].discharged_at == datetime(2026, 11, 4, 9) and rows["ZY1"].dq_flags == []
    assert rows["ZY2"].admitted_at == datetime(2026, 11, 1, 9) and rows["ZY2"].is_first_visit is None
    assert rows["ZY2"].dq_flags == ["UNMAPPED:is_first_visit:9", "UNPARSEABLE:length_of_stay_days"]
    assert rows["ZY5"].discharged_at is None
    assert (rows["ZY1"].source_system, rows["ZY1"].source_table, rows["ZY1"].source_key) == ("unit_src", "ADM", "1")
    problems = {(r.record_key, r.rule_id): r for r in quarantine.collect()}
    assert sorted(problems) == [("3", "ENC900"), ("4", "STD-PARSE")]
    assert problems[("4", "STD-PARSE")].reason == "无法解析的值：visit_at=2026-13-45，admitted_at=2026-13-45"
    assert json.loads(problems[("3", "ENC900")].raw_payload)["IN_AT"] == "2026-11-01 10:00:00"


def test_missing_key_and_unknown_institution_are_quarantined(spark):
    rows = _admissions(spark, [(None, "P1", "住院", "2026-11-01 08:00:00", "1", "1")])
    stranger = _admissions(spark, [("7", "P7", "住院", "2026-11-01 08:00:00", "1", "1")], org_code="999999999")
    _, quarantine = standardize_frame(rows.unionByName(stranger), {**ADMISSIONS, "lookups": {}}, "unit_src")
    assert sorted(r.rule_id for r in quarantine.collect()) == ["STD-KEY", "STD-ORG"]


def test_mapping_file_problems_are_named(spark):
    problems = mapping_problems(
        "unit_src",
        {
            "source_system": "unit_src",
            "tables": [
                {
                    "entity": "encounter",
                    "bronze_table": "X",
                    "key": ["ID"],
                    "columns": {
                        "encounter_id": {"from": "ID"},
                        "no_such_column": {"from": "Y"},
                        "visit_at": {"from": "A", "expr": "B"},
                    },
                },
                {"entity": "nonsense", "bronze_table": "Y", "key": ["ID"]},
            ],
        },
    )
    assert any("no_such_column: not a column of the entity" in p for p in problems)
    assert any("visit_at: needs exactly one of from / expr / constant" in p for p in problems)
    assert any("unknown entity" in p for p in problems)


def _append_bronze(df, table):
    df.write.format("delta").mode("append").option("mergeSchema", "true").save(bronze_path("unit_src", table))


@pytest.fixture()
def unit_source(spark, pipeline_done):
    """A throw-away source in the real lake (its own bronze tables and silver slice), removed afterwards."""
    prepare_silver(spark)
    yield
    shutil.rmtree(Path(bronze_path("unit_src", "x")).parent, ignore_errors=True)
    for path in (silver_path("encounter"), quarantine_path()):
        spark.sql(f"DELETE FROM delta.`{path}` WHERE source_system = 'unit_src'")


def _other_sources_rows(spark) -> int:
    silver = read_delta(spark, silver_path("encounter"))
    return 0 if silver is None else silver.where("source_system <> 'unit_src'").count()


def test_incremental_merge_applies_updates_deletes_late_events_and_corrections(spark, unit_source):
    state: dict = {}
    spec = {
        **ADMISSIONS,
        "lookups": {},
        "rules": [{"id": "ENC901", "expression": "length_of_stay_days >= 0", "reason": "住院天数为负"}],
    }
    others_before = _other_sources_rows(spark)
    _append_bronze(
        _admissions(
            spark,
            [
                ("1", "P1", "住院", "2026-11-01 08:00:00", "1", "1"),
                ("2", "P2", "住院", "2026-11-01 08:00:00", "1", "1"),
                ("3", "P3", "住院", "2026-11-01 08:00:00", "1", "-1"),
            ],
        ),
        "ADM",
    )
    first = standardize_table(spark, "unit_src", spec, state)
    assert (first.mode, first.silver_rows, first.quarantined) == ("full", 2, 1)

    later = T0.replace(hour=12)
    _append_bronze(
        bronze_frame(
            spark,
            "unit_src",
            [
                {
                    "ID": "1",
                    "PID": "P1",
                    "KIND": "住院",
                    "IN_AT": "2026-11-01 09:30:00",
                    "FIRST": "1",
                    "DAYS": "4",
                    "_op": "u",
                    "_source_pos": "000000000010",
                    "_source_ts": later,
                },  # corrected admission
                {
                    "ID": "2",
                    "PID": "P2",
                    "KIND": "住院",
                    "IN_AT": "2026-11-01 08:00:00",
                    "FIRST": "1",
                    "DAYS": "1",
                    "_op": "d",
                    "_source_pos": "000000000011",
                    "_source_ts": later,
                },  # 作废
                {
                    "ID": "3",
                    "PID": "P3",
                    "KIND": "住院",
                    "IN_AT": "2026-11-01 08:00:00",
                    "FIRST": "1",
                    "DAYS": "2",
                    "_op": "u",
                    "_source_pos": "000000000012",
                    "_source_ts": later,
                },  # source fixed the row
                {
                    "ID": "1",
                    "PID": "P1",
                    "KIND": "住院",
                    "IN_AT": "2026-10-31 23:00:00",
                    "FIRST": "1",
                    "DAYS": "9",
                    "_op": "u",
                    "_source_pos": "000000000005",
                    "_source_ts": later,
                },  # late, older event
                {
                    "ID": "4",
                    "PID": "P4",
                    "KIND": "住院",
                    "IN_AT": "2026-11-02 08:00:00",
                    "FIRST": "2",
                    "DAYS": "1",
                    "_op": "c",
                    "_source_pos": "000000000013",
                    "_source_ts": later,
                },
            ],
        ),
        "ADM",
    )
    second = standardize_table(spark, "unit_src", spec, state)
    assert (second.mode, second.changed_keys, second.silver_rows, second.removed) == ("incremental", 4, 3, 2)
    silver = {
        r.encounter_id: r
        for r in read_delta(spark, silver_path("encounter")).where("source_system = 'unit_src'").collect()
    }
    assert sorted(silver) == ["ZY1", "ZY3", "ZY4"]
    assert silver["ZY1"].admitted_at == datetime(2026, 11, 1, 9, 30) and silver["ZY1"].length_of_stay_days == 4
    assert read_delta(spark, quarantine_path()).where("source_system = 'unit_src'").count() == 0
    assert standardize_table(spark, "unit_src", spec, state).mode == "no_change"

    # a day of new records only: appended (no MERGE); re-running it (a run that died before saving its
    # checkpoint) finds them and replaces them, so nothing lands twice
    new_rows = [
        ("5", "P5", "住院", "2026-11-03 08:00:00", "1", "2"),
        ("6", "P6", "住院", "2026-11-03 09:00:00", "1", "-3"),
    ]
    _append_bronze(_admissions(spark, new_rows), "ADM")
    before_day = copy.deepcopy(state)
    third = standardize_table(spark, "unit_src", spec, state)
    assert (third.changed_keys, third.silver_rows, third.removed, third.quarantined) == (2, 1, 0, 1)
    assert newest_commit(silver_path("encounter"))[1]["operation"] == "WRITE", "new keys are appended"
    again = standardize_table(spark, "unit_src", spec, before_day)
    assert (again.silver_rows, again.removed) == (1, 1)
    silver = read_delta(spark, silver_path("encounter")).where("source_system = 'unit_src'")
    assert sorted(r.encounter_id for r in silver.collect()) == ["ZY1", "ZY3", "ZY4", "ZY5"]
    quarantined = read_delta(spark, quarantine_path()).where("source_system = 'unit_src'").collect()
    assert [(r.record_key, r.rule_id) for r in quarantined] == [("6", "ENC901")]
    assert _other_sources_rows(spark) == others_before


def test_incremental_standardisation_reads_new_rows_of_a_column_mapped_bronze_table(spark, unit_source):
    """File-drop bronze tables map column names (delta.columnMapping.mode = name): read by name, their data files
    gave NULL keys, and every row after the first standardisation vanished from silver (issue 24)."""
    state: dict = {}
    spec = {**ADMISSIONS, "lookups": {}, "rules": []}
    path = bronze_path("unit_src", "ADM")

    def land(rows, version: int) -> None:
        frame = _admissions(spark, rows).withColumn("_batch_id", F.lit(f"unit_src.adm.{version}"))
        writer = frame.write.format("delta").mode("append").option("mergeSchema", "true")
        if version == 0:
            writer = (
                writer.option("delta.columnMapping.mode", "name")
                .option("delta.minReaderVersion", "2")
                .option("delta.minWriterVersion", "5")
            )
        writer.save(path)

    land([("1", "P1", "住院", "2026-11-01 08:00:00", "1", "1")], 0)
    assert standardize_table(spark, "unit_src", spec, state).mode == "full"
    land(
        [("2", "P2", "住院", "2026-11-02 08:00:00", "1", "1"), ("3", "P3", "住院", "2026-11-02 09:00:00", "1", "2")], 1
    )
    second = standardize_table(spark, "unit_src", spec, state)
    assert (second.mode, second.changed_keys, second.silver_rows) == ("incremental", 2, 2)
    silver = read_delta(spark, silver_path("encounter")).where("source_system = 'unit_src'")
    assert sorted(r.encounter_id for r in silver.collect()) == ["ZY1", "ZY2", "ZY3"]


# --- void flags: only a flag that says void withdraws a row (issue 24) -------------------------------------
def _mapped(source: str, entity: str, table: str) -> dict:
    return next(t for t in source_mapping(source)["tables"] if (t["entity"], t["bronze_table"]) == (entity, table))


def _cloud_rows(spark, rows: list[dict], flags: list[str | None] | None):
    """云HIS rows; ``flags`` None = a bronze table without a del_flag column at all."""
    with_flag = [
        {**row, **({} if flags is None else {"del_flag": flag})}
        for row, flag in zip(rows, flags or [None] * len(rows), strict=True)
    ]
    return bronze_frame(
        spark,
        "cloud_his",
        with_flag,
        org_code="410182103",
        types={
            "id": "bigint",
            "patient_id": "bigint",
            "visit_id": "bigint",
            "visit_time": "timestamp",
            "gmt_create": "timestamp",
        },
    )


def _cloud_visits(spark, flags: list[str | None] | None, count: int | None = None):
    n = len(flags) if flags is not None else count
    return _cloud_rows(
        spark,
        [
            {
                "id": 261103103000000 + i,
                "patient_id": 1032611030001,
                "visit_type": "1",
                "dept_code": "1001",
                "dept_name": "全科门诊",
                "doctor_name": "王兰磊",
                "visit_time": T0.replace(minute=i),
            }
            for i in range(1, n + 1)
        ],
        flags,
    )


def test_rows_without_a_void_flag_stay_in_silver_and_only_voided_rows_leave(spark):
    visits = _mapped("cloud_his", "encounter", "t_visit")
    diagnoses = _cloud_rows(
        spark,
        [
            {
                "id": 26110310300000101,
                "visit_id": 261103103000002,
                "main_flag": "1",
                "diag_code": "J06.9",
                "diag_name": "急性上呼吸道感染",
                "gmt_create": T0,
            }
        ],
        [None],
    )
    silver, quarantine = standardize_frame(
        _cloud_visits(spark, ["0", None, "", " ", "1"]), visits, "cloud_his", {"primary_diagnosis": diagnoses}
    )
    rows = {r.encounter_id: r for r in silver.collect()}
    assert sorted(rows) == [str(261103103000000 + i) for i in (1, 2, 3, 4)]  # NULL, '' and ' ' are not 作废
    assert rows["261103103000002"].primary_diagnosis_name == "急性上呼吸道感染"  # a lookup row without a flag too
    assert quarantine.count() == 0

    person = _mapped("public_health", "person", "jkda_grjbxx")
    archives = bronze_frame(
        spark,
        "public_health",
        [
            {
                "grdabh": f"4101821000100000{i}",
                "xm": "陈德勇",
                "xb": "1",
                "csrq": "1966-10-26",
                "sfzh": None,
                "lxdh": None,
                "xzz": None,
                "cjsj": "2026-11-01 08:00:00",
                "mz": "01",
                "zfbz": flag,
            }
            for i, flag in enumerate(["0", None, "1"], 1)
        ],
        org_code="410182103",
    )
    kept = sorted(r.local_patient_id for r in standardize_frame(archives, person, "public_health")[0].collect())
    assert kept == ["41018210001000001", "41018210001000002"]


def test_a_void_flag_column_the_source_dropped_withdraws_nothing(spark):
    visits = _mapped("cloud_his", "encounter", "t_visit")
    # drift accepted: the column is gone from the source, so new rows land with del_flag NULL
    assert standardize_frame(_cloud_visits(spark, [None, None, None]), visits, "cloud_his")[0].count() == 3
    # a bronze table that never had the column (e.g. rebuilt after the vendor removed it)
    assert standardize_frame(_cloud_visits(spark, None, count=3), visits, "cloud_his")[0].count() == 3


def test_no_mapping_filters_out_rows_by_an_inequality_that_drops_null_rows():
    """`where: "flag <> '1'"` is false for a NULL flag: such conditions must be written as `void`."""
    offending = []
    for source in mapped_sources():
        for table in source_mapping(source)["tables"]:
            specs = [("", table), *[(f" lookup {n}", s) for n, s in (table.get("lookups") or {}).items()]]
            for owner, spec in specs:
                if re.search(r"<>|!=|\bNOT\s+IN\b", spec.get("where", ""), re.IGNORECASE):
                    offending.append(f"{source}.{table['bronze_table']}{owner}: where {spec['where']!r}")
    assert not offending, "use `void: {column: value}` instead: " + "; ".join(offending)


def test_every_failing_table_is_logged_and_reported_with_its_source(spark, monkeypatch, caplog):
    """Two sources fail in the parallel pass and again alone: both are named, not just the first."""
    failing = {("cloud_his", "t_visit"), ("public_health", "gxy_sf")}

    def fake_table(spark, source, spec, state, full=False):
        if (source, spec["bronze_table"]) in failing:
            raise RuntimeError(f"disk full while writing {spec['bronze_table']}")
        return standardize.TableReport(source, spec["entity"], spec["bronze_table"], "no_change")

    monkeypatch.setattr(standardize, "prepare_silver", lambda spark: False)
    monkeypatch.setattr(standardize, "standardize_table", fake_table)
    monkeypatch.setattr(standardize, "load_state", lambda source: {})
    monkeypatch.setattr(standardize, "_save_state", lambda source, state: None)
    sources = ["cloud_his", "public_health", "rmyy_his"]
    with caplog.at_level(logging.WARNING, logger="spark_jobs.standardize"), pytest.raises(RuntimeError) as raised:
        standardize.standardize_sources(spark, sources)
    message = str(raised.value)
    assert "cloud_his.t_visit" in message and "public_health.gxy_sf" in message
    assert "disk full while writing t_visit" in message and "disk full while writing gxy_sf" in message
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "cloud_his.t_visit" in logged and "public_health.gxy_sf" in logged
    reports = getattr(raised.value, "reports", [])
    assert {(r.source_system, r.bronze_table) for r in reports} >= {("rmyy_his", "MZ_JZJL"), ("cloud_his", "t_patient")}


def test_a_parse_error_quoting_an_id_number_or_a_phone_is_masked_in_the_quarantine_reason(spark):
    """A source that sends the 身份证号 in its birth-date field: the row is quarantined with a reason that names the
    column and still shows the area code, never the whole number; a mobile number keeps 3 + 4 digits."""
    entity = "person"
    keys = standardize.entity_key(entity)
    org = sorted(standardize.known_organizations())[0]
    row = {column: "k1" for column in keys} | {
        "org_code": org,
        "_parse_errors": ["birth_date=41018219600101001X", "birth_date=410182600101001", "phone=13812345678"],
    }
    checked = standardize.with_violations(spark.createDataFrame([row]), entity, [])
    ((rule_id, reason),) = [(v.rule_id, v.reason) for v in checked.first()["_violations"]]
    assert rule_id == "STD-PARSE"
    assert "41018219600101001X" not in reason and "410182600101001" not in reason and "13812345678" not in reason
    assert "birth_date=410182************" in reason and "birth_date=410182*********" in reason
    assert "phone=138****5678" in reason
    plain = spark.createDataFrame([("visit 20261105 at 0930, record 12345678901234567890",)], ["t"])
    untouched = plain.select(standardize.redact_personal_col(F.col("t"))).first()[0]
    assert untouched == "visit 20261105 at 0930, record 12345678901234567890"  # not every long number is an ID
