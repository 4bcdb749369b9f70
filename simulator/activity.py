"""The activity engine: what really happens in the county on a given day.

Deterministic per (seed, day): it draws visits per institution from the population living that day
(weighted by age and chronic disease, with a winter respiratory peak and quieter weekends), admissions
sized to each hospital's beds (scaled to the simulated population, so occupancy and stays are realistic),
referrals, public-health services, births, deaths, 医保 settlements (including care outside the county),
and later corrections. Births, deaths and scheduled corrections persist in the answer-key database, so
``simulate --advance`` continues where the last run stopped.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, time, timedelta
from itertools import accumulate
from typing import Any

import sqlalchemy as sa

from simulator import answer_key, clinical
from simulator.connections import source_pg_engine
from simulator.diagnoses import TailSampler, tail_samplers
from simulator.events import (
    Birth,
    Charge,
    Correction,
    DayActivity,
    Death,
    Diagnosis,
    Encounter,
    ExamReport,
    Institution,
    InsuranceSettlement,
    LabResult,
    Person,
    Prescription,
    PublicHealthService,
    Referral,
    Surgery,
)
from simulator.tcm import TcmPractice
from simulator.world import World, issue_id_number

COUNTY_POPULATION = 650_000
VISITS_PER_RESIDENT_YEAR = 6.0
# Share of all visits by institution type (基层 ≈ 55%); split inside a type by catchment population.
VISIT_SHARE = {
    "村卫生室": 0.25,
    "乡镇卫生院": 0.27,
    "社区卫生服务中心": 0.03,
    "410182001": 0.20,
    "410182002": 0.10,
    "410182003": 0.06,
    "410182004": 0.05,
    "410182005": 0.04,
}
EMERGENCY_SHARE = {"综合医院": 0.12, "中医医院": 0.06, "妇幼保健院": 0.08, "民营综合医院": 0.10, "乡镇卫生院": 0.04}
MEAN_STAY_DAYS = {"综合医院": 8.0, "中医医院": 9.0, "妇幼保健院": 5.0, "民营综合医院": 7.0, "乡镇卫生院": 6.0}
OCCUPANCY = 0.85
# Primary diagnoses the long tail never replaces: chronic-disease visits and surgical admissions.
KEPT_PRIMARY_DIAGNOSES = frozenset({clinical.HYPERTENSION[0], clinical.DIABETES[0], *clinical.SURGERIES})
ANY_SERVICE_TODAY = 0.05  # upper bound of the daily chance of any public-health service for one resident
PENDING_DDL = """CREATE TABLE IF NOT EXISTS pending_correction (
    target_uid text NOT NULL, kind text NOT NULL, due_day date NOT NULL, at timestamp NOT NULL, reason text,
    PRIMARY KEY (target_uid, kind))"""


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# Cumulative weights of the common diagnoses outside and in winter (respiratory ones doubled), computed once:
# the same draws as passing the weights, without summing them for every visit.
COMMON_DIAGNOSIS_CUM_WEIGHTS = {
    winter: list(
        accumulate(w * (2.0 if winter and season == "winter" else 1.0) for _, _, w, season in clinical.COMMON_DIAGNOSES)
    )
    for winter in (False, True)
}


def _age(person: Person, day: date) -> int:
    return clinical.completed_years(person.birth_date, day)


class ActivityEngine:
    def __init__(self, world: World, config: dict[str, Any] | None = None) -> None:
        self.world = world
        self.config = config or {}
        self.scale = len(world.people) / COUNTY_POPULATION if world.people else 0.0
        self.catchments: dict[str, list[int]] | None = None
        self.tails: dict[str, tuple[float, TailSampler]] = tail_samplers(
            world.seed, self.config.get("diagnosis_tail", {})
        )
        self.tcm = TcmPractice(self.config.get("tcm"))
        self.refusal_rate = float(self.config.get("referral_refusal_rate", 0.03))

    # --- population ---------------------------------------------------------------------------------
    def _living(self, day: date) -> list[Person]:
        """Residents who exist on ``day``: appeared before it, not died before it (same on a re-run)."""
        return [
            p
            for p in self.world.people.values()
            if (p.death_date is None or p.death_date >= day) and self.world.appeared[p.resident_id] < day
        ]

    def _build_catchments(self, living: list[Person]) -> dict[str, list[int]]:
        by_township: dict[str, list[int]] = {}
        by_village: dict[tuple[str, str], list[int]] = {}
        everyone = [p.resident_id for p in living]  # county-wide catchment, shared by the hospitals
        for p in living:
            by_township.setdefault(p.township, []).append(p.resident_id)
            by_village.setdefault((p.township, p.village), []).append(p.resident_id)
        catchments = {}
        for inst in self.world.institutions:
            if inst.org_type == "村卫生室":
                village = inst.name[len(inst.township) : -len("卫生室")]
                catchments[inst.org_code] = by_village.get((inst.township, village), [])
            elif inst.org_type in ("乡镇卫生院", "社区卫生服务中心"):
                catchments[inst.org_code] = by_township.get(inst.township, [])
            else:
                catchments[inst.org_code] = everyone
        return catchments

    def _daily_visit_mean(
        self, inst: Institution, catchments: dict[str, list[int]], day: date, population: int
    ) -> float:
        share = VISIT_SHARE.get(inst.org_code) or VISIT_SHARE.get(inst.org_type, 0.0)
        if inst.org_type in ("村卫生室", "乡镇卫生院", "社区卫生服务中心"):
            same_type = [i.org_code for i in self.world.institutions if i.org_type == inst.org_type]
            total = sum(len(catchments[c]) for c in same_type) or 1
            share *= len(catchments[inst.org_code]) / total
        season = 1.25 if day.month in (12, 1, 2) else 0.9 if day.month in (6, 7, 8) else 1.0
        weekday = (0.6 if inst.open_beds >= 100 else 0.85) if day.weekday() >= 5 else 1.0
        return population * VISITS_PER_RESIDENT_YEAR / 365 * share * season * weekday

    # --- the day ------------------------------------------------------------------------------------
    def day(self, day: date) -> DayActivity:
        rng = random.Random(f"{self.world.seed}:activity:{day.isoformat()}")
        living = self._living(day)
        catchments = self._build_catchments(living)
        activity = DayActivity(day=day)
        for inst in self.world.institutions:
            self._visits(rng, inst, catchments, day, activity, len(living))
            self._admissions(rng, inst, catchments, day, activity)
        self._referrals(rng, activity)
        self._public_health(rng, living, day, activity)
        self._births_and_deaths(rng, living, day, activity)
        self._settlements(rng, living, day, activity)
        self._corrections(rng, day, activity)
        return activity

    def _pick(self, rng: random.Random, candidates: list[int], day: date) -> Person | None:
        for _ in range(20):
            person = self.world.people[rng.choice(candidates)]
            weight = 0.3 + min(_age(person, day), 80) / 100 + (0.4 if person.hypertension or person.diabetes else 0)
            if rng.random() < weight / 1.6:
                return person
        return None

    def _uid(self, prefix: str, day: date, n: int, org_code: str = "") -> str:
        return f"{prefix}{day:%Y%m%d}{org_code}{n:05d}"

    def _visits(
        self,
        rng: random.Random,
        inst: Institution,
        catchments: dict[str, list[int]],
        day: date,
        activity: DayActivity,
        population: int,
    ) -> None:
        candidates = catchments[inst.org_code]
        if not candidates:
            return
        doctors = self.world.doctors(inst.org_code)
        tail_rng = self._tail_rng(inst, day)
        tcm_rng = self._tcm_rng(inst, day)
        for n in range(_poisson(rng, self._daily_visit_mean(inst, catchments, day, population))):
            person = self._pick(rng, candidates, day)
            if person is None:
                continue
            emergency = rng.random() < EMERGENCY_SHARE.get(inst.org_type, 0.0)
            start = (
                datetime.combine(day, time()) + timedelta(seconds=rng.randrange(86_400))
                if emergency
                else datetime.combine(day, time(8)) + timedelta(seconds=rng.randrange(int(9.5 * 3600)))
            )
            age = _age(person, day)
            dept = clinical.EMERGENCY_DEPARTMENT if emergency else self._department(rng, inst, age)
            diagnoses = self._with_tail(tail_rng, inst, person, self._outpatient_diagnoses(rng, person, day))
            encounter = Encounter(
                self._uid("E", day, n, inst.org_code),
                person.resident_id,
                inst.org_code,
                "emergency" if emergency else "outpatient",
                dept[0],
                dept[1],
                rng.choice(doctors).staff_id,
                start,
                diagnoses=diagnoses,
            )
            self._orders(rng, encounter, inst)
            if tcm_rng:
                self.tcm.treat(tcm_rng, encounter)
            activity.encounters.append(encounter)

    @staticmethod
    def _department(rng: random.Random, inst: Institution, age: int) -> tuple[str, str]:
        departments = clinical.DEPARTMENTS[inst.org_type]
        children = [d for d in departments if d[1] == "儿科"]
        if age < 14 and children:
            return children[0]
        return rng.choice([d for d in departments if d[1] != "儿科"] or departments)

    def _tail_rng(self, inst: Institution, day: date) -> random.Random:
        """The long-tail draws have their own stream: changing the tail's settings changes the day's other draws
        only through what a tail diagnosis changes downstream (it has no prescription, so no quantity is drawn)."""
        return random.Random(f"{self.world.seed}:diagnosis-tail:{day.isoformat()}:{inst.org_code}")

    def _tcm_rng(self, inst: Institution, day: date) -> random.Random | None:
        """The 中医 decisions' own stream (simulator/tcm.py), for the institution types that practise 中医."""
        if inst.org_type not in self.tcm.org_types:
            return None
        return random.Random(f"{self.world.seed}:tcm:{day.isoformat()}:{inst.org_code}")

    def _with_tail(
        self, rng: random.Random, inst: Institution, person: Person, diagnoses: list[Diagnosis]
    ) -> list[Diagnosis]:
        """For the institution type's share of visits, the primary diagnosis comes from the whole
        classification instead. A chronic patient's hypertension or diabetes stays (it is why they came), and so
        does a surgical diagnosis (the admission is for the operation)."""
        share, sampler = self.tails.get(inst.org_type, (0.0, None))
        if sampler is None or rng.random() >= share or diagnoses[0].icd_code in KEPT_PRIMARY_DIAGNOSES:
            return diagnoses
        tail = sampler.draw(rng, person.sex)
        if tail is None or any(d.icd_code == tail.code for d in diagnoses):
            return diagnoses
        return [Diagnosis(tail.code, tail.name, True)] + [Diagnosis(d.icd_code, d.name, False) for d in diagnoses[1:]]

    @staticmethod
    def _outpatient_diagnoses(rng: random.Random, person: Person, day: date) -> list[Diagnosis]:
        chosen: list[tuple[str, str]] = []
        if person.hypertension and rng.random() < 0.5:
            chosen.append(clinical.HYPERTENSION)
        if person.diabetes and rng.random() < 0.5:
            chosen.append(clinical.DIABETES)
        if not chosen or rng.random() < 0.3:
            cumulative = COMMON_DIAGNOSIS_CUM_WEIGHTS[day.month in (12, 1, 2)]
            code, name, _, _ = rng.choices(clinical.COMMON_DIAGNOSES, cum_weights=cumulative)[0]
            chosen.append((code, name))
        return [Diagnosis(code, name, i == 0) for i, (code, name) in enumerate(dict.fromkeys(chosen))]

    def _orders(self, rng: random.Random, encounter: Encounter, inst: Institution, days: int = 1) -> None:
        """Prescriptions, labs, exams and the charges they cause."""
        charges = [Charge("110200001", "挂号费", "挂号", 1.0 if inst.org_type == "村卫生室" else 6.0)]
        for diagnosis in encounter.diagnoses:
            for code, atc, name, spec, price in clinical.DRUGS.get(diagnosis.icd_code, [])[:1]:
                quantity = rng.choice((1, 1, 2, 3)) * days
                encounter.prescriptions.append(Prescription(code, atc, name, spec, quantity, price))
                charges.append(Charge(code, name, "药品", round(quantity * price, 2)))
        hospital = inst.open_beds >= 100 or inst.org_type == "乡镇卫生院"
        if hospital and rng.random() < (0.9 if encounter.kind == "inpatient" else 0.3):
            for loinc, name, unit, low, high, mean, sd in rng.sample(clinical.LABS, rng.randrange(1, 4)):
                value = round(max(0.1, rng.gauss(mean, sd)), 1)
                encounter.labs.append(LabResult(loinc, name, value, unit, f"{low}-{high}", not low <= value <= high))
            charges.append(Charge("250101001", "检验费", "化验", round(20.0 * len(encounter.labs), 2)))
        if hospital and rng.random() < (0.7 if encounter.kind == "inpatient" else 0.12):
            encounter.exams.append(ExamReport(*rng.choice(clinical.EXAMS)))
            charges.append(Charge("210102001", "影像检查费", "检查", rng.choice((60.0, 120.0, 280.0))))
        if encounter.kind == "inpatient":
            charges.append(Charge("110900001", "床位费", "床位", round(30.0 * days, 2)))
            charges.append(Charge("120100001", "护理费", "治疗", round(25.0 * days, 2)))
            for surgery in encounter.surgeries:
                charges.append(Charge(surgery.procedure_code, surgery.name, "手术", 3200.0))
        encounter.charges = charges

    def _admissions(
        self, rng: random.Random, inst: Institution, catchments: dict[str, list[int]], day: date, activity: DayActivity
    ) -> None:
        if inst.org_type not in MEAN_STAY_DAYS or not inst.open_beds:
            return
        beds = inst.open_beds * self.scale
        mean_stay = MEAN_STAY_DAYS[inst.org_type]
        doctors = self.world.doctors(inst.org_code)
        tail_rng = self._tail_rng(inst, day)
        tcm_rng = self._tcm_rng(inst, day)
        for n in range(_poisson(rng, beds * OCCUPANCY / mean_stay)):
            person = self._pick(rng, catchments[inst.org_code], day)
            if person is None:
                continue
            start = datetime.combine(day, time(7)) + timedelta(seconds=rng.randrange(14 * 3600))
            stay = max(1, round(rng.lognormvariate(math.log(mean_stay) - 0.08, 0.4)))
            code, name, _ = rng.choices(clinical.INPATIENT_DIAGNOSES, [w for *_, w in clinical.INPATIENT_DIAGNOSES])[0]
            died = _age(person, day) > 75 and rng.random() < 0.03
            encounter = Encounter(
                self._uid("I", day, n, inst.org_code),
                person.resident_id,
                inst.org_code,
                "inpatient",
                *self._department(rng, inst, _age(person, day)),
                rng.choice(doctors).staff_id,
                start,
                end_at=start + timedelta(days=stay, hours=rng.randrange(-3, 4)),
                bed_no=f"{rng.randrange(1, max(2, int(inst.open_beds))):03d}",
                discharge_status="死亡" if died else rng.choice(("治愈", "好转", "好转", "好转", "未愈")),
                diagnoses=self._with_tail(tail_rng, inst, person, [Diagnosis(code, name, True)]),
            )
            code = encounter.diagnoses[0].icd_code
            if code in clinical.SURGERIES and inst.open_beds >= 100:
                procedure, procedure_name, incision = clinical.SURGERIES[code]
                encounter.surgeries.append(
                    Surgery(
                        procedure,
                        procedure_name,
                        start + timedelta(hours=20),
                        incision,
                        "甲" if rng.random() < 0.95 else "乙",
                    )
                )
            self._orders(rng, encounter, inst, days=stay)
            if tcm_rng:
                self.tcm.treat(tcm_rng, encounter)
            activity.encounters.append(encounter)
            if died:  # no visit, follow-up or contract after the day of death
                activity.deaths.append(Death(person.resident_id, encounter.end_at, code, "医院"))

    def _referrals(self, rng: random.Random, activity: DayActivity) -> None:
        for n, encounter in enumerate(activity.encounters):
            org = self.world.by_code[encounter.org_code]
            if org.org_type in ("乡镇卫生院", "社区卫生服务中心") and rng.random() < 0.02:
                target = rng.choice(("410182001", "410182001", "410182002"))
                direction, at = "up", encounter.start_at + timedelta(minutes=40)
            elif encounter.kind == "inpatient" and org.open_beds >= 100 and rng.random() < 0.06:
                person = self.world.people[encounter.resident_id]
                target = next(
                    (
                        i.org_code
                        for i in self.world.institutions
                        if i.township == person.township and i.org_type in ("乡镇卫生院", "社区卫生服务中心")
                    ),
                    "",
                )
                direction, at = "down", encounter.end_at or encounter.start_at
            else:
                continue
            main = encounter.diagnoses[0]
            uid = self._uid("R", activity.day, n)
            # whether the receiving side refuses it: a decision of the day, on its own stream per referral
            refused = random.Random(f"{self.world.seed}:referral-refusal:{uid}").random() < self.refusal_rate
            activity.referrals.append(
                Referral(
                    uid,
                    encounter.resident_id,
                    encounter.org_code,
                    target,
                    direction,
                    at,
                    main.icd_code,
                    "病情需要" if direction == "up" else "康复期转基层管理",
                    refused,
                )
            )

    def _public_health(self, rng: random.Random, living: list[Person], day: date, activity: DayActivity) -> None:
        centres = {
            i.township: i.org_code
            for i in self.world.institutions
            if i.org_type in ("乡镇卫生院", "社区卫生服务中心") and "第二" not in i.name
        }
        if day.weekday() >= 5:  # public-health teams work on weekdays
            return
        weekday = True
        for n, person in enumerate(living):
            # One draw decides whether anything happens to this resident today (it rarely does).
            if rng.random() >= ANY_SERVICE_TODAY:
                continue
            age = _age(person, day)
            kinds = []
            if person.hypertension and rng.random() < 4.5 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("htn_followup")
            if person.diabetes and rng.random() < 4.5 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("dm_followup")
            if age >= 65 and rng.random() < 0.75 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("elderly_check")
            if age <= 6 and rng.random() < 2.5 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("child_check")
            if rng.random() < 0.35 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("contract")
            if rng.random() < 0.05 / 250 * weekday / ANY_SERVICE_TODAY:
                kinds.append("filing")
            for k, kind in enumerate(kinds):
                org = centres[person.township]
                at = datetime.combine(day, time(8, 30)) + timedelta(seconds=rng.randrange(8 * 3600))
                values: dict[str, float | str] = {}
                if kind in ("htn_followup", "elderly_check"):
                    sbp = round(rng.gauss(138, 14))
                    values = {"sbp": sbp, "dbp": min(round(rng.gauss(86, 9)), sbp - clinical.MIN_PULSE_PRESSURE)}
                if kind in ("dm_followup", "elderly_check"):
                    values["fbg"] = round(max(3.5, rng.gauss(7.2 if person.diabetes else 5.4, 1.4)), 1)
                if kind == "child_check":
                    values = {"weight_kg": round(3.3 + age * 2.2 + rng.gauss(0, 0.8), 1)}
                doctor = rng.choice(self.world.doctors(org)).staff_id
                activity.services.append(
                    PublicHealthService(
                        self._uid("S", day, n * 10 + k), person.resident_id, org, kind, at, doctor, values
                    )
                )

    def _births_and_deaths(self, rng: random.Random, living: list[Person], day: date, activity: DayActivity) -> None:
        mothers = [p for p in living if p.sex == 2 and 20 <= _age(p, day) <= 40]
        next_id = max(self.world.people) + 1
        issued = self.world.issued_id_numbers()
        for n in range(_poisson(rng, len(living) * 0.008 / 365)):
            if not mothers:
                break
            mother = rng.choice(mothers)
            org = rng.choices(("410182003", "410182001", "410182002"), (6, 3, 1))[0]
            at = datetime.combine(day, time()) + timedelta(seconds=rng.randrange(86_400))
            sex = rng.choice((1, 2))
            surname = mother.name[0]
            child = Person(
                next_id,
                mother.household_id,
                surname + rng.choice("子梓浩欣一诺雨轩"),
                sex,
                day,
                mother.ethnicity,
                issue_id_number(rng, "410182", day, sex, issued),
                mother.phone,
                f"YB410182{next_id:010d}",
                mother.township,
                mother.village,
                mother.address,
            )
            next_id += 1
            activity.new_people.append(child)
            activity.births.append(
                Birth(
                    self._uid("B", day, n),
                    mother.resident_id,
                    child.resident_id,
                    org,
                    at,
                    round(rng.gauss(3300, 420)),
                    sex,
                )
            )
            delivery = Encounter(
                self._uid("D", day, n, org),
                mother.resident_id,
                org,
                "inpatient",
                "0401",
                "妇产科",
                rng.choice(self.world.doctors(org)).staff_id,
                at - timedelta(hours=6),
                end_at=at + timedelta(days=3),
                bed_no=f"{rng.randrange(1, 60):03d}",
                discharge_status="治愈",
                diagnoses=[Diagnosis(*clinical.DELIVERY, True)],
            )
            self._orders(rng, delivery, self.world.by_code[org], days=3)
            activity.encounters.append(delivery)
        elderly = [p for p in living if _age(p, day) >= 60]
        for _ in range(_poisson(rng, len(living) * 0.007 / 365)):
            if not elderly:
                break
            person = rng.choice(elderly)
            at = datetime.combine(day, time()) + timedelta(seconds=rng.randrange(86_400))
            activity.deaths.append(
                Death(
                    person.resident_id,
                    at,
                    rng.choice(("I63.900", "I25.100", "C34.900", "J44.100")),
                    rng.choice(("医院", "家中", "家中")),
                )
            )

    def _settlements(self, rng: random.Random, living: list[Person], day: date, activity: DayActivity) -> None:
        for n, encounter in enumerate(activity.encounters):
            org = self.world.by_code[encounter.org_code]
            if org.org_type == "村卫生室" or not encounter.insured or rng.random() < 0.08:
                continue
            end = encounter.end_at or encounter.start_at + timedelta(minutes=30)
            total = encounter.total_yuan
            fund = round(total * (0.65 if encounter.kind == "inpatient" else 0.4), 2)
            activity.settlements.append(
                InsuranceSettlement(
                    self._uid("Y", day, n),
                    encounter.resident_id,
                    encounter.org_code,
                    "",
                    encounter.kind,
                    encounter.start_at.date() if encounter.kind == "inpatient" else None,
                    end.date() if encounter.kind == "inpatient" else None,
                    end + timedelta(minutes=20),
                    total,
                    fund,
                    encounter.encounter_uid,
                )
            )
        inpatient = sum(1 for e in activity.encounters if e.kind == "inpatient")
        for n in range(_poisson(rng, inpatient * 0.18)):
            stay = max(1, round(rng.lognormvariate(2.2, 0.5)))
            admitted = day - timedelta(days=stay)
            total = round(rng.lognormvariate(9.6, 0.7), 2)
            activity.settlements.append(
                InsuranceSettlement(
                    self._uid("W", day, n),
                    rng.choice(living).resident_id,
                    "",
                    rng.choice(clinical.OUT_OF_COUNTY_HOSPITALS),
                    "inpatient",
                    admitted,
                    day,
                    datetime.combine(day, time(10)) + timedelta(minutes=n * 7),
                    total,
                    round(total * 0.55, 2),
                    "",
                )
            )

    def _corrections(self, rng: random.Random, day: date, activity: DayActivity) -> None:
        """Schedule later changes to some of today's encounters; attach those falling due today."""
        cancel_rate = self.config.get("cancel_rate", 0.01)
        update_rate = self.config.get("update_rate", 0.02)
        scheduled = []
        for encounter in activity.encounters:
            if encounter.kind == "inpatient":
                continue
            draw = rng.random()
            if draw < cancel_rate + update_rate:
                cancel = draw < cancel_rate
                kind, reason = ("cancel", rng.choice(("退费", "作废"))) if cancel else ("update", "诊断更正")
                due = day + timedelta(days=rng.randrange(1, 6))
                at = datetime.combine(due, time(8)) + timedelta(seconds=rng.randrange(10 * 3600))
                scheduled.append({"u": encounter.encounter_uid, "k": kind, "d": due, "a": at, "r": reason})
        with source_pg_engine(answer_key.DATABASE).begin() as conn:
            conn.execute(sa.text(PENDING_DDL))
            if scheduled:
                conn.execute(
                    sa.text("INSERT INTO pending_correction VALUES (:u, :k, :d, :a, :r) ON CONFLICT DO NOTHING"),
                    scheduled,
                )
            due = conn.execute(
                sa.text("SELECT * FROM pending_correction WHERE due_day = :d ORDER BY at, target_uid"), {"d": day}
            ).all()
        activity.corrections = [Correction(r.target_uid, r.kind, r.at, r.reason) for r in due]


def forget_scheduled_corrections() -> None:
    """Drop the corrections scheduled for later days (part of a reset: a new run schedules its own)."""
    with source_pg_engine(answer_key.DATABASE).begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS pending_correction"))


def apply_population_changes(world: World, activity: DayActivity) -> None:
    """Persist today's births (new residents) and deaths, so later days see them."""
    world.add_people(activity.new_people, activity.day)
    if activity.deaths:
        with source_pg_engine(answer_key.DATABASE).begin() as conn:
            conn.execute(
                sa.text("UPDATE person SET death_date = :d WHERE resident_id = :r"),
                [{"d": death.at.date(), "r": death.resident_id} for death in activity.deaths],
            )
    _mark_deaths(world, activity)


def remember_population_changes(world: World, activity: DayActivity) -> None:
    """Today's births and deaths in this process's copy of the world only (a writer process: the orchestrator
    has stored them)."""
    world.remember_people(activity.new_people, activity.day)
    _mark_deaths(world, activity)


def _mark_deaths(world: World, activity: DayActivity) -> None:
    for death in activity.deaths:
        world.people[death.resident_id].death_date = death.at.date()
