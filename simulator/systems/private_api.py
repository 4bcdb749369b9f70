"""郑州华卓医院 and 郑州瑞祥医院: two tenants of one private-hospital SaaS vendor, reachable only through its HTTP API.

The vendor keeps both hospitals (tenant codes ``HZ001`` and ``RX001``) in one PostgreSQL backend, database
``private_his``; collectors never see it, only the JSON API (simulator/api_server.py) that serves these tables
as camelCase records ordered by (updated_at, id). So the backend is shaped for that API: one table per
resource, a vendor-wide 15-digit string ``id``, ``updated_at`` equal to the commit time of the last change,
and soft deletes (``deleted``) so cancellations reach collectors as tombstones.

Realistic timing needs rows that commit after the simulated day: discharges, inpatient charges settled at
discharge, late submissions, corrections due later. They wait in ``sim_pending`` (simulator-internal, never
served) until the day they commit, so every day written only adds rows with commit times inside that day and
an ``updated_since`` / cursor collector never misses one.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.dirt import IdentityDirt, recorded_identity
from simulator.events import DayActivity, Encounter
from simulator.pg_copy import copy_insert
from simulator.systems.base import MemberSystem
from simulator.world import World

DATABASE = "private_his"


@dataclass(frozen=True)
class Tenant:
    """A hospital as the vendor knows it: its own code, not our org code."""

    code: str  # hospitalCode in the API path
    digit: str  # first digit of every record id
    name: str


TENANTS = {"410182004": Tenant("HZ001", "1", "郑州华卓医院"), "410182005": Tenant("RX001", "2", "郑州瑞祥医院")}
TENANT_BY_CODE = {t.code: t for t in TENANTS.values()}

# Second digit of a record id: the resource it belongs to. A diagnosis re-issued by a correction gets REISSUED.
PATIENT, VISIT, ADMISSION, DIAGNOSIS, ORDER, CHARGE, REISSUED = "1234567"
CORRECTION = "_correction"  # pending-queue entries that are corrections, not rows

_AUDIT = [
    ("created_at", "timestamp(3) NOT NULL"),
    ("updated_at", "timestamp(3) NOT NULL"),
    ("deleted", "boolean NOT NULL DEFAULT false"),
]
_OWNER = [("patient_id", "varchar(15) NOT NULL"), ("visit_id", "varchar(15)"), ("admission_id", "varchar(15)")]
TABLES: dict[str, list[tuple[str, str]]] = {
    "patients": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        ("patient_no", "varchar(12) NOT NULL"),
        ("patient_name", "varchar(32)"),
        ("gender", "varchar(8)"),
        ("birthday", "date"),
        ("id_card_no", "varchar(20)"),
        ("mobile", "varchar(20)"),
        ("address", "varchar(128)"),
        ("nation", "varchar(8)"),
        ("insurance_card_no", "varchar(24)"),
        *_AUDIT,
    ],
    "visits": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        ("visit_no", "varchar(16) NOT NULL"),
        ("patient_id", "varchar(15) NOT NULL"),
        ("patient_no", "varchar(12) NOT NULL"),
        ("visit_type", "varchar(12) NOT NULL"),
        ("dept_code", "varchar(8)"),
        ("dept_name", "varchar(32)"),
        ("doctor_code", "varchar(8)"),
        ("doctor_name", "varchar(32)"),
        ("visit_time", "timestamp(0) NOT NULL"),
        ("status", "varchar(12) NOT NULL"),
        ("remark", "varchar(64)"),
        *_AUDIT,
    ],
    "admissions": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        ("admission_no", "varchar(16) NOT NULL"),
        ("patient_id", "varchar(15) NOT NULL"),
        ("patient_no", "varchar(12) NOT NULL"),
        ("dept_code", "varchar(8)"),
        ("dept_name", "varchar(32)"),
        ("ward_name", "varchar(32)"),
        ("bed_no", "varchar(8)"),
        ("doctor_code", "varchar(8)"),
        ("doctor_name", "varchar(32)"),
        ("admit_time", "timestamp(0) NOT NULL"),
        ("discharge_time", "timestamp(0)"),
        ("discharge_status", "varchar(12)"),
        ("status", "varchar(12) NOT NULL"),
        ("remark", "varchar(64)"),
        *_AUDIT,
    ],
    "diagnoses": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        *_OWNER,
        ("diagnosis_stage", "varchar(12) NOT NULL"),
        ("diagnosis_type", "varchar(8) NOT NULL"),
        ("seq_no", "smallint NOT NULL"),
        ("diagnosis_code", "varchar(16)"),
        ("diagnosis_name", "varchar(64)"),
        ("doctor_code", "varchar(8)"),
        ("diagnosed_at", "timestamp(0) NOT NULL"),
        *_AUDIT,
    ],
    "orders": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        *_OWNER,
        ("order_type", "varchar(8) NOT NULL"),
        ("item_code", "varchar(16)"),
        ("item_name", "varchar(64)"),
        ("spec", "varchar(32)"),
        ("quantity", "integer"),
        ("unit_price", "numeric(10,2)"),
        ("insurance_code", "varchar(32)"),
        ("order_time", "timestamp(0) NOT NULL"),
        ("result_value", "varchar(16)"),
        ("result_unit", "varchar(16)"),
        ("reference_range", "varchar(24)"),
        ("abnormal_flag", "varchar(2)"),
        ("report_text", "varchar(128)"),
        ("doctor_code", "varchar(8)"),
        *_AUDIT,
    ],
    "charges": [
        ("id", "varchar(15) PRIMARY KEY"),
        ("hospital_code", "varchar(8) NOT NULL"),
        *_OWNER,
        ("item_code", "varchar(16)"),
        ("item_name", "varchar(64)"),
        ("fee_category", "varchar(8)"),
        ("insurance_code", "varchar(32)"),
        ("amount", "numeric(12,2) NOT NULL"),
        ("charge_time", "timestamp(0) NOT NULL"),
        *_AUDIT,
    ],
}
CHILD_TABLES = ("diagnoses", "orders", "charges")
DRIFT_COLUMN = ("visits", "pay_type", "varchar(16)")  # the field that appears on schema_drift_day
PENDING_DDL = """CREATE TABLE IF NOT EXISTS {schema}.sim_pending (
    table_name text NOT NULL, id text NOT NULL, updated_at timestamp(3) NOT NULL, due_day date NOT NULL,
    payload jsonb NOT NULL, PRIMARY KEY (table_name, id, updated_at))"""
PENDING_COLUMNS = ("table_name", "id", "updated_at", "due_day", "payload")

# Event-level dirt rates (config ``dirt:``); identity dirt comes from simulator.dirt (config ``identity_dirt:``).
EVENT_DIRT = {
    "re_registration": 0.02,
    "duplicate_submission": 0.005,
    "unknown_local_code": 0.01,
    "late_submission": 0.01,
    "discharge_before_admission": 0.003,
}

# The vendor's own dictionaries.
GENDER = {1: "male", 2: "female"}
VISIT_TYPE = {"outpatient": "clinic", "emergency": "emergency"}
DEPARTMENTS = {"内科": "NK01", "外科": "WK01", "妇产科": "FCK01", "儿科": "EK01", "急诊科": "JZK01"}
DISCHARGE_STATUS = {"治愈": "cured", "好转": "improved", "未愈": "not_cured", "死亡": "dead", "其他": "other"}
FEE_CATEGORY = {
    "药品": "西药费",
    "检查": "检查费",
    "化验": "化验费",
    "治疗": "治疗费",
    "床位": "床位费",
    "手术": "手术费",
    "挂号": "挂号费",
}
LAB_CODES = {"6690-2": "WBC", "718-7": "HGB", "2345-7": "GLU", "2160-0": "CREA", "1742-6": "ALT"}
EXAM_CODES = {"DR": "FS", "CT": "CT", "超声": "US", "心电图": "ECG"}


def _crc(text: str, digits: int = 5) -> str:
    """A stable short number for a code (Python's hash() is salted per process)."""
    return f"{zlib.crc32(text.encode()) % 10**digits:0{digits}d}"


def vendor_icd(code: str) -> str:
    """ICD-10 国家临床版 2.0 -> the vendor's 4-character GB/T 14396 code ('I10.x00' -> 'I10', 'E11.900' -> 'E11.9')."""
    head = code[:5]
    return code[:3] if head.endswith(("x", "X")) or len(head) < 5 else head


def drug_code(national_code: str) -> str:
    return f"YP{_crc(national_code)}"


def patient_no(patient_id: str) -> str:
    """门诊号: day and sequence of the patient id, unique only inside one hospital."""
    return patient_id[2:8] + patient_id[-5:]


def _ms(at: datetime) -> datetime:
    """Commit times carry milliseconds, as timestamp(3) stores them."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class _DayRender:
    """Renders one day's encounters of both hospitals into rows (with their commit times) and answer-key entries."""

    def __init__(self, system: PrivateHospitalApi, day: date, key: answer_key.AnswerKey) -> None:
        self.system, self.day, self.key = system, day, key
        self.rng = system.rng(day, "render")
        self.identity_rng = system.rng(day, "identity")
        self.known = system.known_patients()
        self.sequence: Counter[tuple[str, str]] = Counter()
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.encounter_ids: dict[str, str] = {}

    def _id(self, tenant: Tenant, kind: str) -> str:
        self.sequence[tenant.digit, kind] += 1
        return f"{tenant.digit}{kind}{self.day:%y%m%d}{self.sequence[tenant.digit, kind]:07d}"

    def _later(self, at: datetime, low_s: int, high_s: int) -> datetime:
        return _ms(at + timedelta(seconds=self.rng.randrange(low_s, high_s), milliseconds=self.rng.randrange(1000)))

    def _rate(self, name: str) -> bool:
        return self.rng.random() < self.system.rates[name]

    def _doctor(self, tenant: Tenant, staff_id: str) -> tuple[str, str]:
        staff = self.system.staff.get(staff_id)
        return f"{tenant.code[:2]}{int(staff_id[-3:]) + 1:04d}", staff.name if staff else ""

    def patient(self, encounter: Encounter, tenant: Tenant) -> str:
        """The patient id for this visit: the known one, or a new registration (first visit or re-registration)."""
        known = self.known.get((encounter.resident_id, encounter.org_code))
        if known and not self._rate("re_registration"):
            return known
        patient_id = self._id(tenant, PATIENT)
        if known:
            self.key.defect("patients", patient_id, "re_registration", f"also {known}")
        self.known[encounter.resident_id, encounter.org_code] = patient_id
        person = self.system.world.people[encounter.resident_id]
        recorded = recorded_identity(self.identity_rng, person, self.system.identity_dirt)
        for defect, detail in recorded.defects:
            self.key.defect("patients", patient_id, defect, detail)
        self.key.patient(patient_id, person.resident_id, encounter.org_code)
        day_start = datetime.combine(self.day, time())
        at = max(day_start, self._later(encounter.start_at, -600, -60))
        self.rows.append(
            (
                "patients",
                {
                    "id": patient_id,
                    "hospital_code": tenant.code,
                    "patient_no": patient_no(patient_id),
                    "patient_name": recorded.name,
                    "gender": GENDER.get(recorded.sex, "unknown"),
                    "birthday": recorded.birth_date,
                    "id_card_no": recorded.id_number,
                    "mobile": recorded.phone,
                    "address": recorded.address,
                    "nation": person.ethnicity,
                    "insurance_card_no": person.insurance_no,
                    "created_at": at,
                    "updated_at": at,
                    "deleted": False,
                },
            )
        )
        return patient_id

    def encounter(self, encounter: Encounter) -> None:
        tenant = TENANTS[encounter.org_code]
        if encounter.kind == "inpatient":
            self._admission(encounter, tenant)
        else:
            self._visit(encounter, tenant)

    def _visit(self, encounter: Encounter, tenant: Tenant) -> None:
        patient_id = self.patient(encounter, tenant)
        visit_id = self._id(tenant, VISIT)
        self.key.encounter(visit_id, encounter.encounter_uid)
        self.encounter_ids[encounter.encounter_uid] = visit_id
        registered = encounter.start_at
        saved = self._later(registered, 300, 2400)
        doctor_code, doctor_name = self._doctor(tenant, encounter.doctor_id)
        visit = {
            "id": visit_id,
            "hospital_code": tenant.code,
            "visit_no": f"MZ{visit_id[2:8]}{visit_id[-5:]}",
            "patient_id": patient_id,
            "patient_no": patient_no(patient_id),
            "visit_type": VISIT_TYPE[encounter.kind],
            "dept_code": DEPARTMENTS.get(encounter.department_name, f"QT{encounter.department_code}"),
            "dept_name": encounter.department_name,
            "doctor_code": doctor_code,
            "doctor_name": doctor_name,
            "visit_time": registered.replace(microsecond=0),
            "status": "finished",
            "remark": None,
            "pay_type": "insurance" if encounter.insured else "self_pay",
            "created_at": _ms(registered),
            "updated_at": saved,
            "deleted": False,
        }
        rows = [("visits", visit)]
        owner = {"patient_id": patient_id, "visit_id": visit_id, "admission_id": None}
        rows += self._diagnoses(encounter, tenant, owner, "outpatient", saved, doctor_code)
        rows += self._orders_and_charges(encounter, tenant, owner, saved, doctor_code, settled=None)
        if self._rate("duplicate_submission"):
            duplicate_id = self._id(tenant, VISIT)
            rows.append(
                (
                    "visits",
                    {
                        **visit,
                        "id": duplicate_id,
                        "visit_no": f"MZ{duplicate_id[2:8]}{duplicate_id[-5:]}",
                        "created_at": self._later(visit["created_at"], 1, 4),
                        "updated_at": self._later(saved, 1, 4),
                    },
                )
            )
            self.key.encounter(duplicate_id, encounter.encounter_uid)
            self.key.defect("visits", duplicate_id, "duplicate_submission", f"duplicate of {visit_id}")
        if self._rate("late_submission"):
            # The clinic's offline client syncs days later: the visit and everything under it commit late.
            committed = datetime.combine(registered.date() + timedelta(days=2), time(8)) + timedelta(
                seconds=self.rng.randrange(10 * 3600)
            )
            shift = committed - saved
            for _, row in rows:
                row["created_at"], row["updated_at"] = row["created_at"] + shift, row["updated_at"] + shift
            self.key.defect("visits", visit_id, "late_submission", f"committed {committed:%Y-%m-%d %H:%M:%S}")
        self.rows += rows

    def _admission(self, encounter: Encounter, tenant: Tenant) -> None:
        patient_id = self.patient(encounter, tenant)
        admission_id = self._id(tenant, ADMISSION)
        self.key.encounter(admission_id, encounter.encounter_uid)
        self.encounter_ids[encounter.encounter_uid] = admission_id
        saved = self._later(encounter.start_at, 300, 1800)
        doctor_code, doctor_name = self._doctor(tenant, encounter.doctor_id)
        admitted = {
            "id": admission_id,
            "hospital_code": tenant.code,
            "admission_no": f"ZY{admission_id[2:8]}{admission_id[-4:]}",
            "patient_id": patient_id,
            "patient_no": patient_no(patient_id),
            "dept_code": DEPARTMENTS.get(encounter.department_name, f"QT{encounter.department_code}"),
            "dept_name": encounter.department_name,
            "ward_name": f"{encounter.department_name}病区",
            "bed_no": f"{int(encounter.bed_no)}床" if encounter.bed_no.isdigit() else encounter.bed_no,
            "doctor_code": doctor_code,
            "doctor_name": doctor_name,
            "admit_time": encounter.start_at.replace(microsecond=0),
            "discharge_time": None,
            "discharge_status": None,
            "status": "in_hospital",
            "remark": None,
            "created_at": saved,
            "updated_at": saved,
            "deleted": False,
        }
        self.rows.append(("admissions", admitted))
        owner = {"patient_id": patient_id, "visit_id": None, "admission_id": admission_id}
        self.rows += self._diagnoses(encounter, tenant, owner, "admission", saved, doctor_code)
        settled = self._later(encounter.end_at, 1800, 5400) if encounter.end_at else None
        self.rows += self._orders_and_charges(encounter, tenant, owner, saved, doctor_code, settled)
        if encounter.end_at is None:
            return
        discharge_time = encounter.end_at.replace(microsecond=0)
        if self._rate("discharge_before_admission"):
            # Typed against the wrong calendar day: a discharge one day before the admission.
            wrong = discharge_time - timedelta(days=(encounter.end_at - encounter.start_at).days + 1)
            self.key.defect(
                "admissions",
                admission_id,
                "discharge_before_admission",
                f"{discharge_time:%Y-%m-%d %H:%M:%S}->{wrong:%Y-%m-%d %H:%M:%S}",
            )
            discharge_time = wrong
        discharged = self._later(encounter.end_at, 600, 3600)
        self.rows.append(
            (
                "admissions",
                {
                    **admitted,
                    "discharge_time": discharge_time,
                    "status": "discharged",
                    "updated_at": discharged,
                    "discharge_status": DISCHARGE_STATUS.get(encounter.discharge_status, "other"),
                },
            )
        )
        self.rows += self._diagnoses(
            encounter, tenant, owner, "discharge", self._later(encounter.end_at, 300, 1800), doctor_code
        )

    def _diagnoses(
        self,
        encounter: Encounter,
        tenant: Tenant,
        owner: dict[str, str | None],
        stage: str,
        at: datetime,
        doctor_code: str,
    ) -> list[tuple[str, dict[str, Any]]]:
        rows = []
        for n, diagnosis in enumerate(encounter.diagnoses, start=1):
            diagnosis_id = self._id(tenant, DIAGNOSIS)
            code = vendor_icd(diagnosis.icd_code)
            if self._rate("unknown_local_code"):
                local = f"ZDY{self.rng.randrange(1000, 10000)}"  # 自定义诊断: free text saved under a private code
                self.key.defect("diagnoses", diagnosis_id, "unknown_local_code", f"{code}->{local}")
                code = local
            rows.append(
                (
                    "diagnoses",
                    {
                        "id": diagnosis_id,
                        "hospital_code": tenant.code,
                        **owner,
                        "diagnosis_stage": stage,
                        "diagnosis_type": "main" if diagnosis.is_main else "other",
                        "seq_no": n,
                        "diagnosis_code": code,
                        "diagnosis_name": diagnosis.name,
                        "doctor_code": doctor_code,
                        "diagnosed_at": at.replace(microsecond=0),
                        "created_at": at,
                        "updated_at": at,
                        "deleted": False,
                    },
                )
            )
        return rows

    def _orders_and_charges(
        self,
        encounter: Encounter,
        tenant: Tenant,
        owner: dict[str, str | None],
        saved: datetime,
        doctor_code: str,
        settled: datetime | None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Orders (drug, lab with result, exam with report, surgery) and the charges they cause.

        Clinic charges are paid minutes after the visit; inpatient charges are served only once settled at
        discharge (``settled``), as this vendor exposes settled fees only.
        """
        rows: list[tuple[str, dict[str, Any]]] = []
        local_drugs: dict[str, str] = {}

        def order(kind: str, ordered: datetime, committed: datetime, **fields: Any) -> None:
            row = {
                "id": self._id(tenant, ORDER),
                "hospital_code": tenant.code,
                **owner,
                "order_type": kind,
                "item_code": None,
                "item_name": None,
                "spec": None,
                "quantity": None,
                "unit_price": None,
                "insurance_code": None,
                "order_time": ordered.replace(microsecond=0),
                "result_value": None,
                "result_unit": None,
                "reference_range": None,
                "abnormal_flag": None,
                "report_text": None,
                "doctor_code": doctor_code,
                "created_at": _ms(ordered),
                "updated_at": committed,
                "deleted": False,
            }
            rows.append(("orders", {**row, **fields}))

        for prescription in encounter.prescriptions:
            ordered = self._later(saved, 30, 300)
            code, insurance = drug_code(prescription.drug_code), prescription.drug_code
            if self._rate("unknown_local_code"):
                code, insurance = f"LS{self.rng.randrange(10000, 100000)}", None  # 临时药品, not in the dictionary
            local_drugs[prescription.drug_code] = code
            order(
                "drug",
                ordered,
                ordered,
                item_code=code,
                item_name=prescription.name,
                spec=prescription.spec,
                quantity=prescription.quantity,
                unit_price=prescription.unit_price,
                insurance_code=insurance,
            )
            if code.startswith("LS"):
                self.key.defect(
                    "orders", rows[-1][1]["id"], "unknown_local_code", f"{drug_code(prescription.drug_code)}->{code}"
                )
        for lab in encounter.labs:
            ordered = self._later(saved, 60, 600)
            low, _, high = lab.reference_range.partition("-")
            flag = "H" if lab.value > float(high) else "L" if lab.value < float(low) else ""
            order(
                "lab",
                ordered,
                self._later(ordered, 3600, 10800),
                item_code=LAB_CODES.get(lab.loinc, f"JY{_crc(lab.loinc)}"),
                item_name=lab.item_name,
                result_value=f"{lab.value:g}",
                result_unit=lab.unit,
                reference_range=lab.reference_range,
                abnormal_flag=flag,
            )
        for exam in encounter.exams:
            ordered = self._later(saved, 120, 900)
            name = "常规心电图" if exam.modality == "心电图" else f"{exam.body_part}{exam.modality}"
            order(
                "exam",
                ordered,
                self._later(ordered, 1800, 10800),
                item_code=f"{EXAM_CODES.get(exam.modality, 'JC')}{_crc(exam.body_part, 3)}",
                item_name=name,
                report_text=exam.conclusion,
            )
        for surgery in encounter.surgeries:
            order(
                "surgery",
                surgery.at - timedelta(hours=2),
                self._later(surgery.at, 3600, 10800),
                item_code=f"SS{surgery.procedure_code.replace('.', '')}",
                item_name=surgery.name,
                quantity=1,
                insurance_code=surgery.procedure_code,
            )
        for charge in encounter.charges:
            if charge.category == "药品":
                code = local_drugs.get(charge.item_code, drug_code(charge.item_code))
                category = "中成药费" if charge.item_code.startswith("Z") else "西药费"
            else:
                code = (
                    f"SS{charge.item_code.replace('.', '')}"
                    if charge.category == "手术"
                    else f"SF{_crc(charge.item_code)}"
                )
                category = FEE_CATEGORY.get(charge.category, "其他费")
            if settled is not None:
                at = settled
            elif charge.category == "挂号":
                at = _ms(encounter.start_at)
            else:
                at = self._later(saved, 300, 1200)
            rows.append(
                (
                    "charges",
                    {
                        "id": self._id(tenant, CHARGE),
                        "hospital_code": tenant.code,
                        **owner,
                        "item_code": code,
                        "item_name": charge.item_name,
                        "fee_category": category,
                        "insurance_code": None if code.startswith("LS") else charge.item_code,
                        "amount": charge.amount_yuan,
                        "charge_time": at.replace(microsecond=0),
                        "created_at": at,
                        "updated_at": at,
                        "deleted": False,
                    },
                )
            )
        return rows


class PrivateHospitalApi(MemberSystem):
    """Writes both private hospitals' days into the vendor backend the API server reads."""

    source_system = "private_api"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.schema = config.get("pg_schema", "public")
        self.truth_system = self.source_system  # answer-key name; tests use their own
        dirt = config.get("dirt") or {}
        self.rates = {name: float(dirt.get(name, default)) for name, default in EVENT_DIRT.items()}
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        drift = config.get("schema_drift_day")
        self.drift_day = date.fromisoformat(str(drift)) if drift else None
        self.staff = {s.staff_id: s for code in self.institutions for s in world.staff[code]}
        self._known: dict[tuple[int, str], str] | None = None

    def _table(self, name: str) -> str:
        return f'"{self.schema}".{name}'

    def create_schema(self, reset: bool = False) -> None:
        self._known = None  # read again from the answer key (a reset empties it)
        with source_pg_engine(DATABASE).begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            if reset:
                for name in [*TABLES, "sim_pending"]:
                    conn.execute(sa.text(f"DROP TABLE IF EXISTS {self._table(name)}"))
            for name, columns in TABLES.items():
                body = ", ".join(f"{column} {kind}" for column, kind in columns)
                conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {self._table(name)} ({body})"))
                conn.execute(
                    sa.text(
                        f"CREATE INDEX IF NOT EXISTS {name}_sync ON {self._table(name)} (hospital_code, updated_at, id)"
                    )
                )
            for name in CHILD_TABLES:
                for owner in ("visit_id", "admission_id"):
                    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {name}_{owner} ON {self._table(name)} ({owner})"))
            conn.execute(sa.text(PENDING_DDL.format(schema=f'"{self.schema}"')))

    def last_day(self) -> date | None:
        return answer_key.last_written_day(self.truth_system)

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        key = answer_key.AnswerKey(self.truth_system, day)
        render = _DayRender(self, day, key)
        self._known = None  # the render updates it as it issues ids: kept only if the day is written
        for encounter in self.own_encounters(activity):
            render.encounter(encounter)
        entries = render.rows + self._corrections(activity, render.encounter_ids)
        with source_pg_engine(DATABASE).begin() as conn:
            counts = self._store(conn, day, entries, key)
        key.flush()
        answer_key.mark_day_written(self.truth_system, day)
        self._known = render.known
        return counts

    def known_patients(self) -> dict[tuple[int, str], str]:
        """The answer key's patient ids, read once, then carried from day to day (ids carry their day and
        sequence, so the one issued last is the one the answer key returns)."""
        return answer_key.known_patients(self.truth_system) if self._known is None else self._known

    def _corrections(self, activity: DayActivity, today: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
        """Corrections of our encounters, as queue entries applied when they commit."""
        uids = [c.target_uid for c in activity.corrections]
        local = {**self._local_encounter_ids([u for u in uids if u not in today]), **today}
        return [
            (
                CORRECTION,
                {
                    "id": f"{c.kind}:{local[c.target_uid]}",
                    "target_id": local[c.target_uid],
                    "kind": c.kind,
                    "reason": c.reason,
                    "updated_at": _ms(c.at),
                },
            )
            for c in activity.corrections
            if c.target_uid in local
        ]

    def _local_encounter_ids(self, uids: list[str]) -> dict[str, str]:
        """encounter_uid -> our first local id; a duplicate submission's later id is never the one corrected."""
        if not uids:
            return {}
        with source_pg_engine(answer_key.DATABASE).connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT encounter_uid, min(local_encounter_id) AS local_id "
                    "FROM encounter_truth WHERE source_system = :s AND encounter_uid = ANY(:u) "
                    "GROUP BY encounter_uid"
                ),
                {"s": self.truth_system, "u": uids},
            )
            return {r.encounter_uid: r.local_id for r in rows}

    # --- storage ------------------------------------------------------------------------------------
    def _columns(self, table: str, day: date) -> list[str]:
        columns = [c for c, _ in TABLES[table]]
        if table == DRIFT_COLUMN[0] and self.drift_day and day >= self.drift_day:
            columns.insert(-3, DRIFT_COLUMN[1])
        return columns

    def _store(
        self, conn: sa.Connection, day: date, entries: list[tuple[str, dict[str, Any]]], key: answer_key.AnswerKey
    ) -> dict[str, int]:
        """Apply what commits on ``day`` (queued and new), queue what commits later; all in one transaction."""
        if self.drift_day and day >= self.drift_day:
            table, column, kind = DRIFT_COLUMN
            present = conn.execute(
                sa.text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = :s "
                    "AND table_name = :t AND column_name = :c"
                ),
                {"s": self.schema, "t": table, "c": column},
            ).first()
            if not present:  # ALTER locks the table against API readers: only once
                conn.execute(sa.text(f"ALTER TABLE {self._table(table)} ADD COLUMN {column} {kind}"))
            if day == self.drift_day:
                key.defect(table, column, "schema_drift", f"field payType served from {day}")
        due = conn.execute(
            sa.text(f"DELETE FROM {self._table('sim_pending')} WHERE due_day <= :d RETURNING table_name, payload"),
            {"d": day},
        ).all()
        entries = [(r.table_name, _decode(r.table_name, r.payload)) for r in due] + entries
        now: dict[str, list[dict[str, Any]]] = {}
        later = []
        for table, row in entries:
            if row["updated_at"].date() > day:
                later.append((table, row))
            else:
                now.setdefault(table, []).append(row)
        self._queue(conn, later)
        counts = {}
        for table in TABLES:
            if now.get(table):
                counts[table] = self._upsert(conn, table, day, now[table])
        corrections = sorted(now.get(CORRECTION, []), key=lambda r: (r["updated_at"], r["id"]))
        counts["corrections"] = sum(self._correct(conn, day, c, key) for c in corrections)
        return {k: v for k, v in counts.items() if v}

    def _queue(self, conn: sa.Connection, entries: list[tuple[str, dict[str, Any]]]) -> None:
        if entries:
            _copy_insert(
                conn,
                self._table("sim_pending"),
                PENDING_COLUMNS,
                [
                    (
                        t,
                        r["id"],
                        r["updated_at"],
                        r["updated_at"].date(),
                        json.dumps(r, default=_encode, ensure_ascii=False),
                    )
                    for t, r in entries
                ],
            )

    def _upsert(self, conn: sa.Connection, table: str, day: date, rows: list[dict[str, Any]]) -> int:
        """Insert rows or newer versions of them; never resurrect a tombstone nor overwrite a newer version."""
        columns = self._columns(table, day)
        latest: dict[str, tuple[Any, ...]] = {}
        for row in sorted(rows, key=lambda r: r["updated_at"]):
            latest[row["id"]] = tuple(row.get(c) for c in columns)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
        newer = f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE NOT t.deleted AND t.updated_at <= EXCLUDED.updated_at"
        _copy_insert(conn, self._table(table), columns, latest.values(), newer)
        return len(latest)

    def _correct(self, conn: sa.Connection, day: date, op: dict[str, Any], key: answer_key.AnswerKey) -> int:
        """Apply one correction: a cancel soft-deletes the encounter and everything under it (退费/作废); an update
        re-saves its diagnoses the way this vendor does it (old rows deleted, copies under new ids)."""
        target, at = op["target_id"], op["updated_at"]
        table = "visits" if target[1] == VISIT else "admissions"
        owner = "visit_id" if table == "visits" else "admission_id"
        current = conn.execute(
            sa.text(f"SELECT deleted FROM {self._table(table)} WHERE id = :i"), {"i": target}
        ).first()
        if current is None:
            # Still queued (a late submission): correct it right after it arrives.
            queued = conn.execute(
                sa.text(f"SELECT max(updated_at) FROM {self._table('sim_pending')} WHERE table_name = :t AND id = :i"),
                {"t": table, "i": target},
            ).scalar()
            if queued is not None:
                self._queue(conn, [(CORRECTION, {**op, "updated_at": max(at, queued + timedelta(minutes=1))})])
            return 0
        if current.deleted:
            return 0
        params = {"i": target, "at": at, "r": op["reason"]}
        if op["kind"] == "cancel":
            conn.execute(
                sa.text(
                    f"UPDATE {self._table(table)} SET deleted = true, status = 'cancelled', remark = :r, "
                    "updated_at = :at WHERE id = :i"
                ),
                params,
            )
            for child in CHILD_TABLES:
                conn.execute(
                    sa.text(
                        f"UPDATE {self._table(child)} SET deleted = true, updated_at = :at "
                        f"WHERE {owner} = :i AND NOT deleted"
                    ),
                    params,
                )
            key.defect(table, target, "correction_cancel", op["reason"])
            return 1
        conn.execute(sa.text(f"UPDATE {self._table(table)} SET remark = :r, updated_at = :at WHERE id = :i"), params)
        originals = (
            conn.execute(
                sa.text(
                    f"SELECT * FROM {self._table('diagnoses')} WHERE {owner} = :i AND substr(id, 2, 1) <> '{REISSUED}'"
                ),
                params,
            )
            .mappings()
            .all()
        )
        copies = [
            {**r, "id": r["id"][0] + REISSUED + r["id"][2:], "created_at": at, "updated_at": at, "deleted": False}
            for r in originals
        ]
        if copies:
            self._upsert(conn, "diagnoses", day, copies)
            # a copy keeps its original's faults (a 自定义诊断 code stays one): the answer key says so
            for defect in answer_key.logged_defects(key.source_system, "diagnoses", [r["id"] for r in originals], key):
                key.defect(
                    "diagnoses", defect.record_id[0] + REISSUED + defect.record_id[2:], defect.defect, defect.detail
                )
        conn.execute(
            sa.text(
                f"UPDATE {self._table('diagnoses')} SET deleted = true, updated_at = :at "
                f"WHERE {owner} = :i AND substr(id, 2, 1) <> '{REISSUED}' AND NOT deleted"
            ),
            params,
        )
        key.defect(table, target, "correction_update", op["reason"])
        return 1


def _copy_insert(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    on_conflict: str = "ON CONFLICT DO NOTHING",
) -> None:
    with conn.connection.cursor() as cursor:
        copy_insert(cursor, table, columns, rows, on_conflict)


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot queue {value!r}")


_TEMPORAL = {
    table: {c: kind.split()[0] for c, kind in columns if kind.startswith(("timestamp", "date"))}
    for table, columns in TABLES.items()
} | {CORRECTION: {"updated_at": "timestamp(3)"}}


def _decode(table: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A queued row back with its dates and times (JSON keeps them as ISO strings)."""
    row = dict(payload)
    for column, kind in _TEMPORAL[table].items():
        if row.get(column) is not None:
            row[column] = date.fromisoformat(row[column]) if kind == "date" else datetime.fromisoformat(row[column])
    return row
