"""Institutions fix reported problems at their source (simulator/source_fixes.py): the true values land in the
source rows, the modification marker the collection follows moves, and the answer key records every fix.

Four renderers (云HIS in depth; 人民医院, 中医院 and the private API in brief) write two hand-made days and the day
their stays end, under test-only names. Their whole answer key goes to a scratch database that also holds the
test world's residents (the true ID numbers), so the county in the real ``sim_truth`` is never touched.
"""

from __future__ import annotations

import random
import time
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from simulator import answer_key
from simulator.connections import mariadb_engine, source_pg_engine
from simulator.events import DayActivity
from simulator.source_fixes import FIXABLE, ProblemRef, fix_reported_problems, pick
from simulator.systems.cloud_his import SEX, CloudHis
from simulator.systems.private_api import DATABASE as PRIVATE_DATABASE
from simulator.systems.private_api import PrivateHospitalApi
from simulator.systems.rmyy_his import RmyyHis
from simulator.systems.zyy_his import TZ, ZyyHis
from simulator.world import World
from tests.simulator.conftest import make_day

TRUTH = "sim_truth_pytest_fixes"
D1, D2, D3 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 11)  # D3: the day D1/D2 stays end
FIXED_AT = datetime(2026, 11, 12, 9, 30)
IDENTITY_DIRT = {"missing_id_number": 0.2, "legacy_15_digit": 0.15, "wrong_check_digit": 0.15}
CLOUD, RMYY, ZYY = "cloud_his_pytest_fix", "rmyy_his_pytest_fix", "zyy_his_pytest_fix"
PRIVATE = "private_api_pytest_fix"
CONFIG: dict[str, Any] = {
    "systems": {
        CLOUD: {
            "class": "simulator.systems.cloud_his:CloudHis",
            "schema": "pytest_cloud_his_fix",
            "unknown_sex_code": 0.05,
            "unknown_local_code": 0.05,
            "discharge_before_admission": 0.5,
            "re_registration": 0.05,
            "duplicate_submission": 0.01,
            "identity_dirt": IDENTITY_DIRT,
        },
        RMYY: {
            "class": "simulator.systems.rmyy_his:RmyyHis",
            "database": RMYY,
            "unknown_local_code": 0.5,
            "discharge_before_admission": 1.0,
            "schema_drift_day": None,
            "identity_dirt": IDENTITY_DIRT,
        },
        ZYY: {
            "class": "simulator.systems.zyy_his:ZyyHis",
            "database": ZYY,
            "unknown_local_code": 0.3,
            "discharge_before_admission": 1.0,
            "schema_drift_day": None,
            "identity_dirt": IDENTITY_DIRT,
        },
        PRIVATE: {
            "class": "simulator.systems.private_api:PrivateHospitalApi",
            "pg_schema": "pytest_private_fix",
            "dirt": {"unknown_local_code": 0.3, "discharge_before_admission": 1.0},
            "identity_dirt": IDENTITY_DIRT,
        },
    }
}


class FixCloudHis(CloudHis):
    source_system = CLOUD


class FixRmyyHis(RmyyHis):
    source_system = RMYY


def _systems(world: World) -> list[Any]:
    """The renderers under their test names (中医院 and the private API keep their institutions that way)."""
    zyy = ZyyHis(world, CONFIG["systems"][ZYY])
    zyy.source_system = ZYY
    private = PrivateHospitalApi(world, CONFIG["systems"][PRIVATE])
    private.truth_system = PRIVATE
    return [FixCloudHis(world, CONFIG["systems"][CLOUD]), FixRmyyHis(world, CONFIG["systems"][RMYY]), zyy, private]


def _truth(sql: str, **params: Any) -> list[sa.Row]:
    with source_pg_engine(TRUTH).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _drop_pg_database(name: str, attempts: int = 20) -> None:
    """Drop a scratch database. PostgreSQL 15 refuses FORCE while an autovacuum worker (no role) is in it
    ("must be a member of the role whose process is being terminated"): the worker ends soon, so retry."""
    source_pg_engine(name).dispose()
    for attempt in range(attempts):
        try:
            with source_pg_engine("postgres").execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa.exc.ProgrammingError as exc:
            if "must be a member of the role" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def county(small_world):
    """D1, D2 and D3 written by every system, with the true residents and events in the scratch answer key."""
    _drop_pg_database(TRUTH)
    with source_pg_engine("postgres").execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{TRUTH}"'))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answer_key, "DATABASE", TRUTH)
        answer_key.create_schema()
        with source_pg_engine(TRUTH).begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO person (resident_id, household_id, name, sex, birth_date, ethnicity, id_number, "
                    "hypertension, diabetes) VALUES (:r, 0, :n, :s, :b, :e, :i, false, false)"
                ),
                [
                    {"r": p.resident_id, "n": p.name, "s": p.sex, "b": p.birth_date, "e": p.ethnicity, "i": p.id_number}
                    for p in small_world.people.values()
                ],
            )
        systems = _systems(small_world)
        for system in systems:
            system.create_schema(reset=True)
        for activity in (make_day(small_world, D1), make_day(small_world, D2), DayActivity(day=D3)):
            activity.corrections = []  # make_day cancels 人民医院's stay of the day: keep it to discharge it
            answer_key.record_events(activity)
            for system in systems:
                system.write_day(activity)
        yield
    with source_pg_engine("cloud_his").begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS pytest_cloud_his_fix CASCADE"))
    with source_pg_engine(PRIVATE_DATABASE).begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS pytest_private_fix CASCADE"))
    with mariadb_engine("mysql").begin() as conn:
        for name in (RMYY, f"{RMYY}_sim"):
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    _drop_pg_database(ZYY)
    _drop_pg_database(TRUTH)


def _kind(defect: str) -> str:
    return (
        "discharge"
        if defect == "discharge_before_admission"
        else "code"
        if defect == "unknown_local_code"
        else "sex"
        if defect == "unknown_sex_code"
        else "id"
    )


def _fixable(system: str) -> list[sa.Row]:
    return _truth(
        "SELECT table_name, record_id, defect, detail FROM defect_log WHERE source_system = :s "
        "AND defect = ANY(:d) ORDER BY 1, 2, 3",
        s=system,
        d=sorted(FIXABLE),
    )


def _cloud_rows(table: str, ids: list[str]) -> dict[str, sa.Row]:
    with source_pg_engine("cloud_his").connect() as conn:
        return {
            str(r.id): r
            for r in conn.execute(
                sa.text(f"SELECT * FROM pytest_cloud_his_fix.{table} WHERE id = ANY(:i)"), {"i": [int(i) for i in ids]}
            )
        }


@pytest.fixture(scope="module")
def cloud(county) -> dict[str, Any]:
    """Problems as the platform reports them, fixed three times: half (seed 7), the same half again, then all."""
    fixable = _fixable(CLOUD)
    # 出院早于入院 (ENC003) is reported on the encounter (t_visit); the answer key logs it on the stay.
    problems = [
        ProblemRef(CLOUD, "t_visit", str(int(d.record_id) // 10))
        if d.defect == "discharge_before_admission"
        else ProblemRef(CLOUD, d.table_name, d.record_id)
        for d in fixable
    ]
    logged = _truth("SELECT table_name, record_id, defect FROM defect_log WHERE source_system = :s", s=CLOUD)
    patients = {
        r.local_patient_id
        for r in _truth("SELECT local_patient_id FROM patient_truth WHERE source_system = :s", s=CLOUD)
    }
    dirty = {r.record_id for r in logged if r.table_name == "t_patient"}
    only_variants = sorted(
        {r.record_id for r in logged if r.defect == "re_registration"} - {d.record_id for d in fixable}
    )
    duplicate = next(r.record_id for r in logged if r.defect == "duplicate_submission")
    others = {
        "clean": ProblemRef(CLOUD, "his.t_patient", min(patients - dirty)),
        "re_registration": ProblemRef(CLOUD, "t_patient", only_variants[0]),
        "duplicate": ProblemRef(CLOUD, "t_visit", duplicate),
        "unsupported": ProblemRef("public_health", "jkda_grjbxx", "41018200100500003"),
    }
    problems += others.values()
    before = {
        t: _cloud_rows(t, [d.record_id for d in fixable if d.table_name == t]) for t in {d.table_name for d in fixable}
    }
    runs = {
        "half": fix_reported_problems(CONFIG, problems, 0.5, 7, FIXED_AT),
        "again": fix_reported_problems(CONFIG, problems, 0.5, 7, FIXED_AT + timedelta(hours=1)),
        "all": fix_reported_problems(CONFIG, problems, 1.0, 7, FIXED_AT + timedelta(days=1)),
    }
    after = {t: _cloud_rows(t, list(rows)) for t, rows in before.items()}
    return {"fixable": fixable, "problems": problems, "others": others, "runs": runs, "before": before, "after": after}


def test_picks_are_a_seeded_share_of_distinct_problems(cloud):
    problems = cloud["problems"]
    half = pick(problems, 0.5, 7)
    assert len(half) == round(len(set(problems)) / 2) and len(set(half)) == len(half)
    shuffled = problems + problems[:5]
    random.Random(1).shuffle(shuffled)
    assert pick(shuffled, 0.5, 7) == half  # order and repeats do not matter
    assert pick(problems, 0.5, 8) != half
    assert pick(problems, 1.0, 7) == sorted(set(problems)) and pick(problems, 0.0, 7) == []
    runs = cloud["runs"]
    reported = {f.problem for f in runs["half"].fixed} | {n.problem for n in runs["half"].not_fixable}
    assert reported == set(half)
    with pytest.raises(ValueError):
        pick(problems, 1.5, 7)
    with pytest.raises(ValueError, match="would commit before its rows"):  # D3 is written: fixes come later
        fix_reported_problems(CONFIG, problems, 1.0, 7, datetime.combine(D3, datetime.max.time()))


def test_every_fixable_defect_is_fixed_once(cloud):
    runs, fixable = cloud["runs"], cloud["fixable"]
    assert {d.defect for d in fixable} == FIXABLE  # the days hold every kind
    keys = [(f.table_name, f.record_id, f.defect) for run in ("half", "all") for f in runs[run].fixed]
    assert sorted(keys) == sorted((d.table_name, d.record_id, d.defect) for d in fixable)
    assert 0 < len(runs["half"].fixed) < len(fixable)
    assert runs["again"].fixed == []
    assert {n.reason for n in runs["again"].not_fixable if n.problem in {f.problem for f in runs["half"].fixed}} == {
        "already fixed"
    }
    recorded = {
        (r.table_name, r.record_id, r.defect): r.fixed_at
        for r in _truth("SELECT * FROM source_fix WHERE source_system = :s", s=CLOUD)
    }
    assert recorded == {
        (f.table_name, f.record_id, f.defect): FIXED_AT + timedelta(days=run == "all")
        for run in ("half", "all")
        for f in runs[run].fixed
    }


def test_sources_carry_the_true_values(cloud):
    after = cloud["after"]
    truth = {
        r.local_patient_id: r
        for r in _truth(
            "SELECT t.local_patient_id, p.id_number, p.sex FROM patient_truth t JOIN person p USING (resident_id) "
            "WHERE t.source_system = :s",
            s=CLOUD,
        )
    }
    ends = {
        r.record_id: r.end_at
        for r in _truth(
            "SELECT CAST(CAST(t.local_encounter_id AS bigint) * 10 + 3 AS text) AS record_id, e.end_at "
            "FROM encounter_truth t JOIN event_encounter e USING (encounter_uid) WHERE t.source_system = :s",
            s=CLOUD,
        )
    }
    for d in cloud["fixable"]:
        row = after[d.table_name][d.record_id]
        if d.defect in ("missing_id_number", "legacy_15_digit", "wrong_check_digit"):
            assert (row.id_card, row.id_card_type) == (truth[d.record_id].id_number, "01"), d
        elif d.defect == "unknown_sex_code":
            assert row.sex == SEX[truth[d.record_id].sex], d
        elif d.defect == "discharge_before_admission":
            assert row.out_time == ends[d.record_id] > row.in_time, d
        else:
            column, change = d.detail.split(" ")
            code = getattr(row, column)
            assert code == change.split("->")[0] and not code.startswith(("ZDY", "ZB")), d


def test_the_modification_marker_moves_with_the_fix(cloud):
    runs, before, after = cloud["runs"], cloud["before"], cloud["after"]
    fixed_at = {
        (f.table_name, f.record_id): FIXED_AT + timedelta(days=run == "all")
        for run in ("half", "all")
        for f in runs[run].fixed
    }
    for (table, record), at in fixed_at.items():
        assert before[table][record].gmt_modified < FIXED_AT
        assert after[table][record].gmt_modified == at, (table, record)


def test_problems_without_a_fixable_defect_say_why(cloud):
    reasons = {n.problem: n.reason for n in cloud["runs"]["all"].not_fixable}
    others = cloud["others"]
    assert reasons[others["clean"]] == "no defect logged for this record"
    assert reasons[others["re_registration"]].startswith("not corrected at the source: ")
    assert "re_registration" in reasons[others["re_registration"]]
    assert reasons[others["duplicate"]] == "not corrected at the source: duplicate_submission"
    assert reasons[others["unsupported"]] == "fixes at public_health are not simulated"
    assert set(reasons) - set(others.values()) <= {f.problem for f in cloud["runs"]["half"].fixed}


# (what the fix changed) -> the stored value and the modification marker, per system and table.
READ = {
    (RMYY, "GH_BRJBXX", "id"): "SELECT SFZH, XGSJ FROM GH_BRJBXX WHERE BRID = :k",
    (RMYY, "ZY_CYJL", "discharge"): "SELECT CAST(CYSJ AS CHAR), XGSJ FROM ZY_CYJL WHERE ZYID = :k",
    (RMYY, "MZ_ZDJL", "code"): "SELECT ZDDM, XGSJ FROM MZ_ZDJL WHERE ZDID = :k",
    (RMYY, "ZY_ZDJL", "code"): "SELECT ZDDM, XGSJ FROM ZY_ZDJL WHERE ZDID = :k",
    (ZYY, "pat_master", "id"): "SELECT id_card_no, updated_at FROM his.pat_master WHERE pat_id = :k",
    (ZYY, "pat_master", "code"): "SELECT sex, updated_at FROM his.pat_master WHERE pat_id = :k",
    (ZYY, "ip_disch", "discharge"): "SELECT disch_date || ' ' || disch_time, updated_at FROM his.ip_disch "
    "WHERE adm_no = :k",
    (ZYY, "op_diag", "code"): "SELECT diag_code, updated_at FROM his.op_diag WHERE diag_id = :k",
    (ZYY, "ip_diag", "code"): "SELECT diag_code, updated_at FROM his.ip_diag WHERE diag_id = :k",
    (PRIVATE, "patients", "id"): "SELECT id_card_no, updated_at FROM pytest_private_fix.patients WHERE id = :k",
    (PRIVATE, "admissions", "discharge"): "SELECT CAST(discharge_time AS text), updated_at "
    "FROM pytest_private_fix.admissions WHERE id = :k",
    (PRIVATE, "diagnoses", "code"): "SELECT diagnosis_code, updated_at FROM pytest_private_fix.diagnoses WHERE id = :k",
    (PRIVATE, "orders", "code"): "SELECT item_code, updated_at FROM pytest_private_fix.orders WHERE id = :k",
}
# 出院早于入院 is reported on the stay (the answer key logs it on the discharge record, same key); table names as
# the platform may spell them (another case, a schema prefix).
STAY = {RMYY: "ZY_RYDJ", ZYY: "ip_adm", PRIVATE: "admissions"}
SPELLED = {RMYY: str.lower, ZYY: lambda t: f"his.{t}", PRIVATE: lambda t: t}
ENGINES = {
    RMYY: lambda: mariadb_engine(RMYY),
    ZYY: lambda: source_pg_engine(ZYY),
    PRIVATE: lambda: source_pg_engine(PRIVATE_DATABASE),
}


@pytest.mark.parametrize("system", [RMYY, ZYY, PRIVATE])
def test_other_systems_fix_at_their_source(county, system):
    fixable = _fixable(system)
    assert {_kind(d.defect) for d in fixable} == {"id", "discharge", "code"}
    problems = [
        ProblemRef(
            system, SPELLED[system](STAY[system] if _kind(d.defect) == "discharge" else d.table_name), d.record_id
        )
        for d in fixable
    ]
    report = fix_reported_problems(CONFIG, problems, 1.0, 3, FIXED_AT)
    assert report.not_fixable == []
    assert sorted((f.table_name, f.record_id, f.defect) for f in report.fixed) == sorted(
        (d.table_name, d.record_id, d.defect) for d in fixable
    )
    ids = {
        r.local_patient_id: r.id_number
        for r in _truth(
            "SELECT t.local_patient_id, p.id_number FROM patient_truth t JOIN person p USING (resident_id) "
            "WHERE t.source_system = :s",
            s=system,
        )
    }
    marker = FIXED_AT.replace(tzinfo=TZ) if system == ZYY else FIXED_AT
    with ENGINES[system]().connect() as conn:
        for fix in report.fixed:
            kind = _kind(fix.defect)
            value, modified = conn.execute(sa.text(READ[(system, fix.table_name, kind)]), {"k": fix.record_id}).one()
            assert (value, modified) == (fix.value, marker), fix
            if kind == "id":
                assert value == ids[fix.record_id]
            elif kind == "code":
                assert not value.startswith(("ZDY", "LS")) and value not in ("1", "2", "0", "9"), fix
    assert len(_truth("SELECT 1 FROM source_fix WHERE source_system = :s", s=system)) == len(fixable)


def test_a_record_gone_from_the_source_is_not_fixable(county):
    """A logged defect whose row the source no longer holds: reported with the reason, nothing recorded."""
    resident = _truth("SELECT resident_id FROM person ORDER BY resident_id LIMIT 1")[0].resident_id
    with source_pg_engine(TRUTH).begin() as conn:
        conn.execute(
            sa.text("INSERT INTO patient_truth VALUES (:s, '1999999999999', :r, '410182101')"),
            {"s": CLOUD, "r": resident},
        )
        conn.execute(
            sa.text(
                "INSERT INTO defect_log VALUES (:s, 't_patient', '1999999999999', 'missing_id_number', "
                "'id_number blank', :d)"
            ),
            {"s": CLOUD, "d": D1},
        )
    gone = ProblemRef(CLOUD, "t_patient", "1999999999999")
    report = fix_reported_problems(CONFIG, [gone], 1.0, 7, FIXED_AT)
    assert report.fixed == []
    assert [n.reason for n in report.not_fixable] == ["t_patient 1999999999999 is not in the source"]
    assert not _truth("SELECT 1 FROM source_fix WHERE record_id = '1999999999999'")
