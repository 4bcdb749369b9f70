"""api/fhir.py: every resource it builds from warehouse rows is valid FHIR, checked with the fhir.resources models.

fhir.resources 8 ships R5 as its default models, plus R4B (4.3.0) and STU3; there is no R4 (4.0.1) package. R4B
is R4 with a few non-clinical additions, and every element used here has the same shape in R4 and R4B (Encounter
`class` a Coding, `hospitalization`, MedicationRequest `medicationCodeableConcept`, …), so the R4B models stand in
for R4. They check structure, types, cardinality and unknown elements but not code values or every invariant, so
the tests below also check the required value sets, FHIR ids, dateTime formats and the absence of empty elements.

The sample rows are shaped like the marts rows (values as seen in the warehouse: Decimal, tz-aware datetime, date,
None). No database is needed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from api import fhir

CST = timezone(timedelta(hours=8))
BASE = "http://drc.example:8000/fhir"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
REFERENCE = re.compile(r"(Patient|Encounter|Organization)/[A-Za-z0-9\-.]{1,64}")
DATE_TIME = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?)?)?")
DATE_TIME_KEYS = {
    "start",
    "end",
    "recordedDate",
    "authoredOn",
    "effectiveDateTime",
    "issued",
    "birthDate",
    "timestamp",
    "lastUpdated",
    "date",
}
# required bindings (R4), which the models do not enforce
ENCOUNTER_STATUS = {
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
}
OBSERVATION_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
MEDICATION_REQUEST_STATUS = {
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
}
SERVICE_REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
REQUEST_INTENT = {
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
}
GENDERS = {"male", "female", "other", "unknown"}


def _walk(value: Any, key: str = "") -> Any:
    """(key, value) of every element, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield key, v
            yield from _walk(v, key)


def valid(resource: dict[str, Any], model: type) -> dict[str, Any]:
    """The resource, after checking it is JSON-ready, valid for its R4B model and free of what FHIR forbids."""
    assert json.loads(json.dumps(resource, ensure_ascii=False)) == resource  # no Decimal, date, tuple
    assert model.__name__ == resource["resourceType"]
    model.model_validate(resource)
    if "id" in resource:
        assert FHIR_ID.fullmatch(resource["id"]), resource["id"]
    for key, value in _walk(resource):
        assert value is not None and value != "" and value != [] and value != {}, f"empty element {key}"
        if key == "reference":
            assert REFERENCE.fullmatch(value), value
        if key in DATE_TIME_KEYS and isinstance(value, str):
            assert DATE_TIME.fullmatch(value), (key, value)
        if key == "issued" or key == "lastUpdated":
            assert "T" in value, (key, value)  # instant: date, time and zone
    return resource


def codes(concepts: list[dict[str, Any]] | dict[str, Any], system: str) -> list[str]:
    concepts = concepts if isinstance(concepts, list) else [concepts]
    return [c["code"] for concept in concepts for c in concept.get("coding", []) if c["system"] == system]


def identifier(resource: dict[str, Any], system: str) -> str:
    return next(i["value"] for i in resource["identifier"] if i["system"] == system)


def nothing_but(keys: list[str], **values: Any) -> dict[str, Any]:
    """A row of the given mart columns, all None except the ones given."""
    return {key: None for key in keys} | values


# --- sample rows ----------------------------------------------------------------------------------------------
DEMOGRAPHICS = {
    "master_id": "M00e34b5734f7310b",
    "name": "朱静玲",
    "sex_code": "2",
    "birth_date": date(2007, 2, 4),
    "id_number": "410182************",
    "phone": "135****4673",
    "address": "河南省荥阳市城关乡****",
    "source_record_count": 2,
    "last_updated_at": datetime(2026, 11, 1, 8, 16, 0, 900000, tzinfo=CST),
}
LOCAL_IDS = [
    {
        "source_system": "zyy_his",
        "local_patient_id": "26110400002",
        "match_decision": "id_number",
        "matched_at": datetime(2026, 11, 4, 2, 0, tzinfo=UTC),
    },
    {"source_system": "cloud_his", "local_patient_id": "1132611020004", "match_decision": "link", "matched_at": None},
]

ENCOUNTER_COLUMNS = (
    "encounter_key source_system encounter_id org_code master_id encounter_class_code visit_at "
    "visit_date department_code department_name doctor_name primary_diagnosis_code "
    "primary_diagnosis_name is_tcm payment_category_code is_first_visit status admitted_at "
    "admission_date discharged_at discharge_date bed_days discharge_outcome_code is_died fee_rows "
    "total_fee drug_fee is_cancelled is_duplicate_save duplicate_of_encounter_key is_counted"
).split()
OUTPATIENT = {
    "encounter_key": "cloud_his|261101101000001",
    "source_system": "cloud_his",
    "encounter_id": "261101101000001",
    "org_code": "410182101",
    "org_name": "荥阳市城关乡卫生院",
    "master_id": "M259e97f87dcbed28",
    "encounter_class_code": "100",
    "visit_at": datetime(2026, 11, 1, 11, 44, 51, tzinfo=CST),
    "visit_date": date(2026, 11, 1),
    "department_code": "1001",
    "department_name": "全科门诊",
    "doctor_name": "陈永帅",
    "primary_diagnosis_code": "I10.x00",
    "primary_diagnosis_name": "原发性高血压",
    "is_tcm": False,
    "payment_category_code": "99",
    "is_first_visit": None,
    "status": None,
    "admitted_at": None,
    "admission_date": None,
    "discharged_at": None,
    "discharge_date": None,
    "bed_days": None,
    "discharge_outcome_code": None,
    "is_died": False,
    "fee_rows": 2,
    "total_fee": Decimal("43.20"),
    "drug_fee": Decimal("37.20"),
    "is_cancelled": False,
    "is_duplicate_save": False,
    "duplicate_of_encounter_key": None,
    "is_counted": True,
}
INPATIENT = OUTPATIENT | {
    "encounter_key": "rmyy_his|ZY202611010001",
    "source_system": "rmyy_his",
    "encounter_id": "ZY202611010001",
    "org_code": "410182001",
    "org_name": "荥阳市人民医院",
    "encounter_class_code": "300",
    "visit_at": datetime(2026, 11, 1, 10, 56, 16, tzinfo=CST),
    "department_code": "502",
    "department_name": "口腔科",
    "doctor_name": "刘斌凤",
    "primary_diagnosis_code": "J18.900",
    "primary_diagnosis_name": "肺炎",
    "payment_category_code": "02",
    "status": "出院",
    "admitted_at": datetime(2026, 11, 1, 10, 56, 16, tzinfo=CST),
    "admission_date": date(2026, 11, 1),
    "discharged_at": datetime(2026, 11, 5, 12, 56, 16, tzinfo=CST),
    "discharge_date": date(2026, 11, 5),
    "bed_days": 4,
    "discharge_outcome_code": "2",
    "total_fee": Decimal("586.00"),
    "drug_fee": Decimal("60.00"),
}

DIAGNOSIS_COLUMNS = (
    "diagnosis_key encounter_key source_system org_code master_id encounter_class_code "
    "diagnosis_kind is_primary diagnosis_code icd_category diagnosis_name tcm_disease_code "
    "tcm_syndrome_code is_tcm diagnosed_at diagnosed_date"
).split()
DIAGNOSIS = {
    "diagnosis_key": "private_api|242611020000009",
    "encounter_key": "private_api|232611020000001",
    "source_system": "private_api",
    "org_code": "410182005",
    "master_id": "M50c088bec2d5ac0f",
    "encounter_class_code": "300",
    "diagnosis_kind": "出院",
    "is_primary": True,
    "diagnosis_code": "S72.000",
    "icd_category": "S72",
    "diagnosis_name": "股骨颈骨折",
    "tcm_disease_code": None,
    "tcm_syndrome_code": None,
    "is_tcm": False,
    "diagnosed_at": datetime(2026, 11, 2, 17, 23, 1, tzinfo=CST),
    "diagnosed_date": date(2026, 11, 2),
}
TCM_DIAGNOSIS = DIAGNOSIS | {
    "diagnosis_key": "zyy_his|MZ2026110500003D02",
    "encounter_key": "zyy_his|MZ2026110500003",
    "source_system": "zyy_his",
    "org_code": "410182002",
    "encounter_class_code": "100",
    "diagnosis_kind": "门诊",
    "is_primary": False,
    "diagnosis_code": None,
    "icd_category": None,
    "diagnosis_name": "感冒（风热犯表证）",
    "tcm_disease_code": "BWF010",
    "tcm_syndrome_code": "ZWFRF",
    "is_tcm": True,
}

LAB_COLUMNS = (
    "lab_result_key encounter_key source_system lab_order_id org_code master_id encounter_class_code "
    "item_code item_source_code item_name result_value numeric_value unit reference_range abnormal_flag "
    "is_abnormal specimen reported_at reported_date has_encounter is_counted"
).split()
LAB_RESULT = {
    "lab_result_key": "zyy_his|MZ2026110600008L02",
    "encounter_key": "zyy_his|MZ2026110600008",
    "source_system": "zyy_his",
    "lab_order_id": "JYMZ2026110600008",
    "org_code": "410182002",
    "org_name": "荥阳市中医院",
    "master_id": "Mc4a564b55def608a",
    "encounter_class_code": "100",
    "item_code": "2160-0",
    "item_source_code": "2105",
    "item_name": "肌酐",
    "result_value": "133.2",
    "numeric_value": Decimal("133.2"),
    "unit": "μmol/L",
    "reference_range": "44-133",
    "abnormal_flag": "H",
    "is_abnormal": True,
    "specimen": "血清",
    "reported_at": datetime(2026, 11, 6, 16, 8, 59, tzinfo=CST),
    "reported_date": date(2026, 11, 6),
    "has_encounter": True,
    "is_counted": True,
}

PRESCRIPTION_COLUMNS = (
    "prescription_key encounter_key source_system prescription_id org_code master_id "
    "encounter_class_code drug_code drug_source_code drug_name atc_code drug_category "
    "specification quantity unit unit_price amount frequency_code prescribed_at prescribed_date "
    "has_encounter is_counted"
).split()
PRESCRIPTION = {
    "prescription_key": "cloud_his|261101101000001101",
    "encounter_key": "cloud_his|261101101000001",
    "source_system": "cloud_his",
    "prescription_id": "2611011010000011",
    "org_code": "410182101",
    "org_name": "荥阳市城关乡卫生院",
    "master_id": "M259e97f87dcbed28",
    "encounter_class_code": "100",
    "drug_code": "XC08CAA033A001010100223",
    "drug_source_code": "YP34196551",
    "drug_name": "苯磺酸氨氯地平片",
    "atc_code": "C08CA01",
    "drug_category": "西药",
    "specification": "5mg*28片",
    "quantity": Decimal("2.00"),
    "unit": None,
    "unit_price": Decimal("18.60"),
    "amount": Decimal("37.20"),
    "frequency_code": "bid",
    "prescribed_at": datetime(2026, 11, 1, 11, 54, 38, 238000, tzinfo=CST),
    "prescribed_date": date(2026, 11, 1),
    "has_encounter": True,
    "is_counted": True,
}
PATENT_MEDICINE = PRESCRIPTION | {
    "prescription_key": "cloud_his|261102101000002102",
    "encounter_key": "cloud_his|261102101000002",
    "prescription_id": "2611021010000021",
    "drug_code": "ZA01AAL0130010102050",
    "drug_source_code": "YP22786066",
    "drug_name": "连花清瘟胶囊",
    "atc_code": None,
    "drug_category": "中成药",
    "specification": "0.35g*24粒",
    "quantity": Decimal("3.00"),
    "unit_price": Decimal("28.00"),
    "amount": Decimal("84.00"),
    "frequency_code": "tid",
}

REFERRAL_COLUMNS = (
    "referral_key source_system referral_id master_id from_org_code to_org_code direction "
    "diagnosis_code icd_category diagnosis_name reason requested_at request_date received_at "
    "received_date status is_completed is_rejected is_withdrawn"
).split()
REFERRAL = {
    "referral_key": "referral|ZZ20261106000002",
    "source_system": "referral",
    "referral_id": "ZZ20261106000002",
    "master_id": "M31dc15f3ff6b1a7c",
    "from_org_code": "410182105",
    "to_org_code": "410182002",
    "org_name": "荥阳市中医院",
    "direction": "up",
    "diagnosis_code": "J06.900",
    "icd_category": "J06",
    "diagnosis_name": "急性上呼吸道感染",
    "reason": "病情需要",
    "requested_at": datetime(2026, 11, 6, 17, 9, tzinfo=CST),
    "request_date": date(2026, 11, 6),
    "received_at": datetime(2026, 11, 7, 9, 22, 54, tzinfo=CST),
    "received_date": date(2026, 11, 7),
    "status": "已接收",
    "is_completed": True,
    "is_rejected": False,
    "is_withdrawn": False,
}


# --- ids ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "M00e34b5734f7310b",
        "410182001",
        "cloud_his|261101101000001",
        "referral|ZZ20261106040002",
        "fy_files|" + "9" * 80,
        "中医院|门诊",
        "|",
        "",
    ],
)
def test_resource_ids_are_valid_fhir_ids_and_stable(key):
    made = fhir.resource_id(key)
    assert FHIR_ID.fullmatch(made) and made == fhir.resource_id(key)
    if FHIR_ID.fullmatch(key):
        assert made == key  # master ids and org codes stay as they are


def test_unsafe_keys_keep_a_readable_part_and_never_collide():
    assert fhir.resource_id("cloud_his|261101101000001").startswith("cloud-his-261101101000001-")
    keys = ["cloud_his|2611", "cloud-his|2611", "cloud_his-2611", "cloud_his/2611", "cloud-his-2611"]
    assert len({fhir.resource_id(k) for k in keys}) == len(keys)
    long = ["x|" + "1" * 70 + suffix for suffix in "ab"]
    assert fhir.resource_id(long[0]) != fhir.resource_id(long[1])


# --- Patient --------------------------------------------------------------------------------------------------
def test_patient_places_masked_values_unchanged():
    resource = valid(fhir.patient(DEMOGRAPHICS, LOCAL_IDS), Patient)
    assert resource["id"] == "M00e34b5734f7310b" and resource["gender"] == "female"
    assert resource["birthDate"] == "2007-02-04" and resource["name"] == [{"use": "official", "text": "朱静玲"}]
    master = resource["identifier"][0]
    assert master == {"use": "official", "system": "urn:xydrc:master-id", "value": "M00e34b5734f7310b"}
    assert identifier(resource, "urn:xydrc:pid:zyy_his") == "26110400002"
    assert identifier(resource, "urn:xydrc:pid:cloud_his") == "1132611020004"
    assert {i["use"] for i in resource["identifier"] if i["system"].startswith("urn:xydrc:pid:")} == {"secondary"}
    id_number = next(i for i in resource["identifier"] if i["system"] == fhir.ID_NUMBER_SYSTEM)
    assert id_number["value"] == "410182************" and id_number["type"]["text"] == "居民身份证号（脱敏）"
    assert resource["telecom"] == [{"system": "phone", "value": "135****4673", "use": "mobile"}]
    assert resource["address"][0]["text"] == "河南省荥阳市城关乡****"
    assert resource["meta"]["security"][0]["code"] == "MASKED"
    assert resource["meta"]["lastUpdated"] == "2026-11-01T08:16:00.900000+08:00"


def test_patient_with_fields_removed_for_the_role():
    demo = {
        "master_id": "M011e30eb5a9803d2",
        "name": "孙福飞",
        "sex_code": "1",
        "birth_date": date(1944, 6, 29),
        "id_number": None,
        "phone": None,
        "address": None,
    }
    resource = valid(fhir.patient(demo, []), Patient)
    assert [i["system"] for i in resource["identifier"]] == ["urn:xydrc:master-id"]
    assert "telecom" not in resource and "address" not in resource and "meta" not in resource
    bare = valid(
        fhir.patient({"master_id": "M016016b310575470"}, [{"source_system": "fy_files", "local_patient_id": None}]),
        Patient,
    )
    assert set(bare) == {"resourceType", "id", "identifier"}


@pytest.mark.parametrize(
    ("sex_code", "gender"),
    [("0", "unknown"), ("1", "male"), ("2", "female"), ("9", "unknown"), (1, "male"), (None, None)],
)
def test_patient_gender_from_gb_t_2261_1(sex_code, gender):
    resource = valid(fhir.patient({"master_id": "M1", "sex_code": sex_code}, []), Patient)
    assert resource.get("gender") == gender and (gender is None or gender in GENDERS)


# --- Encounter ------------------------------------------------------------------------------------------------
def test_outpatient_encounter():
    resource = valid(fhir.encounter(OUTPATIENT), Encounter)
    assert resource["id"] == fhir.resource_id("cloud_his|261101101000001")
    assert resource["status"] == "finished"
    assert resource["class"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "AMB",
        "display": "ambulatory",
    }
    assert identifier(resource, "urn:xydrc:key:encounter") == "cloud_his|261101101000001"
    assert identifier(resource, "urn:xydrc:encounter-id:cloud_his") == "261101101000001"
    assert resource["subject"] == {"reference": "Patient/M259e97f87dcbed28"}
    assert resource["serviceProvider"] == {"reference": "Organization/410182101", "display": "荥阳市城关乡卫生院"}
    assert resource["period"] == {"start": "2026-11-01T11:44:51+08:00"}
    assert codes(resource["reasonCode"], fhir.ICD10) == ["I10.x00", "I10"]
    assert resource["participant"][0]["individual"] == {"display": "陈永帅"}
    fees = {e["url"].rsplit(":", 1)[1]: e["valueMoney"] for e in resource["extension"]}
    assert fees == {"total-fee": {"value": 43.2, "currency": "CNY"}, "drug-fee": {"value": 37.2, "currency": "CNY"}}


def test_inpatient_encounter_discharged_and_died():
    resource = valid(fhir.encounter(INPATIENT), Encounter)
    assert resource["class"]["code"] == "IMP" and resource["status"] == "finished"
    assert resource["period"] == {"start": "2026-11-01T10:56:16+08:00", "end": "2026-11-05T12:56:16+08:00"}
    assert resource["length"] == {"value": 4, "unit": "天", "system": "http://unitsofmeasure.org", "code": "d"}
    assert resource["hospitalization"]["dischargeDisposition"]["text"] == "好转"
    died = valid(fhir.encounter(INPATIENT | {"discharge_outcome_code": "4", "is_died": True}), Encounter)
    disposition = died["hospitalization"]["dischargeDisposition"]
    assert codes(disposition, "http://terminology.hl7.org/CodeSystem/discharge-disposition") == ["exp"]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"encounter_class_code": "300", "status": "在院", "discharged_at": None}, "in-progress"),
        ({"encounter_class_code": "300", "status": None, "discharged_at": None, "discharge_date": None}, "in-progress"),
        ({"encounter_class_code": "300", "status": None}, "finished"),
        ({"encounter_class_code": "100", "status": "已完成"}, "finished"),
        ({"encounter_class_code": "200", "status": None}, "finished"),
        ({"status": "作废", "is_cancelled": True, "is_counted": False}, "cancelled"),
        (
            {"is_duplicate_save": True, "duplicate_of_encounter_key": "cloud_his|261101101000000", "is_counted": False},
            "entered-in-error",
        ),
    ],
)
def test_encounter_status(changes, status):
    resource = valid(fhir.encounter(INPATIENT | changes), Encounter)
    assert resource["status"] == status and status in ENCOUNTER_STATUS


@pytest.mark.parametrize(("class_code", "act"), [("100", "AMB"), ("200", "EMER"), ("300", "IMP"), (None, "UNK")])
def test_encounter_with_almost_nothing(class_code, act):
    row = nothing_but(
        ENCOUNTER_COLUMNS,
        encounter_key="fy_files|MZ-0001",
        master_id="M8371afa7763f5799",
        encounter_class_code=class_code,
        is_cancelled=False,
        is_duplicate_save=False,
    )
    resource = valid(fhir.encounter(row), Encounter)
    assert resource["class"]["code"] == act and resource["status"] == "unknown"
    assert "period" not in resource and "extension" not in resource and "serviceProvider" not in resource


# --- Condition ------------------------------------------------------------------------------------------------
def test_condition_with_icd10_national_clinical_edition():
    resource = valid(fhir.condition(DIAGNOSIS), Condition)
    assert codes(resource["code"], fhir.ICD10) == ["S72.000", "S72"] and resource["code"]["text"] == "股骨颈骨折"
    assert codes(resource["category"], "http://terminology.hl7.org/CodeSystem/condition-category") == [
        "encounter-diagnosis"
    ]
    assert resource["category"][0]["text"] == "出院诊断（主要诊断）"
    assert codes(resource["verificationStatus"], "http://terminology.hl7.org/CodeSystem/condition-ver-status") == [
        "confirmed"
    ]
    assert resource["encounter"] == {"reference": f"Encounter/{fhir.resource_id('private_api|232611020000001')}"}
    assert resource["recordedDate"] == "2026-11-02T17:23:01+08:00"
    assert identifier(resource, "urn:xydrc:key:diagnosis") == "private_api|242611020000009"


def test_condition_links_to_the_encounter_resource_of_the_same_key():
    visit = valid(fhir.encounter(OUTPATIENT), Encounter)
    diagnosis = valid(fhir.condition(DIAGNOSIS | {"encounter_key": OUTPATIENT["encounter_key"]}), Condition)
    assert diagnosis["encounter"]["reference"] == f"Encounter/{visit['id']}"


@pytest.mark.parametrize(
    ("changes", "verification"),
    [
        ({"diagnosis_kind": "入院"}, "provisional"),
        ({"diagnosis_kind": "门诊", "diagnosis_name": "急性支气管炎？"}, "provisional"),
        ({"diagnosis_kind": "门诊", "diagnosis_name": "发热待查", "diagnosis_code": None}, "provisional"),
        ({"diagnosis_kind": "门诊"}, "confirmed"),
    ],
)
def test_condition_verification_status(changes, verification):
    resource = valid(fhir.condition(DIAGNOSIS | changes), Condition)
    assert resource["verificationStatus"]["coding"][0]["code"] == verification


def test_tcm_condition_and_a_bare_one():
    tcm = valid(fhir.condition(TCM_DIAGNOSIS), Condition)
    assert codes(tcm["code"], fhir.TCM_DISEASE) == ["BWF010"] and codes(tcm["code"], fhir.TCM_SYNDROME) == ["ZWFRF"]
    assert codes(tcm["code"], fhir.ICD10) == [] and tcm["category"][0]["text"] == "门诊诊断"
    bare = valid(
        fhir.condition(
            nothing_but(DIAGNOSIS_COLUMNS, diagnosis_key="rmyy_his|MZ202611060000301", master_id="M0268c7b738c78bb2")
        ),
        Condition,
    )
    assert set(bare) == {"resourceType", "id", "identifier", "verificationStatus", "category", "subject"}


# --- Observation ----------------------------------------------------------------------------------------------
def test_numeric_lab_result_high():
    resource = valid(fhir.observation(LAB_RESULT), Observation)
    assert resource["status"] == "final" and codes(resource["code"], "http://loinc.org") == ["2160-0"]
    assert codes(resource["category"], "http://terminology.hl7.org/CodeSystem/observation-category") == ["laboratory"]
    assert resource["valueQuantity"] == {
        "value": 133.2,
        "unit": "μmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "umol/L",
    }
    assert codes(resource["interpretation"], fhir.INTERPRETATION) == ["H"]
    assert resource["referenceRange"][0]["low"]["value"] == 44 and resource["referenceRange"][0]["high"]["value"] == 133
    assert resource["issued"] == resource["effectiveDateTime"] == "2026-11-06T16:08:59+08:00"
    assert resource["performer"] == [{"reference": "Organization/410182002", "display": "荥阳市中医院"}]
    assert resource["basedOn"][0]["identifier"]["value"] == "JYMZ2026110600008"
    assert resource["encounter"] == {"reference": f"Encounter/{fhir.resource_id('zyy_his|MZ2026110600008')}"}


@pytest.mark.parametrize(
    ("flag", "abnormal", "expected"),
    [("N", False, "N"), ("L", True, "L"), ("H", True, "H"), (None, True, "A"), (None, False, None)],
)
def test_lab_interpretation(flag, abnormal, expected):
    resource = valid(fhir.observation(LAB_RESULT | {"abnormal_flag": flag, "is_abnormal": abnormal}), Observation)
    assert codes(resource.get("interpretation", []), fhir.INTERPRETATION) == ([expected] if expected else [])


def test_text_lab_result_without_encounter_and_an_empty_one():
    text = valid(
        fhir.observation(
            LAB_RESULT
            | {
                "item_code": None,
                "item_name": "尿蛋白",
                "result_value": "阴性",
                "numeric_value": None,
                "unit": None,
                "reference_range": "阴性",
                "abnormal_flag": "N",
                "is_abnormal": False,
                "specimen": "尿",
                "has_encounter": False,
                "is_counted": False,
            }
        ),
        Observation,
    )
    assert text["valueString"] == "阴性" and "valueQuantity" not in text
    assert text["referenceRange"] == [{"text": "阴性"}] and codes(text["code"], "http://loinc.org") == []
    assert text["encounter"] == {
        "identifier": {"use": "secondary", "system": "urn:xydrc:key:encounter", "value": "zyy_his|MZ2026110600008"}
    }
    empty = valid(
        fhir.observation(nothing_but(LAB_COLUMNS, lab_result_key="fy_files|JY-1|1", master_id="M1")), Observation
    )
    assert empty["dataAbsentReason"]["coding"][0]["code"] == "unknown" and empty["code"] == {"text": "检验项目"}
    assert empty["status"] in OBSERVATION_STATUS and "effectiveDateTime" not in empty


def test_lab_result_reported_on_a_date_only_has_no_issued_instant():
    resource = valid(fhir.observation(LAB_RESULT | {"reported_at": None}), Observation)
    assert resource["effectiveDateTime"] == "2026-11-06" and "issued" not in resource


# --- MedicationRequest ----------------------------------------------------------------------------------------
def test_western_medicine_prescription():
    resource = valid(fhir.medication_request(PRESCRIPTION), MedicationRequest)
    assert resource["status"] == "completed" and resource["intent"] == "order"
    medication = resource["medicationCodeableConcept"]
    assert codes(medication, "http://www.whocc.no/atc") == ["C08CA01"]
    assert medication["text"] == "苯磺酸氨氯地平片（5mg*28片）"
    assert codes(resource["category"], "http://terminology.hl7.org/CodeSystem/medicationrequest-category") == [
        "outpatient"
    ]
    timing = resource["dosageInstruction"][0]["timing"]
    assert timing["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
    assert codes(timing["code"], "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation") == ["BID"]
    assert resource["dispenseRequest"]["quantity"] == {"value": 2.0}
    assert resource["authoredOn"] == "2026-11-01T11:54:38.238000+08:00"
    assert {"url": "urn:xydrc:fhir:extension:amount", "valueMoney": {"value": 37.2, "currency": "CNY"}} in resource[
        "extension"
    ]


def test_patent_medicine_herbs_and_a_bare_prescription():
    patent = valid(fhir.medication_request(PATENT_MEDICINE), MedicationRequest)
    assert codes(patent["medicationCodeableConcept"], "http://www.whocc.no/atc") == []
    assert codes(patent["medicationCodeableConcept"], fhir.NHSA_DRUG) == ["ZA01AAL0130010102050"]
    herbs = valid(
        fhir.medication_request(
            PRESCRIPTION
            | {
                "drug_name": "黄芪",
                "atc_code": None,
                "drug_code": None,
                "drug_category": "中草药",
                "specification": None,
                "quantity": Decimal("30.00"),
                "unit": "g",
                "frequency_code": None,
                "encounter_class_code": "300",
            }
        ),
        MedicationRequest,
    )
    assert "dosageInstruction" not in herbs and herbs["dispenseRequest"]["quantity"]["unit"] == "g"
    assert codes(herbs["category"], "http://terminology.hl7.org/CodeSystem/medicationrequest-category") == ["inpatient"]
    bare = valid(
        fhir.medication_request(nothing_but(PRESCRIPTION_COLUMNS, prescription_key="zyy_his|CF1|1", master_id="M1")),
        MedicationRequest,
    )
    assert bare["status"] in MEDICATION_REQUEST_STATUS and bare["status"] == "unknown"
    assert bare["intent"] in REQUEST_INTENT and bare["medicationCodeableConcept"] == {"text": "药品"}


@pytest.mark.parametrize("frequency", ["qd", "bid", "tid", "QID", "qod", "qw", "q8h", "qn", "prn", "st"])
def test_dosage_frequencies(frequency):
    valid(fhir.medication_request(PRESCRIPTION | {"frequency_code": frequency}), MedicationRequest)


# --- ServiceRequest -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"status": "待接收", "is_completed": False, "received_at": None, "received_date": None}, "active"),
        ({"status": "已接收"}, "active"),
        ({"status": "已完成"}, "completed"),
        ({"status": "已拒收", "is_completed": False, "is_rejected": True}, "revoked"),
        ({"status": "已撤销", "is_completed": False, "is_withdrawn": True}, "revoked"),
        ({"status": None, "is_completed": True}, "active"),
        ({"status": None, "is_completed": False, "received_at": None, "received_date": None}, "unknown"),
    ],
)
def test_referral_status(changes, status):
    resource = valid(fhir.service_request(REFERRAL | changes), ServiceRequest)
    assert resource["status"] == status and status in SERVICE_REQUEST_STATUS and resource["intent"] in REQUEST_INTENT


def test_referral_up():
    resource = valid(fhir.service_request(REFERRAL), ServiceRequest)
    assert resource["requester"] == {"reference": "Organization/410182105"}
    assert resource["performer"] == [{"reference": "Organization/410182002", "display": "荥阳市中医院"}]
    assert resource["category"][0]["text"] == "上转" and codes(resource["code"], fhir.SNOMED) == ["3457005"]
    assert codes(resource["reasonCode"], fhir.ICD10) == ["J06.900", "J06"]
    assert {"text": "病情需要"} in resource["reasonCode"]
    assert resource["authoredOn"] == "2026-11-06T17:09:00+08:00"
    assert identifier(resource, "urn:xydrc:referral-id:referral") == "ZZ20261106000002"


def test_referral_of_an_unmatched_resident_and_a_bare_one():
    down = valid(
        fhir.service_request(REFERRAL | {"master_id": None, "direction": "down", "status": "待接收"}), ServiceRequest
    )
    assert down["subject"] == {"display": "未关联主索引的居民"} and down["category"][0]["text"] == "下转"
    bare = valid(
        fhir.service_request(nothing_but(REFERRAL_COLUMNS, referral_key="referral|ZZ1", master_id="M1")), ServiceRequest
    )
    assert bare["status"] == "unknown" and "performer" not in bare and "note" not in bare


# --- bundles, capability, outcome -----------------------------------------------------------------------------
def _every_resource() -> list[dict[str, Any]]:
    return [
        fhir.patient(DEMOGRAPHICS, LOCAL_IDS),
        fhir.encounter(OUTPATIENT),
        fhir.encounter(INPATIENT),
        fhir.condition(DIAGNOSIS),
        fhir.condition(TCM_DIAGNOSIS),
        fhir.observation(LAB_RESULT),
        fhir.medication_request(PRESCRIPTION),
        fhir.medication_request(PATENT_MEDICINE),
        fhir.service_request(REFERRAL),
    ]


def _bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    valid(bundle, Bundle)
    assert bundle["type"] == "searchset"
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        valid(resource, get_fhir_model_class(resource["resourceType"]))
        assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
        assert entry["search"] == {"mode": "match"}
    return [e["resource"] for e in bundle.get("entry", [])]


def test_searchset_pages():
    found = [fhir.encounter(OUTPATIENT), fhir.encounter(INPATIENT)]
    self_url = f"{BASE}/Encounter?patient=Patient%2FM259e97f87dcbed28&_count=2"
    bundle = fhir.searchset(found, 5, self_url, self_url + "&_offset=2", BASE)
    assert _bundle_resources(bundle) == found and bundle["total"] == 5
    assert bundle["link"] == [
        {"relation": "self", "url": self_url},
        {"relation": "next", "url": self_url + "&_offset=2"},
    ]
    last = fhir.searchset([], 0, self_url, None, BASE, timestamp=datetime(2026, 12, 5, 3, 20, tzinfo=UTC))
    assert _bundle_resources(last) == [] and last["total"] == 0 and [lk["relation"] for lk in last["link"]] == ["self"]
    assert last["timestamp"] == "2026-12-05T03:20:00+00:00"


def test_everything_bundle():
    resources = _every_resource()
    bundle = fhir.everything(resources, BASE)
    assert _bundle_resources(bundle) == resources and bundle["total"] == len(resources)
    assert bundle["link"] == [{"relation": "self", "url": f"{BASE}/Patient/M00e34b5734f7310b/$everything"}]
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    assert _bundle_resources(fhir.everything([], BASE)) == []


def test_capability_statement():
    statement = valid(fhir.capability_statement(BASE, "1.4.0"), CapabilityStatement)
    assert statement["fhirVersion"] == fhir.FHIR_VERSION == "4.0.1" and "json" in statement["format"]
    assert statement["status"] == "active" and statement["kind"] == "instance"
    assert statement["software"] == {"name": "荥阳医共体数据资源中心 FHIR 接口", "version": "1.4.0"}
    assert statement["implementation"]["url"] == BASE
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    kinds = {r["type"]: r for r in rest["resource"]}
    params = {kind: {p["name"] for p in r["searchParam"]} for kind, r in kinds.items()}
    assert params["Patient"] == {"identifier", "name", "birthdate", "gender"}
    assert {"read", "search-type"} == {i["code"] for i in kinds["Patient"]["interaction"]}
    assert kinds["Patient"]["operation"][0]["name"] == "everything"
    assert {"patient", "date"} <= params["Encounter"] and {"patient", "code", "date"} <= params["Observation"]
    for kind in ("Condition", "MedicationRequest", "ServiceRequest"):
        assert "patient" in params[kind]
    assert set(kinds) == {"Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "ServiceRequest"}


def test_operation_outcome():
    outcome = valid(fhir.operation_outcome("forbidden", "无权调阅该居民的记录"), OperationOutcome)
    assert outcome["issue"][0]["severity"] == "error" and outcome["issue"][0]["code"] == "forbidden"
    assert outcome["issue"][0]["details"]["text"] == "无权调阅该居民的记录"
    valid(fhir.operation_outcome("informational", "ok", severity="information"), OperationOutcome)
    with pytest.raises(ValueError, match="severity"):
        fhir.operation_outcome("invalid", "x", severity="bad")


def test_mappings_are_pure():
    rows = [OUTPATIENT, INPATIENT, DIAGNOSIS, LAB_RESULT, PRESCRIPTION, REFERRAL]
    before = [dict(r) for r in rows]
    assert _every_resource() == _every_resource()
    assert fhir.capability_statement(BASE, "1") == fhir.capability_statement(BASE, "1")
    assert [dict(r) for r in rows] == before
