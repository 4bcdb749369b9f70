"""The simulated county's ground truth: institutions, people and what happens to them each day.

The activity engine (simulator/activity.py) produces these canonical, vendor-neutral events; every member
system (simulator/systems/*) renders the events of its own institutions into its own schema, local codes,
transport and dirt. Nothing here is a source system: it is what really happened, and the answer key is
derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class Institution:
    org_code: str
    name: str
    level: str  # 二级甲等 / 二级 / 一级 / 未定级
    org_type: str  # 综合医院 / 中医医院 / 妇幼保健院 / 民营综合医院 / 乡镇卫生院 / 社区卫生服务中心 / 村卫生室
    township: str
    parent_code: str  # village clinic -> its township centre; others: ""
    open_beds: int
    source_system: str  # which member system records its activity


@dataclass(frozen=True, slots=True)
class Staff:
    staff_id: str
    org_code: str
    name: str
    role: str  # 医师 / 护士 / 药师 / 技师
    title: str  # 主任医师, 副主任医师, 主治医师, 医师, 主管护师, 护师, 药师, 技师 ...
    licence_no: str
    department_code: str


@dataclass(slots=True)
class Person:
    resident_id: int
    household_id: int
    name: str
    sex: int  # GB/T 2261.1: 1 male, 2 female
    birth_date: date
    ethnicity: str  # 汉族 / 回族
    id_number: str  # the true, valid 18-digit number
    phone: str
    insurance_no: str  # 医保 number
    township: str
    village: str
    address: str
    hypertension: bool = False
    diabetes: bool = False
    death_date: date | None = None
    twin_of: int | None = None  # resident id of a twin sibling (never the same person)
    namesake_of: int | None = None  # a different person with the same name and birth date


# A day's events (below) are plain dataclasses, without slots: they are pickled to the writer processes every
# day, and slotted dataclasses pickle field by field in Python, several times slower. The world's long-lived
# objects above keep their slots (650,000 residents at county scale).
@dataclass(frozen=True)
class Diagnosis:
    icd_code: str  # ICD-10 国家临床版 2.0
    name: str
    is_main: bool


@dataclass(frozen=True)
class TcmTreatment:
    """A 中医诊断 (病名 + 证候, GB/T 15657 codes) and, when prescribed, its 中药饮片 (simulator/tcm.py)."""

    disease_code: str
    disease_name: str
    syndrome_code: str
    syndrome_name: str
    formula: str = ""  # 方剂 of the 中药饮片 prescription ("" when none was prescribed)
    doses: int = 0  # 剂数
    herbs: tuple[tuple[str, int], ...] = ()  # (herb, grams per 剂)


@dataclass(frozen=True)
class Prescription:
    drug_code: str  # national drug code (our truth code)
    atc: str
    name: str
    spec: str
    quantity: int
    unit_price: float


@dataclass(frozen=True)
class LabResult:
    loinc: str
    item_name: str
    value: float
    unit: str
    reference_range: str
    abnormal: bool


@dataclass(frozen=True)
class ExamReport:
    modality: str  # DR / CT / 超声 / 心电图
    body_part: str
    finding: str
    conclusion: str


@dataclass(frozen=True)
class Charge:
    item_code: str
    item_name: str
    category: str  # 药品 / 检查 / 化验 / 治疗 / 床位 / 手术 / 挂号
    amount_yuan: float


@dataclass(frozen=True)
class Surgery:
    procedure_code: str  # 手术操作分类代码国家临床版 3.0
    name: str
    at: datetime
    incision_class: str  # I / II / III
    healing_grade: str  # 甲 / 乙 / 丙


@dataclass
class Encounter:
    encounter_uid: str  # truth id, unique in the county
    resident_id: int
    org_code: str
    kind: str  # outpatient / emergency / inpatient
    department_code: str
    department_name: str
    doctor_id: str
    start_at: datetime  # registration / admission time
    end_at: datetime | None = None  # discharge time (inpatient)
    bed_no: str = ""
    discharge_status: str = ""  # 治愈 / 好转 / 未愈 / 死亡 / 其他
    diagnoses: list[Diagnosis] = field(default_factory=list)
    prescriptions: list[Prescription] = field(default_factory=list)
    labs: list[LabResult] = field(default_factory=list)
    exams: list[ExamReport] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    surgeries: list[Surgery] = field(default_factory=list)
    insured: bool = True
    tcm: TcmTreatment | None = None  # 中医诊断 and 中药饮片 (中医医院 only)

    @property
    def total_yuan(self) -> float:
        return round(sum(c.amount_yuan for c in self.charges), 2)


@dataclass(frozen=True)
class Referral:
    referral_uid: str
    resident_id: int
    from_org: str
    to_org: str
    direction: str  # up / down
    at: datetime
    icd_code: str
    reason: str
    refused: bool = False  # 拒收: the receiving institution turned it down (simulator/activity.py)


@dataclass(frozen=True)
class PublicHealthService:
    service_uid: str
    resident_id: int
    org_code: str  # township/community centre (or village clinic acting for it)
    # filing / htn_followup / dm_followup / elderly_check / child_check / maternal_followup / contract
    kind: str
    at: datetime
    doctor_id: str
    values: dict[str, float | str] = field(default_factory=dict)  # sbp, dbp, fbg, weight_kg, ...


@dataclass(frozen=True)
class Birth:
    birth_uid: str
    mother_id: int
    child_id: int  # the newborn joins the population as a new Person
    org_code: str
    at: datetime
    weight_g: int
    sex: int


@dataclass(frozen=True)
class Death:
    resident_id: int
    at: datetime
    cause_icd: str
    place: str  # 医院 / 家中


@dataclass(frozen=True)
class InsuranceSettlement:
    settlement_uid: str
    resident_id: int
    org_code: str  # in-county institution, or "" when out of county
    out_of_county_hospital: str  # e.g. 郑州大学第一附属医院; "" when in county
    kind: str  # outpatient / inpatient
    admitted_on: date | None
    discharged_on: date | None
    settled_at: datetime
    total_yuan: float
    fund_paid_yuan: float
    encounter_uid: str  # the in-county encounter settled ("" out of county)


@dataclass(frozen=True)
class Correction:
    """A later change to an earlier event: an update (e.g. corrected diagnosis) or a cancellation (退费/作废)."""

    target_uid: str  # encounter_uid (or service/referral uid)
    kind: str  # update / cancel
    at: datetime  # commit time of the change
    reason: str


@dataclass
class DayActivity:
    day: date
    encounters: list[Encounter] = field(default_factory=list)
    referrals: list[Referral] = field(default_factory=list)
    services: list[PublicHealthService] = field(default_factory=list)
    births: list[Birth] = field(default_factory=list)
    deaths: list[Death] = field(default_factory=list)
    settlements: list[InsuranceSettlement] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    new_people: list[Person] = field(default_factory=list)  # newborns and in-migrants appearing today
