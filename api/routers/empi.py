"""EMPI stewardship: the review queue, and a steward's decisions (same / not the same, merge, unmerge).

Decisions run on the lake through the EMPI's own operations (spark_jobs/empi/requests.py), so the API queues
them (202 Accepted) and starts the runner; GET /empi/requests/{id} shows when each took effect and its event id
in the EMPI event log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from api.access import require_section
from api.security import ApiError, Audit, Caller, Db
from core.settings import PROJECT_ROOT, get_settings

router = APIRouter(prefix="/empi", tags=["主索引 EMPI"])
Reason = Annotated[str, Field(min_length=4, max_length=500, description="决定理由（记入主索引事件日志）")]


class ReviewDecision(BaseModel):
    record_id: str = Field(min_length=3, max_length=200, description="待审记录（来源系统|患者号）")
    candidate_master_id: str = Field(min_length=1, max_length=64, description="候选居民主索引号")
    same_person: bool = Field(description="是否同一人")
    reason: Reason


class MergeRequest(BaseModel):
    survivor: str = Field(min_length=1, max_length=64, description="保留的主索引号")
    merged: str = Field(min_length=1, max_length=64, description="并入的主索引号")
    reason: Reason


class UnmergeRequest(BaseModel):
    master_id: str = Field(min_length=1, max_length=64)
    record_ids: list[Annotated[str, Field(min_length=3, max_length=200)]] = Field(min_length=1, max_length=100)
    reason: Reason


class EmpiRequest(BaseModel):
    request_id: int
    requested_at: datetime
    actor: str
    action: Literal["link", "separate", "merge", "unmerge"]
    payload: dict[str, Any]
    reason: str
    status: str = Field(description="pending 排队 / applying 执行中 / done 已生效 / failed 失败")
    event_id: str | None
    error: str | None
    done_at: datetime | None


class ReviewItem(BaseModel):
    record_id: str
    candidate_master_id: str | None
    candidate_record_id: str | None
    comparison_levels: str | None
    best_score: float | None
    second_score: float | None
    queued_at: datetime | None


class ReviewPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ReviewItem]


REQUEST_COLUMNS = "request_id, requested_at, actor, action, payload, reason, status, event_id, error, done_at"


@router.get(
    "/review-queue",
    response_model=ReviewPage,
    summary="主索引待审队列（可能匹配） / EMPI review queue (possible matches)",
)
def review_queue(
    principal: Caller,
    audit: Audit,
    conn: Db,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    require_section(principal, "empi")
    rows = (
        conn.execute(
            sa.text(
                "SELECT review_key AS record_id, candidate_master_id, candidate_record_key AS candidate_record_id, "
                "comparison_levels, best_score, second_score, queued_at, count(*) OVER () AS _total "
                "FROM staging.stg_ods__empi_review_queue ORDER BY best_score DESC NULLS LAST, review_key "
                "LIMIT :limit OFFSET :offset"
            ),
            {"limit": limit, "offset": offset},
        )
        .mappings()
        .all()
    )
    audit.resource_types, audit.resource_count = ["empi-review-queue"], len(rows)
    return {
        "total": rows[0]["_total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "items": [{k: v for k, v in r.items() if k != "_total"} for r in rows],
    }


def _start_runner() -> None:
    """The runner applies every pending request; a second one started meanwhile waits on its lock."""
    log = open(os.path.join(get_settings().state_dir, "logs", "empi-requests.log"), "ab")
    subprocess.Popen(
        [sys.executable, "-m", "cli.main", "empi", "apply-requests"],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _queue(
    conn: Db, principal: Caller, audit: Audit, action: str, payload: dict[str, Any], reason: str
) -> dict[str, Any]:
    require_section(principal, "empi")
    row = (
        conn.execute(
            sa.text(
                "INSERT INTO audit.empi_request (actor, action, payload, reason) "
                f"VALUES (:actor, :action, CAST(:payload AS jsonb), :reason) RETURNING {REQUEST_COLUMNS}"
            ),
            {"actor": principal.login, "action": action, "payload": json.dumps(payload), "reason": reason},
        )
        .mappings()
        .one()
    )
    conn.commit()
    audit.resource_types, audit.resource_count, audit.purpose = ["empi-request"], 1, reason
    audit.query = {"action": action, **payload}
    audit.master_id = payload.get("master_id") or payload.get("survivor")
    _start_runner()
    return dict(row)


def _require_master(conn: Db, master_id: str) -> None:
    if (
        conn.execute(sa.text("SELECT 1 FROM marts.dim_patient_lookup WHERE master_id = :m"), {"m": master_id}).first()
        is None
    ):
        raise ApiError(status.HTTP_404_NOT_FOUND, f"主索引号 {master_id} 不存在", f"no resident {master_id}")


@router.post(
    "/review-decisions",
    response_model=EmpiRequest,
    status_code=status.HTTP_202_ACCEPTED,
    summary="处理可能匹配：是同一人 / 不是同一人 — Decide a possible match: same person or never link",
)
def decide_review(decision: ReviewDecision, principal: Caller, audit: Audit, conn: Db) -> dict[str, Any]:
    require_section(principal, "empi")
    _require_master(conn, decision.candidate_master_id)
    action = "link" if decision.same_person else "separate"
    return _queue(
        conn,
        principal,
        audit,
        action,
        {"record_id": decision.record_id, "master_id": decision.candidate_master_id},
        decision.reason,
    )


@router.post(
    "/merges",
    response_model=EmpiRequest,
    status_code=status.HTTP_202_ACCEPTED,
    summary="合并两个主索引（同一居民） / Merge two master ids (one resident)",
)
def merge(request: MergeRequest, principal: Caller, audit: Audit, conn: Db) -> dict[str, Any]:
    require_section(principal, "empi")
    if request.survivor == request.merged:
        raise ApiError(status.HTTP_400_BAD_REQUEST, "不能与自身合并", "survivor and merged are the same id")
    for master_id in (request.survivor, request.merged):
        _require_master(conn, master_id)
    return _queue(
        conn, principal, audit, "merge", {"survivor": request.survivor, "merged": request.merged}, request.reason
    )


@router.post(
    "/unmerges",
    response_model=EmpiRequest,
    status_code=status.HTTP_202_ACCEPTED,
    summary="拆分主索引 / Separate records into a new resident",
)
def unmerge(request: UnmergeRequest, principal: Caller, audit: Audit, conn: Db) -> dict[str, Any]:
    require_section(principal, "empi")
    _require_master(conn, request.master_id)
    payload = {"master_id": request.master_id, "record_ids": request.record_ids}
    return _queue(conn, principal, audit, "unmerge", payload, request.reason)


@router.get(
    "/requests/{request_id}", response_model=EmpiRequest, summary="主索引管理请求的状态 / Status of an EMPI request"
)
def request_status(
    request_id: Annotated[int, Path(ge=1, le=2**62)], principal: Caller, audit: Audit, conn: Db
) -> dict[str, Any]:
    require_section(principal, "empi")
    row = (
        conn.execute(
            sa.text(f"SELECT {REQUEST_COLUMNS} FROM audit.empi_request WHERE request_id = :id"), {"id": request_id}
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ApiError(status.HTTP_404_NOT_FOUND, f"请求 {request_id} 不存在", f"no request {request_id}")
    audit.resource_types, audit.resource_count = ["empi-request"], 1
    return dict(row)
