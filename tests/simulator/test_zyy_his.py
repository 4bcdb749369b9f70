"""荥阳市中医院 HIS renderer (simulator/systems/zyy_his.py) on hand-made days, written to a scratch database.

The system runs under its own answer-key name (``zyy_his_test``) and database (``zyy_his_test``), both reset
here, so the real ``zyy_his`` data and other systems' answer-key rows are never touched. Dirt rates are raised
so every kind of defect shows up in a few dozen encounters.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from simulator import answer_key, clinical
from simulator.connections import source_pg_engine
from simulator.events import (
    Charge,
    Correction,
    DayActivity,
    Diagnosis,
    Encounter,
    ExamReport,
    LabResult,
    Prescription,
    Surgery,
)
from simulator.systems.zyy_his import (
    DDL,
    DIAGNOSES,
    DRUGS,
    LIS_ITEMS,
    TZ,
    ZyyHis,
    vendor_diagnosis,
)
from simulator.tcm import SYNDROMES, TCM_DISEASES, TcmPractice
from simulator.world import World
from tests.simulator.conftest import make_day

SYSTEM = "zyy_his_test"
ZYY = "410182002"
DAY1 = date(2026, 11, 2)
DRIFT_DAY = DAY1 + timedelta(days=2)
CONFIG = {
    "database": "zyy_his_test",
    "unknown_local_code": 0.15,
    "discharge_before_admission": 0.3,
    "re_registration": 0.2,
    "schema_drift_day": DRIFT_DAY.isoformat(),
}
HERBAL_CLASS = "03"
# The activity engine's 中医 decisions, with more 中药饮片 than the county's default.
TCM = TcmPractice({"outpatient": 0.6, "inpatient": 0.95, "herbal_prescription": 0.5})


def _encounter(rng: random.Random, world: World, day: date, n: int) -> Encounter:
    """A 中医院 encounter with the clinical content and charges the activity engine would give it."""
    inpatient = n % 5 == 0
    kind = "inpatient" if inpatient else ("emergency" if n % 7 == 3 else "outpatient")
    residents = sorted(world.people)
    resident = residents[(n * 13 + day.toordinal() % 5) % 60]  # a small pool, so residents come back
    start = datetime.combine(day, time(8)) + timedelta(minutes=rng.randrange(600))
    if kind == "emergency":  # just after midnight, or late enough for its lab report to arrive tomorrow
        start = datetime.combine(day, time(23, 50) if n % 2 else time(0, 1))
    if inpatient:
        code, name, _ = rng.choice(clinical.INPATIENT_DIAGNOSES)
    else:
        code, name, _, _ = rng.choice(clinical.COMMON_DIAGNOSES)
    diagnoses = [Diagnosis(code, name, True)] + ([Diagnosis(*clinical.HYPERTENSION, False)] if n % 3 == 0 else [])
    nights = rng.randrange(1, 3) if inpatient else 0
    encounter = Encounter(
        f"T{day:%Y%m%d}{ZYY}{n:05d}",
        resident,
        ZYY,
        kind,
        "5001",
        "中医内科",
        f"{ZYY}医{n % 8:03d}",
        start,
        end_at=start + timedelta(days=nights, hours=2) if inpatient else None,
        bed_no="007" if inpatient else "",
        discharge_status="好转" if inpatient else "",
        diagnoses=diagnoses,
        insured=n % 4 != 1,
    )
    charges = [Charge("110200001", "挂号费", "挂号", 6.0)]
    for diagnosis in diagnoses:
        for drug_code, atc, drug, spec, price in clinical.DRUGS.get(diagnosis.icd_code, [])[:1]:
            quantity = rng.choice((1, 2, 3)) * max(1, nights)
            encounter.prescriptions.append(Prescription(drug_code, atc, drug, spec, quantity, price))
            charges.append(Charge(drug_code, drug, "药品", round(quantity * price, 2)))
    if inpatient or n % 2:
        for loinc, item, unit, low, high, mean, sd in rng.sample(clinical.LABS, 2):
            value = round(max(0.1, rng.gauss(mean, sd)), 1)
            encounter.labs.append(LabResult(loinc, item, value, unit, f"{low}-{high}", not low <= value <= high))
        charges.append(Charge("250101001", "检验费", "化验", 40.0))
    if inpatient or n % 4 == 2:
        encounter.exams.append(ExamReport(*rng.choice(clinical.EXAMS)))
        charges.append(Charge("210102001", "影像检查费", "检查", 120.0))
    if inpatient:
        charges += [
            Charge("110900001", "床位费", "床位", 30.0 * nights),
            Charge("120100001", "护理费", "治疗", 25.0 * nights),
        ]
        if n % 10 == 0:
            encounter.surgeries.append(Surgery("47.0901", "腹腔镜阑尾切除术", start + timedelta(hours=5), "II", "甲"))
            charges.append(Charge("47.0901", "腹腔镜阑尾切除术", "手术", 3200.0))
    encounter.charges = charges
    TCM.treat(random.Random(encounter.encounter_uid), encounter)  # its own stream, as in the activity engine
    return encounter


def zyy_day(world: World, day: date, extra: int = 30) -> DayActivity:
    """make_day's county day plus ``extra`` 中医院 encounters (every fifth one an admission of 1-2 nights)."""
    activity = make_day(world, day)
    rng = random.Random(f"zyy-test:{day}")
    activity.encounters += [_encounter(rng, world, day, n) for n in range(1, extra + 1)]
    return activity


def _own(activity: DayActivity, inpatient: bool | None = None) -> list[Encounter]:
    return [
        e
        for e in activity.encounters
        if e.org_code == ZYY and (inpatient is None or (e.kind == "inpatient") == inpatient)
    ]


def _query(sql: str, **params: Any) -> list[sa.Row]:
    with source_pg_engine(CONFIG["database"]).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _truth(sql: str) -> list[sa.Row]:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        return conn.execute(sa.text(sql), {"s": SYSTEM}).all()


def _system(world: World) -> ZyyHis:
    system = ZyyHis(world, CONFIG)
    system.source_system = SYSTEM  # keeps the institutions of zyy_his, under a scratch answer-key name
    return system


@pytest.fixture(scope="module")
def written(small_world) -> dict[str, Any]:
    """Eleven days written in order: four busy ones (corrections on day 2, drift from day 3), then quiet ones."""
    answer_key.create_schema()
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        for table in ("patient_truth", "defect_log", "encounter_truth", "system_day"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = :s"), {"s": SYSTEM})
    system = _system(small_world)
    system.create_schema(reset=True)
    days = [zyy_day(small_world, DAY1 + timedelta(days=i)) for i in range(4)]
    day1_outpatients = _own(days[0], inpatient=False)
    cancelled, updated = day1_outpatients[0], day1_outpatients[1]
    days[1].corrections += [
        Correction(cancelled.encounter_uid, "cancel", datetime.combine(days[1].day, time(10)), "作废"),
        Correction(updated.encounter_uid, "update", datetime.combine(days[1].day, time(11)), "诊断更正"),
    ]
    # Then quiet days until make_day's own 8-day admissions of the first days have ended.
    days += [make_day(small_world, DAY1 + timedelta(days=i)) for i in range(4, 11)]
    commits = {}
    for activity in days:
        start = datetime.combine(activity.day, time(), tzinfo=TZ)
        before = _older_rows(start)
        assert system.write_day(activity)
        latest = _query(" UNION ALL ".join(f"SELECT max(updated_at) FROM his.{t}" for t in DDL))
        commits[activity.day] = (before, _older_rows(start), max(r[0] for r in latest if r[0] is not None))
    return {"system": system, "days": days, "cancelled": cancelled, "updated": updated, "commits": commits}


def _older_rows(start: datetime) -> dict[str, int]:
    return {t: _query(f"SELECT count(*) FROM his.{t} WHERE updated_at < :s", s=start)[0][0] for t in DDL}


def _defects(defect: str) -> set[tuple[str, str]]:
    return {
        (r.table_name, r.record_id)
        for r in _truth(
            f"SELECT table_name, record_id FROM defect_log WHERE source_system = :s AND defect = '{defect}'"
        )
    }


def test_every_encounter_lands_in_its_table(written):
    encounters = [e for a in written["days"] for e in _own(a)]
    local = dict(_truth("SELECT encounter_uid, local_encounter_id FROM encounter_truth WHERE source_system = :s"))
    assert {e.encounter_uid for e in encounters} == set(local)
    registrations = {r[0] for r in _query("SELECT reg_id FROM his.op_reg")}
    admissions = {r[0] for r in _query("SELECT adm_no FROM his.ip_adm")}
    cancelled = local[written["cancelled"].encounter_uid]
    assert registrations == {local[e.encounter_uid] for e in encounters if e.kind != "inpatient"} - {cancelled}
    assert admissions == {local[e.encounter_uid] for e in encounters if e.kind == "inpatient"}
    # A stay ended by the last written day has its discharge and is marked 出院; a longer one is still 在院.
    last = written["days"][-1].day
    ended = {local[e.encounter_uid] for e in encounters if e.end_at and e.end_at.date() <= last}
    assert ended and ended != admissions
    assert {r[0] for r in _query("SELECT adm_no FROM his.ip_disch")} == ended
    assert dict(_query("SELECT adm_no, adm_status FROM his.ip_adm")) == {
        a: "2" if a in ended else "1" for a in admissions
    }
    western = _query("SELECT reg_id, count(*) FROM his.op_diag WHERE diag_class = 'W' GROUP BY reg_id")
    assert dict(western) == {
        local[e.encounter_uid]: len(e.diagnoses)
        for e in encounters
        if e.kind != "inpatient" and local[e.encounter_uid] != cancelled
    }
    labs = dict(_query("SELECT visit_no, count(*) FROM his.lis_result GROUP BY visit_no"))
    assert labs == {
        local[e.encounter_uid]: len(e.labs) for e in encounters if e.labs and local[e.encounter_uid] != cancelled
    }
    exams = dict(_query("SELECT visit_no, count(*) FROM his.pacs_report GROUP BY visit_no"))
    reporting = {r[0] for r in _query("SELECT visit_no FROM sim.pending WHERE tbl = 'pacs_report'")}  # tomorrow
    assert exams == {
        local[e.encounter_uid]: len(e.exams)
        for e in encounters
        if e.exams and local[e.encounter_uid] not in {cancelled} | reporting
    }
    opers = dict(_query("SELECT adm_no, count(*) FROM his.ip_oper GROUP BY adm_no"))
    assert opers == {local[e.encounter_uid]: len(e.surgeries) for e in encounters if e.surgeries}


def test_money_reconciles_with_the_events(written):
    """Charges (退费 rows aside), 中药饮片 included, equal the events' charges once every nightly row is posted."""
    local = dict(_truth("SELECT encounter_uid, local_encounter_id FROM encounter_truth WHERE source_system = :s"))
    posting = {r[0] for r in _query("SELECT visit_no FROM sim.pending")}
    expected = {
        local[e.encounter_uid]: e.total_yuan
        for a in written["days"]
        for e in _own(a)
        if local[e.encounter_uid] not in posting
    }
    assert any(v.startswith("ZY") for v in expected)
    fees = dict(_query("SELECT visit_no, sum(amount) FROM his.fee_detail WHERE ref_fee_id IS NULL GROUP BY visit_no"))
    assert {v: float(fees[v]) for v in expected} == pytest.approx(expected)
    # 中药饮片 are charged as prescribed: grams × price × 剂数.
    cancelled = local[written["cancelled"].encounter_uid]
    herbal = dict(
        _query(
            "SELECT o.visit_no, sum(i.qty * i.price * o.herb_doses) FROM his.rx_order o "
            "JOIN his.rx_item i USING (rx_no) WHERE o.rx_type = '3' GROUP BY o.visit_no"
        )
    )
    charged = dict(
        _query(
            f"SELECT visit_no, sum(amount) FROM his.fee_detail WHERE fee_class = '{HERBAL_CLASS}' "
            "AND ref_fee_id IS NULL AND visit_no <> :v GROUP BY visit_no",
            v=cancelled,
        )
    )
    assert herbal and {v: float(a) for v, a in herbal.items()} == pytest.approx(
        {v: float(a) for v, a in charged.items()}, abs=0.05
    )
    discharge_totals = dict(_query("SELECT adm_no, total_fee FROM his.ip_disch"))
    all_fees = dict(_query("SELECT visit_no, sum(amount) FROM his.fee_detail GROUP BY visit_no"))
    assert {a: float(t) for a, t in discharge_totals.items()} == pytest.approx(
        {a: float(all_fees[a]) for a in discharge_totals}
    )


def test_referential_integrity(written):
    visits = "SELECT reg_id FROM his.op_reg UNION SELECT adm_no FROM his.ip_adm"
    for table in ("rx_order", "lis_result", "pacs_report"):
        assert not _query(f"SELECT visit_no FROM his.{table} WHERE visit_no NOT IN ({visits})"), table
    # Money outlives a 作废 visit, but only as charges balanced by their 退费 rows.
    orphans = _query(
        f"SELECT visit_no, sum(amount) FROM his.fee_detail WHERE visit_no NOT IN ({visits}) GROUP BY visit_no"
    )
    assert orphans and all(total == 0 for _, total in orphans)
    for table in ("rx_order", "lis_result", "pacs_report", "fee_detail"):  # pat_id is not a declared reference
        assert not _query(f"SELECT pat_id FROM his.{table} WHERE pat_id NOT IN (SELECT pat_id FROM his.pat_master)")
    assert not _query("SELECT rx_no FROM his.rx_order WHERE rx_no NOT IN (SELECT rx_no FROM his.rx_item)")
    staying = "SELECT adm_no FROM his.ip_adm WHERE adm_status = '1'"
    assert not _query(f"SELECT tbl FROM sim.pending WHERE visit_no NOT IN ({staying})"), "parked rows left behind"


def test_codes_are_the_vendors_not_ours(written):
    assert {r[0] for r in _query("SELECT sex FROM his.pat_master")} >= {"M", "F"}
    sexes = {r[0] for r in _query("SELECT pat_id FROM his.pat_master WHERE sex NOT IN ('M', 'F', 'U')")}
    assert sexes and {("pat_master", p) for p in sexes} == {
        d for d in _defects("unknown_local_code") if d[0] == "pat_master"
    }
    vendor_codes = {code for code, _ in DIAGNOSES.values()}
    western = _query(
        "SELECT diag_id, diag_code FROM his.op_diag WHERE diag_class = 'W' UNION ALL "
        "SELECT diag_id, diag_code FROM his.ip_diag WHERE diag_class = 'W'"
    )
    assert {code for _, code in western} & {"I10.x00", "J06.900", "R51.x00"} == set()
    assert all(code in vendor_codes or code.startswith("ZDY") for _, code in western)
    tcm = _query(
        "SELECT diag_code, syn_code, syn_name FROM his.op_diag WHERE diag_class = 'Z' UNION ALL "
        "SELECT diag_code, syn_code, syn_name FROM his.ip_diag WHERE diag_class = 'Z'"
    )
    assert tcm and all(d in {v[0] for v in TCM_DISEASES.values()} and SYNDROMES[s][0] == n for d, s, n in tcm)
    drugs = {r[0] for r in _query("SELECT drug_code FROM his.rx_item")}
    assert all(code.startswith("YP") for code in drugs) and not drugs & set(DRUGS)
    assert {r[0] for r in _query("SELECT item_code FROM his.lis_result")} <= {v[0] for v in LIS_ITEMS.values()}
    assert {r[0] for r in _query("SELECT DISTINCT herb_doses FROM his.rx_order WHERE rx_type = '3'")} - {None}


def test_answer_key_covers_every_patient_record(written):
    truth = dict(_truth("SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s"))
    assert {r[0] for r in _query("SELECT pat_id FROM his.pat_master")} == set(truth)
    local = dict(_truth("SELECT local_encounter_id, encounter_uid FROM encounter_truth WHERE source_system = :s"))
    resident_of = {e.encounter_uid: e.resident_id for a in written["days"] for e in _own(a)}
    visits = _query("SELECT reg_id, pat_id FROM his.op_reg UNION ALL SELECT adm_no, pat_id FROM his.ip_adm")
    for visit, pat_id in visits:
        assert truth[pat_id] == resident_of[local[visit]]


def test_defects_logged_match_the_data(written):
    custom = {
        r[0]
        for r in _query(
            "SELECT diag_id FROM his.op_diag WHERE diag_code LIKE 'ZDY%' UNION ALL "
            "SELECT diag_id FROM his.ip_diag WHERE diag_code LIKE 'ZDY%'"
        )
    }
    logged = {r for t, r in _defects("unknown_local_code") if t in ("op_diag", "ip_diag")}
    cancelled_diags = {r for r in logged if r.startswith(_local(written["cancelled"].encounter_uid))}
    assert custom and custom == logged - cancelled_diags
    early = {
        r[0]
        for r in _query(
            "SELECT d.adm_no FROM his.ip_disch d JOIN his.ip_adm a USING (adm_no) "
            "WHERE to_timestamp(d.disch_date || d.disch_time, 'YYYYMMDDHH24MISS')::timestamp "
            "< a.adm_time"
        )
    }
    assert early and {("ip_disch", a) for a in early} == _defects("discharge_before_admission")
    missing = {r[0] for r in _query("SELECT pat_id FROM his.pat_master WHERE id_card_no = ''")}
    assert {("pat_master", p) for p in missing} == _defects("missing_id_number")
    truth = dict(_truth("SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s"))
    again = _truth("SELECT record_id, detail FROM defect_log WHERE source_system = :s AND defect = 're_registration'")
    assert again and all(truth[new] == truth[detail.removeprefix("also ")] for new, detail in again)


def _local(encounter_uid: str) -> str:
    return answer_key.local_encounter_ids(SYSTEM, [encounter_uid])[encounter_uid]


def test_corrections_delete_refund_and_update(written):
    cancelled = _local(written["cancelled"].encounter_uid)
    for table, column in (
        ("op_reg", "reg_id"),
        ("op_diag", "reg_id"),
        ("rx_order", "visit_no"),
        ("lis_result", "visit_no"),
        ("pacs_report", "visit_no"),
    ):
        assert not _query(f"SELECT 1 FROM his.{table} WHERE {column} = :v", v=cancelled), table
    refunds = _query(
        "SELECT r.amount, f.amount, r.refund_reason FROM his.fee_detail r "
        "JOIN his.fee_detail f ON f.fee_id = r.ref_fee_id WHERE r.visit_no = :v",
        v=cancelled,
    )
    assert refunds and all(r == -f and reason == "作废" for r, f, reason in refunds)
    assert len(refunds) == len(_query("SELECT 1 FROM his.fee_detail WHERE visit_no = :v AND amount > 0", v=cancelled))
    updated = _local(written["updated"].encounter_uid)
    main = _query(
        "SELECT diag_id, diag_code, updated_at FROM his.op_diag WHERE reg_id = :v AND main_flag = '1'", v=updated
    )[0]
    assert main.updated_at == datetime.combine(DAY1 + timedelta(days=1), time(11), tzinfo=TZ)
    assert _defects("correction_cancel") == {("op_reg", cancelled)}
    assert _defects("correction_update") == {("op_diag", main.diag_id)}
    (detail,) = _truth("SELECT detail FROM defect_log WHERE source_system = :s AND defect = 'correction_update'")
    assert detail[0] == f"main diagnosis -> {main.diag_code} (诊断更正)"
    original = written["updated"].diagnoses[0]
    assert main.diag_code != vendor_diagnosis(original.icd_code, original.name)[0]


def test_rows_never_arrive_before_their_commit_day(written):
    """Writing a day adds no row committed on an earlier or a later day (watermark collection relies on it)."""
    for day, (before, after, latest) in written["commits"].items():
        assert latest.astimezone(TZ).date() == day
        assert all(after[t] <= before[t] for t in DDL), day  # (a 作废 may delete older rows)
    discharged = {e.encounter_uid: e.end_at for a in written["days"] for e in _own(a, inpatient=True)}
    rows = _query("SELECT adm_no, updated_at FROM his.ip_disch")
    local = dict(_truth("SELECT local_encounter_id, encounter_uid FROM encounter_truth WHERE source_system = :s"))
    for adm_no, committed in rows:
        end = discharged[local[adm_no]]
        assert end <= committed.astimezone(TZ).replace(tzinfo=None)


def test_schema_drift_adds_a_column(written):
    by_day = _query("SELECT substr(reg_id, 3, 8) AS day, count(pay_channel) FROM his.op_reg GROUP BY 1 ORDER BY 1")
    assert [(d, n > 0) for d, n in by_day] == [(f"{a.day:%Y%m%d}", a.day >= DRIFT_DAY) for a in written["days"]]
    assert _defects("schema_drift") == {("op_reg", "pay_channel")}


def test_rewriting_a_day_changes_nothing(written):
    before = _query("SELECT count(*), max(updated_at) FROM his.fee_detail")
    assert written["system"].write_day(written["days"][0]) == {}
    assert _query("SELECT count(*), max(updated_at) FROM his.fee_detail") == before


def test_same_seed_same_rows(small_world):
    activity = zyy_day(small_world, DAY1)
    first, second = (_system(small_world).render_day(activity, {}) for _ in range(2))
    assert first.rows == second.rows and first.pending == second.pending
    assert first.key.patients == second.key.patients and first.key.defects == second.key.defects
    other = World({**small_world.config, "seed": small_world.seed + 1})
    other.people = small_world.people
    assert _system(other).render_day(activity, {}).rows != first.rows


def _near(hits: int, trials: int, rate: float) -> bool:
    """Within four standard deviations of the binomial expectation."""
    return trials > 0 and abs(hits - trials * rate) <= 4 * (trials * rate * (1 - rate)) ** 0.5 + 1


def test_defect_rates_follow_the_config(small_world):
    """On 1,500 rendered encounters, each injected defect occurs at its configured rate."""
    rng = random.Random("zyy-rates")
    people = sorted(small_world.people)
    activity = DayActivity(
        day=DAY1,
        encounters=[
            replace(_encounter(rng, small_world, DAY1, n), resident_id=rng.choice(people)) for n in range(1, 1501)
        ],
    )
    known = {(rid, ZYY): f"26010100{i:03d}" for i, rid in enumerate(people)}
    rendered = _system(small_world).render_day(activity, known)
    logged = [(d.table_name, d.defect) for d in rendered.key.defects]
    western = [r for t in ("op_diag", "ip_diag") for r in rendered.rows[t] if r["diag_class"] == "W"]
    assert _near(
        logged.count(("op_diag", "unknown_local_code")) + logged.count(("ip_diag", "unknown_local_code")),
        len(western),
        CONFIG["unknown_local_code"],
    )
    first_visits = len({e.resident_id for e in activity.encounters})
    assert _near(logged.count(("pat_master", "re_registration")), first_visits, CONFIG["re_registration"])
    discharges = [e for e in activity.encounters if e.kind == "inpatient"]
    assert _near(
        logged.count(("ip_disch", "discharge_before_admission"))
        + sum(json.loads(p[5]) != [] for p in rendered.pending if p[0] == "ip_disch"),
        len(discharges),
        CONFIG["discharge_before_admission"],
    )
    # the vendor writes down every 中医诊断 the activity made, and no other (a late evening's tomorrow)
    diagnosis_rows = rendered.rows["op_diag"] + [json.loads(p[4]) for p in rendered.pending if p[0] == "op_diag"]
    with_tcm = {r["reg_id"] for r in diagnosis_rows if r["diag_class"] == "Z"}
    assert len(with_tcm) == sum(e.kind != "inpatient" and e.tcm is not None for e in activity.encounters)
    eligible = [
        e
        for e in activity.encounters
        if e.kind != "inpatient" and any(d.icd_code[:3] in TCM_DISEASES for d in e.diagnoses)
    ]
    assert _near(len(with_tcm), len(eligible), 0.6)
