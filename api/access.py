"""Who may read which resident (tender 数据权限管理; GB/T 39725: minimum necessary access).

A role's sections say what kind of data it may read at all; its patient scope says whose: a clinician the
residents seen at, or referred to, their institution — anyone else only with a stated reason (break-glass),
which the audit row flags; a public-health officer the residents whose health record their township keeps; an
EMPI steward everyone's demographics and identifiers; an auditor no resident at all.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import status

from api.audit import AuditEntry
from api.records import related_to_org
from api.security import ApiError, Principal

MIN_REASON_CHARS = 4
SCOPE_SQL = sa.text(
    f"SELECT l.record_township, {related_to_org('l')} AS related FROM marts.dim_patient_lookup l WHERE l.master_id = :m"
)
SECTION_ZH = {
    "demographics": "基本信息",
    "identifiers": "身份标识",
    "clinical": "诊疗数据",
    "health_records": "健康档案数据",
    "empi": "主索引管理",
    "audit": "审计日志",
}


ID_SEARCHES_LAST_HOUR = sa.text(
    "SELECT count(*) FROM audit.access_log WHERE subject = :subject AND at > now() - interval '1 hour' "
    "AND result = 'allowed' AND (query ? 'id_number' OR query ? 'id_number_hash')"
)


def limit_id_number_searches(conn: sa.Connection, principal: Principal) -> None:
    """Cap searches by ID number per user and hour (the role's id_searches_per_hour), counted in the audit trail:
    a masked number shown beside birth date and sex must not be recoverable by searching its candidates."""
    cap = principal.role.id_searches_per_hour
    if cap is None:
        return
    if conn.execute(ID_SEARCHES_LAST_HOUR, {"subject": principal.login}).scalar_one() >= cap:
        raise ApiError(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"一小时内按身份证号检索已达 {cap} 次上限，请稍后再试，或改用姓名+出生日期检索；"
            "如需批量核对请联系主索引管理员",
            f"at most {cap} searches by ID number per hour; try later or search by name and birth "
            "date; ask the EMPI steward for bulk checks",
            headers={"Retry-After": "600"},
        )


def require_section(principal: Principal, section: str) -> None:
    if section not in principal.role.sections:
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            f"角色“{principal.role.zh}”无权访问{SECTION_ZH[section]}",
            f"role {principal.role.name} may not read {section}",
        )


def township_scope(principal: Principal) -> str | None:
    """The township a search is limited to: a public-health officer's own, else none."""
    return principal.user.township if principal.role.patients == "township" else None


def require_patient(
    conn: sa.Connection, principal: Principal, entry: AuditEntry, master_id: str, section: str, reason: str | None
) -> None:
    """Allow, allow as break-glass (flagged in the audit row), or refuse with the reason and what to do."""
    entry.master_id = master_id
    entry.purpose = reason
    require_section(principal, section)
    row = conn.execute(SCOPE_SQL, {"m": master_id, "org": principal.user.org_code or ""}).first()
    if row is None:
        raise ApiError(
            status.HTTP_404_NOT_FOUND,
            f"主索引号 {master_id} 不存在，请先检索患者",
            f"no resident with master id {master_id}; search first (GET /patients)",
        )
    scope = principal.role.patients
    if scope == "all":
        return
    if scope == "township":
        if row.record_township and row.record_township == principal.user.township:
            return
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            f"该居民的健康档案不在{principal.user.township}",
            "this resident's health record is kept outside your township",
        )
    if scope == "seen_or_referred":
        if row.related:
            return
        if principal.role.break_glass and reason and len(reason.strip()) >= MIN_REASON_CHARS:
            entry.break_glass = True
            return
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            "该居民在本机构无就诊或转入记录；确需调阅请在 reason 参数中说明理由（紧急调阅，将被记录并标记）",
            "this resident has no encounter at or referral to your institution; to read the record "
            "anyway state why in the `reason` parameter (break-glass: logged and flagged)",
        )
    raise ApiError(
        status.HTTP_403_FORBIDDEN,
        f"角色“{principal.role.zh}”无权查看居民数据",
        f"role {principal.role.name} may not read residents' data",
    )
