"""HL7 FHIR R4 over the same data, access rules, masking and audit as the rest of the API.

Searches return `Bundle` searchsets paged with `_count` and `_offset`; a clinician reading a resident outside
their institution states why in `reason` (break-glass), as everywhere else.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request, status

from api import fhir as resources
from api.access import limit_id_number_searches, require_patient, require_section, township_scope
from api.privacy import apply_masking
from api.records import RECORD_LISTS, demographics, list_records, local_ids, local_ids_of, search_patients
from api.responses import FhirJSON
from api.security import ApiError, Audit, Caller, Db
from core.privacy import id_number_hash

router = APIRouter(tags=["FHIR R4"])
MAX_EVERYTHING = 500  # per resource type in Patient/$everything
Count = Annotated[int, Query(alias="_count", ge=1, le=200, description="每页条数")]
Offset = Annotated[int, Query(alias="_offset", ge=0, le=1_000_000, description="跳过的条数")]
Reason = Annotated[str | None, Query(max_length=200, description="紧急调阅理由 (break-glass)")]
PatientRef = Annotated[str, Query(min_length=1, max_length=80, description="Patient/<主索引号> 或主索引号")]
GENDER_CODES = {"male": ["1"], "female": ["2"], "unknown": ["0", "9"], "other": []}
# FHIR resource type -> the record list (api/records.py) it is made from, and the mapping function
SEARCHABLE = {
    "Encounter": ("encounters", resources.encounter),
    "Condition": ("diagnoses", resources.condition),
    "Observation": ("lab-results", resources.observation),
    "MedicationRequest": ("prescriptions", resources.medication_request),
    "ServiceRequest": ("referrals", resources.service_request),
}
IDENTIFIER_HELP = "system|value: urn:xydrc:master-id|M…, urn:xydrc:pid:<来源系统>|<患者号>, 身份证号 system|号码"
DATE_PREFIX = re.compile(r"^(eq|ge|gt|le|lt)?(\d{4}-\d{2}-\d{2})$")


def fhir_response(body: dict[str, Any], status_code: int = 200) -> FhirJSON:
    return FhirJSON(body, status_code=status_code)


def outcome_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> FhirJSON:
    code = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 422: "invalid"}.get(
        status_code, "exception"
    )
    return FhirJSON(resources.operation_outcome(code, message), status_code=status_code, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _invalid(zh: str, en: str) -> ApiError:
    return ApiError(status.HTTP_400_BAD_REQUEST, zh, en)


def _date_range(values: list[str] | None) -> tuple[date | None, date | None]:
    """FHIR date search (ge/gt/le/lt/eq prefixes on whole days) as an inclusive range of days."""
    low: date | None = None
    high: date | None = None
    for value in values or []:
        match = DATE_PREFIX.match(value)
        if not match:
            raise _invalid(f"日期参数不合法：{value[:20]}", "date must be [eq|ge|gt|le|lt]YYYY-MM-DD")
        prefix = match.group(1) or "eq"
        try:
            day = date.fromisoformat(match.group(2))
        except ValueError as exc:
            raise _invalid(f"日期不存在：{match.group(2)}", "no such date") from exc
        try:
            start = day + timedelta(days=1) if prefix == "gt" else day
            end = day - timedelta(days=1) if prefix == "lt" else day
        except OverflowError as exc:
            raise _invalid(f"日期超出可检索范围：{value[:20]}", "date is outside 0001-01-01..9999-12-31") from exc
        if prefix in ("eq", "ge", "gt"):
            low = max(low, start) if low else start
        if prefix in ("eq", "le", "lt"):
            high = min(high, end) if high else end
    return low, high


def _page_urls(request: Request, offset: int, count: int, total: int) -> tuple[str, str | None]:
    url = request.url
    next_url = str(url.include_query_params(_offset=offset + count, _count=count)) if offset + count < total else None
    return str(url), next_url


def _patient_id(reference: str) -> str:
    return reference.removeprefix("Patient/")


def _patient_resource(conn: sa.Connection, master_id: str, caller: Caller) -> dict[str, Any]:
    demo = demographics(conn, master_id, caller.role)
    ids = local_ids(conn, master_id) if "identifiers" in caller.role.sections else []
    return resources.patient(demo, ids)


@router.get("/metadata", summary="CapabilityStatement（无需令牌 / no token needed）")
def metadata(request: Request) -> FhirJSON:
    return fhir_response(resources.capability_statement(_base(request), request.app.version))


@router.get("/Patient", summary="检索 Patient / Search Patient (identifier | name+birthdate, gender)")
def search_patient(
    request: Request,
    caller: Caller,
    audit: Audit,
    conn: Db,
    identifier: Annotated[str | None, Query(max_length=120, description=IDENTIFIER_HELP)] = None,
    name: Annotated[str | None, Query(max_length=50)] = None,
    birthdate: Annotated[date | None, Query()] = None,
    gender: Annotated[str | None, Query(pattern="^(male|female|other|unknown)$")] = None,
    count: Count = 20,
    offset: Offset = 0,
) -> FhirJSON:
    require_section(caller, "demographics")
    criteria: dict[str, Any] = {}
    if identifier:
        system, _, value = identifier.rpartition("|")
        if not value:
            raise _invalid("identifier 缺少值", "identifier needs a value (system|value)")
        if system == resources.MASTER_ID_SYSTEM or not system:
            criteria["master_id"] = value
        elif system.startswith(resources.LOCAL_ID_SYSTEM_PREFIX):
            criteria |= {"source_system": system.removeprefix(resources.LOCAL_ID_SYSTEM_PREFIX), "local_id": value}
        elif system == resources.ID_NUMBER_SYSTEM:
            if not re.fullmatch(r"[0-9]{14,17}[0-9Xx]", value):
                raise _invalid("身份证号格式不正确", "the ID number must be 15 or 18 characters")
            limit_id_number_searches(conn, caller)
            criteria["id_number_hash"] = id_number_hash(value)
        else:
            raise _invalid(f"不支持的标识系统：{system[:60]}", "unknown identifier system")
    elif name and birthdate:
        criteria |= {"name": name, "birth_date": birthdate}
    else:
        raise _invalid("请提供 identifier，或 name 与 birthdate", "give identifier, or name and birthdate")
    if gender:
        criteria["sex_codes"] = GENDER_CODES[gender]
    audit.query = {k: ("hmac:" + v[:12] if k == "id_number_hash" else v) for k, v in criteria.items()}
    total, rows = search_patients(
        conn, org_code=caller.user.org_code, township=township_scope(caller), limit=count, offset=offset, **criteria
    )
    ids = local_ids_of(conn, [r["master_id"] for r in rows]) if "identifiers" in caller.role.sections else {}
    found = [resources.patient(apply_masking(row, caller.role), ids.get(row["master_id"], [])) for row in rows]
    audit.resource_types, audit.resource_count = ["Patient"], len(found)
    audit.returned_master_ids = [r["master_id"] for r in rows]
    self_url, next_url = _page_urls(request, offset, count, total)
    return fhir_response(resources.searchset(found, total, self_url, next_url, _base(request)))


@router.get("/Patient/{master_id}", summary="读取 Patient / Read Patient")
def read_patient(
    master_id: Annotated[str, Path(min_length=1, max_length=64)],
    caller: Caller,
    audit: Audit,
    conn: Db,
    reason: Reason = None,
) -> FhirJSON:
    require_patient(conn, caller, audit, master_id, "demographics", reason)
    audit.resource_types, audit.resource_count = ["Patient"], 1
    return fhir_response(_patient_resource(conn, master_id, caller))


@router.get(
    "/Patient/{master_id}/$everything", summary="Patient/$everything：该居民的全部资源 / all of a resident's resources"
)
def patient_everything(
    request: Request,
    master_id: Annotated[str, Path(min_length=1, max_length=64)],
    caller: Caller,
    audit: Audit,
    conn: Db,
    reason: Reason = None,
) -> FhirJSON:
    require_patient(conn, caller, audit, master_id, "clinical", reason)
    found = [_patient_resource(conn, master_id, caller)]
    for kind, to_resource in SEARCHABLE.values():
        rows = list_records(conn, RECORD_LISTS[kind], master_id, limit=MAX_EVERYTHING, offset=0)[1]
        found += [to_resource(r | {"master_id": master_id}) for r in rows]
    audit.resource_types, audit.resource_count = ["Patient", *SEARCHABLE], len(found)
    return fhir_response(resources.everything(found, _base(request)))


def _search_route(resource_type: str) -> None:
    kind, to_resource = SEARCHABLE[resource_type]
    spec = RECORD_LISTS[kind]

    def search(
        request: Request,
        patient: PatientRef,
        caller: Caller,
        audit: Audit,
        conn: Db,
        date_: Annotated[
            list[str] | None, Query(alias="date", max_length=4, description="日期，可带前缀 ge/gt/le/lt/eq")
        ] = None,
        code: Annotated[str | None, Query(max_length=60, description="代码（system|code 或 code）")] = None,
        count: Count = 50,
        offset: Offset = 0,
        reason: Reason = None,
    ) -> FhirJSON:
        master_id = _patient_id(patient)
        date_from, date_to = _date_range(date_)
        require_patient(conn, caller, audit, master_id, spec.section, reason)
        total, rows = list_records(
            conn,
            spec,
            master_id,
            limit=count,
            offset=offset,
            date_from=date_from,
            date_to=date_to,
            code=code.rpartition("|")[2] if code else None,
        )
        found = [to_resource(r | {"master_id": master_id}) for r in rows]
        audit.resource_types, audit.resource_count = [resource_type], len(found)
        audit.query = {k: v for k, v in {"date": date_, "code": code}.items() if v}
        self_url, next_url = _page_urls(request, offset, count, total)
        return fhir_response(resources.searchset(found, total, self_url, next_url, _base(request)))

    router.add_api_route(
        f"/{resource_type}",
        search,
        methods=["GET"],
        name=f"fhir_search_{resource_type}",
        summary=f"检索 {resource_type}（patient 必填）",
    )


for _type in SEARCHABLE:
    _search_route(_type)
