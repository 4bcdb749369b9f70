"""Collection monitoring (采集进度监控/状态监测) in PostgreSQL schema ``ingest``.

Tables: ``landed_batch`` (one row per bronze commit), ``file_ledger`` (every delivered file), ``arrival``
(rows per institution and business day of each batch, with the ones committed after the 24:00 next-day
deadline), ``table_run`` (every attempt, including failures), ``schema_change``, ``source_checkpoint``
(resume point of log-based streams), ``replication_slot`` (WAL a CDC slot retains), ``delete_guard``
(snapshots stopped for deleting too much, and their acceptance), ``rewind_guard`` (watermark sources stopped
for going back below bronze's newest change, and their acceptance). ``table_run.counts`` holds what a run saw
besides the rows it landed (NULL-watermark rows, re-ordered records, deletes). Views: ``v_table_status``,
``v_source_status``, ``v_timeliness``. Every write is idempotent. :func:`source_lock` is the one lock that
keeps two runs of a source apart.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa

from core.alerts import Alert, raise_alert, resolve_alerts
from core.db import apply_ddl, warehouse_engine
from core.privacy import redact_personal

DDL = [
    """CREATE TABLE IF NOT EXISTS ingest.landed_batch (
        batch_id        text PRIMARY KEY,
        source_system   text NOT NULL,
        table_name      text NOT NULL,
        org_code        text NOT NULL,
        mode            text NOT NULL,
        rows_landed     bigint NOT NULL,
        offset_from     text,
        offset_to       text,
        last_source_ts  timestamp,
        started_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL,
        status          text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ingest.arrival (
        batch_id        text NOT NULL REFERENCES ingest.landed_batch ON DELETE CASCADE,
        org_code        text NOT NULL,
        business_date   date NOT NULL,
        rows            bigint NOT NULL,
        late_rows       bigint NOT NULL,
        last_source_ts  timestamp,
        PRIMARY KEY (batch_id, org_code, business_date))""",
    """CREATE TABLE IF NOT EXISTS ingest.table_run (
        run_id          bigserial PRIMARY KEY,
        source_system   text NOT NULL,
        table_name      text NOT NULL,
        mode            text NOT NULL,
        started_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL,
        status          text NOT NULL,
        rows_landed     bigint NOT NULL DEFAULT 0,
        error           text)""",
    "ALTER TABLE ingest.table_run ADD COLUMN IF NOT EXISTS counts jsonb",
    "CREATE INDEX IF NOT EXISTS table_run_latest ON ingest.table_run (source_system, table_name, run_id DESC)",
    """CREATE TABLE IF NOT EXISTS ingest.schema_change (
        source_system   text NOT NULL,
        table_name      text NOT NULL,
        column_name     text NOT NULL,
        action          text NOT NULL,
        detected_at     timestamptz NOT NULL DEFAULT now(),
        accepted_at     timestamptz,
        PRIMARY KEY (source_system, table_name, column_name, action))""",
    """CREATE TABLE IF NOT EXISTS ingest.source_checkpoint (
        source_system   text PRIMARY KEY,
        position        text NOT NULL,
        updated_at      timestamptz NOT NULL DEFAULT now())""",
    # A snapshot that would delete more than max_delete_share of a table: stopped until an operator accepts.
    """CREATE TABLE IF NOT EXISTS ingest.delete_guard (
        guard_id        bigserial PRIMARY KEY,
        source_system   text NOT NULL,
        table_name      text NOT NULL,
        deletes         bigint NOT NULL,
        current_rows    bigint NOT NULL,
        read_rows       bigint NOT NULL,
        detected_at     timestamptz NOT NULL DEFAULT now(),
        accepted_at     timestamptz,
        used_at         timestamptz)""",
    # A watermark source whose newest change went back below bronze's (reset, restored from an older backup):
    # stopped until an operator accepts, then read whole once per run until it passes bronze's newest again.
    """CREATE TABLE IF NOT EXISTS ingest.rewind_guard (
        guard_id        bigserial PRIMARY KEY,
        source_system   text NOT NULL,
        table_name      text NOT NULL,
        source_newest   text NOT NULL,
        bronze_newest   text NOT NULL,
        detected_at     timestamptz NOT NULL DEFAULT now(),
        accepted_at     timestamptz)""",
    # The WAL a logical replication slot makes its source keep (pg_logical), and who holds it.
    """CREATE TABLE IF NOT EXISTS ingest.replication_slot (
        source_system   text PRIMARY KEY,
        slot_name       text NOT NULL,
        retained_bytes  bigint NOT NULL,
        held_by         text,
        released        text,
        checked_at      timestamptz NOT NULL DEFAULT now())""",
    # Every file a 前置机 inbox delivered: landed / duplicate / quarantined (ingestion/file_drop.py).
    """CREATE TABLE IF NOT EXISTS ingest.file_ledger (
        file_id         bigserial PRIMARY KEY,
        source_system   text NOT NULL,
        table_name      text,
        file_name       text NOT NULL,
        sha256          text NOT NULL,
        bytes           bigint NOT NULL,
        encoding        text,
        status          text NOT NULL CHECK (status IN ('landed', 'duplicate', 'quarantined')),
        reason          text,
        rows            bigint NOT NULL DEFAULT 0,
        batch_id        text,
        delta_table_id  text,
        business_date   date,
        received_at     timestamptz NOT NULL,
        processed_at    timestamptz NOT NULL DEFAULT now(),
        moved_to        text,
        moved_at        timestamptz)""",
    # A delivery (bytes for a business day) lands once per source, whatever its name.
    """CREATE UNIQUE INDEX IF NOT EXISTS file_ledger_landed_once
       ON ingest.file_ledger (source_system, sha256, business_date) NULLS NOT DISTINCT WHERE status = 'landed'""",
    "CREATE INDEX IF NOT EXISTS file_ledger_recent ON ingest.file_ledger (source_system, processed_at DESC)",
    """CREATE OR REPLACE VIEW ingest.v_table_status AS
    WITH latest AS (
        SELECT DISTINCT ON (source_system, table_name) * FROM ingest.table_run
        ORDER BY source_system, table_name, run_id DESC),
    landed AS (
        SELECT source_system, table_name, sum(rows_landed) AS rows_total, max(finished_at) AS last_landed_at,
               max(last_source_ts) AS last_source_ts, count(*) AS batches
        FROM ingest.landed_batch GROUP BY 1, 2),
    last_batch AS (
        SELECT DISTINCT ON (source_system, table_name) source_system, table_name, offset_to,
               EXTRACT(EPOCH FROM finished_at - (last_source_ts AT TIME ZONE 'Asia/Shanghai')) AS lag_seconds
        FROM ingest.landed_batch ORDER BY source_system, table_name, finished_at DESC)
    SELECT l.source_system, l.table_name, l.mode, l.finished_at AS last_run_at, l.status AS last_status,
           l.rows_landed AS last_run_rows, l.error AS last_error, d.rows_total, d.batches, d.last_landed_at,
           d.last_source_ts, b.lag_seconds, b.offset_to AS last_offset, l.counts AS last_counts
    FROM latest l
    LEFT JOIN landed d USING (source_system, table_name)
    LEFT JOIN last_batch b USING (source_system, table_name)""",
    """CREATE OR REPLACE VIEW ingest.v_source_status AS
    SELECT source_system, min(mode) AS mode, max(last_run_at) AS last_run_at,
           CASE WHEN bool_or(last_status IN ('failed', 'source_down')) THEN 'failed'
                WHEN bool_or(last_status = 'stopped') THEN 'stopped' ELSE 'ok' END AS status,
           count(*) FILTER (WHERE table_name <> '*') AS tables,
           coalesce(sum(rows_total), 0) AS rows_total, max(lag_seconds) AS max_lag_seconds,
           string_agg(table_name || ': ' || last_error, '; ') FILTER (WHERE last_error IS NOT NULL) AS errors,
           (SELECT r.retained_bytes FROM ingest.replication_slot r WHERE r.source_system = t.source_system)
               AS slot_retained_bytes,
           (SELECT r.held_by FROM ingest.replication_slot r WHERE r.source_system = t.source_system) AS slot_held_by
    FROM ingest.v_table_status t GROUP BY source_system""",
    """CREATE OR REPLACE VIEW ingest.v_timeliness AS
    SELECT a.org_code, a.business_date, string_agg(DISTINCT b.source_system, ',') AS source_systems,
           sum(a.rows) AS rows, sum(a.late_rows) AS late_rows, max(a.last_source_ts) AS last_source_ts,
           (a.business_date + 2)::timestamp AS deadline,
           sum(a.late_rows) = 0 AS on_time
    FROM ingest.arrival a JOIN ingest.landed_batch b USING (batch_id)
    GROUP BY a.org_code, a.business_date""",
]


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    source_system: str
    table_name: str
    org_code: str
    mode: str
    rows_landed: int
    offset_from: str | None
    offset_to: str | None
    last_source_ts: datetime | None
    started_at: datetime
    finished_at: datetime
    status: str


@lru_cache(maxsize=1)
def ensure_tables() -> None:
    apply_ddl("ingest", DDL)


def _secrets() -> list[str]:
    names = [n for n in os.environ if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|SALT", n)]
    return sorted({os.environ[n] for n in names if len(os.environ[n]) >= 4}, key=len, reverse=True)


def mask(text: str | None) -> str | None:
    """Remove every configured credential (and password=... fragments) and every ID or mobile number
    (core.privacy.redact_personal) from a message before it is stored or logged."""
    if text is None:
        return None
    for secret in _secrets():
        text = text.replace(secret, "***")
    text = re.sub(r"(?i)(password|passwd|pwd|secret|token)(['\"]?\s*[=:]\s*['\"]?)[^\s&'\",;]+", r"\1\2***", text)
    return redact_personal(text)


def record_batch(record: BatchRecord, arrivals: list[dict]) -> None:
    ensure_tables()
    with warehouse_engine().begin() as conn:
        inserted = conn.execute(
            sa.text(
                "INSERT INTO ingest.landed_batch VALUES (:batch_id, :source_system, :table_name, :org_code, :mode, "
                ":rows_landed, :offset_from, :offset_to, :last_source_ts, :started_at, :finished_at, :status) "
                "ON CONFLICT (batch_id) DO NOTHING"
            ),
            asdict(record),
        ).rowcount
        if inserted and arrivals:
            conn.execute(
                sa.text(
                    "INSERT INTO ingest.arrival VALUES (:batch_id, :org_code, :business_date, :rows, :late_rows, "
                    ":last_source_ts) ON CONFLICT DO NOTHING"
                ),
                [{**a, "batch_id": record.batch_id} for a in arrivals],
            )


def known_batches(source: str, table: str) -> set[str]:
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT batch_id FROM ingest.landed_batch WHERE source_system = :s AND table_name = :t"),
                {"s": source, "t": table},
            ).scalars()
        )


def record_run(
    source: str,
    table: str,
    mode: str,
    started_at: datetime,
    status: str,
    rows: int = 0,
    error: str | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """One attempt; ``counts`` are what the run saw besides the rows it landed (e.g. null_watermark)."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.table_run (source_system, table_name, mode, started_at, finished_at, status, "
                "rows_landed, error, counts) VALUES (:s, :t, :m, :started, now(), :status, :rows, :error, "
                "CAST(:counts AS jsonb))"
            ),
            {
                "s": source,
                "t": table,
                "m": mode,
                "started": started_at,
                "status": status,
                "rows": rows,
                "error": mask(error),
                "counts": json.dumps(counts) if counts else None,
            },
        )


def last_counts(source: str, table: str) -> dict[str, int]:
    """The counts of the latest run of a table ({} when it saw nothing besides what it landed)."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return (
            conn.execute(
                sa.text(
                    "SELECT counts FROM ingest.table_run WHERE source_system = :s AND table_name = :t "
                    "ORDER BY run_id DESC LIMIT 1"
                ),
                {"s": source, "t": table},
            ).scalar()
            or {}
        )


def record_slot(source: str, slot: str, retained_bytes: int, held_by: list[str], released: list[str]) -> None:
    """The WAL a source's replication slot retains after a run, and the tables holding or released from it."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.replication_slot VALUES (:s, :slot, :b, :held, :released, now()) "
                "ON CONFLICT (source_system) DO UPDATE SET slot_name = excluded.slot_name, "
                "retained_bytes = excluded.retained_bytes, held_by = excluded.held_by, released = excluded.released, "
                "checked_at = now()"
            ),
            {
                "s": source,
                "slot": slot,
                "b": retained_bytes,
                "held": ", ".join(held_by) or None,
                "released": ", ".join(released) or None,
            },
        )


def slot_status(source: str) -> dict | None:
    ensure_tables()
    with warehouse_engine().connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM ingest.replication_slot WHERE source_system = :s"), {"s": source}
        ).first()
    return None if row is None else dict(row._mapping)


# --- the guards: a stopped table waits in an open entry until an operator accepts it ------------------
_DELETES_OPEN = "accepted_at IS NULL AND used_at IS NULL"
_REWIND_OPEN = "accepted_at IS NULL"


def _record_open(guard: str, open_clause: str, keys: dict, values: dict) -> None:
    """Keep one open entry per key in a guard table: every run that stops again refreshes it."""
    ensure_tables()
    params = {**keys, **values}
    where = " AND ".join(f"{column} = :{column}" for column in keys)
    with warehouse_engine().begin() as conn:
        updated = conn.execute(
            sa.text(
                f"UPDATE ingest.{guard} SET {', '.join(f'{c} = :{c}' for c in values)}, detected_at = now() "
                f"WHERE {where} AND {open_clause}"
            ),
            params,
        ).rowcount
        if not updated:
            conn.execute(
                sa.text(
                    f"INSERT INTO ingest.{guard} ({', '.join(params)}) VALUES ({', '.join(':' + c for c in params)})"
                ),
                params,
            )


def _accept_open(guard: str, open_clause: str, source: str, table: str, returning: str) -> list[dict]:
    """An operator accepts the open entries of one table (its name in any case); what was accepted comes back."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.text(
                    f"UPDATE ingest.{guard} SET accepted_at = now() WHERE source_system = :s "
                    f"AND lower(table_name) = lower(:t) AND {open_clause} "
                    f"RETURNING table_name, {returning}, detected_at"
                ),
                {"s": source, "t": table},
            )
        ]


def record_pending_deletes(source: str, table: str, *, deletes: int, current: int, read: int) -> None:
    """A snapshot was stopped for deleting too much."""
    _record_open(
        "delete_guard",
        _DELETES_OPEN,
        {"source_system": source, "table_name": table},
        {"deletes": deletes, "current_rows": current, "read_rows": read},
    )


def accept_deletes(source: str, table: str) -> list[dict]:
    """An operator confirms the deletes a stopped snapshot found; the next run of the table lands them."""
    return _accept_open("delete_guard", _DELETES_OPEN, source, table, "deletes, current_rows, read_rows")


def take_accepted_deletes(source: str, table: str) -> bool:
    """Use up an operator's acceptance (once): True when the deletes of this run may land."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "UPDATE ingest.delete_guard SET used_at = now() WHERE source_system = :s AND table_name = :t "
                    "AND accepted_at IS NOT NULL AND used_at IS NULL"
                ),
                {"s": source, "t": table},
            ).rowcount
        )


def record_rewind(source: str, table: str, *, source_newest: str, bronze_newest: str) -> None:
    """A watermark source went back: one open entry per table and bronze state."""
    _record_open(
        "rewind_guard",
        _REWIND_OPEN,
        {"source_system": source, "table_name": table, "bronze_newest": bronze_newest},
        {"source_newest": source_newest},
    )


def rewind_accepted(source: str, table: str, bronze_newest: str) -> bool:
    """Whether an operator accepted that this table's source went back below ``bronze_newest``."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT 1 FROM ingest.rewind_guard WHERE source_system = :s AND table_name = :t "
                    "AND bronze_newest = :b AND accepted_at IS NOT NULL"
                ),
                {"s": source, "t": table, "b": bronze_newest},
            ).first()
        )


def accept_rewind(source: str, table: str) -> list[dict]:
    """An operator confirms a source went back (a restore); its table is then read whole until it catches up."""
    return _accept_open("rewind_guard", _REWIND_OPEN, source, table, "source_newest, bronze_newest")


# --- one run per source -------------------------------------------------------------------------------
def _lock_key(source: str) -> str:
    return f"drc_collect:{source}"


@contextmanager
def source_lock(source: str, wait_seconds: float = 0.0) -> Iterator[bool]:
    """One collection run per source at a time, whatever its mode; yields whether this run holds it.

    Two overlapping runs would both read the same committed offset and land the same batch twice. The lock
    is a PostgreSQL session advisory lock in the warehouse, so it dies with the process that holds it
    (``kill -9`` leaves no stale lock). A busy lock is retried for ``wait_seconds``.
    """
    ensure_tables()
    key = {"k": _lock_key(source), "n": f"drc collect {source} pid {os.getpid()} on {socket.gethostname()}"[:63]}
    deadline = time.monotonic() + wait_seconds
    with warehouse_engine().connect() as conn:
        while True:
            mine = conn.execute(sa.text("SELECT pg_try_advisory_lock(hashtext(:k))"), key).scalar()
            if mine or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        if mine:
            conn.execute(sa.text("SELECT set_config('application_name', :n, false)"), key)
        conn.commit()
        try:
            yield bool(mine)
        finally:
            if mine:
                conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                conn.execute(sa.text("RESET application_name"))
                conn.commit()


def lock_holder(source: str) -> str:
    """Who holds a source's collection lock (for the message of the run that found it busy)."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        (key,) = conn.execute(sa.text("SELECT hashtext(:k)"), {"k": _lock_key(source)}).one()
        row = conn.execute(
            sa.text(
                "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid::text::bigint = :c "
                "AND l.objid::text::bigint = :o"
            ),
            {"c": (key >> 32) & 0xFFFFFFFF, "o": key & 0xFFFFFFFF},
        ).first()
    if row is None:
        return "another run (it has just finished)"
    return f"'{row.application_name or 'another run'}', connected since {row.backend_start:%Y-%m-%d %H:%M:%S}"


def record_schema_change(source: str, table: str, columns: list[str], action: str) -> None:
    if not columns:
        return
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.schema_change (source_system, table_name, column_name, action) "
                "VALUES (:s, :t, :c, :a) ON CONFLICT DO NOTHING"
            ),
            [{"s": source, "t": table, "c": c, "a": action} for c in columns],
        )


def accept_schema_change(source: str, table: str) -> list[dict]:
    """An operator accepts a table's drift: a removed column then lands as NULL, a retyped one is cast."""
    return _accept_open("schema_change", "accepted_at IS NULL", source, table, "column_name, action")


def accepted_changes(source: str, table: str) -> set[tuple[str, str]]:
    """(column, action) pairs an operator has accepted: removed columns land as NULL, retyped ones are cast."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return {
            (r.column_name.lower(), r.action)
            for r in conn.execute(
                sa.text(
                    "SELECT column_name, action FROM ingest.schema_change WHERE source_system = :s AND table_name = :t "
                    "AND accepted_at IS NOT NULL"
                ),
                {"s": source, "t": table},
            )
        }


def stopped_tables(source: str) -> set[str]:
    """Tables whose latest run stopped on schema drift: stream modes must not move past their offset."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT table_name FROM ingest.v_table_status WHERE source_system = :s AND last_status = 'stopped'"
                ),
                {"s": source},
            ).scalars()
        )


def load_checkpoint(source: str) -> str | None:
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return conn.execute(
            sa.text("SELECT position FROM ingest.source_checkpoint WHERE source_system = :s"), {"s": source}
        ).scalar()


def save_checkpoint(source: str, position: str) -> None:
    """Only a lower bound for resuming a stream: each bronze table still filters by its own committed offset."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingest.source_checkpoint VALUES (:s, :p, now()) ON CONFLICT (source_system) "
                "DO UPDATE SET position = excluded.position, updated_at = now()"
            ),
            {"s": source, "p": position},
        )


def source_status() -> list[dict]:
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.text("SELECT * FROM ingest.v_table_status ORDER BY source_system, table_name"))
        ]


def source_rollup() -> list[dict]:
    """``v_source_status``: per source, its worst table status, rows, lag, errors and the WAL its CDC slot keeps."""
    ensure_tables()
    with warehouse_engine().connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.text("SELECT * FROM ingest.v_source_status ORDER BY source_system"))
        ]


def forget_source(source: str) -> None:
    """Drop a source's collection history (after its bronze tables were deleted, e.g. a re-onboarding)."""
    ensure_tables()
    with warehouse_engine().begin() as conn:
        for table in (
            "landed_batch",
            "table_run",
            "schema_change",
            "source_checkpoint",
            "file_ledger",
            "delete_guard",
            "rewind_guard",
            "replication_slot",
        ):
            conn.execute(sa.text(f"DELETE FROM ingest.{table} WHERE source_system = :s"), {"s": source})


def alert_unreachable(results: list) -> None:
    """A source that could not be reached opens a ``source_down`` alert; reaching it again resolves it."""
    by_source: dict[str, list] = {}
    for result in results:
        by_source.setdefault(result.source, []).append(result)
    for source, outcomes in by_source.items():
        down = [r for r in outcomes if r.status == "source_down"]
        if down:
            raise_alert(
                Alert(
                    "source_down",
                    "error",
                    source,
                    f"来源 {source} 无法连接 unreachable: {mask(down[0].error)}. Collection retries on its "
                    "schedule; its institutions' days are judged missing at the deadline.",
                    source_system=source,
                )
            )
        elif any(r.status in ("success", "no_change") for r in outcomes):
            resolve_alerts("source_down", source, "reachable again")
