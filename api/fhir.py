"""Warehouse rows as HL7 FHIR R4 resources (JSON-ready dicts): pure functions, no I/O.

Other platforms (municipal/provincial, HIS of member hospitals) read the same record through FHIR; the routes in
api/routers/fhir.py apply access, masking and audit first and hand already-masked rows here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

FHIR_VERSION = "4.0.1"
MASTER_ID_SYSTEM = "urn:xydrc:master-id"
LOCAL_ID_SYSTEM_PREFIX = "urn:xydrc:pid:"
ID_NUMBER_SYSTEM = "urn:xydrc:id-number"        # 居民身份证号 (GB 11643), always masked per role when shown
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"      # 国家临床版 ICD-10 codes are ICD-10 based
ATC = "http://www.whocc.no/atc"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SAFE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

GENDER = {"1": "male", "2": "female", "0": "unknown", "9": "unknown"}
# 就诊类型 (WS 364 / canonical model): 100 门诊, 200 急诊, 300 住院
ENCOUNTER_CLASS = {"100": ("AMB", "ambulatory", "门诊"), "200": ("EMER", "emergency", "急诊"),
                   "300": ("IMP", "inpatient encounter", "住院")}
ENCOUNTER_STATUS = {"在院": "in-progress", "出院": "finished", "已完成": "finished"}
REFERRAL_STATUS = {"待接收": "active", "已接收": "active", "已完成": "completed", "已拒绝": "revoked",
                   "已撤回": "revoked"}
INTERPRETATION_DISPLAY = {"H": "High", "L": "Low", "N": "Normal", "A": "Abnormal", "HH": "Critical high",
                          "LL": "Critical low"}


def resource_id(key: Any) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) for a warehouse key: the key itself when it fits, else a stable hash."""
    text = str(key)
    return text if SAFE_ID.match(text) else hashlib.sha256(text.encode()).hexdigest()[:32]


def _instant(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, Decimal | int | float) else None


def _org(code: str | None, name: str | None = None) -> dict[str, str] | None:
    if not code:
        return None
    return {"reference": f"Organization/{resource_id(code)}", **({"display": name} if name else {})}


def _patient_ref(row: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"Patient/{row['master_id']}"}


def _coding(system: str, code: str | None, display: str | None = None) -> dict[str, Any] | None:
    if not code:
        return None
    return {"system": system, "code": str(code), **({"display": display} if display else {})}


def _concept(text: str | None, *codings: dict[str, Any] | None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    present = [c for c in codings if c]
    if present:
        concept["coding"] = present
    if text:
        concept["text"] = text
    return concept or {"text": "未知"}


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """FHIR forbids empty and null elements: drop them."""
    return {k: v for k, v in resource.items() if v not in (None, "", [], {})}


def _key_identifier(system: str, key: Any) -> list[dict[str, str]]:
    return [{"system": f"urn:xydrc:{system}", "value": str(key)}] if key is not None else []


def patient(demo: dict[str, Any], local_ids: list[dict[str, Any]]) -> dict[str, Any]:
    identifiers = [{"use": "official", "system": MASTER_ID_SYSTEM, "value": demo["master_id"]}]
    identifiers += [{"use": "secondary", "system": f"{LOCAL_ID_SYSTEM_PREFIX}{i['source_system']}",
                     "value": str(i["local_patient_id"])} for i in local_ids if i.get("local_patient_id")]
    if demo.get("id_number"):
        identifiers.append({"use": "usual", "system": ID_NUMBER_SYSTEM, "value": demo["id_number"],
                            "type": {"text": "居民身份证号（按角色脱敏）"}})
    return _clean({
        "resourceType": "Patient", "id": resource_id(demo["master_id"]), "identifier": identifiers,
        "name": [{"text": demo["name"]}] if demo.get("name") else None,
        "gender": GENDER.get(str(demo.get("sex_code")), "unknown") if demo.get("sex_code") is not None else None,
        "birthDate": _instant(demo.get("birth_date")),
        "telecom": [{"system": "phone", "value": demo["phone"]}] if demo.get("phone") else None,
        "address": [{"text": demo["address"]}] if demo.get("address") else None,
    })


def encounter(row: dict[str, Any]) -> dict[str, Any]:
    code, display, zh = ENCOUNTER_CLASS.get(str(row.get("encounter_class_code")), ("AMB", "ambulatory", "门诊"))
    status = ("cancelled" if row.get("is_cancelled") else
              ENCOUNTER_STATUS.get(row.get("status") or "", "finished" if row.get("visit_at") else "unknown"))
    start = row.get("admitted_at") or row.get("visit_at")
    diagnosis = _coding(ICD10, row.get("primary_diagnosis_code"), row.get("primary_diagnosis_name"))
    return _clean({
        "resourceType": "Encounter", "id": resource_id(row["encounter_key"]),
        "identifier": _key_identifier("encounter", row["encounter_key"]),
        "status": status, "class": {"system": ACT_CODE, "code": code, "display": display},
        "type": [{"text": zh}], "subject": _patient_ref(row),
        "participant": [{"individual": {"display": row["doctor_name"]}}] if row.get("doctor_name") else None,
        "period": _clean({"start": _instant(start), "end": _instant(row.get("discharged_at"))}),
        "reasonCode": [_concept(row.get("primary_diagnosis_name"), diagnosis)] if diagnosis else None,
        "serviceProvider": _org(row.get("org_code"), row.get("org_name")),
    })


def condition(row: dict[str, Any]) -> dict[str, Any]:
    return _clean({
        "resourceType": "Condition", "id": resource_id(row["diagnosis_key"]),
        "identifier": _key_identifier("diagnosis", row["diagnosis_key"]),
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis"}], "text": row.get("diagnosis_kind")}],
        "code": _concept(row.get("diagnosis_name"), _coding(ICD10, row.get("diagnosis_code"),
                                                            row.get("diagnosis_name"))),
        "subject": _patient_ref(row),
        "encounter": ({"reference": f"Encounter/{resource_id(row['encounter_key'])}"}
                      if row.get("encounter_key") else None),
        "recordedDate": _instant(row.get("diagnosed_at") or row.get("diagnosed_date")),
    })


def observation(row: dict[str, Any]) -> dict[str, Any]:
    flag = row.get("abnormal_flag")
    value = _number(row.get("numeric_value"))
    return _clean({
        "resourceType": "Observation", "id": resource_id(row["lab_result_key"]),
        "identifier": _key_identifier("lab-result", row["lab_result_key"]), "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": _concept(row.get("item_name"), _coding(LOINC, row.get("item_code"), row.get("item_name"))),
        "subject": _patient_ref(row),
        "encounter": ({"reference": f"Encounter/{resource_id(row['encounter_key'])}"}
                      if row.get("encounter_key") and row.get("has_encounter") else None),
        "effectiveDateTime": _instant(row.get("reported_at") or row.get("reported_date")),
        "issued": _instant(row.get("reported_at")) if isinstance(row.get("reported_at"), datetime) else None,
        "valueQuantity": _clean({"value": value, "unit": row.get("unit")}) if value is not None else None,
        "valueString": row.get("result_value") if value is None and row.get("result_value") else None,
        "interpretation": ([{"coding": [{"system": INTERPRETATION, "code": flag,
                                         "display": INTERPRETATION_DISPLAY.get(flag, flag)}]}]
                           if flag in INTERPRETATION_DISPLAY else None),
        "referenceRange": [{"text": row["reference_range"]}] if row.get("reference_range") else None,
        "specimen": {"display": row["specimen"]} if row.get("specimen") else None,
        "performer": [_org(row.get("org_code"), row.get("org_name"))] if row.get("org_code") else None,
    })


def medication_request(row: dict[str, Any]) -> dict[str, Any]:
    quantity = _number(row.get("quantity"))
    return _clean({
        "resourceType": "MedicationRequest", "id": resource_id(row["prescription_key"]),
        "identifier": _key_identifier("prescription", row["prescription_key"]),
        "status": "completed", "intent": "order",
        "medicationCodeableConcept": _concept(row.get("drug_name"), _coding(ATC, row.get("atc_code")),
                                              _coding("urn:xydrc:drug", row.get("drug_code"), row.get("drug_name"))),
        "subject": _patient_ref(row),
        "encounter": ({"reference": f"Encounter/{resource_id(row['encounter_key'])}"}
                      if row.get("encounter_key") and row.get("has_encounter") else None),
        "authoredOn": _instant(row.get("prescribed_at") or row.get("prescribed_date")),
        "requester": _org(row.get("org_code"), row.get("org_name")),
        "dosageInstruction": ([{"text": " ".join(p for p in (row.get("specification"), row.get("frequency_code"))
                                                 if p)}]
                              if row.get("specification") or row.get("frequency_code") else None),
        "dispenseRequest": ({"quantity": _clean({"value": quantity, "unit": row.get("unit")})}
                            if quantity is not None else None),
    })


def service_request(row: dict[str, Any]) -> dict[str, Any]:
    status = ("revoked" if row.get("is_withdrawn") or row.get("is_rejected") else "completed"
              if row.get("is_completed") else REFERRAL_STATUS.get(row.get("status") or "", "unknown"))
    direction = {"up": "上转", "down": "下转"}.get(row.get("direction") or "", row.get("direction"))
    return _clean({
        "resourceType": "ServiceRequest", "id": resource_id(row["referral_key"]),
        "identifier": _key_identifier("referral", row["referral_key"]),
        "status": status, "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}], "text": f"双向转诊（{direction}）"}],
        "code": {"text": "转诊"}, "subject": _patient_ref(row),
        "authoredOn": _instant(row.get("requested_at") or row.get("request_date")),
        "requester": _org(row.get("from_org_code")),
        "performer": [_org(row.get("to_org_code"), row.get("org_name"))] if row.get("to_org_code") else None,
        "reasonCode": ([_concept(row.get("diagnosis_name"), _coding(ICD10, row.get("diagnosis_code"),
                                                                    row.get("diagnosis_name")))]
                       if row.get("diagnosis_code") or row.get("diagnosis_name") else None),
        "note": [{"text": row["reason"]}] if row.get("reason") else None,
    })


def _entry(resource: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {"fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}", "resource": resource,
            "search": {"mode": "match"}}


def searchset(resources: list[dict[str, Any]], total: int, self_url: str, next_url: str | None,
              base_url: str) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return _clean({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
                   "timestamp": datetime.now(UTC).isoformat(),
                   "entry": [_entry(r, base_url) for r in resources]})


def everything(resources: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    return searchset(resources, len(resources), f"{base_url}/Patient/{resources[0]['id']}/$everything"
                     if resources else base_url, None, base_url)


def capability_statement(base_url: str, version: str) -> dict[str, Any]:
    def resource(kind: str, params: list[tuple[str, str]], read: bool = False) -> dict[str, Any]:
        return {"type": kind, "interaction": [{"code": "search-type"}, *([{"code": "read"}] if read else [])],
                "searchParam": [{"name": n, "type": t} for n, t in [*params, ("_count", "number")]]}

    patient_resource = resource("Patient", [("identifier", "token"), ("name", "string"), ("birthdate", "date"),
                                            ("gender", "token")], read=True)
    patient_resource["operation"] = [{"name": "everything",
                                      "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "date": datetime.now(UTC).date().isoformat(), "fhirVersion": FHIR_VERSION, "format": ["json"],
        "software": {"name": "荥阳医共体数据资源中心 FHIR 接口", "version": version},
        "implementation": {"description": "荥阳医共体数据资源中心临床调阅接口 (FHIR R4)", "url": base_url},
        "rest": [{"mode": "server",
                  "security": {"description": "Bearer token (./drc api-token); access per role, audited"},
                  "resource": [patient_resource,
                               resource("Encounter", [("patient", "reference"), ("date", "date")]),
                               resource("Condition", [("patient", "reference"), ("code", "token")]),
                               resource("Observation", [("patient", "reference"), ("code", "token"),
                                                        ("date", "date")]),
                               resource("MedicationRequest", [("patient", "reference")]),
                               resource("ServiceRequest", [("patient", "reference")])]}],
    }


def operation_outcome(code: str, text: str, severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": text}]}
