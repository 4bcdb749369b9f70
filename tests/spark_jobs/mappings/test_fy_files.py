"""妇幼保健院 daily files (fy_files) mapping on small bronze fixtures shaped like the vendor's CSVs (manual:
docs/simulator/file_sources.md §2): Chinese header columns with text values, the vendor's date formats parsed,
4-character ICD-10 reaching 国家临床版, 自定义诊断 flagged, `_XG` corrections (修改 → update, 作废 → delete) applied.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_entity, standardize_source

SOURCE = "fy_files"
V1, V2, V3, V4 = (f"MZ20261101{n:05d}" for n in range(1, 5))
P1, P2 = "26110100001", "26110100002"
B1, B2 = "CS202611030001", "CS202611030002"
S1, S2, S3, S4, S5 = (f"SF20261103{n:05d}" for n in range(1, 6))


def _visit(jzlsh: str, patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "就诊流水号": jzlsh,
        "患者编号": patient,
        "姓名": "刘勇涛",
        "性别": "男",
        "出生日期": "1996/05/02",
        "身份证号": "410182199605022374",
        "联系电话": "15784024872",
        "家庭住址": "荥阳市豫龙镇魏坡村２８９号",
        "就诊时间": "2026/11/01 11:27:13",
        "就诊类型": "门诊",
        "科室编码": "2010",
        "科室名称": "妇产科",
        "医生工号": "Y031",
        "医生姓名": "杜刚倩",
        "诊断编码": "K29.7",
        "诊断名称": "胃炎",
        "费用合计": "297.20",
        "医保标志": "是",
        "最后修改时间": "2026/11/01 11:33:27",
        "操作类型": None,
        "修改原因": None,
        **extra,
    }


def _contact(sfbh: str, **extra: Any) -> dict[str, Any]:
    return {
        "随访编号": sfbh,
        "患者编号": "26110300008",
        "孕产妇姓名": "李红",
        "身份证号": "410182198806271321",
        "就诊流水号": "",
        "随访日期": "2026/11/03",
        "随访类别": "分娩",
        "孕周": "38",
        "收缩压": "116",
        "舒张压": "62",
        "体重(kg)": "70.4",
        "宫底高度(cm)": "",
        "胎心率": "152",
        "随访医生": "曹华磊",
        "最后修改时间": "2026/11/03 04:52:01",
        "操作类型": None,
        "修改原因": None,
        **extra,
    }


def _birth(csdjh: str, **extra: Any) -> dict[str, Any]:
    return {
        "出生登记号": csdjh,
        "母亲患者编号": "26110300008",
        "母亲姓名": "李红",
        "母亲身份证号": "410182198806271321",
        "母亲出生日期": "1988年06月27日",
        "新生儿患者编号": "26110300009",
        "新生儿姓名": "李红之女",
        "新生儿性别": "女",
        "出生日期": "2026年11月03日",
        "出生时间": "10时15分",
        "出生体重(克)": "2727",
        "出生机构": "荥阳市妇幼保健院",
        "家庭住址": "河南省荥阳市王村镇朱岗村205号",
        "登记时间": "2026年11月03日 12:37:01",
        **extra,
    }


BRONZE: dict[str, list[dict[str, Any]]] = {
    "FYBJY_MZJZ": [
        _visit(V1, P1),
        _visit(
            V2,
            P2,
            姓名="孙德军",
            性别="男",
            出生日期="1965/01/10",
            身份证号="",
            就诊类型="急诊",
            科室编码="1010",
            科室名称="急诊科",
            诊断编码="ZDY123",
            诊断名称="咽痛待查",
            医保标志="否",
            家庭住址="",
        ),
        _visit(V3, P1, 就诊时间="2026/11/01 16:06:14", 诊断编码="J06.9", 诊断名称="急性上呼吸道感染"),
        _visit(V4, P1, 就诊时间="2026/11/01 16:30:00"),
        # FYBJY_MZJZ_20261102_XG.csv: V4 作废 (退费), V3 修改 (诊断更正)
        _visit(V4, P1, 就诊时间="2026/11/01 16:30:00", 操作类型="作废", 修改原因="退费", _op="d"),
        _visit(
            V3,
            P1,
            就诊时间="2026/11/01 16:06:14",
            诊断编码="J20.9",
            诊断名称="急性支气管炎",
            最后修改时间="2026/11/02 09:12:00",
            操作类型="修改",
            修改原因="诊断更正",
            _op="u",
        ),
    ],
    "FYBJY_CSDJ": [
        _birth(B1),
        _birth(B2, **{"出生体重(克)": "150"}, 出生时间="23时05分", 新生儿姓名="李红之子", 新生儿性别="男"),
    ],
    "FYBJY_YCFSF": [
        _contact(S1),
        _contact(S2, 随访类别="产前检查", 孕周="", 就诊流水号=V1, 胎心率="140"),
        _contact(S3, 随访类别="产前检查", 收缩压="60", 舒张压="80"),
        _contact(S4, 随访类别="产后访视", 孕周="", 收缩压="130"),
        _contact(S5, 随访类别="产前检查"),
        # FYBJY_YCFSF_20261104_XG.csv: S4 收缩压 corrected, S5 voided
        _contact(S4, 随访类别="产后访视", 孕周="", 收缩压="120", 操作类型="修改", 修改原因="数据修改", _op="u"),
        _contact(S5, 随访类别="产前检查", 操作类型="作废", 修改原因="作废", _op="d"),
    ],
}


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """entity -> (silver rows by source key, quarantine rows)."""
    frames = {table: bronze_frame(spark, SOURCE, rows, org_code="410182003") for table, rows in BRONZE.items()}
    return standardize_source(SOURCE, frames, by_entity)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    assert {t["bronze_table"] for t in mapping["tables"]} == set(BRONZE)
    checked = 0
    for table in mapping["tables"]:
        for column, spec in table["columns"].items():
            label = column_code_system(table["entity"], column)
            if "concept_map" in spec and label:
                assert set(concept_map(SOURCE, spec["concept_map"]).values()) <= set(code_system(label))
                checked += 1
    assert checked == 5  # sex (person, newborn), encounter class, diagnosis (encounter, diagnosis)


def test_visits_parse_vendor_formats_map_codes_and_apply_xg_corrections(results):
    visits, quarantine = results["encounter"]
    assert set(visits) == {V1, V2, V3} and quarantine == []  # V4 voided by its _XG 作废 row
    v1, v2, v3 = visits[V1], visits[V2], visits[V3]
    assert (v1.encounter_class_code, v1.visit_at, v1.visit_date) == (
        "100",
        datetime(2026, 11, 1, 11, 27, 13),
        date(2026, 11, 1),
    )
    assert (v1.primary_diagnosis_code, v1.department_code, v1.local_patient_id) == ("K29.700", "2010", P1)
    assert (v1.payment_category_code, v1.payment_category_source_value) == (None, "是")  # 医保, scheme unknown
    assert (v2.encounter_class_code, v2.payment_category_code) == ("200", "07")  # 否 = 全自费
    # 自定义诊断 ZDY###: no ICD-10 code, flagged, the visit is kept
    assert v2.primary_diagnosis_code is None and v2.dq_flags == ["UNMAPPED:primary_diagnosis_code:ZDY123"]
    assert (v3.primary_diagnosis_code, v3.primary_diagnosis_name) == ("J20.900", "急性支气管炎")  # 修改 wins


def test_diagnosis_keeps_source_code_and_follows_the_visit(results):
    diagnoses, quarantine = results["diagnosis"]
    assert set(diagnoses) == {V1, V2, V3} and quarantine == []
    d1, d2 = diagnoses[V1], diagnoses[V2]
    assert (d1.diagnosis_code, d1.diagnosis_source_code, d1.is_primary, d1.diagnosis_kind) == (
        "K29.700",
        "K29.7",
        True,
        "门诊",
    )
    assert (d1.encounter_id, d1.local_patient_id, d1.diagnosed_at) == (V1, P1, datetime(2026, 11, 1, 11, 27, 13))
    assert (d2.diagnosis_code, d2.diagnosis_source_code, d2.dq_flags) == (
        None,
        "ZDY123",
        ["UNMAPPED:diagnosis_code:ZDY123"],
    )


def test_patients_come_from_the_visit_rows_one_per_patient_number(results):
    persons, _ = results["person"]
    assert set(persons) == {P1, P2}
    p1, p2 = persons[P1], persons[P2]
    assert (p1.sex_code, p1.sex_source_value, p1.birth_date, p1.id_type_code) == ("1", "男", date(1996, 5, 2), "01")
    assert (p1.address, p1.id_number_valid, p1.dq_flags) == ("荥阳市豫龙镇魏坡村289号", True, [])
    assert (p2.id_number, p2.id_type_code, p2.address, p2.birth_date) == (None, None, None, date(1965, 1, 10))


def test_births_parse_chinese_dates_and_quarantine_impossible_weights(results):
    births, quarantine = results["birth"]
    b1 = births[B1]
    assert (b1.born_at, b1.birth_weight_g, b1.newborn_sex_code) == (datetime(2026, 11, 3, 10, 15), 2727, "2")
    assert (b1.mother_id_number, b1.birth_place_org_code, b1.newborn_name) == (
        "410182198806271321",
        "410182003",
        "李红之女",
    )
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(B2, "BIR002")]


def test_maternal_contacts_are_services_with_corrections_applied(results):
    services, quarantine = results["public_health_service"]
    assert set(services) == {S1, S2, S4}  # S3 quarantined, S5 voided
    s1, s2, s4 = services[S1], services[S2], services[S4]
    assert (s1.service_kind, s1.result, s1.service_date, s1.gestational_weeks) == (
        "maternal_followup",
        "分娩",
        date(2026, 11, 3),
        38,
    )
    assert (s1.systolic_bp, s1.diastolic_bp, s1.weight_kg, s1.local_patient_id) == (116, 62, 70.4, "26110300008")
    assert (s1.person_name, s1.id_number, s1.dq_flags) == ("李红", "410182198806271321", [])
    assert (s2.result, s2.gestational_weeks) == ("产前检查", None)
    assert (s4.result, s4.systolic_bp) == ("产后访视", 120)
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(S3, "PHS002")]
