"""The export ledger in PostgreSQL schema ``export``: every version of every feed × period (with its manifest,
so a re-run reproduces it byte for byte), every delivery attempt with its result and receipt, and periods that
wait for inputs or were refused. ``v_feed_status`` is what `./drc export status` and the dashboards read.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from core.db import apply_ddl

DDL = [
    """CREATE TABLE IF NOT EXISTS export.feed_version (
        feed            text NOT NULL,
        period          text NOT NULL,
        version         integer NOT NULL,
        period_start    date NOT NULL,
        period_end      date NOT NULL,
        complete        boolean NOT NULL,
        reason          text NOT NULL,
        missing         jsonb NOT NULL DEFAULT '[]',
        file_name       text NOT NULL,
        sha256          text NOT NULL,
        bytes           bigint NOT NULL,
        row_count       bigint NOT NULL,
        manifest        text NOT NULL,
        outbox_dir      text NOT NULL,
        deadline        timestamptz NOT NULL,
        generated_at    timestamptz NOT NULL,
        PRIMARY KEY (feed, period, version))""",
    """CREATE TABLE IF NOT EXISTS export.delivery (
        delivery_id     bigserial PRIMARY KEY,
        feed            text NOT NULL,
        period          text NOT NULL,
        version         integer NOT NULL,
        target          text NOT NULL,
        trigger         text NOT NULL CHECK (trigger IN ('run', 'catch_up', 'redeliver')),
        attempt         integer NOT NULL,
        started_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL,
        result          text NOT NULL CHECK (result IN ('delivered', 'failed')),
        error           text,
        receipt         jsonb,
        FOREIGN KEY (feed, period, version) REFERENCES export.feed_version)""",
    "CREATE INDEX IF NOT EXISTS delivery_version ON export.delivery (feed, period, version)",
    """CREATE TABLE IF NOT EXISTS export.period_state (
        feed            text NOT NULL,
        period          text NOT NULL,
        state           text NOT NULL CHECK (state IN ('waiting', 'refused', 'done')),
        detail          text,
        checked_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (feed, period))""",
    """CREATE OR REPLACE VIEW export.v_feed_status AS
    WITH latest AS (
        SELECT DISTINCT ON (feed, period) * FROM export.feed_version ORDER BY feed, period, version DESC),
    deliveries AS (
        SELECT feed, period, version, count(*) AS attempts,
               min(finished_at) FILTER (WHERE result = 'delivered') AS delivered_at,
               (array_agg(error ORDER BY delivery_id DESC) FILTER (WHERE result = 'failed'))[1] AS last_error
        FROM export.delivery GROUP BY 1, 2, 3)
    SELECT coalesce(l.feed, s.feed) AS feed, coalesce(l.period, s.period) AS period, l.version, l.complete,
           l.reason, l.missing, l.row_count, l.file_name, l.deadline, l.generated_at, d.delivered_at,
           coalesce(d.attempts, 0) AS attempts, d.last_error,
           CASE WHEN s.state IN ('waiting', 'refused') THEN s.state
                WHEN l.version IS NULL THEN 'not_produced'
                WHEN d.delivered_at IS NULL AND d.attempts IS NULL THEN 'pending'
                WHEN d.delivered_at IS NULL THEN 'failed'
                WHEN d.delivered_at > l.deadline THEN 'delivered_late'
                ELSE 'delivered' END AS status,
           s.detail AS state_detail
    FROM latest l
    LEFT JOIN deliveries d USING (feed, period, version)
    FULL JOIN (SELECT * FROM export.period_state WHERE state <> 'done') s
        ON s.feed = l.feed AND s.period = l.period""",
]


def ensure_tables() -> None:
    apply_ddl("export", DDL)


def latest_version(conn: sa.Connection, feed: str, period: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.text(
                "SELECT * FROM export.feed_version WHERE feed = :feed AND period = :period ORDER BY version DESC "
                "LIMIT 1"
            ),
            {"feed": feed, "period": period},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def version(conn: sa.Connection, feed: str, period: str, number: int | None) -> dict[str, Any] | None:
    if number is None:
        return latest_version(conn, feed, period)
    row = (
        conn.execute(
            sa.text("SELECT * FROM export.feed_version WHERE feed = :feed AND period = :period AND version = :version"),
            {"feed": feed, "period": period, "version": number},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def insert_version(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO export.feed_version (feed, period, version, period_start, period_end, complete, reason, "
            "missing, "
            "file_name, sha256, bytes, row_count, manifest, outbox_dir, deadline, generated_at) VALUES (:feed, "
            ":period, "
            ":version, :period_start, :period_end, :complete, :reason, CAST(:missing AS jsonb), :file_name, :sha256, "
            ":bytes, :row_count, :manifest, :outbox_dir, :deadline, :generated_at)"
        ),
        {**row, "missing": json.dumps(row["missing"], ensure_ascii=False)},
    )


def set_period_state(conn: sa.Connection, feed: str, period: str, state: str, detail: str | None) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO export.period_state (feed, period, state, detail, checked_at) VALUES (:f, :p, :s, :d, now()) "
            "ON CONFLICT (feed, period) DO UPDATE SET state = :s, detail = :d, checked_at = now()"
        ),
        {"f": feed, "p": period, "s": state, "d": detail},
    )


def record_attempt(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO export.delivery (feed, period, version, target, trigger, attempt, started_at, finished_at, "
            "result, error, receipt) VALUES (:feed, :period, :version, :target, :trigger, :attempt, :started_at, "
            ":finished_at, :result, :error, CAST(:receipt AS jsonb))"
        ),
        {**row, "receipt": json.dumps(row.get("receipt"), ensure_ascii=False) if row.get("receipt") else None},
    )


def undelivered(conn: sa.Connection, feed: str | None = None) -> list[dict[str, Any]]:
    """Versions never delivered (the latest of each period only: an older one is superseded)."""
    return [
        dict(r)
        for r in conn.execute(
            sa.text(
                "SELECT v.* FROM export.feed_version v WHERE (CAST(:feed AS text) IS NULL OR v.feed = :feed) "
                "AND v.version = (SELECT max(version) FROM export.feed_version m "
                "WHERE m.feed = v.feed AND m.period = v.period) "
                "AND NOT EXISTS (SELECT 1 FROM export.delivery d WHERE d.feed = v.feed AND d.period = v.period "
                "AND d.version = v.version AND d.result = 'delivered') ORDER BY v.feed, v.period"
            ),
            {"feed": feed},
        ).mappings()
    ]


def feed_status(conn: sa.Connection, feed: str | None = None) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            sa.text(
                "SELECT * FROM export.v_feed_status WHERE CAST(:feed AS text) IS NULL OR feed = :feed ORDER BY feed, "
                "period"
            ),
            {"feed": feed},
        ).mappings()
    ]
