"""The private hospitals' vendor API: backend rows reconcile with the true events, and the HTTP API serves them
the way a collector needs (auth, complete and stable paging, updated_since, tombstones, 429, injected faults).

Writes into its own schema of ``private_his`` and under its own answer-key name, so a simulated county in the
same databases is left alone.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from simulator import answer_key
from simulator.api_server import ApiSettings, app, configure, issue_token, to_record
from simulator.connections import source_pg_engine
from simulator.events import Correction, DayActivity
from simulator.systems.private_api import DATABASE, DEPARTMENTS, REISSUED, TABLES, PrivateHospitalApi
from tests.simulator.conftest import make_day

SCHEMA = "pytest_private_api"
FIRST = date(2026, 11, 2)
DAYS = [FIRST + timedelta(days=n) for n in range(10)]
DRIFT_DAY = FIRST + timedelta(days=3)
CONFIG = {
    "pg_schema": SCHEMA,
    "schema_drift_day": DRIFT_DAY.isoformat(),
    "dirt": {
        "re_registration": 0.2,
        "duplicate_submission": 0.1,
        "unknown_local_code": 0.1,
        "late_submission": 0.1,
        "discharge_before_admission": 0.3,
    },
    "identity_dirt": {"missing_id_number": 0.2, "homophone": 0.2, "changed_phone": 0.2},
}
SECRET = "pytest-secret"


def _forget(truth: str) -> None:
    """Remove a test answer-key name's rows, so the test starts from an empty history."""
    answer_key.create_schema()
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        for table in ("patient_truth", "defect_log", "encounter_truth", "system_day"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = :s"), {"s": truth})


def _system(world: Any, schema: str, truth: str) -> PrivateHospitalApi:
    _forget(truth)
    system = PrivateHospitalApi(world, {**CONFIG, "pg_schema": schema})
    system.truth_system = truth
    system.create_schema(reset=True)
    return system


def _activities(world: Any) -> list[DayActivity]:
    """Ten days; day 2 cancels one of day 1's clinic visits and corrects another's diagnoses."""
    activities = [make_day(world, day, per_institution=10) for day in DAYS]
    mine = [e for e in activities[0].encounters if e.org_code in ("410182004", "410182005") and e.kind != "inpatient"]
    at = datetime.combine(DAYS[1], time(10, 15))
    activities[1].corrections = [
        Correction(mine[0].encounter_uid, "cancel", at, "退费"),
        Correction(mine[1].encounter_uid, "update", at, "诊断更正"),
    ]
    return activities


def _rows(schema: str, table: str) -> list[dict[str, Any]]:
    with source_pg_engine(DATABASE).connect() as conn:
        return [
            dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {schema}.{table} ORDER BY updated_at, id")).mappings()
        ]


def _pending(schema: str) -> list[Any]:
    with source_pg_engine(DATABASE).connect() as conn:
        return conn.execute(sa.text(f"SELECT table_name, id, due_day FROM {schema}.sim_pending")).all()


def _defects(truth: str) -> list[Any]:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        return conn.execute(
            sa.text("SELECT table_name, record_id, defect, detail, day FROM defect_log WHERE source_system = :s"),
            {"s": truth},
        ).all()


@pytest.fixture(scope="module")
def written(small_world) -> dict[str, Any]:
    system = _system(small_world, SCHEMA, SCHEMA)
    activities = _activities(small_world)
    counts = [system.write_day(activity) for activity in activities]
    return {"system": system, "activities": activities, "counts": counts}


@pytest.fixture
def client(written) -> TestClient:
    configure(ApiSettings(client_id="pytest", client_secret=SECRET, pg_schema=SCHEMA, rate_limit_per_second=1000))
    return TestClient(app)


def _token(client: TestClient) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", json={"client_id": "pytest", "client_secret": SECRET})
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _page_through(client: TestClient, headers: dict[str, str], url: str, **params: Any) -> list[dict[str, Any]]:
    records, cursor = [], None
    while True:
        response = client.get(url, headers=headers, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        records += data["list"]
        cursor = data["nextCursor"]
        if cursor is None:
            return records


# --- the backend -----------------------------------------------------------------------------------------
def test_rows_reconcile_with_events(written) -> None:
    mine = [e for a in written["activities"] for e in a.encounters if e.org_code in ("410182004", "410182005")]
    clinic = [e for e in mine if e.kind != "inpatient"]
    inpatient = [e for e in mine if e.kind == "inpatient"]
    defects = Counter(d.defect for d in _defects(SCHEMA))
    stored = {t: {r["id"] for r in _rows(SCHEMA, t) if r["id"][1] != REISSUED} for t in TABLES}
    for table, record_id, _ in _pending(SCHEMA):
        stored.setdefault(table, set()).add(record_id)
    assert len(stored["visits"]) == len(clinic) + defects["duplicate_submission"]
    assert len(stored["admissions"]) == len(inpatient)
    assert len(stored["diagnoses"]) == sum(len(e.diagnoses) for e in clinic) + 2 * sum(
        len(e.diagnoses) for e in inpatient
    )  # admission and discharge diagnoses
    assert len(stored["orders"]) == sum(
        len(e.prescriptions) + len(e.labs) + len(e.exams) + len(e.surgeries) for e in mine
    )
    assert len(stored["charges"]) == sum(len(e.charges) for e in mine)
    with source_pg_engine(DATABASE).connect() as conn:
        queued = (
            conn.execute(
                sa.text(
                    f"SELECT sum((payload->>'amount')::numeric) FROM {SCHEMA}.sim_pending WHERE table_name = 'charges'"
                )
            ).scalar()
            or 0
        )
    served = sum(r["amount"] for r in _rows(SCHEMA, "charges"))
    assert float(served + queued) == pytest.approx(sum(e.total_yuan for e in mine))
    assert sum(written["counts"][0].values()) > 0


def test_commit_times_stay_inside_the_written_days(written) -> None:
    """Nothing served commits after the last written day, nothing queued commits before it: cursors never miss."""
    end = datetime.combine(DAYS[-1] + timedelta(days=1), time())
    for table in TABLES:
        assert all(r["updated_at"] < end for r in _rows(SCHEMA, table))
    assert all(due > DAYS[-1] for _, _, due in _pending(SCHEMA))
    admissions = {r["id"]: r for r in _rows(SCHEMA, "admissions")}
    first_day = [r for r in admissions.values() if r["admit_time"].date() == FIRST]
    last_day = [r for r in admissions.values() if r["admit_time"].date() == DAYS[-1]]
    assert first_day and all(r["status"] == "discharged" and r["discharge_time"] for r in first_day)
    assert last_day and all(r["status"] == "in_hospital" and r["discharge_time"] is None for r in last_day)


def test_referential_integrity(written) -> None:
    patients = {r["id"]: r for r in _rows(SCHEMA, "patients")}
    encounters = {r["id"]: r for t in ("visits", "admissions") for r in _rows(SCHEMA, t)}
    for row in encounters.values():
        assert row["patient_id"] in patients
        assert patients[row["patient_id"]]["patient_no"] == row["patient_no"]
        assert patients[row["patient_id"]]["hospital_code"] == row["hospital_code"]
    for table in ("diagnoses", "orders", "charges"):
        for row in _rows(SCHEMA, table):
            owner = row["visit_id"] or row["admission_id"]
            assert (row["visit_id"] is None) != (row["admission_id"] is None)
            assert owner in encounters and encounters[owner]["patient_id"] == row["patient_id"]


def test_codes_are_the_vendors(written) -> None:
    patients = _rows(SCHEMA, "patients")
    assert {r["hospital_code"] for r in patients} == {"HZ001", "RX001"}
    assert {r["gender"] for r in patients} <= {"male", "female", "unknown"}
    assert {r["dept_code"] for r in _rows(SCHEMA, "visits")} <= set(DEPARTMENTS.values())
    codes = {r["diagnosis_code"] for r in _rows(SCHEMA, "diagnoses")}
    assert "I10" in codes and "E11.9" in codes
    assert not codes & {"I10.x00", "E11.900"}
    assert all(len(c) <= 5 or c.startswith("ZDY") for c in codes)
    items = {r["item_code"] for r in _rows(SCHEMA, "orders") if r["order_type"] == "drug"}
    assert items and all(c.startswith(("YP", "LS")) for c in items)
    assert not any(v in ("410182004", "410182005") for t in TABLES for r in _rows(SCHEMA, t) for v in r.values())


def test_answer_key_covers_every_patient_record(written) -> None:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        truth = {
            r.local_patient_id: r
            for r in conn.execute(sa.text("SELECT * FROM patient_truth WHERE source_system = :s"), {"s": SCHEMA})
        }
    world = written["system"].world
    renamed = {
        d.record_id
        for d in _defects(SCHEMA)
        if d.defect in ("homophone", "name_typo", "swapped_chars", "traditional_chars")
    }
    patients = _rows(SCHEMA, "patients")
    assert {r["id"] for r in patients} == set(truth)
    org = {"HZ001": "410182004", "RX001": "410182005"}
    for row in patients:
        assert truth[row["id"]].org_code == org[row["hospital_code"]]
        person = world.people[truth[row["id"]].resident_id]
        assert (row["patient_name"] == person.name) != (row["id"] in renamed)


def test_defects_logged_match_the_data(written) -> None:
    defects = _defects(SCHEMA)
    by_kind: dict[str, set[str]] = {}
    for d in defects:
        by_kind.setdefault(d.defect, set()).add(d.record_id)
    for kind in (
        "missing_id_number",
        "re_registration",
        "duplicate_submission",
        "unknown_local_code",
        "late_submission",
        "discharge_before_admission",
        "correction_cancel",
        "correction_update",
        "schema_drift",
    ):
        assert by_kind.get(kind), f"no {kind} injected"
    patients = {r["id"]: r for r in _rows(SCHEMA, "patients")}
    assert {i for i, r in patients.items() if r["id_card_no"] is None} == by_kind["missing_id_number"]
    diagnoses = _rows(SCHEMA, "diagnoses")
    pending = {record_id for _, record_id, _ in _pending(SCHEMA)}
    # a diagnosis re-issued by a correction keeps its 自定义诊断 code, and the answer key logs the copy too
    zdy = {r["id"] for r in diagnoses if r["diagnosis_code"].startswith("ZDY")}
    assert any(i[1] == REISSUED for i in zdy & by_kind["unknown_local_code"]), "no re-issued copy was checked"
    assert zdy == by_kind["unknown_local_code"] - pending - {r["id"] for r in _rows(SCHEMA, "orders")}
    visits = {r["id"]: r for r in _rows(SCHEMA, "visits")}
    for d in (d for d in defects if d.defect == "duplicate_submission" and d.record_id in visits):
        original, duplicate = visits[d.detail.split()[-1]], visits[d.record_id]
        assert (original["patient_id"], original["visit_time"], original["dept_code"]) == (
            duplicate["patient_id"],
            duplicate["visit_time"],
            duplicate["dept_code"],
        )
    for record_id in by_kind["late_submission"] - pending:
        assert visits[record_id]["updated_at"] >= datetime.combine(
            visits[record_id]["visit_time"].date() + timedelta(days=2), time()
        )
    admissions = {r["id"]: r for r in _rows(SCHEMA, "admissions")}
    backwards = {i for i, r in admissions.items() if r["discharge_time"] and r["discharge_time"] < r["admit_time"]}
    assert backwards == by_kind["discharge_before_admission"] - pending  # logged at admission, served at discharge
    assert {d.day for d in defects if d.defect == "schema_drift"} == {DRIFT_DAY}


def test_rewriting_a_day_is_a_noop(written) -> None:
    before = {t: len(_rows(SCHEMA, t)) for t in TABLES}
    assert written["system"].write_day(written["activities"][0]) == {}
    assert written["system"].last_day() == DAYS[-1]
    assert {t: len(_rows(SCHEMA, t)) for t in TABLES} == before


def test_same_seed_gives_identical_rows(written, small_world) -> None:
    other = _system(small_world, SCHEMA + "_again", SCHEMA + "_again")
    for activity in written["activities"][:3]:
        other.write_day(activity)
    first = _system(small_world, SCHEMA + "_first", SCHEMA + "_first")
    for activity in written["activities"][:3]:
        first.write_day(activity)
    for table in TABLES:
        assert _rows(SCHEMA + "_again", table) == _rows(SCHEMA + "_first", table)
    for truth in (SCHEMA + "_again", SCHEMA + "_first"):
        _forget(truth)
    with source_pg_engine(DATABASE).begin() as conn:
        for schema in (SCHEMA + "_again", SCHEMA + "_first"):
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


# --- the HTTP API ----------------------------------------------------------------------------------------
def test_auth(client) -> None:
    url = "/api/v1/hospitals/HZ001/patients"
    assert client.get(url).status_code == 401
    assert client.get(url).json()["code"] == 40101
    wrong = client.post("/api/v1/auth/token", json={"client_id": "pytest", "client_secret": "guess"})
    assert wrong.status_code == 401
    expired = issue_token(app.state.settings, "pytest", ttl_seconds=-5)
    response = client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert (response.status_code, response.json()["code"]) == (401, 40102)
    assert client.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    token = client.post("/api/v1/auth/token", json={"client_id": "pytest", "client_secret": SECRET}).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 1800
    assert client.get(url, headers={"Authorization": f"Bearer {token['access_token']}"}).status_code == 200
    assert client.get("/api/v1/hospitals/410182004/patients", headers=_token(client)).status_code == 404


@pytest.mark.parametrize("resource", list(TABLES))
def test_cursor_paging_returns_every_record_once_as_stored(client, resource) -> None:
    headers = _token(client)
    for hospital in ("HZ001", "RX001"):
        records = _page_through(client, headers, f"/api/v1/hospitals/{hospital}/{resource}", page_size=7)
        stored = [to_record(r) for r in _rows(SCHEMA, resource) if r["hospital_code"] == hospital]
        assert len({r["id"] for r in records}) == len(records)
        assert records == stored


def test_page_numbers_and_total(client) -> None:
    headers = _token(client)
    url = "/api/v1/hospitals/RX001/visits"
    first = client.get(url, headers=headers, params={"page": 1, "page_size": 5}).json()["data"]
    total = first["total"]
    pages = [
        client.get(url, headers=headers, params={"page": p, "page_size": 5}).json()["data"]
        for p in range(1, total // 5 + 2)
    ]
    ids = [r["id"] for page in pages for r in page["list"]]
    assert ids == [r["id"] for r in _rows(SCHEMA, "visits") if r["hospital_code"] == "RX001"]
    assert pages[-1]["nextCursor"] is None and first["nextCursor"] and first["pageSize"] == 5


def test_updated_since_filters(client) -> None:
    headers = _token(client)
    since = datetime.combine(DAYS[5], time(12))
    stored = [r for r in _rows(SCHEMA, "charges") if r["hospital_code"] == "HZ001" and r["updated_at"] >= since]
    url = "/api/v1/hospitals/HZ001/charges"
    for text in (since.isoformat(), since.isoformat() + "+08:00", (since - timedelta(hours=8)).isoformat() + "Z"):
        records = _page_through(client, headers, url, updated_since=text, page_size=50)
        assert [r["id"] for r in records] == [r["id"] for r in stored]
    assert client.get(url, headers=headers, params={"updated_since": "yesterday"}).status_code == 400


def test_corrections_arrive_as_tombstones(client, written) -> None:
    headers = _token(client)
    cancel, update = written["activities"][1].corrections
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        local = dict(
            conn.execute(
                sa.text(
                    "SELECT encounter_uid, min(local_encounter_id) FROM encounter_truth "
                    "WHERE source_system = :s GROUP BY encounter_uid"
                ),
                {"s": SCHEMA},
            ).all()
        )
    since = datetime.combine(DAYS[1], time()).isoformat()
    changed = {}
    for resource in ("visits", "diagnoses", "charges"):
        for hospital in ("HZ001", "RX001"):
            for r in _page_through(client, headers, f"/api/v1/hospitals/{hospital}/{resource}", updated_since=since):
                changed[r["id"]] = r
    cancelled = changed[local[cancel.target_uid]]
    assert cancelled["deleted"] is True and cancelled["status"] == "cancelled"
    assert cancelled["updatedAt"] == "2026-11-03T10:15:00.000+08:00"
    assert any(r.get("visitId") == cancelled["id"] and r["deleted"] for r in changed.values())
    assert changed[local[update.target_uid]]["remark"] == "诊断更正"
    redone = [r for r in changed.values() if r.get("visitId") == local[update.target_uid]]
    assert {r["deleted"] for r in redone} == {True, False}
    assert sorted(r["diagnosisCode"] for r in redone if r["deleted"]) == sorted(
        r["diagnosisCode"] for r in redone if not r["deleted"]
    )


def test_schema_drift_adds_a_field(client) -> None:
    visits = _page_through(client, _token(client), "/api/v1/hospitals/HZ001/visits", page_size=500)
    assert all("payType" in r for r in visits)  # null on records created before the drift day
    drifted = {r["payType"] for r in visits if r["createdAt"] >= DRIFT_DAY.isoformat()}
    assert drifted and drifted <= {"insurance", "self_pay"}


def test_rate_limit_answers_429_with_retry_after(client) -> None:
    headers = _token(client)
    configure(ApiSettings(client_id="pytest", client_secret=SECRET, pg_schema=SCHEMA, rate_limit_per_second=3))
    statuses = [client.get("/api/v1/hospitals", headers=headers) for _ in range(8)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)


def test_fault_injection(client) -> None:
    configure(ApiSettings(client_id="pytest", client_secret=SECRET, pg_schema=SCHEMA, fault_rate=1.0))
    headers = _token(client)
    statuses = {client.get("/api/v1/hospitals/HZ001/visits", headers=headers).status_code for _ in range(10)}
    assert statuses <= {500, 503} and statuses
    assert client.get("/health").json()["status"] == "UP"
