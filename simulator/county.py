"""Runs the whole simulated county day by day: one activity engine, every member system rendering it.

Systems are listed in config/simulator.yaml (``systems: <name>: {class: module:Class, ...}``), so a new
simulated source is configuration plus its renderer. Days are generated in order; every system skips the
days it already holds, so an interrupted run simply continues.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from core.db import forget_connections_after_fork
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


def _write(systems: list[MemberSystem], activity) -> dict[str, int]:
    rows: dict[str, int] = {}
    for system in systems:
        for table, count in system.write_day(activity).items():
            rows[f"{system.source_system}.{table}"] = count
    return rows


def write_day(systems: list[MemberSystem], activity, workers: int) -> dict[str, int]:
    """Every system writes the day; with ``workers`` > 1, groups of systems write in forked processes.

    Forking shares the day's events without copying them; each child opens its own connections. Systems
    are independent (own storage, own answer-key rows), so the result equals the sequential one.
    """
    if workers <= 1:
        return _write(systems, activity)
    groups = [systems[i::workers] for i in range(workers)]
    children = []
    for group in groups[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: write its systems, report counts (or the error) through the pipe
            os.close(read_end)
            forget_connections_after_fork()
            try:
                payload, status = {"rows": _write(group, activity)}, 0
            except Exception as exc:  # reported to the parent, which raises it with the system names
                payload, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
            with os.fdopen(write_end, "w") as pipe:
                json.dump(payload, pipe)
            os._exit(status)
        os.close(write_end)
        children.append((pid, read_end, group))
    rows = _write(groups[0], activity)
    errors = []
    for pid, read_end, group in children:
        with os.fdopen(read_end) as pipe:
            payload = json.loads(pipe.read() or '{"error": "worker died without a report"}')
        os.waitpid(pid, 0)
        if "error" in payload:
            errors.append(f"{', '.join(s.source_system for s in group)}: {payload['error']}")
        rows.update(payload.get("rows", {}))
    if errors:
        raise RuntimeError(f"simulating {activity.day} failed in " + "; ".join(errors))
    return rows


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
        days = [s.last_day() for s in systems]
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
            rows = write_day(systems, activity, self.config.get("workers", 1))
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
