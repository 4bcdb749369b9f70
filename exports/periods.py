"""Reporting periods of a feed: a day (20261103) or a month (202611), their bounds and deadlines."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

COUNTY_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


@dataclass(frozen=True, order=True)
class Period:
    kind: str  # day | month
    start: date

    @property
    def end(self) -> date:
        if self.kind == "day":
            return self.start
        return (self.start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)

    @property
    def key(self) -> str:
        return f"{self.start:%Y%m%d}" if self.kind == "day" else f"{self.start:%Y%m}"

    def previous(self) -> Period:
        return Period.containing(self.kind, self.start - timedelta(days=1))

    def deadline(self, days_after_end: int, at: str) -> datetime:
        """When the receiver expects the period at the latest (county time)."""
        return datetime.combine(self.end + timedelta(days=days_after_end), time.fromisoformat(at), COUNTY_TZ)

    def __str__(self) -> str:
        return self.key

    @staticmethod
    def containing(kind: str, day: date) -> Period:
        return Period(kind, day if kind == "day" else day.replace(day=1))

    @staticmethod
    def parse(kind: str, text: str) -> Period:
        """'2026-11-03' / '20261103' for days, '2026-11' / '202611' for months."""
        digits = re.sub(r"[-/]", "", text.strip())
        try:
            if kind == "day" and len(digits) == 8:
                return Period(kind, datetime.strptime(digits, "%Y%m%d").date())
            if kind == "month" and len(digits) == 6:
                return Period(kind, datetime.strptime(digits, "%Y%m").date())
        except ValueError:
            pass
        example = "2026-11-03" if kind == "day" else "2026-11"
        raise ValueError(f"period '{text}' is not a {kind} (write it like {example})")


def recent_periods(kind: str, through: date, count: int, include_open: bool) -> list[Period]:
    """The `count` latest periods that ended by `through` (plus the open one holding `through`), oldest first."""
    current = Period.containing(kind, through)
    latest = current if current.end <= through or include_open else current.previous()
    periods = [latest]
    while len(periods) < max(count, 1):
        periods.append(periods[-1].previous())
    return sorted(periods)
