"""EMPI stewardship requests made through the lookup API, carried out on the lake.

The API (role drc_api) only queues a steward's decision in ``audit.empi_request``; this job — started by the
API after each request, and runnable as `./drc empi apply-requests` — applies pending ones in order through the
same operations as the CLI (identity.link / separate / merge / unmerge, each recorded in the EMPI event log),
re-matches once, and republishes the EMPI tables so the cross-reference and queue views show the outcome.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from pyspark.sql import SparkSession

from core.db import warehouse_engine
from core.settings import get_settings
from spark_jobs.empi import identity
from spark_jobs.publish import EMPI_KEYS, EMPI_TABLES, publish_table


def _apply(spark: SparkSession, action: str, payload: dict, actor: str, reason: str) -> str:
    if action == "link":
        return identity.link(spark, payload["record_id"], payload["master_id"], actor, reason)
    if action == "separate":
        return identity.separate(spark, payload["record_id"], payload["master_id"], actor, reason)
    if action == "merge":
        return identity.merge(spark, payload["survivor"], payload["merged"], actor, reason)
    if action == "unmerge":
        return identity.unmerge(spark, payload["master_id"], payload["record_ids"], actor, reason)
    raise ValueError(f"unknown EMPI action {action}")


def apply_requests(spark: SparkSession, progress: Callable[[str], None] = print) -> int:
    """Apply every pending request; returns how many were applied. One runner at a time (a file lock)."""
    lock_path = Path(get_settings().state_dir) / "run" / "empi-requests.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        applied = 0
        while True:
            with warehouse_engine().connect() as conn:
                pending = conn.execute(
                    sa.text(
                        "SELECT request_id, action, payload, actor, reason FROM audit.empi_request "
                        "WHERE status = 'pending' ORDER BY request_id"
                    )
                ).all()
            if not pending:
                break
            for r in pending:
                payload = r.payload if isinstance(r.payload, dict) else json.loads(r.payload)
                try:
                    event, status, error = _apply(spark, r.action, payload, f"api:{r.actor}", r.reason), "done", None
                except (ValueError, KeyError) as exc:
                    event, status, error = None, "failed", str(exc)
                progress(f"request {r.request_id} ({r.action}): {status}{' — ' + error if error else ''}")
                with warehouse_engine().begin() as conn:
                    conn.execute(
                        sa.text(
                            "UPDATE audit.empi_request SET status = :status, event_id = :event, error = :error, "
                            "done_at = now() WHERE request_id = :id"
                        ),
                        {
                            "status": "applying" if status == "done" else status,
                            "event": event,
                            "error": error,
                            "id": r.request_id,
                        },
                    )
                applied += status == "done"
            report = identity.apply_manual_decisions(spark)
            progress(f"re-matched: {report.masters:,} residents")
            for name, (delta, columns) in EMPI_TABLES.items():
                publish_table(spark, identity.empi_path(delta), f"ods.empi_{name}", columns, EMPI_KEYS.get(name))
            with warehouse_engine().begin() as conn:
                conn.execute(sa.text("UPDATE audit.empi_request SET status = 'done' WHERE status = 'applying'"))
        return applied
