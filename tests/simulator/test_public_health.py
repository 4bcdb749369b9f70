"""基本公卫 and 双向转诊 renderers on hand-made days: counts, registries, archive numbers, status flow, key.

Writes into a separate database (``public_health_test``) under test-only source-system names, so the real
``public_health`` database and answer-key rows stay untouched.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.events import Correction, DayActivity, PublicHealthService, Referral
from simulator.systems.public_health import (
    CODE_LISTS,
    OUTBOX,
    SERVICE_TABLES,
    TOWNSHIP_CODES,
    PublicHealth,
    ReferralPlatform,
    _Archives,
)
from simulator.world import World
from tests.simulator.conftest import make_day

DATABASE = "public_health_test"
DAY1, DAY2 = date(2026, 11, 2), date(2026, 11, 3)
LAST = DAY1 + timedelta(days=16)  # late forms (≤ 5 days), re-edits (≤ 10 days), referral steps all due
CONFIG: dict[str, Any] = {
    "database": DATABASE,
    "re_registration": 0.15,
    "unknown_local_code": 0.15,
    "late_submission": 0.3,
    "late_max_days": 5,
    "correction_update": 0.2,
    "identity_dirt": {"missing_id_number": 0.2, "homophone": 0.2, "changed_phone": 0.2, "address_variant": 0.3},
}
REFERRAL_CONFIG: dict[str, Any] = {"database": DATABASE, "unconfirmed_rate": 0.15}
CODED = {
    "gxy_sf": {"sffs": "SFFS", "zz": "GXYZZ", "fyycx": "FYYCX", "ywblfy": "YWBLFY", "cfsffl": "SFFL"},
    "tnb_sf": {"sffs": "SFFS", "fyycx": "FYYCX", "dxtfy": "DXTFY", "cfsffl": "SFFL"},
    "lnr_tj": {"jkztpg": "JKZTPG", "shzlnl": "SHZLNL", "jkpj": "JKPJ"},
    "et_jkgl": {"tzpj": "TZPJ"},
    "ycf_sf": {"sflx": "YCFSFLX"},
    "jtys_qy": {"fwbdm": "FWB", "qyzt": "QYZT"},
    "jkda_grjbxx": {"xb": "XB", "mz": "MZ", "czlx": "CZLX", "dazt": "DAZT"},
}


class _PublicHealth(PublicHealth):
    source_system = "test_public_health"


class _Referrals(ReferralPlatform):
    source_system = "test_referral"


def _rich_day(world: World, day: date, start: int) -> DayActivity:
    """make_day plus every kind of 公卫 service (repeats for the same residents) and referrals both ways."""
    activity = make_day(world, day)
    people = sorted(world.people.values(), key=lambda p: p.resident_id)
    centres = [i for i in world.institutions if i.source_system == "cloud_his" and not i.parent_code]
    clinics = [i for i in world.institutions if i.org_type == "村卫生室"]
    kinds = [*SERVICE_TABLES, "filing"]
    n = 0
    for i, person in enumerate(people[start : start + 60]):
        org = (centres if i % 3 else clinics)[i % 7]
        doctor = world.doctors(org.org_code)[0].staff_id
        for k in range(1 + i % 3):
            n += 1
            kind = kinds[(i + k) % len(kinds)]
            at = datetime.combine(day, time(8, 30)) + timedelta(minutes=7 * n)
            values: dict[str, float | str] = {"sbp": 150.0, "dbp": 92.0} if kind == "htn_followup" else {}
            if kind == "dm_followup":
                values = {"fbg": 8.1}
            activity.services.append(
                PublicHealthService(
                    f"S{day:%Y%m%d}T{n:04d}", person.resident_id, org.org_code, kind, at, doctor, values
                )
            )
    hospital = world.by_code["410182001"]
    activity.services.append(
        PublicHealthService(
            f"S{day:%Y%m%d}H0001",
            people[0].resident_id,
            hospital.org_code,
            "htn_followup",
            datetime.combine(day, time(9)),
            world.doctors(hospital.org_code)[0].staff_id,
            {"sbp": 130.0},
        )
    )
    for j, person in enumerate(people[start : start + 12]):
        up = j % 2 == 0
        centre = centres[j % len(centres)].org_code
        submitted = day + timedelta(days=0 if up else j % 4)  # a down-referral is submitted at discharge
        activity.referrals.append(
            Referral(
                f"R{day:%Y%m%d}T{j:03d}",
                person.resident_id,
                centre if up else "410182001",
                "410182001" if up else centre,
                "up" if up else "down",
                datetime.combine(submitted, time(10)) + timedelta(minutes=13 * j),
                "I63.900" if up else "Z51.x00",
                "病情需要" if up else "康复期转基层管理",
                refused=j % 7 == 3,  # the activity's decision (simulator/activity.py), here about one in seven
            )
        )
    return activity


def _corrections(first: DayActivity, day: date) -> list[Correction]:
    """A cancel and an update of day-1 公卫 services and referrals, committed on ``day``."""
    services = [s for s in first.services if s.kind in ("htn_followup", "dm_followup") and "T" in s.service_uid]
    referrals = [r for r in first.referrals if "T" in r.referral_uid]
    at = datetime.combine(day, time(9))
    return [
        Correction(services[0].service_uid, "cancel", at, "作废"),
        Correction(services[1].service_uid, "update", at + timedelta(hours=1), "随访数据更正"),
        Correction(referrals[0].referral_uid, "cancel", at, "患者放弃转诊"),
        Correction(referrals[2].referral_uid, "update", at, "补充病情摘要"),
    ]


def _clear_truth(source_system: str) -> None:
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        for table in ("patient_truth", "defect_log", "encounter_truth", "system_day"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = :s"), {"s": source_system})


def _dump(schema: str) -> dict[str, list[tuple]]:
    with source_pg_engine(DATABASE).connect() as conn:
        tables = (
            conn.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
            )
            .scalars()
            .all()
        )
        return {
            t: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {schema}.{t}")).all()), key=repr) for t in tables
        }


def _max_times(schema: str) -> datetime:
    """The latest timestamp of any kind in a schema (no row may carry a time after the day written)."""
    with source_pg_engine(DATABASE).connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = :s "
                "AND data_type LIKE 'timestamp%'"
            ),
            {"s": schema},
        ).all()
        return max(
            conn.execute(sa.text(f"SELECT max({c}) FROM {schema}.{t}")).scalar() or datetime.min for t, c in columns
        )


def _simulate(world: World, fresh_each_day: bool = False) -> dict[str, Any]:
    """Reset both systems and write DAY1..LAST; return day activities, per-day stats and CDC snapshots.

    ``fresh_each_day`` builds new system objects every day, as separate ``simulate --advance`` runs do, so
    the archive state is read back from the databases instead of carried in memory.
    """
    with source_pg_engine("public_health").connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE}).scalar():
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    answer_key.create_schema()
    ph, rp = _PublicHealth(world, CONFIG), _Referrals(world, REFERRAL_CONFIG)
    for system in (ph, rp):
        system.create_schema(reset=True)
        _clear_truth(system.source_system)
    first, second = _rich_day(world, DAY1, 0), _rich_day(world, DAY2, 40)
    second.corrections = _corrections(first, DAY2)
    days = [first, second] + [DayActivity(DAY2 + timedelta(days=d)) for d in range(1, (LAST - DAY2).days + 1)]
    stats, latest = [], []
    for activity in days:
        if fresh_each_day:
            ph, rp = _PublicHealth(world, CONFIG), _Referrals(world, REFERRAL_CONFIG)
        stats.append((ph.write_day(activity), rp.write_day(activity)))
        latest.append((activity.day, _max_times("gw"), _max_times("referral")))
    return {"ph": ph, "rp": rp, "days": days, "stats": stats, "latest": latest}


@pytest.fixture(scope="module")
def run(small_world: World) -> dict[str, Any]:
    return _simulate(small_world)


def _query(sql: str, **params: Any) -> list[sa.Row]:
    with source_pg_engine(DATABASE).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _truth(table: str, source_system: str) -> list[sa.Row]:
    with source_pg_engine(answer_key.DATABASE).connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM {table} WHERE source_system = :s"), {"s": source_system}).all()


def _defects(source_system: str, defect: str) -> dict[str, str]:
    return {r.record_id: r.detail for r in _truth("defect_log", source_system) if r.defect == defect}


def _own_services(run: dict[str, Any]) -> list[PublicHealthService]:
    return [s for a in run["days"] for s in a.services if s.org_code in run["ph"].institutions]


def test_rows_reconcile_with_services(run: dict[str, Any]) -> None:
    services = _own_services(run)
    assert len(services) < sum(len(a.services) for a in run["days"])  # the hospital's service is not ours
    by_kind = Counter(s.kind for s in services)
    for kind, (table, _, _) in SERVICE_TABLES.items():
        assert _query(f"SELECT count(*) FROM gw.{table}")[0][0] == by_kind[kind], table
    residents = {s.resident_id for s in services}
    duplicates = _defects("test_public_health", "re_registration")
    assert duplicates, "the test rate should produce duplicate archives"
    assert _query("SELECT count(*) FROM gw.jkda_grjbxx")[0][0] == len(residents) + len(duplicates)
    for kind, card in (("htn_followup", "gxy_glk"), ("dm_followup", "tnb_glk")):
        holders = {s.resident_id for s in services if s.kind == kind}
        assert _query(f"SELECT count(*) FROM gw.{card}")[0][0] == len(holders)
    assert _query(f"SELECT count(*) FROM {OUTBOX}.pending WHERE source_system LIKE 'test_%'")[0][0] == 0
    referrals = sum(len(a.referrals) for a in run["days"])
    assert _query("SELECT count(*) FROM referral.zz_record")[0][0] == referrals


def test_registry_rows_unique_per_resident(run: dict[str, Any]) -> None:
    resident_of = {r.local_patient_id: r.resident_id for r in _truth("patient_truth", "test_public_health")}
    for card in ("gxy_glk", "tnb_glk"):
        per_resident = Counter(resident_of[r.grdabh] for r in _query(f"SELECT grdabh FROM gw.{card}"))
        assert per_resident and max(per_resident.values()) == 1, card


def test_archive_numbers_well_formed(run: dict[str, Any], small_world: World) -> None:
    resident_of = {r.local_patient_id: r.resident_id for r in _truth("patient_truth", "test_public_health")}
    rows = _query("SELECT grdabh, ssxzdm, sscwhdm, jdjgdm FROM gw.jkda_grjbxx")
    seqs = Counter()
    for row in rows:
        assert re.fullmatch(r"410182\d{11}", row.grdabh), row.grdabh
        person = small_world.people[resident_of[row.grdabh]]
        assert row.grdabh[6:9] == TOWNSHIP_CODES[person.township]
        assert row.grdabh[:12] == row.sscwhdm and row.ssxzdm == row.sscwhdm[:9]
        village = row.grdabh[9:12]
        assert ("001" <= village <= "199") if person.township.endswith("街道") else village >= "200"
        seqs[row.grdabh[:12]] += 1
    for prefix, count in seqs.items():  # sequences per village run 1..n without gaps
        numbers = sorted(int(r.grdabh[12:]) for r in rows if r.grdabh.startswith(prefix))
        assert numbers == list(range(1, count + 1))


def test_referential_integrity_and_vendor_codes(run: dict[str, Any], small_world: World) -> None:
    archives = {r.grdabh for r in _query("SELECT grdabh FROM gw.jkda_grjbxx")}
    orgs = {r.jgdm for r in _query("SELECT jgdm FROM gw.xt_jgxx")}
    assert len(orgs) == len(run["ph"].institutions)
    assert not orgs & set(small_world.by_code) and all(re.fullmatch(r"410182\d{6}", o) for o in orgs)
    unknown = _defects("test_public_health", "unknown_local_code")
    assert unknown
    keys = {table: pk for table, pk, _ in SERVICE_TABLES.values()} | {"gxy_glk": "glkbh", "tnb_glk": "glkbh"}
    for table, pk in keys.items():
        for row in _query(f"SELECT * FROM gw.{table}"):
            values = row._mapping
            assert values["grdabh"] in archives and values["jgdm"] in orgs
            for column, code_list in CODED.get(table, {}).items():
                if values[column] is not None and values[column] not in CODE_LISTS[code_list]:
                    assert unknown.get(values[pk]) == f"{column}={values[column]}", (table, column)
    for row in _query("SELECT * FROM gw.jkda_grjbxx"):
        for column, code_list in CODED["jkda_grjbxx"].items():
            assert row._mapping[column] in CODE_LISTS[code_list]
    platform = {r.jgbm for r in _query("SELECT jgbm FROM referral.zz_jgxx")}
    for row in _query("SELECT zcjgbm, zrjgbm, zzlx, hzxb, zdbm FROM referral.zz_record"):
        assert row.zcjgbm in platform and row.zrjgbm in platform and row.zcjgbm.startswith("XYYGT")
        assert row.zzlx in ("01", "02") and row.hzxb in ("男", "女") and "x" not in row.zdbm


def test_status_flow_monotonic(run: dict[str, Any]) -> None:
    rows = _query("SELECT * FROM referral.zz_record")
    states = Counter(r.zt for r in rows)
    assert states["3"] and states["4"] and states["5"] and states["2"]  # completed, rejected, cancelled, open
    for r in rows:
        times = [t for t in (r.sqsj, r.jssj, r.wcsj) if t is not None]
        assert times == sorted(times) and r.xgsj >= max([*times, r.cxsj or r.sqsj])
        assert r.zzdh[2:10] == f"{r.sqsj:%Y%m%d}"
        assert (r.jssj is not None) == (r.zt in ("2", "3", "4") or (r.zt == "5" and r.jssj is not None))
        assert (r.wcsj is not None) == (r.zt == "3") and (r.cxsj is not None) == (r.zt == "5")
        assert (r.jjyy is not None) == (r.zt == "4")
    days_with_updates = [
        day for day, (_, referral) in zip(run["days"], run["stats"], strict=True) if referral.get("status_updates")
    ]
    assert len(days_with_updates) >= 3  # 接收 and 完成 arrive over the following days


def test_the_platform_refuses_what_the_receiving_side_decided(run: dict[str, Any]) -> None:
    """拒收 is the activity's decision (and the answer key's): the platform writes down exactly those referrals."""
    refused = sum(r.refused for a in run["days"] for r in a.referrals)
    rejected = _query("SELECT count(*) FROM referral.zz_record WHERE zt = '4'")[0][0]
    cancelled_first = len(_defects("test_referral", "correction_cancel"))  # 撤销 before the answer: never refused
    assert refused and refused - cancelled_first <= rejected <= refused


def test_no_row_is_dated_after_the_day_written(run: dict[str, Any]) -> None:
    """Late forms, status changes and re-edits appear on their own day: watermarks never run ahead."""
    for day, gw_latest, referral_latest in run["latest"]:
        end = datetime.combine(day + timedelta(days=1), time())
        assert gw_latest < end and referral_latest < end, day


def test_late_submissions_match_the_data(run: dict[str, Any]) -> None:
    late = _defects("test_public_health", "late_submission")
    assert late
    seen = set()
    for table, pk, day_column in SERVICE_TABLES.values():
        for row in _query(f"SELECT {pk} AS id, {day_column} AS served, cjsj FROM gw.{table}"):
            entered_late = (row.cjsj.date() - row.served).days >= 2
            assert entered_late == (row.id in late), (table, row.id)
            seen.add(row.id)
    assert set(late) <= seen


def test_corrections_applied_and_logged(run: dict[str, Any]) -> None:
    corrections = run["days"][1].corrections
    local = answer_key.local_encounter_ids("test_public_health", [c.target_uid for c in corrections])
    cancelled, updated = local[corrections[0].target_uid], local[corrections[1].target_uid]
    rows = {
        r.id: r
        for table, pk, _ in SERVICE_TABLES.values()
        for r in _query(f"SELECT {pk} AS id, zfbz, cjsj, xgsj FROM gw.{table}")
    }
    assert rows[cancelled].zfbz == "1" and cancelled in _defects("test_public_health", "correction_cancel")
    edits = _defects("test_public_health", "correction_update")
    assert updated in edits and len(edits) > 1  # the event's update and the vendor's re-edits
    for record_id in edits:
        assert rows[record_id].xgsj > rows[record_id].cjsj
    numbers = answer_key.local_encounter_ids("test_referral", [c.target_uid for c in corrections])
    referral = {r.zzdh: r for r in _query("SELECT zzdh, zt, bz FROM referral.zz_record")}
    assert referral[numbers[corrections[2].target_uid]].zt == "5"
    assert referral[numbers[corrections[3].target_uid]].bz == "补充病情摘要"


def test_answer_key_covers_every_record(run: dict[str, Any]) -> None:
    patients = {r.local_patient_id for r in _truth("patient_truth", "test_public_health")}
    assert patients == {r.grdabh for r in _query("SELECT grdabh FROM gw.jkda_grjbxx")}
    encounters = {r.encounter_uid: r.local_encounter_id for r in _truth("encounter_truth", "test_public_health")}
    first_service: dict[int, str] = {}
    for service in sorted(_own_services(run), key=lambda s: (s.at, s.service_uid)):
        first_service.setdefault(service.resident_id, service.service_uid)
    recorded = {
        s.service_uid
        for s in _own_services(run)  # a filing of a filed resident is a review
        if s.kind != "filing" or first_service[s.resident_id] == s.service_uid
    }
    assert recorded <= set(encounters)
    numbers = {r.zzdh for r in _query("SELECT zzdh FROM referral.zz_record")}
    assert numbers == {r.local_patient_id for r in _truth("patient_truth", "test_referral")}
    assert numbers == {r.local_encounter_id for r in _truth("encounter_truth", "test_referral")}


def test_identity_defects_match_the_data(run: dict[str, Any]) -> None:
    for source, sql, key_column in (
        ("test_public_health", "SELECT grdabh AS id, sfzh AS id_number FROM gw.jkda_grjbxx", "grdabh"),
        ("test_referral", "SELECT zzdh AS id, hzsfzh AS id_number FROM referral.zz_record", "zzdh"),
    ):
        missing = _defects(source, "missing_id_number")
        assert missing, key_column
        for row in _query(sql):
            assert (row.id_number is None) == (row.id in missing)


def test_rewriting_a_day_is_a_no_op(run: dict[str, Any]) -> None:
    before = _dump("gw"), _dump("referral")
    assert run["ph"].write_day(run["days"][0]) == {} and run["rp"].write_day(run["days"][1]) == {}
    assert (_dump("gw"), _dump("referral")) == before
    assert run["ph"].last_day() == LAST == run["rp"].last_day()


def test_same_seed_same_rows(run: dict[str, Any], small_world: World) -> None:
    """Same seed, same rows, whether a run carries its state over days or reads it back every day."""
    before = _dump("gw"), _dump("referral")
    again = _simulate(small_world, fresh_each_day=True)
    assert (_dump("gw"), _dump("referral")) == before
    assert again["stats"] == run["stats"]


def test_filing_without_dirt_records_the_truth(small_world: World) -> None:
    """With every rate at zero, an archive carries the resident exactly (sex GB/T, 民族 GB 3304)."""
    person = next(iter(small_world.people.values()))
    ph = _PublicHealth(
        small_world,
        {
            "identity_dirt": dict.fromkeys(
                (
                    "missing_id_number",
                    "wrong_check_digit",
                    "legacy_15_digit",
                    "name_typo",
                    "homophone",
                    "swapped_chars",
                    "traditional_chars",
                    "day_month_swap",
                    "changed_phone",
                    "address_variant",
                ),
                0.0,
            )
        },
    )
    service = PublicHealthService(
        "S1",
        person.resident_id,
        "410182101",
        "filing",
        datetime(2026, 11, 2, 9),
        small_world.doctors("410182101")[0].staff_id,
    )
    row = ph._archive_row(ph.rng(DAY1, "x"), person, "41018210020100001", service, answer_key.AnswerKey("none", DAY1))
    assert (row["xm"], row["sfzh"], row["xb"], row["csrq"]) == (
        person.name,
        person.id_number,
        str(person.sex),
        person.birth_date,
    )
    assert row["mz"] == ("03" if person.ethnicity == "回族" else "01") and row["jdjgdm"] == "410182001000"


def test_a_card_holder_who_died_in_hospital_gets_fabricated_follow_ups_on_weekdays_only(small_world: World) -> None:
    """followup_after_death: a 管理卡 holder whose inpatient stay ended 死亡 is still "followed up" after that
    day, by his township's centre; nobody else, and not on weekends (the dirt the FUP-L01 rule must find)."""
    holder, other, no_card = sorted(small_world.people)[:3]
    died_on = date(2026, 11, 3)

    class Dying(_PublicHealth):
        @staticmethod
        def _hospital_deaths(day: date) -> list[tuple[int, date]]:
            return [(holder, died_on), (no_card, died_on)]

    state = _Archives(died_on, {holder: "A1", other: "A2", no_card: "A3"}, {}, {holder, other}, set())
    monday, saturday = date(2026, 11, 9), date(2026, 11, 7)
    fabricated = Dying(small_world, {"followup_after_death": 1.0})._followups_after_death(monday, state)
    assert [(s.resident_id, s.kind, s.at.date(), died) for s, died in fabricated] == [
        (holder, "htn_followup", monday, died_on)
    ]
    assert fabricated[0][0].org_code in Dying(small_world, {}).institutions
    assert Dying(small_world, {"followup_after_death": 1.0})._followups_after_death(saturday, state) == []
    assert Dying(small_world, {})._followups_after_death(monday, state) == []  # a county without dirt
