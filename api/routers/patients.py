"""Patient search (IHE PDQ / PIX) and a resident's record across every member institution."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from api.access import limit_id_number_searches, require_patient, require_section, township_scope
from api.privacy import apply_masking
from api.records import RECORD_LISTS, list_records, local_ids, patient_overview
from api.records import search_patients as search
from api.responses import FastJSON
from api.schemas import LabTrend, LocalId, Page, PatientSummary, SearchResult
from api.security import ApiError, Audit, Caller, Db, Principal
from core.privacy import id_number_hash

router = APIRouter(prefix="/patients", tags=["患者 patients"])

MasterId = Annotated[str, Path(description="主索引号 master id", min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200, description="每页条数")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="跳过的条数")]
Reason = Annotated[
    str | None, Query(max_length=200, description="紧急调阅理由（本机构无就诊/转诊记录时必填，将被记录并标记）")
]
IdNumber = Annotated[
    str | None, Query(min_length=15, max_length=18, pattern=r"^[0-9]{14,17}[0-9Xx]$", description="身份证号")
]
DateFrom = Annotated[date | None, Query(description="起始日期（含）")]
DateTo = Annotated[date | None, Query(description="截止日期（含）")]


def access_of(principal: Principal, related: bool) -> str:
    """What a search hit lets the caller do next: read it, or read it only with a stated reason."""
    scope = principal.role.patients
    return "all" if scope in ("all", "township") else "in_scope" if related else "break_glass_required"


@router.get(
    "",
    response_model=SearchResult,
    summary="检索患者 / Search patients (ID number | name+birth date | source system+local id)",
    description="IHE PDQ: by ID number (compared as a keyed hash), by name + birth date (+ sex), or by a "
    "member system's local patient id (PIX). Public-health officers find only residents of "
    "their township.",
)
def search_patients(
    principal: Caller,
    audit: Audit,
    conn: Db,
    id_number: IdNumber = None,
    name: Annotated[str | None, Query(min_length=1, max_length=50, description="姓名")] = None,
    birth_date: Annotated[date | None, Query(description="出生日期")] = None,
    sex_code: Annotated[str | None, Query(pattern=r"^[0129]$", description="性别代码")] = None,
    source_system: Annotated[str | None, Query(max_length=64, description="来源系统")] = None,
    local_id: Annotated[str | None, Query(max_length=64, description="来源系统患者号")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> FastJSON:
    require_section(principal, "demographics")
    audit.resource_types = ["Patient"]
    criteria: dict[str, Any] = {}
    if id_number:
        limit_id_number_searches(conn, principal)
        criteria["id_number_hash"] = id_number_hash(id_number)
        audit.query["id_number"] = "hmac:" + criteria["id_number_hash"][:12]
    elif name and birth_date:
        criteria |= {"name": name, "birth_date": birth_date}
    elif source_system and local_id:
        criteria |= {"source_system": source_system, "local_id": local_id}
    else:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "请提供检索条件：身份证号，或姓名+出生日期，或来源系统+患者号",
            "give id_number, or name and birth_date, or source_system and local_id",
        )
    audit.query |= {k: v for k, v in criteria.items() if k != "id_number_hash"}
    if sex_code:
        criteria["sex_codes"] = [sex_code]
    total, rows = search(
        conn,
        org_code=principal.user.org_code,
        township=township_scope(principal),
        limit=limit,
        offset=offset,
        **criteria,
    )
    items = [apply_masking(r, principal.role) | {"access": access_of(principal, r["related"])} for r in rows]
    audit.resource_count, audit.returned_master_ids = len(items), [r["master_id"] for r in rows]
    return FastJSON({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get(
    "/{master_id}",
    response_model=PatientSummary,
    summary="患者概要 / Patient summary: demographics, identifiers, record counts, recent visits",
    description="Golden demographics (masked per role), local ids in every member system, how many "
    "records of each kind the resident has (with the address of each list), the five latest "
    "encounters across institutions and the current family-doctor contract.",
)
def patient_summary(master_id: MasterId, principal: Caller, audit: Audit, conn: Db, reason: Reason = None) -> FastJSON:
    require_patient(conn, principal, audit, master_id, "demographics", reason)
    sections = principal.role.sections
    found = patient_overview(conn, master_id, sections)
    demo = found["demo"]
    summary: dict[str, Any] = {
        "demographics": apply_masking(demo, principal.role) if demo else None,
        "break_glass": audit.break_glass,
        "identifiers": found["ids"] if "identifiers" in sections else None,
        "sections": {
            kind: {"zh": RECORD_LISTS[kind].zh, "total": n, "href": f"/patients/{master_id}/{kind}"}
            for kind, n in (found["counts"] or {}).items()
        },
        "recent_encounters": [{k: v for k, v in e.items() if k != "master_id"} for e in found["recent"]]
        if "recent" in found
        else None,
        "family_doctor_contract": found.get("contract"),
    }
    audit.resource_types = ["Patient", *summary["sections"]]
    audit.resource_count = 1
    return FastJSON(summary)


@router.get(
    "/{master_id}/identifiers",
    response_model=list[LocalId],
    summary="交叉索引 / Cross-references: the resident's local ids in each member system (PIX)",
)
def patient_identifiers(
    master_id: MasterId, principal: Caller, audit: Audit, conn: Db, reason: Reason = None
) -> FastJSON:
    require_patient(conn, principal, audit, master_id, "identifiers", reason)
    ids = local_ids(conn, master_id)
    audit.resource_types, audit.resource_count = ["identifiers"], len(ids)
    return FastJSON(ids)


@router.get(
    "/{master_id}/lab-results/trend", response_model=LabTrend, summary="检验结果趋势 / Trend of one lab test (LOINC)"
)
def lab_trend(
    master_id: MasterId,
    principal: Caller,
    audit: Audit,
    conn: Db,
    code: Annotated[
        str, Query(min_length=3, max_length=20, pattern=r"^[0-9]{1,7}-[0-9]$", description="LOINC 代码，如 2345-7")
    ],
    date_from: DateFrom = None,
    date_to: DateTo = None,
    reason: Reason = None,
) -> FastJSON:
    require_patient(conn, principal, audit, master_id, "clinical", reason)
    _, rows = list_records(
        conn,
        RECORD_LISTS["lab-results"],
        master_id,
        limit=1000,
        offset=0,
        date_from=date_from,
        date_to=date_to,
        code=code,
    )
    rows.reverse()
    audit.resource_types, audit.resource_count, audit.query = ["lab-results"], len(rows), {"code": code}
    return FastJSON(
        {
            "code": code,
            "item_name": rows[0]["item_name"] if rows else None,
            "points": [
                {
                    k: r.get(k)
                    for k in ("reported_at", "numeric_value", "result_value", "unit", "abnormal_flag", "org_name")
                }
                for r in rows
            ],
        }
    )


def _list_route(kind: str) -> None:
    spec = RECORD_LISTS[kind]

    def list_kind(
        master_id: MasterId,
        principal: Caller,
        audit: Audit,
        conn: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        code: Annotated[str | None, Query(max_length=32, description="代码筛选（诊断/ATC/LOINC）")] = None,
        reason: Reason = None,
    ) -> FastJSON:
        require_patient(conn, principal, audit, master_id, spec.section, reason)
        if date_from and date_to and date_from > date_to:
            raise ApiError(status.HTTP_400_BAD_REQUEST, "起始日期晚于截止日期", "date_from is after date_to")
        total, items = list_records(
            conn, spec, master_id, limit=limit, offset=offset, date_from=date_from, date_to=date_to, code=code
        )
        audit.resource_types, audit.resource_count = [kind], len(items)
        audit.query = {k: v for k, v in {"date_from": date_from, "date_to": date_to, "code": code}.items() if v}
        return FastJSON({"total": total, "limit": limit, "offset": offset, "items": items})

    router.add_api_route(
        f"/{{master_id}}/{kind}",
        list_kind,
        methods=["GET"],
        response_model=Page,
        name=f"list_{kind.replace('-', '_')}",
        summary=f"{spec.zh}（分页，可按日期筛选） / {kind}, paged, by date",
    )


for _kind in RECORD_LISTS:
    _list_route(_kind)
