"""双向转诊平台 (referral) mapping on small bronze fixtures shaped like the platform's tables (manual:
docs/simulator/public_health.md §3): platform institution codes reach the 医共体 codes, 4-character ICD-10 reaches
国家临床版, the status steps and withdrawals are kept, logic errors are quarantined.

zz_record rows are landed with the referring institution's 医共体 code as ``_org_code`` (the collector must
translate zcjgbm; see the mapping's `organization` concept map).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_entity, standardize_source

SOURCE = "referral"
R1, R2, R3, R4, R5 = (f"ZZ2026110200{n:04d}" for n in range(1, 6))
APPLIED = datetime(2026, 11, 2, 11, 8, 25)


def _form(zzdh: str, **extra: Any) -> dict[str, Any]:
    return {
        "zzdh": zzdh,
        "zzlx": "01",
        "zcjgbm": "XYYGT02008",
        "zcjgmc": "荥阳市高山镇卫生院",
        "zcys": "杨洁洁",
        "zrjgbm": "XYYGT01002",
        "zrjgmc": "荥阳市中医院",
        "hzxm": "郭琳倩",
        "hzxb": "女",
        "hznl": 20,
        "hzsfzh": "410182200609091508",
        "hzlxdh": "18045237148",
        "hzzz": "河南省荥阳市高山镇刘庄村203号",
        "zdbm": "M54.5",
        "zdmc": "腰痛",
        "zzyy": "病情需要",
        "zt": "1",
        "sqsj": APPLIED,
        "jssj": None,
        "jsys": None,
        "jjyy": None,
        "wcsj": None,
        "cxsj": None,
        "bz": None,
        "xgsj": APPLIED,
        **extra,
    }


ORGS = [
    {"jgbm": "XYYGT01002", "jgmc": "荥阳市中医院", "jgcj": "01", "sjjgbm": None},
    {"jgbm": "XYYGT02008", "jgmc": "荥阳市高山镇卫生院", "jgcj": "02", "sjjgbm": "XYYGT01001"},
    {"jgbm": "XYYGT02001", "jgmc": "荥阳市京城路社区卫生服务中心", "jgcj": "02", "sjjgbm": "XYYGT01001"},
    {"jgbm": "XYYGT03001", "jgmc": "荥阳市乔楼镇丁楼村卫生室", "jgcj": "03", "sjjgbm": "XYYGT02003"},
    {"jgbm": "XYYGT03999", "jgmc": "荥阳市乔楼镇新建村卫生室", "jgcj": "03", "sjjgbm": "XYYGT02003"},
]
ACCEPTED = datetime(2026, 11, 2, 16, 43, 19)
FORMS = [
    _form(R1),
    _form(R1, zt="2", jssj=ACCEPTED, jsys="吕华帅", xgsj=ACCEPTED),  # 接收: a later UPDATE
    _form(
        R1, zt="3", jssj=ACCEPTED, jsys="吕华帅", wcsj=datetime(2026, 11, 3, 12, 37), xgsj=datetime(2026, 11, 3, 12, 37)
    ),  # 完成
    _form(
        R2,
        zzlx="02",
        zcjgbm="XYYGT01002",
        zrjgbm="XYYGT02008",
        hzxb="男",
        hzsfzh=None,
        zdbm="I63.9",
        zdmc="脑梗死",
        zzyy="康复期转基层管理",
    ),
    _form(R3, zdbm="C34.9", zdmc=None),  # outside the concept map, but a WHO code
    _form(R4, zt="5", cxsj=datetime(2026, 11, 2, 15), bz="患者要求撤销"),
    _form(R5, jssj=datetime(2026, 11, 1, 9), zt="2"),  # received before applied
]


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    frames = {
        "zz_jgxx": bronze_frame(spark, SOURCE, ORGS, org_code="410182000"),
        "zz_record": bronze_frame(
            spark,
            SOURCE,
            FORMS,
            org_code="410182108",
            types={
                "hznl": "smallint",
                "sqsj": "timestamp",
                "jssj": "timestamp",
                "wcsj": "timestamp",
                "cxsj": "timestamp",
                "xgsj": "timestamp",
            },
        ),
    }
    return standardize_source(SOURCE, frames, by_entity)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    assert {t["bronze_table"] for t in mapping["tables"]} == {"zz_jgxx", "zz_record"}
    checked = 0
    for table in mapping["tables"]:
        for column, spec in table["columns"].items():
            label = column_code_system(table["entity"], column)
            if "concept_map" in spec and label:
                assert set(concept_map(SOURCE, spec["concept_map"]).values()) <= set(code_system(label))
                checked += 1
    assert checked == 2  # sex, diagnosis


def test_platform_institutions_map_to_county_codes(results):
    orgs, quarantine = results["organization"]
    assert (orgs["XYYGT01002"].organization_code, orgs["XYYGT01002"].organization_type) == ("410182002", "县级医院")
    centre = orgs["XYYGT02008"]
    assert (centre.organization_code, centre.parent_organization_code, centre.organization_type) == (
        "410182108",
        "410182001",
        "乡镇卫生院",
    )
    assert orgs["XYYGT02001"].organization_type == "社区卫生服务中心"
    assert (orgs["XYYGT03001"].organization_code, orgs["XYYGT03001"].organization_type) == ("410182300", "村卫生室")
    assert orgs["XYYGT03999"].organization_code is None
    assert orgs["XYYGT03999"].dq_flags == ["UNMAPPED:organization_code:XYYGT03999"]
    assert quarantine == []


def test_referral_forms_take_their_latest_status_and_standard_codes(results):
    forms, _ = results["referral"]
    up, down = forms[R1], forms[R2]
    assert (up.direction, up.direction_source_value, up.status) == ("up", "01", "已完成")
    assert (up.from_organization_code, up.to_organization_code) == ("410182108", "410182002")
    assert (up.diagnosis_code, up.diagnosis_name, up.sex_code) == ("M54.500", "腰痛", "2")
    assert (up.requested_at, up.received_at, up.dq_flags) == (APPLIED, ACCEPTED, [])
    assert (down.direction, down.from_organization_code, down.to_organization_code) == (
        "down",
        "410182002",
        "410182108",
    )
    assert (down.diagnosis_code, down.sex_code, down.id_number, down.reason) == (
        "I63.900",
        "1",
        None,
        "康复期转基层管理",
    )
    assert forms[R4].status == "已撤销"  # a withdrawal is kept, not deleted


def test_a_who_code_outside_the_map_is_kept_and_a_receipt_before_application_quarantined(results):
    forms, quarantine = results["referral"]
    # not in the concept map, but a WHO ICD-10 subcategory: kept as sent (issue 26), not on the worklist
    assert forms[R3].diagnosis_code == "C34.9" and forms[R3].dq_flags == []
    assert R5 not in forms
    assert [(q.record_key, q.rule_id, q.reason) for q in quarantine] == [(R5, "REF002", "接收时间早于申请时间")]
