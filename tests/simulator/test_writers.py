"""The county's writer processes: systems balanced by cost, days written in order, failures reported by name.

The systems here are small file-writing member systems (real forked processes and pipes, no database), so the
orchestration is checked apart from any vendor's rendering.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from simulator.county import Writers, balanced_groups
from simulator.events import DayActivity
from simulator.systems.base import MemberSystem
from simulator.world import World

D1 = date(2026, 11, 1)


class DayLog(MemberSystem):
    """Appends each day it writes, with what it saw of the world, to its own file."""

    def __init__(self, world: World, config: dict) -> None:
        super().__init__(world, config)
        self.source_system = config["name"]
        self.path = Path(config["path"])

    def create_schema(self, reset: bool = False) -> None:
        pass

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        if activity.day == self.config.get("fail_on"):
            raise ValueError(f"cannot render {activity.day}")
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"day": activity.day.isoformat(), "people": len(self.world.people)}) + "\n")
        return {"log": len(activity.encounters) + 1}


def _systems(world: World, tmp_path: Path, costs: dict[str, float], fail: str = "", on: date | None = None):
    return [
        DayLog(
            world,
            {
                "name": name,
                "path": tmp_path / f"{name}.jsonl",
                "write_cost": cost,
                **({"fail_on": on} if name == fail else {}),
            },
        )
        for name, cost in costs.items()
    ]


def _log(tmp_path: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_systems_are_balanced_by_write_cost(small_world, tmp_path):
    systems = _systems(
        small_world, tmp_path, {"his": 1.5, "cloud": 1.2, "gw": 1.2, "yb": 0.7, "api": 0.5, "zyy": 0.4, "fy": 0.1}
    )
    groups = balanced_groups(systems, 2)
    assert sorted(s.source_system for g in groups for s in g) == sorted(s.source_system for s in systems)
    loads = sorted(sum(s.config["write_cost"] for s in g) for g in groups)
    assert loads[1] - loads[0] <= 0.1
    assert len(balanced_groups(systems[:1], 3)) == 1  # never an idle process


def test_every_system_writes_every_day_in_order_and_sees_the_newcomers(small_world, tmp_path):
    systems = _systems(small_world, tmp_path, {"a": 1.0, "b": 1.0, "c": 0.5})
    newcomer = next(iter(small_world.people.values()))
    days = [D1 + timedelta(days=i) for i in range(5)]
    writers = Writers(systems, small_world, workers=2, ahead=2)
    reports = []
    for day in days:
        arrival = DayActivity(day, new_people=[replace(newcomer, resident_id=-day.day)])
        reports += writers.write(arrival)
    reports += writers.finish()
    assert [r.day for r in reports] == days
    assert all(r.rows == {"a.log": 1, "b.log": 1, "c.log": 1} for r in reports)
    for name in "abc":
        log = _log(tmp_path, name)
        assert [e["day"] for e in log] == [d.isoformat() for d in days]
        # each day's newcomers are in the writer's world from the next day on, as in a sequential run
        assert [e["people"] for e in log] == [len(small_world.people) + i for i in range(5)]


def test_a_failing_system_stops_the_run_with_its_name_and_day(small_world, tmp_path):
    systems = _systems(small_world, tmp_path, {"good": 1.0, "broken": 1.0}, fail="broken", on=D1 + timedelta(days=1))
    writers = Writers(systems, small_world, workers=2, ahead=1)
    with pytest.raises(RuntimeError, match=r"simulating 2026-11-02 failed in broken: ValueError: cannot render"):
        for i in range(4):
            writers.write(DayActivity(D1 + timedelta(days=i)))
        writers.finish()
    assert [e["day"] for e in _log(tmp_path, "broken")] == ["2026-11-01"]
    writers.close()  # safe to call again
