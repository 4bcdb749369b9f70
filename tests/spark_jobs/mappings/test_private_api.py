"""民营医院 JSON API (private_api) mapping on small bronze fixtures shaped like the API's records (manual:
docs/simulator/private_api.md): camelCase text fields parsed, the vendor's codes reach the standards, 自定义诊断 and
临时药品 flagged, tombstones gone, discharge before admission quarantined, ids agree across resources.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_entity, standardize_source

SOURCE = "private_api"
P1, P2 = "112611010000001", "212611010000001"
V1, V2, V3 = "122611010000001", "122611010000002", "222611010000001"
A1, A2 = "132611010000001", "232611010000001"
D1, D1_COPY, D2, D3, D4, D5 = (
    "142611010000001",
    "172611010000001",
    "142611010000002",
    "242611010000001",
    "142611010000003",
    "142611010000004",
)
O1, O2, O3, O4, O5, O6 = (f"15261101000000{n}" for n in range(1, 7))
C1, C2, C3 = (f"16261101000000{n}" for n in range(1, 4))
AT = "2026-11-01T09:24:24.973+08:00"


def _audit(**extra: Any) -> dict[str, Any]:
    return {"createdAt": AT, "updatedAt": AT, "deleted": "false", **extra}


def _patient(pid: str, hospital: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "hospitalCode": hospital,
        "patientNo": pid[2:8] + pid[-5:],
        "patientName": "张霞琳",
        "gender": "female",
        "birthday": "1970-06-07",
        "idCardNo": "410182197006079724",
        "mobile": "18954358028",
        "address": "河南省荥阳市高村乡陈营村229号",
        "nation": "汉族",
        "insuranceCardNo": "YB4101820000002825",
        **_audit(),
        **extra,
    }


def _visit(vid: str, pid: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": vid,
        "hospitalCode": "HZ001",
        "visitNo": "MZ" + vid[2:8] + vid[-5:],
        "patientId": pid,
        "patientNo": pid[2:8] + pid[-5:],
        "visitType": "clinic",
        "deptCode": "NK01",
        "deptName": "内科",
        "doctorCode": "HZ0008",
        "doctorName": "王建梅",
        "visitTime": "2026-11-01 09:31:44",
        "status": "finished",
        "remark": None,
        **_audit(),
        **extra,
    }


def _admission(aid: str, pid: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": aid,
        "hospitalCode": "HZ001",
        "admissionNo": "ZY" + aid[2:8] + aid[-4:],
        "patientId": pid,
        "patientNo": pid[2:8] + pid[-5:],
        "deptCode": "WK01",
        "deptName": "外科",
        "wardName": "外科病区",
        "bedNo": "21床",
        "doctorCode": "HZ0006",
        "doctorName": "于宇宇",
        "admitTime": "2026-11-01 16:56:57",
        "dischargeTime": None,
        "dischargeStatus": None,
        "status": "in_hospital",
        "remark": None,
        **_audit(),
        **extra,
    }


def _diagnosis(did: str, owner: str, code: str, name: str, **extra: Any) -> dict[str, Any]:
    visit = owner[1] == "2"
    return {
        "id": did,
        "hospitalCode": "HZ001",
        "patientId": P1,
        "visitId": owner if visit else None,
        "admissionId": None if visit else owner,
        "diagnosisStage": "outpatient" if visit else "admission",
        "diagnosisType": "main",
        "seqNo": "1",
        "diagnosisCode": code,
        "diagnosisName": name,
        "doctorCode": "HZ0008",
        "diagnosedAt": "2026-11-01 09:37:30",
        **_audit(),
        **extra,
    }


def _order(oid: str, kind: str, code: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": oid,
        "hospitalCode": "HZ001",
        "patientId": P1,
        "visitId": V1,
        "admissionId": None,
        "orderType": kind,
        "itemCode": code,
        "itemName": name,
        "spec": None,
        "quantity": None,
        "unitPrice": None,
        "insuranceCode": None,
        "orderTime": "2026-11-01 09:40:00",
        "resultValue": None,
        "resultUnit": None,
        "referenceRange": None,
        "abnormalFlag": None,
        "reportText": None,
        "doctorCode": "HZ0008",
        **_audit(updatedAt="2026-11-01T12:14:28.322+08:00"),
        **extra,
    }


def _charge(cid: str, code: str, name: str, category: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "hospitalCode": "HZ001",
        "patientId": P1,
        "visitId": V1,
        "admissionId": None,
        "itemCode": code,
        "itemName": name,
        "feeCategory": category,
        "insuranceCode": None,
        "amount": amount,
        "chargeTime": "2026-11-01 09:49:19",
        **_audit(),
        **extra,
    }


LATER = "2026-11-06T10:05:00.000+08:00"
BRONZE: dict[str, list[dict[str, Any]]] = {
    "patients": [
        _patient(
            P1,
            "HZ001",
            patientName="魏斌",
            gender="male",
            birthday="1978-09-14",
            idCardNo="410182197809148439",
            address="荥阳市汜水镇孙湾村２７４号",
        ),
        _patient(P2, "RX001", idCardNo="", nation="回族"),
    ],
    "visits": [
        _visit(V1, P1),
        _visit(V2, P1, visitType="emergency"),
        _visit(V2, P1, visitType="emergency", status="cancelled", remark="退费", deleted="true", _op="d"),
        _visit(V3, P2, hospitalCode="RX001", deptCode="FCK01", deptName="妇产科"),
    ],
    "admissions": [
        _admission(A1, P1),
        _admission(
            A1, P1, status="discharged", dischargeTime="2026-11-06 09:30:00", dischargeStatus="cured", updatedAt=LATER
        ),
        _admission(
            A2,
            P2,
            hospitalCode="RX001",
            status="discharged",
            dischargeTime="2026-10-31 10:00:00",
            dischargeStatus="improved",
        ),
    ],
    "diagnoses": [
        _diagnosis(D1, V1, "I10", "原发性高血压"),
        _diagnosis(D2, V1, "E11.9", "2型糖尿病", diagnosisType="other", seqNo="2"),
        _diagnosis(D3, V3, "ZDY1234", "咽部不适待查", patientId=P2, hospitalCode="RX001"),
        _diagnosis(D4, A1, "S72.0", "股骨颈骨折"),
        _diagnosis(
            D5,
            A1,
            "S72.0",
            "股骨颈骨折",
            diagnosisStage="discharge",
            diagnosedAt="2026-11-06 09:20:00",
            updatedAt=LATER,
        ),
        # 诊断更正 on V1: the diagnoses are re-saved under new ids, the old rows become tombstones
        _diagnosis(D1_COPY, V1, "I10", "原发性高血压", updatedAt=LATER),
        _diagnosis(D1, V1, "I10", "原发性高血压", deleted="true", updatedAt=LATER, _op="d"),
    ],
    "orders": [
        _order(
            O1,
            "drug",
            "YP96551",
            "苯磺酸氨氯地平片",
            spec="5mg*28片",
            quantity="2",
            unitPrice="18.60",
            insuranceCode="XC08CAA033A001010100223",
        ),
        _order(O2, "drug", "LS97256", "连花清瘟胶囊", spec="0.35g*24粒", quantity="1", unitPrice="28.00"),  # 临时药品
        _order(
            O3,
            "drug",
            "YP86066",
            "连花清瘟胶囊",
            spec="0.35g*24粒",
            quantity="1",
            unitPrice="28.00",
            insuranceCode="ZA01AAL0130010102050",
        ),
        _order(
            O4,
            "lab",
            "WBC",
            "白细胞计数",
            resultValue="6.4",
            resultUnit="10^9/L",
            referenceRange="3.5-9.5",
            abnormalFlag="",
        ),
        _order(O5, "exam", "ECG956", "常规心电图", reportText="正常心电图"),
        _order(
            O6,
            "surgery",
            "SS793501",
            "股骨骨折切开复位内固定术",
            quantity="1",
            insuranceCode="79.3501",
            visitId=None,
            admissionId=A1,
        ),
    ],
    "charges": [
        _charge(C1, "SF97526", "挂号费", "挂号费", "6.00", insuranceCode="110200001"),
        _charge(C2, "YP96551", "苯磺酸氨氯地平片", "西药费", "37.20", insuranceCode="XC08CAA033A001010100223"),
        _charge(C3, "SF12345", "检验费", "化验费", "-20.00"),
    ],
}


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """entity -> (silver rows by source key, quarantine rows), over every mapped table."""
    frames = {table: bronze_frame(spark, SOURCE, rows, org_code="410182004") for table, rows in BRONZE.items()}
    return standardize_source(SOURCE, frames, by_entity)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    assert {t["bronze_table"] for t in mapping["tables"]} == set(BRONZE)
    checked = 0
    for table in mapping["tables"]:
        columns = dict(table["columns"])
        for lookup in (table.get("lookups") or {}).values():
            columns.update(lookup["columns"])
        for column, spec in columns.items():
            label = column_code_system(table["entity"], column)
            if "concept_map" in spec and label:
                targets = set(concept_map(SOURCE, spec["concept_map"]).values())
                assert targets <= set(code_system(label)), (spec["concept_map"], targets - set(code_system(label)))
                checked += 1
    assert checked >= 10


def test_patients_parse_api_text_and_map_vendor_codes(results):
    persons, quarantine = results["person"]
    p1, p2 = persons[P1], persons[P2]
    assert (p1.sex_code, p1.sex_source_value, p1.birth_date, p1.ethnicity_code) == (
        "1",
        "male",
        date(1978, 9, 14),
        "01",
    )
    assert (p1.id_number_valid, p1.address, p1.insurance_card_no) == (
        True,
        "荥阳市汜水镇孙湾村274号",
        "YB4101820000002825",
    )
    assert p1.registered_at == datetime(2026, 11, 1, 9, 24, 24, 973000)  # +08:00 = the platform's Beijing time
    assert (p2.sex_code, p2.ethnicity_code, p2.id_number, p2.id_type_code) == ("2", "03", None, None)
    assert quarantine == []


def test_visits_drop_tombstones_and_take_the_corrected_main_diagnosis(results):
    encounters, quarantine = results["encounter"]
    assert V2 not in encounters  # 退费: tombstone
    v1, v3 = encounters[V1], encounters[V3]
    assert (v1.encounter_class_code, v1.visit_at, v1.local_patient_id, v1.status) == (
        "100",
        datetime(2026, 11, 1, 9, 31, 44),
        P1,
        "已完成",
    )
    assert (v1.primary_diagnosis_code, v1.primary_diagnosis_name, v1.dq_flags) == ("I10.x00", "原发性高血压", [])
    assert v3.primary_diagnosis_code is None and v3.dq_flags == ["UNMAPPED:primary_diagnosis_code:ZDY1234"]
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(A2, "ENC003")]


def test_admissions_take_the_discharge_update_and_quarantine_discharge_before_admission(results):
    encounters, _ = results["encounter"]
    stay = encounters[A1]
    assert (stay.encounter_class_code, stay.status, stay.discharge_outcome_code) == ("300", "出院", "1")
    assert (stay.admitted_at, stay.discharged_at, stay.length_of_stay_days) == (
        datetime(2026, 11, 1, 16, 56, 57),
        datetime(2026, 11, 6, 9, 30),
        5,
    )
    assert (stay.primary_diagnosis_code, stay.bed_id, stay.dq_flags) == ("S72.000", "21床", [])
    assert A2 not in encounters


def test_diagnoses_map_to_icd10_and_flag_private_codes(results):
    diagnoses, quarantine = results["diagnosis"]
    assert D1 not in diagnoses and quarantine == []  # replaced by its re-saved copy
    copy, other, private = diagnoses[D1_COPY], diagnoses[D2], diagnoses[D3]
    assert (copy.diagnosis_code, copy.diagnosis_source_code, copy.is_primary, copy.encounter_id) == (
        "I10.x00",
        "I10",
        True,
        V1,
    )
    assert (other.diagnosis_code, other.is_primary, other.diagnosis_kind) == ("E11.900", False, "门诊")
    assert (private.diagnosis_code, private.dq_flags) == (None, ["UNMAPPED:diagnosis_code:ZDY1234"])
    assert (diagnoses[D5].diagnosis_kind, diagnoses[D5].encounter_id) == ("出院", A1)


def test_fees_map_vendor_categories_and_quarantine_negative_amounts(results):
    fees, quarantine = results["fee"]
    assert (fees[C1].fee_category_code, fees[C1].amount, fees[C1].encounter_id) == ("01", Decimal("6.00"), V1)
    assert (fees[C2].fee_category_code, fees[C2].charged_at) == ("13", datetime(2026, 11, 1, 9, 49, 19))
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(C3, "FEE001")]


# orders holds drug, lab, exam and surgery orders; each entity takes its own type through the table's `where`.
def test_orders_split_into_prescriptions_labs_exams_and_surgeries(results):
    assert set(results["prescription"][0]) == {O1, O2, O3}
    assert set(results["lab_result"][0]) == {O4}
    assert set(results["exam_report"][0]) == {O5}
    assert set(results["surgery"][0]) == {O6}


def test_drug_orders_map_to_national_codes_and_flag_temporary_drugs(results):
    items, quarantine = results["prescription"]
    western, temporary, patent = items[O1], items[O2], items[O3]
    assert (western.drug_code, western.atc_code, western.drug_category) == (
        "XC08CAA033A001010100223",
        "C08CA01",
        "西药",
    )
    assert (western.quantity, western.unit_price, western.amount) == (
        Decimal("2.00"),
        Decimal("18.60"),
        Decimal("37.20"),
    )
    assert (temporary.drug_code, temporary.atc_code, temporary.dq_flags) == (None, None, ["UNMAPPED:drug_code:LS97256"])
    assert (patent.drug_code, patent.atc_code, patent.drug_category, patent.dq_flags) == (
        "ZA01AAL0130010102050",
        None,
        "中成药",
        [],
    )
    assert quarantine == []


def test_lab_exam_and_surgery_orders_reach_loinc_exam_class_and_icd9cm3(results):
    lab = results["lab_result"][0][O4]
    assert (lab.item_code, lab.numeric_value, lab.abnormal_flag, lab.encounter_id) == ("6690-2", 6.4, "N", V1)
    assert lab.reported_at == datetime(2026, 11, 1, 12, 14, 28, 322000)
    exam = results["exam_report"][0][O5]
    assert (exam.exam_class_code, exam.exam_class_source_value, exam.conclusion) == ("ECG", "ECG", "正常心电图")
    surgery = results["surgery"][0][O6]
    assert (surgery.procedure_code, surgery.encounter_id, surgery.dq_flags) == ("79.3501", A1, [])


def test_child_records_point_to_known_encounters_and_patients(results):
    encounters = set(results["encounter"][0]) | {A2}  # A2: quarantined stay
    children = [r for entity in ("diagnosis", "fee") for r in results[entity][0].values()]
    assert {r.encounter_id for r in children} <= encounters
    assert {r.local_patient_id for r in children} | {
        r.local_patient_id for r in results["encounter"][0].values()
    } <= set(results["person"][0])
