"""荥阳市人民医院 HIS (rmyy_his) mapping on small bronze fixtures shaped like the vendor's tables (manual:
docs/simulator/rmyy_his.md): local codes reach the national standards, unknown codes are flagged and kept,
logic errors are quarantined with their rule id, 作废 deletes disappear, and ids agree across tables.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_table, standardize_source

SOURCE = "rmyy_his"
D = datetime(2026, 11, 3, 9, 30)
JZ1, JZ2, JZ3, JZ4 = "MZ2026110300001", "MZ2026110300002", "MZ2026110300003", "MZ2026110300004"
ZY1, ZY2, ZY3 = "ZY202611030001", "ZY202611030002", "ZY202611030003"
P1, P2, P3 = "0000000101", "0000000102", "0000000103"

# Bronze column types as the MariaDB source has them (text stays text: JY_JG.JG).
TYPES = {
    "XGSJ": "timestamp",
    "JDSJ": "timestamp",
    "JZSJ": "timestamp",
    "KFSJ": "timestamp",
    "SFSJ": "timestamp",
    "TFSJ": "timestamp",
    "RYSJ": "timestamp",
    "CYSJ": "timestamp",
    "KSSJ": "timestamp",
    "TZSJ": "timestamp",
    "FSSJ": "timestamp",
    "SSKSSJ": "timestamp",
    "SSJSSJ": "timestamp",
    "SQSJ": "timestamp",
    "CJSJ": "timestamp",
    "BGSJ": "timestamp",
    "JCSJ": "timestamp",
    "SSCZRQ": "timestamp",
    "CSRQ": "date",
    "YXBZ": "tinyint",
    "KFBZ": "tinyint",
    "ZZDBZ": "tinyint",
    "ZYTS": "int",
    "SJZYTS": "int",
    "NL": "int",
    "SL": "decimal(10,2)",
    "DJ": "decimal(10,4)",
    "JE": "decimal(12,2)",
    "CFJE": "decimal(12,2)",
    "LSJ": "decimal(10,4)",
    "ZFY": "decimal(12,2)",
}


def _visit(jzid: str, brid: str, jzlx: str = "门诊", fb: str = "02", **extra: Any) -> dict[str, Any]:
    return {
        "JZID": jzid,
        "BRID": brid,
        "JZLX": jzlx,
        "KSDM": "101",
        "KSMC": "内科",
        "YSXM": "张红成",
        "JZSJ": D,
        "XGSJ": D,
        "FB": fb,
        "CFZBZ": "1",
        "YSGH": "1004",
        **extra,
    }


def _stay(zyid: str, brid: str, zt: str = "2", **extra: Any) -> dict[str, Any]:
    return {
        "ZYID": zyid,
        "BRID": brid,
        "RYSJ": datetime(2026, 11, 3, 10),
        "RYKSDM": "201",
        "RYKSMC": "外科",
        "BQDM": "B05",
        "CWH": "301",
        "ZZYS": "刘斌凤",
        "RYTJ": "2",
        "RYZDDM": "K35.801",
        "RYZDMC": "急性阑尾炎",
        "FB": "03",
        "CYSJ": None,
        "CYKSDM": None,
        "ZT": zt,
        "XGSJ": D,
        **extra,
    }


BRONZE: dict[str, list[dict[str, Any]]] = {
    "ZD_KSZD": [
        {"KSDM": "101", "KSMC": "内科", "KSLB": "门诊", "YXBZ": 1, "XGSJ": D},
        {"KSDM": "B05", "KSMC": "外一病区（普外）", "KSLB": "病区", "YXBZ": 1, "XGSJ": D},
    ],
    "ZD_ZGXX": [
        {
            "GH": "1004",
            "XM": "张红成",
            "ZGLB": "医生",
            "ZC": "副主任医师",
            "ZYZSBM": "772193367791108",
            "YXBZ": 1,
            "XGSJ": D,
        },
        {"GH": "4002", "XM": "陈丽涛", "ZGLB": "医技", "ZC": "技师", "ZYZSBM": None, "YXBZ": 0, "XGSJ": D},
    ],
    "ZY_CWXX": [
        {
            "CWH": "301",
            "BQDM": "B05",
            "BQMC": "外一病区（普外）",
            "CWLX": "1",
            "KFBZ": 1,
            "CWZT": "1",
            "ZYID": ZY1,
            "XGSJ": D,
        },
        {
            "CWH": "601",
            "BQDM": "B02",
            "BQMC": "内二病区（呼吸）",
            "CWLX": "2",
            "KFBZ": 0,
            "CWZT": "0",
            "ZYID": None,
            "XGSJ": D,
        },
    ],
    "GH_BRJBXX": [
        {
            "BRID": P1,
            "XM": "孙帅浩",
            "XB": "男",
            "CSRQ": date(1995, 12, 31),
            "SFZH": "41018219951231081x",
            "LXDH": "15176956912",
            "JTZZ": "河南省荥阳市汜水镇高坡176号",
            "JDSJ": D,
            "XGSJ": D,
            "MZ": "回族",
            "YBKH": "YB4101820000000893",
        },
        {
            "BRID": P2,
            "XM": "魏红霞",
            "XB": "女",
            "CSRQ": date(1980, 7, 4),
            "SFZH": None,
            "LXDH": None,
            "JTZZ": "荥阳市豫龙镇魏坡村289号",
            "JDSJ": D,
            "XGSJ": D,
            "MZ": "汉族",
            "YBKH": None,
        },
        {
            "BRID": P3,
            "XM": "高荣凤",
            "XB": "未知",
            "CSRQ": date(2030, 1, 1),
            "SFZH": "410182203001010000",
            "LXDH": None,
            "JTZZ": None,
            "JDSJ": D,
            "XGSJ": D,
            "MZ": "汉族",
            "YBKH": None,
        },
    ],
    "MZ_JZJL": [
        _visit(JZ1, P1, fb="01"),
        _visit(JZ2, P2, "急诊", KSDM="601", KSMC="急诊医学科"),
        _visit(JZ3, P1),
        _visit(JZ3, P1, _op="d"),  # 作废: the visit row is deleted
        _visit(JZ4, P2, fb="03", CFZBZ="2"),
    ],
    "MZ_ZDJL": [
        {"ZDID": JZ1 + "01", "JZID": JZ1, "ZDDM": "I10.X01", "ZDMC": "高血压病", "ZZDBZ": 1, "XGSJ": D},
        {"ZDID": JZ1 + "02", "JZID": JZ1, "ZDDM": "E11.901", "ZDMC": "2型糖尿病", "ZZDBZ": 0, "XGSJ": D},
        {"ZDID": JZ2 + "01", "JZID": JZ2, "ZDDM": "ZDY0042", "ZDMC": "上呼吸道感染？", "ZZDBZ": 1, "XGSJ": D},
        {"ZDID": JZ4 + "01", "JZID": JZ4, "ZDDM": "i10x01", "ZDMC": "高血压病", "ZZDBZ": 1, "XGSJ": D},
        {
            "ZDID": "MZ202611039999901",
            "JZID": "MZ2026110399999",
            "ZDDM": "J06.901",
            "ZDMC": "上呼吸道感染",
            "ZZDBZ": 1,
            "XGSJ": D,
        },  # its visit never arrived
    ],
    "MZ_CF": [
        {
            "CFID": "CF" + JZ1[2:] + "1",
            "JZID": JZ1,
            "BRID": P1,
            "CFLX": "1",
            "KSDM": "101",
            "YSGH": "1004",
            "KFSJ": datetime(2026, 11, 3, 9, 40),
            "CFJE": Decimal("37.20"),
            "XGSJ": D,
        },
        {
            "CFID": "CF" + JZ2[2:] + "2",
            "JZID": JZ2,
            "BRID": P2,
            "CFLX": "2",
            "KSDM": "601",
            "YSGH": "1004",
            "KFSJ": datetime(2026, 11, 3, 9, 45),
            "CFJE": Decimal("28.00"),
            "XGSJ": D,
        },
    ],
    "MZ_CFMX": [
        {
            "MXID": "CF" + JZ1[2:] + "101",
            "CFID": "CF" + JZ1[2:] + "1",
            "YPDM": "YP010001",
            "YPMC": "苯磺酸氨氯地平片(络活喜)",
            "GG": "5mg*28片",
            "SL": Decimal("2"),
            "DW": "盒",
            "DJ": Decimal("18.6"),
            "JE": Decimal("37.20"),
            "YFPC": "qd",
            "XGSJ": D,
        },
        {
            "MXID": "CF" + JZ2[2:] + "201",
            "CFID": "CF" + JZ2[2:] + "2",
            "YPDM": "YP020001",
            "YPMC": "连花清瘟胶囊",
            "GG": "0.35g*24粒",
            "SL": Decimal("1"),
            "DW": "盒",
            "DJ": Decimal("28"),
            "JE": Decimal("28.00"),
            "YFPC": "tid",
            "XGSJ": D,
        },
    ],
    "MZ_SF": [
        {
            "SFID": "SF" + JZ1[2:] + "01",
            "JZID": JZ1,
            "BRID": P1,
            "SFXMDM": "110200001",
            "SFXMMC": "挂号费",
            "FYLB": "09",
            "SL": Decimal("1"),
            "DJ": Decimal("6"),
            "JE": Decimal("6.00"),
            "SFSJ": D,
            "SFZT": "1",
            "TFSJ": None,
            "XGSJ": D,
        },
        {
            "SFID": "SF" + JZ3[2:] + "01",
            "JZID": JZ3,
            "BRID": P1,
            "SFXMDM": "110200001",
            "SFXMMC": "挂号费",
            "FYLB": "09",
            "SL": Decimal("1"),
            "DJ": Decimal("6"),
            "JE": Decimal("6.00"),
            "SFSJ": D,
            "SFZT": "2",
            "TFSJ": datetime(2026, 11, 3, 11),
            "XGSJ": D,
        },  # refunded when its visit was voided
        {
            "SFID": "SF" + JZ4[2:] + "01",
            "JZID": JZ4,
            "BRID": P2,
            "SFXMDM": "250101001",
            "SFXMMC": "检验费",
            "FYLB": "05",
            "SL": Decimal("1"),
            "DJ": Decimal("20"),
            "JE": Decimal("-20.00"),
            "SFSJ": D,
            "SFZT": "1",
            "TFSJ": None,
            "XGSJ": D,
        },
    ],
    "ZY_RYDJ": [_stay(ZY1, P1), _stay(ZY2, P2), _stay(ZY3, P3, zt="9")],
    "ZY_CYJL": [
        {
            "ZYID": ZY1,
            "BRID": P1,
            "RYSJ": datetime(2026, 11, 3, 10),
            "CYSJ": datetime(2026, 11, 8, 9),
            "CYKSDM": "201",
            "CYKSMC": "外科",
            "CYQK": "1",
            "CYZDDM": "K35.801",
            "CYZDMC": "急性阑尾炎",
            "ZYTS": 5,
            "ZYYS": "刘斌凤",
            "XGSJ": D,
        },
        {
            "ZYID": ZY2,
            "BRID": P2,
            "RYSJ": datetime(2026, 11, 3, 10),
            "CYSJ": datetime(2026, 10, 31, 9),
            "CYKSDM": "201",
            "CYKSMC": "外科",
            "CYQK": "2",
            "CYZDDM": "K35.801",
            "CYZDMC": "急性阑尾炎",
            "ZYTS": -3,
            "ZYYS": "刘斌凤",
            "XGSJ": D,
        },  # CYSJ typed before RYSJ
    ],
    "BL_SYXX": [
        {
            "ZYID": ZY1,
            "BAH": P1,
            "BRID": P1,
            "XM": "孙帅浩",
            "XB": "男",
            "CSRQ": date(1995, 12, 31),
            "NL": 30,
            "SFZH": "41018219951231081X",
            "XZZ": None,
            "RYSJ": datetime(2026, 11, 3, 10),
            "CYSJ": datetime(2026, 11, 8, 9),
            "SJZYTS": 5,
            "RYKS": "外科",
            "CYKS": "外科",
            "RYTJ": "2",
            "ZYZDDM": "K35.801",
            "ZYZDMC": "急性阑尾炎",
            "QTZDDM1": None,
            "QTZDMC1": None,
            "QTZDDM2": None,
            "QTZDMC2": None,
            "SSCZDM": "47.0901",
            "SSCZMC": "腹腔镜阑尾切除术",
            "SSCZRQ": datetime(2026, 11, 4, 9),
            "QKYH": "Ⅱ/甲",
            "LYFS": "1",
            "ZFY": Decimal("6120.50"),
            "ZZYS": "刘斌凤",
            "XGSJ": D,
        }
    ],
    "ZY_ZDJL": [
        {
            "ZDID": ZY1 + "301",
            "ZYID": ZY1,
            "ZDLB": "3",
            "ZDDM": "K35.801",
            "ZDMC": "急性阑尾炎",
            "ZZDBZ": 1,
            "XGSJ": datetime(2026, 11, 8, 9, 20),
        }
    ],
    "ZY_YZJL": [
        {
            "YZID": "YZ" + ZY1[2:] + "01",
            "ZYID": ZY1,
            "YZLB": "1",
            "YPDM": "YP010006",
            "YZMC": "注射用头孢曲松钠",
            "GG": "1g",
            "SL": Decimal("4"),
            "DW": "支",
            "PC": "QD",
            "KSSJ": datetime(2026, 11, 3, 12),
            "TZSJ": datetime(2026, 11, 8, 9),
            "KZYS": "刘斌凤",
            "XGSJ": D,
        }
    ],
    "YK_YPZD": [
        {
            "YPDM": "YP010006",
            "YPMC": "注射用头孢曲松钠",
            "GG": "1g",
            "DW": "支",
            "LSJ": None,
            "YPLB": "西药",
            "YXBZ": 1,
            "XGSJ": D,
        }
    ],
    "ZY_FYMX": [
        {
            "FYID": "FY" + ZY1[2:] + "0001",
            "ZYID": ZY1,
            "BRID": P1,
            "XMDM": "110900001",
            "XMMC": "床位费",
            "FYLB": "08",
            "SL": Decimal("1"),
            "DJ": Decimal("30"),
            "JE": Decimal("30.00"),
            "FSSJ": datetime(2026, 11, 4, 0, 10),
            "XGSJ": D,
        }
    ],
    "SS_SSJL": [
        {
            "SSID": "SS" + ZY1[2:] + "1",
            "ZYID": ZY1,
            "BRID": P1,
            "SSDM": "47.0901",
            "SSMC": "腹腔镜阑尾切除术",
            "SSKSSJ": datetime(2026, 11, 4, 9),
            "SSJSSJ": datetime(2026, 11, 4, 10, 30),
            "SSYS": "刘斌凤",
            "MZFS": "全身麻醉",
            "QKDJ": "Ⅱ",
            "YHDJ": "甲",
            "XGSJ": D,
        },
        {
            "SSID": "SS" + ZY2[2:] + "1",
            "ZYID": ZY2,
            "BRID": P2,
            "SSDM": "47.0901",
            "SSMC": "腹腔镜阑尾切除术",
            "SSKSSJ": datetime(2026, 11, 4, 9),
            "SSJSSJ": datetime(2026, 11, 4, 8),
            "SSYS": "刘斌凤",
            "MZFS": "全身麻醉",
            "QKDJ": "Ⅱ",
            "YHDJ": "甲",
            "XGSJ": D,
        },  # ends before it starts
    ],
    "JY_SQD": [
        {
            "SQDH": "JY" + JZ1 + "1",
            "BRLY": "1",
            "JZH": JZ1,
            "BRID": P1,
            "JYZH": "生化全项",
            "BBLX": "血清",
            "SQKS": "101",
            "SQYS": "张红成",
            "SQSJ": D,
            "CJSJ": D,
            "BGSJ": D,
            "ZT": "4",
            "XGSJ": D,
        },
        {
            "SQDH": "JY" + ZY1 + "1",
            "BRLY": "3",
            "JZH": ZY1,
            "BRID": P1,
            "JYZH": "血常规",
            "BBLX": "全血",
            "SQKS": "201",
            "SQYS": "刘斌凤",
            "SQSJ": D,
            "CJSJ": D,
            "BGSJ": D,
            "ZT": "4",
            "XGSJ": D,
        },
    ],
    "JY_JG": [
        {
            "JGID": "JY" + JZ1 + "101",
            "SQDH": "JY" + JZ1 + "1",
            "XMDM": "GLU",
            "XMMC": "葡萄糖",
            "JG": "7.8",
            "DW": "mmol/L",
            "CKFW": "3.9-6.1",
            "YCBZ": "H",
            "BGSJ": datetime(2026, 11, 3, 12, 26),
            "XGSJ": D,
        },
        {
            "JGID": "JY" + ZY1 + "101",
            "SQDH": "JY" + ZY1 + "1",
            "XMDM": "WBC",
            "XMMC": "白细胞",
            "JG": "溶血",
            "DW": "×10^9/L",
            "CKFW": "3.5-9.5",
            "YCBZ": "",
            "BGSJ": datetime(2026, 11, 3, 13),
            "XGSJ": D,
        },
    ],
    "JC_BG": [
        {
            "BGID": "JC" + JZ2 + "1",
            "BRLY": "2",
            "JZH": JZ2,
            "BRID": P2,
            "JCLB": "BC",
            "JCXM": "腹部彩超",
            "JCBW": "腹部",
            "JCSJ": D,
            "YXSJ": "肝胆胰脾未见明显异常",
            "ZDYJ": "腹部超声未见异常",
            "BGYS": "陈丽涛",
            "BGSJ": datetime(2026, 11, 3, 11),
            "XGSJ": D,
        },
        {
            "BGID": "JC" + ZY1 + "1",
            "BRLY": "3",
            "JZH": ZY1,
            "BRID": P1,
            "JCLB": "QT",
            "JCXM": "胸部透视",
            "JCBW": "胸部",
            "JCSJ": D,
            "YXSJ": "未见异常",
            "ZDYJ": "未见异常",
            "BGYS": "陈丽涛",
            "BGSJ": datetime(2026, 11, 4, 11),
            "XGSJ": D,
        },
    ],
}


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """bronze table -> (silver rows by source key, quarantine rows) for every mapped table."""
    frames = {
        table: bronze_frame(spark, SOURCE, rows, types={c: t for c, t in TYPES.items() if c in rows[0]})
        for table, rows in BRONZE.items()
    }
    return standardize_source(SOURCE, frames, by_table)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    lookup_only = {"MZ_CF", "JY_SQD", "ZY_CYJL", "BL_SYXX", "YK_YPZD"}
    assert {t["bronze_table"] for t in mapping["tables"]} == set(BRONZE) - lookup_only
    checked = 0
    for table in mapping["tables"]:
        columns = dict(table["columns"])
        for lookup in (table.get("lookups") or {}).values():
            columns.update(lookup["columns"])
        for column, spec in columns.items():
            if "concept_map" in spec:
                standard = code_system(column_code_system(table["entity"], column))
                targets = set(concept_map(SOURCE, spec["concept_map"]).values())
                assert targets <= set(standard), (spec["concept_map"], targets - set(standard))
                checked += 1
    assert checked >= 15


def test_dictionaries_feed_department_practitioner_and_bed(results):
    departments, _ = results["ZD_KSZD"]
    assert departments["B05"].department_kind == "病区" and departments["101"].is_active is True
    staff, _ = results["ZD_ZGXX"]
    assert (staff["1004"].role, staff["1004"].licence_no) == ("医师", "772193367791108")
    assert (staff["4002"].role, staff["4002"].is_active) == ("技师", False)
    beds, _ = results["ZY_CWXX"]
    assert (beds["301"].is_occupied, beds["301"].current_encounter_id, beds["301"].is_open) == (True, ZY1, True)
    assert (beds["601"].bed_kind, beds["601"].is_open) == ("加床", False)


def test_person_codes_are_standardised_and_a_birth_after_registration_is_quarantined(results):
    persons, quarantine = results["GH_BRJBXX"]
    p1, p2 = persons[P1], persons[P2]
    assert (p1.sex_code, p1.sex_source_value, p1.ethnicity_code) == ("1", "男", "03")
    assert (p1.id_type_code, p1.id_number, p1.id_number_valid) == ("01", "41018219951231081X", True)
    assert (p2.sex_code, p2.ethnicity_code, p2.id_type_code, p2.id_number) == ("2", "01", None, None)
    assert p1.registered_at == D and p1.birth_date == date(1995, 12, 31) and p1.dq_flags == []
    assert P3 not in persons and [(q.record_key, q.rule_id) for q in quarantine] == [(P3, "PER002")]


def test_outpatient_visits_keep_jzid_map_codes_and_drop_voided_visits(results):
    visits, quarantine = results["MZ_JZJL"]
    assert set(visits) == {JZ1, JZ2, JZ4} and quarantine == []  # JZ3 was deleted (作废)
    v1, v2, v4 = visits[JZ1], visits[JZ2], visits[JZ4]
    assert (v1.encounter_id, v1.local_patient_id, v1.encounter_class_code, v1.visit_date) == (
        JZ1,
        P1,
        "100",
        date(2026, 11, 3),
    )
    assert (v1.payment_category_code, v4.payment_category_code, v2.payment_category_code) == ("07", "01", "02")
    assert (v1.primary_diagnosis_code, v1.primary_diagnosis_name, v1.is_first_visit) == ("I10.x00", "高血压病", True)
    assert (v2.encounter_class_code, v2.encounter_class_source_value, v4.is_first_visit) == ("200", "急诊", False)
    # outside 本院疾病字典 (自定义 ZDY code): standard code empty, flagged, visit kept
    assert v2.primary_diagnosis_code is None and v2.dq_flags == ["UNMAPPED:primary_diagnosis_code:ZDY0042"]
    # the retired dictionary's format (lower case, no dot) is a dialect of I10.X01: normalised, then mapped
    assert v4.primary_diagnosis_code == "I10.x00" and v4.dq_flags == []


def test_inpatient_stays_take_discharge_and_front_page_and_quarantine_discharge_before_admission(results):
    stays, quarantine = results["ZY_RYDJ"]
    s1, s3 = stays[ZY1], stays[ZY3]
    assert (s1.encounter_id, s1.encounter_class_code, s1.local_patient_id, s1.bed_id) == (ZY1, "300", P1, "301")
    assert (s1.admitted_at, s1.visit_at, s1.discharged_at) == (
        datetime(2026, 11, 3, 10),
        datetime(2026, 11, 3, 10),
        datetime(2026, 11, 8, 9),
    )
    assert (s1.length_of_stay_days, s1.discharge_outcome_code, s1.status) == (5, "1", "出院")
    assert (s1.primary_diagnosis_code, s1.payment_category_code, s1.dq_flags) == ("K35.800", "01", [])
    assert (s3.status, s3.discharged_at, s3.primary_diagnosis_code) == ("作废", None, None)
    assert ZY2 not in stays
    assert [(q.record_key, q.rule_id, q.reason) for q in quarantine] == [(ZY2, "ENC003", "出院时间早于入院时间")]


def test_diagnoses_map_to_icd10_flag_unknown_codes_and_quarantine_orphans(results):
    outpatient, quarantine = results["MZ_ZDJL"]
    d1, d2 = outpatient[JZ1 + "01"], outpatient[JZ1 + "02"]
    assert (d1.diagnosis_code, d1.diagnosis_source_code, d1.is_primary, d1.diagnosis_kind) == (
        "I10.x00",
        "I10.X01",
        True,
        "门诊",
    )
    assert (d1.local_patient_id, d1.diagnosed_at, d2.diagnosis_code, d2.is_primary) == (P1, D, "E11.900", False)
    unknown = outpatient[JZ2 + "01"]
    assert (unknown.diagnosis_code, unknown.diagnosis_source_code, unknown.diagnosis_name) == (
        None,
        "ZDY0042",
        "上呼吸道感染？",
    )
    assert unknown.dq_flags == ["UNMAPPED:diagnosis_code:ZDY0042"]
    assert [(q.record_key, q.rule_id) for q in quarantine] == [("MZ202611039999901", "DIA001")]
    inpatient, _ = results["ZY_ZDJL"]
    d = inpatient[ZY1 + "301"]
    assert (d.encounter_id, d.local_patient_id, d.diagnosis_kind, d.diagnosis_code) == (ZY1, P1, "出院", "K35.800")


def test_prescriptions_map_drugs_to_national_codes_and_atc(results):
    items, _ = results["MZ_CFMX"]
    western, patent = items["CF" + JZ1[2:] + "101"], items["CF" + JZ2[2:] + "201"]
    assert (western.drug_code, western.atc_code, western.drug_source_code) == (
        "XC08CAA033A001010100223",
        "C08CA01",
        "YP010001",
    )
    assert (western.encounter_id, western.local_patient_id, western.drug_category) == (JZ1, P1, "西药")
    assert (western.quantity, western.amount, western.prescribed_at) == (
        Decimal("2.00"),
        Decimal("37.20"),
        datetime(2026, 11, 3, 9, 40),
    )
    assert (patent.drug_code, patent.atc_code, patent.drug_category, patent.dq_flags) == (
        "ZA01AAL0130010102050",
        None,
        "中成药",
        [],
    )  # 中成药: no ATC, not flagged
    orders, _ = results["ZY_YZJL"]
    order = orders["YZ" + ZY1[2:] + "01"]
    assert (order.encounter_id, order.local_patient_id, order.drug_code, order.atc_code) == (
        ZY1,
        P1,
        "XJ01DDT160B002010100543",
        "J01DD04",
    )
    assert (order.drug_category, order.frequency_code) == ("西药", "qd")


def test_fees_map_categories_keep_refunds_and_quarantine_negative_amounts(results):
    fees, quarantine = results["MZ_SF"]
    registration, refunded = fees["SF" + JZ1[2:] + "01"], fees["SF" + JZ3[2:] + "01"]
    assert (registration.fee_category_code, registration.fee_category_source_value) == ("01", "09")
    assert (registration.is_refunded, registration.amount) == (False, Decimal("6.00"))
    assert (refunded.is_refunded, refunded.refunded_at, refunded.encounter_id) == (True, datetime(2026, 11, 3, 11), JZ3)
    assert [(q.record_key, q.rule_id) for q in quarantine] == [("SF" + JZ4[2:] + "01", "FEE001")]
    inpatient, _ = results["ZY_FYMX"]
    bed_day = inpatient["FY" + ZY1[2:] + "0001"]
    assert (bed_day.encounter_id, bed_day.fee_category_code, bed_day.is_refunded) == (ZY1, "01", False)


def test_surgery_incision_roman_numerals_and_end_before_start(results):
    surgeries, quarantine = results["SS_SSJL"]
    s = surgeries["SS" + ZY1[2:] + "1"]
    assert (s.procedure_code, s.incision_class_code, s.incision_class_source_value) == ("47.0901", "II", "Ⅱ")
    assert (s.encounter_id, s.anaesthesia, s.ended_at) == (ZY1, "全身麻醉", datetime(2026, 11, 4, 10, 30))
    assert [(q.record_key, q.rule_id) for q in quarantine] == [("SS" + ZY2[2:] + "1", "SUR002")]


def test_lab_results_map_to_loinc_and_parse_text_results(results):
    labs, quarantine = results["JY_JG"]
    glucose, wbc = labs["JY" + JZ1 + "101"], labs["JY" + ZY1 + "101"]
    assert (glucose.item_code, glucose.item_source_code, glucose.numeric_value) == ("2345-7", "GLU", 7.8)
    assert (glucose.result_value, glucose.abnormal_flag, glucose.specimen) == ("7.8", "H", "血清")
    assert (glucose.encounter_id, glucose.local_patient_id, glucose.lab_order_id) == (JZ1, P1, "JY" + JZ1 + "1")
    # an inpatient order's JZH is the ZYID, the same id the stay has in encounter
    assert (wbc.item_code, wbc.encounter_id, wbc.abnormal_flag) == ("6690-2", ZY1, "N")
    assert (wbc.result_value, wbc.numeric_value, wbc.dq_flags) == ("溶血", None, ["UNPARSEABLE:numeric_value"])
    assert quarantine == []


def test_exam_reports_map_pacs_classes_and_flag_unknown_ones(results):
    exams, _ = results["JC_BG"]
    us, other = exams["JC" + JZ2 + "1"], exams["JC" + ZY1 + "1"]
    assert (us.exam_class_code, us.exam_class_source_value, us.encounter_id, us.local_patient_id) == (
        "US",
        "BC",
        JZ2,
        P2,
    )
    assert (us.findings, us.conclusion) == ("肝胆胰脾未见明显异常", "腹部超声未见异常")
    assert (other.exam_class_code, other.dq_flags, other.encounter_id) == (None, ["UNMAPPED:exam_class_code:QT"], ZY1)


def test_encounter_ids_agree_across_tables(results):
    encounters = set(results["MZ_JZJL"][0]) | set(results["ZY_RYDJ"][0]) | {ZY2}  # ZY2: quarantined stay
    children = ["MZ_ZDJL", "ZY_ZDJL", "MZ_CFMX", "ZY_YZJL", "MZ_SF", "ZY_FYMX", "SS_SSJL", "JY_JG", "JC_BG"]
    referenced = {r.encounter_id for table in children for r in results[table][0].values()}
    assert referenced - encounters == {JZ3}  # only the refunded charge of the voided visit
    persons = set(results["GH_BRJBXX"][0])
    assert {
        r.local_patient_id for table in ["MZ_JZJL", "ZY_RYDJ", *children] for r in results[table][0].values()
    } <= persons | {P3}
