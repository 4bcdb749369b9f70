"""The file-based sources: 妇幼保健院 daily GBK exports, the monthly 全员人口 register, the 医保 settlement file.

Each test renders hand-made days (conftest.make_day plus births, obstetric visits and settlements) into a
temporary inbox under a test-only source_system name, whose answer-key rows are removed before and after.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.events import (
    Birth,
    Charge,
    Correction,
    DayActivity,
    Diagnosis,
    Encounter,
    InsuranceSettlement,
    Person,
)
from simulator.systems.fy_files import FyFiles, vendor_icd
from simulator.systems.register_files import AGE_BANDS, InsuranceSettlements, PopulationRegister
from simulator.world import TOWNSHIPS, World, issue_id_number
from tests.simulator.conftest import SMALL_CONFIG, make_day

FY = "410182003"
RMYY = "410182001"
NOV = [date(2026, 11, d) for d in range(1, 31)]
TEST_SYSTEMS = ("test_fy_files", "test_population_register", "test_yb_settlement")
FY_NAME = re.compile(r"^FYBJY_(MZJZ|CSDJ|YCFSF)_(\d{8})(_XG)?(_1)?\.csv$")
CLEAN = {
    "late_submission": 0,
    "duplicate_file": 0,
    "duplicate_row": 0,
    "unknown_local_code": 0,
    "re_registration": 0,
    "identity_dirt": {"missing_id_number": 0, "address_variant": 0},
}


def _truth(sql: str, **params: Any) -> list:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _clear_truth() -> None:
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        for table in ("patient_truth", "defect_log", "encounter_truth", "system_day"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = ANY(:s)"), {"s": list(TEST_SYSTEMS)})


@pytest.fixture
def truth():
    answer_key.create_schema()
    _clear_truth()
    yield
    _clear_truth()


def _renamed(cls: type, owner: str) -> type:
    """The system under a test-only name (its own answer-key rows), still owning the real institutions."""

    class Renamed(cls):
        source_system = f"test_{cls.source_system}"

        def __init__(self, world: World, config: dict[str, Any]) -> None:
            super().__init__(world, config)
            self.institutions = {i.org_code: i for i in world.institutions if i.source_system == owner}

    return Renamed


def _system(cls: type, world: World, root: Path, **config: Any) -> Any:
    system = _renamed(cls, "fy_files" if cls is FyFiles else "")(
        world, {"inbox_dir": root / "inbox", "outbox_dir": root / "outbox", **config}
    )
    system.create_schema()
    return system


def _rows(path: Path, encoding: str = "gbk", delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode(encoding), newline=""), delimiter=delimiter))


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _women(world: World, day: date) -> list[Person]:
    return [
        p
        for p in sorted(world.people.values(), key=lambda p: p.resident_id)
        if p.sex == 2 and 20 <= (day - p.birth_date).days // 365 <= 40
    ]


def fy_day(world: World, day: date) -> DayActivity:
    """make_day plus what a 妇幼保健院 sees: a prenatal visit, a delivery and a birth (one more birth elsewhere)."""
    activity = make_day(world, day)
    mother, other = _women(world, day)[:2]
    doctor = world.doctors(FY)[1].staff_id
    at = datetime.combine(day, time(9, 15))
    activity.encounters.append(
        Encounter(
            f"OB{day:%Y%m%d}",
            mother.resident_id,
            FY,
            "outpatient",
            "0402",
            "妇女保健科",
            doctor,
            at,
            diagnoses=[Diagnosis("Z34.900", "正常妊娠监督", True)],
            charges=[Charge("110200001", "挂号费", "挂号", 6.0)],
        )
    )
    activity.encounters.append(
        Encounter(
            f"D{day:%Y%m%d}",
            mother.resident_id,
            FY,
            "inpatient",
            "0401",
            "妇产科",
            doctor,
            at - timedelta(hours=6),
            end_at=at + timedelta(days=3),
            diagnoses=[Diagnosis("O80.000", "单胎顺产", True)],
        )
    )
    for n, (parent, org) in enumerate(((mother, FY), (other, RMYY)), 1):
        child = Person(
            100_000 + day.day * 10 + n,
            parent.household_id,
            parent.name[0] + "子浩",
            n,
            day,
            parent.ethnicity,
            issue_id_number(random.Random(n), "410182", day, n, set()),
            parent.phone,
            f"YB410182{100_000 + day.day * 10 + n:010d}",
            parent.township,
            parent.village,
            parent.address,
        )
        activity.new_people.append(child)
        activity.births.append(
            Birth(
                f"B{day:%Y%m%d}{n}",
                parent.resident_id,
                child.resident_id,
                org,
                at - timedelta(hours=2),
                3200 + n * 10,
                n,
            )
        )
    return activity


def _fy_truth(system: FyFiles) -> tuple[dict[str, int], dict[str, str]]:
    patients = {
        r.local_patient_id: r.resident_id
        for r in _truth(
            "SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s", s=system.source_system
        )
    }
    encounters = {
        r.local_encounter_id: r.encounter_uid
        for r in _truth(
            "SELECT local_encounter_id, encounter_uid FROM encounter_truth WHERE source_system = :s",
            s=system.source_system,
        )
    }
    return patients, encounters


def _defects(system: Any, defect: str | None = None) -> list:
    return _truth(
        "SELECT table_name, record_id, defect, detail, day FROM defect_log WHERE source_system = :s "
        "AND (CAST(:d AS text) IS NULL OR defect = :d) ORDER BY 1, 2",
        s=system.source_system,
        d=defect,
    )


# --- 妇幼保健院 ---------------------------------------------------------------------------------------
def test_fy_files_are_gbk_vendor_files_that_reconcile_with_the_events(truth, small_world, tmp_path):
    system = _system(FyFiles, small_world, tmp_path, **CLEAN)
    activity = fy_day(small_world, NOV[1])
    counts = system.write_day(activity)
    files = _listing(tmp_path / "inbox")
    assert sorted(files) == ["FYBJY_CSDJ_20261102.csv", "FYBJY_MZJZ_20261102.csv", "FYBJY_YCFSF_20261102.csv"]
    for name, data in files.items():
        assert FY_NAME.match(name)
        assert data.count(b"\n") == data.count(b"\r\n") > 1
        data.decode("gbk")
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
    assert not list((tmp_path / "inbox").glob(".*")), "no temporary file is left behind"

    visits = [e for e in activity.encounters if e.org_code == FY and e.kind != "inpatient"]
    mzjz = _rows(tmp_path / "inbox" / "FYBJY_MZJZ_20261102.csv")
    csdj = _rows(tmp_path / "inbox" / "FYBJY_CSDJ_20261102.csv")
    ycfsf = _rows(tmp_path / "inbox" / "FYBJY_YCFSF_20261102.csv")
    assert counts == {"FYBJY_MZJZ": len(visits), "FYBJY_CSDJ": 1, "FYBJY_YCFSF": 2}
    assert (len(mzjz), len(csdj), len(ycfsf)) == (len(visits), 1, 2)

    patients, encounters = _fy_truth(system)
    by_uid = {e.encounter_uid: e for e in activity.encounters}
    for row in mzjz:
        visit = by_uid[encounters[row["就诊流水号"]]]
        assert patients[row["患者编号"]] == visit.resident_id
        assert row["诊断编码"] == vendor_icd(visit.diagnoses[0].icd_code) and "." not in row["诊断编码"][4:]
        assert row["性别"] in ("男", "女") and re.fullmatch(r"\d{4}/\d{2}/\d{2}", row["出生日期"])
        assert row["就诊类型"] == {"outpatient": "门诊", "emergency": "急诊"}[visit.kind]
        assert row["科室编码"] != visit.department_code and row["医生工号"][0] == "Y"
    assert {r["诊断编码"] for r in mzjz} >= {"I10", "Z34.9"}

    birth = next(b for b in activity.births if b.org_code == FY)
    row = csdj[0]
    assert patients[row["母亲患者编号"]] == birth.mother_id and patients[row["新生儿患者编号"]] == birth.child_id
    assert encounters[row["出生登记号"]] == birth.birth_uid
    assert row["出生日期"] == f"{birth.at:%Y年%m月%d日}" and row["新生儿姓名"].endswith("之子")
    assert row["新生儿性别"] == "男" and row["出生体重(克)"] == str(birth.weight_g)

    prenatal, delivery = ycfsf
    assert (prenatal["随访类别"], delivery["随访类别"]) == ("产前检查", "分娩")
    assert by_uid[encounters[prenatal["就诊流水号"]]].encounter_uid == f"OB{NOV[1]:%Y%m%d}"
    assert encounters[delivery["随访编号"]] == f"D{NOV[1]:%Y%m%d}" and not delivery["就诊流水号"]
    assert prenatal["患者编号"] == delivery["患者编号"] == row["母亲患者编号"]
    every_patient = (
        {r["患者编号"] for r in mzjz + ycfsf} | {r["母亲患者编号"] for r in csdj} | {r["新生儿患者编号"] for r in csdj}
    )
    assert every_patient <= set(patients)


def test_late_and_resent_files_arrive_exactly_when_logged(truth, small_world, tmp_path):
    system = _system(FyFiles, small_world, tmp_path, **{**CLEAN, "late_submission": 0.4, "duplicate_file": 0.4})
    days = NOV[1:8]
    seen: dict[date, set[str]] = {}
    for day in days:
        system.write_day(fy_day(small_world, day))
        seen[day] = set(_listing(tmp_path / "inbox"))
    late = {r.record_id for r in _defects(system, "late_submission")}
    resent = {r.record_id for r in _defects(system, "duplicate_submission")}
    assert late and resent and len(late) < 3 * len(days)
    for day in days:
        for kind in ("MZJZ", "CSDJ", "YCFSF"):
            name = f"FYBJY_{kind}_{day:%Y%m%d}.csv"
            due = day + timedelta(days=2 if name in late else 0)
            for d in days:
                assert (name in seen[d]) == (d >= due), (name, d)
            copy = name.replace(".csv", "_1.csv")
            for d in days:
                assert (copy in seen[d]) == (copy in resent and d >= due + timedelta(days=1)), (copy, d)
    for copy in resent & set(seen[days[-1]]):
        assert (tmp_path / "inbox" / copy).read_bytes() == (tmp_path / "inbox" / copy.replace("_1", "")).read_bytes()


def test_corrections_arrive_as_xg_files(truth, small_world, tmp_path):
    system = _system(FyFiles, small_world, tmp_path, **CLEAN)
    first = fy_day(small_world, NOV[1])
    system.write_day(first)
    fy_visits = [e for e in first.encounters if e.org_code == FY and e.kind != "inpatient"]
    second = fy_day(small_world, NOV[2])
    update_at, cancel_at = datetime(2026, 11, 3, 10, 5, 7), datetime(2026, 11, 3, 11, 0, 0)
    second.corrections = [
        Correction(fy_visits[0].encounter_uid, "update", update_at, "诊断更正"),
        Correction(fy_visits[1].encounter_uid, "cancel", cancel_at, "退费"),
        Correction("E-not-ours", "cancel", cancel_at, "退费"),
    ]
    counts = system.write_day(second)
    assert counts["FYBJY_MZJZ_XG"] == 2
    original = {r["就诊流水号"]: r for r in _rows(tmp_path / "inbox" / "FYBJY_MZJZ_20261102.csv")}
    xg = _rows(tmp_path / "inbox" / "FYBJY_MZJZ_20261103_XG.csv")
    assert [r["操作类型"] for r in xg] == ["修改", "作废"]
    _, encounters = _fy_truth(system)
    assert [encounters[r["就诊流水号"]] for r in xg] == [fy_visits[0].encounter_uid, fy_visits[1].encounter_uid]
    updated, cancelled = xg
    assert updated["诊断编码"] != original[updated["就诊流水号"]]["诊断编码"]
    assert updated["最后修改时间"] == "2026/11/03 10:05:07" and cancelled["修改原因"] == "退费"
    assert {k: v for k, v in cancelled.items() if k not in ("操作类型", "修改原因", "最后修改时间")} == {
        k: v for k, v in original[cancelled["就诊流水号"]].items() if k != "最后修改时间"
    }
    logged = {(r.record_id, r.defect) for r in _defects(system) if r.defect.startswith("correction")}
    assert logged == {(updated["就诊流水号"], "correction_update"), (cancelled["就诊流水号"], "correction_cancel")}


def test_dirt_in_fy_files_matches_the_answer_key(truth, small_world, tmp_path):
    dirt = {
        "late_submission": 0,
        "duplicate_file": 0,
        "duplicate_row": 0.3,
        "unknown_local_code": 0.4,
        "re_registration": 0.5,
        "identity_dirt": {"missing_id_number": 0.3, "homophone": 0.3},
    }
    system = _system(FyFiles, small_world, tmp_path, **dirt)
    for day in NOV[1:4]:
        system.write_day(fy_day(small_world, day))
    mzjz = [r for day in NOV[1:4] for r in _rows(tmp_path / "inbox" / f"FYBJY_MZJZ_{day:%Y%m%d}.csv")]
    patients, _ = _fy_truth(system)
    ids = [r["就诊流水号"] for r in mzjz]
    repeated = {i for i in ids if ids.count(i) == 2}
    assert repeated and repeated == {
        r.record_id for r in _defects(system, "duplicate_submission") if r.table_name == "FYBJY_MZJZ"
    }
    unknown = {r.record_id for r in _defects(system, "unknown_local_code")}
    assert unknown and unknown == {r["就诊流水号"] for r in mzjz if r["诊断编码"].startswith("ZDY")}
    missing = {r.record_id for r in _defects(system, "missing_id_number")}
    assert missing == {r["患者编号"] for r in mzjz if not r["身份证号"]}
    for row in mzjz:
        if row["身份证号"]:
            assert small_world.people[patients[row["患者编号"]]].id_number == row["身份证号"]
    re_registered = _defects(system, "re_registration")
    assert re_registered
    for r in re_registered:
        assert patients[r.record_id] == patients[r.detail.removeprefix("also ")]


def test_rerunning_a_day_is_a_noop_and_rendering_is_reproducible(truth, small_world, tmp_path):
    dirt = {
        "late_submission": 0.3,
        "duplicate_file": 0.3,
        "duplicate_row": 0.05,
        "unknown_local_code": 0.2,
        "re_registration": 0.3,
    }
    first = _system(FyFiles, small_world, tmp_path / "a", **dirt)
    activities = [fy_day(small_world, day) for day in NOV[1:5]]
    for activity in activities:
        first.write_day(activity)
    before = _listing(tmp_path / "a" / "inbox")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "inbox").iterdir()}
    assert first.write_day(activities[0]) == {} and first.write_day(activities[-1]) == {}
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "inbox").iterdir()} == stamps
    # A crash after the answer key was flushed but before the day was marked: the re-run writes the same bytes.
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        conn.execute(
            sa.text("DELETE FROM system_day WHERE source_system = :s AND day = :d"),
            {"s": first.source_system, "d": activities[-1].day},
        )
    assert first.write_day(activities[-1])
    assert _listing(tmp_path / "a" / "inbox") == before
    # Same seed, empty answer key, another inbox: identical files, delivered and held.
    _clear_truth()
    second = _system(FyFiles, small_world, tmp_path / "b", **dirt)
    for activity in activities:
        second.write_day(activity)
    assert _listing(tmp_path / "b" / "inbox") == before
    held = [
        {p.relative_to(tmp_path / root): p.read_bytes() for p in (tmp_path / root / "outbox").rglob("*.csv")}
        for root in ("a", "b")
    ]
    assert held[0] and held[0] == held[1]


# --- 全员人口 register ----------------------------------------------------------------------------------
def _register_world(small_world: World) -> World:
    """A copy of the small world with a death long ago, a death and a birth on the last day of November."""
    world = World(SMALL_CONFIG)
    world.people = {rid: replace(p) for rid, p in small_world.people.items()}
    adults = [p for p in world.people.values() if p.birth_date.year < 1980]
    adults[0].death_date = date(2026, 9, 1)
    adults[1].death_date = date(2026, 11, 30)
    mother = _women(world, date(2026, 11, 30))[0]
    world.people[9999] = replace(
        mother,
        resident_id=9999,
        name=mother.name[0] + "诺",
        birth_date=date(2026, 11, 30),
        id_number=issue_id_number(random.Random(1), "410182", date(2026, 11, 30), 2, set()),
        death_date=None,
    )
    return world


def test_population_register_lists_the_living_with_denominators(truth, small_world, tmp_path):
    world = _register_world(small_world)
    register = _system(PopulationRegister, world, tmp_path, lag_rate=0.0)
    assert register.write_day(DayActivity(date(2026, 11, 30))) == {}
    assert not list((tmp_path / "inbox").iterdir())
    counts = register.write_day(DayActivity(date(2026, 12, 1)))
    rows_file = tmp_path / "inbox" / "QYRK_410182_202611.csv"
    summary_file = tmp_path / "inbox" / "QYRK_410182_202611_HZ.csv"
    assert sorted(_listing(tmp_path / "inbox")) == [rows_file.name, summary_file.name]
    for path in (rows_file, summary_file):
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")
    rows, summary = _rows(rows_file), _rows(summary_file)
    living = {p.id_number for p in world.people.values() if p.death_date is None or p.death_date > date(2026, 11, 30)}
    assert {r["公民身份号码"] for r in rows} == living and len(rows) == len(living)
    assert (
        counts
        == {"QYRK": len(rows), "QYRK_HZ": len(TOWNSHIPS) * 2 * len(AGE_BANDS)}
        == {"QYRK": len(rows), "QYRK_HZ": len(summary)}
    )
    assert sum(int(r["常住人口数"]) for r in summary) == len(rows)
    assert sum(int(r["户籍人口数"]) for r in summary) == sum(r["人口类别"] == "户籍" for r in rows) < len(rows)
    assert sum(int(r["常住人口数"]) for r in summary if r["年龄组"] == "0-4岁" and r["性别"] == "女") == sum(
        1 for r in rows if r["性别"] == "女" and r["出生日期"] >= "20211201"
    )
    patients = {
        r.local_patient_id: r.resident_id
        for r in _truth(
            "SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s", s=register.source_system
        )
    }
    by_id = {p.id_number: p.resident_id for p in world.people.values()}
    assert all(patients[r["公民身份号码"]] == by_id[r["公民身份号码"]] for r in rows)


def test_population_register_lags_recent_births_and_deaths(truth, small_world, tmp_path):
    world = _register_world(small_world)
    register = _system(PopulationRegister, world, tmp_path, lag_rate=1.0, max_lag_days=30)
    register.write_day(DayActivity(date(2026, 12, 1)))
    listed = {r["公民身份号码"] for r in _rows(tmp_path / "inbox" / "QYRK_410182_202611.csv")}
    newborn, died_recently = (
        world.people[9999],
        next(p for p in world.people.values() if p.death_date == date(2026, 11, 30)),
    )
    died_long_ago = next(p for p in world.people.values() if p.death_date == date(2026, 9, 1))
    assert newborn.id_number not in listed and died_recently.id_number in listed
    assert died_long_ago.id_number not in listed
    lagged = {r.record_id: r.detail for r in _defects(register, "late_submission")}
    assert lagged[newborn.id_number].startswith("birth") and lagged[died_recently.id_number].startswith("death")
    living = {p.id_number for p in world.people.values() if p.death_date is None or p.death_date > date(2026, 11, 30)}
    births = {i for i, d in lagged.items() if d.startswith("birth")}
    deaths = {i for i, d in lagged.items() if d.startswith("death")}
    assert listed == (living - births) | deaths


# --- 医保 settlements ----------------------------------------------------------------------------------
def _settlement_day(world: World, day: date) -> DayActivity:
    """make_day with settlements: same-day outpatient, an inpatient stay settled at discharge, one out of county."""
    activity = make_day(world, day)
    outpatient = [e for e in activity.encounters if e.kind == "outpatient" and e.org_code in (FY, RMYY, "410182101")]
    inpatient = next(e for e in activity.encounters if e.kind == "inpatient" and e.org_code == RMYY)
    for n, e in enumerate(outpatient):
        settled = (
            e.start_at + timedelta(minutes=50) if n else datetime.combine(day, time(23, 50)) + timedelta(minutes=20)
        )  # the first visit settles after midnight: it belongs to the next day's file
        activity.settlements.append(
            InsuranceSettlement(
                f"Y{day:%Y%m%d}{n:03d}",
                e.resident_id,
                e.org_code,
                "",
                e.kind,
                None,
                None,
                settled,
                e.total_yuan,
                round(e.total_yuan * 0.4, 2),
                e.encounter_uid,
            )
        )
    activity.settlements.append(
        InsuranceSettlement(
            f"Y{day:%Y%m%d}IP",
            inpatient.resident_id,
            RMYY,
            "",
            "inpatient",
            day,
            day + timedelta(days=2),
            datetime.combine(day + timedelta(days=2), time(10)),
            4800.5,
            3120.33,
            inpatient.encounter_uid,
        )
    )
    activity.settlements.append(
        InsuranceSettlement(
            f"W{day:%Y%m%d}",
            outpatient[0].resident_id,
            "",
            "郑州大学第一附属医院",
            "inpatient",
            day - timedelta(days=9),
            day,
            datetime.combine(day, time(9, 30)),
            23456.78,
            12901.23,
            "",
        )
    )
    return activity


def test_settlement_file_is_pipe_separated_utf8_with_out_of_county_care(truth, small_world, tmp_path):
    system = _system(InsuranceSettlements, small_world, tmp_path, missing_id_number=0.5)
    activities = [_settlement_day(small_world, day) for day in NOV[1:5]]
    for activity in activities:
        system.write_day(activity)
    names = sorted(_listing(tmp_path / "inbox"))
    assert names == ["YBDDJG_410182.txt"] + [f"YBJS_410182_{d:%Y%m%d}.txt" for d in NOV[1:5]]
    raw = (tmp_path / "inbox" / names[1]).read_bytes()
    assert b"\r" not in raw and raw.decode("utf-8").splitlines()[0].startswith("结算流水号|医保号|身份证号|姓名|")
    codes = {r["医疗机构编码"]: r["医疗机构名称"] for r in _rows(tmp_path / "inbox" / names[0], "utf-8", "|")}
    assert len(codes) == 309 and all(re.fullmatch(r"H41018200\d{3}", c) for c in codes)

    files = {d: _rows(tmp_path / "inbox" / f"YBJS_410182_{d:%Y%m%d}.txt", "utf-8", "|") for d in NOV[1:5]}
    all_settlements = [s for a in activities for s in a.settlements]
    due = {d: [s for s in all_settlements if s.settled_at.date() == d] for d in NOV[1:5]}
    for d, rows in files.items():
        assert len(rows) == len(due[d]) and all(r["结算时间"].startswith(f"{d:%Y-%m-%d}") for r in rows)
        assert [r["结算流水号"] for r in rows] == [f"410182{d:%Y%m%d}{n:06d}" for n in range(1, len(rows) + 1)]
    rows = [r for d in NOV[1:5] for r in files[d]]
    outside = [r for r in rows if r["就医地"] == "县外"]
    assert len(outside) == 4 and {r["医疗机构名称"] for r in outside} == {"郑州大学第一附属医院"}
    assert all(r["医疗机构编码"] not in codes and r["医疗类别"] == "住院" for r in outside)
    inside = [r for r in rows if r["就医地"] == "县内"]
    stays = [r for r in inside if r["医疗类别"] == "住院"]
    assert [r["入院日期"] for r in stays] == ["2026-11-02", "2026-11-03"]  # settled at discharge, 2 days later

    patients = {
        r.local_patient_id: r.resident_id
        for r in _truth(
            "SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s", s=system.source_system
        )
    }
    encounters = {
        r.local_encounter_id: r.encounter_uid
        for r in _truth(
            "SELECT local_encounter_id, encounter_uid FROM encounter_truth WHERE source_system = :s",
            s=system.source_system,
        )
    }
    by_truth = {s.encounter_uid or s.settlement_uid: s for s in all_settlements}
    for row in rows:
        settlement = by_truth[encounters[row["结算流水号"]]]
        person = small_world.people[settlement.resident_id]
        assert patients[row["医保号"]] == person.resident_id and row["医保号"] == person.insurance_no
        assert row["身份证号"] in ("", person.id_number) and row["总费用"] == f"{settlement.total_yuan:.2f}"
        if settlement.org_code:
            assert codes[row["医疗机构编码"]] == row["医疗机构名称"] == small_world.by_code[settlement.org_code].name
    blank = {r["结算流水号"] for r in rows if not r["身份证号"]}
    assert blank and blank == {r.record_id for r in _defects(system, "missing_id_number")}
    without_id = {r["医保号"] for r in rows if r["结算流水号"] in blank}
    assert all(not r["身份证号"] for r in rows if r["医保号"] in without_id), "missing for the enrolee, not per bill"


def test_cancelled_visits_are_reversed_and_reruns_change_nothing(truth, small_world, tmp_path):
    system = _system(InsuranceSettlements, small_world, tmp_path)
    first = _settlement_day(small_world, NOV[1])
    system.write_day(first)
    original = _rows(tmp_path / "inbox" / "YBJS_410182_20261102.txt", "utf-8", "|")
    settled = next(s for s in first.settlements if s.org_code == FY and s.settled_at.date() == NOV[1])
    second = _settlement_day(small_world, NOV[2])
    second.corrections = [Correction(settled.encounter_uid, "cancel", datetime(2026, 11, 3, 9, 1, 2), "退费")]
    system.write_day(second)
    reversal = next(
        r for r in _rows(tmp_path / "inbox" / "YBJS_410182_20261103.txt", "utf-8", "|") if r["结算类型"] == "冲销"
    )
    target = next(r for r in original if r["结算流水号"] == reversal["原结算流水号"])
    assert target["总费用"] == f"{settled.total_yuan:.2f}" and reversal["总费用"] == f"{-settled.total_yuan:.2f}"
    assert reversal["结算时间"] == "2026-11-03 09:01:02" and reversal["医保号"] == target["医保号"]
    assert {(r.record_id, r.defect) for r in _defects(system, "correction_cancel")} == {
        (target["结算流水号"], "correction_cancel")
    }
    before = _listing(tmp_path / "inbox")
    assert system.write_day(first) == {} and system.write_day(second) == {}
    assert _listing(tmp_path / "inbox") == before
