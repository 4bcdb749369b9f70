"""What the API serves about one resident, as declarations: each list's mart, section, date column and order.

One query shape serves every list (paging, date range, optional code filter), so adding a list is a line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from api.privacy import apply_masking
from core.access import ApiRole


@dataclass(frozen=True)
class RecordList:
    table: str
    section: str  # core.access.API_SECTIONS: which roles may read it
    date_column: str
    order_by: str
    zh: str
    org_column: str | None = "org_code"
    code_column: str | None = None  # filtered by ?code=


RECORD_LISTS: dict[str, RecordList] = {
    "encounters": RecordList("marts.fct_encounter", "clinical", "visit_date", "visit_at DESC", "就诊记录"),
    "diagnoses": RecordList(
        "marts.fct_diagnosis", "clinical", "diagnosed_date", "diagnosed_at DESC", "诊断", code_column="diagnosis_code"
    ),
    "prescriptions": RecordList(
        "marts.fct_prescription",
        "clinical",
        "prescribed_date",
        "prescribed_at DESC",
        "处方用药",
        code_column="atc_code",
    ),
    "lab-results": RecordList(
        "marts.fct_lab_result", "clinical", "reported_date", "reported_at DESC", "检验结果", code_column="item_code"
    ),
    "exams": RecordList("marts.fct_exam_report", "clinical", "reported_date", "reported_at DESC", "检查报告"),
    "surgeries": RecordList("marts.fct_surgery", "clinical", "surgery_date", "started_at DESC", "手术"),
    "referrals": RecordList(
        "marts.fct_referral", "clinical", "request_date", "requested_at DESC", "双向转诊", org_column="to_org_code"
    ),
    "health-records": RecordList(
        "marts.fct_health_record", "health_records", "filed_date", "filed_at DESC", "居民健康档案"
    ),
    "chronic-management": RecordList(
        "marts.fct_chronic_management_year",
        "health_records",
        "year_start",
        "year_start DESC, disease",
        "慢病管理（年度）",
    ),
    "followups": RecordList(
        "marts.fct_public_health_service",
        "health_records",
        "service_date",
        "service_date DESC, service_key",
        "公卫服务与随访",
    ),
    "family-doctor-contracts": RecordList(
        "marts.fct_family_doctor_contract", "health_records", "signed_date", "signed_date DESC", "家庭医生签约"
    ),
}


def list_records(
    conn: sa.Connection,
    spec: RecordList,
    master_id: str,
    *,
    limit: int,
    offset: int,
    date_from: date | None = None,
    date_to: date | None = None,
    code: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page) of a resident's records, newest first, with the institution's name."""
    where = ["t.master_id = :m"]
    params: dict[str, Any] = {"m": master_id, "limit": limit, "offset": offset}
    if date_from:
        where.append(f"t.{spec.date_column} >= :date_from")
        params["date_from"] = date_from
    if date_to:
        where.append(f"t.{spec.date_column} <= :date_to")
        params["date_to"] = date_to
    if code and spec.code_column:
        where.append(f"t.{spec.code_column} = :code")
        params["code"] = code
    org_join = f"LEFT JOIN marts.dim_organization o ON o.org_code = t.{spec.org_column}" if spec.org_column else ""
    org_name = ", o.org_name" if spec.org_column else ""
    rows = (
        conn.execute(
            sa.text(
                f"SELECT t.*{org_name}, count(*) OVER () AS _total FROM {spec.table} t {org_join} "
                f"WHERE {' AND '.join(where)} ORDER BY t.{spec.order_by.replace(', ', ', t.')} NULLS LAST "
                "LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        .mappings()
        .all()
    )
    if not rows and offset:
        total = conn.execute(
            sa.text(f"SELECT count(*) FROM {spec.table} t WHERE {' AND '.join(where)}"), params
        ).scalar_one()
    else:
        total = rows[0]["_total"] if rows else 0
    return total, [{k: v for k, v in r.items() if k not in ("_total", "master_id")} for r in rows]


def related_to_org(alias: str) -> str:
    """SQL: the resident ``alias``.master_id has an encounter at, or a referral to, the institution :org (a
    clinician's own patients)."""
    return (
        f"(EXISTS (SELECT 1 FROM marts.fct_encounter e WHERE e.master_id = {alias}.master_id "
        f"AND e.org_code = :org) OR EXISTS (SELECT 1 FROM marts.fct_referral r "
        f"WHERE r.master_id = {alias}.master_id AND r.to_org_code = :org))"
    )


DEMOGRAPHICS_SQL = (
    "SELECT master_id, name, sex_code, birth_date, id_number, phone, address, source_record_count, "
    "last_updated_at FROM marts.dim_patient WHERE master_id = :m"
)


def demographics(conn: sa.Connection, master_id: str, role: ApiRole) -> dict[str, Any] | None:
    row = conn.execute(sa.text(DEMOGRAPHICS_SQL), {"m": master_id}).mappings().first()
    return apply_masking(dict(row), role) if row else None


def local_ids(conn: sa.Connection, master_id: str) -> list[dict[str, Any]]:
    """The PIX cross-reference: every member system's local patient id of this resident."""
    return local_ids_of(conn, [master_id]).get(master_id, [])


def local_ids_of(conn: sa.Connection, master_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Local patient ids of several residents in one query (a search page), by master id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(
        sa.text(
            "SELECT master_id, source_system, local_patient_id, match_decision, matched_at "
            "FROM marts.dim_patient_identifier WHERE master_id = ANY(:ids) "
            "ORDER BY master_id, source_system, local_patient_id"
        ),
        {"ids": list(master_ids)},
    ).mappings():
        found.setdefault(r["master_id"], []).append({k: v for k, v in r.items() if k != "master_id"})
    return found


def search_patients(
    conn: sa.Connection,
    *,
    org_code: str | None,
    township: str | None,
    limit: int,
    offset: int,
    id_number_hash: str | None = None,
    name: str | None = None,
    birth_date: date | None = None,
    sex_codes: list[str] | None = None,
    source_system: str | None = None,
    local_id: str | None = None,
    master_id: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of residents matching every given criterion (PDQ), unmasked, each with `related`: seen at
    or referred to ``org_code``. ``township`` limits the search to residents whose health record it keeps."""
    criteria = {
        "id_number_hash": ("l.id_number_hash = :id_number_hash", id_number_hash),
        "name": ("l.name = :name", name and name.strip()),
        "birth_date": ("l.birth_date = :birth_date", birth_date),
        "sex_codes": ("l.sex_code = ANY(:sex_codes)", sex_codes),
        "master_id": ("l.master_id = :master_id", master_id),
        "township": ("l.record_township = :township", township),
    }
    where = [sql for sql, value in criteria.values() if value]
    params: dict[str, Any] = {k: v for k, (_, v) in criteria.items() if v}
    if source_system and local_id:
        where.append(
            "l.master_id IN (SELECT master_id FROM marts.dim_patient_identifier "
            "WHERE source_system = :source_system AND local_patient_id = :local_id)"
        )
        params |= {"source_system": source_system, "local_id": local_id}
    if not where or where == [criteria["township"][0]]:
        raise ValueError("a patient search needs at least one criterion")
    rows = (
        conn.execute(
            sa.text(
                "SELECT p.master_id, p.name, p.sex_code, p.birth_date, p.id_number, p.phone, p.address, "
                f"p.source_record_count, count(*) OVER () AS _total, {related_to_org('p')} AS related "
                "FROM marts.dim_patient_lookup l JOIN marts.dim_patient p USING (master_id) WHERE "
                f"{' AND '.join(where)} "
                "ORDER BY p.master_id LIMIT :limit OFFSET :offset"
            ),
            {**params, "org": org_code or "", "limit": limit, "offset": offset},
        )
        .mappings()
        .all()
    )
    return (rows[0]["_total"] if rows else 0), [{k: v for k, v in r.items() if k != "_total"} for r in rows]


def patient_overview(conn: sa.Connection, master_id: str, sections: frozenset[str]) -> dict[str, Any]:
    """Demographics (unmasked), local ids, counts per visible record list, the 5 latest encounters and the latest
    family-doctor contract — in one round trip (the summary is the API's most frequent call)."""
    visible = {k: s for k, s in RECORD_LISTS.items() if s.section in sections}
    parts = {
        "demo": "(SELECT row_to_json(d) FROM (" + DEMOGRAPHICS_SQL + ") d)",
        "ids": "(SELECT coalesce(json_agg(i ORDER BY i.source_system, i.local_patient_id), '[]') FROM ("
        "SELECT source_system, local_patient_id, match_decision, matched_at "
        "FROM marts.dim_patient_identifier WHERE master_id = :m) i)",
        "counts": "json_build_object("
        + ", ".join(f"'{k}', (SELECT count(*) FROM {s.table} WHERE master_id = :m)" for k, s in visible.items())
        + ")"
        if visible
        else "NULL::json",
    }
    if "clinical" in sections:
        parts["recent"] = (
            "(SELECT coalesce(json_agg(e), '[]') FROM (SELECT t.*, o.org_name "
            "FROM marts.fct_encounter t LEFT JOIN marts.dim_organization o USING (org_code) "
            "WHERE t.master_id = :m "
            "ORDER BY t.visit_at DESC NULLS LAST LIMIT 5) e)"
        )
    if "health_records" in sections:
        parts["contract"] = (
            "(SELECT row_to_json(c) FROM (SELECT t.*, o.org_name "
            "FROM marts.fct_family_doctor_contract t "
            "LEFT JOIN marts.dim_organization o USING (org_code) WHERE t.master_id = :m "
            "ORDER BY t.signed_date DESC NULLS LAST LIMIT 1) c)"
        )
    select = ", ".join(f"{sql} AS {name}" for name, sql in parts.items())
    row = conn.execute(sa.text(f"SELECT {select}"), {"m": master_id}).mappings().one()
    return dict(row)
