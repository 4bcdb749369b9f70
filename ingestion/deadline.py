"""At the deadline, each institution's business day is judged on time, late or missing (``ingest.day_judgement``).

The county's rule: a business day's data is uploaded by 24:00 of the next day (Beijing time). Per source ×
institution × business day:

- ``on_time``: rows arrived and none was committed at the source after the deadline;
- ``late``: rows committed after the deadline, or rows that came after the day had been judged missing;
- ``missing``: the deadline has passed and nothing arrived from an institution that was expected to send
  (it sent on every one of the source's previous days, up to seven and at least three; or its source
  is down now);
- ``pending``: expected, nothing yet, deadline not passed (the nightly run marks the day incomplete);
- ``no_activity``: nothing arrived from an institution that does not send every day (a village clinic's
  quiet Sunday is not an alarm).

Missing days open an ``ops.alert`` (and its log line); when the data comes, the alert is resolved and the
day becomes late. Re-judging is idempotent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from core.alerts import Alert, raise_alert, resolve_alerts
from core.db import apply_ddl, warehouse_engine
from ingestion.monitoring import ensure_tables as ensure_monitoring_tables
from ingestion.registry import SourceConfig

COUNTY_TZ = ZoneInfo("Asia/Shanghai")
REGULAR_DAYS = 7  # an institution that sent on each of the source's previous (up to) 7 days is expected,
MIN_HISTORY_DAYS = 3  # once the source has delivered on at least 3 days (one day of history proves nothing)
LOOKBACK_DAYS = 31  # days re-judged per run (older judgements are final)
STATUS_ZH = {"on_time": "按时", "late": "迟报", "missing": "缺报", "pending": "待上报", "no_activity": "无业务"}

DDL = [
    """CREATE TABLE IF NOT EXISTS ingest.day_judgement (
        source_system   text NOT NULL,
        org_code        text NOT NULL,
        business_date   date NOT NULL,
        status          text NOT NULL CHECK (status IN ('on_time', 'late', 'missing', 'pending', 'no_activity')),
        rows            bigint NOT NULL DEFAULT 0,
        late_rows       bigint NOT NULL DEFAULT 0,
        deadline        timestamptz NOT NULL,
        arrived_at      timestamptz,
        judged_at       timestamptz NOT NULL DEFAULT now(),
        was_missing     boolean NOT NULL DEFAULT false,
        PRIMARY KEY (source_system, org_code, business_date))""",
    """CREATE OR REPLACE VIEW ingest.v_day_completeness AS
       SELECT business_date, org_code,
              CASE WHEN bool_or(status = 'missing') THEN 'missing' WHEN bool_or(status = 'pending') THEN 'pending'
                   WHEN bool_or(status = 'late') THEN 'late'
                   WHEN bool_or(status = 'on_time') THEN 'on_time' ELSE 'no_activity' END AS status,
              bool_and(status NOT IN ('missing', 'pending')) AS complete,
              string_agg(source_system, ',' ORDER BY source_system)
                  FILTER (WHERE status IN ('missing', 'pending')) AS incomplete_sources
       FROM ingest.day_judgement GROUP BY business_date, org_code""",
]


@dataclass(frozen=True)
class Judgement:
    source_system: str
    org_code: str
    business_date: date
    status: str
    rows: int
    late_rows: int
    deadline: datetime
    arrived_at: datetime | None
    was_missing: bool


def deadline_of(day: date) -> datetime:
    """24:00 of the next day, Beijing time."""
    return datetime.combine(day + timedelta(days=2), time(0), COUNTY_TZ)


@lru_cache(maxsize=1)
def ensure_tables() -> None:
    ensure_monitoring_tables()
    apply_ddl("ingest", DDL)


def _arrivals(conn, source: str, first: date, last: date) -> dict[tuple[str, date], tuple[int, int, datetime]]:
    rows = conn.execute(
        sa.text(
            "SELECT a.org_code, a.business_date, sum(a.rows), sum(a.late_rows), max(b.finished_at) "
            "FROM ingest.arrival a JOIN ingest.landed_batch b USING (batch_id) "
            "WHERE b.source_system = :s AND a.business_date BETWEEN :first AND :last GROUP BY 1, 2"
        ),
        {"s": source, "first": first, "last": last},
    )
    return {(org, day): (int(n), int(late), at) for org, day, n, late, at in rows}


def _source_is_down(conn, source: str) -> bool:
    """The source's latest attempt could not reach it, or failed (ingest.v_source_status)."""
    return (
        conn.execute(
            sa.text("SELECT status = 'failed' FROM ingest.v_source_status WHERE source_system = :s"), {"s": source}
        ).scalar()
        is True
    )


def judge_source(source: SourceConfig, days: list[date], now: datetime) -> list[Judgement]:
    """Judge one source's institutions on the given business days (reads the collection log)."""
    if not days:
        return []
    with warehouse_engine().connect() as conn:
        arrived = _arrivals(conn, source.name, min(days) - timedelta(days=REGULAR_DAYS), max(days))
        down = _source_is_down(conn, source.name)
        was_missing = {
            (org, day)
            for org, day in conn.execute(
                sa.text(
                    "SELECT org_code, business_date FROM ingest.day_judgement WHERE source_system = :s "
                    "AND business_date BETWEEN :first AND :last AND (status = 'missing' OR was_missing)"
                ),
                {"s": source.name, "first": min(days), "last": max(days)},
            )
        }
    return classify(source.name, source.institutions, days, arrived, down=down, was_missing=was_missing, now=now)


def classify(
    source: str,
    institutions: tuple[str, ...],
    days: list[date],
    arrived: dict[tuple[str, date], tuple[int, int, datetime | None]],
    *,
    down: bool,
    was_missing: set[tuple[str, date]],
    now: datetime,
) -> list[Judgement]:
    """The rule itself, pure: ``arrived`` maps (institution, day) to (rows, late rows, last arrival)."""
    source_days = sorted({day for _, day in arrived})
    judgements = []
    for day in days:
        previous = [d for d in source_days if d < day][-REGULAR_DAYS:]
        deadline = deadline_of(day)
        for org in institutions:
            rows, late_rows, at = arrived.get((org, day), (0, 0, None))
            missed = (org, day) in was_missing
            sent_before = [d for d in previous if (org, d) in arrived]
            regular = len(previous) >= MIN_HISTORY_DAYS and len(sent_before) == len(previous)
            expected = regular or (down and bool(sent_before))
            if rows:
                status = "late" if late_rows or missed else "on_time"
            elif not expected:
                status = "no_activity"
            else:
                status = "missing" if now >= deadline else "pending"
            judgements.append(Judgement(source, org, day, status, rows, late_rows, deadline, at, missed))
    return judgements


def _record(judgements: list[Judgement]) -> list[Judgement]:
    """Store the judgements, then open or close their alerts (after the commit: an alert names a stored day)."""
    if not judgements:
        return judgements
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.day_judgement (source_system, org_code, business_date, status, rows, late_rows, "
                "deadline, arrived_at, was_missing) VALUES (:source_system, :org_code, :business_date, :status, "
                ":rows, :late_rows, :deadline, :arrived_at, :was_missing) "
                "ON CONFLICT (source_system, org_code, business_date) DO UPDATE SET status = EXCLUDED.status, "
                "rows = EXCLUDED.rows, late_rows = EXCLUDED.late_rows, arrived_at = EXCLUDED.arrived_at, "
                "was_missing = EXCLUDED.was_missing OR ingest.day_judgement.was_missing, judged_at = now()"
            ),
            [j.__dict__ for j in judgements],
        )
    for judgement in judgements:
        _alert(judgement)
    return judgements


def _alert(judgement: Judgement) -> None:
    subject = f"{judgement.source_system}/{judgement.org_code}/{judgement.business_date}"
    if judgement.status == "missing":
        raise_alert(
            Alert(
                "day_missing",
                "error",
                subject,
                f"{judgement.business_date} 的数据在截止时间 {judgement.deadline:%Y-%m-%d %H:%M} 前未到达"
                f"（来源 {judgement.source_system}，机构 {judgement.org_code}）；该日标记为不完整。"
                " Check `./drc ingest status`; the day is re-processed when the data comes.",
                judgement.source_system,
                judgement.org_code,
                judgement.business_date,
            )
        )
    elif judgement.status == "late" and judgement.was_missing:
        resolve_alerts("day_missing", subject, f"数据已于 {judgement.arrived_at:%Y-%m-%d %H:%M} 迟到到达")


def judge(sources: list[SourceConfig], through: date, now: datetime | None = None) -> list[Judgement]:
    """Judge every source's last LOOKBACK_DAYS business days up to ``through``; store, alert, return."""
    ensure_tables()
    now = now or datetime.now(COUNTY_TZ)
    with warehouse_engine().connect() as conn:
        first = conn.execute(sa.text("SELECT min(business_date) FROM ingest.arrival")).scalar()
    if first is None:
        return []
    start = max(first, through - timedelta(days=LOOKBACK_DAYS - 1))
    days = [start + timedelta(days=i) for i in range((through - start).days + 1)]
    return _record([j for source in sources for j in judge_source(source, days, now)])


def late_arrivals(source: SourceConfig, now: datetime | None = None) -> list[Judgement]:
    """Days of this source judged missing whose data has come since: they become late and their alerts close."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        days = sorted(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT j.business_date FROM ingest.day_judgement j JOIN ingest.arrival a "
                    "ON a.org_code = j.org_code AND a.business_date = j.business_date "
                    "JOIN ingest.landed_batch b ON b.batch_id = a.batch_id AND b.source_system = j.source_system "
                    "WHERE j.source_system = :s AND j.status = 'missing'"
                ),
                {"s": source.name},
            ).scalars()
        )
    return _record(
        [j for j in judge_source(source, days, now or datetime.now(COUNTY_TZ)) if j.status == "late" and j.was_missing]
    )


def summary(judgements: list[Judgement]) -> Counter:
    return Counter(j.status for j in judgements)
