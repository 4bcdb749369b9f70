"""医保结算文件 (yb_settlement) mapping on small bronze fixtures shaped like the platform's '|' files (manual:
docs/simulator/file_sources.md §4): text amounts and times parsed, 县外 care kept, 冲销 rows net out, the 定点
catalogue crosswalked to the county's institution codes, inconsistent amounts quarantined.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.spark_jobs.bronze_rows import bronze_frame, by_entity, standardize_source

SOURCE = "yb_settlement"
J1, J2, J3, J4, J5 = (f"41018220261101{n:06d}" for n in range(1, 6))


def _settlement(number: str, **extra: Any) -> dict[str, Any]:
    return {
        "结算流水号": number,
        "医保号": "YB4101820000009258",
        "身份证号": "410182195106054752",
        "姓名": "陈红斌",
        "医疗机构编码": "H41018200002",
        "医疗机构名称": "荥阳市中医院",
        "就医地": "县内",
        "医疗类别": "急诊",
        "入院日期": "",
        "出院日期": "",
        "总费用": "41.00",
        "统筹支付": "16.40",
        "个人支付": "24.60",
        "结算类型": "正常",
        "原结算流水号": "",
        "结算时间": "2026-11-01 06:54:16",
        **extra,
    }


CATALOGUE = [
    {
        "医疗机构编码": "H41018200001",
        "医疗机构名称": "荥阳市人民医院",
        "医疗机构等级": "二级甲等",
        "机构类别": "综合医院",
        "所在乡镇": "京城路街道",
    },
    {
        "医疗机构编码": "H41018200011",
        "医疗机构名称": "王村镇卫生院",
        "医疗机构等级": "一级",
        "机构类别": "乡镇卫生院",
        "所在乡镇": "王村镇",
    },
    {
        "医疗机构编码": "H41018200999",
        "医疗机构名称": "荥阳市新开诊所",
        "医疗机构等级": "未定级",
        "机构类别": "诊所",
        "所在乡镇": "索河街道",
    },
]
SETTLEMENTS = [
    _settlement(J1),
    _settlement(
        J2,
        身份证号="",
        医疗机构编码="H41010012345",
        医疗机构名称="郑州大学第一附属医院",
        就医地="县外",
        医疗类别="住院",
        入院日期="2026-10-20",
        出院日期="2026-10-31",
        总费用="18650.30",
        统筹支付="12055.21",
        个人支付="6595.09",
        结算时间="2026-11-01 10:12:40",
    ),
    _settlement(
        J3,
        总费用="-41.00",
        统筹支付="-16.40",
        个人支付="-24.60",
        结算类型="冲销",
        原结算流水号=J1,
        结算时间="2026-11-01 15:20:00",
    ),
    _settlement(J4, 个人支付="20.00"),  # does not add up
    _settlement(
        J5,
        医疗类别="住院",
        入院日期="2026-11-03",
        出院日期="2026-10-28",
        总费用="3200.00",
        统筹支付="2240.00",
        个人支付="960.00",
    ),  # discharged before admitted
]


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    frames = {
        "YBDDJG": bronze_frame(spark, SOURCE, CATALOGUE, org_code="410182000"),
        "YBJS": bronze_frame(spark, SOURCE, SETTLEMENTS, org_code="410182000"),
    }
    return standardize_source(SOURCE, frames, by_entity)


def test_catalogue_codes_reach_the_county_institution_codes(results):
    orgs, quarantine = results["organization"]
    hospital, centre, unknown = orgs["H41018200001"], orgs["H41018200011"], orgs["H41018200999"]
    assert (hospital.organization_code, hospital.organization_level, hospital.organization_type) == (
        "410182001",
        "二级甲等",
        "综合医院",
    )
    assert (centre.organization_code, centre.township) == ("410182106", "王村镇")
    assert unknown.organization_code is None and unknown.dq_flags == ["UNMAPPED:organization_code:H41018200999"]
    assert quarantine == []


def test_settlements_parse_text_and_keep_out_of_county_stays(results):
    settlements, _ = results["insurance_settlement"]
    local, outside = settlements[J1], settlements[J2]
    assert (local.total_amount, local.fund_paid, local.self_paid) == (
        Decimal("41.00"),
        Decimal("16.40"),
        Decimal("24.60"),
    )
    assert (local.is_out_of_county, local.encounter_kind, local.medical_org_code) == (False, "急诊", "H41018200002")
    assert (local.settled_at, local.admitted_at, local.id_number) == (
        datetime(2026, 11, 1, 6, 54, 16),
        None,
        "410182195106054752",
    )
    assert (outside.is_out_of_county, outside.encounter_kind, outside.medical_org_name) == (
        True,
        "住院",
        "郑州大学第一附属医院",
    )
    assert (outside.admitted_at, outside.discharged_at, outside.id_number) == (
        datetime(2026, 10, 20),
        datetime(2026, 10, 31),
        None,
    )  # blank ID number: EMPI by name
    # a 冲销 is its own settlement with negative amounts: the original and its reversal net to zero
    assert settlements[J3].total_amount + local.total_amount == 0


def test_inconsistent_amounts_and_discharge_before_admission_are_quarantined(results):
    settlements, quarantine = results["insurance_settlement"]
    assert J4 not in settlements and J5 not in settlements
    assert sorted((q.record_key, q.rule_id) for q in quarantine) == [(J4, "INS002"), (J5, "INS001")]
