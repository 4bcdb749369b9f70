"""Warehouse rows as HL7 FHIR R4 (4.0.1) resources: pure functions from plain dicts to JSON-ready dicts.

Other platforms (the municipal and provincial platforms, member hospitals' HIS) read the same record as the rest of
the API through FHIR. The routes in api/routers/fhir.py apply access rules, masking and audit first and hand the
rows here; this module only places values, never masks, queries or reads the clock, so each mapping is testable on
its own (tests/test_fhir_mapping.py validates the output with the fhir.resources models).

Code systems: LOINC, ATC and FHIR's own value sets as such. Diagnosis codes are ICD-10 国家临床版 2.0, the national
clinical edition: an extension of WHO ICD-10 (``I10.x00`` under ``I10``), so they are sent under the ICD-10 system
together with their three-character WHO category. Codes that have no public FHIR system (department, GB/T 15657
TCM diagnoses, the national medical-insurance drug code, local item codes) get ``urn:xydrc:…`` systems.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

FHIR_VERSION = "4.0.1"
CAPABILITY_DATE = "2026-12-05"  # when the CapabilityStatement below last changed (FHIR: publication date)
SOFTWARE_NAME = "荥阳医共体数据资源中心 FHIR 接口"
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")  # naive datetimes (none expected) are county time

# Identifier systems
MASTER_ID_SYSTEM = "urn:xydrc:master-id"
LOCAL_ID_SYSTEM_PREFIX = "urn:xydrc:pid:"
# 居民身份证号 namespace OID of the national health information standards (WS/T 500 CDA headers: 患者身份证号标识)
ID_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.3"
KEY_SYSTEM_PREFIX = "urn:xydrc:key:"  # + encounter / diagnosis / lab-result / prescription / referral
EXTENSION_PREFIX = "urn:xydrc:fhir:extension:"  # + total-fee / drug-fee / amount / unit-price

# Code systems
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # ICD-10 国家临床版 2.0 codes are ICD-10 based (see module doc)
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
ACT_CODE = TERMINOLOGY + "v3-ActCode"
INTERPRETATION = TERMINOLOGY + "v3-ObservationInterpretation"
TCM_DISEASE = "urn:xydrc:gbt15657:disease"  # 中医病名 GB/T 15657
TCM_SYNDROME = "urn:xydrc:gbt15657:syndrome"  # 中医证候 GB/T 15657
NHSA_DRUG = "urn:xydrc:nhsa-drug"  # 国家医保药品分类与代码

SAFE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]+")
ID_HASH_CHARS = 12

# GB/T 2261.1 sex code -> administrative-gender (9 未说明的性别 is not "other": it is unknown)
GENDER = {"0": "unknown", "1": "male", "2": "female", "9": "unknown"}
# 就诊类型 100 门诊 / 200 急诊 / 300 住院 -> v3-ActCode (the R4 Encounter.class value set)
ENCOUNTER_CLASS = {
    "100": ("AMB", "ambulatory", "门诊"),
    "200": ("EMER", "emergency", "急诊"),
    "300": ("IMP", "inpatient encounter", "住院"),
}
# source status words (fct_encounter.status) -> Encounter.status, first match wins
ENCOUNTER_STATUS_WORDS = (
    ("作废", "cancelled"),
    ("取消", "cancelled"),
    ("退号", "cancelled"),
    ("在院", "in-progress"),
    ("出院", "finished"),
    ("完成", "finished"),
)
# 出院情况 1 治愈 2 好转 3 未愈 4 死亡 9 其他
DISCHARGE_OUTCOME = {"1": "治愈", "2": "好转", "3": "未愈", "4": "死亡", "9": "其他"}
INTERPRETATION_CODES = {
    "H": ("High", "偏高"),
    "L": ("Low", "偏低"),
    "N": ("Normal", "正常"),
    "A": ("Abnormal", "异常"),
    "HH": ("Critical high", "危急偏高"),
    "LL": ("Critical low", "危急偏低"),
}
UCUM_UNITS = {
    "U/L": "U/L",
    "IU/L": "[IU]/L",
    "umol/L": "umol/L",
    "μmol/L": "umol/L",
    "µmol/L": "umol/L",
    "mmol/L": "mmol/L",
    "g/L": "g/L",
    "mg/L": "mg/L",
    "mg/dL": "mg/dL",
    "ng/mL": "ng/mL",
    "pg": "pg",
    "fL": "fL",
    "%": "%",
    "10^9/L": "10*9/L",
    "×10^9/L": "10*9/L",
    "x10^9/L": "10*9/L",
    "10^12/L": "10*12/L",
    "×10^12/L": "10*12/L",
    "x10^12/L": "10*12/L",
    "mmHg": "mm[Hg]",
    "s": "s",
}
RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[-~～–—]\s*(\d+(?:\.\d+)?)\s*$")
# 用药频次 -> (v3-GTSAbbreviation code or None, frequency, period, periodUnit, 中文)
FREQUENCY = {
    "qd": ("QD", 1, 1, "d", "每日1次"),
    "bid": ("BID", 2, 1, "d", "每日2次"),
    "tid": ("TID", 3, 1, "d", "每日3次"),
    "qid": ("QID", 4, 1, "d", "每日4次"),
    "qod": ("QOD", 1, 2, "d", "隔日1次"),
    "qw": ("WK", 1, 1, "wk", "每周1次"),
    "q8h": (None, 1, 8, "h", "每8小时1次"),
    "q12h": (None, 1, 12, "h", "每12小时1次"),
    "qn": (None, 1, 1, "d", "每晚1次"),
}
DIRECTION = {"up": "上转", "down": "下转"}
OUTCOME_SEVERITIES = {"fatal", "error", "warning", "information"}

Row = Mapping[str, Any]
Json = dict[str, Any]


# --- building blocks ------------------------------------------------------------------------------------------
def resource_id(key: Any) -> str:
    """A valid FHIR id ([A-Za-z0-9-.]{1,64}) for a warehouse key, the same every time.

    A key that already fits is kept; any other (``cloud_his|2611…``) becomes its readable part with the unsafe
    characters replaced, plus a short hash of the whole key so that two keys never share an id."""
    text = str(key)
    if SAFE_ID.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:ID_HASH_CHARS]
    readable = UNSAFE_ID_CHARS.sub("-", text).strip("-.")[: 64 - ID_HASH_CHARS - 1].rstrip("-.")
    return f"{readable}-{digest}" if readable else digest


def _prune(value: Any) -> Any:
    """FHIR JSON has no null, empty string, empty array or empty object: drop them, at every depth."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if not _empty(v)}
    if isinstance(value, list):
        return [v for v in (_prune(v) for v in value) if not _empty(v)]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _datetime(value: Any) -> str | None:
    """ISO 8601 dateTime (with timezone) or date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=CHINA_TZ)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _instant(value: Any) -> str | None:
    """An instant needs a time and a zone: only a datetime qualifies."""
    return _datetime(value) if isinstance(value, datetime) else None


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    """The value as a stripped string, None when absent or blank."""
    if value is None:
        return None
    return str(value).strip() or None


def _coding(system: str | None, code: Any, display: str | None = None) -> Json | None:
    code = _text(code)
    return {"system": system, "code": code, "display": display} if code and system else None


def _local_system(kind: str, row: Row) -> str | None:
    """The code system of one member system's own codes (urn:xydrc:<kind>:<source_system>)."""
    source = _text(row.get("source_system"))
    return f"urn:xydrc:{kind}:{source}" if source else None


def _concept(text: str | None, *codings: Json | None) -> Json:
    return {"coding": [c for c in codings if c], "text": text}


def _money(value: Any) -> Json | None:
    number = _number(value)
    return {"value": number, "currency": "CNY"} if number is not None else None


def _money_extension(name: str, value: Any) -> Json | None:
    money = _money(value)
    return {"url": EXTENSION_PREFIX + name, "valueMoney": money} if money else None


def _quantity(value: Any, unit: str | None) -> Json | None:
    number = _number(value)
    if number is None:
        return None
    ucum = UCUM_UNITS.get(unit or "")
    return {"value": number, "unit": unit, "system": UCUM if ucum else None, "code": ucum}


def _key_identifier(kind: str, key: Any) -> Json | None:
    return {"use": "secondary", "system": KEY_SYSTEM_PREFIX + kind, "value": str(key)} if key is not None else None


def _source_identifier(kind: str, row: Row, column: str) -> Json | None:
    value, system = _text(row.get(column)), _local_system(kind, row)
    return {"use": "official", "system": system, "value": value} if value and system else None


def _org(code: Any, name: Any = None) -> Json | None:
    code = _text(code)
    return {"reference": f"Organization/{resource_id(code)}", "display": _text(name)} if code else None


def _patient_ref(row: Row) -> Json:
    master_id = _text(row.get("master_id"))
    return {"reference": f"Patient/{resource_id(master_id)}"} if master_id else {"display": "未关联主索引的居民"}


def _encounter_ref(row: Row) -> Json | None:
    """A literal reference when the encounter is in the warehouse (and so served here), else a logical one."""
    key = row.get("encounter_key")
    if key is None:
        return None
    if row.get("has_encounter", True):
        return {"reference": f"Encounter/{resource_id(key)}"}
    return {"identifier": _key_identifier("encounter", key)}


def _icd10(code: Any, name: str | None, category: Any = None) -> list[Json | None]:
    """The national clinical edition code and, when it is longer, its WHO ICD-10 category."""
    code, category = _text(code), _text(category)
    if not category and code:
        category = code[:3]
    return [_coding(ICD10, code, name), _coding(ICD10, category) if category and category != code else None]


# --- resources ------------------------------------------------------------------------------------------------
def patient(demo: Row, local_ids: list[Row]) -> Json:
    """Patient from marts.dim_patient (id_number, phone and address already masked per role) and PIX ids."""
    master_id = str(demo["master_id"])
    identifiers: list[Json | None] = [{"use": "official", "system": MASTER_ID_SYSTEM, "value": master_id}]
    identifiers += [
        {
            "use": "secondary",
            "system": LOCAL_ID_SYSTEM_PREFIX + str(i["source_system"]),
            "value": _text(i.get("local_patient_id")),
        }
        for i in local_ids
        if _text(i.get("local_patient_id"))
    ]
    id_number, phone, address = (_text(demo.get(k)) for k in ("id_number", "phone", "address"))
    if id_number:
        identifiers.append(
            {
                "use": "official",
                "system": ID_NUMBER_SYSTEM,
                "value": id_number,
                "type": {
                    "coding": [
                        {
                            "system": TERMINOLOGY + "v2-0203",
                            "code": "NI",
                            "display": "National unique individual identifier",
                        }
                    ],
                    "text": "居民身份证号（脱敏）" if "*" in id_number else "居民身份证号",
                },
            }
        )
    masked = any(v and "*" in v for v in (id_number, phone, address))
    sex = _text(demo.get("sex_code"))
    return _prune(
        {
            "resourceType": "Patient",
            "id": resource_id(master_id),
            "meta": {
                "lastUpdated": _instant(demo.get("last_updated_at")),
                "security": [{"system": TERMINOLOGY + "v3-ObservationValue", "code": "MASKED", "display": "masked"}]
                if masked
                else None,
            },
            "identifier": identifiers,
            "name": [{"use": "official", "text": _text(demo.get("name"))}] if _text(demo.get("name")) else None,
            "telecom": [
                {
                    "system": "phone",
                    "value": phone,
                    "use": "mobile" if len(phone) == 11 and phone.startswith("1") else None,
                }
            ]
            if phone
            else None,
            "gender": GENDER.get(sex, "unknown") if sex else None,
            "birthDate": _datetime(demo.get("birth_date")),
            "address": [{"use": "home", "text": address, "country": "CN"}] if address else None,
        }
    )


def _encounter_status(row: Row) -> str:
    if row.get("is_duplicate_save"):
        return "entered-in-error"  # the second save of one registration: not a visit of its own
    if row.get("is_cancelled"):
        return "cancelled"
    status = _text(row.get("status")) or ""
    for word, code in ENCOUNTER_STATUS_WORDS:
        if word in status:
            return code
    if str(row.get("encounter_class_code")) == "300":
        return (
            "finished"
            if row.get("discharged_at") or row.get("discharge_date")
            else "in-progress"
            if row.get("admitted_at") or row.get("admission_date")
            else "unknown"
        )
    return "finished" if row.get("visit_at") or row.get("visit_date") else "unknown"


def encounter(row: Row) -> Json:
    """Encounter from marts.fct_encounter (门诊 / 急诊 / 住院)."""
    class_code = _text(row.get("encounter_class_code"))
    act, act_display, zh = ENCOUNTER_CLASS.get(class_code or "", (None, None, None))
    outcome = _text(row.get("discharge_outcome_code"))
    died = bool(row.get("is_died")) or outcome == "4"
    disposition = _concept(
        DISCHARGE_OUTCOME.get(outcome or ""),
        _coding("urn:xydrc:discharge-outcome", outcome, DISCHARGE_OUTCOME.get(outcome or "")),
        _coding(TERMINOLOGY + "discharge-disposition", "exp", "Expired") if died else None,
    )
    diagnosis = _text(row.get("primary_diagnosis_name"))
    doctor = _text(row.get("doctor_name"))
    attender = {"coding": [{"system": TERMINOLOGY + "v3-ParticipationType", "code": "ATND", "display": "attender"}]}
    return _prune(
        {
            "resourceType": "Encounter",
            "id": resource_id(row["encounter_key"]),
            "extension": [
                _money_extension("total-fee", row.get("total_fee")),
                _money_extension("drug-fee", row.get("drug_fee")),
            ],
            "identifier": [
                _source_identifier("encounter-id", row, "encounter_id"),
                _key_identifier("encounter", row["encounter_key"]),
            ],
            "status": _encounter_status(row),
            "class": (
                {"system": ACT_CODE, "code": act, "display": act_display}
                if act
                else {"system": TERMINOLOGY + "v3-NullFlavor", "code": "UNK", "display": "unknown"}
            ),
            "type": [_concept(zh, _coding("urn:xydrc:encounter-class", class_code, zh))],
            "serviceType": _concept(
                _text(row.get("department_name")),
                _coding("urn:xydrc:department", row.get("department_code"), _text(row.get("department_name"))),
            ),
            "subject": _patient_ref(row),
            "participant": [{"type": [attender], "individual": {"display": doctor}}] if doctor else None,
            "period": {
                "start": _datetime(
                    row.get("admitted_at") or row.get("visit_at") or row.get("admission_date") or row.get("visit_date")
                ),
                "end": _datetime(row.get("discharged_at") or row.get("discharge_date")),
            },
            "length": (
                {"value": _number(row["bed_days"]), "unit": "天", "system": UCUM, "code": "d"}
                if _number(row.get("bed_days")) is not None
                else None
            ),
            "reasonCode": [_concept(diagnosis, *_icd10(row.get("primary_diagnosis_code"), diagnosis))],
            "hospitalization": {"dischargeDisposition": disposition} if outcome or died else None,
            "serviceProvider": _org(row.get("org_code"), row.get("org_name")),
        }
    )


def condition(row: Row) -> Json:
    """Condition (encounter diagnosis) from marts.fct_diagnosis: ICD-10 and/or GB/T 15657 TCM codes."""
    name = _text(row.get("diagnosis_name"))
    kind = _text(row.get("diagnosis_kind"))
    # 入院诊断 is the working diagnosis on admission; a name ending in ？ is a suspected one
    provisional = kind == "入院" or (name or "").endswith(("?", "？")) or "待查" in (name or "")
    category_text = f"{kind}诊断" if kind else None
    if category_text and row.get("is_primary"):
        category_text += "（主要诊断）"
    return _prune(
        {
            "resourceType": "Condition",
            "id": resource_id(row["diagnosis_key"]),
            "identifier": [_key_identifier("diagnosis", row["diagnosis_key"])],
            "verificationStatus": {
                "coding": [
                    {
                        "system": TERMINOLOGY + "condition-ver-status",
                        "code": "provisional" if provisional else "confirmed",
                        "display": "Provisional" if provisional else "Confirmed",
                    }
                ]
            },
            "category": [
                _concept(
                    category_text,
                    {
                        "system": TERMINOLOGY + "condition-category",
                        "code": "encounter-diagnosis",
                        "display": "Encounter Diagnosis",
                    },
                )
            ],
            "code": _concept(
                name,
                *_icd10(row.get("diagnosis_code"), name, row.get("icd_category")),
                _coding(TCM_DISEASE, row.get("tcm_disease_code")),
                _coding(TCM_SYNDROME, row.get("tcm_syndrome_code")),
            ),
            "subject": _patient_ref(row),
            "encounter": _encounter_ref(row),
            "recordedDate": _datetime(row.get("diagnosed_at") or row.get("diagnosed_date")),
        }
    )


def _reference_range(text: str | None, unit: str | None) -> Json | None:
    if not text:
        return None
    match = RANGE.match(text)
    low, high = (_quantity(Decimal(g), unit) for g in match.groups()) if match else (None, None)
    return {"low": low, "high": high, "text": text}


def observation(row: Row) -> Json:
    """Observation (laboratory result) from marts.fct_lab_result; the report time stands for the effective time."""
    name, unit = _text(row.get("item_name")), _text(row.get("unit"))
    value = _quantity(row.get("numeric_value"), unit)
    result = _text(row.get("result_value"))
    flag = _text(row.get("abnormal_flag"))
    flag = flag.upper() if flag else ("A" if row.get("is_abnormal") else None)
    english, chinese = INTERPRETATION_CODES.get(flag or "", (None, None))
    reported = row.get("reported_at") or row.get("reported_date")
    order = _source_identifier("lab-order-id", row, "lab_order_id")
    return _prune(
        {
            "resourceType": "Observation",
            "id": resource_id(row["lab_result_key"]),
            "identifier": [_key_identifier("lab-result", row["lab_result_key"])],
            "basedOn": [{"identifier": order, "display": "检验申请"}] if order else None,
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": TERMINOLOGY + "observation-category", "code": "laboratory", "display": "Laboratory"}
                    ]
                }
            ],
            "code": _concept(
                name or "检验项目",
                _coding(LOINC, row.get("item_code")),
                _coding(_local_system("lab-item", row), row.get("item_source_code"), name),
            ),
            "subject": _patient_ref(row),
            "encounter": _encounter_ref(row),
            "effectiveDateTime": _datetime(reported),
            "issued": _instant(row.get("reported_at")),
            "performer": [_org(row.get("org_code"), row.get("org_name"))],
            "valueQuantity": value,
            "valueString": result if value is None else None,
            "dataAbsentReason": (
                {"coding": [{"system": TERMINOLOGY + "data-absent-reason", "code": "unknown", "display": "Unknown"}]}
                if value is None and not result
                else None
            ),
            "interpretation": [_concept(chinese, _coding(INTERPRETATION, flag, english))] if english else None,
            "specimen": {"display": _text(row.get("specimen"))},
            "referenceRange": [_reference_range(_text(row.get("reference_range")), unit)],
        }
    )


def _dosage(frequency: str | None) -> Json | None:
    if not frequency:
        return None
    if frequency.lower() == "prn":
        return {"text": "必要时", "asNeededBoolean": True}
    known = FREQUENCY.get(frequency.lower())
    if not known:
        return {"text": frequency, "timing": {"code": {"text": frequency}}}
    code, times, period, unit, zh = known
    return {
        "text": zh,
        "timing": {
            "repeat": {"frequency": times, "period": period, "periodUnit": unit},
            "code": _concept(frequency, _coding(TERMINOLOGY + "v3-GTSAbbreviation", code)),
        },
    }


def medication_request(row: Row) -> Json:
    """MedicationRequest from marts.fct_prescription (one drug line of a prescription)."""
    name, category = _text(row.get("drug_name")), _text(row.get("drug_category"))
    specification = _text(row.get("specification"))
    class_code = str(row.get("encounter_class_code"))
    setting = {"100": "outpatient", "200": "outpatient", "300": "inpatient"}.get(class_code)
    # issued prescriptions of counted visits; the warehouse holds no dispensing or stop events
    status = "completed" if row.get("is_counted") else "unknown"
    medication = f"{name}（{specification}）" if name and specification else name or "药品"
    return _prune(
        {
            "resourceType": "MedicationRequest",
            "id": resource_id(row["prescription_key"]),
            "extension": [
                _money_extension("amount", row.get("amount")),
                _money_extension("unit-price", row.get("unit_price")),
            ],
            "identifier": [
                _source_identifier("prescription-id", row, "prescription_id"),
                _key_identifier("prescription", row["prescription_key"]),
            ],
            "status": status,
            "intent": "order",
            "category": [
                _concept(
                    None,
                    _coding(
                        TERMINOLOGY + "medicationrequest-category", setting, setting.capitalize() if setting else None
                    ),
                ),
                _concept(category, _coding("urn:xydrc:drug-category", category, category)),
            ],
            "medicationCodeableConcept": _concept(
                medication,
                _coding(ATC, row.get("atc_code")),
                _coding(NHSA_DRUG, row.get("drug_code"), name),
                _coding(_local_system("drug", row), row.get("drug_source_code"), name),
            ),
            "subject": _patient_ref(row),
            "encounter": _encounter_ref(row),
            "authoredOn": _datetime(row.get("prescribed_at") or row.get("prescribed_date")),
            "requester": _org(row.get("org_code"), row.get("org_name")),
            "dosageInstruction": [_dosage(_text(row.get("frequency_code")))],
            "dispenseRequest": {"quantity": _quantity(row.get("quantity"), _text(row.get("unit")))},
        }
    )


def _referral_status(row: Row) -> str:
    status = _text(row.get("status")) or ""
    if row.get("is_withdrawn") or row.get("is_rejected") or re.search("撤|拒|取消|作废", status):
        return "revoked"
    if "完成" in status:
        return "completed"
    if "待" in status or "接" in status or row.get("received_at"):
        return "active"  # waiting for, or taken in by, the receiving institution
    return "unknown"


def service_request(row: Row) -> Json:
    """ServiceRequest (referral order) from marts.fct_referral; org_name, if present, names the receiving side."""
    direction = _text(row.get("direction"))
    direction_zh = DIRECTION.get(direction or "", direction)
    status = _text(row.get("status"))
    received = _datetime(row.get("received_at") or row.get("received_date"))
    diagnosis = _text(row.get("diagnosis_name"))
    note = f"转诊状态：{status}" + (f"（接收时间 {received}）" if received else "") if status else None
    return _prune(
        {
            "resourceType": "ServiceRequest",
            "id": resource_id(row["referral_key"]),
            "identifier": [
                _source_identifier("referral-id", row, "referral_id"),
                _key_identifier("referral", row["referral_key"]),
            ],
            "status": _referral_status(row),
            "intent": "order",
            "category": [_concept(direction_zh, _coding("urn:xydrc:referral-direction", direction, direction_zh))],
            "code": _concept("双向转诊", _coding(SNOMED, "3457005", "Patient referral")),
            "subject": _patient_ref(row),
            "authoredOn": _datetime(row.get("requested_at") or row.get("request_date")),
            "requester": _org(row.get("from_org_code"), row.get("from_org_name")),
            "performer": [_org(row.get("to_org_code"), row.get("to_org_name") or row.get("org_name"))],
            "reasonCode": [
                _concept(diagnosis, *_icd10(row.get("diagnosis_code"), diagnosis, row.get("icd_category"))),
                _concept(_text(row.get("reason"))),
            ],
            "note": [{"text": note}],
        }
    )


# --- bundles, capability, outcome -----------------------------------------------------------------------------
def _entry(resource: Json, base_url: str) -> Json:
    return {
        "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": "match"},
    }


def searchset(
    resources: list[Json],
    total: int,
    self_url: str,
    next_url: str | None,
    base_url: str,
    *,
    timestamp: datetime | None = None,
) -> Json:
    """Bundle searchset of one page; ``total`` counts every match, ``next_url`` links the following page."""
    return _prune(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "timestamp": _instant(timestamp),
            "total": total,
            "link": [
                {"relation": "self", "url": self_url},
                {"relation": "next", "url": next_url} if next_url else None,
            ],
            "entry": [_entry(r, base_url) for r in resources],
        }
    )


def everything(resources: list[Json], base_url: str, *, timestamp: datetime | None = None) -> Json:
    """Bundle for Patient/$everything: the Patient and all of its resources, unpaged."""
    patient_id = next((r["id"] for r in resources if r.get("resourceType") == "Patient"), None)
    self_url = f"{base_url}/Patient/{patient_id}/$everything" if patient_id else f"{base_url}/Patient/$everything"
    return searchset(resources, len(resources), self_url, None, base_url, timestamp=timestamp)


def _search_params(*params: tuple[str, str, str]) -> list[Json]:
    return [{"name": name, "type": kind, "documentation": doc} for name, kind, doc in params]


def capability_statement(base_url: str, version: str) -> Json:
    """What this server does: read/search of six resource types and Patient/$everything, JSON only."""
    patient_param = ("patient", "reference", "Patient/<主索引号> 或主索引号（必填）")

    def clinical(kind: str, date_doc: str, code_doc: str | None = None) -> Json:
        params = [patient_param, ("date", "date", f"{date_doc}，可带前缀 eq/ge/gt/le/lt，按日")]
        if code_doc:
            params.append(("code", "token", f"{code_doc}（system|code 或 code）"))
        return {"type": kind, "interaction": [{"code": "search-type"}], "searchParam": _search_params(*params)}

    return {
        "resourceType": "CapabilityStatement",
        "name": "XydrcClinicalLookup",
        "title": SOFTWARE_NAME,
        "status": "active",
        "experimental": False,
        "date": CAPABILITY_DATE,
        "publisher": "荥阳医共体数据资源中心",
        "description": "荥阳医共体数据资源中心临床调阅接口：居民主索引、就诊、诊断、检验、处方与双向转诊（只读）",
        "kind": "instance",
        "software": {"name": SOFTWARE_NAME, "version": version},
        "implementation": {"description": SOFTWARE_NAME, "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "分页：_count（每页条数，≤200）与 _offset；跨机构调阅须以 reason "
                "说明理由（紧急调阅），"
                "全部访问记入审计。",
                "security": {"description": "Bearer 令牌（./drc api-token 签发）；按角色授权与脱敏"},
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": _search_params(
                            (
                                "identifier",
                                "token",
                                "system|value：urn:xydrc:master-id、urn:xydrc:pid:<来源系统>、"
                                f"{ID_NUMBER_SYSTEM}（身份证号）",
                            ),
                            ("name", "string", "姓名（须与 birthdate 同用）"),
                            ("birthdate", "date", "出生日期"),
                            ("gender", "token", "male | female | unknown"),
                        ),
                        "operation": [
                            {
                                "name": "everything",
                                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                            }
                        ],
                    },
                    clinical("Encounter", "就诊日期"),
                    clinical("Condition", "诊断日期", "ICD-10 诊断编码"),
                    clinical("Observation", "报告日期", "LOINC 检验项目代码"),
                    clinical("MedicationRequest", "开方日期", "ATC 代码"),
                    clinical("ServiceRequest", "转诊申请日期"),
                ],
            }
        ],
    }


def operation_outcome(code: str, text: str, severity: str = "error") -> Json:
    """OperationOutcome with one issue; ``code`` from the FHIR issue-type value set (invalid, forbidden, …)."""
    if severity not in OUTCOME_SEVERITIES:
        raise ValueError(f"OperationOutcome severity must be one of {sorted(OUTCOME_SEVERITIES)}, not {severity!r}")
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "details": {"text": text}, "diagnostics": text}],
    }
