"""Response shapes. Masking is declared here, so no route can leak a full ID number, phone or address."""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, Field, field_serializer


def mask_id_number(value: str | None) -> str | None:
    """Keep the area code and the last four characters: enough to confirm identity with the patient."""
    if not value:
        return value
    return value[:6] + "*" * (len(value) - 10) + value[-4:] if len(value) > 10 else "*" * len(value)


def mask_phone(value: str | None) -> str | None:
    if not value:
        return value
    return value[:3] + "****" + value[-4:] if len(value) >= 11 else "*" * len(value)


def mask_address(value: str | None) -> str | None:
    """Keep the administrative part up to the township (乡/镇/街道); hide village and house number."""
    if not value:
        return value
    match = re.match(r"^(.*?(?:街道|镇|乡))", value)
    return (match.group(1) if match else value[:6]) + "****"


class PatientBase(BaseModel):
    master_id: str = Field(description="主索引号")
    name: str | None = Field(description="姓名")
    sex_code: str | None = Field(description="性别代码 GB/T 2261.1")
    birth_date: date | None = Field(description="出生日期")


class PatientPublic(PatientBase):
    id_number: str | None = Field(description="身份证件号码（脱敏）")
    phone: str | None = Field(description="联系电话（脱敏）")
    address: str | None = Field(description="现住址（脱敏到乡镇）")
    source_record_count: int = Field(description="关联的机构患者记录数")

    @field_serializer("id_number")
    def _mask_id(self, value: str | None) -> str | None:
        return mask_id_number(value)

    @field_serializer("phone")
    def _mask_phone(self, value: str | None) -> str | None:
        return mask_phone(value)

    @field_serializer("address")
    def _mask_address(self, value: str | None) -> str | None:
        return mask_address(value)
