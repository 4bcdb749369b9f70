"""Properties of the whole simulated county, checked on what the test pipeline generated."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import sqlalchemy as sa

from core.gb11643 import is_valid
from simulator.activity import ActivityEngine
from simulator.connections import source_pg_engine
from simulator.world import World, build_institutions, generate_population


def _truth(sql: str, **params) -> list:
    with source_pg_engine("sim_truth").connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_institutions_match_the_tender():
    kinds = Counter(i.org_type for i in build_institutions())
    assert kinds["村卫生室"] == 289
    assert kinds["乡镇卫生院"] == 13 and kinds["社区卫生服务中心"] == 2
    assert sum(kinds[k] for k in ("综合医院", "中医医院", "妇幼保健院", "民营综合医院")) == 5
    assert len({i.org_code for i in build_institutions()}) == 309


def test_population_is_realistic_and_ids_are_valid_and_unique():
    people = generate_population(20261101, 20_000, build_institutions(), date(2026, 11, 1))
    adults = [p for p in people if (date(2026, 11, 1) - p.birth_date).days >= 18 * 365]
    assert 0.20 <= sum(p.hypertension for p in adults) / len(adults) <= 0.32
    assert 0.07 <= sum(p.diabetes for p in adults) / len(adults) <= 0.14
    assert all(is_valid(p.id_number) for p in people)
    assert len({p.id_number for p in people}) == len(people)
    assert 0.02 <= sum(not p.id_number.startswith("410182") for p in people) / len(people) <= 0.08
    hui = [p for p in people if p.ethnicity == "回族"]
    assert hui and {p.township for p in hui} <= {"乔楼镇", "金寨回族乡"}


def test_twins_and_namesakes_are_distinct_people():
    people = {p.resident_id: p for p in generate_population(5, 20_000, build_institutions(), date(2026, 11, 1))}
    twins = [p for p in people.values() if p.twin_of]
    namesakes = [p for p in people.values() if p.namesake_of]
    assert len(twins) >= 50 and len(namesakes) >= 10
    for twin in twins:
        sibling = people[twin.twin_of]
        assert twin.birth_date == sibling.birth_date and twin.household_id == sibling.household_id
        assert twin.id_number != sibling.id_number and twin.name != sibling.name
    for person in namesakes:
        other = people[person.namesake_of]
        assert (person.name, person.birth_date) == (other.name, other.birth_date)
        assert person.id_number != other.id_number and person.household_id != other.household_id


def test_activity_is_deterministic_and_mostly_primary_care():
    def day_of(seed: int):
        world = World({"seed": seed, "start_date": date(2026, 11, 1), "residents": 5000})
        world.people = {
            p.resident_id: p for p in generate_population(seed, 5000, world.institutions, date(2026, 11, 1))
        }
        world.appeared = {r: date(2026, 10, 31) for r in world.people}
        engine = ActivityEngine(world)
        engine._corrections = lambda rng, day, activity: None  # no answer-key writes in this unit test
        return world, [engine.day(date(2026, 11, 2) + timedelta(days=d)) for d in range(3)]

    world, first = day_of(9)
    _, again = day_of(9)
    assert first == again
    encounters = [e for day in first for e in day.encounters]
    primary = sum(
        world.by_code[e.org_code].org_type in ("村卫生室", "乡镇卫生院", "社区卫生服务中心") for e in encounters
    )
    assert 0.45 <= primary / len(encounters) <= 0.65
    assert all(e.end_at > e.start_at for e in encounters if e.kind == "inpatient")


def test_answer_key_covers_every_simulated_patient_record(pipeline_done):
    rows = _truth("SELECT source_system, count(*) FROM patient_truth GROUP BY 1")
    assert dict(rows).get("rmyy_his", 0) > 0
    unknown = _truth(
        "SELECT count(*) FROM patient_truth t LEFT JOIN person p USING (resident_id) WHERE p.resident_id IS NULL"
    )
    assert unknown[0][0] == 0
