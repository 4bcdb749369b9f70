"""基本公共卫生 (public health) and 双向转诊 (referral) systems: one PostgreSQL database, two vendors' schemas.

``PublicHealth`` renders the 公卫 services of the township centres and village clinics (the 云HIS
institutions do 公卫 work) into schema ``gw``, in the style of a provincial 基本公卫 platform: pinyin table
and column names, codes from the 国家基本公共卫生服务规范, 17-digit 健康档案编号 as the patient id,
follow-up forms typed in days late, values re-edited later. ``ReferralPlatform`` renders every referral
into schema ``referral`` of the 医共体 referral platform: one row per 转诊单, its status moving
申请→接收→完成 by separate updates over the following days.

Work that falls on a later day (a late-typed form, a status change, a re-edit) waits in schema
``sim_outbox`` of the same database, so it commits in the same transaction as the day it belongs to and
log-based CDC and watermark collection see realistic commit order. ``sim_outbox`` is simulator machinery,
not part of either vendor system: collection must ignore it.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa

from simulator import answer_key, clinical
from simulator.connections import grant_collector, source_pg_engine
from simulator.dirt import IdentityDirt, recorded_identity
from simulator.events import (
    Correction,
    DayActivity,
    Institution,
    Person,
    PublicHealthService,
    Referral,
)
from simulator.pg_copy import copy_insert
from simulator.systems.base import MemberSystem
from simulator.world import EXTRA_CENTRE, World, villages_of

DATABASE = "public_health"
OUTBOX = "sim_outbox"
OUTBOX_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {OUTBOX}",
    f"""CREATE TABLE IF NOT EXISTS {OUTBOX}.pending (
        source_system text NOT NULL, table_name text NOT NULL, record_id text NOT NULL, action text NOT NULL,
        due_at timestamp NOT NULL, payload jsonb NOT NULL,
        PRIMARY KEY (source_system, table_name, record_id, action))""",
]
ID_NAMESPACE = uuid.UUID("5f1d2c0e-6a53-4c1b-9d0e-410182000000")

# GB/T 2260 乡级区划代码 of 荥阳市 (统计用区划代码 order: 街道 001.., 镇 100.., 乡 200..).
TOWNSHIP_CODES = {
    "京城路街道": "001",
    "索河街道": "002",
    "乔楼镇": "100",
    "豫龙镇": "101",
    "广武镇": "102",
    "王村镇": "103",
    "汜水镇": "104",
    "高山镇": "105",
    "刘河镇": "106",
    "崔庙镇": "107",
    "贾峪镇": "108",
    "城关乡": "200",
    "高村乡": "201",
    "金寨回族乡": "202",
}
SECOND_CENTRE_SUFFIX = "900"  # 汜水镇第二卫生院: the township node plus a branch suffix

# Code lists of the 公卫 platform (table gw.xt_zdxx), 国家基本公共卫生服务规范（第三版）.
CODE_LISTS: dict[str, dict[str, str]] = {
    "XB": {"0": "未知的性别", "1": "男", "2": "女", "9": "未说明的性别"},
    "MZ": {
        "01": "汉族",
        "02": "蒙古族",
        "03": "回族",
        "04": "藏族",
        "05": "维吾尔族",
        "06": "苗族",
        "08": "壮族",
        "11": "满族",
    },
    "CZLX": {"1": "户籍", "2": "非户籍"},
    "DAZT": {"1": "活动", "2": "非活动"},
    "ZFBZ": {"0": "正常", "1": "作废"},
    "SFFS": {"1": "门诊", "2": "家庭", "3": "电话"},
    "FYYCX": {"1": "规律", "2": "间断", "3": "不服药"},
    "YWBLFY": {"1": "无", "2": "有"},
    "GXYZZ": {
        "1": "无症状",
        "2": "头痛头晕",
        "3": "恶心呕吐",
        "4": "眼花耳鸣",
        "5": "呼吸困难",
        "6": "心悸胸闷",
        "7": "鼻衄出血不止",
        "8": "四肢发麻",
        "9": "下肢水肿",
        "10": "其他",
    },
    "SFFL": {"1": "控制满意", "2": "控制不满意", "3": "不良反应", "4": "并发症"},
    "DXTFY": {"1": "无", "2": "偶尔", "3": "频繁"},
    "GLJB": {"1": "一级管理", "2": "二级管理", "3": "三级管理"},
    "GLZT": {"1": "在管", "2": "失访", "3": "死亡", "4": "迁出"},
    "TNBLX": {"1": "1型糖尿病", "2": "2型糖尿病", "3": "妊娠糖尿病", "4": "其他类型"},
    "JKZTPG": {"1": "满意", "2": "基本满意", "3": "说不清楚", "4": "不太满意", "5": "不满意"},
    "SHZLNL": {
        "1": "可自理（0～3分）",
        "2": "轻度依赖（4～8分）",
        "3": "中度依赖（9～18分）",
        "4": "不能自理（≥19分）",
    },
    "JKPJ": {"1": "体检无异常", "2": "有异常"},
    "TZPJ": {"1": "上", "2": "中", "3": "下"},
    "YCFSFLX": {"1": "第1次产前随访", "2": "第2～5次产前随访", "3": "产后访视", "4": "产后42天健康检查"},
    "FWB": {
        "FWB01": "基础服务包",
        "FWB02": "高血压服务包",
        "FWB03": "糖尿病服务包",
        "FWB04": "老年人服务包",
        "FWB05": "0～6岁儿童服务包",
        "FWB06": "孕产妇服务包",
    },
    "QYZT": {"1": "已签约", "2": "已解约", "3": "已到期"},
}

# Table -> (中文名, [(column, SQL type, 中文含义)], primary key). Every table carries cjsj/xgsj and zfbz.
Column = tuple[str, str, str]
_AUDIT: list[Column] = [
    ("zfbz", "varchar(1) NOT NULL DEFAULT '0'", "作废标志 ZFBZ"),
    ("cjsj", "timestamp NOT NULL", "创建时间（录入时间）"),
    ("xgsj", "timestamp NOT NULL", "最后修改时间"),
]
GW_TABLES: dict[str, tuple[str, list[Column], str]] = {
    "xt_jgxx": (
        "机构信息",
        [
            ("jgdm", "varchar(12) NOT NULL", "机构代码（乡镇区划+000 / 村委会区划）"),
            ("jgmc", "varchar(64) NOT NULL", "机构名称"),
            ("jglx", "varchar(1) NOT NULL", "机构类型 1 卫生院/社区卫生服务中心 2 村卫生室"),
            ("sjjgdm", "varchar(12)", "上级机构代码"),
            ("xzqhdm", "varchar(12) NOT NULL", "所在行政区划代码"),
        ],
        "jgdm",
    ),
    "xt_zdxx": (
        "字典信息",
        [
            ("zdlb", "varchar(16) NOT NULL", "字典类别"),
            ("dm", "varchar(8) NOT NULL", "代码"),
            ("mc", "varchar(32) NOT NULL", "名称"),
        ],
        "zdlb, dm",
    ),
    "jkda_grjbxx": (
        "个人基本信息（健康档案）",
        [
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("xm", "varchar(32) NOT NULL", "姓名"),
            ("xb", "varchar(1)", "性别 XB"),
            ("csrq", "date", "出生日期"),
            ("sfzh", "varchar(18)", "身份证号"),
            ("lxdh", "varchar(20)", "联系电话"),
            ("mz", "varchar(2)", "民族 MZ"),
            ("xzz", "varchar(128)", "现住址"),
            ("czlx", "varchar(1)", "常住类型 CZLX"),
            ("ssxzdm", "varchar(9) NOT NULL", "所属乡镇（街道）区划代码"),
            ("sscwhdm", "varchar(12) NOT NULL", "所属村（居）委会区划代码"),
            ("jdrq", "date NOT NULL", "建档日期"),
            ("jdjgdm", "varchar(12) NOT NULL", "建档机构"),
            ("jdys", "varchar(32)", "建档医生"),
            ("zrys", "varchar(32)", "责任医生"),
            ("dazt", "varchar(1) NOT NULL", "档案状态 DAZT"),
        ],
        "grdabh",
    ),
    "gxy_glk": (
        "高血压患者管理卡",
        [
            ("glkbh", "varchar(32) NOT NULL", "管理卡编号"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("qzrq", "date", "确诊日期"),
            ("djrq", "date NOT NULL", "登记日期"),
            ("gljb", "varchar(1)", "管理级别 GLJB"),
            ("glzt", "varchar(1) NOT NULL", "管理状态 GLZT"),
            ("jgdm", "varchar(12) NOT NULL", "管理机构"),
            ("zrys", "varchar(32)", "责任医生"),
        ],
        "glkbh",
    ),
    "gxy_sf": (
        "高血压患者随访服务记录",
        [
            ("sfjlid", "varchar(32) NOT NULL", "随访记录ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("sfrq", "date NOT NULL", "随访日期"),
            ("sffs", "varchar(4)", "随访方式 SFFS"),
            ("zz", "varchar(4)", "症状 GXYZZ"),
            ("ssy", "smallint", "收缩压 mmHg"),
            ("szy", "smallint", "舒张压 mmHg"),
            ("tz", "numeric(5,1)", "体重 kg"),
            ("xl", "smallint", "心率 次/分"),
            ("rxyl", "smallint", "日吸烟量 支"),
            ("ryjl", "smallint", "日饮酒量 两"),
            ("fyycx", "varchar(4)", "服药依从性 FYYCX"),
            ("ywblfy", "varchar(4)", "药物不良反应 YWBLFY"),
            ("cfsffl", "varchar(4)", "此次随访分类 SFFL"),
            ("xcsfrq", "date", "下次随访日期"),
            ("sfys", "varchar(32)", "随访医生"),
            ("jgdm", "varchar(12) NOT NULL", "随访机构"),
        ],
        "sfjlid",
    ),
    "tnb_glk": (
        "2型糖尿病患者管理卡",
        [
            ("glkbh", "varchar(32) NOT NULL", "管理卡编号"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("tnblx", "varchar(1)", "糖尿病类型 TNBLX"),
            ("qzrq", "date", "确诊日期"),
            ("djrq", "date NOT NULL", "登记日期"),
            ("glzt", "varchar(1) NOT NULL", "管理状态 GLZT"),
            ("jgdm", "varchar(12) NOT NULL", "管理机构"),
            ("zrys", "varchar(32)", "责任医生"),
        ],
        "glkbh",
    ),
    "tnb_sf": (
        "2型糖尿病患者随访服务记录",
        [
            ("sfjlid", "varchar(32) NOT NULL", "随访记录ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("sfrq", "date NOT NULL", "随访日期"),
            ("sffs", "varchar(4)", "随访方式 SFFS"),
            ("ssy", "smallint", "收缩压 mmHg"),
            ("szy", "smallint", "舒张压 mmHg"),
            ("tz", "numeric(5,1)", "体重 kg"),
            ("kfxt", "numeric(4,1)", "空腹血糖 mmol/L"),
            ("thxhdb", "numeric(4,1)", "糖化血红蛋白 %"),
            ("fyycx", "varchar(4)", "服药依从性 FYYCX"),
            ("dxtfy", "varchar(4)", "低血糖反应 DXTFY"),
            ("cfsffl", "varchar(4)", "此次随访分类 SFFL"),
            ("xcsfrq", "date", "下次随访日期"),
            ("sfys", "varchar(32)", "随访医生"),
            ("jgdm", "varchar(12) NOT NULL", "随访机构"),
        ],
        "sfjlid",
    ),
    "lnr_tj": (
        "老年人健康体检",
        [
            ("tjjlid", "varchar(32) NOT NULL", "体检记录ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("tjrq", "date NOT NULL", "体检日期"),
            ("ssy", "smallint", "收缩压 mmHg"),
            ("szy", "smallint", "舒张压 mmHg"),
            ("sg", "numeric(4,1)", "身高 cm"),
            ("tz", "numeric(5,1)", "体重 kg"),
            ("yw", "numeric(4,1)", "腰围 cm"),
            ("tzzs", "numeric(4,1)", "体质指数 BMI"),
            ("kfxt", "numeric(4,1)", "空腹血糖 mmol/L"),
            ("jkztpg", "varchar(4)", "老年人健康状态自我评估 JKZTPG"),
            ("shzlnl", "varchar(4)", "生活自理能力 SHZLNL"),
            ("jkpj", "varchar(4)", "健康评价 JKPJ"),
            ("tjys", "varchar(32)", "体检医生"),
            ("jgdm", "varchar(12) NOT NULL", "体检机构"),
        ],
        "tjjlid",
    ),
    "et_jkgl": (
        "0～6岁儿童健康检查记录",
        [
            ("jcjlid", "varchar(32) NOT NULL", "检查记录ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("jcrq", "date NOT NULL", "检查日期"),
            ("yl", "smallint", "月龄"),
            ("tz", "numeric(5,1)", "体重 kg"),
            ("sc", "numeric(4,1)", "身长（身高） cm"),
            ("tw", "numeric(4,1)", "头围 cm（3岁以下）"),
            ("tzpj", "varchar(4)", "体重评价 TZPJ"),
            ("xcsfrq", "date", "下次随访日期"),
            ("jcys", "varchar(32)", "检查医生"),
            ("jgdm", "varchar(12) NOT NULL", "检查机构"),
        ],
        "jcjlid",
    ),
    "ycf_sf": (
        "孕产妇随访记录",
        [
            ("sfjlid", "varchar(32) NOT NULL", "随访记录ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("sfrq", "date NOT NULL", "随访日期"),
            ("sflx", "varchar(4)", "随访类型 YCFSFLX"),
            ("yz", "smallint", "孕周"),
            ("ssy", "smallint", "收缩压 mmHg"),
            ("szy", "smallint", "舒张压 mmHg"),
            ("tz", "numeric(5,1)", "体重 kg"),
            ("xcsfrq", "date", "下次随访日期"),
            ("sfys", "varchar(32)", "随访医生"),
            ("jgdm", "varchar(12) NOT NULL", "随访机构"),
        ],
        "sfjlid",
    ),
    "jtys_qy": (
        "家庭医生签约",
        [
            ("qyid", "varchar(32) NOT NULL", "签约ID"),
            ("grdabh", "varchar(17) NOT NULL", "个人档案编号"),
            ("qyrq", "date NOT NULL", "签约日期"),
            ("ksrq", "date NOT NULL", "协议开始日期"),
            ("jsrq", "date NOT NULL", "协议结束日期"),
            ("tdbh", "varchar(16)", "团队编号"),
            ("tdmc", "varchar(64)", "团队名称"),
            ("qyys", "varchar(32)", "签约医生"),
            ("fwbdm", "varchar(8)", "服务包 FWB"),
            ("qyzt", "varchar(1) NOT NULL", "签约状态 QYZT"),
            ("jyrq", "date", "解约日期"),
            ("jgdm", "varchar(12) NOT NULL", "签约机构"),
        ],
        "qyid",
    ),
}
DICTIONARY_TABLES = ("xt_jgxx", "xt_zdxx")

# Service kind -> the table it lands in, the primary-key column and the date column.
SERVICE_TABLES = {
    "htn_followup": ("gxy_sf", "sfjlid", "sfrq"),
    "dm_followup": ("tnb_sf", "sfjlid", "sfrq"),
    "elderly_check": ("lnr_tj", "tjjlid", "tjrq"),
    "child_check": ("et_jkgl", "jcjlid", "jcrq"),
    "maternal_followup": ("ycf_sf", "sfjlid", "sfrq"),
    "contract": ("jtys_qy", "qyid", "qyrq"),
}
SERVICE_DATE = {table: date_column for table, _, date_column in SERVICE_TABLES.values()}
FORM_TABLES = {"gxy_sf", "tnb_sf", "lnr_tj", "et_jkgl", "ycf_sf"}  # paper forms: typed in late, re-edited
PRIMARY_KEYS = {t: spec[2] for t, spec in GW_TABLES.items()}
CORRECTABLE_TABLES = ("jkda_grjbxx", *(table for table, _, _ in SERVICE_TABLES.values()))
# Coded columns that may carry a value outside the code list (unknown_local_code), with what turns up there.
UNKNOWN_CODES = {
    "gxy_sf": [("sffs", ("4", "门诊")), ("fyycx", ("0", "4"))],
    "tnb_sf": [("sffs", ("4", "家庭")), ("fyycx", ("0",)), ("dxtfy", ("0", "4"))],
    "lnr_tj": [("jkztpg", ("0", "6")), ("shzlnl", ("0", "5"))],
    "et_jkgl": [("tzpj", ("0", "4", "中"))],
    "ycf_sf": [("sflx", ("0", "5"))],
    "jtys_qy": [("fwbdm", ("JC01", "FWB99"))],
}
ADHERENCE = {"regular": "1", "intermittent": "2", "none": "3", "1": "1", "2": "2", "3": "3"}
VISIT_WAYS = {"clinic": "1", "home": "2", "phone": "3", "1": "1", "2": "2", "3": "3"}
MATERNAL_STAGES = {
    "prenatal_first": "1",
    "prenatal": "2",
    "postpartum": "3",
    "postpartum_42d": "4",
    "1": "1",
    "2": "2",
    "3": "3",
    "4": "4",
}
PACKAGES = {
    "basic": "FWB01",
    "hypertension": "FWB02",
    "diabetes": "FWB03",
    "elderly": "FWB04",
    "child": "FWB05",
    "maternal": "FWB06",
}

# Referral platform codes.
REFERRAL_TYPES = {"up": "01", "down": "02"}
REJECT_REASONS = ("床位已满", "病情不符合转入条件", "患者拒绝转诊")
# ICD-10 三位类目 -> name as the referring doctor types it (the platform keeps 4-character codes).
REFERRAL_DIAGNOSES = {
    "I10": "高血压",
    "I11": "高血压性心脏病",
    "E11": "2型糖尿病",
    "I20": "心绞痛",
    "I21": "急性心肌梗死",
    "I25": "冠心病",
    "I50": "心力衰竭",
    "I61": "脑出血",
    "I63": "脑梗死",
    "I69": "脑血管病后遗症",
    "J06": "急性上呼吸道感染",
    "J18": "肺炎",
    "J20": "急性支气管炎",
    "J44": "慢性阻塞性肺疾病",
    "J45": "支气管哮喘",
    "K29": "胃炎",
    "K35": "急性阑尾炎",
    "K80": "胆囊结石",
    "K92": "消化道出血",
    "M54": "腰痛",
    "M17": "膝关节骨性关节炎",
    "K52": "胃肠炎",
    "L30": "皮炎",
    "H10": "结膜炎",
    "K02": "龋齿",
    "R51": "头痛",
    "N18": "慢性肾脏病",
    "N39": "泌尿系感染",
    "S72": "股骨骨折",
    "S82": "小腿骨折",
    "C34": "肺癌",
    "C16": "胃癌",
    "O80": "单胎顺产",
    "Z48": "术后随诊",
    "Z51": "康复治疗",
}
REFERRAL_TABLE: tuple[str, list[Column], str] = (
    "双向转诊记录",
    [
        ("zzdh", "varchar(20) NOT NULL", "转诊单号"),
        ("zzlx", "varchar(2) NOT NULL", "转诊类型 01 上转 02 下转"),
        ("zcjgbm", "varchar(12) NOT NULL", "转出机构编码"),
        ("zcjgmc", "varchar(64)", "转出机构名称"),
        ("zcys", "varchar(32)", "转出医生"),
        ("zrjgbm", "varchar(12)", "转入机构编码"),
        ("zrjgmc", "varchar(64)", "转入机构名称"),
        ("hzxm", "varchar(32) NOT NULL", "患者姓名"),
        ("hzxb", "varchar(2)", "患者性别 男/女"),
        ("hznl", "smallint", "年龄（岁）"),
        ("hzsfzh", "varchar(18)", "患者身份证号"),
        ("hzlxdh", "varchar(20)", "联系电话"),
        ("hzzz", "varchar(128)", "住址"),
        ("zdbm", "varchar(8)", "诊断编码 ICD-10 四位码"),
        ("zdmc", "varchar(64)", "诊断名称"),
        ("zzyy", "varchar(64)", "转诊原因"),
        ("zt", "varchar(1) NOT NULL", "状态 1 待接收 2 已接收 3 已完成 4 已拒收 5 已撤销"),
        ("sqsj", "timestamp NOT NULL", "申请时间"),
        ("jssj", "timestamp", "接收（拒收）时间"),
        ("jsys", "varchar(32)", "接收医生"),
        ("jjyy", "varchar(64)", "拒收原因"),
        ("wcsj", "timestamp", "完成时间"),
        ("cxsj", "timestamp", "撤销时间"),
        ("bz", "varchar(128)", "备注"),
        ("xgsj", "timestamp NOT NULL", "最后修改时间"),
    ],
    "zzdh",
)
REFERRAL_ORG_TABLE: tuple[str, list[Column], str] = (
    "医共体成员单位",
    [
        ("jgbm", "varchar(12) NOT NULL", "机构编码 XYYGT+层级+序号"),
        ("jgmc", "varchar(64) NOT NULL", "机构名称"),
        ("jgcj", "varchar(2) NOT NULL", "层级 01 县级医院 02 乡镇卫生院/社区中心 03 村卫生室"),
        ("sjjgbm", "varchar(12)", "上级机构编码"),
    ],
    "jgbm",
)
# Transitions of a 转诊单 kept in the outbox: action -> (state required, new state, time column).
TRANSITIONS = {"accept": ("1", "2", "jssj"), "reject": ("1", "4", "jssj"), "complete": ("2", "3", "wcsj")}


# --- shared helpers -----------------------------------------------------------------------------------
def _table_ddl(schema: str, name: str, spec: tuple[str, list[Column], str]) -> list[str]:
    """CREATE TABLE with Chinese table/column comments, as vendors ship them, plus the xgsj index."""
    title, columns, pk = spec
    body = ", ".join(f"{c} {t}" for c, t, _ in columns)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {schema}.{name} ({body}, PRIMARY KEY ({pk}))",
        f"COMMENT ON TABLE {schema}.{name} IS '{title}'",
    ]
    statements += [f"COMMENT ON COLUMN {schema}.{name}.{c} IS '{meaning}'" for c, _, meaning in columns]
    if any(c == "xgsj" for c, _, _ in columns):
        statements.append(f"CREATE INDEX IF NOT EXISTS ix_{name}_xgsj ON {schema}.{name} (xgsj)")
    if any(c == "grdabh" for c, _, _ in columns) and name != "jkda_grjbxx":
        statements.append(f"CREATE INDEX IF NOT EXISTS ix_{name}_grdabh ON {schema}.{name} (grdabh)")
    return statements


def _insert(conn: sa.Connection, schema: str, table: str, rows: list[dict[str, Any]]) -> int:
    """Bulk insert keeping what is there (a repeated day cannot duplicate rows), in the day's transaction."""
    if not rows:
        return 0
    columns = list(rows[0])
    with conn.connection.dbapi_connection.cursor() as cursor:
        copy_insert(cursor, f"{schema}.{table}", columns, ([row[c] for c in columns] for row in rows))
    return len(rows)


def _record_id(source_system: str, uid: str) -> str:
    """The vendor's 32-hex GUID primary key, derived from the event so a re-run writes the same key."""
    return uuid.uuid5(ID_NAMESPACE, f"{source_system}:{uid}").hex


def _json(row: dict[str, Any]) -> str:
    return json.dumps(
        row, ensure_ascii=False, default=lambda v: v.isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
    )


def _at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time())


def _one_year_after(day: date) -> date:
    return day.replace(year=day.year + 1, day=28 if (day.month, day.day) == (2, 29) else day.day)


def _office_hours(rng: random.Random, at: datetime) -> datetime:
    """The referral desk acts 08:00-18:00: a step falling outside waits for the next morning."""
    if 8 <= at.hour < 18:
        return at.replace(microsecond=0)
    morning = datetime.combine(at.date() + timedelta(days=at.hour >= 18), time(8))
    return morning + timedelta(seconds=rng.randrange(2 * 3600))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _reset_outbox(conn: sa.Connection, source_system: str) -> None:
    for ddl in OUTBOX_DDL:
        conn.execute(sa.text(ddl))
    conn.execute(sa.text(f"DELETE FROM {OUTBOX}.pending WHERE source_system = :s"), {"s": source_system})


def _people(world: World, activity: DayActivity) -> ChainMap[int, Person]:
    """Residents by id, including anyone appearing today (newborns are not yet in the world's map)."""
    return ChainMap({p.resident_id: p for p in activity.new_people}, world.people)


@dataclass
class _Day:
    """Rows and outbox entries of one day being rendered."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def defer(
        self, source_system: str, table: str, record_id: str, action: str, due_at: datetime, payload: dict[str, Any]
    ) -> None:
        self.pending.append(
            {
                "source_system": source_system,
                "table_name": table,
                "record_id": record_id,
                "action": action,
                "due_at": due_at,
                "payload": _json(payload),
            }
        )


@dataclass
class _Archives:
    """Who holds which archive and card, as of the end of ``day``: read once, then carried day to day."""

    day: date
    archive_of: dict[int, str]  # resident -> newest archive number
    seq: dict[str, int]  # 12-digit village prefix -> last sequence number issued
    htn_cards: set[int]  # residents with a 高血压 管理卡
    dm_cards: set[int]  # residents with a 糖尿病 管理卡


# --- 基本公卫 -----------------------------------------------------------------------------------------
class PublicHealth(MemberSystem):
    """The 基本公卫 platform: archives, chronic-disease registries and follow-ups, checks, contracts."""

    source_system = "public_health"
    schema = "gw"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        # No institution runs this system; the 云HIS institutions (卫生院, 社区中心, 村卫生室) do 公卫 work.
        self.institutions = {i.org_code: i for i in world.institutions if i.source_system == "cloud_his"}
        self.database = config.get("database", DATABASE)
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        self.re_registration = float(config.get("re_registration", 0.005))
        self.unknown_local_code = float(config.get("unknown_local_code", 0.005))
        self.late_submission = float(config.get("late_submission", 0.08))
        self.late_max_days = int(config.get("late_max_days", 14))
        self.correction_update = float(config.get("correction_update", 0.01))
        self.followup_after_death = float(config.get("followup_after_death", 0.0))
        villages = villages_of(world.institutions)
        self.village_codes = {
            (t, v): f"{i + (1 if t.endswith('街道') else 200):03d}"
            for t, names in villages.items()
            for i, v in enumerate(names)
        }
        self.org_codes = {code: self._org_code(inst) for code, inst in self.institutions.items()}
        self.staff_names = {s.staff_id: s.name for members in world.staff.values() for s in members}
        self._carried: _Archives | None = None

    # --- codes --------------------------------------------------------------------------------------
    def _org_code(self, inst: Institution) -> str:
        """12-digit 机构代码: the township's 区划 + 000 for a centre, the 村委会's 区划 for a village clinic."""
        township = f"410182{TOWNSHIP_CODES[inst.township]}"
        if inst.org_type == "村卫生室":
            return township + self.village_codes[(inst.township, inst.name[len(inst.township) : -len("卫生室")])]
        return township + (SECOND_CENTRE_SUFFIX if inst.name == EXTRA_CENTRE[1] else "000")

    def _area_codes(self, person: Person) -> tuple[str, str]:
        """(乡镇 9-digit, 村委会 12-digit) 区划 of the resident's home: the 辖区 that owns the archive."""
        township = f"410182{TOWNSHIP_CODES.get(person.township, '999')}"
        return township, township + self.village_codes.get((person.township, person.village), "000")

    # --- storage ------------------------------------------------------------------------------------
    def engine(self) -> sa.Engine:
        return source_pg_engine(self.database)

    def create_schema(self, reset: bool = False) -> None:
        with self.engine().begin() as conn:
            if reset:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
                _reset_outbox(conn, self.source_system)
                self._carried = None
            for ddl in OUTBOX_DDL:
                conn.execute(sa.text(ddl))
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
            grant_collector(conn, self.source_system, self.schema)
            for name, spec in GW_TABLES.items():
                columns = spec[1] if name in DICTIONARY_TABLES else spec[1] + _AUDIT
                for ddl in _table_ddl(self.schema, name, (spec[0], columns, spec[2])):
                    conn.execute(sa.text(ddl))
            _insert(
                conn,
                self.schema,
                "xt_zdxx",
                [{"zdlb": k, "dm": dm, "mc": mc} for k, codes in CODE_LISTS.items() for dm, mc in codes.items()],
            )
            _insert(
                conn,
                self.schema,
                "xt_jgxx",
                [
                    {
                        "jgdm": self.org_codes[c],
                        "jgmc": "荥阳市" + i.name,
                        "jglx": "2" if i.parent_code else "1",
                        "sjjgdm": self.org_codes.get(i.parent_code),
                        "xzqhdm": self.org_codes[c][:9] + (self.org_codes[c][9:] if i.parent_code else "000"),
                    }
                    for c, i in self.institutions.items()
                ],
            )

    def _archives(self, conn: sa.Connection, day: date) -> _Archives:
        """Archive state before ``day``: carried over from the previous day written, else read back.

        All archive numbers of a resident (duplicates included) share the home-village prefix, so the
        highest number is the newest one. The full local id -> resident map (not ``known_patients``, which
        keeps one id per institution) lets a card under an older duplicate archive still count.
        """
        if self._carried is not None and self._carried.day == day - timedelta(days=1):
            return self._carried
        with source_pg_engine(answer_key.DATABASE).connect() as truth:
            resident_of = dict(
                truth.execute(
                    sa.text("SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = :s"),
                    {"s": self.source_system},
                ).all()
            )
        archive_of: dict[int, str] = {}
        for archive, resident in resident_of.items():
            if archive > archive_of.get(resident, ""):
                archive_of[resident] = archive
        seq = dict(
            conn.execute(
                sa.text(
                    f"SELECT left(grdabh, 12), max(right(grdabh, 5)::int) FROM {self.schema}.jkda_grjbxx "
                    "WHERE jdrq < :d GROUP BY 1"
                ),
                {"d": day},
            ).all()
        )
        cards = []
        for table in ("gxy_glk", "tnb_glk"):
            archives = conn.execute(sa.text(f"SELECT grdabh FROM {self.schema}.{table}")).scalars()
            cards.append({resident_of[a] for a in archives if a in resident_of})
        return _Archives(day - timedelta(days=1), archive_of, seq, cards[0], cards[1])

    # --- the day ------------------------------------------------------------------------------------
    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        key = answer_key.AnswerKey(self.source_system, day)
        people = _people(self.world, activity)
        out = _Day()
        reviews: list[dict[str, Any]] = []
        with self.engine().begin() as conn:
            state, self._carried = self._archives(conn, day), None  # dropped if this day fails
            archive_of, seq = state.archive_of, state.seq
            services = sorted(
                (s for s in activity.services if s.org_code in self.institutions), key=lambda s: (s.at, s.service_uid)
            )
            local_ids: dict[str, str] = {}
            for service in services:
                rng = self.rng(day, service.service_uid)
                person = people[service.resident_id]
                archive = archive_of.get(person.resident_id)
                if archive is None or rng.random() < self.re_registration:
                    prefix = self._area_codes(person)[1]
                    seq[prefix] = seq.get(prefix, 0) + 1
                    new_archive = f"{prefix}{seq[prefix]:05d}"
                    if archive is not None:
                        key.defect(f"{self.schema}.jkda_grjbxx", new_archive, "re_registration", f"also {archive}")
                    archive = archive_of[person.resident_id] = new_archive
                    out.add("jkda_grjbxx", self._archive_row(rng, person, archive, service, key))
                    key.patient(archive, person.resident_id, service.org_code)
                elif service.kind == "filing":
                    # 档案复核: the doctor reviews an existing archive and becomes its 责任医生 (no record of its own).
                    reviews.append(
                        {"grdabh": archive, "zrys": self._doctor(service), "xgsj": self._entered(rng, service.at)}
                    )
                    continue
                local_ids[service.service_uid] = self._render(
                    rng, service, person, archive, out, key, state.htn_cards, state.dm_cards
                )
                key.encounter(local_ids[service.service_uid], service.service_uid)
            for service, died_on in self._followups_after_death(day, state):
                table = SERVICE_TABLES[service.kind][0]
                record_id = self._render(
                    self.rng(day, service.service_uid),
                    service,
                    people[service.resident_id],
                    archive_of[service.resident_id],
                    out,
                    key,
                    state.htn_cards,
                    state.dm_cards,
                )
                key.defect(f"{self.schema}.{table}", record_id, "followup_after_death", f"died {died_on}")
            counts = {f"{self.schema}.{t}": _insert(conn, self.schema, t, rows) for t, rows in out.rows.items()}
            if reviews:
                conn.execute(
                    sa.text(
                        f"UPDATE {self.schema}.jkda_grjbxx SET zrys = :zrys, xgsj = :xgsj "
                        "WHERE grdabh = :grdabh AND xgsj < :xgsj"
                    ),
                    reviews,
                )
            counts["archive_reviews"] = len(reviews)
            counts["outbox_new"] = len(out.pending)
            _insert(conn, OUTBOX, "pending", out.pending)
            counts["corrections"] = self._apply_corrections(conn, activity.corrections, local_ids, key)
            counts.update(self._apply_due(conn, day, key))
        key.flush()
        answer_key.mark_day_written(self.source_system, day)
        state.day, self._carried = day, state
        return counts

    def _followups_after_death(self, day: date, state: _Archives) -> list[tuple[PublicHealthService, date]]:
        """Fabricated follow-ups (虚假随访): a card holder who died in hospital is still "followed up" on paper.

        Only deaths the platform can know of (an inpatient stay ending 死亡) are used, on weekdays, each dead
        card holder with probability ``followup_after_death`` per day."""
        if not self.followup_after_death or day.weekday() >= 5:
            return []
        deaths = self._hospital_deaths(day)
        rng = self.rng(day, "followup_after_death")
        centres = {
            i.township: code
            for code, i in self.institutions.items()
            if i.org_type in ("乡镇卫生院", "社区卫生服务中心") and "第二" not in i.name
        }
        fabricated = []
        for resident_id, died_on in deaths:
            kind = (
                "htn_followup"
                if resident_id in state.htn_cards
                else "dm_followup"
                if resident_id in state.dm_cards
                else None
            )
            person = self.world.people.get(resident_id)
            if (
                kind is None
                or person is None
                or resident_id not in state.archive_of
                or person.township not in centres
                or rng.random() >= self.followup_after_death
            ):
                continue
            org = centres[person.township]
            at = datetime.combine(day, time(8, 30)) + timedelta(seconds=rng.randrange(8 * 3600))
            values: dict[str, float | str] = (
                {"sbp": round(rng.gauss(132, 10)), "dbp": round(rng.gauss(78, 6))}
                if kind == "htn_followup"
                else {"fbg": round(rng.gauss(6.8, 1), 1)}
            )
            fabricated.append(
                (
                    PublicHealthService(
                        f"SAD{day:%Y%m%d}{resident_id}",
                        resident_id,
                        org,
                        kind,
                        at,
                        rng.choice(self.world.doctors(org)).staff_id,
                        values,
                    ),
                    died_on,
                )
            )
        return fabricated

    @staticmethod
    def _hospital_deaths(day: date) -> list[tuple[int, date]]:
        """(resident, day of death) of every inpatient stay that ended 死亡 before ``day`` (the answer key)."""
        with source_pg_engine(answer_key.DATABASE).connect() as truth:
            return [
                tuple(r)
                for r in truth.execute(
                    sa.text(
                        "SELECT resident_id, max(end_at)::date FROM event_encounter WHERE discharge_status = '死亡' "
                        "AND end_at::date < :day GROUP BY resident_id ORDER BY resident_id"
                    ),
                    {"day": day},
                )
            ]

    def _doctor(self, service: PublicHealthService) -> str | None:
        return self.staff_names.get(service.doctor_id)

    @staticmethod
    def _entered(rng: random.Random, at: datetime) -> datetime:
        """When the doctor saves the form in the system: a few minutes after the service, the same day."""
        saved = at + timedelta(minutes=rng.randint(2, 25), seconds=rng.randrange(60))
        return min(saved, _end_of(at.date()) - timedelta(seconds=1)).replace(microsecond=0)

    def _archive_row(
        self, rng: random.Random, person: Person, archive: str, service: PublicHealthService, key: answer_key.AnswerKey
    ) -> dict[str, Any]:
        recorded = recorded_identity(rng, person, self.identity_dirt)
        for name, detail in recorded.defects:
            key.defect(f"{self.schema}.jkda_grjbxx", archive, name, detail)
        township, village = self._area_codes(person)
        created = self._entered(rng, service.at)
        return {
            "grdabh": archive,
            "xm": recorded.name,
            "xb": str(recorded.sex),
            "csrq": recorded.birth_date,
            "sfzh": recorded.id_number,
            "lxdh": recorded.phone,
            "mz": "03" if person.ethnicity == "回族" else "01",
            "xzz": recorded.address,
            "czlx": "1" if person.id_number.startswith("410182") else "2",
            "ssxzdm": township,
            "sscwhdm": village,
            "jdrq": service.at.date(),
            "jdjgdm": self.org_codes[service.org_code],
            "jdys": self._doctor(service),
            "zrys": self._doctor(service),
            "dazt": "1",
            "zfbz": "0",
            "cjsj": created,
            "xgsj": created,
        }

    def _render(
        self,
        rng: random.Random,
        service: PublicHealthService,
        person: Person,
        archive: str,
        out: _Day,
        key: answer_key.AnswerKey,
        htn_cards: set[int],
        dm_cards: set[int],
    ) -> str:
        """Render one service into its table; return the local record id (the archive for a filing)."""
        if service.kind == "filing":
            return archive
        table, pk, _ = SERVICE_TABLES[service.kind]
        record_id = _record_id(self.source_system, service.service_uid)
        created = self._entered(rng, service.at)
        row: dict[str, Any] = {pk: record_id, "grdabh": archive}
        row.update(self._values(rng, service, person))
        row.update({"jgdm": self.org_codes[service.org_code], "zfbz": "0", "cjsj": created, "xgsj": created})
        card_holders = {"htn_followup": htn_cards, "dm_followup": dm_cards}.get(service.kind)
        if card_holders is not None and person.resident_id not in card_holders:
            card_holders.add(person.resident_id)
            out.add(
                "gxy_glk" if service.kind == "htn_followup" else "tnb_glk",
                self._card(rng, service, person, archive, row, created),
            )
        for column, bad_values in UNKNOWN_CODES.get(table, []):
            if rng.random() < self.unknown_local_code / len(UNKNOWN_CODES[table]):
                row[column] = rng.choice(bad_values)
                key.defect(f"{self.schema}.{table}", record_id, "unknown_local_code", f"{column}={row[column]}")
        if table in FORM_TABLES and rng.random() < self.late_submission:
            lag = min(self.late_max_days, 2 + int(rng.expovariate(1 / 3)))
            entered = datetime.combine(service.at.date() + timedelta(days=lag), time(8, 30)) + timedelta(
                seconds=rng.randrange(9 * 3600)
            )
            row["cjsj"] = row["xgsj"] = entered
            out.defer(self.source_system, table, record_id, "insert", entered, row)
        else:
            out.add(table, row)
        if table in FORM_TABLES and rng.random() < self.correction_update:
            edit_at = _at(row["cjsj"]) + timedelta(days=rng.randint(1, 10), minutes=rng.randrange(600))
            out.defer(self.source_system, table, record_id, "update", edit_at, {"reason": "随访数据修改"})
        return record_id

    def _card(
        self,
        rng: random.Random,
        service: PublicHealthService,
        person: Person,
        archive: str,
        followup: dict[str, Any],
        created: datetime,
    ) -> dict[str, Any]:
        """管理卡 created with a resident's first follow-up (diagnosed some years before)."""
        diagnosed = service.at.date() - timedelta(days=rng.randrange(30, 15 * 365))
        card: dict[str, Any] = {
            "glkbh": _record_id(self.source_system, f"{service.kind}-card:{archive}"),
            "grdabh": archive,
            "qzrq": max(diagnosed, person.birth_date),
            "djrq": service.at.date(),
            "glzt": "1",
            "jgdm": self.org_codes[service.org_code],
            "zrys": self._doctor(service),
            "zfbz": "0",
            "cjsj": created,
            "xgsj": created,
        }
        if service.kind == "htn_followup":
            sbp = followup.get("ssy") or 140
            card["gljb"] = "3" if sbp >= 180 else "2" if sbp >= 160 else "1"
        else:
            card["tnblx"] = "2"
        return card

    def _values(self, rng: random.Random, service: PublicHealthService, person: Person) -> dict[str, Any]:
        """Form fields from the service's values; what the event does not say is drawn plausibly."""
        v = service.values
        on = service.at.date()
        doctor = self._doctor(service)

        def num(name: str, mean: float, sd: float, low: float, high: float, digits: int = 1) -> float:
            value = float(v[name]) if name in v else _clamp(rng.gauss(mean, sd), low, high)
            return round(value, digits) if digits else round(value)

        way = VISIT_WAYS.get(str(v.get("way", "")), rng.choices("123", (55, 30, 15))[0])
        adherence = ADHERENCE.get(str(v.get("adherence", "")), rng.choices("123", (75, 20, 5))[0])
        if service.kind == "htn_followup":
            sbp, dbp = num("sbp", 142, 16, 95, 220, 0), num("dbp", 86, 10, 55, 130, 0)
            dbp = min(dbp, sbp - clinical.MIN_PULSE_PRESSURE)
            reaction = "2" if rng.random() < 0.03 else "1"
            controlled = sbp < 140 and dbp < 90
            return {
                "sfrq": on,
                "sffs": way,
                "zz": rng.choices(("1", "2", "6", "8"), (70, 18, 7, 5))[0],
                "ssy": sbp,
                "szy": dbp,
                "tz": num("weight_kg", 66, 10, 38, 130),
                "xl": num("heart_rate", 76, 9, 48, 130, 0),
                "rxyl": rng.choice((0, 0, 0, 0, 5, 10, 20)),
                "ryjl": rng.choice((0, 0, 0, 0, 1, 2)),
                "fyycx": adherence,
                "ywblfy": reaction,
                "cfsffl": "3" if reaction == "2" else "1" if controlled else "2",
                "xcsfrq": on + timedelta(days=90 if controlled else 14),
                "sfys": doctor,
            }
        if service.kind == "dm_followup":
            fbg = num("fbg", 7.6, 1.8, 3.5, 20.0)
            controlled = fbg < 7.0
            sbp = num("sbp", 136, 15, 95, 210, 0)
            return {
                "sfrq": on,
                "sffs": way,
                "ssy": sbp,
                "szy": min(num("dbp", 82, 9, 55, 125, 0), sbp - clinical.MIN_PULSE_PRESSURE),
                "tz": num("weight_kg", 68, 10, 38, 130),
                "kfxt": fbg,
                "thxhdb": num("hba1c", 7.3, 1.2, 4.5, 14.0) if "hba1c" in v or rng.random() < 0.3 else None,
                "fyycx": adherence,
                "dxtfy": rng.choices("123", (90, 9, 1))[0],
                "cfsffl": "1" if controlled else "2",
                "xcsfrq": on + timedelta(days=90 if controlled else 14),
                "sfys": doctor,
            }
        if service.kind == "elderly_check":
            height = num("height_cm", 168 if person.sex == 1 else 156, 6, 135, 190)
            weight = num("weight_kg", 64, 10, 35, 120)
            sbp, dbp = num("sbp", 138, 18, 95, 220, 0), num("dbp", 80, 10, 50, 130, 0)
            dbp = min(dbp, sbp - clinical.MIN_PULSE_PRESSURE)
            fbg = num("fbg", 5.9, 1.3, 3.5, 20.0)
            abnormal = sbp >= 140 or dbp >= 90 or fbg >= 7.0
            return {
                "tjrq": on,
                "ssy": sbp,
                "szy": dbp,
                "sg": height,
                "tz": weight,
                "yw": num("waist_cm", 86, 9, 60, 130),
                "tzzs": round(weight / (height / 100) ** 2, 1),
                "kfxt": fbg,
                "jkztpg": rng.choices("12345", (35, 45, 10, 8, 2))[0],
                "shzlnl": rng.choices("1234", (88, 8, 3, 1))[0],
                "jkpj": "2" if abnormal else "1",
                "tjys": doctor,
            }
        if service.kind == "child_check":
            months = max(
                0,
                (on.year - person.birth_date.year) * 12
                + on.month
                - person.birth_date.month
                - (on.day < person.birth_date.day),
            )
            weight = num(
                "weight_kg",
                3.3 + 0.6 * min(months, 6) + 0.25 * max(0, min(months, 12) - 6) + 0.18 * max(0, months - 12),
                0.6,
                2.0,
                35.0,
            )
            height = num(
                "height_cm",
                50 + 2.6 * min(months, 6) + 1.2 * max(0, min(months, 12) - 6) + 0.6 * max(0, months - 12),
                2.5,
                45,
                130,
            )
            next_months = 3 if months < 12 else 6 if months < 36 else 12
            return {
                "jcrq": on,
                "yl": months,
                "tz": weight,
                "sc": height,
                "tw": num("head_cm", 34 + 8 * min(months, 12) / 12 + 0.2 * max(0, months - 12) / 2, 1.2, 30, 55)
                if months < 36
                else None,
                "tzpj": rng.choices("123", (15, 75, 10))[0],
                "xcsfrq": on + timedelta(days=30 * next_months),
                "jcys": doctor,
            }
        if service.kind == "maternal_followup":
            stage = MATERNAL_STAGES.get(str(v.get("stage", "")), rng.choices("1234", (20, 50, 20, 10))[0])
            week = (
                num("gestational_week", 10 if stage == "1" else 26, 2 if stage == "1" else 7, 6, 41, 0)
                if stage in ("1", "2")
                else None
            )
            return {
                "sfrq": on,
                "sflx": stage,
                "yz": week,
                "ssy": num("sbp", 114, 10, 85, 170, 0),
                "szy": num("dbp", 72, 8, 50, 110, 0),
                "tz": num("weight_kg", 62, 8, 40, 110),
                "xcsfrq": on + timedelta(days=28) if stage in ("1", "2") else None,
                "sfys": doctor,
            }
        # contract
        age = clinical.completed_years(person.birth_date, on)
        default = (
            "hypertension"
            if person.hypertension
            else "diabetes"
            if person.diabetes
            else "elderly"
            if age >= 65
            else "child"
            if age <= 6
            else "basic"
        )
        start = date.fromisoformat(str(v["start"])) if "start" in v else on
        end = date.fromisoformat(str(v["end"])) if "end" in v else _one_year_after(start) - timedelta(days=1)
        team = int(v.get("team", 1 + int(self._area_codes(person)[1][-3:]) % 3))
        org = self.org_codes[service.org_code]
        return {
            "qyrq": on,
            "ksrq": start,
            "jsrq": end,
            "tdbh": f"{org}T{team:02d}",
            "tdmc": f"{self.institutions[service.org_code].name}第{team}家庭医生团队",
            "qyys": doctor,
            "fwbdm": PACKAGES.get(str(v.get("package", "")), PACKAGES[default]),
            "qyzt": "1",
            "jyrq": None,
        }

    # --- later changes ------------------------------------------------------------------------------
    def _apply_corrections(
        self, conn: sa.Connection, corrections: list[Correction], today: dict[str, str], key: answer_key.AnswerKey
    ) -> int:
        """Apply the day's corrections whose target is one of this system's records."""
        targets = {c.target_uid for c in corrections}
        local = {
            **answer_key.local_encounter_ids(self.source_system, sorted(targets - set(today))),
            **{u: i for u, i in today.items() if u in targets},
        }
        applied = 0
        for correction in sorted(corrections, key=lambda c: (c.at, c.target_uid)):
            record_id = local.get(correction.target_uid)
            if record_id is not None:
                rng = self.rng(correction.at.date(), f"correction:{correction.target_uid}")
                applied += self._correct(conn, record_id, correction.kind, correction.at, correction.reason, rng, key)
        return applied

    def _correct(
        self,
        conn: sa.Connection,
        record_id: str,
        kind: str,
        at: datetime,
        reason: str,
        rng: random.Random,
        key: answer_key.AnswerKey,
    ) -> int:
        """Re-edit (update) or 作废 (cancel) one record, in its table or still waiting to be typed in."""
        for table in CORRECTABLE_TABLES:
            pk = PRIMARY_KEYS[table]
            row = (
                conn.execute(sa.text(f"SELECT * FROM {self.schema}.{table} WHERE {pk} = :id"), {"id": record_id})
                .mappings()
                .first()
            )
            waiting = None
            if row is None and table in FORM_TABLES:
                waiting = conn.execute(
                    sa.text(
                        f"SELECT payload FROM {OUTBOX}.pending WHERE source_system = :s AND table_name = :t "
                        "AND record_id = :id AND action = 'insert'"
                    ),
                    {"s": self.source_system, "t": table, "id": record_id},
                ).scalar()
            if row is None and waiting is None:
                continue
            current = dict(row) if row is not None else waiting
            changes = self._changes(table, current, kind, at, rng)
            detail = f"{reason}: " + ", ".join(f"{c} {current.get(c)}->{v}" for c, v in changes.items())
            if row is not None:
                changes["xgsj"] = max(at.replace(microsecond=0), _at(row["xgsj"]) + timedelta(seconds=1))
                assignments = ", ".join(f"{c} = :{c}" for c in changes)
                conn.execute(
                    sa.text(f"UPDATE {self.schema}.{table} SET {assignments} WHERE {pk} = :id"),
                    {**changes, "id": record_id},
                )
            else:
                conn.execute(
                    sa.text(
                        f"UPDATE {OUTBOX}.pending SET payload = CAST(:p AS jsonb) WHERE source_system = :s "
                        "AND table_name = :t AND record_id = :id AND action = 'insert'"
                    ),
                    {"p": _json({**current, **changes}), "s": self.source_system, "t": table, "id": record_id},
                )
            key.defect(f"{self.schema}.{table}", record_id, f"correction_{kind}", detail)
            return 1
        return 0

    def _changes(self, table: str, row: dict[str, Any], kind: str, at: datetime, rng: random.Random) -> dict[str, Any]:
        """The columns a correction changes: 作废 flags, or the re-typed values of a follow-up."""
        if kind == "cancel":
            return {"qyzt": "2", "jyrq": at.date()} if table == "jtys_qy" else {"zfbz": "1"}
        if table == "jkda_grjbxx":
            org = next((c for c, g in self.org_codes.items() if g == row["jdjgdm"]), None)
            names = [d.name for d in self.world.doctors(org)] if org else []
            return {"zrys": rng.choice(names)} if names else {}
        if table == "jtys_qy":
            return {"fwbdm": rng.choice([p for p in CODE_LISTS["FWB"] if p != row["fwbdm"]])}
        if table == "tnb_sf" and row.get("kfxt") is not None:
            fbg = round(_clamp(float(row["kfxt"]) + rng.choice((-1, 1)) * rng.uniform(0.3, 1.5), 3.0, 25.0), 1)
            changes: dict[str, Any] = {"kfxt": fbg}
            if row.get("cfsffl") in ("1", "2"):
                changes["cfsffl"] = "1" if fbg < 7.0 else "2"
            return changes
        if table == "et_jkgl" and row.get("tz") is not None:
            return {"tz": round(float(row["tz"]) + rng.choice((-1, 1)) * rng.uniform(0.1, 0.6), 1)}
        if row.get("ssy") is not None:
            sbp = int(row["ssy"]) + rng.choice((-12, -10, -8, -6, -4, 4, 6, 8, 10, 12))
            dbp = int(row["szy"]) + rng.choice((-6, -4, -2, 0, 2, 4, 6)) if row.get("szy") is not None else None
            changes = {"ssy": sbp, "szy": dbp}
            if table == "gxy_sf" and row.get("cfsffl") in ("1", "2"):
                changes["cfsffl"] = "1" if sbp < 140 and (dbp or 0) < 90 else "2"
            return changes
        return {}

    def _apply_due(self, conn: sa.Connection, day: date, key: answer_key.AnswerKey) -> dict[str, int]:
        """Type in the late forms, then make the re-edits, that fall due by the end of ``day``.

        A re-edit is always due after its form is typed in, so inserts first (one statement per table) and
        re-edits in time order keep each record's history in commit order.
        """
        params = {"s": self.source_system, "end": _end_of(day)}
        due = conn.execute(
            sa.text(
                f"SELECT table_name, record_id, action, due_at, payload FROM {OUTBOX}.pending "
                "WHERE source_system = :s AND due_at < :end ORDER BY due_at, record_id"
            ),
            params,
        ).all()
        late = [item for item in due if item.action == "insert"]
        for table in sorted({item.table_name for item in late}):
            conn.execute(
                sa.text(
                    f"INSERT INTO {self.schema}.{table} SELECT (jsonb_populate_record(NULL::{self.schema}.{table}, "
                    f"payload)).* FROM {OUTBOX}.pending WHERE source_system = :s AND due_at < :end "
                    "AND table_name = :t AND action = 'insert' ON CONFLICT DO NOTHING"
                ),
                {**params, "t": table},
            )
        for item in late:
            key.defect(
                f"{self.schema}.{item.table_name}",
                item.record_id,
                "late_submission",
                f"service {item.payload[SERVICE_DATE[item.table_name]]}, entered {item.due_at:%Y-%m-%d %H:%M}",
            )
        edits = [item for item in due if item.action == "update"]
        for item in edits:
            self._correct(
                conn,
                item.record_id,
                "update",
                item.due_at,
                item.payload["reason"],
                self.rng(item.due_at.date(), f"edit:{item.record_id}"),
                key,
            )
        conn.execute(sa.text(f"DELETE FROM {OUTBOX}.pending WHERE source_system = :s AND due_at < :end"), params)
        return {"late_entries": len(late), "re_edits": len(edits)}


# --- 双向转诊 -----------------------------------------------------------------------------------------
class ReferralPlatform(MemberSystem):
    """The 医共体 双向转诊 platform: one 转诊单 per referral, its status updated as the receiver acts."""

    source_system = "referral"
    schema = "referral"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.institutions = {i.org_code: i for i in world.institutions}  # the platform spans the 医共体
        self.database = config.get("database", DATABASE)
        # Referring doctors often leave the ID number blank; the rest as any desk.
        self.identity_dirt = IdentityDirt.from_config(
            {"missing_id_number": 0.10, **(config.get("identity_dirt") or {})}
        )
        self.unconfirmed_rate = float(config.get("unconfirmed_rate", 0.05))
        self.org_codes: dict[str, str] = {}
        tiers = {"村卫生室": "03", "乡镇卫生院": "02", "社区卫生服务中心": "02"}
        counters: dict[str, int] = {}
        for inst in world.institutions:
            tier = tiers.get(inst.org_type, "01")
            counters[tier] = counters.get(tier, 0) + 1
            self.org_codes[inst.org_code] = f"XYYGT{tier}{counters[tier]:03d}"

    def _org_name(self, org_code: str) -> str | None:
        inst = self.world.by_code.get(org_code)
        if inst is None:
            return org_code or None
        return inst.name if inst.name.startswith(("荥阳市", "郑州")) else "荥阳市" + inst.name

    def engine(self) -> sa.Engine:
        return source_pg_engine(self.database)

    def create_schema(self, reset: bool = False) -> None:
        with self.engine().begin() as conn:
            if reset:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
                _reset_outbox(conn, self.source_system)
            for ddl in OUTBOX_DDL:
                conn.execute(sa.text(ddl))
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"))
            grant_collector(conn, self.source_system, self.schema)
            for name, spec in (("zz_jgxx", REFERRAL_ORG_TABLE), ("zz_record", REFERRAL_TABLE)):
                for ddl in _table_ddl(self.schema, name, spec):
                    conn.execute(sa.text(ddl))
            lead = self.org_codes["410182001"]  # 人民医院, the 医共体's 总院
            _insert(
                conn,
                self.schema,
                "zz_jgxx",
                [
                    {
                        "jgbm": code,
                        "jgmc": self._org_name(org),
                        "jgcj": code[5:7],
                        "sjjgbm": {"01": None, "02": lead}.get(
                            code[5:7], self.org_codes.get(self.world.by_code[org].parent_code)
                        ),
                    }
                    for org, code in self.org_codes.items()
                ],
            )

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        key = answer_key.AnswerKey(self.source_system, day)
        people = _people(self.world, activity)
        out = _Day()
        for n, referral in enumerate(sorted(activity.referrals, key=lambda r: (r.at, r.referral_uid)), start=1):
            self._prepare(self.rng(day, referral.referral_uid), day, n, referral, people[referral.resident_id], out)
        with self.engine().begin() as conn:
            _insert(conn, OUTBOX, "pending", out.pending)
            counts = self._advance(conn, day, activity.corrections, key)
        key.flush()
        answer_key.mark_day_written(self.source_system, day)
        return counts

    def _prepare(self, rng: random.Random, day: date, n: int, referral: Referral, person: Person, out: _Day) -> None:
        """The 转诊单 as the referring doctor will submit it, and its later status changes, into the outbox.

        A referral decided today may be submitted days later (a down-referral at discharge), so even the
        insert waits for its own time. The number is fixed now: 申请日期 + a 2-digit batch (days between
        decision and submission) + the day's 4-digit serial, unique without reading any state.
        """
        recorded = recorded_identity(rng, person, self.identity_dirt)
        applied = (referral.at + timedelta(minutes=rng.randint(3, 30), seconds=rng.randrange(60))).replace(
            microsecond=0
        )
        number = f"ZZ{applied:%Y%m%d}{(applied.date() - day).days % 100:02d}{n:04d}"
        up = referral.direction == "up"
        accepted = _office_hours(rng, applied + timedelta(hours=rng.uniform(0.3, 20) if up else rng.uniform(2, 60)))
        receivers = self.world.doctors(referral.to_org) if referral.to_org in self.world.staff else []
        steps: list[tuple[str, datetime, dict[str, Any]]] = []
        if referral.refused:
            steps.append(("reject", accepted, {"jjyy": rng.choice(REJECT_REASONS)}))
        else:
            steps.append(("accept", accepted, {"jsys": rng.choice(receivers).name if receivers else None}))
            if rng.random() >= self.unconfirmed_rate:
                stay = timedelta(hours=rng.uniform(2, 48) if up else rng.uniform(12, 144))
                steps.append(("complete", _office_hours(rng, accepted + stay), {}))
        senders = self.world.doctors(referral.from_org) if referral.from_org in self.world.staff else []
        category, _, rest = referral.icd_code.partition(".")
        row = {
            "zzdh": number,
            "zzlx": REFERRAL_TYPES[referral.direction],
            "zcjgbm": self.org_codes.get(referral.from_org, referral.from_org),
            "zcjgmc": self._org_name(referral.from_org),
            "zcys": rng.choice(senders).name if senders else None,
            "zrjgbm": self.org_codes.get(referral.to_org) if referral.to_org else None,
            "zrjgmc": self._org_name(referral.to_org),
            "hzxm": recorded.name,
            "hzxb": {1: "男", 2: "女"}.get(recorded.sex),
            "hznl": clinical.completed_years(person.birth_date, applied.date()),
            "hzsfzh": recorded.id_number,
            "hzlxdh": recorded.phone,
            "hzzz": recorded.address,
            "zdbm": category + (f".{rest[0]}" if rest[:1].isdigit() else ""),
            "zdmc": REFERRAL_DIAGNOSES.get(category),
            "zzyy": referral.reason,
            "zt": "1",
            "sqsj": applied,
            "jssj": None,
            "jsys": None,
            "jjyy": None,
            "wcsj": None,
            "cxsj": None,
            "bz": None,
            "xgsj": applied,
        }
        out.defer(
            self.source_system,
            "zz_record",
            number,
            "submit",
            applied,
            {
                "row": row,
                "referral_uid": referral.referral_uid,
                "resident_id": person.resident_id,
                "from_org": referral.from_org,
                "defects": recorded.defects,
                "steps": steps,
            },
        )

    def _advance(
        self, conn: sa.Connection, day: date, corrections: list[Correction], key: answer_key.AnswerKey
    ) -> dict[str, int]:
        """Submissions, then status changes and corrections, due by the end of ``day``, in commit-time order."""
        params = {"s": self.source_system, "end": _end_of(day)}
        submitted = self._submit(
            conn,
            conn.execute(
                sa.text(
                    f"SELECT record_id, payload FROM {OUTBOX}.pending WHERE source_system = :s AND due_at < :end "
                    "AND action = 'submit' ORDER BY due_at, record_id"
                ),
                params,
            ).all(),
            key,
        )
        due = conn.execute(
            sa.text(
                f"SELECT record_id, action, due_at, payload FROM {OUTBOX}.pending "
                "WHERE source_system = :s AND due_at < :end AND action <> 'submit'"
            ),
            params,
        ).all()
        targets = {c.target_uid for c in corrections}
        local = {
            **answer_key.local_encounter_ids(self.source_system, sorted(targets - set(submitted))),
            **{u: n for u, n in submitted.items() if u in targets},
        }
        steps: list[tuple[datetime, str, str, Callable[[], int]]] = [
            (item.due_at, item.record_id, "status_updates", partial(self._transition, conn, item)) for item in due
        ]
        steps += [
            (c.at, local[c.target_uid], "corrections", partial(self._correct, conn, local[c.target_uid], c, key))
            for c in corrections
            if c.target_uid in local
        ]
        counts = {f"{self.schema}.zz_record": len(submitted), "status_updates": 0, "corrections": 0}
        for _, _, kind, step in sorted(steps, key=lambda s: s[:3]):
            counts[kind] += step()
        conn.execute(sa.text(f"DELETE FROM {OUTBOX}.pending WHERE source_system = :s AND due_at < :end"), params)
        return counts

    def _submit(self, conn: sa.Connection, forms: list[sa.Row], key: answer_key.AnswerKey) -> dict[str, str]:
        """Insert the 转诊单 submitted today, queue their status changes, and key them; uid -> 转诊单号."""
        steps = []
        for form in forms:
            number, payload = form.record_id, form.payload
            key.patient(number, payload["resident_id"], payload["from_org"])
            key.encounter(number, payload["referral_uid"])
            for name, detail in payload["defects"]:
                key.defect(f"{self.schema}.zz_record", number, name, detail)
            steps += [
                {
                    "source_system": self.source_system,
                    "table_name": "zz_record",
                    "record_id": number,
                    "action": action,
                    "due_at": at,
                    "payload": json.dumps(values, ensure_ascii=False),
                }
                for action, at, values in payload["steps"]
            ]
        _insert(conn, self.schema, "zz_record", [form.payload["row"] for form in forms])
        _insert(conn, OUTBOX, "pending", steps)
        return {form.payload["referral_uid"]: form.record_id for form in forms}

    def _transition(self, conn: sa.Connection, item: sa.Row) -> int:
        """接收 / 拒收 / 完成: a separate UPDATE at its own time, only from the state it follows."""
        required, state, column = TRANSITIONS[item.action]
        values = {"zt": state, column: item.due_at, **item.payload}
        assignments = ", ".join(f"{c} = :{c}" for c in values)
        return conn.execute(
            sa.text(
                f"UPDATE {self.schema}.zz_record SET {assignments}, xgsj = GREATEST(:at, xgsj + interval '1 second') "
                "WHERE zzdh = :id AND zt = :required"
            ),
            {**values, "at": item.due_at, "id": item.record_id, "required": required},
        ).rowcount

    def _correct(self, conn: sa.Connection, number: str, correction: Correction, key: answer_key.AnswerKey) -> int:
        """撤销 (cancel) an open 转诊单, or note an amendment (update) in 备注."""
        at = correction.at.replace(microsecond=0)
        if correction.kind == "cancel":
            changed = conn.execute(
                sa.text(
                    f"UPDATE {self.schema}.zz_record SET zt = '5', cxsj = :at, bz = :reason, "
                    "xgsj = GREATEST(:at, xgsj + interval '1 second') WHERE zzdh = :id AND zt IN ('1', '2')"
                ),
                {"at": at, "reason": correction.reason, "id": number},
            ).rowcount
            conn.execute(
                sa.text(f"DELETE FROM {OUTBOX}.pending WHERE source_system = :s AND record_id = :id"),
                {"s": self.source_system, "id": number},
            )
        else:
            changed = conn.execute(
                sa.text(
                    f"UPDATE {self.schema}.zz_record SET bz = :reason, xgsj = GREATEST(:at, xgsj + interval '1 "
                    "second') "
                    "WHERE zzdh = :id"
                ),
                {"at": at, "reason": correction.reason, "id": number},
            ).rowcount
        if changed:
            key.defect(f"{self.schema}.zz_record", number, f"correction_{correction.kind}", correction.reason)
        return changed
