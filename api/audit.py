"""The API's append-only audit trail and token register in PostgreSQL (schema ``audit``).

Set-up (`./drc api-setup`, run by `./drc start` as the warehouse owner) creates the tables, a trigger that
refuses UPDATE, DELETE and TRUNCATE on the access log for everyone, and grants the API's role ``drc_api`` only
INSERT and SELECT on it. Auditors read it through the API, or in the database as ``drc_audit`` (read only).
Every request the API answers — allowed, refused or failed — leaves one row: who, role, institution, which
resident and resources, purpose, result, time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.classification import apply_grants
from core.db import warehouse_engine

SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.access_log (
    event_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    subject        text NOT NULL,
    role           text,
    org_code       text,
    token_id       text,
    method         text NOT NULL,
    path           text NOT NULL,
    action         text NOT NULL,
    master_id      text,
    resource_types text[],
    resource_count integer,
    query          jsonb,
    purpose        text,
    break_glass    boolean NOT NULL DEFAULT false,
    result         text NOT NULL,
    status_code    integer NOT NULL,
    detail         text,
    client         text
);
-- a search names every resident it returned, so "who saw resident X" also finds the searches that listed X
ALTER TABLE audit.access_log ADD COLUMN IF NOT EXISTS returned_master_ids text[];
CREATE INDEX IF NOT EXISTS access_log_master_at ON audit.access_log (master_id, at);
CREATE INDEX IF NOT EXISTS access_log_returned ON audit.access_log USING gin (returned_master_ids);
CREATE INDEX IF NOT EXISTS access_log_subject_at ON audit.access_log (subject, at);
CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '审计记录只能追加，不能修改或删除 (audit.access_log is append-only: % refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS access_log_append_only ON audit.access_log;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON audit.access_log
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
DROP TRIGGER IF EXISTS access_log_no_truncate ON audit.access_log;
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON audit.access_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

CREATE TABLE IF NOT EXISTS audit.api_token (
    token_id       text PRIMARY KEY,
    login          text NOT NULL,
    role           text NOT NULL,
    org_code       text,
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    issued_by      text NOT NULL,
    revoked_at     timestamptz,
    revoked_by     text,
    revoke_reason  text
);

CREATE TABLE IF NOT EXISTS audit.empi_request (
    request_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL,
    payload        jsonb NOT NULL,
    reason         text NOT NULL,
    status         text NOT NULL DEFAULT 'pending',
    event_id       text,
    error          text,
    done_at        timestamptz
);

REVOKE ALL ON ALL TABLES IN SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO drc_api;
-- the schemas of what the API serves (dbt grants the tables themselves, model by model)
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS staging;
GRANT USAGE ON SCHEMA marts, staging TO drc_api;
GRANT INSERT, SELECT ON audit.access_log TO drc_api;
GRANT SELECT ON audit.api_token TO drc_api;
GRANT INSERT, SELECT ON audit.empi_request TO drc_api;
"""


def ensure_audit_store() -> None:
    """Idempotent set-up, as the warehouse owner; the auditor's role drc_audit reads it (field classification)."""
    with warehouse_engine().begin() as conn:
        conn.connection.driver_connection.cursor().execute(SETUP_SQL)  # no parameters: '%' stays literal
        apply_grants(conn)


@dataclass
class AuditEntry:
    """One request's audit row, filled in by the route as it learns what it served."""

    subject: str
    method: str
    path: str
    action: str
    role: str | None = None
    org_code: str | None = None
    token_id: str | None = None
    client: str | None = None
    master_id: str | None = None
    resource_types: list[str] = field(default_factory=list)
    resource_count: int | None = None
    returned_master_ids: list[str] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    purpose: str | None = None
    break_glass: bool = False
    detail: str | None = None

    def write(self, conn: sa.Connection, result: str, status_code: int) -> None:
        """Insert and commit on the request's own connection (after rolling back whatever failed on it)."""
        row = {
            **self.__dict__,
            "query": json.dumps(self.query, ensure_ascii=False, default=str),
            "result": result,
            "status_code": status_code,
        }
        if conn.in_transaction() and result != "allowed":
            conn.rollback()
        conn.execute(INSERT_SQL, row)
        conn.commit()


INSERT_SQL = sa.text(
    "INSERT INTO audit.access_log (subject, role, org_code, token_id, method, path, action, master_id, "
    "resource_types, resource_count, returned_master_ids, query, purpose, break_glass, result, status_code, "
    "detail, client) VALUES (:subject, :role, :org_code, :token_id, :method, :path, :action, :master_id, "
    ":resource_types, :resource_count, :returned_master_ids, CAST(:query AS jsonb), :purpose, :break_glass, "
    ":result, :status_code, :detail, :client)"
)
