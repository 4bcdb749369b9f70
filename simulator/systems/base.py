"""What every simulated member system implements.

A system owns a set of institutions (``Institution.source_system``), a storage (database, inbox folder,
or HTTP API backend), its vendor's naming and local codes, and its own dirt. The orchestrator calls
``write_day`` once per day, in date order; a day must be written atomically and exactly once (a re-run
of a day already written is a no-op), and the answer-key entries of the day are flushed with it.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from datetime import date
from typing import Any

from simulator import answer_key
from simulator.events import DayActivity, Encounter, Institution
from simulator.world import World


class MemberSystem(ABC):
    source_system: str = ""

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        self.world = world
        self.config = config  # this system's section of config/simulator.yaml
        self.institutions: dict[str, Institution] = {
            i.org_code: i for i in world.institutions if i.source_system == self.source_system
        }

    def rng(self, day: date, purpose: str = "") -> random.Random:
        """A generator seeded by (seed, system, day, purpose): same seed, same data, whatever ran before."""
        return random.Random(f"{self.world.seed}:{self.source_system}:{day.isoformat()}:{purpose}")

    def own_encounters(self, activity: DayActivity) -> list[Encounter]:
        return [e for e in activity.encounters if e.org_code in self.institutions]

    @abstractmethod
    def create_schema(self, reset: bool = False) -> None:
        """Create the system's storage if missing (drop it first when ``reset``)."""

    def last_day(self) -> date | None:
        """The last day already written, or None (the answer key records every written day)."""
        return answer_key.last_written_day(self.source_system)

    def already_written(self, day: date) -> bool:
        last = self.last_day()
        return last is not None and last >= day

    @abstractmethod
    def write_day(self, activity: DayActivity) -> dict[str, int]:
        """Render and store one day's activity; return rows (or files) written per table."""
