"""Runs the whole simulated county day by day: one activity engine, every member system rendering it.

Systems are listed in config/simulator.yaml (``systems: <name>: {class: module:Class, ...}``), so a new
simulated source is configuration plus its renderer. Days are generated in order; every system skips the
days it already holds, so an interrupted run simply continues.
"""

from __future__ import annotations

import importlib
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing.connection import Connection, Pipe
from typing import Any

from core.db import forget_connections_after_fork
from simulator import answer_key
from simulator.activity import (
    ActivityEngine,
    apply_population_changes,
    forget_scheduled_corrections,
    remember_population_changes,
)
from simulator.events import DayActivity
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


def _write(systems: list[MemberSystem], activity: DayActivity) -> dict[str, int]:
    rows: dict[str, int] = {}
    for system in systems:
        for table, count in system.write_day(activity).items():
            rows[f"{system.source_system}.{table}"] = count
    return rows


def balanced_groups(systems: list[MemberSystem], workers: int) -> list[list[MemberSystem]]:
    """Systems split over ``workers`` by their configured daily write cost, heaviest first onto the lightest."""
    groups: list[list[MemberSystem]] = [[] for _ in range(min(workers, len(systems)))]
    loads = [0.0] * len(groups)
    for system in sorted(systems, key=lambda s: -float(s.config.get("write_cost", 1.0))):
        lightest = loads.index(min(loads))
        groups[lightest].append(system)
        loads[lightest] += float(system.config.get("write_cost", 1.0))
    return groups


def _serve(systems: list[MemberSystem], world: World, channel: Connection) -> None:
    """A writer process: writes the days it receives, in order, for its own systems, and answers each with
    the rows written or the error; it stops on an empty message or after an error."""
    forget_connections_after_fork()
    while payload := channel.recv_bytes():
        activity: DayActivity = pickle.loads(payload)
        try:
            channel.send({"day": activity.day, "rows": _write(systems, activity)})
        except Exception as exc:  # reported to the parent, which raises it with the system names
            channel.send({"day": activity.day, "error": f"{type(exc).__name__}: {exc}"})
            return
        remember_population_changes(world, activity)


class Writers:
    """Forked writer processes that keep their systems (and their caches) for the whole run.

    Groups of systems write side by side while this process generates the next days' activity (up to
    ``ahead`` days in flight). Systems are independent (own storage, own answer-key rows), so the data equals
    a sequential run's. A day is reported once every group has written it.
    """

    def __init__(self, systems: list[MemberSystem], world: World, workers: int, ahead: int = 2) -> None:
        self.ahead = ahead
        self.groups = balanced_groups(systems, workers)
        self.channels: list[Connection] = []
        self.pids: list[int] = []
        self.pending: list[DayActivity] = []  # sent, not yet reported
        self.reported_at = time.monotonic()
        for group in self.groups:
            parent_end, child_end = Pipe()
            pid = os.fork()
            if pid == 0:  # os.fork, not multiprocessing: works inside daemonic workers (Airflow tasks) too
                for channel in [parent_end, *self.channels]:  # only the parent talks to the writers
                    channel.close()
                status = 0
                try:
                    _serve(group, world, child_end)
                except BaseException:  # the parent sees the closed pipe and reports the group as dead
                    status = 1
                os._exit(status)
            child_end.close()
            self.channels.append(parent_end)
            self.pids.append(pid)

    def write(self, activity: DayActivity) -> list[DayReport]:
        """Hand the day to every group; returns the days that have finished meanwhile (oldest first)."""
        payload = pickle.dumps(activity, protocol=pickle.HIGHEST_PROTOCOL)
        for channel in self.channels:
            channel.send_bytes(payload)
        self.pending.append(activity)
        reports = []
        while len(self.pending) > self.ahead:
            reports.append(self._collect())
        return reports

    def finish(self) -> list[DayReport]:
        """Wait for every day sent; stop the writers."""
        try:
            return [self._collect() for _ in range(len(self.pending))]
        finally:
            self.close()

    def close(self) -> None:
        for channel in self.channels:
            try:
                channel.send_bytes(b"")
            except OSError:  # that writer has already stopped
                pass
            channel.close()
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.channels, self.pids = [], []

    def _collect(self) -> DayReport:
        activity = self.pending.pop(0)
        rows: dict[str, int] = {}
        errors = []
        for channel, group in zip(self.channels, self.groups, strict=True):
            try:
                answer = channel.recv()
            except EOFError:
                answer = {"error": "writer process died without a report"}
            if "error" in answer:
                errors.append(f"{', '.join(s.source_system for s in group)}: {answer['error']}")
            rows.update(answer.get("rows", {}))
        if errors:
            self.close()
            raise RuntimeError(f"simulating {activity.day} failed in " + "; ".join(errors))
        started, self.reported_at = self.reported_at, time.monotonic()  # the day's share of the run's time
        return DayReport(activity.day, len(activity.encounters), rows, self.reported_at - started)


class County:
    def __init__(self, config: dict[str, Any], only: list[str] | None = None) -> None:
        self.config = config
        self.world = World(config)
        self.only = only

    def reset(self) -> None:
        answer_key.create_schema(reset=True)
        forget_scheduled_corrections()
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
        workers = self.config.get("workers", 1)
        writers = Writers(systems, self.world, workers) if workers > 1 and day <= end else None
        reports: list[DayReport] = []

        def done(finished: list[DayReport]) -> None:
            reports.extend(finished)
            for report in finished if progress else []:
                progress(report)

        try:
            while day <= end:
                started = time.monotonic()
                activity = engine.day(day)
                answer_key.record_events(activity)
                if writers:
                    finished = writers.write(activity)  # the writers apply the population changes after writing
                    apply_population_changes(self.world, activity)
                    done(finished)
                else:
                    rows = _write(systems, activity)
                    apply_population_changes(self.world, activity)
                    done([DayReport(day, len(activity.encounters), rows, time.monotonic() - started)])
                day += timedelta(days=1)
            if writers:
                done(writers.finish())
        finally:
            if writers:
                writers.close()
        return reports

    def last_day(self) -> date | None:
        self.world.load_people()
        return self.last_complete_day(load_systems(self.world, self.config, self.only))
