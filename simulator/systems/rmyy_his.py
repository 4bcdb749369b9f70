"""荥阳市人民医院 HIS/LIS/PACS/EMR on MariaDB (database ``rmyy_his``), as its vendor built it.

Upper-case pinyin-abbreviation tables and columns, the vendor's own codes (sex '男'/'女', department '101',
diagnosis 'I10.X01', drug 'YP010001', lab item 'GLU', 出院情况 '1'..'9', 切口 'Ⅱ'), and ``XGSJ`` (修改时间)
on every row = the real commit time of the change, which watermark and binlog collection both follow.
Manual: docs/simulator/rmyy_his.md. GH_BRJBXX, MZ_JZJL and MZ_ZDJL keep the columns of the foundation
slice because the platform's pipeline already reads them; new columns come last.

Every change an encounter causes is an ``_Op`` stamped with its commit time. Ops falling due today run in the
day's single transaction (bulk INSERT IGNORE with deterministic keys, then updates, 作废 and 更正 in commit
order); later ones (discharges, daily bed charges, 病案首页, 补录 visits, overnight work) wait in the
simulator-only database ``<database>_sim`` (table PENDING_OP) — written in the same transaction, never read
by the pipeline — so no future fact reaches the source early and a crashed day re-runs without duplicates.
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

from simulator import answer_key
from simulator.answer_key import AnswerKey
from simulator.connections import mariadb_engine, source_pg_engine
from simulator.dirt import IdentityDirt, recorded_identity
from simulator.events import Charge, Correction, DayActivity, Diagnosis, Encounter, LabResult, Person, Staff
from simulator.systems.base import MemberSystem
from simulator.world import World

ORG_CODE = "410182001"

# --- the vendor's local code lists ------------------------------------------------------------------------
SEX = {1: "男", 2: "女"}  # anything else is stored as '未知'
VISIT_TYPE = {"outpatient": "门诊", "emergency": "急诊"}
PATIENT_SOURCE = {"outpatient": "1", "emergency": "2", "inpatient": "3"}  # BRLY 病人来源
FEE_CLASS_SELF, FEE_CLASS_RESIDENT, FEE_CLASS_EMPLOYEE = "01", "02", "03"  # FB 费别: 自费/居民医保/职工医保
DISCHARGE_STATE = {"治愈": "1", "好转": "2", "未愈": "3", "死亡": "4", "其他": "9"}  # CYQK 出院情况
LEAVE_MODE_DEATH, LEAVE_MODE_ORDERED = "5", "1"  # LYFS 离院方式 (首页)
INCISION = {"I": "Ⅰ", "II": "Ⅱ", "III": "Ⅲ"}  # QKDJ: Roman numerals, not 'I'
ADMIT_ROUTE = (("1", 0.35), ("2", 0.60), ("9", 0.05))  # RYTJ 急诊/门诊/其他
ADMISSION_IN, ADMISSION_OUT, ADMISSION_VOID = "1", "2", "9"  # ZY_RYDJ.ZT 在院/出院/作废
CHARGE_PAID, CHARGE_REFUNDED = "1", "2"  # MZ_SF.SFZT 已收费/已退费
LAB_REQUESTED, LAB_REPORTED = "1", "4"  # JY_SQD.ZT 已申请/已审核
DIAG_ADMISSION, DIAG_DISCHARGE = "2", "3"  # ZY_ZDJL.ZDLB 入院/出院诊断
# FYLB 费用类别 by the event's charge category (drugs split 西药/中成药 by the national code's first letter).
FEE_TYPE = {
    "西药": "01",
    "中成药": "02",
    "检查": "04",
    "化验": "05",
    "治疗": "06",
    "手术": "07",
    "床位": "08",
    "挂号": "09",
}
STAFF_GROUP = {"医师": ("医生", 1000), "护士": ("护士", 2000), "药师": ("药剂", 3000), "技师": ("医技", 4000)}

# Department name (the events') -> the vendor's department code and name.
DEPARTMENTS: dict[str, tuple[str, str]] = {
    "内科": ("101", "内科"),
    "外科": ("201", "外科"),
    "儿科": ("301", "儿科"),
    "妇产科": ("401", "妇产科"),
    "眼科": ("501", "眼科"),
    "口腔科": ("502", "口腔科"),
    "皮肤科": ("503", "皮肤科"),
    "急诊科": ("601", "急诊医学科"),
    "全科": ("701", "全科医学科"),
    "中医科": ("801", "中医科"),
}
# Wards (病区) with their share of the open beds; beds are numbered hospital-wide ('001'...) by ward in order.
WARDS: list[tuple[str, str, int]] = [
    ("B01", "内一病区（心血管）", 70),
    ("B02", "内二病区（呼吸）", 60),
    ("B03", "内三病区（消化内分泌）", 60),
    ("B04", "神经内科病区", 50),
    ("B05", "外一病区（普外）", 60),
    ("B06", "外二病区（骨科）", 60),
    ("B07", "外三病区（泌尿胸外）", 40),
    ("B08", "妇产科病区", 50),
    ("B09", "儿科病区", 50),
    ("B10", "重症医学科", 12),
    ("B11", "中医康复病区", 40),
    ("B12", "五官科病区", 20),
    ("B13", "感染性疾病科病区", 28),
]
DEPARTMENT_WARD = {
    "101": "B02",
    "201": "B05",
    "301": "B09",
    "401": "B08",
    "501": "B12",
    "502": "B12",
    "503": "B12",
    "601": "B10",
    "701": "B03",
    "801": "B11",
}
# ICD-10 国家临床版 2.0 (truth) -> 本院疾病字典 code and name.
DIAGNOSES: dict[str, tuple[str, str]] = {
    "I10.x00": ("I10.X01", "高血压病"),
    "E11.900": ("E11.901", "2型糖尿病"),
    "J06.900": ("J06.901", "上呼吸道感染"),
    "J20.900": ("J20.901", "急性支气管炎"),
    "J18.900": ("J18.901", "肺炎"),
    "K29.700": ("K29.701", "胃炎"),
    "M54.500": ("M54.501", "腰痛"),
    "I25.100": ("I25.101", "冠状动脉粥样硬化性心脏病"),
    "N39.000": ("N39.001", "尿路感染"),
    "K52.900": ("K52.901", "急性胃肠炎"),
    "M17.900": ("M17.901", "膝关节骨关节病"),
    "L30.900": ("L30.901", "皮炎"),
    "H10.900": ("H10.901", "结膜炎"),
    "K02.900": ("K02.901", "龋齿"),
    "I63.900": ("I63.901", "脑梗死"),
    "R51.x00": ("R51.X01", "头痛"),
    "O80.000": ("O80.001", "单胎顺产"),
    "K35.800": ("K35.801", "急性阑尾炎"),
    "S72.000": ("S72.001", "股骨颈骨折"),
    "J44.100": ("J44.101", "慢性阻塞性肺病急性加重"),
    "I50.900": ("I50.901", "心力衰竭"),
    "K80.200": ("K80.201", "胆囊结石"),
}
# What doctors type outside the dictionary: a 自定义诊断 (ZDY code) or a code of the retired dictionary version.
UNKNOWN_SUFFIXES = ("待查", "？", "（初诊）", "可能")
# National drug code (truth) -> 本院药品字典: code, name, spec, unit, 药品类别.
DRUGS: dict[str, tuple[str, str, str, str, str]] = {
    "XC08CAA033A001010100223": ("YP010001", "苯磺酸氨氯地平片(络活喜)", "5mg*28片", "盒", "西药"),
    "XC09AAD082A001010100433": ("YP010002", "马来酸依那普利片", "10mg*16片", "盒", "西药"),
    "XA10BAE064A001010100321": ("YP010003", "盐酸二甲双胍片", "0.5g*48片", "盒", "西药"),
    "ZA01AAL0130010102050": ("YP020001", "连花清瘟胶囊", "0.35g*24粒", "盒", "中成药"),
    "XJ01CAA021E001010100987": ("YP010004", "阿莫西林胶囊", "0.25g*24粒", "盒", "西药"),
    "XR05CBA046B001010100765": ("YP010005", "盐酸氨溴索片", "30mg*20片", "盒", "西药"),
    "XJ01DDT160B002010100543": ("YP010006", "注射用头孢曲松钠", "1g", "支", "西药"),
    "XA02BCO008E001010100654": ("YP010007", "奥美拉唑肠溶胶囊", "20mg*14粒", "盒", "西药"),
}
FREQUENCIES = ("qd", "bid", "tid")
# LOINC (truth) -> LIS item: code, name, unit as the LIS prints it, 检验组合, 标本.
LAB_ITEMS: dict[str, tuple[str, str, str, str, str]] = {
    "6690-2": ("WBC", "白细胞", "×10^9/L", "血常规", "全血"),
    "718-7": ("HGB", "血红蛋白", "g/L", "血常规", "全血"),
    "2345-7": ("GLU", "葡萄糖", "mmol/L", "生化全项", "血清"),
    "2160-0": ("Cr", "肌酐", "μmol/L", "生化全项", "血清"),
    "1742-6": ("ALT", "谷丙转氨酶", "U/L", "生化全项", "血清"),
}
# Exam modality (truth) -> PACS 检查类别 code and the item name pattern.
EXAM_CLASS: dict[str, tuple[str, str]] = {
    "DR": ("FS", "{part}DR摄片"),
    "CT": ("CT", "{part}CT平扫"),
    "超声": ("BC", "{part}彩超"),
    "心电图": ("XD", "常规十二导联心电图"),
}
ANAESTHESIA = {"47.0901": "全身麻醉", "51.2301": "全身麻醉", "79.3501": "腰硬联合麻醉"}

DRIFT_COLUMN = "YBJZLSH"  # 医保就诊流水号, added to MZ_JZJL by the 医保 interface upgrade
DEFAULTS: dict[str, float] = {
    "re_registration": 0.02,  # per visit of a known patient: registered again under a new BRID
    "duplicate_submission": 0.005,  # per outpatient visit: saved twice (a second MZ_JZJL row)
    "unknown_local_code": 0.02,  # per diagnosis row: a code outside 本院疾病字典
    "discharge_before_admission": 0.003,  # per discharge: CYSJ typed before RYSJ
    "late_submission": 0.01,  # per outpatient visit: entered (补录) after 24:00 of the next day
}
DEFAULT_DRIFT_DAY = date(2027, 1, 1)

_PATIENT_COLUMNS = """BRID VARCHAR(16) PRIMARY KEY, XM VARCHAR(32) NOT NULL, XB VARCHAR(4), CSRQ DATE,
        SFZH VARCHAR(18), LXDH VARCHAR(20), JTZZ VARCHAR(128), JDSJ DATETIME NOT NULL,
        XGSJ DATETIME(3) NOT NULL"""
_VISIT_COLUMNS = """JZID VARCHAR(20) PRIMARY KEY, BRID VARCHAR(16) NOT NULL, JZLX VARCHAR(4) NOT NULL,
        KSDM VARCHAR(8), KSMC VARCHAR(32), YSXM VARCHAR(32), JZSJ DATETIME NOT NULL,
        XGSJ DATETIME(3) NOT NULL"""
_DIAGNOSIS_COLUMNS = """ZDID VARCHAR(24) PRIMARY KEY, JZID VARCHAR(20) NOT NULL, ZDDM VARCHAR(16), ZDMC VARCHAR(64),
        ZZDBZ TINYINT NOT NULL DEFAULT 0, XGSJ DATETIME(3) NOT NULL"""
XGSJ = "XGSJ DATETIME(3) NOT NULL"
# Table -> column definitions (and keys). Order = insert order of a day.
TABLES: dict[str, str] = {
    "ZD_KSZD": f"""KSDM VARCHAR(8) PRIMARY KEY, KSMC VARCHAR(32) NOT NULL, KSLB VARCHAR(4) NOT NULL,
        YXBZ TINYINT NOT NULL DEFAULT 1, {XGSJ}""",
    "ZD_ZGXX": f"""GH VARCHAR(8) PRIMARY KEY, XM VARCHAR(32) NOT NULL, ZGLB VARCHAR(4) NOT NULL, ZC VARCHAR(16),
        ZYZSBM VARCHAR(32), YXBZ TINYINT NOT NULL DEFAULT 1, {XGSJ}""",
    "ZD_JBZD": f"""JBBM VARCHAR(16) PRIMARY KEY, JBMC VARCHAR(64) NOT NULL, GBBM VARCHAR(8),
        YXBZ TINYINT NOT NULL DEFAULT 1, {XGSJ}""",
    "YK_YPZD": f"""YPDM VARCHAR(12) PRIMARY KEY, YPMC VARCHAR(64) NOT NULL, GG VARCHAR(32), DW VARCHAR(8),
        LSJ DECIMAL(10,4), YPLB VARCHAR(8), YXBZ TINYINT NOT NULL DEFAULT 1, {XGSJ}""",
    "JY_XMZD": f"""XMDM VARCHAR(16) PRIMARY KEY, XMMC VARCHAR(32) NOT NULL, DW VARCHAR(16), CKFW VARCHAR(32),
        JYZH VARCHAR(32), BBLX VARCHAR(8), {XGSJ}""",
    "ZY_CWXX": f"""CWH VARCHAR(10) PRIMARY KEY, BQDM VARCHAR(8) NOT NULL, BQMC VARCHAR(32), CWLX CHAR(1) NOT NULL,
        KFBZ TINYINT NOT NULL, CWZT CHAR(1) NOT NULL, ZYID VARCHAR(20), {XGSJ}""",
    "GH_BRJBXX": f"""{_PATIENT_COLUMNS}, MZ VARCHAR(16), YBKH VARCHAR(32)""",
    "MZ_JZJL": f"""{_VISIT_COLUMNS}, FB CHAR(2), CFZBZ CHAR(1), YSGH VARCHAR(8),
        KEY ix_jzsj (JZSJ), KEY ix_brid (BRID)""",
    "MZ_ZDJL": f"""{_DIAGNOSIS_COLUMNS}, KEY ix_jzid (JZID)""",
    "MZ_CF": f"""CFID VARCHAR(20) PRIMARY KEY, JZID VARCHAR(20) NOT NULL, BRID VARCHAR(16) NOT NULL,
        CFLX CHAR(1) NOT NULL, KSDM VARCHAR(8), YSGH VARCHAR(8), KFSJ DATETIME NOT NULL, CFJE DECIMAL(12,2) NOT NULL,
        {XGSJ}, KEY ix_jzid (JZID)""",
    "MZ_CFMX": f"""MXID VARCHAR(24) PRIMARY KEY, CFID VARCHAR(20) NOT NULL, YPDM VARCHAR(12) NOT NULL,
        YPMC VARCHAR(64), GG VARCHAR(32), SL DECIMAL(10,2) NOT NULL, DW VARCHAR(8), DJ DECIMAL(10,4) NOT NULL,
        JE DECIMAL(12,2) NOT NULL, YFPC VARCHAR(8), {XGSJ}, KEY ix_cfid (CFID)""",
    "MZ_SF": f"""SFID VARCHAR(24) PRIMARY KEY, JZID VARCHAR(20) NOT NULL, BRID VARCHAR(16) NOT NULL,
        SFXMDM VARCHAR(32) NOT NULL, SFXMMC VARCHAR(64), FYLB CHAR(2) NOT NULL, SL DECIMAL(10,2) NOT NULL,
        DJ DECIMAL(10,4) NOT NULL, JE DECIMAL(12,2) NOT NULL, SFSJ DATETIME NOT NULL, SFZT CHAR(1) NOT NULL,
        TFSJ DATETIME, {XGSJ}, KEY ix_jzid (JZID)""",
    "ZY_RYDJ": f"""ZYID VARCHAR(20) PRIMARY KEY, BRID VARCHAR(16) NOT NULL, RYSJ DATETIME NOT NULL,
        RYKSDM VARCHAR(8), RYKSMC VARCHAR(32), BQDM VARCHAR(8), CWH VARCHAR(10), ZZYS VARCHAR(32), RYTJ CHAR(1),
        RYZDDM VARCHAR(16), RYZDMC VARCHAR(64), FB CHAR(2), CYSJ DATETIME, CYKSDM VARCHAR(8), ZT CHAR(1) NOT NULL,
        {XGSJ}, KEY ix_brid (BRID)""",
    "ZY_ZDJL": f"""ZDID VARCHAR(24) PRIMARY KEY, ZYID VARCHAR(20) NOT NULL, ZDLB CHAR(1) NOT NULL, ZDDM VARCHAR(16),
        ZDMC VARCHAR(64), ZZDBZ TINYINT NOT NULL DEFAULT 0, {XGSJ}, KEY ix_zyid (ZYID)""",
    "ZY_YZJL": f"""YZID VARCHAR(24) PRIMARY KEY, ZYID VARCHAR(20) NOT NULL, YZLB CHAR(1) NOT NULL,
        YPDM VARCHAR(12), YZMC VARCHAR(64), GG VARCHAR(32), SL DECIMAL(10,2), DW VARCHAR(8), PC VARCHAR(8),
        KSSJ DATETIME NOT NULL, TZSJ DATETIME, KZYS VARCHAR(32), {XGSJ}, KEY ix_zyid (ZYID)""",
    "ZY_FYMX": f"""FYID VARCHAR(28) PRIMARY KEY, ZYID VARCHAR(20) NOT NULL, BRID VARCHAR(16) NOT NULL,
        XMDM VARCHAR(32) NOT NULL, XMMC VARCHAR(64), FYLB CHAR(2) NOT NULL, SL DECIMAL(10,2) NOT NULL,
        DJ DECIMAL(10,4) NOT NULL, JE DECIMAL(12,2) NOT NULL, FSSJ DATETIME NOT NULL, {XGSJ}, KEY ix_zyid (ZYID)""",
    "SS_SSJL": f"""SSID VARCHAR(24) PRIMARY KEY, ZYID VARCHAR(20) NOT NULL, BRID VARCHAR(16) NOT NULL,
        SSDM VARCHAR(16) NOT NULL, SSMC VARCHAR(64), SSKSSJ DATETIME NOT NULL, SSJSSJ DATETIME, SSYS VARCHAR(32),
        MZFS VARCHAR(16), QKDJ VARCHAR(4), YHDJ VARCHAR(4), {XGSJ}, KEY ix_zyid (ZYID)""",
    "JY_SQD": f"""SQDH VARCHAR(24) PRIMARY KEY, BRLY CHAR(1) NOT NULL, JZH VARCHAR(20) NOT NULL,
        BRID VARCHAR(16) NOT NULL, JYZH VARCHAR(32), BBLX VARCHAR(8), SQKS VARCHAR(8), SQYS VARCHAR(32),
        SQSJ DATETIME NOT NULL, CJSJ DATETIME, BGSJ DATETIME, ZT CHAR(1) NOT NULL, {XGSJ}, KEY ix_jzh (JZH)""",
    "JY_JG": f"""JGID VARCHAR(28) PRIMARY KEY, SQDH VARCHAR(24) NOT NULL, XMDM VARCHAR(16) NOT NULL,
        XMMC VARCHAR(32), JG VARCHAR(32), DW VARCHAR(16), CKFW VARCHAR(32), YCBZ VARCHAR(2), BGSJ DATETIME NOT NULL,
        {XGSJ}, KEY ix_sqdh (SQDH)""",
    "JC_BG": f"""BGID VARCHAR(24) PRIMARY KEY, BRLY CHAR(1) NOT NULL, JZH VARCHAR(20) NOT NULL,
        BRID VARCHAR(16) NOT NULL, JCLB VARCHAR(4), JCXM VARCHAR(64), JCBW VARCHAR(32), JCSJ DATETIME NOT NULL,
        YXSJ TEXT, ZDYJ TEXT, BGYS VARCHAR(32), BGSJ DATETIME NOT NULL, {XGSJ}, KEY ix_jzh (JZH)""",
    "ZY_CYJL": f"""ZYID VARCHAR(20) PRIMARY KEY, BRID VARCHAR(16) NOT NULL, RYSJ DATETIME NOT NULL,
        CYSJ DATETIME NOT NULL, CYKSDM VARCHAR(8), CYKSMC VARCHAR(32), CYQK CHAR(1), CYZDDM VARCHAR(16),
        CYZDMC VARCHAR(64), ZYTS INT, ZYYS VARCHAR(32), {XGSJ}""",
    "BL_SYXX": f"""ZYID VARCHAR(20) PRIMARY KEY, BAH VARCHAR(16) NOT NULL, BRID VARCHAR(16) NOT NULL,
        XM VARCHAR(32), XB VARCHAR(4), CSRQ DATE, NL INT, SFZH VARCHAR(18), XZZ VARCHAR(128), RYSJ DATETIME NOT NULL,
        CYSJ DATETIME NOT NULL, SJZYTS INT, RYKS VARCHAR(32), CYKS VARCHAR(32), RYTJ CHAR(1), ZYZDDM VARCHAR(16),
        ZYZDMC VARCHAR(64), QTZDDM1 VARCHAR(16), QTZDMC1 VARCHAR(64), QTZDDM2 VARCHAR(16), QTZDMC2 VARCHAR(64),
        SSCZDM VARCHAR(16), SSCZMC VARCHAR(64), SSCZRQ DATETIME, QKYH VARCHAR(8), LYFS CHAR(1),
        ZFY DECIMAL(12,2), ZZYS VARCHAR(32), {XGSJ}""",
}
TABLE_ORDER = {table: n for n, table in enumerate(TABLES)}
PENDING_DDL = """CREATE TABLE IF NOT EXISTS PENDING_OP (
    DUE_DAY DATE NOT NULL, OP_ID VARCHAR(64) NOT NULL, REF VARCHAR(24) NOT NULL, AT DATETIME(3) NOT NULL,
    PAYLOAD LONGTEXT NOT NULL, PRIMARY KEY (DUE_DAY, OP_ID), KEY ix_ref (REF), KEY ix_op (OP_ID))
    DEFAULT CHARSET=utf8mb4"""


def ddl(table: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table} ({TABLES[table]}, KEY ix_xgsj (XGSJ)) DEFAULT CHARSET=utf8mb4"


def _crc(text: str, modulo: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % modulo


def local_diagnosis(icd_code: str, name: str) -> tuple[str, str]:
    """The 疾病字典 entry of a truth diagnosis (codes the dictionary lacks are added as ICD upper case)."""
    return DIAGNOSES.get(icd_code, (icd_code.upper(), name))


def local_drug(drug_code: str, name: str, spec: str) -> tuple[str, str, str, str, str]:
    """The 药品字典 entry (code, name, spec, unit, class) of a national drug code."""
    if drug_code in DRUGS:
        return DRUGS[drug_code]
    kind = "中成药" if drug_code.startswith("Z") else "西药"
    return f"YP9{_crc(drug_code, 100_000):05d}", name, spec, "盒", kind


def local_lab(lab: LabResult) -> tuple[str, str, str, str, str]:
    """The LIS item (code, name, unit, 检验组合, 标本) of a LOINC-coded result."""
    return LAB_ITEMS.get(lab.loinc, (f"JY{_crc(lab.loinc, 10_000):04d}", lab.item_name, lab.unit, "其他", "血清"))


def local_department(name: str) -> tuple[str, str]:
    return DEPARTMENTS.get(name, (f"9{_crc(name, 100):02d}", name))


def abnormal_flag(value: float, reference_range: str) -> str:
    """'H' above, 'L' below the reference range ('' inside it or when the range cannot be read)."""
    try:
        low, high = (float(part) for part in reference_range.split("-", 1))
    except ValueError:
        return ""
    return "H" if value > high else "L" if value < low else ""


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _after(rng: random.Random, at: datetime, low_s: int, high_s: int) -> datetime:
    return _ms(at + timedelta(seconds=rng.randrange(low_s, high_s), milliseconds=rng.randrange(1000)))


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time())


@dataclass(slots=True)
class _Op:
    """One committed change: an insert, a guarded update, or a correction (作废 / 更正) run at ``at``."""

    at: datetime
    op_id: str  # deterministic: the same op rendered twice is stored once
    ref: str  # local encounter id it belongs to ('' for dictionary rows)
    kind: str  # insert / update / cancel / fix
    table: str
    row: dict[str, Any]  # insert: the row; update: SET values; cancel/fix: parameters
    where: dict[str, Any] = field(default_factory=dict)
    # Answer-key defects this row carries, logged only when it is committed (a voided stay never discharges).
    defects: list[tuple[str, str, str, str]] = field(default_factory=list)

    def payload(self) -> str:
        return json.dumps(
            {
                "op_id": self.op_id,
                "ref": self.ref,
                "kind": self.kind,
                "table": self.table,
                "row": self.row,
                "where": self.where,
                "defects": self.defects,
            },
            ensure_ascii=False,
            default=str,
        )

    @classmethod
    def load(cls, at: datetime, payload: str) -> _Op:
        data = json.loads(payload)
        return cls(
            at,
            data["op_id"],
            data["ref"],
            data["kind"],
            data["table"],
            data["row"],
            data["where"],
            [tuple(d) for d in data["defects"]],
        )


@dataclass
class _Day:
    """What one day renders: ops, answer-key entries, and today's local ids per encounter."""

    day: date
    key: AnswerKey
    ops: list[_Op] = field(default_factory=list)
    local_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)  # BRID -> its GH_BRJBXX row
    known: dict[tuple[int, str], str] = field(default_factory=dict)  # (resident, org) -> BRID after today

    def insert(
        self,
        table: str,
        pk: str,
        at: datetime,
        ref: str,
        row: dict[str, Any],
        defects: list[tuple[str, str, str, str]] | None = None,
    ) -> _Op:
        op = _Op(at, f"I:{table}:{pk}", ref, "insert", table, {**row, "XGSJ": at}, defects=defects or [])
        self.ops.append(op)
        return op

    def update(
        self, table: str, tag: str, at: datetime, ref: str, values: dict[str, Any], where: dict[str, Any]
    ) -> None:
        key = ":".join(str(v) for v in where.values())
        self.ops.append(_Op(at, f"U:{table}:{key}:{tag}:{ref}", ref, "update", table, {**values, "XGSJ": at}, where))


class RmyyHis(MemberSystem):
    """Renders the events of 荥阳市人民医院 into the vendor's MariaDB schema, one transaction per day."""

    source_system = "rmyy_his"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.org_code: str = config.get("org_code", ORG_CODE)
        self.institutions = {self.org_code: world.by_code[self.org_code]}
        self.database: str = config.get("database", "rmyy_his")
        self.state_database = f"{self.database}_sim"
        self.rates = {name: float(config.get(name, default)) for name, default in DEFAULTS.items()}
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        drift = config.get("schema_drift_day", DEFAULT_DRIFT_DAY)
        self.drift_day: date | None = date.fromisoformat(str(drift)) if drift else None
        self.staff: dict[str, Staff] = {s.staff_id: s for s in world.staff[self.org_code]}
        self.technicians = [s.name for s in world.staff[self.org_code] if s.role == "技师"]
        self.installed_at = datetime.combine(world.start_date - timedelta(days=730), time(9))
        self.beds = self._bed_master(self.institutions[self.org_code].open_beds)
        self._known: dict[tuple[int, str], str] | None = None  # patients issued so far, kept between days

    # --- schema -------------------------------------------------------------------------------------------
    @property
    def engine(self) -> sa.Engine:
        return mariadb_engine(self.database)

    def create_schema(self, reset: bool = False) -> None:
        with mariadb_engine("mysql").begin() as conn:
            for db in (self.database, self.state_database):
                if reset:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4"))
        with self.engine.begin() as conn:
            legacy = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = DATABASE() "
                    "AND t.TABLE_NAME = 'GH_BRJBXX' AND NOT EXISTS (SELECT 1 FROM information_schema.COLUMNS c "
                    "WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.COLUMN_NAME = 'YBKH')"
                )
            ).scalar()
            if legacy:
                raise RuntimeError(
                    f"database {self.database} holds the foundation slice's tables "
                    "(the foundation slice): recreate it with create_schema(reset=True)"
                )
            for table in TABLES:
                conn.execute(sa.text(ddl(table)))
            for table, rows in self._master_rows().items():
                self._insert_rows(conn, table, rows)
        with mariadb_engine(self.state_database).begin() as conn:
            conn.execute(sa.text(PENDING_DDL))

    def _bed_master(self, open_beds: int) -> dict[str, tuple[str, str]]:
        """Bed number ('001'...) -> (ward code, ward name): the open beds split over the wards by share."""
        total = sum(share for *_, share in WARDS)
        counts = [open_beds * share // total for *_, share in WARDS]
        counts[0] += open_beds - sum(counts)
        beds: dict[str, tuple[str, str]] = {}
        for (code, name, _), count in zip(WARDS, counts, strict=True):
            for _ in range(count):
                beds[f"{len(beds) + 1:03d}"] = (code, name)
        return beds

    def _master_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Dictionaries and beds as loaded when the system went live (XGSJ = the go-live time)."""
        at = self.installed_at
        departments = [{"KSDM": c, "KSMC": n, "KSLB": "门诊", "YXBZ": 1, "XGSJ": at} for c, n in DEPARTMENTS.values()]
        departments += [{"KSDM": c, "KSMC": n, "KSLB": "病区", "YXBZ": 1, "XGSJ": at} for c, n, _ in WARDS]
        staff = []
        for member in self.world.staff[self.org_code]:
            staff.append(
                {
                    "GH": self._staff_no(member),
                    "XM": member.name,
                    "ZGLB": STAFF_GROUP[member.role][0],
                    "ZC": member.title,
                    "ZYZSBM": member.licence_no,
                    "YXBZ": 1,
                    "XGSJ": at,
                }
            )
        diseases = [{"JBBM": c, "JBMC": n, "GBBM": icd[:3], "YXBZ": 1, "XGSJ": at} for icd, (c, n) in DIAGNOSES.items()]
        drugs = [
            {"YPDM": c, "YPMC": n, "GG": s, "DW": u, "LSJ": None, "YPLB": k, "YXBZ": 1, "XGSJ": at}
            for c, n, s, u, k in DRUGS.values()
        ]
        labs = [
            {"XMDM": c, "XMMC": n, "DW": u, "CKFW": None, "JYZH": g, "BBLX": b, "XGSJ": at}
            for c, n, u, g, b in LAB_ITEMS.values()
        ]
        beds = [
            {"CWH": no, "BQDM": code, "BQMC": name, "CWLX": "1", "KFBZ": 1, "CWZT": "0", "ZYID": None, "XGSJ": at}
            for no, (code, name) in self.beds.items()
        ]
        return {
            "ZD_KSZD": departments,
            "ZD_ZGXX": staff,
            "ZD_JBZD": diseases,
            "YK_YPZD": drugs,
            "JY_XMZD": labs,
            "ZY_CWXX": beds,
        }

    @staticmethod
    def _staff_no(member: Staff) -> str:
        """工号: 1xxx doctors, 2xxx nurses, 3xxx pharmacists, 4xxx technicians."""
        _, base = STAFF_GROUP[member.role]
        return str(base + int(member.staff_id[-3:]))

    # --- the day ------------------------------------------------------------------------------------------
    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        batch = _Day(day, AnswerKey(self.source_system, day))
        drift = self._drift(batch)
        encounters = sorted(self.own_encounters(activity), key=lambda e: (e.start_at, e.encounter_uid))
        self._render_encounters(batch, encounters, activity, drift)
        counts = self._store(batch, activity.corrections)
        batch.key.flush()
        answer_key.mark_day_written(self.source_system, day)
        self._known = batch.known
        return counts

    def _drift(self, batch: _Day) -> bool:
        """From the drift day on, MZ_JZJL carries YBJZLSH (DDL commits implicitly, so it runs first)."""
        if self.drift_day is None or batch.day < self.drift_day:
            return False
        with self.engine.begin() as conn:
            present = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = 'MZ_JZJL' AND COLUMN_NAME = :c"
                ),
                {"c": DRIFT_COLUMN},
            ).scalar()
            if not present:
                conn.execute(sa.text(f"ALTER TABLE MZ_JZJL ADD COLUMN IF NOT EXISTS {DRIFT_COLUMN} VARCHAR(32)"))
        if not present or batch.day == self.drift_day:
            batch.key.defect("MZ_JZJL", DRIFT_COLUMN, "schema_drift", f"column {DRIFT_COLUMN} from {batch.day}")
        return True

    def _person(self, resident_id: int, activity: DayActivity) -> Person:
        person = self.world.people.get(resident_id)
        if person is None:
            person = next(p for p in activity.new_people if p.resident_id == resident_id)
        return person

    def _render_encounters(self, batch: _Day, encounters: list[Encounter], activity: DayActivity, drift: bool) -> None:
        if self._known is None:
            self._known = answer_key.known_patients(self.source_system)
        known = batch.known = dict(self._known)
        next_brid = max((int(v) for v in known.values() if v.isdigit()), default=0) + 1
        identities_needed = []
        visit_seq = admission_seq = 0
        plan: list[tuple[Encounter, str, bool]] = []
        for encounter in encounters:
            rng = self.rng(batch.day, f"{encounter.encounter_uid}:patient")
            person = self._person(encounter.resident_id, activity)
            brid = known.get((person.resident_id, self.org_code))
            new = brid is None or rng.random() < self.rates["re_registration"]
            if new:
                old, brid = brid, f"{next_brid:010d}"
                next_brid += 1
                known[(person.resident_id, self.org_code)] = brid
                self._register(batch, rng, person, brid, encounter, old)
            elif encounter.kind == "inpatient" and brid not in batch.identities:
                identities_needed.append(brid)
            plan.append((encounter, brid, new))
        batch.identities.update(self._identities(identities_needed))
        for encounter, brid, new in plan:
            rng = self.rng(batch.day, f"{encounter.encounter_uid}:render")
            if encounter.kind == "inpatient":
                admission_seq += 1
                self._render_admission(batch, rng, encounter, brid, f"ZY{batch.day:%Y%m%d}{admission_seq:04d}")
            else:
                visit_seq += 1
                jzid = f"MZ{batch.day:%Y%m%d}{visit_seq:05d}"
                duplicate = None
                if rng.random() < self.rates["duplicate_submission"]:
                    visit_seq += 1
                    duplicate = f"MZ{batch.day:%Y%m%d}{visit_seq:05d}"
                self._render_visit(batch, rng, encounter, brid, new, jzid, duplicate, drift)

    def _identities(self, brids: list[str]) -> dict[str, dict[str, Any]]:
        if not brids:
            return {}
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.text("SELECT * FROM GH_BRJBXX WHERE BRID IN :b").bindparams(sa.bindparam("b", expanding=True)),
                    {"b": brids},
                )
                .mappings()
                .all()
            )
        return {r["BRID"]: dict(r) for r in rows}

    def _register(
        self, batch: _Day, rng: random.Random, person: Person, brid: str, encounter: Encounter, previous: str | None
    ) -> None:
        """A new 病人ID: the front desk records the resident (with identity dirt) just before registration."""
        recorded = recorded_identity(rng, person, self.identity_dirt)
        created = max(_day_start(batch.day), encounter.start_at - timedelta(seconds=rng.randrange(60, 480)))
        row = {
            "BRID": brid,
            "XM": recorded.name,
            "XB": SEX.get(recorded.sex, "未知"),
            "CSRQ": recorded.birth_date,
            "SFZH": recorded.id_number,
            "LXDH": recorded.phone,
            "JTZZ": recorded.address,
            "JDSJ": created.replace(microsecond=0),
            "MZ": person.ethnicity,
            "YBKH": person.insurance_no if encounter.insured else None,
        }
        defects = [("GH_BRJBXX", brid, name, detail) for name, detail in recorded.defects]
        if previous is not None:
            defects.append(("GH_BRJBXX", brid, "re_registration", f"also {previous}"))
        batch.insert("GH_BRJBXX", brid, _ms(created), "", row, defects)
        batch.identities[brid] = row
        batch.key.patient(brid, person.resident_id, self.org_code)

    def _doctor(self, staff_id: str) -> tuple[str | None, str | None]:
        member = self.staff.get(staff_id)
        return (member.name, self._staff_no(member)) if member else (None, None)

    @staticmethod
    def _fee_class(encounter: Encounter) -> str:
        if not encounter.insured:
            return FEE_CLASS_SELF
        return FEE_CLASS_EMPLOYEE if encounter.resident_id % 5 == 0 else FEE_CLASS_RESIDENT

    def _diagnosis(
        self, batch: _Day, rng: random.Random, table: str, zdid: str, dx: Diagnosis, at: datetime
    ) -> tuple[dict[str, Any], list[tuple[str, str, str, str]]]:
        """The code a doctor picks (and its defect): now and then one outside the dictionary."""
        code, name = local_diagnosis(dx.icd_code, dx.name)
        if rng.random() < self.rates["unknown_local_code"]:
            if rng.random() < 0.5:
                code, name = f"ZDY{rng.randrange(1, 10_000):04d}", f"{name}{rng.choice(UNKNOWN_SUFFIXES)}"
                defect = "unknown_local_code"
            else:  # the retired dictionary version's format: a dialect of a dictionary code the platform normalises
                code, defect = code.replace(".", "").lower(), "local_code_dialect"
            defects = [(table, zdid, defect, f"{code} {name} (ICD {dx.icd_code})")]
            return {"ZDDM": code, "ZDMC": name, "ZZDBZ": int(dx.is_main)}, defects
        if dx.icd_code not in DIAGNOSES:
            batch.insert("ZD_JBZD", code, at, "", {"JBBM": code, "JBMC": name, "GBBM": dx.icd_code[:3], "YXBZ": 1})
        return {"ZDDM": code, "ZDMC": name, "ZZDBZ": int(dx.is_main)}, []

    def _drug(
        self, batch: _Day, drug_code: str, name: str, spec: str, price: float, at: datetime
    ) -> tuple[str, str, str, str, str]:
        """The 药品字典 entry; a drug the dictionary lacks is added when first prescribed."""
        entry = local_drug(drug_code, name, spec)
        if drug_code not in DRUGS:
            code, local_name, local_spec, unit, kind = entry
            batch.insert(
                "YK_YPZD",
                code,
                at,
                "",
                {"YPDM": code, "YPMC": local_name, "GG": local_spec, "DW": unit, "LSJ": price, "YPLB": kind, "YXBZ": 1},
            )
        return entry

    # --- outpatient / emergency ---------------------------------------------------------------------------
    def _render_visit(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        brid: str,
        new: bool,
        jzid: str,
        duplicate: str | None,
        drift: bool,
    ) -> None:
        first = len(batch.ops)
        start = encounter.start_at
        saved = _after(rng, start, 60, 1800)
        ksdm, ksmc = local_department(encounter.department_name)
        doctor, staff_no = self._doctor(encounter.doctor_id)
        visit = {
            "JZID": jzid,
            "BRID": brid,
            "JZLX": VISIT_TYPE[encounter.kind],
            "KSDM": ksdm,
            "KSMC": ksmc,
            "YSXM": doctor,
            "JZSJ": start.replace(microsecond=0),
            "FB": self._fee_class(encounter),
            "CFZBZ": "1" if new else "2",
            "YSGH": staff_no,
        }
        if drift:
            visit[DRIFT_COLUMN] = (
                f"YB{start:%Y%m%d}{_crc(encounter.encounter_uid, 10**8):08d}" if encounter.insured else None
            )
        visit_op = batch.insert("MZ_JZJL", jzid, saved, jzid, visit)
        batch.local_ids[encounter.encounter_uid].append(jzid)
        batch.key.encounter(jzid, encounter.encounter_uid)
        diagnoses = []
        for n, dx in enumerate(encounter.diagnoses, 1):
            zdid = f"{jzid}{n:02d}"
            row, defects = self._diagnosis(batch, rng, "MZ_ZDJL", zdid, dx, saved)
            diagnoses.append((row, defects))
            batch.insert("MZ_ZDJL", zdid, saved, jzid, {"ZDID": zdid, "JZID": jzid, **row}, defects)
        paid = self._prescribe(batch, rng, encounter, brid, jzid, ksdm, staff_no, saved)
        for n, charge in enumerate(encounter.charges, 1):
            at = _after(rng, start, 1, 30) if charge.category == "挂号" else paid
            self._charge(
                batch,
                "MZ_SF",
                f"SF{jzid[2:]}{n:02d}",
                jzid,
                brid,
                charge,
                at,
                {"SFSJ": at.replace(microsecond=0), "SFZT": CHARGE_PAID, "TFSJ": None},
            )
        source = PATIENT_SOURCE[encounter.kind]
        self._labs(batch, rng, encounter, source, jzid, brid, ksdm, doctor, _after(rng, saved, 60, 600))
        self._exams(batch, rng, encounter, source, jzid, brid, _after(rng, saved, 600, 3600))
        if duplicate:
            self._duplicate(batch, rng, encounter, visit, diagnoses, duplicate, saved)
        if rng.random() < self.rates["late_submission"]:
            self._late(batch, rng, first, visit_op)

    def _prescribe(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        brid: str,
        jzid: str,
        ksdm: str,
        staff_no: str | None,
        saved: datetime,
    ) -> datetime:
        """One 处方 per drug class (西药 '1', 中成药 '2'); returns when the patient paid at the cashier."""
        written = _after(rng, saved, 30, 300)
        groups: dict[str, list[tuple]] = defaultdict(list)
        for p in encounter.prescriptions:
            entry = self._drug(batch, p.drug_code, p.name, p.spec, p.unit_price, written)
            groups["2" if entry[4] == "中成药" else "1"].append((p, entry))
        for kind, lines in sorted(groups.items()):
            cfid = f"CF{jzid[2:]}{kind}"
            total = round(sum(p.quantity * p.unit_price for p, _ in lines), 2)
            batch.insert(
                "MZ_CF",
                cfid,
                written,
                jzid,
                {
                    "CFID": cfid,
                    "JZID": jzid,
                    "BRID": brid,
                    "CFLX": kind,
                    "KSDM": ksdm,
                    "YSGH": staff_no,
                    "KFSJ": written.replace(microsecond=0),
                    "CFJE": total,
                },
            )
            for n, (p, (code, name, spec, unit, _)) in enumerate(lines, 1):
                mxid = f"{cfid}{n:02d}"
                batch.insert(
                    "MZ_CFMX",
                    mxid,
                    written,
                    jzid,
                    {
                        "MXID": mxid,
                        "CFID": cfid,
                        "YPDM": code,
                        "YPMC": name,
                        "GG": spec,
                        "SL": p.quantity,
                        "DW": unit,
                        "DJ": p.unit_price,
                        "JE": round(p.quantity * p.unit_price, 2),
                        "YFPC": rng.choice(FREQUENCIES),
                    },
                )
        return _after(rng, written, 300, 2400)

    def _charge(
        self, batch: _Day, table: str, pk: str, ref: str, brid: str, charge: Charge, at: datetime, extra: dict[str, Any]
    ) -> None:
        code, name = charge.item_code, charge.item_name
        fee_type = FEE_TYPE.get(charge.category, "99")
        if charge.category == "药品":
            code, name, _, _, kind = local_drug(charge.item_code, charge.item_name, "")
            fee_type = FEE_TYPE[kind]
        key_column, item_column, name_column = (
            ("SFID", "SFXMDM", "SFXMMC") if table == "MZ_SF" else ("FYID", "XMDM", "XMMC")
        )
        link = {"JZID": ref} if table == "MZ_SF" else {"ZYID": ref}
        batch.insert(
            table,
            pk,
            at,
            ref,
            {
                key_column: pk,
                **link,
                "BRID": brid,
                item_column: code,
                name_column: name,
                "FYLB": fee_type,
                "SL": 1,
                "DJ": charge.amount_yuan,
                "JE": charge.amount_yuan,
                **extra,
            },
        )

    def _labs(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        source: str,
        ref: str,
        brid: str,
        ksdm: str,
        doctor: str | None,
        requested: datetime,
    ) -> None:
        """One 检验申请单 per 检验组合: requested, sampled, then reported (an UPDATE) with its results."""
        groups: dict[str, list[LabResult]] = defaultdict(list)
        for lab in encounter.labs:
            groups[local_lab(lab)[3]].append(lab)
        for n, (group, labs) in enumerate(sorted(groups.items()), 1):
            sqdh = f"JY{ref}{n}"
            sampled = _after(rng, requested, 300, 1800)
            reported = _after(rng, sampled, 1800, 7200)
            specimen = local_lab(labs[0])[4]
            batch.insert(
                "JY_SQD",
                sqdh,
                requested,
                ref,
                {
                    "SQDH": sqdh,
                    "BRLY": source,
                    "JZH": ref,
                    "BRID": brid,
                    "JYZH": group,
                    "BBLX": specimen,
                    "SQKS": ksdm,
                    "SQYS": doctor,
                    "SQSJ": requested.replace(microsecond=0),
                    "CJSJ": None,
                    "BGSJ": None,
                    "ZT": LAB_REQUESTED,
                },
            )
            batch.update(
                "JY_SQD",
                "report",
                reported,
                ref,
                {"CJSJ": sampled.replace(microsecond=0), "BGSJ": reported.replace(microsecond=0), "ZT": LAB_REPORTED},
                {"SQDH": sqdh},
            )
            for k, lab in enumerate(labs, 1):
                code, name, unit, _, _ = local_lab(lab)
                jgid = f"{sqdh}{k:02d}"
                batch.insert(
                    "JY_JG",
                    jgid,
                    reported,
                    ref,
                    {
                        "JGID": jgid,
                        "SQDH": sqdh,
                        "XMDM": code,
                        "XMMC": name,
                        "JG": f"{lab.value:g}",
                        "DW": unit,
                        "CKFW": lab.reference_range,
                        "YCBZ": abnormal_flag(lab.value, lab.reference_range),
                        "BGSJ": reported.replace(microsecond=0),
                    },
                )

    def _exams(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        source: str,
        ref: str,
        brid: str,
        examined: datetime,
    ) -> None:
        for n, exam in enumerate(encounter.exams, 1):
            bgid = f"JC{ref}{n}"
            klass, pattern = EXAM_CLASS.get(exam.modality, ("QT", "{part}" + exam.modality))
            reported = _after(rng, examined, 1200, 7200)
            batch.insert(
                "JC_BG",
                bgid,
                reported,
                ref,
                {
                    "BGID": bgid,
                    "BRLY": source,
                    "JZH": ref,
                    "BRID": brid,
                    "JCLB": klass,
                    "JCXM": pattern.format(part=exam.body_part),
                    "JCBW": exam.body_part,
                    "JCSJ": examined.replace(microsecond=0),
                    "YXSJ": exam.finding,
                    "ZDYJ": exam.conclusion,
                    "BGYS": rng.choice(self.technicians) if self.technicians else None,
                    "BGSJ": reported.replace(microsecond=0),
                },
            )

    def _duplicate(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        visit: dict[str, Any],
        diagnoses: list[tuple[dict[str, Any], list[tuple[str, str, str, str]]]],
        jzid: str,
        saved: datetime,
    ) -> None:
        """The visit saved twice (double click / network retry): a second MZ_JZJL row with its diagnoses."""
        at = _after(rng, saved, 1, 20)
        batch.insert(
            "MZ_JZJL",
            jzid,
            at,
            jzid,
            {**visit, "JZID": jzid},
            [("MZ_JZJL", jzid, "duplicate_submission", f"same visit as {visit['JZID']}")],
        )
        for n, (row, defects) in enumerate(diagnoses, 1):
            zdid = f"{jzid}{n:02d}"
            batch.insert(
                "MZ_ZDJL",
                zdid,
                at,
                jzid,
                {"ZDID": zdid, "JZID": jzid, **row},
                [(table, zdid, name, detail) for table, _, name, detail in defects],
            )
        batch.local_ids[encounter.encounter_uid].append(jzid)
        batch.key.encounter(jzid, encounter.encounter_uid)

    def _late(self, batch: _Day, rng: random.Random, first: int, visit: _Op) -> None:
        """补录: the whole visit (and its duplicate) is committed after 24:00 of the next day."""
        ops = [op for op in batch.ops[first:] if op.ref]
        committed = _ms(_day_start(batch.day + timedelta(days=2)) + timedelta(seconds=rng.randrange(30_600)))
        shift = committed - min(op.at for op in ops)
        for op in ops:
            op.at += shift
            op.row["XGSJ"] = op.at
        visit.defects.append(("MZ_JZJL", visit.ref, "late_submission", f"committed {committed:%Y-%m-%d %H:%M:%S}"))

    # --- inpatient ----------------------------------------------------------------------------------------
    def _render_admission(self, batch: _Day, rng: random.Random, encounter: Encounter, brid: str, zyid: str) -> None:
        """Admission now; orders, labs, exams, surgery, daily charges, discharge and 病案首页 at their times."""
        start = encounter.start_at
        admitted = _after(rng, start, 300, 1200)
        ksdm, ksmc = local_department(encounter.department_name)
        doctor, _ = self._doctor(encounter.doctor_id)
        bed = encounter.bed_no or None
        ward = self.beds.get(bed) if bed else None
        if bed and ward is None:  # a bed number outside the master: the ward puts up an extra bed (加床)
            code = DEPARTMENT_WARD.get(ksdm, "B02")
            ward = (code, next(n for c, n, _ in WARDS if c == code))
            batch.insert(
                "ZY_CWXX",
                bed,
                admitted,
                "",
                {"CWH": bed, "BQDM": ward[0], "BQMC": ward[1], "CWLX": "2", "KFBZ": 0, "CWZT": "0", "ZYID": None},
            )
        admit_code, admit_name = self._main_diagnosis(encounter)
        route = rng.choices([r for r, _ in ADMIT_ROUTE], [w for _, w in ADMIT_ROUTE])[0]
        batch.insert(
            "ZY_RYDJ",
            zyid,
            admitted,
            zyid,
            {
                "ZYID": zyid,
                "BRID": brid,
                "RYSJ": start.replace(microsecond=0),
                "RYKSDM": ksdm,
                "RYKSMC": ksmc,
                "BQDM": ward[0] if ward else None,
                "CWH": bed,
                "ZZYS": doctor,
                "RYTJ": route,
                "RYZDDM": admit_code,
                "RYZDMC": admit_name,
                "FB": self._fee_class(encounter),
                "CYSJ": None,
                "CYKSDM": None,
                "ZT": ADMISSION_IN,
            },
        )
        batch.local_ids[encounter.encounter_uid].append(zyid)
        batch.key.encounter(zyid, encounter.encounter_uid)
        if bed:
            batch.update("ZY_CWXX", "in", admitted, zyid, {"CWZT": "1", "ZYID": zyid}, {"CWH": bed})
        written = _after(rng, admitted, 3600, 3 * 3600)
        for n, dx in enumerate(encounter.diagnoses, 1):
            zdid = f"{zyid}{DIAG_ADMISSION}{n:02d}"
            row, defects = self._diagnosis(batch, rng, "ZY_ZDJL", zdid, dx, written)
            batch.insert(
                "ZY_ZDJL", zdid, written, zyid, {"ZDID": zdid, "ZYID": zyid, "ZDLB": DIAG_ADMISSION, **row}, defects
            )
        for n, p in enumerate(encounter.prescriptions, 1):
            code, name, spec, unit, _ = self._drug(batch, p.drug_code, p.name, p.spec, p.unit_price, written)
            yzid = f"YZ{zyid[2:]}{n:02d}"
            batch.insert(
                "ZY_YZJL",
                yzid,
                written,
                zyid,
                {
                    "YZID": yzid,
                    "ZYID": zyid,
                    "YZLB": "1",
                    "YPDM": code,
                    "YZMC": name,
                    "GG": spec,
                    "SL": p.quantity,
                    "DW": unit,
                    "PC": rng.choice(FREQUENCIES),
                    "KSSJ": written.replace(microsecond=0),
                    "TZSJ": None,
                    "KZYS": doctor,
                },
            )
        lab_at = _after(rng, admitted, 3600, 12 * 3600)
        exam_at = _after(rng, admitted, 2 * 3600, 24 * 3600)
        self._labs(batch, rng, encounter, PATIENT_SOURCE["inpatient"], zyid, brid, ksdm, doctor, lab_at)
        self._exams(batch, rng, encounter, PATIENT_SOURCE["inpatient"], zyid, brid, exam_at)
        surgery_end = self._surgeries(batch, rng, encounter, zyid, brid, doctor)
        end = encounter.end_at
        times = {"挂号": admitted, "药品": written, "化验": lab_at, "检查": exam_at, "手术": surgery_end or admitted}
        n = 0
        for charge in encounter.charges:
            if charge.category in ("床位", "治疗"):
                postings = self._daily_postings(rng, start, end, charge.amount_yuan)
            else:
                at = times.get(charge.category, admitted)
                postings = [(_after(rng, at, 60, 1800), charge.amount_yuan)]
            for at, amount in postings:
                n += 1
                fyid = f"FY{zyid[2:]}{n:04d}"
                line = Charge(charge.item_code, charge.item_name, charge.category, amount)
                self._charge(batch, "ZY_FYMX", fyid, zyid, brid, line, at, {"FSSJ": at.replace(microsecond=0)})
        if end is not None:
            self._discharge(batch, rng, encounter, end, brid, zyid, (ksdm, ksmc), doctor, bed, route)

    @staticmethod
    def _main_diagnosis(encounter: Encounter) -> tuple[str | None, str | None]:
        main = next((d for d in encounter.diagnoses if d.is_main), None)
        return local_diagnosis(main.icd_code, main.name) if main else (None, None)

    @staticmethod
    def _daily_postings(
        rng: random.Random, start: datetime, end: datetime | None, amount: float
    ) -> list[tuple[datetime, float]]:
        """床位费/护理费: billed each night just after midnight; a same-day stay is billed at discharge."""
        if end is not None and end.date() == start.date():
            return [(_after(rng, end, 60, 600), amount)]
        nights = (end.date() - start.date()).days if end is not None else 1
        each = round(amount / nights, 2)
        postings = []
        for k in range(1, nights + 1):
            at = _after(rng, _day_start(start.date() + timedelta(days=k)), 300, 900)
            postings.append((at, each if k < nights else round(amount - each * (nights - 1), 2)))
        return postings

    def _surgeries(
        self, batch: _Day, rng: random.Random, encounter: Encounter, zyid: str, brid: str, doctor: str | None
    ) -> datetime | None:
        finished = None
        for n, surgery in enumerate(encounter.surgeries, 1):
            finished = _after(rng, surgery.at, 3600, 3 * 3600)
            recorded = _after(rng, finished, 600, 3600)
            ssid = f"SS{zyid[2:]}{n}"
            batch.insert(
                "SS_SSJL",
                ssid,
                recorded,
                zyid,
                {
                    "SSID": ssid,
                    "ZYID": zyid,
                    "BRID": brid,
                    "SSDM": surgery.procedure_code,
                    "SSMC": surgery.name,
                    "SSKSSJ": surgery.at.replace(microsecond=0),
                    "SSJSSJ": finished.replace(microsecond=0),
                    "SSYS": doctor,
                    "MZFS": ANAESTHESIA.get(surgery.procedure_code, "全身麻醉"),
                    "QKDJ": INCISION.get(surgery.incision_class, surgery.incision_class),
                    "YHDJ": surgery.healing_grade,
                },
            )
        return finished

    def _discharge(
        self,
        batch: _Day,
        rng: random.Random,
        encounter: Encounter,
        end: datetime,
        brid: str,
        zyid: str,
        department: tuple[str, str],
        doctor: str | None,
        bed: str | None,
        route: str,
    ) -> None:
        """出院: ZY_RYDJ/bed/orders updated, ZY_CYJL and 出院诊断 inserted; the 病案首页 follows days later."""
        start, (ksdm, ksmc) = encounter.start_at, department
        done = _after(rng, end, 300, 1800)
        recorded = end.replace(microsecond=0)
        defects = []
        if rng.random() < self.rates["discharge_before_admission"]:
            recorded -= timedelta(days=(end.date() - start.date()).days + rng.randrange(1, 4))
            defects.append(
                (
                    "ZY_CYJL",
                    zyid,
                    "discharge_before_admission",
                    f"CYSJ {recorded:%Y-%m-%d %H:%M} < RYSJ {start:%Y-%m-%d %H:%M}",
                )
            )
        batch.update(
            "ZY_RYDJ", "out", done, zyid, {"CYSJ": recorded, "CYKSDM": ksdm, "ZT": ADMISSION_OUT}, {"ZYID": zyid}
        )
        if bed:
            batch.update("ZY_CWXX", "out", done, zyid, {"CWZT": "0", "ZYID": None}, {"CWH": bed, "ZYID": zyid})
        batch.update("ZY_YZJL", "stop", done, zyid, {"TZSJ": recorded}, {"ZYID": zyid, "TZSJ": None})
        main_code, main_name = self._main_diagnosis(encounter)
        others = [d for d in encounter.diagnoses if not d.is_main]
        stay = (recorded.date() - start.date()).days  # as the HIS computes it: negative when CYSJ < RYSJ
        batch.insert(
            "ZY_CYJL",
            zyid,
            done,
            zyid,
            {
                "ZYID": zyid,
                "BRID": brid,
                "RYSJ": start.replace(microsecond=0),
                "CYSJ": recorded,
                "CYKSDM": ksdm,
                "CYKSMC": ksmc,
                "CYQK": DISCHARGE_STATE.get(encounter.discharge_status, "9"),
                "CYZDDM": main_code,
                "CYZDMC": main_name,
                "ZYTS": max(1, stay) if recorded >= start else stay,
                "ZYYS": doctor,
            },
            defects,
        )
        for n, dx in enumerate(encounter.diagnoses, 1):
            zdid = f"{zyid}{DIAG_DISCHARGE}{n:02d}"
            row, defects = self._diagnosis(batch, rng, "ZY_ZDJL", zdid, dx, done)
            batch.insert(
                "ZY_ZDJL", zdid, done, zyid, {"ZDID": zdid, "ZYID": zyid, "ZDLB": DIAG_DISCHARGE, **row}, defects
            )
        # 病案首页: the record room codes it (from the dictionary) and files it 1-5 days after discharge.
        filed = _after(
            rng, datetime.combine(end.date() + timedelta(days=rng.randrange(1, 6)), time(8, 30)), 0, 8 * 3600
        )
        who = batch.identities.get(brid, {})
        birth = who.get("CSRQ")
        surgery = encounter.surgeries[0] if encounter.surgeries else None
        extra = {}
        for k, dx in enumerate(others[:2], 1):
            extra[f"QTZDDM{k}"], extra[f"QTZDMC{k}"] = local_diagnosis(dx.icd_code, dx.name)
        batch.insert(
            "BL_SYXX",
            zyid,
            filed,
            zyid,
            {
                "ZYID": zyid,
                "BAH": brid,
                "BRID": brid,
                "XM": who.get("XM"),
                "XB": who.get("XB"),
                "CSRQ": birth,
                "NL": (start.date() - birth).days // 365 if birth else None,
                "SFZH": who.get("SFZH"),
                "XZZ": who.get("JTZZ"),
                "RYSJ": start.replace(microsecond=0),
                "CYSJ": end.replace(microsecond=0),
                "SJZYTS": max(1, (end.date() - start.date()).days),
                "RYKS": ksmc,
                "CYKS": ksmc,
                "RYTJ": route,
                "ZYZDDM": main_code,
                "ZYZDMC": main_name,
                "QTZDDM1": None,
                "QTZDMC1": None,
                "QTZDDM2": None,
                "QTZDMC2": None,
                **extra,
                "SSCZDM": surgery.procedure_code if surgery else None,
                "SSCZMC": surgery.name if surgery else None,
                "SSCZRQ": surgery.at.replace(microsecond=0) if surgery else None,
                "QKYH": f"{INCISION.get(surgery.incision_class, surgery.incision_class)}/{surgery.healing_grade}"
                if surgery
                else None,
                "LYFS": LEAVE_MODE_DEATH if encounter.discharge_status == "死亡" else LEAVE_MODE_ORDERED,
                "ZFY": encounter.total_yuan,
                "ZZYS": doctor,
            },
        )

    # --- corrections --------------------------------------------------------------------------------------
    def _all_local_ids(self, uids: list[str]) -> dict[str, list[str]]:
        """encounter_uid -> every local id of it (an original and its duplicates), from the answer key."""
        if not uids:
            return {}
        with source_pg_engine(answer_key.DATABASE).connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT encounter_uid, local_encounter_id FROM encounter_truth "
                    "WHERE source_system = :s AND encounter_uid = ANY(:u) "
                    "ORDER BY local_encounter_id"
                ),
                {"s": self.source_system, "u": uids},
            )
            result: dict[str, list[str]] = defaultdict(list)
            for r in rows:
                result[r.encounter_uid].append(r.local_encounter_id)
        return result

    def _correction_ops(self, conn: sa.Connection, batch: _Day, corrections: list[Correction]) -> list[_Op]:
        """作废 / 更正 of our encounters, each at its time, but never before the corrected row was committed."""
        known = self._all_local_ids([c.target_uid for c in corrections])
        today = {op.op_id: op.at for op in batch.ops if op.kind == "insert"}
        ops = []
        for correction in corrections:
            uid = correction.target_uid
            ids = sorted(set(known.get(uid, [])) | set(batch.local_ids.get(uid, [])))
            targets = ids if correction.kind == "cancel" else ids[:1]
            for ref in targets:
                inpatient = ref.startswith("ZY")
                table = "ZY_RYDJ" if inpatient else "MZ_JZJL"
                created = [f"I:{table}:{ref}"] + (
                    [f"I:BL_SYXX:{ref}"] if inpatient and correction.kind == "update" else []
                )
                at = _ms(correction.at)
                for op_id in created:
                    committed = (
                        today.get(op_id)
                        or conn.exec_driver_sql(
                            f"SELECT MAX(AT) FROM {self.state_database}.PENDING_OP WHERE OP_ID = %s", (op_id,)
                        ).scalar()
                    )
                    if committed is not None and committed >= at:
                        at = _ms(committed + timedelta(minutes=30))
                kind = "cancel" if correction.kind == "cancel" else "fix"
                ops.append(
                    _Op(
                        at,
                        f"C:{kind}:{ref}",
                        ref,
                        kind,
                        table,
                        {"reason": correction.reason, "uid": correction.target_uid},
                    )
                )
        return ops

    def _run_correction(self, conn: sa.Connection, batch: _Day, op: _Op, counts: dict[str, int]) -> None:
        ref, at = op.ref, op.at
        if op.kind == "cancel" and op.table == "MZ_JZJL":
            statements = [
                # Join deletes: MariaDB runs a single-table DELETE ... IN (subquery) as a full scan.
                ("JY_JG", "DELETE JG FROM JY_JG JG JOIN JY_SQD SQ ON SQ.SQDH = JG.SQDH WHERE SQ.JZH = %s", (ref,)),
                ("JY_SQD", "DELETE FROM JY_SQD WHERE JZH = %s", (ref,)),
                ("JC_BG", "DELETE FROM JC_BG WHERE JZH = %s", (ref,)),
                ("MZ_CFMX", "DELETE MX FROM MZ_CFMX MX JOIN MZ_CF CF ON CF.CFID = MX.CFID WHERE CF.JZID = %s", (ref,)),
                ("MZ_CF", "DELETE FROM MZ_CF WHERE JZID = %s", (ref,)),
                ("MZ_ZDJL", "DELETE FROM MZ_ZDJL WHERE JZID = %s", (ref,)),
                ("MZ_JZJL", "DELETE FROM MZ_JZJL WHERE JZID = %s", (ref,)),
                (
                    "MZ_SF",
                    "UPDATE MZ_SF SET SFZT = %s, TFSJ = %s, XGSJ = %s WHERE JZID = %s AND SFZT = %s",
                    (CHARGE_REFUNDED, at.replace(microsecond=0), at, ref, CHARGE_PAID),
                ),
            ]
            for table, sql, params in statements:
                counts[table] += conn.exec_driver_sql(sql, params).rowcount
            batch.key.defect("MZ_JZJL", ref, "correction_cancel", op.row["reason"])
        elif op.kind == "cancel":
            counts["ZY_RYDJ"] += conn.exec_driver_sql(
                "UPDATE ZY_RYDJ SET ZT = %s, XGSJ = %s WHERE ZYID = %s", (ADMISSION_VOID, at, ref)
            ).rowcount
            counts["ZY_CWXX"] += conn.exec_driver_sql(
                "UPDATE ZY_CWXX SET CWZT = '0', ZYID = NULL, XGSJ = %s WHERE ZYID = %s", (at, ref)
            ).rowcount
            batch.key.defect("ZY_RYDJ", ref, "correction_cancel", op.row["reason"])
        else:
            self._run_fix(conn, batch, op, counts)

    def _run_fix(self, conn: sa.Connection, batch: _Day, op: _Op, counts: dict[str, int]) -> None:
        """诊断更正: the main diagnosis recoded (outpatient: MZ_ZDJL; inpatient: the 病案首页, else 入院诊断)."""
        ref, at = op.ref, op.at
        if op.table == "MZ_JZJL":
            targets = [
                ("MZ_ZDJL", "SELECT ZDID, ZDDM FROM MZ_ZDJL WHERE JZID = %s AND ZZDBZ = 1", "ZDID", "ZDDM", "ZDMC")
            ]
        else:
            targets = [
                ("BL_SYXX", "SELECT ZYID, ZYZDDM FROM BL_SYXX WHERE ZYID = %s", "ZYID", "ZYZDDM", "ZYZDMC"),
                ("ZY_RYDJ", "SELECT ZYID, RYZDDM FROM ZY_RYDJ WHERE ZYID = %s", "ZYID", "RYZDDM", "RYZDMC"),
            ]
        rng = random.Random(f"{self.world.seed}:{self.source_system}:fix:{op.row['uid']}")
        new_code, new_name = rng.choice(sorted(DIAGNOSES.values()))
        for table, select, key_column, code_column, name_column in targets:
            found = conn.exec_driver_sql(select, (ref,)).first()
            if found is None:
                continue
            record, old = found
            if old != new_code:  # the recoding is fixed per encounter, so a re-run changes nothing
                counts[table] += conn.exec_driver_sql(
                    f"UPDATE {table} SET {code_column} = %s, {name_column} = %s, XGSJ = %s WHERE {key_column} = %s",
                    (new_code, new_name, at, record),
                ).rowcount
            batch.key.defect(table, record, "correction_update", f"{op.row['reason']}: {old}->{new_code}")
            return

    # --- storage ------------------------------------------------------------------------------------------
    def _store(self, batch: _Day, corrections: list[Correction]) -> dict[str, int]:
        """One transaction: due ops (inserts in bulk, then changes in commit order); the rest to PENDING_OP."""
        day_end = _day_start(batch.day + timedelta(days=1))
        pending = f"{self.state_database}.PENDING_OP"
        counts: dict[str, int] = defaultdict(int)
        with self.engine.begin() as conn:
            due = [
                _Op.load(at, payload)
                for at, payload in conn.exec_driver_sql(
                    f"SELECT AT, PAYLOAD FROM {pending} WHERE DUE_DAY <= %s ORDER BY AT, OP_ID", (batch.day,)
                )
            ]
            ops = batch.ops + self._correction_ops(conn, batch, corrections)
            now = due + [op for op in ops if op.at < day_end]
            later = [op for op in ops if op.at >= day_end]
            for cancel in [op for op in now if op.kind == "cancel"]:
                now = [op for op in now if not (op.ref == cancel.ref and op.at > cancel.at)]
                later = [op for op in later if op.ref != cancel.ref]
                conn.exec_driver_sql(f"DELETE FROM {pending} WHERE REF = %s AND AT > %s", (cancel.ref, cancel.at))
            inserts: dict[tuple[str, tuple[str, ...]], list[tuple]] = defaultdict(list)
            for op in sorted((op for op in now if op.kind == "insert"), key=lambda o: TABLE_ORDER[o.table]):
                op.row["XGSJ"] = op.at
                inserts[(op.table, tuple(op.row))].append(tuple(op.row.values()))
                for defect in op.defects:
                    batch.key.defect(*defect)
            for (table, columns), rows in inserts.items():
                counts[table] += self._insert_tuples(conn, table, columns, rows)
            for op in sorted((op for op in now if op.kind != "insert"), key=lambda o: (o.at, o.op_id)):
                if op.kind == "update":
                    counts[op.table] += self._update(conn, op)
                else:
                    self._run_correction(conn, batch, op, counts)
            conn.exec_driver_sql(f"DELETE FROM {pending} WHERE DUE_DAY <= %s", (batch.day,))
            if later:
                conn.exec_driver_sql(
                    f"INSERT IGNORE INTO {pending} (DUE_DAY, OP_ID, REF, AT, PAYLOAD) VALUES (%s, %s, %s, %s, %s)",
                    [(op.at.date(), op.op_id, op.ref, op.at, op.payload()) for op in later],
                )
        return dict(counts)

    @staticmethod
    def _update(conn: sa.Connection, op: _Op) -> int:
        op.row["XGSJ"] = op.at
        sets = ", ".join(f"{c} = %s" for c in op.row)
        where = " AND ".join(f"{c} IS NULL" if v is None else f"{c} = %s" for c, v in op.where.items())
        params = (*op.row.values(), *(v for v in op.where.values() if v is not None))
        return conn.exec_driver_sql(f"UPDATE {op.table} SET {sets} WHERE {where}", params).rowcount

    @staticmethod
    def _insert_tuples(conn: sa.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
        """Multi-row INSERT IGNORE (the driver batches executemany): a re-run of the same keys adds nothing."""
        sql = f"INSERT IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        return conn.exec_driver_sql(sql, rows).rowcount

    def _insert_rows(self, conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        return self._insert_tuples(conn, table, tuple(rows[0]), [tuple(r.values()) for r in rows])
