"""Small, hand-made county days for testing member-system renderers without the activity engine."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from simulator.events import (
    Charge,
    Correction,
    DayActivity,
    Diagnosis,
    Encounter,
    ExamReport,
    LabResult,
    Prescription,
    PublicHealthService,
    Referral,
    Surgery,
)
from simulator.world import World, generate_population

SMALL_CONFIG = {"seed": 11, "start_date": date(2026, 11, 1), "residents": 400}


@pytest.fixture(scope="session")
def small_world() -> World:
    """A world with 400 residents held in memory (not persisted in the answer key)."""
    world = World(SMALL_CONFIG)
    world.people = {p.resident_id: p for p in generate_population(11, 400, world.institutions, date(2026, 11, 1))}
    return world


def make_day(world: World, day: date, per_institution: int = 3) -> DayActivity:
    """Every institution sees a few outpatients; hospitals and 卫生院 also admit and discharge."""
    activity = DayActivity(day=day)
    residents = sorted(world.people)
    n = 0
    for inst in world.institutions:
        doctor = world.doctors(inst.org_code)[0].staff_id
        for i in range(per_institution):
            n += 1
            rid = residents[(n * 7) % len(residents)]
            start = datetime.combine(day, datetime.min.time()) + timedelta(hours=8, minutes=n % 600)
            inpatient = inst.open_beds > 0 and i == 0
            encounter = Encounter(
                encounter_uid=f"E{day:%Y%m%d}{n:06d}",
                resident_id=rid,
                org_code=inst.org_code,
                kind="inpatient" if inpatient else ("emergency" if i == 2 else "outpatient"),
                department_code="0101",
                department_name="内科",
                doctor_id=doctor,
                start_at=start,
                end_at=start + timedelta(days=8) if inpatient else None,
                bed_no="12" if inpatient else "",
                discharge_status="好转" if inpatient else "",
                diagnoses=[Diagnosis("I10.x00", "原发性高血压", True), Diagnosis("E11.900", "2型糖尿病", False)],
                prescriptions=[Prescription("XC09AAD082A001010100433", "C09AA02", "依那普利片", "10mg*16片", 2, 12.5)],
                labs=[LabResult("2345-7", "葡萄糖", 7.8, "mmol/L", "3.9-6.1", True)],
                exams=[ExamReport("DR", "胸部", "双肺纹理清晰", "心肺未见明显异常")],
                charges=[Charge("310100001", "挂号费", "挂号", 5.0), Charge("DRUG", "依那普利片", "药品", 25.0)],
                surgeries=(
                    [Surgery("47.0901", "阑尾切除术", start + timedelta(hours=4), "II", "甲")] if inpatient else []
                ),
            )
            activity.encounters.append(encounter)
    first = activity.encounters[0]
    activity.referrals.append(
        Referral(
            f"R{day:%Y%m%d}0001",
            first.resident_id,
            "410182101",
            "410182001",
            "up",
            first.start_at,
            "I10.x00",
            "血压控制不佳",
        )
    )
    activity.services.append(
        PublicHealthService(
            f"S{day:%Y%m%d}0001",
            first.resident_id,
            "410182101",
            "htn_followup",
            first.start_at,
            "410182101医000",
            {"sbp": 150.0, "dbp": 95.0},
        )
    )
    activity.corrections.append(Correction(first.encounter_uid, "cancel", first.start_at + timedelta(days=2), "退费"))
    return activity


@pytest.fixture
def sample_day(small_world) -> DayActivity:
    return make_day(small_world, date(2026, 11, 2))
