"""The audit trail, for auditors: who read whose record, when, why, and with what result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, status

from api.access import require_section
from api.fhir import CHINA_TZ
from api.schemas import AuditPage
from api.security import ApiError, Audit, Caller, Db

router = APIRouter(prefix="/audit", tags=["审计 audit"])
RESULT_PATTERN = "^(allowed|refused|not_found|rejected|invalid|error|unauthenticated)$"


def _as_utc(moment: datetime | None, name: str) -> datetime | None:
    """A query bound in UTC: PostgreSQL refuses offsets beyond ±15:59 that ISO 8601 parsers accept;
    a time without offset is county time."""
    if moment is None:
        return None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=CHINA_TZ)).astimezone(UTC)
    except OverflowError as exc:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST, f"时间超出可检索范围：{name}", f"{name} is outside the searchable range"
        ) from exc


@router.get(
    "/events",
    response_model=AuditPage,
    summary="查询审计日志（审计员） / Audit events (auditors)",
    description="Every request the API answered, newest first: who (subject, role, institution), which "
    "resident and resources, the stated purpose, break-glass flag, result and time.",
)
def audit_events(
    principal: Caller,
    audit: Audit,
    conn: Db,
    subject: Annotated[str | None, Query(max_length=64, description="调阅人")] = None,
    master_id: Annotated[str | None, Query(max_length=64, description="被调阅居民主索引号")] = None,
    break_glass: Annotated[bool | None, Query(description="只看紧急调阅")] = None,
    result: Annotated[str | None, Query(pattern=RESULT_PATTERN, description="结果")] = None,
    since: Annotated[datetime | None, Query(description="起始时间")] = None,
    until: Annotated[datetime | None, Query(description="截止时间")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    require_section(principal, "audit")
    since, until = _as_utc(since, "since"), _as_utc(until, "until")
    filters = {"subject": subject, "break_glass": break_glass, "result": result}
    where = [f"{k} = :{k}" for k, v in filters.items() if v is not None]
    if master_id is not None:  # read directly, or listed by a search
        where.append("(master_id = :master_id OR :master_id = ANY(returned_master_ids))")
    filters["master_id"] = master_id
    if since:
        where.append("at >= :since")
    if until:
        where.append("at <= :until")
    params = {**filters, "since": since, "until": until, "limit": limit, "offset": offset}
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = (
        conn.execute(
            sa.text(
                "SELECT event_id, at, subject, role, org_code, method, path, action, master_id, resource_types, "
                "resource_count, returned_master_ids, purpose, break_glass, result, status_code, detail, "
                "count(*) OVER () AS _total "
                f"FROM audit.access_log {clause} ORDER BY event_id DESC LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        .mappings()
        .all()
    )
    audit.resource_types, audit.resource_count = ["audit"], len(rows)
    audit.query = {k: v for k, v in params.items() if v is not None and k not in ("limit", "offset")}
    return {
        "total": rows[0]["_total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "items": [{k: v for k, v in r.items() if k != "_total"} for r in rows],
    }
