"""Runs the whole simulated county day by day: one activity engine, every member system rendering it.

Systems are listed in config/simulator.yaml (``systems: <name>: {class: module:Class, ...}``), so a new
simulated source is configuration plus its renderer. Days are generated in order; every system skips the
days it already holds, so an interrupted run simply continues.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from simulator import answer_key
from simulator.activity import ActivityEngine, apply_population_changes
from simulator.systems.base import MemberSystem
from simulator.world import World


@dataclass(frozen=True)
class DayReport:
    day: date
    encounters: int
    rows: dict[str, int]
    seconds: float


def load_systems(world: World, config: dict[str, Any], only: list[str] | None = None) -> list[MemberSystem]:
    systems = []
    for name, section in config.get("systems", {}).items():
        if (only and name not in only) or not section.get("enabled", True):
            continue
        module_name, class_name = section["class"].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        systems.append(cls(world, section))
    return systems


class County:
    def __init__(self, config: dict[str, Any], only: list[str] | None = None) -> None:
        self.config = config
        self.world = World(config)
        self.only = only

    def reset(self) -> None:
        answer_key.create_schema(reset=True)
        for system in load_systems(self.world, self.config, self.only):
            system.create_schema(reset=True)

    def last_complete_day(self, systems: list[MemberSystem]) -> date | None:
        days = [answer_key.last_written_day(s.source_system) for s in systems]
        return None if any(d is None for d in days) else min(days)

    def simulate_until(self, end: date, progress: Callable[[DayReport], None] | None = None) -> list[DayReport]:
        """Generate and write every day from the first one some system lacks up to ``end``."""
        self.world.load_people()
        systems = load_systems(self.world, self.config, self.only)
        for system in systems:
            system.create_schema()
        engine = ActivityEngine(self.world, self.config.get("activity"))
        last = self.last_complete_day(systems)
        day = self.config["start_date"] if last is None else last + timedelta(days=1)
        reports = []
        while day <= end:
            started = time.monotonic()
            activity = engine.day(day)
            rows: dict[str, int] = {}
            for system in systems:
                for table, count in system.write_day(activity).items():
                    rows[f"{system.source_system}.{table}"] = count
            apply_population_changes(self.world, activity)
            report = DayReport(day, len(activity.encounters), rows, time.monotonic() - started)
            reports.append(report)
            if progress:
                progress(report)
            day += timedelta(days=1)
        return reports

    def last_day(self) -> date | None:
        self.world.load_people()
        return self.last_complete_day(load_systems(self.world, self.config, self.only))
