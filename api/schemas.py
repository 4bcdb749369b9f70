"""Response shapes (documented in /docs). Personal fields arrive already masked per role (api/privacy.py)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field


class Demographics(BaseModel):
    master_id: str = Field(description="主索引号 / master patient id")
    name: str | None = Field(None, description="姓名")
    sex_code: str | None = Field(None, description="性别代码 GB/T 2261.1")
    birth_date: date | None = Field(None, description="出生日期")
    id_number: str | None = Field(None, description="身份证件号码（按角色脱敏）")
    phone: str | None = Field(None, description="联系电话（按角色脱敏）")
    address: str | None = Field(None, description="现住址（按角色脱敏）")
    source_record_count: int | None = Field(None, description="关联的机构患者记录数")


class PatientHit(Demographics):
    access: str = Field(description="本机构可调阅 in_scope / 需说明理由 break_glass_required / 全部 all")


class SearchResult(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[PatientHit]


class LocalId(BaseModel):
    source_system: str
    local_patient_id: str
    match_decision: str | None = None
    matched_at: datetime | None = None


class Page(BaseModel):
    """One page of a resident's records, newest first."""

    total: int = Field(description="符合条件的记录总数")
    limit: int
    offset: int
    items: list[dict[str, Any]]


class SectionCount(BaseModel):
    zh: str
    total: int
    href: str


class PatientSummary(BaseModel):
    demographics: Demographics | None
    identifiers: list[LocalId] | None = Field(None, description="各成员系统的患者号（PIX）")
    sections: dict[str, SectionCount] = Field(description="各类记录的条数与调阅地址")
    recent_encounters: list[dict[str, Any]] | None = Field(None, description="最近的就诊（跨机构时间线）")
    family_doctor_contract: dict[str, Any] | None = Field(None, description="最近的家庭医生签约")
    break_glass: bool = Field(False, description="本次为紧急调阅（已记录并标记）")


class LabTrendPoint(BaseModel):
    reported_at: datetime | None
    numeric_value: float | None
    result_value: str | None
    unit: str | None
    abnormal_flag: str | None
    org_name: str | None


class LabTrend(BaseModel):
    code: str = Field(description="LOINC 代码")
    item_name: str | None
    points: list[LabTrendPoint]


class AuditEvent(BaseModel):
    event_id: int
    at: datetime
    subject: str
    role: str | None
    org_code: str | None
    method: str
    path: str
    action: str
    master_id: str | None
    resource_types: list[str] | None
    resource_count: int | None
    returned_master_ids: list[str] | None = Field(
        None, description="检索返回的居民主索引号 / the residents a search returned"
    )
    purpose: str | None
    break_glass: bool
    result: str
    status_code: int
    detail: str | None


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditEvent]
