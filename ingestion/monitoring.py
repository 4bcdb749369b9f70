"""Collection monitoring in PostgreSQL (schema ``ingest``): one row per batch, idempotent by batch id."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from core.db import ensure_schemas, warehouse_engine

DDL = """
CREATE TABLE IF NOT EXISTS ingest.batch_log (
    batch_id        text PRIMARY KEY,
    source_system   text NOT NULL,
    table_name      text NOT NULL,
    org_code        text NOT NULL,
    mode            text NOT NULL,
    rows_landed     bigint NOT NULL,
    watermark_from  timestamp,
    watermark_to    timestamp,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    status          text NOT NULL,
    error           text
)"""


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    source_system: str
    table_name: str
    org_code: str
    mode: str
    rows_landed: int
    watermark_from: datetime | None
    watermark_to: datetime | None
    started_at: datetime
    finished_at: datetime
    status: str
    error: str | None = None


def record_batch(record: BatchRecord) -> None:
    ensure_schemas("ingest")
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(DDL))
        conn.execute(sa.text(
            "INSERT INTO ingest.batch_log VALUES (:batch_id, :source_system, :table_name, :org_code, :mode, "
            ":rows_landed, :watermark_from, :watermark_to, :started_at, :finished_at, :status, :error) "
            "ON CONFLICT (batch_id) DO NOTHING"), asdict(record))
