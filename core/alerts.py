"""The operators' alert table (``ops.alert``) and the log line an operator can grep (``XYDRC-ALERT``).

Every layer raises its alerts here: a failed Airflow task (through ``./drc alert task-failed``), an institution
whose business day is missing or late at the deadline. One open row per (kind, subject): a repeat updates it
(count, last seen) instead of piling up; resolving closes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

import sqlalchemy as sa

from core.db import apply_ddl, warehouse_engine

log = logging.getLogger("xydrc.alert")

DDL = [
    """CREATE TABLE IF NOT EXISTS ops.alert (
        alert_id        bigserial PRIMARY KEY,
        kind            text NOT NULL,           -- task_failed, day_missing, day_late
        severity        text NOT NULL CHECK (severity IN ('error', 'warning', 'info')),
        subject         text NOT NULL,           -- what it is about: dag.task, source/org/day
        source_system   text,
        org_code        text,
        business_date   date,
        message         text NOT NULL,
        first_seen      timestamptz NOT NULL DEFAULT now(),
        last_seen       timestamptz NOT NULL DEFAULT now(),
        occurrences     integer NOT NULL DEFAULT 1,
        resolved_at     timestamptz,
        resolution      text)""",
    """CREATE UNIQUE INDEX IF NOT EXISTS alert_open_once ON ops.alert (kind, subject) WHERE resolved_at IS NULL""",
    """CREATE OR REPLACE VIEW ops.v_open_alert AS
       SELECT * FROM ops.alert WHERE resolved_at IS NULL ORDER BY last_seen DESC""",
]


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    subject: str
    message: str
    source_system: str | None = None
    org_code: str | None = None
    business_date: date | None = None


@lru_cache(maxsize=1)
def ensure_tables() -> None:
    apply_ddl("ops", DDL)


def raise_alert(alert: Alert) -> None:
    """Open the alert (or count a repeat of the open one) and write the greppable log line."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.alert (kind, severity, subject, source_system, org_code, business_date, message) "
                "VALUES (:kind, :severity, :subject, :source_system, :org_code, :business_date, :message) "
                "ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO UPDATE SET "
                "occurrences = ops.alert.occurrences + 1, last_seen = now(), message = EXCLUDED.message"
            ),
            alert.__dict__,
        )
    log.warning(
        "XYDRC-ALERT kind=%s severity=%s subject=%s %s", alert.kind, alert.severity, alert.subject, alert.message
    )


def resolve_alerts(kind: str, subject: str, resolution: str) -> int:
    """Close the open alert of this kind and subject (e.g. a missing day whose data has come)."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        return conn.execute(
            sa.text(
                "UPDATE ops.alert SET resolved_at = now(), resolution = :resolution "
                "WHERE kind = :kind AND subject = :subject AND resolved_at IS NULL"
            ),
            {"kind": kind, "subject": subject, "resolution": resolution},
        ).rowcount


def open_alerts(since: datetime | None = None) -> list[dict]:
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.text(
                    "SELECT * FROM ops.v_open_alert WHERE last_seen >= coalesce(CAST(:since AS timestamptz), "
                    "'-infinity')"
                ),
                {"since": since},
            )
        ]
