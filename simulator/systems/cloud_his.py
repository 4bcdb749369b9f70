"""云HIS: the cloud HIS of the 13 乡镇卫生院, 2 社区卫生服务中心 and 289 村卫生室 (PostgreSQL, multi-tenant).

One vendor schema (default ``his``) in database ``cloud_his``. Every table carries ``tenant_id`` = 'T' + org
code; ``sys_tenant`` lists the tenants. Names, codes and quirks are the vendor's (docs/simulator/cloud_his.md):
per-tenant patient ids, visit type '1'/'2'/'3', sex '1'/'2'/'0'/'9', 基层 ICD-10 4-character codes (free text
without a code at village clinics), local drug/lab/department codes, 作废 as ``del_flag='1'``, and
``gmt_create``/``gmt_modified`` as the commit times CDC and watermark collection see.

An inpatient stay is written at admission (在院); its discharge (and the settled charges) lands on the
discharge day as an UPDATE plus inserts. Until then the rendered discharge waits in the answer-key database
(table ``cloud_his_pending_discharge``), which the pipeline never reads, so no future fact leaks into the source.
A day is one source transaction; the answer key is flushed inside it, just before commit, so a crash at any
point followed by a re-run converges to the same rows (deterministic keys, ``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from simulator import answer_key, clinical
from simulator.answer_key import AnswerKey
from simulator.connections import grant_collector, source_pg_engine
from simulator.dirt import IdentityDirt, recorded_identity
from simulator.events import Correction, DayActivity, Encounter, Institution, Person
from simulator.pg_copy import copy_insert
from simulator.systems.base import MemberSystem
from simulator.world import World

# --- the vendor's local code lists ------------------------------------------------------------------------
SEX = {1: "1", 2: "2"}  # '0' 未知, sometimes '9', as dirt
VISIT_TYPE = {"outpatient": "1", "emergency": "2", "inpatient": "3"}
TENANT_LEVEL = {"乡镇卫生院": "1", "社区卫生服务中心": "2", "村卫生室": "3"}
USER_TYPE = {"医师": "1", "护士": "2", "药师": "3", "技师": "4"}
NATION = {"汉族": "01", "回族": "03"}  # GB 3304 numeric codes
OUT_STATUS = {"治愈": "1", "好转": "2", "未愈": "3", "死亡": "4", "其他": "9"}
FEE_CODE = {
    "西药": "01",
    "中成药": "02",
    "检查": "03",
    "化验": "04",
    "治疗": "05",
    "床位": "06",
    "手术": "07",
    "挂号": "08",
}
EXAM_CLASS = {"DR": "01", "CT": "02", "超声": "03", "心电图": "04"}
LAB_ITEM = {"6690-2": "WBC", "718-7": "HGB", "2345-7": "GLU", "2160-0": "CREA", "1742-6": "ALT"}
INCISION = {"I": "1", "II": "2", "III": "3"}
HEALING = {"甲": "1", "乙": "2", "丙": "3"}
RECIPE_TYPE_NORMAL, RECIPE_TYPE_EMERGENCY, RECIPE_TYPE_CHILD = "1", "2", "3"
FREQUENCIES = ("qd", "bid", "tid")
# The vendor's department template for 基层 tenants: standard 诊疗科目 code -> (local dept code, local name).
DEPT_TEMPLATE = {
    "0100": ("1001", "全科诊室"),
    "0101": ("1001", "全科门诊"),
    "5001": ("1002", "中医科"),
    "0301": ("1003", "儿科"),
    "0901": ("1004", "急诊科"),
}
# What a village doctor types when no code is picked from the 基层 ICD list.
COLLOQUIAL = {
    "原发性高血压": "高血压",
    "2型糖尿病": "糖尿病",
    "急性上呼吸道感染": "感冒",
    "急性支气管炎": "支气管炎",
    "动脉粥样硬化性心脏病": "冠心病",
    "泌尿道感染": "尿路感染",
    "膝关节病": "关节炎",
    "胃肠炎": "急性胃肠炎",
    "慢性阻塞性肺病伴急性加重": "慢阻肺",
    "龋病": "蛀牙",
}
# Diagnoses a village doctor types instead of picking a code: the everyday ones. A rare diagnosis is looked up
# in the 基层 ICD list (a name typed for it would be a coding gap the platform cannot map).
TYPED_DIAGNOSES = frozenset(
    {code for code, *_ in clinical.COMMON_DIAGNOSES} | {clinical.HYPERTENSION[0], clinical.DIABETES[0]}
)
PLATFORM_TENANT = "0"  # tenant id of platform-wide rows (shared dictionaries, root parent)
DRIFT_COLUMN = "medical_insurance_type"  # 险种类型 added by a vendor upgrade: 310 职工, 390 城乡居民
PENDING_TABLE = "cloud_his_pending_discharge"

DEFAULTS: dict[str, float] = {
    "re_registration": 0.01,  # a returning resident registered again under a new local id
    "unknown_sex_code": 0.005,  # sex stored as '0' (or '9') although known
    "unknown_local_code": 0.004,  # per visit: a tenant-made diagnosis or drug code outside the dictionaries
    "duplicate_submission": 0.003,  # per visit: the registration saved twice under a new visit id
    "discharge_before_admission": 0.003,  # per discharge: out_time typed before in_time
    "village_free_text_diagnosis": 0.35,  # per village-clinic visit: diagnoses typed as text, no code (not dirt)
}

AUDIT = "del_flag char(1) NOT NULL DEFAULT '0', gmt_create timestamp(3) NOT NULL, gmt_modified timestamp(3) NOT NULL"
TABLES: dict[str, str] = {
    "sys_tenant": """tenant_id varchar(16) PRIMARY KEY, tenant_name varchar(64) NOT NULL,
        tenant_level char(1) NOT NULL, parent_tenant_id varchar(16) NOT NULL, area_code varchar(6),
        town_name varchar(32), bed_num integer, status char(1) NOT NULL DEFAULT '0'""",
    "sys_dept": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, dept_code varchar(8) NOT NULL,
        dept_name varchar(32) NOT NULL, std_dept_code varchar(8), UNIQUE (tenant_id, dept_code)""",
    "sys_user": """user_id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, user_name varchar(32) NOT NULL,
        user_type char(1) NOT NULL, title_name varchar(16), cert_no varchar(32)""",
    "t_drug_dict": """drug_code varchar(16) PRIMARY KEY, tenant_id varchar(16) NOT NULL, drug_name varchar(64) NOT NULL,
        drug_spec varchar(32), ybbm varchar(32), retail_price numeric(10,4)""",
    "t_patient": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, patient_name varchar(32) NOT NULL,
        sex char(1), birthday date, id_card_type varchar(2), id_card varchar(18), mobile varchar(20),
        address varchar(128), nation varchar(2)""",
    "t_visit": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, patient_id bigint NOT NULL,
        visit_type char(1) NOT NULL, dept_code varchar(8), dept_name varchar(32), doctor_id bigint,
        doctor_name varchar(32), visit_time timestamp NOT NULL, remark varchar(64)""",
    "t_visit_diag": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        diag_type char(1) NOT NULL, main_flag char(1) NOT NULL, sort_no smallint NOT NULL, diag_code varchar(16),
        diag_name varchar(64) NOT NULL, diag_desc varchar(64)""",
    "t_recipe": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        patient_id bigint NOT NULL, recipe_type char(1) NOT NULL, doctor_id bigint, recipe_time timestamp NOT NULL,
        total_amount numeric(12,2) NOT NULL""",
    "t_recipe_detail": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, recipe_id bigint NOT NULL,
        drug_code varchar(16) NOT NULL, drug_name varchar(64) NOT NULL, drug_spec varchar(32),
        quantity numeric(10,2) NOT NULL, unit_price numeric(10,4) NOT NULL, amount numeric(12,2) NOT NULL,
        frequency varchar(8)""",
    "t_charge": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        patient_id bigint NOT NULL, fee_code varchar(2) NOT NULL, item_code varchar(32) NOT NULL,
        item_name varchar(64) NOT NULL, amount numeric(12,2) NOT NULL, pay_type char(1) NOT NULL,
        charge_time timestamp NOT NULL""",
    "t_inpatient": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        patient_id bigint NOT NULL, inpatient_no varchar(16) NOT NULL, dept_code varchar(8), dept_name varchar(32),
        bed_no varchar(8), doctor_id bigint, in_time timestamp NOT NULL, in_diag_code varchar(16),
        in_diag_name varchar(64), out_time timestamp, out_status char(1), out_diag_code varchar(16),
        out_diag_name varchar(64), in_status char(1) NOT NULL""",
    "t_operation": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, inpatient_id bigint NOT NULL,
        visit_id bigint NOT NULL, oper_code varchar(16) NOT NULL, oper_name varchar(64) NOT NULL,
        oper_time timestamp NOT NULL, incision_level char(1), heal_level char(1)""",
    "t_lab": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        patient_id bigint NOT NULL, item_code varchar(16) NOT NULL, item_name varchar(32) NOT NULL,
        result_value varchar(16), unit varchar(16), ref_range varchar(32), abnormal_flag varchar(1),
        report_time timestamp NOT NULL""",
    "t_exam": """id bigint PRIMARY KEY, tenant_id varchar(16) NOT NULL, visit_id bigint NOT NULL,
        patient_id bigint NOT NULL, exam_class varchar(2) NOT NULL, body_part varchar(16), exam_see varchar(256),
        exam_result varchar(256), report_time timestamp NOT NULL""",
}
# Tables whose rows hang off a visit (visit_id), cancelled together with it.
VISIT_CHILDREN = ("t_visit_diag", "t_recipe", "t_charge", "t_inpatient", "t_operation", "t_lab", "t_exam")
PENDING_DDL = f"""CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (
    source_system text NOT NULL, inpatient_id bigint NOT NULL, discharge_day date NOT NULL, payload jsonb NOT NULL,
    PRIMARY KEY (source_system, inpatient_id))"""


def vendor_icd(code: str) -> str:
    """ICD-10 国家临床版 2.0 (``I10.x00``) -> the 基层 list's 4-character form (``I10``, ``E11.9``)."""
    head, _, tail = code.partition(".")
    return head if tail[:1] in ("", "x", "X") else f"{head}.{tail[0]}"


def drug_code(national_code: str) -> str:
    """The vendor's local drug code: stable, opaque, unrelated to the national (医保贯标) code it maps to."""
    return f"YP{zlib.crc32(national_code.encode()) % 10**8:08d}"


def tenant_id(org_code: str) -> str:
    return "T" + org_code


def _ms(at: datetime) -> datetime:
    """Timestamps to the millisecond, as stored in timestamp(3)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _after(rng: random.Random, at: datetime, low_s: int, high_s: int) -> datetime:
    return _ms(at + timedelta(seconds=rng.uniform(low_s, high_s)))


def _audit(at: datetime) -> dict[str, Any]:
    return {"del_flag": "0", "gmt_create": at, "gmt_modified": at}


def _json_default(value: Any) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass
class _DayBatch:
    """Everything rendered for one day before it is stored."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    pending: list[dict[str, Any]] = field(default_factory=list)  # discharges falling on a later day
    visit_of: dict[str, int] = field(default_factory=dict)  # encounter uid -> visit id (today)
    issued: dict[tuple[int, str], int] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per tenant: visit ids used
    patients: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per tenant: new patients


class CloudHis(MemberSystem):
    """Renders the 基层 institutions' encounters into the 云HIS schema, one transaction per day."""

    source_system = "cloud_his"
    renders = "cloud_his"  # Institution.source_system of the tenants (a test copy records under another name)

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.institutions = {i.org_code: i for i in world.institutions if i.source_system == self.renders}
        self.database: str = config.get("database", "cloud_his")
        self.schema: str = config.get("schema", "his")
        self.rates = {name: float(config.get(name, default)) for name, default in DEFAULTS.items()}
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        drift = config.get("schema_drift_day")
        self.schema_drift_day: date | None = (
            None if drift is None else drift if isinstance(drift, date) else date.fromisoformat(str(drift))
        )
        self.go_live = datetime.combine(world.start_date - timedelta(days=180), time(9))
        self.users: dict[str, tuple[int, str]] = {}  # staff id -> (user_id, name)
        for org in self.institutions:
            for n, staff in enumerate(world.staff[org], start=1):
                self.users[staff.staff_id] = (int(org[-3:]) * 1000 + n, staff.name)
        self._known: dict[tuple[int, str], int] | None = None
        self._depts: set[tuple[str, str]] = set()  # (tenant, local dept code) stored by this process
        self._drugs: set[str] = set()  # local drug codes stored by this process

    # --- storage ------------------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        return source_pg_engine(self.database)

    def create_schema(self, reset: bool = False) -> None:
        """The vendor schema with its go-live master data (tenants, users, departments, drug dictionary)."""
        with self.engine.begin() as conn:
            if reset:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
            for table, columns in TABLES.items():
                conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {self.schema}.{table} ({columns}, {AUDIT})"))
                conn.execute(
                    sa.text(
                        f"CREATE INDEX IF NOT EXISTS ix_{table}_gmt_modified ON {self.schema}.{table} (gmt_modified)"
                    )
                )
            for table in VISIT_CHILDREN:
                conn.execute(
                    sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table}_visit ON {self.schema}.{table} (visit_id)")
                )
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS ix_t_recipe_detail_recipe ON {self.schema}.t_recipe_detail (recipe_id)"
                )
            )
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS ix_t_visit_tenant_time "
                    f"ON {self.schema}.t_visit (tenant_id, visit_time)"
                )
            )
            self._store(conn, self._master_rows())
            grant_collector(conn, self.source_system, self.schema)
        answer_key.create_schema()
        with source_pg_engine(answer_key.DATABASE).begin() as conn:
            conn.execute(sa.text(PENDING_DDL))
            if reset:  # a reset source with a stale key would make write_day skip the days it no longer holds
                for table in (
                    "patient_truth",
                    "defect_log",
                    "encounter_truth",
                    "system_day",
                    "source_fix",
                    PENDING_TABLE,
                ):
                    conn.execute(sa.text(f"DELETE FROM {table} WHERE source_system = :s"), {"s": self.source_system})
        self._known = None
        self._depts, self._drugs = set(), set()

    def _master_rows(self) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for inst in self.institutions.values():
            tenant = tenant_id(inst.org_code)
            rows["sys_tenant"].append(
                {
                    "tenant_id": tenant,
                    "tenant_name": inst.name,
                    "tenant_level": TENANT_LEVEL.get(inst.org_type, "9"),
                    "parent_tenant_id": tenant_id(inst.parent_code) if inst.parent_code else PLATFORM_TENANT,
                    "area_code": "410182",
                    "town_name": inst.township,
                    "bed_num": inst.open_beds,
                    "status": "0",
                    **_audit(self.go_live),
                }
            )
            for staff in self.world.staff[inst.org_code]:
                user_id, name = self.users[staff.staff_id]
                rows["sys_user"].append(
                    {
                        "user_id": user_id,
                        "tenant_id": tenant,
                        "user_name": name,
                        "user_type": USER_TYPE.get(staff.role, "9"),
                        "title_name": staff.title,
                        "cert_no": staff.licence_no,
                        **_audit(self.go_live),
                    }
                )
            standard = list(clinical.DEPARTMENTS.get(inst.org_type, []))
            if inst.org_type == "乡镇卫生院":
                standard.append(clinical.EMERGENCY_DEPARTMENT)
            for std_code, name in standard:
                rows["sys_dept"].append(self._dept_row(inst, std_code, name, self.go_live))
        for drugs in clinical.DRUGS.values():
            for national, _atc, name, spec, price in drugs:
                rows["t_drug_dict"].append(self._drug_row(national, name, spec, price, self.go_live))
        return rows

    @staticmethod
    def _dept_local(std_code: str, name: str) -> tuple[str, str]:
        return DEPT_TEMPLATE.get(std_code, (f"9{std_code[-3:]}", name))

    def _dept_row(self, inst: Institution, std_code: str, name: str, at: datetime) -> dict[str, Any]:
        code, local_name = self._dept_local(std_code, name)
        return {
            "id": int(inst.org_code[-3:]) * 10_000 + int(code),
            "tenant_id": tenant_id(inst.org_code),
            "dept_code": code,
            "dept_name": local_name,
            "std_dept_code": std_code,
            **_audit(at),
        }

    @staticmethod
    def _drug_row(national: str, name: str, spec: str, price: float, at: datetime) -> dict[str, Any]:
        return {
            "drug_code": drug_code(national),
            "tenant_id": PLATFORM_TENANT,
            "drug_name": name,
            "drug_spec": spec,
            "ybbm": national,
            "retail_price": price,
            **_audit(at),
        }

    def _store(self, conn: sa.Connection, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """COPY each table's rows in, keeping what is there already (re-runs add nothing)."""
        cursor = conn.connection.dbapi_connection.cursor()
        counts = {}
        for table, table_rows in rows.items():
            if table_rows:
                columns = list(table_rows[0])
                counts[table] = copy_insert(
                    cursor, f"{self.schema}.{table}", columns, ([row[c] for c in columns] for row in table_rows)
                )
        return counts

    # --- one day ------------------------------------------------------------------------------------
    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        key = AnswerKey(self.source_system, day)
        known = self._known_patients(day)
        batch = _DayBatch()
        drift = self.schema_drift_day is not None and day >= self.schema_drift_day
        for encounter in self.own_encounters(activity):
            self._render(encounter, day, known, batch, key, drift)
        counts: dict[str, int] = defaultdict(int)
        with self.engine.begin() as conn:
            if drift and self._add_drift_column(conn):
                key.defect("t_visit", DRIFT_COLUMN, "schema_drift", f"column t_visit.{DRIFT_COLUMN} from {day}")
            counts["t_inpatient"] += self._discharge_due(conn, day, batch, key)
            for table, count in self._store(conn, batch.rows).items():
                counts[table] += count
            for table, count in self._apply_corrections(conn, activity.corrections, batch, key).items():
                counts[table] += count
            self._save_pending(batch.pending)
            key.flush()
        with source_pg_engine(answer_key.DATABASE).begin() as conn:
            conn.execute(
                sa.text(f"DELETE FROM {PENDING_TABLE} WHERE source_system = :s AND discharge_day <= :d"),
                {"s": self.source_system, "d": day},
            )
        answer_key.mark_day_written(self.source_system, day)
        known.update(batch.issued)
        return {table: count for table, count in counts.items() if count}

    def _known_patients(self, day: date) -> dict[tuple[int, str], int]:
        """Local ids issued on earlier days (ids carry their issue day, so a re-run of a day ignores its own)."""
        if self._known is None:
            today = int(f"{day:%y%m%d}")
            self._known = {
                k: int(v)
                for k, v in answer_key.known_patients(self.source_system).items()
                if int(v) // 10_000 % 1_000_000 < today
            }
        return self._known

    def _render(
        self,
        encounter: Encounter,
        day: date,
        known: dict[tuple[int, str], int],
        batch: _DayBatch,
        key: AnswerKey,
        drift: bool,
    ) -> None:
        rng = self.rng(day, encounter.encounter_uid)
        inst = self.institutions[encounter.org_code]
        tenant, org3 = tenant_id(inst.org_code), int(inst.org_code[-3:])
        person = self.world.people[encounter.resident_id]
        village = inst.org_type == "村卫生室"
        registered = _after(rng, encounter.start_at, 30, 600)
        patient_id = self._patient(rng, person, inst, day, registered, known, batch, key)

        batch.visits[tenant] += 1
        visit_id = int(f"{day:%y%m%d}") * 10**9 + org3 * 10**6 + batch.visits[tenant]
        batch.visit_of[encounter.encounter_uid] = visit_id
        key.encounter(str(visit_id), encounter.encounter_uid)
        # Village clinics run the outpatient module only: whatever happened there is a 门诊 visit.
        visit_type = "1" if village else VISIT_TYPE[encounter.kind]
        dept_code, dept_name = self._dept_local(encounter.department_code, encounter.department_name)
        if (tenant, dept_code) not in self._depts:
            batch.rows["sys_dept"].append(
                self._dept_row(inst, encounter.department_code, encounter.department_name, registered)
            )
            self._depts.add((tenant, dept_code))
        doctor_id, doctor_name = self.users.get(encounter.doctor_id, (None, None))
        visit = {
            "id": visit_id,
            "tenant_id": tenant,
            "patient_id": patient_id,
            "visit_type": visit_type,
            "dept_code": dept_code,
            "dept_name": dept_name,
            "doctor_id": doctor_id,
            "doctor_name": doctor_name,
            "visit_time": encounter.start_at,
            "remark": None,
            **_audit(registered),
        }
        if drift:
            employee = zlib.crc32(str(person.resident_id).encode()) % 10 < 2
            visit[DRIFT_COLUMN] = ("310" if employee else "390") if encounter.insured else None
        batch.rows["t_visit"].append(visit)

        diag_type = "2" if visit_type == "3" else "1"
        free_text = village and rng.random() < self.rates["village_free_text_diagnosis"]
        diagnosed = _after(rng, registered, 60, 900)
        diagnoses = []
        for n, diagnosis in enumerate(encounter.diagnoses, start=1):
            code: str | None = vendor_icd(diagnosis.icd_code)
            name = diagnosis.name
            if free_text and diagnosis.icd_code in TYPED_DIAGNOSES:
                code, name = None, (COLLOQUIAL.get(name, name) if rng.random() < 0.5 else name)
            diagnoses.append(
                {
                    "id": visit_id * 100 + n,
                    "tenant_id": tenant,
                    "visit_id": visit_id,
                    "diag_type": diag_type,
                    "main_flag": "1" if diagnosis.is_main else "0",
                    "sort_no": n,
                    "diag_code": code,
                    "diag_name": name,
                    "diag_desc": None,
                    **_audit(diagnosed),
                }
            )
        batch.rows["t_visit_diag"].extend(diagnoses)

        details = self._recipe(rng, encounter, visit, diagnosed, batch)
        self._labs_and_exams(rng, encounter, visit, diagnosed, batch)
        pay_type = "1" if encounter.insured else "2"
        if visit_type == "3":
            self._admission(rng, encounter, day, visit, diagnoses, pay_type, batch, key)
        else:
            batch.rows["t_charge"].extend(self._charges(encounter, visit, pay_type, _after(rng, diagnosed, 300, 1800)))
        self._inject_unknown_code(rng, diagnoses, details, key)
        if rng.random() < self.rates["duplicate_submission"]:
            batch.visits[tenant] += 1
            duplicate_id = int(f"{day:%y%m%d}") * 10**9 + org3 * 10**6 + batch.visits[tenant]
            again = _after(rng, registered, 1, 20)
            batch.rows["t_visit"].append({**visit, "id": duplicate_id, **_audit(again)})
            batch.rows["t_visit_diag"].extend(
                {**d, "id": duplicate_id * 100 + d["sort_no"], "visit_id": duplicate_id, **_audit(again)}
                for d in diagnoses
            )
            key.defect("t_visit", str(duplicate_id), "duplicate_submission", f"of {visit_id}")

    def _patient(
        self,
        rng: random.Random,
        person: Person,
        inst: Institution,
        day: date,
        at: datetime,
        known: dict[tuple[int, str], int],
        batch: _DayBatch,
        key: AnswerKey,
    ) -> int:
        """The tenant's local id of the resident: reused when known, else issued with a freshly typed identity."""
        pair = (person.resident_id, inst.org_code)
        if pair in batch.issued:
            return batch.issued[pair]
        previous = known.get(pair)
        if previous is not None and rng.random() >= self.rates["re_registration"]:
            return previous
        batch.patients[inst.org_code] += 1
        patient_id = int(inst.org_code[-3:]) * 10**10 + int(f"{day:%y%m%d}") * 10_000 + batch.patients[inst.org_code]
        batch.issued[pair] = patient_id
        key.patient(str(patient_id), person.resident_id, inst.org_code)
        if previous is not None:
            key.defect("t_patient", str(patient_id), "re_registration", f"also {previous}")
        recorded = recorded_identity(rng, person, self.identity_dirt)
        for defect, detail in recorded.defects:
            key.defect("t_patient", str(patient_id), defect, detail)
        sex = SEX.get(recorded.sex, "0")
        if rng.random() < self.rates["unknown_sex_code"]:
            sex = "0" if rng.random() < 0.75 else "9"
            key.defect("t_patient", str(patient_id), "unknown_sex_code", f"{recorded.sex}->{sex}")
        batch.rows["t_patient"].append(
            {
                "id": patient_id,
                "tenant_id": tenant_id(inst.org_code),
                "patient_name": recorded.name,
                "sex": sex,
                "birthday": recorded.birth_date,
                "id_card_type": "01" if recorded.id_number else None,
                "id_card": recorded.id_number,
                "mobile": recorded.phone,
                "address": recorded.address,
                "nation": NATION.get(person.ethnicity, "99"),
                **_audit(_ms(at - timedelta(seconds=5))),
            }
        )
        return patient_id

    def _recipe(
        self, rng: random.Random, encounter: Encounter, visit: dict[str, Any], at: datetime, batch: _DayBatch
    ) -> list[dict[str, Any]]:
        if not encounter.prescriptions:
            return []
        recipe_id = visit["id"] * 10 + 1
        written = _after(rng, at, 30, 300)
        recipe_type = (
            RECIPE_TYPE_EMERGENCY
            if visit["visit_type"] == "2"
            else RECIPE_TYPE_CHILD
            if visit["dept_name"] == "儿科"
            else RECIPE_TYPE_NORMAL
        )
        details = []
        for n, drug in enumerate(encounter.prescriptions, start=1):
            local = drug_code(drug.drug_code)
            if local not in self._drugs:
                batch.rows["t_drug_dict"].append(
                    self._drug_row(drug.drug_code, drug.name, drug.spec, drug.unit_price, written)
                )
                self._drugs.add(local)
            details.append(
                {
                    "id": recipe_id * 100 + n,
                    "tenant_id": visit["tenant_id"],
                    "recipe_id": recipe_id,
                    "drug_code": local,
                    "drug_name": drug.name,
                    "drug_spec": drug.spec,
                    "quantity": drug.quantity,
                    "unit_price": drug.unit_price,
                    "amount": round(drug.quantity * drug.unit_price, 2),
                    "frequency": rng.choice(FREQUENCIES),
                    **_audit(written),
                }
            )
        batch.rows["t_recipe"].append(
            {
                "id": recipe_id,
                "tenant_id": visit["tenant_id"],
                "visit_id": visit["id"],
                "patient_id": visit["patient_id"],
                "recipe_type": recipe_type,
                "doctor_id": visit["doctor_id"],
                "recipe_time": written,
                "total_amount": round(sum(d["amount"] for d in details), 2),
                **_audit(written),
            }
        )
        batch.rows["t_recipe_detail"].extend(details)
        return details

    def _labs_and_exams(
        self, rng: random.Random, encounter: Encounter, visit: dict[str, Any], at: datetime, batch: _DayBatch
    ) -> None:
        base = {"tenant_id": visit["tenant_id"], "visit_id": visit["id"], "patient_id": visit["patient_id"]}
        for n, lab in enumerate(encounter.labs, start=1):
            reported = _after(rng, at, 1800, 3 * 3600)
            flag = None
            if lab.abnormal:
                low = lab.reference_range.split("-")[0]
                flag = "L" if low.replace(".", "", 1).isdigit() and lab.value < float(low) else "H"
            item_code = LAB_ITEM.get(lab.loinc, "JY" + lab.loinc.replace("-", ""))
            batch.rows["t_lab"].append(
                {
                    "id": visit["id"] * 100 + n,
                    **base,
                    "item_code": item_code,
                    "item_name": lab.item_name,
                    "result_value": f"{lab.value:g}",
                    "unit": lab.unit,
                    "ref_range": lab.reference_range,
                    "abnormal_flag": flag,
                    "report_time": reported,
                    **_audit(reported),
                }
            )
        for n, exam in enumerate(encounter.exams, start=1):
            reported = _after(rng, at, 1200, 2 * 3600)
            batch.rows["t_exam"].append(
                {
                    "id": visit["id"] * 100 + n,
                    **base,
                    "exam_class": EXAM_CLASS.get(exam.modality, "99"),
                    "body_part": exam.body_part,
                    "exam_see": exam.finding,
                    "exam_result": exam.conclusion,
                    "report_time": reported,
                    **_audit(reported),
                }
            )

    def _charges(
        self, encounter: Encounter, visit: dict[str, Any], pay_type: str, at: datetime
    ) -> list[dict[str, Any]]:
        rows = []
        for n, charge in enumerate(encounter.charges, start=1):
            drug = charge.category == "药品"
            category = ("中成药" if charge.item_code.startswith("Z") else "西药") if drug else charge.category
            rows.append(
                {
                    "id": visit["id"] * 100 + n,
                    "tenant_id": visit["tenant_id"],
                    "visit_id": visit["id"],
                    "patient_id": visit["patient_id"],
                    "fee_code": FEE_CODE.get(category, "99"),
                    "item_code": drug_code(charge.item_code) if drug else charge.item_code,
                    "item_name": charge.item_name,
                    "amount": charge.amount_yuan,
                    "pay_type": pay_type,
                    "charge_time": at,
                    **_audit(at),
                }
            )
        return rows

    def _admission(
        self,
        rng: random.Random,
        encounter: Encounter,
        day: date,
        visit: dict[str, Any],
        diagnoses: list[dict[str, Any]],
        pay_type: str,
        batch: _DayBatch,
        key: AnswerKey,
    ) -> None:
        """The 在院 row now; discharge, operations and settled charges now if due today, else kept pending."""
        main = next((d for d in diagnoses if d["main_flag"] == "1"), diagnoses[0] if diagnoses else None)
        inpatient_id = visit["id"] * 10 + 3
        admitted = visit["gmt_create"]
        inpatient = {
            "id": inpatient_id,
            "tenant_id": visit["tenant_id"],
            "visit_id": visit["id"],
            "patient_id": visit["patient_id"],
            "inpatient_no": f"ZY{day:%y%m%d}{visit['id'] % 10**6:04d}",
            "dept_code": visit["dept_code"],
            "dept_name": visit["dept_name"],
            "bed_no": encounter.bed_no,
            "doctor_id": visit["doctor_id"],
            "in_time": encounter.start_at,
            "in_diag_code": main["diag_code"] if main else None,
            "in_diag_name": main["diag_name"] if main else None,
            "out_time": None,
            "out_status": None,
            "out_diag_code": None,
            "out_diag_name": None,
            "in_status": "1",
            **_audit(admitted),
        }
        batch.rows["t_inpatient"].append(inpatient)
        if encounter.end_at is None:
            return
        settled = _after(rng, encounter.end_at, 600, 3600)
        out_time, defect = encounter.end_at, None
        if rng.random() < self.rates["discharge_before_admission"]:
            out_time = encounter.end_at.replace(
                year=encounter.start_at.year, month=encounter.start_at.month, day=encounter.start_at.day
            ) - timedelta(days=rng.randint(1, 3))
            defect = f"out_time {out_time:%Y-%m-%d %H:%M} before in_time {encounter.start_at:%Y-%m-%d %H:%M}"
        discharge = {
            "id": inpatient_id,
            "out_time": out_time,
            "out_status": OUT_STATUS.get(encounter.discharge_status, "9"),
            "out_diag_code": inpatient["in_diag_code"],
            "out_diag_name": inpatient["in_diag_name"],
            "gmt_modified": settled,
        }
        rows = {
            "t_charge": self._charges(encounter, visit, pay_type, settled),
            "t_operation": [
                {
                    "id": visit["id"] * 100 + n,
                    "tenant_id": visit["tenant_id"],
                    "inpatient_id": inpatient_id,
                    "visit_id": visit["id"],
                    "oper_code": surgery.procedure_code,
                    "oper_name": surgery.name,
                    "oper_time": surgery.at,
                    "incision_level": INCISION.get(surgery.incision_class),
                    "heal_level": HEALING.get(surgery.healing_grade),
                    **_audit(settled),
                }
                for n, surgery in enumerate(encounter.surgeries, start=1)
            ],
        }
        if encounter.end_at.date() <= day:
            inpatient.update({**discharge, "in_status": "2"})
            for table, table_rows in rows.items():
                batch.rows[table].extend(table_rows)
            if defect:
                key.defect("t_inpatient", str(inpatient_id), "discharge_before_admission", defect)
            return
        batch.pending.append(
            {
                "s": self.source_system,
                "i": inpatient_id,
                "d": encounter.end_at.date(),
                "p": json.dumps(
                    {"discharge": discharge, "rows": rows, "defect": defect}, default=_json_default, ensure_ascii=False
                ),
            }
        )

    def _inject_unknown_code(
        self, rng: random.Random, diagnoses: list[dict[str, Any]], details: list[dict[str, Any]], key: AnswerKey
    ) -> None:
        """A tenant-made code outside the platform dictionaries: 自定义诊断 ZDY…, or a 自备药 ZB… drug."""
        if rng.random() >= self.rates["unknown_local_code"]:
            return
        targets = [
            ("t_visit_diag", d, "diag_code", f"ZDY{rng.randrange(1, 1000):03d}") for d in diagnoses if d["diag_code"]
        ]
        targets += [("t_recipe_detail", d, "drug_code", f"ZB{rng.randrange(1, 10_000):04d}") for d in details]
        if not targets:
            return
        table, row, column, code = rng.choice(targets)
        key.defect(table, str(row["id"]), "unknown_local_code", f"{column} {row[column]}->{code}")
        row[column] = code

    # --- changes to earlier days --------------------------------------------------------------------
    def _add_drift_column(self, conn: sa.Connection) -> bool:
        """The vendor upgrade: add the column if missing; True when it was added now."""
        exists = conn.execute(
            sa.text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = :s "
                "AND table_name = 't_visit' AND column_name = :c"
            ),
            {"s": self.schema, "c": DRIFT_COLUMN},
        ).first()
        if exists:
            return False
        conn.execute(sa.text(f"ALTER TABLE {self.schema}.t_visit ADD COLUMN {DRIFT_COLUMN} varchar(3)"))
        return True

    def _discharge_due(self, conn: sa.Connection, day: date, batch: _DayBatch, key: AnswerKey) -> int:
        """Apply discharges falling due by today to stays still 在院; their charges and operations join the batch."""
        with source_pg_engine(answer_key.DATABASE).connect() as truth:
            due = [
                r.payload
                for r in truth.execute(
                    sa.text(
                        f"SELECT payload FROM {PENDING_TABLE} WHERE source_system = :s AND discharge_day <= :d "
                        f"ORDER BY inpatient_id"
                    ),
                    {"s": self.source_system, "d": day},
                )
            ]
        if not due:
            return 0
        updates = [p["discharge"] for p in due]
        discharged = set(
            conn.execute(
                sa.text(f"""
            UPDATE {self.schema}.t_inpatient AS i
            SET out_time = d.out_time, out_status = d.out_status, out_diag_code = d.out_diag_code,
                out_diag_name = d.out_diag_name, in_status = '2', gmt_modified = d.gmt_modified
            FROM unnest(CAST(:ids AS bigint[]), CAST(:outs AS timestamp[]), CAST(:statuses AS text[]),
                        CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:ats AS timestamp[]))
                 AS d(id, out_time, out_status, out_diag_code, out_diag_name, gmt_modified)
            WHERE i.id = d.id AND i.in_status = '1' AND i.del_flag = '0'
            RETURNING i.id"""),
                {
                    "ids": [u["id"] for u in updates],
                    "outs": [u["out_time"] for u in updates],
                    "statuses": [u["out_status"] for u in updates],
                    "codes": [u["out_diag_code"] for u in updates],
                    "names": [u["out_diag_name"] for u in updates],
                    "ats": [u["gmt_modified"] for u in updates],
                },
            ).scalars()
        )
        for payload in due:
            inpatient_id = payload["discharge"]["id"]
            if inpatient_id not in discharged:
                continue
            for table, rows in payload["rows"].items():
                batch.rows[table].extend(rows)
            if payload["defect"]:
                key.defect("t_inpatient", str(inpatient_id), "discharge_before_admission", payload["defect"])
        return len(discharged)

    def _save_pending(self, pending: list[dict[str, Any]]) -> None:
        if pending:
            with source_pg_engine(answer_key.DATABASE).begin() as conn:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {PENDING_TABLE} VALUES (:s, :i, :d, CAST(:p AS jsonb)) ON CONFLICT DO NOTHING"
                    ),
                    pending,
                )

    def _apply_corrections(
        self, conn: sa.Connection, corrections: list[Correction], batch: _DayBatch, key: AnswerKey
    ) -> dict[str, int]:
        """作废/退费 soft-deletes a visit and everything under it; 诊断更正 re-saves the main diagnosis."""
        uids = [c.target_uid for c in corrections]
        local = {
            **answer_key.local_encounter_ids(self.source_system, uids),
            **{u: str(batch.visit_of[u]) for u in uids if u in batch.visit_of},
        }
        mine = [(int(local[c.target_uid]), c) for c in corrections if c.target_uid in local]
        counts: dict[str, int] = defaultdict(int)
        if not mine:
            return counts
        s = self.schema
        cancels = [(v, c) for v, c in mine if c.kind == "cancel"]
        updates = [(v, c) for v, c in mine if c.kind == "update"]
        values = "unnest(CAST(:v AS bigint[]), CAST(:a AS timestamp[]), CAST(:r AS text[])) AS c(v, at, reason)"
        if cancels:
            params = _correction_params(cancels)
            counts["t_visit"] += conn.execute(
                sa.text(
                    f"UPDATE {s}.t_visit t SET del_flag = '1', remark = c.reason, gmt_modified = c.at FROM {values} "
                    f"WHERE t.id = c.v AND t.del_flag = '0'"
                ),
                params,
            ).rowcount
            for table in VISIT_CHILDREN:
                counts[table] += conn.execute(
                    sa.text(
                        f"UPDATE {s}.{table} t SET del_flag = '1', gmt_modified = c.at FROM {values} "
                        f"WHERE t.visit_id = c.v AND t.del_flag = '0'"
                    ),
                    params,
                ).rowcount
            counts["t_recipe_detail"] += conn.execute(
                sa.text(
                    f"UPDATE {s}.t_recipe_detail t SET del_flag = '1', gmt_modified = c.at FROM {values} "
                    f"WHERE t.recipe_id = c.v * 10 + 1 AND t.del_flag = '0'"
                ),
                params,
            ).rowcount
        if updates:
            params = _correction_params(updates)
            counts["t_visit"] += conn.execute(
                sa.text(
                    f"UPDATE {s}.t_visit t SET remark = c.reason, gmt_modified = c.at FROM {values} "
                    f"WHERE t.id = c.v AND t.del_flag = '0'"
                ),
                params,
            ).rowcount
            counts["t_visit_diag"] += conn.execute(
                sa.text(
                    f"UPDATE {s}.t_visit_diag t SET diag_desc = c.reason, gmt_modified = c.at FROM {values} "
                    f"WHERE t.visit_id = c.v AND t.main_flag = '1' AND t.del_flag = '0'"
                ),
                params,
            ).rowcount
        for visit_id, correction in mine:
            key.defect(
                "t_visit",
                str(visit_id),
                f"correction_{correction.kind}",
                f"{correction.reason} at {correction.at:%Y-%m-%d %H:%M:%S}",
            )
        return counts


def _correction_params(pairs: list) -> dict[str, list]:
    """(visit id, correction) pairs as the parallel arrays the unnest() in the correction UPDATEs reads."""
    return {"v": [v for v, _ in pairs], "a": [c.at for _, c in pairs], "r": [c.reason for _, c in pairs]}
