"""云HIS renderer: rows reconcile with the day's events, codes are the vendor's, dirt is logged exactly.

Writes three hand-made days into a throw-away schema under a test-only source_system name, so the real
``cloud_his`` data and its answer-key rows are never touched.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from core.gb11643 import is_valid
from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.events import Correction, DayActivity, Encounter
from simulator.systems.cloud_his import PENDING_TABLE, VISIT_CHILDREN, CloudHis, vendor_icd
from tests.simulator.conftest import make_day

D1, D2, D3 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 11)  # D3: the day D1/D2 stays end
DIRTY = {
    "duplicate_submission": 0.05,
    "unknown_local_code": 0.05,
    "unknown_sex_code": 0.03,
    "re_registration": 0.1,
    "discharge_before_admission": 0.3,
}
TABLES = (
    "sys_tenant",
    "sys_dept",
    "sys_user",
    "t_drug_dict",
    "t_patient",
    "t_visit",
    "t_visit_diag",
    "t_recipe",
    "t_recipe_detail",
    "t_charge",
    "t_inpatient",
    "t_operation",
    "t_lab",
    "t_exam",
)


class PytestCloudHis(CloudHis):
    source_system = "cloud_his_pytest"


class PytestCloudHisB(CloudHis):
    source_system = "cloud_his_pytest_b"


def _drop(system: CloudHis) -> None:
    system.create_schema(reset=True)  # also clears the system's answer-key rows
    with system.engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {system.schema} CASCADE"))


def _rows(system: CloudHis, sql: str, **params: Any) -> list[sa.Row]:
    with system.engine.connect() as conn:
        return conn.execute(sa.text(sql.replace("his.", f"{system.schema}.")), params).all()


def _truth(sql: str, **params: Any) -> list[sa.Row]:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _defects(system: CloudHis, defect: str) -> dict[str, str]:
    return {
        r.record_id: r.detail
        for r in _truth(
            "SELECT record_id, detail FROM defect_log WHERE source_system = :s AND defect = :d",
            s=system.source_system,
            d=defect,
        )
    }


def _own(system: CloudHis, activity: DayActivity) -> list[Encounter]:
    return system.own_encounters(activity)


@pytest.fixture(scope="module")
def county(small_world):
    """D1 and D2 (with corrections of D1 and the schema drift), then D3 on which D1/D2 inpatients leave."""
    answer_key.create_schema()
    system = PytestCloudHis(small_world, {"schema": "pytest_cloud_his", "schema_drift_day": D2.isoformat(), **DIRTY})
    system.create_schema(reset=True)
    day1, day2, day3 = make_day(small_world, D1), make_day(small_world, D2), DayActivity(day=D3)
    own1 = _own(system, day1)
    village_visit = next(e for e in own1 if system.institutions[e.org_code].org_type == "村卫生室")
    centre_visit = next(
        e
        for e in own1
        if e.kind == "emergency"
        and e.prescriptions
        and e.labs
        and system.institutions[e.org_code].org_type == "乡镇卫生院"
    )
    cancel_at, update_at = datetime(2026, 11, 3, 9, 30), datetime(2026, 11, 3, 10, 15)
    day2.corrections += [
        Correction(centre_visit.encounter_uid, "cancel", cancel_at, "退费"),
        Correction(village_visit.encounter_uid, "update", update_at, "诊断更正"),
    ]
    written = {D1: system.write_day(day1), D2: system.write_day(day2)}
    still_in = _rows(system, "SELECT count(*) FILTER (WHERE in_status = '1'), count(*) FROM his.t_inpatient")[0]
    written[D3] = system.write_day(day3)
    yield {
        "system": system,
        "days": {D1: day1, D2: day2, D3: day3},
        "written": written,
        "still_in": still_in,
        "cancelled": centre_visit,
        "updated": village_visit,
        "cancel_at": cancel_at,
        "update_at": update_at,
    }
    _drop(system)


def _visit_ids(county: dict) -> dict[str, int]:
    system = county["system"]
    return {
        r.encounter_uid: int(r.local_encounter_id)
        for r in _truth("SELECT * FROM encounter_truth WHERE source_system = :s", s=system.source_system)
    }


def test_rows_reconcile_with_the_days_events(county):
    system, visit_of = county["system"], _visit_ids(county)
    duplicates = {int(r) for r in _defects(system, "duplicate_submission")}
    for day in (D1, D2):
        own = _own(system, county["days"][day])
        ids = [visit_of[e.encounter_uid] for e in own]
        assert len(set(ids)) == len(own)
        visits = {r.id: r for r in _rows(system, "SELECT * FROM his.t_visit WHERE visit_time::date = :d", d=day)}
        assert set(visits) - duplicates == set(ids)

        def count(table: str, column: str = "visit_id", ids: list[int] = ids) -> int:
            return _rows(system, f"SELECT count(*) FROM his.{table} WHERE {column} = ANY(:ids)", ids=ids)[0][0]

        assert count("t_visit_diag") == sum(len(e.diagnoses) for e in own)
        assert count("t_recipe_detail", "recipe_id", [i * 10 + 1 for i in ids]) == sum(
            len(e.prescriptions) for e in own
        )
        assert count("t_lab") == sum(len(e.labs) for e in own)
        assert count("t_exam") == sum(len(e.exams) for e in own)
        assert count("t_charge") == sum(len(e.charges) for e in own)  # inpatient charges settled on D3
        beds = [e for e in own if e.kind == "inpatient" and system.institutions[e.org_code].open_beds]
        assert count("t_inpatient") == len(beds)
        assert count("t_operation") == sum(len(e.surgeries) for e in beds)
        total = _rows(system, "SELECT sum(amount) FROM his.t_charge WHERE visit_id = ANY(:ids)", ids=ids)[0][0]
        assert float(total) == pytest.approx(sum(e.total_yuan for e in own))
        for e in own:
            village = system.institutions[e.org_code].org_type == "村卫生室"
            expected = "1" if village else {"outpatient": "1", "emergency": "2", "inpatient": "3"}[e.kind]
            visit = visits[visit_of[e.encounter_uid]]
            assert (visit.tenant_id, visit.visit_type, visit.visit_time) == ("T" + e.org_code, expected, e.start_at)


def test_referential_integrity_inside_the_source(county):
    system = county["system"]
    unknown_drugs = {int(r) for r, d in _defects(system, "unknown_local_code").items() if d.startswith("drug_code")}
    orphans = {
        "visit without patient": "SELECT v.id FROM his.t_visit v LEFT JOIN his.t_patient p ON p.id = v.patient_id "
        "WHERE p.id IS NULL OR p.tenant_id <> v.tenant_id",
        "recipe detail without recipe": "SELECT d.id FROM his.t_recipe_detail d "
        "LEFT JOIN his.t_recipe r ON r.id = d.recipe_id WHERE r.id IS NULL",
        "drug outside the dictionary": "SELECT d.id FROM his.t_recipe_detail d LEFT JOIN his.t_drug_dict x "
        "ON x.drug_code = d.drug_code WHERE x.drug_code IS NULL",
        "doctor unknown": "SELECT v.id FROM his.t_visit v LEFT JOIN his.sys_user u ON u.user_id = v.doctor_id "
        "WHERE u.user_id IS NULL OR u.tenant_id <> v.tenant_id",
        "department unknown": "SELECT v.id FROM his.t_visit v LEFT JOIN his.sys_dept d "
        "ON (d.tenant_id, d.dept_code) = (v.tenant_id, v.dept_code) WHERE d.id IS NULL",
        "operation without stay": "SELECT o.id FROM his.t_operation o LEFT JOIN his.t_inpatient i "
        "ON i.id = o.inpatient_id WHERE i.id IS NULL",
        "parent tenant unknown": "SELECT t.tenant_id FROM his.sys_tenant t LEFT JOIN his.sys_tenant p "
        "ON p.tenant_id = t.parent_tenant_id WHERE p.tenant_id IS NULL "
        "AND t.parent_tenant_id <> '0'",
    }
    for table in VISIT_CHILDREN:
        orphans[f"{table} without visit"] = (
            f"SELECT c.id FROM his.{table} c LEFT JOIN his.t_visit v "
            f"ON v.id = c.visit_id WHERE v.id IS NULL OR v.tenant_id <> c.tenant_id"
        )
    for table in TABLES[1:]:
        if table != "t_drug_dict":
            orphans[f"{table} tenant unknown"] = (
                f"SELECT 1 FROM his.{table} x LEFT JOIN his.sys_tenant t "
                f"ON t.tenant_id = x.tenant_id WHERE t.tenant_id IS NULL"
            )
    for what, sql in orphans.items():
        found = {r[0] for r in _rows(system, sql)}
        if what == "drug outside the dictionary":
            assert found == unknown_drugs and found, what  # exactly the injected 自备药 codes
        else:
            assert not found, what
    assert _rows(system, "SELECT count(*) FROM his.sys_tenant")[0][0] == 13 + 2 + 289


def test_codes_are_the_vendors_own(county):
    system = county["system"]
    assert {r[0] for r in _rows(system, "SELECT DISTINCT sex FROM his.t_patient")} <= {"0", "1", "2", "9"}
    assert {r[0] for r in _rows(system, "SELECT DISTINCT nation FROM his.t_patient")} <= {"01", "03"}
    levels = dict(_rows(system, "SELECT tenant_level, count(*) FROM his.sys_tenant GROUP BY 1"))
    assert levels == {"1": 13, "2": 2, "3": 289}
    assert all(
        re.fullmatch(r"T4101821\d\d|T410182[3-5]\d\d", r[0])
        for r in _rows(system, "SELECT tenant_id FROM his.sys_tenant")
    )
    village_types = _rows(
        system,
        "SELECT DISTINCT v.visit_type FROM his.t_visit v JOIN his.sys_tenant t "
        "USING (tenant_id) WHERE t.tenant_level = '3'",
    )
    assert [r[0] for r in village_types] == ["1"]  # the village module is outpatient only
    assert {r[0] for r in _rows(system, "SELECT DISTINCT visit_type FROM his.t_visit")} == {"1", "2", "3"}
    codes = _rows(
        system, "SELECT d.diag_code, t.tenant_level FROM his.t_visit_diag d JOIN his.sys_tenant t USING (tenant_id)"
    )
    assert all(re.fullmatch(r"[A-Z]\d\d(\.\d)?|ZDY\d{3}", c) for c, _ in codes if c)  # never I10.x00
    free_text = {level for c, level in codes if c is None}
    assert free_text == {"3"}  # free text only at village clinics
    assert vendor_icd("I10.x00") == "I10" and vendor_icd("E11.900") == "E11.9"
    drugs = {r[0] for r in _rows(system, "SELECT DISTINCT drug_code FROM his.t_recipe_detail")}
    assert all(re.fullmatch(r"YP\d{8}|ZB\d{4}", c) for c in drugs)


def test_answer_key_covers_every_patient_and_visit(county):
    system, visit_of = county["system"], _visit_ids(county)
    truth = {
        int(r.local_patient_id): (r.resident_id, r.org_code)
        for r in _truth("SELECT * FROM patient_truth WHERE source_system = :s", s=system.source_system)
    }
    patients = _rows(system, "SELECT id, tenant_id FROM his.t_patient")
    assert {p.id for p in patients} == set(truth)
    assert all(truth[p.id][1] == p.tenant_id[1:] for p in patients)
    patient_of_visit = dict(_rows(system, "SELECT id, patient_id FROM his.t_visit"))
    for day in (D1, D2):
        for e in _own(system, county["days"][day]):
            assert truth[patient_of_visit[visit_of[e.encounter_uid]]] == (e.resident_id, e.org_code)
    duplicates = {int(r): int(d.split()[-1]) for r, d in _defects(system, "duplicate_submission").items()}
    assert set(patient_of_visit) == set(visit_of.values()) | set(duplicates)
    assert 40 <= len(duplicates) <= 170  # 5% of ~1,900 visits


def test_logged_defects_are_what_is_in_the_data(county):
    system = county["system"]
    patients = {r.id: r for r in _rows(system, "SELECT * FROM his.t_patient")}
    logged = lambda defect: {int(r) for r in _defects(system, defect)}  # noqa: E731
    assert logged("unknown_sex_code") == {i for i, p in patients.items() if p.sex in ("0", "9")}
    assert logged("missing_id_number") == {i for i, p in patients.items() if p.id_card is None}
    assert logged("legacy_15_digit") == {i for i, p in patients.items() if p.id_card and len(p.id_card) == 15}
    assert logged("wrong_check_digit") == {
        i for i, p in patients.items() if p.id_card and len(p.id_card) == 18 and not is_valid(p.id_card)
    }
    for new, detail in _defects(system, "re_registration").items():
        old = int(detail.split()[-1])
        assert patients[int(new)].tenant_id == patients[old].tenant_id and int(new) > old
    duplicates = logged("duplicate_submission")
    made_up = _rows(system, "SELECT d.id, d.visit_id FROM his.t_visit_diag d WHERE d.diag_code LIKE 'ZDY%'")
    unknown = {int(r): d for r, d in _defects(system, "unknown_local_code").items()}
    assert {i for i, visit in made_up if visit not in duplicates} == {
        i for i, d in unknown.items() if d.startswith("diag_code")
    }
    assert {r[0] for r in _rows(system, "SELECT id FROM his.t_recipe_detail WHERE drug_code LIKE 'ZB%'")} == {
        i for i, d in unknown.items() if d.startswith("drug_code")
    }
    backwards = {r[0] for r in _rows(system, "SELECT id FROM his.t_inpatient WHERE out_time < in_time")}
    assert backwards and logged("discharge_before_admission") == backwards


def test_corrections_soft_delete_and_resave(county):
    system, visit_of = county["system"], _visit_ids(county)
    cancelled, updated = visit_of[county["cancelled"].encounter_uid], visit_of[county["updated"].encounter_uid]
    for table in ("t_visit", *VISIT_CHILDREN):
        column = "id" if table == "t_visit" else "visit_id"
        for row in _rows(system, f"SELECT del_flag, gmt_modified FROM his.{table} WHERE {column} = :v", v=cancelled):
            assert (row.del_flag, row.gmt_modified) == ("1", county["cancel_at"]), table
    details = _rows(system, "SELECT del_flag FROM his.t_recipe_detail WHERE recipe_id = :r", r=cancelled * 10 + 1)
    assert details and {r[0] for r in details} == {"1"}
    visit = _rows(system, "SELECT * FROM his.t_visit WHERE id = :v", v=updated)[0]
    assert (visit.del_flag, visit.remark, visit.gmt_modified) == ("0", "诊断更正", county["update_at"])
    main = _rows(system, "SELECT * FROM his.t_visit_diag WHERE visit_id = :v AND main_flag = '1'", v=updated)[0]
    assert (main.diag_desc, main.gmt_modified) == ("诊断更正", county["update_at"])
    assert set(_defects(system, "correction_cancel")) == {str(cancelled)}
    assert set(_defects(system, "correction_update")) == {str(updated)}
    deleted = _rows(system, "SELECT count(*) FROM his.t_visit WHERE del_flag = '1'")[0][0]
    assert deleted == 1


def test_stays_are_discharged_on_their_day_with_settled_charges(county):
    system = county["system"]
    still_in, admitted = county["still_in"]
    assert still_in == admitted > 0  # nothing was known about the discharges before D3
    stays = _rows(system, "SELECT * FROM his.t_inpatient")
    assert len(stays) == admitted and {s.in_status for s in stays} == {"2"}
    ends = {e.start_at: e.end_at for d in (D1, D2) for e in _own(system, county["days"][d]) if e.kind == "inpatient"}
    backwards = set(_defects(system, "discharge_before_admission"))
    for stay in stays:
        assert stay.gmt_modified.date() == ends[stay.in_time].date() and stay.out_status == "2"
        if str(stay.id) not in backwards:
            assert stay.out_time == ends[stay.in_time]
        charges = _rows(system, "SELECT charge_time FROM his.t_charge WHERE visit_id = :v", v=stay.visit_id)
        assert charges and all(c[0] > ends[stay.in_time] for c in charges)
    assert county["written"][D3]["t_inpatient"] == admitted
    assert not _truth(f"SELECT 1 FROM {PENDING_TABLE} WHERE source_system = :s", s=system.source_system)


def test_schema_drift_adds_a_column_from_its_day(county):
    system = county["system"]
    by_day = _rows(
        system,
        "SELECT visit_time::date AS day, medical_insurance_type AS mi_type, count(*) FROM his.t_visit GROUP BY 1, 2",
    )
    assert {(r.day, r.mi_type) for r in by_day if r.day == D1} == {(D1, None)}
    assert {r.mi_type for r in by_day if r.day == D2} == {"310", "390"}
    drift = _truth(
        "SELECT record_id, day FROM defect_log WHERE source_system = :s AND defect = 'schema_drift'",
        s=system.source_system,
    )
    assert [tuple(r) for r in drift] == [("medical_insurance_type", D2)]


def test_rewriting_a_day_is_a_no_op(county):
    system = county["system"]
    before = {t: _rows(system, f"SELECT count(*) FROM his.{t}")[0][0] for t in TABLES}
    assert system.write_day(county["days"][D1]) == {}
    assert {t: _rows(system, f"SELECT count(*) FROM his.{t}")[0][0] for t in TABLES} == before


def test_same_seed_same_rows_and_a_crashed_day_does_not_duplicate(small_world):
    answer_key.create_schema()
    config = {"schema": "pytest_cloud_his_b", **DIRTY}

    def snapshot(system: CloudHis) -> dict[str, list]:
        return {t: [tuple(r) for r in _rows(system, f"SELECT * FROM his.{t} ORDER BY 1")] for t in TABLES}

    first = PytestCloudHisB(small_world, config)
    first.create_schema(reset=True)
    first.write_day(make_day(small_world, D1))
    rows = snapshot(first)
    first.create_schema(reset=True)
    again = PytestCloudHisB(small_world, config)
    again.write_day(make_day(small_world, D1))
    assert snapshot(again) == rows
    # Crash after the source committed but before the day was marked written: a new process re-runs the day.
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        conn.execute(sa.text("DELETE FROM system_day WHERE source_system = :s"), {"s": again.source_system})
    rerun = PytestCloudHisB(small_world, config)
    written = rerun.write_day(make_day(small_world, D1))
    assert sum(written.values()) == 0 and snapshot(rerun) == rows
    assert (
        Counter(
            r.defect for r in _truth("SELECT defect FROM defect_log WHERE source_system = :s", s=again.source_system)
        )["duplicate_submission"]
        > 0
    )
    _drop(rerun)
