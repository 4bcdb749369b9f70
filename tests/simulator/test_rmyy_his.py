"""荥阳市人民医院 HIS renderer (simulator/systems/rmyy_his.py) on hand-made days.

Each renderer under test has its own source_system and MariaDB databases, so the answer key rows it writes
(in the shared sim_truth) and its sources never touch the real ``rmyy_his``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import fields, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from core.gb11643 import is_valid
from ingestion.registry import load_sources
from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.dirt import IdentityDirt
from simulator.events import Correction, DayActivity
from simulator.systems.rmyy_his import DEFAULTS, DIAGNOSES, DRIFT_COLUMN, ORG_CODE, TABLES, RmyyHis
from simulator.world import World
from spark_jobs.model import source_mapping
from tests.simulator.conftest import make_day

DAY0 = date(2026, 11, 2)
HISTORY_DAYS = 6
CLEAN: dict[str, Any] = {
    **dict.fromkeys(DEFAULTS, 0.0),
    "schema_drift_day": None,
    "identity_dirt": {f.name: 0.0 for f in fields(IdentityDirt)},
}
DIRTY: dict[str, Any] = {
    "re_registration": 0.2,
    "duplicate_submission": 0.15,
    "unknown_local_code": 0.15,
    "discharge_before_admission": 0.3,
    "late_submission": 0.1,
    "schema_drift_day": DAY0 + timedelta(days=3),
    "identity_dirt": {
        "missing_id_number": 0.2,
        "wrong_check_digit": 0.1,
        "legacy_15_digit": 0.1,
        "name_typo": 0.2,
        "homophone": 0.2,
    },
}


def _renderer(world: World, name: str, config: dict[str, Any]) -> RmyyHis:
    """A fresh renderer named ``name``: its databases recreated, its answer-key rows removed."""
    cls = type("TestRmyyHis", (RmyyHis,), {"source_system": name})
    system = cls(world, {"database": name, **config})
    answer_key.create_schema()
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        for table in ("patient_truth", "defect_log", "encounter_truth", "system_day"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = :s"), {"s": name})
    system.create_schema(reset=True)
    return system


def busy_day(world: World, day: date, extra: int = 24) -> DayActivity:
    """make_day plus ``extra`` encounters at 人民医院: short stays (discharged within days), a midnight emergency,
    and corrections of earlier days' visits (a cancel of yesterday's, an update of the day before's)."""
    activity = make_day(world, day)
    template = [e for e in activity.encounters if e.org_code == ORG_CODE]
    residents = sorted(world.people)
    for k in range(extra):
        base = template[k % len(template)]
        start = datetime.combine(day, time(7)) + timedelta(minutes=37 * k)
        if k == extra - 1:
            base, start = template[2], datetime.combine(day, time(23, 50))  # its work spills past midnight
        stay = timedelta(days=k % 3, hours=3) if base.kind == "inpatient" else None
        activity.encounters.append(
            replace(
                base,
                encounter_uid=f"X{day:%Y%m%d}{k:04d}",
                resident_id=residents[(k * 13 + day.day * 7) % len(residents)],
                start_at=start,
                end_at=start + stay if stay else None,
                surgeries=[replace(s, at=start + timedelta(hours=2)) for s in base.surgeries],
            )
        )
    if day > DAY0:
        activity.corrections.append(
            Correction(f"X{day - timedelta(days=1):%Y%m%d}0001", "cancel", datetime.combine(day, time(10)), "退费")
        )
    if day > DAY0 + timedelta(days=1):
        activity.corrections.append(
            Correction(f"X{day - timedelta(days=2):%Y%m%d}0004", "update", datetime.combine(day, time(11)), "诊断更正")
        )
    return activity


def _rows(system: RmyyHis, sql: str, **params: Any) -> list:
    with system.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _ids(system: RmyyHis, sql: str) -> set:
    return {r[0] for r in _rows(system, sql)}


def _defects(system: RmyyHis, defect: str) -> dict[str, str]:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT record_id, detail FROM defect_log WHERE source_system = :s AND defect = :d"),
            {"s": system.source_system, "d": defect},
        ).all()
    return dict(rows)


def _dump(system: RmyyHis) -> dict[str, list]:
    return {table: _rows(system, f"SELECT * FROM {table} ORDER BY 1") for table in TABLES}


@pytest.fixture(scope="module")
def clean_day(small_world):
    system = _renderer(small_world, "test_rmyy_his_clean", CLEAN)
    activity = make_day(small_world, DAY0)
    system.write_day(activity)
    return system, activity


@pytest.fixture(scope="module")
def history(small_world):
    system = _renderer(small_world, "test_rmyy_his_dirty", DIRTY)
    activities = [busy_day(small_world, DAY0 + timedelta(days=k)) for k in range(HISTORY_DAYS)]
    for activity in activities:
        system.write_day(activity)
    return system, activities


def test_tables_keep_every_column_the_pipeline_reads(clean_day):
    """The collection config and the silver mapping name source columns: all must exist, unchanged."""
    system, _ = clean_day
    needed: dict[str, set[str]] = {}
    for spec in source_mapping("rmyy_his")["tables"]:
        for part in [spec, *spec.get("lookups", {}).values()]:
            columns = {c["from"] for c in part["columns"].values() if "from" in c}
            columns |= set(part["key"]) | ({next(iter(part["join_on"]))} if "join_on" in part else set())
            needed.setdefault(part["bronze_table"], set()).update(columns)
    for table in load_sources()["rmyy_his"].tables:
        needed.setdefault(table.name, set()).update({*table.keys, table.commit_time})
    present = _rows(
        system,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db",
        db=system.database,
    )
    have: dict[str, set[str]] = {}
    for table, column in present:
        have.setdefault(table, set()).add(column)
    for table, columns in needed.items():
        assert columns <= have.get(table, set()), f"{table} lacks {sorted(columns - have.get(table, set()))}"


def test_clean_day_reconciles_with_the_events(clean_day):
    """Rows written plus rows waiting for their commit time = what the events of 人民医院 imply."""
    system, activity = clean_day
    mine = [e for e in activity.encounters if e.org_code == ORG_CODE]
    visits = [e for e in mine if e.kind != "inpatient"]
    stays = [e for e in mine if e.kind == "inpatient"]
    groups = {(e.encounter_uid, lab.loinc in ("6690-2", "718-7")) for e in mine for lab in e.labs}
    expected = {
        "GH_BRJBXX": len({e.resident_id for e in mine}),
        "MZ_JZJL": len(visits),
        "MZ_ZDJL": sum(len(e.diagnoses) for e in visits),
        "MZ_CF": len({(e.encounter_uid, p.drug_code[0]) for e in visits for p in e.prescriptions}),
        "MZ_CFMX": sum(len(e.prescriptions) for e in visits),
        "MZ_SF": sum(len(e.charges) for e in visits),
        "ZY_RYDJ": len(stays),
        "ZY_ZDJL": 2 * sum(len(e.diagnoses) for e in stays),
        "ZY_YZJL": sum(len(e.prescriptions) for e in stays),
        "ZY_FYMX": sum(len(e.charges) for e in stays),
        "SS_SSJL": sum(len(e.surgeries) for e in stays),
        "ZY_CYJL": len(stays),
        "BL_SYXX": len(stays),
        "JY_SQD": len(groups),
        "JY_JG": sum(len(e.labs) for e in mine),
        "JC_BG": sum(len(e.exams) for e in mine),
    }
    waiting = Counter(
        r[0].split(":")[1]
        for r in _rows(system, f"SELECT OP_ID FROM {system.state_database}.PENDING_OP WHERE OP_ID LIKE 'I:%'")
    )
    actual = {t: _rows(system, f"SELECT COUNT(*) FROM {t}")[0][0] + waiting[t] for t in expected}
    assert actual == expected
    assert waiting["ZY_CYJL"] == len(stays)  # discharges are not known before they happen
    assert _rows(system, "SELECT COUNT(*) FROM ZY_CWXX WHERE KFBZ = 1")[0][0] == 600


def test_codes_are_the_vendors(clean_day):
    system, activity = clean_day
    dictionary = _ids(system, "SELECT JBBM FROM ZD_JBZD")
    assert _ids(system, "SELECT ZDDM FROM MZ_ZDJL") <= dictionary
    assert not _ids(system, "SELECT ZDDM FROM MZ_ZDJL") & {d.icd_code for e in activity.encounters for d in e.diagnoses}
    assert _ids(system, "SELECT XB FROM GH_BRJBXX") <= {"男", "女"}
    assert _ids(system, "SELECT JZLX FROM MZ_JZJL") == {"门诊", "急诊"}
    assert all(code.startswith("YP") for code in _ids(system, "SELECT YPDM FROM MZ_CFMX"))
    assert _ids(system, "SELECT YPDM FROM MZ_CFMX") <= _ids(system, "SELECT YPDM FROM YK_YPZD")
    assert _rows(system, "SELECT XMDM, JG, YCBZ FROM JY_JG") == [("GLU", "7.8", "H")] * 3
    assert _ids(system, "SELECT KSDM FROM MZ_JZJL") <= _ids(system, "SELECT KSDM FROM ZD_KSZD")


def test_referential_integrity(history):
    system, _ = history
    orphans = {
        "MZ_JZJL.BRID": "SELECT BRID FROM MZ_JZJL WHERE BRID NOT IN (SELECT BRID FROM GH_BRJBXX)",
        "ZY_RYDJ.BRID": "SELECT BRID FROM ZY_RYDJ WHERE BRID NOT IN (SELECT BRID FROM GH_BRJBXX)",
        "MZ_ZDJL.JZID": "SELECT JZID FROM MZ_ZDJL WHERE JZID NOT IN (SELECT JZID FROM MZ_JZJL)",
        "MZ_CF.JZID": "SELECT JZID FROM MZ_CF WHERE JZID NOT IN (SELECT JZID FROM MZ_JZJL)",
        "MZ_CFMX.CFID": "SELECT CFID FROM MZ_CFMX WHERE CFID NOT IN (SELECT CFID FROM MZ_CF)",
        "MZ_CFMX.YPDM": "SELECT YPDM FROM MZ_CFMX WHERE YPDM NOT IN (SELECT YPDM FROM YK_YPZD)",
        "MZ_SF.JZID": "SELECT JZID FROM MZ_SF WHERE SFZT = '1' AND JZID NOT IN (SELECT JZID FROM MZ_JZJL)",
        "JY_JG.SQDH": "SELECT SQDH FROM JY_JG WHERE SQDH NOT IN (SELECT SQDH FROM JY_SQD)",
        "JY_JG.XMDM": "SELECT XMDM FROM JY_JG WHERE XMDM NOT IN (SELECT XMDM FROM JY_XMZD)",
        "ZY_CWXX.ZYID": "SELECT ZYID FROM ZY_CWXX WHERE ZYID NOT IN (SELECT ZYID FROM ZY_RYDJ)",
        "ZY_RYDJ.CWH": "SELECT CWH FROM ZY_RYDJ WHERE CWH NOT IN (SELECT CWH FROM ZY_CWXX)",
        "MZ_JZJL.KSDM": "SELECT KSDM FROM MZ_JZJL WHERE KSDM NOT IN (SELECT KSDM FROM ZD_KSZD)",
        "MZ_JZJL.YSGH": "SELECT YSGH FROM MZ_JZJL WHERE YSGH NOT IN (SELECT GH FROM ZD_ZGXX)",
    }
    for table in ("ZY_ZDJL", "ZY_YZJL", "ZY_FYMX", "SS_SSJL", "ZY_CYJL", "BL_SYXX"):
        orphans[f"{table}.ZYID"] = f"SELECT ZYID FROM {table} WHERE ZYID NOT IN (SELECT ZYID FROM ZY_RYDJ)"
    for table in ("JY_SQD", "JC_BG"):
        orphans[f"{table}.JZH"] = (
            f"SELECT JZH FROM {table} WHERE JZH NOT IN (SELECT JZID FROM MZ_JZJL) "
            "AND JZH NOT IN (SELECT ZYID FROM ZY_RYDJ)"
        )
    assert {name: _rows(system, sql) for name, sql in orphans.items()} == {name: [] for name in orphans}
    assert _rows(system, "SELECT COUNT(*) FROM ZY_CYJL")[0][0] > 10  # short stays were discharged


def test_answer_key_covers_every_record(history):
    system, activities = history
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        patients = dict(
            conn.execute(
                sa.text("SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s"),
                {"s": system.source_system},
            ).all()
        )
        encounters = dict(
            conn.execute(
                sa.text("SELECT local_encounter_id, encounter_uid FROM encounter_truth WHERE source_system = :s"),
                {"s": system.source_system},
            ).all()
        )
    assert _ids(system, "SELECT BRID FROM GH_BRJBXX") == set(patients)
    resident = {e.encounter_uid: e.resident_id for a in activities for e in a.encounters}
    for sql in ("SELECT JZID, BRID FROM MZ_JZJL", "SELECT ZYID, BRID FROM ZY_RYDJ"):
        for local_id, brid in _rows(system, sql):
            assert patients[brid] == resident[encounters[local_id]]


def test_defects_logged_match_the_data(history):
    system, _ = history
    patients = {r[0]: r[1:] for r in _rows(system, "SELECT BRID, SFZH FROM GH_BRJBXX")}
    assert {b for b, (sfzh,) in patients.items() if sfzh is None} == set(_defects(system, "missing_id_number"))
    assert {b for b, (sfzh,) in patients.items() if sfzh and len(sfzh) == 15} == set(
        _defects(system, "legacy_15_digit")
    )
    assert {b for b, (sfzh,) in patients.items() if sfzh and len(sfzh) == 18 and not is_valid(sfzh)} == set(
        _defects(system, "wrong_check_digit")
    )
    assert _defects(system, "re_registration")

    visits = {r[0]: r[1:] for r in _rows(system, f"SELECT JZID, BRID, JZSJ, XGSJ, {DRIFT_COLUMN} FROM MZ_JZJL")}
    cancelled = _defects(system, "correction_cancel")
    duplicates = _defects(system, "duplicate_submission")
    assert duplicates
    for jzid, detail in duplicates.items():
        original = detail.rsplit(" ", 1)[1]
        assert jzid in cancelled or visits[jzid][:2] == visits[original][:2]
    late = _defects(system, "late_submission")
    assert late
    committed_late = {
        j for j, (_, at, saved, _) in visits.items() if saved >= datetime.combine(at.date() + timedelta(days=2), time())
    }
    assert committed_late == {j for j in visits if j in late or duplicates.get(j, " ").rsplit(" ", 1)[1] in late}

    for ref in cancelled:
        if ref.startswith("MZ"):
            assert ref not in visits
            assert {r[0] for r in _rows(system, "SELECT SFZT FROM MZ_SF WHERE JZID = :j", j=ref)} <= {"2"}
        else:
            assert _rows(system, "SELECT ZT FROM ZY_RYDJ WHERE ZYID = :z", z=ref) == [("9",)]
    updates = _defects(system, "correction_update")
    assert updates
    for zdid, detail in updates.items():
        assert _rows(system, "SELECT ZDDM FROM MZ_ZDJL WHERE ZDID = :z", z=zdid) == [(detail.rsplit(">", 1)[1],)]

    dictionary = _ids(system, "SELECT JBBM FROM ZD_JBZD")
    outside = {
        r[0]
        for t in ("MZ_ZDJL", "ZY_ZDJL")
        for r in _rows(system, f"SELECT ZDID, ZDDM FROM {t}")
        if r[1] not in dictionary
    }
    # codes outside 本院疾病字典: unknown local codes, and the retired dictionary's dialect (J189 for J18.9)
    unknown = set(_defects(system, "unknown_local_code")) | set(_defects(system, "local_code_dialect"))
    assert outside and outside <= unknown
    # Logged but no longer visible: recoded by a 诊断更正, or deleted with a cancelled visit (ZDID = JZID + nn).
    assert not {z for z in unknown - outside if z not in updates and z[:15] not in cancelled}
    assert not ({code for code, _ in DIAGNOSES.values()} - dictionary)

    inverted = {r[0] for r in _rows(system, "SELECT ZYID FROM ZY_CYJL WHERE CYSJ < RYSJ")}
    assert inverted and inverted == set(_defects(system, "discharge_before_admission"))
    drift_day = DIRTY["schema_drift_day"]
    assert set(_defects(system, "schema_drift")) == {DRIFT_COLUMN}
    assert all((value is not None) == (at.date() >= drift_day) for _, at, _, value in visits.values())


def test_rewriting_a_day_changes_nothing(history):
    system, activities = history
    before = _dump(system)
    assert system.write_day(activities[-1]) == {}
    assert system.write_day(activities[0]) == {}
    assert _dump(system) == before


def test_a_day_replayed_after_a_crash_adds_no_rows(small_world):
    """Crash after the source commit but before the answer key flush: the re-run converges to the same rows."""
    system = _renderer(small_world, "test_rmyy_his_crash", DIRTY)
    for k in range(3):
        system.write_day(busy_day(small_world, DAY0 + timedelta(days=k)))
    before = _dump(system)
    last = DAY0 + timedelta(days=2)
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        new = [r[0] for r in _rows(system, "SELECT BRID FROM GH_BRJBXX WHERE DATE(JDSJ) = :d", d=last)]
        params = {"s": system.source_system, "d": last, "b": new}
        conn.execute(sa.text("DELETE FROM system_day WHERE source_system = :s AND day = :d"), params)
        conn.execute(sa.text("DELETE FROM defect_log WHERE source_system = :s AND day = :d"), params)
        conn.execute(
            sa.text("DELETE FROM patient_truth WHERE source_system = :s AND local_patient_id = ANY(:b)"), params
        )
    restarted = type(system)(small_world, system.config)  # a crash ends the process
    restarted.write_day(busy_day(small_world, last))
    assert _dump(system) == before
    assert answer_key.last_written_day(system.source_system) == last


def test_same_seed_gives_identical_rows(small_world):
    dumps = []
    for _ in range(2):
        system = _renderer(small_world, "test_rmyy_his_seed", DIRTY)
        for k in range(3):  # the third day applies a 诊断更正
            system.write_day(busy_day(small_world, DAY0 + timedelta(days=k)))
        dumps.append(_dump(system))
    assert dumps[0] == dumps[1]
    assert sum(len(rows) for rows in dumps[0].values()) > 1000
