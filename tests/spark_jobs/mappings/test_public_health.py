"""基本公卫 (public_health, schema gw) mapping on small bronze fixtures shaped like the platform's tables (manual:
docs/simulator/public_health.md): 公卫 codes reach the standards, unknown codes are flagged and kept, 作废 rows
keep a status or leave silver through quarantine, corrections and late forms come out right, ids agree.

Business rows are landed with the 医共体 institution code (410182103 乔楼镇卫生院) as their ``_org_code``: the
collector must translate the platform's 12-digit jgdm (see the mapping's `organization` concept map).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_entity, standardize_source

SOURCE = "public_health"
ORG = "410182103"  # 乔楼镇卫生院 = gw jgdm 410182100000
D = date(2026, 11, 2)
T = datetime(2026, 11, 2, 9, 15)
A1, A2, A3, A4 = "41018210021200001", "41018210021200002", "41018220121500001", "41018210021200003"
GXY_CARD, TNB_CARD, GDM_CARD = "41f2c12d22265f7caabba768079e9483", "c7d2e294ea4f5576a2f17c45171e4d84", "9" * 32
F1, F2, F3, F4, F5, F6 = (f"{n:032x}" for n in range(1, 7))
T1, L1, E1, E2, Y1, Y2 = (f"{n:032x}" for n in range(11, 17))
Q1, Q2, Q3, Q4 = (f"{n:032x}" for n in range(21, 25))

TYPES = {
    "csrq": "date",
    "jdrq": "date",
    "qzrq": "date",
    "djrq": "date",
    "sfrq": "date",
    "tjrq": "date",
    "jcrq": "date",
    "xcsfrq": "date",
    "qyrq": "date",
    "ksrq": "date",
    "jsrq": "date",
    "jyrq": "date",
    "cjsj": "timestamp",
    "xgsj": "timestamp",
    "ssy": "smallint",
    "szy": "smallint",
    "xl": "smallint",
    "rxyl": "smallint",
    "ryjl": "smallint",
    "yl": "smallint",
    "yz": "smallint",
    "tz": "decimal(5,1)",
    "sg": "decimal(4,1)",
    "yw": "decimal(4,1)",
    "tzzs": "decimal(4,1)",
    "kfxt": "decimal(4,1)",
    "thxhdb": "decimal(4,1)",
    "sc": "decimal(4,1)",
    "tw": "decimal(4,1)",
}
AUDIT = {"zfbz": "0", "cjsj": T, "xgsj": T}


def _archive(grdabh: str, **extra: Any) -> dict[str, Any]:
    return {
        "grdabh": grdabh,
        "xm": "陈德勇",
        "xb": "1",
        "csrq": date(1966, 10, 26),
        "sfzh": "410182196610260779",
        "lxdh": "15297389690",
        "mz": "01",
        "xzz": "河南省荥阳市乔楼镇宋楼村253号",
        "czlx": "1",
        "ssxzdm": "410182100",
        "sscwhdm": "410182100212",
        "jdrq": D,
        "jdjgdm": "410182100000",
        "jdys": "任晶宇",
        "zrys": "任晶宇",
        "dazt": "1",
        **AUDIT,
        **extra,
    }


def _card(glkbh: str, grdabh: str, **extra: Any) -> dict[str, Any]:
    return {
        "glkbh": glkbh,
        "grdabh": grdabh,
        "qzrq": date(2025, 9, 17),
        "djrq": D,
        "glzt": "1",
        "jgdm": "410182100000",
        "zrys": "任晶宇",
        **AUDIT,
        **extra,
    }


def _htn(sfjlid: str, **extra: Any) -> dict[str, Any]:
    return {
        "sfjlid": sfjlid,
        "grdabh": A1,
        "sfrq": D,
        "sffs": "1",
        "zz": "1",
        "ssy": 132,
        "szy": 84,
        "tz": Decimal("60.9"),
        "xl": 76,
        "rxyl": 0,
        "ryjl": 0,
        "fyycx": "1",
        "ywblfy": "1",
        "cfsffl": "1",
        "xcsfrq": date(2027, 1, 31),
        "sfys": "任晶宇",
        "jgdm": "410182100000",
        **AUDIT,
        **extra,
    }


def _service(table: str, pk: str, **extra: Any) -> dict[str, Any]:
    base = {
        "lnr_tj": {
            "tjjlid": pk,
            "grdabh": A1,
            "tjrq": D,
            "ssy": 152,
            "szy": 91,
            "sg": Decimal("177.2"),
            "tz": Decimal("62.7"),
            "yw": Decimal("77.9"),
            "tzzs": Decimal("20.0"),
            "kfxt": Decimal("4.8"),
            "jkztpg": "1",
            "shzlnl": "1",
            "jkpj": "2",
            "tjys": "李华倩",
        },
        "et_jkgl": {
            "jcjlid": pk,
            "grdabh": A4,
            "jcrq": D,
            "yl": 5,
            "tz": Decimal("4.1"),
            "sc": Decimal("61.4"),
            "tw": Decimal("37.9"),
            "tzpj": "1",
            "xcsfrq": date(2027, 1, 31),
            "jcys": "吴秀霞",
        },
        "ycf_sf": {
            "sfjlid": pk,
            "grdabh": A3,
            "sfrq": D,
            "sflx": "1",
            "yz": 12,
            "ssy": 114,
            "szy": 72,
            "tz": Decimal("62.0"),
            "xcsfrq": date(2026, 11, 30),
            "sfys": "黄娟华",
        },
    }[table]
    return {**base, "jgdm": "410182100000", **AUDIT, **extra}


def _contract(qyid: str, **extra: Any) -> dict[str, Any]:
    return {
        "qyid": qyid,
        "grdabh": A1,
        "qyrq": D,
        "ksrq": D,
        "jsrq": date(2027, 11, 1),
        "tdbh": "410182100000T02",
        "tdmc": "乔楼镇卫生院第2家庭医生团队",
        "qyys": "任晶宇",
        "fwbdm": "FWB02",
        "qyzt": "1",
        "jyrq": None,
        "jgdm": "410182100000",
        **AUDIT,
        **extra,
    }


BRONZE: dict[str, list[dict[str, Any]]] = {
    "xt_jgxx": [
        {"jgdm": "410182100000", "jgmc": "荥阳市乔楼镇卫生院", "jglx": "1", "sjjgdm": None, "xzqhdm": "410182100000"},
        {
            "jgdm": "410182100212",
            "jgmc": "荥阳市乔楼镇宋楼村卫生室",
            "jglx": "2",
            "sjjgdm": "410182100000",
            "xzqhdm": "410182100212",
        },
        {
            "jgdm": "410182001000",
            "jgmc": "荥阳市京城路社区卫生服务中心",
            "jglx": "1",
            "sjjgdm": None,
            "xzqhdm": "410182001000",
        },
        {
            "jgdm": "410182100901",
            "jgmc": "荥阳市乔楼镇新建村卫生室",
            "jglx": "2",
            "sjjgdm": "410182100000",
            "xzqhdm": "410182100901",
        },  # not in the crosswalk yet
    ],
    "jkda_grjbxx": [
        _archive(A1),
        _archive(A2, xm="陈德永", zfbz="1", xgsj=datetime(2026, 11, 5, 10)),  # 重复建档, voided
        _archive(
            A3,
            xm="李秀荣",
            xb="2",
            csrq=date(1979, 8, 28),
            sfzh=None,
            mz="03",
            ssxzdm="410182201",
            sscwhdm="410182201215",
            xzz="高村乡陈营村209号",
        ),
        _archive(A4, xm="陈子涵", csrq=date(2026, 12, 1), sfzh=None),  # born after the archive was filed
    ],
    "gxy_glk": [_card(GXY_CARD, A1, gljb="1")],
    "tnb_glk": [_card(TNB_CARD, A3, tnblx="2"), _card(GDM_CARD, A4, tnblx="3", glzt="1", zfbz="1")],
    "gxy_sf": [
        _htn(F1),
        _htn(F2, sffs="4", cfsffl="2", ssy=158, szy=96),  # sffs outside xt_zdxx SFFS
        _htn(F3, zfbz="1"),  # 作废
        _htn(F4, ssy=80, szy=95, cfsffl="2"),  # systolic below diastolic
        _htn(F5, sfrq=date(2026, 10, 26), cjsj=datetime(2026, 11, 2, 8, 30), xgsj=datetime(2026, 11, 2, 8, 30)),
        _htn(F6, ssy=150, cfsffl="2"),
        _htn(F6, ssy=138, cfsffl="1", xgsj=datetime(2026, 11, 8, 10)),  # 数据修改 days later: this version wins
    ],
    "tnb_sf": [
        {
            "sfjlid": T1,
            "grdabh": A3,
            "sfrq": D,
            "sffs": "3",
            "ssy": 136,
            "szy": 82,
            "tz": Decimal("72.5"),
            "kfxt": Decimal("6.4"),
            "thxhdb": None,
            "fyycx": "1",
            "dxtfy": "1",
            "cfsffl": "3",
            "xcsfrq": date(2027, 1, 31),
            "sfys": "黄娟华",
            "jgdm": "410182201000",
            **AUDIT,
        }
    ],
    "lnr_tj": [_service("lnr_tj", L1)],
    "et_jkgl": [_service("et_jkgl", E1, tzpj="中"), _service("et_jkgl", E2, tzpj="2")],
    "ycf_sf": [_service("ycf_sf", Y1), _service("ycf_sf", Y2, sflx="2", yz=60)],
    "jtys_qy": [
        _contract(Q1),
        _contract(Q2, grdabh=A3, fwbdm="JC01"),  # the retired package code
        _contract(Q3, qyzt="2", jyrq=date(2026, 11, 20)),  # 解约
        _contract(Q4, ksrq=date(2027, 11, 2), jsrq=date(2026, 11, 1)),  # ends before it starts
    ],
}


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """entity -> (silver rows by source key, quarantine rows), over every mapped table."""
    frames = {
        table: bronze_frame(
            spark,
            SOURCE,
            rows,
            org_code="410182000" if table == "xt_jgxx" else ORG,
            types={c: t for c, t in TYPES.items() if c in rows[0]},
        )
        for table, rows in BRONZE.items()
    }
    return standardize_source(SOURCE, frames, by_entity)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    assert {t["bronze_table"] for t in mapping["tables"]} == set(BRONZE)  # xt_zdxx: the code lists only
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
    assert checked >= 4  # sex ×2, ethnicity, diabetes type → ICD-10


def test_institutions_get_the_county_code_through_the_crosswalk(results):
    orgs, quarantine = results["organization"]
    centre, clinic, community = orgs["410182100000"], orgs["410182100212"], orgs["410182001000"]
    assert (centre.organization_code, centre.organization_type, centre.township) == (
        "410182103",
        "乡镇卫生院",
        "乔楼镇",
    )
    assert (clinic.organization_code, clinic.parent_organization_code, clinic.organization_type) == (
        "410182312",
        "410182103",
        "村卫生室",
    )
    assert (community.organization_code, community.organization_type) == ("410182101", "社区卫生服务中心")
    unknown = orgs["410182100901"]
    assert unknown.organization_code is None and unknown.dq_flags == ["UNMAPPED:organization_code:410182100901"]
    assert quarantine == []


def test_archives_feed_person_and_health_record_with_standard_codes(results):
    persons, person_errors = results["person"]
    p1, p3 = persons[A1], persons[A3]
    assert (p1.sex_code, p1.ethnicity_code, p1.id_type_code, p1.id_number_valid) == ("1", "01", "01", True)
    assert (p3.sex_code, p3.ethnicity_code, p3.id_type_code, p3.id_number) == ("2", "03", None, None)
    assert (p1.registered_at, p1.birth_date, p1.dq_flags) == (T, date(1966, 10, 26), [])
    assert A2 not in persons  # 作废 archive: withdrawn
    assert sorted((q.record_key, q.rule_id) for q in person_errors) == [(A4, "PER002")]
    records, record_errors = results["health_record"]
    r1, r2, r3 = records[A1], records[A2], records[A3]
    assert (r1.township, r1.village, r1.filed_at, r1.status) == ("乔楼镇", "宋楼村", D, "在档")
    assert (r3.township, r3.village, r3.sex_code) == ("高村乡", "陈营村", "2")
    assert r2.status == "作废"  # a voided archive keeps its number
    assert [(q.record_key, q.rule_id) for q in record_errors] == [(A4, "HRD002")]


def test_registry_cards_carry_disease_icd10_and_status(results):
    cards, _ = results["chronic_registry"]
    htn, dm, gdm = cards[GXY_CARD], cards[TNB_CARD], cards[GDM_CARD]
    assert (htn.disease, htn.diagnosis_code, htn.status, htn.registered_at) == ("hypertension", "I10.x00", "在管", D)
    assert (dm.disease, dm.diagnosis_code, dm.health_record_no) == ("diabetes", "E11.900", A3)
    assert (gdm.diagnosis_code, gdm.status) == ("O24.400", "作废")


def test_followups_map_method_control_and_card_withdraw_voided_and_quarantine_impossible_bp(results):
    followups, quarantine = results["chronic_followup"]
    f1, f2 = followups[F1], followups[F2]
    assert (f1.followup_method, f1.is_controlled, f1.registry_id, f1.disease) == (
        "门诊",
        True,
        GXY_CARD,
        "hypertension",
    )
    assert (f1.systolic_bp, f1.diastolic_bp, f1.followup_date, f1.dq_flags) == (132, 84, D, [])
    # an unknown 随访方式 is flagged with the standard value empty; the follow-up is kept
    assert (f2.followup_method, f2.is_controlled, f2.dq_flags) == (None, False, ["UNMAPPED:followup_method:4"])
    assert followups[F5].followup_date == date(2026, 10, 26)  # typed in a week late: service date
    assert (followups[F6].systolic_bp, followups[F6].is_controlled) == (138, True)  # the re-edited version
    t1 = followups[T1]
    assert (t1.fasting_glucose, t1.is_controlled, t1.registry_id, t1.followup_method) == (6.4, True, TNB_CARD, "电话")
    assert F3 not in followups  # 作废 follow-up: withdrawn
    assert sorted((q.record_key, q.rule_id) for q in quarantine) == [(F4, "FUP002")]


def test_services_keep_their_kind_and_flag_unknown_assessments(results):
    services, quarantine = results["public_health_service"]
    elderly = services[L1]
    assert (elderly.service_kind, elderly.result, elderly.height_cm, elderly.weight_kg) == (
        "elderly_check",
        "有异常",
        177.2,
        62.7,
    )
    assert (elderly.local_patient_id, elderly.health_record_no, elderly.service_date) == (A1, A1, D)
    assert (services[E2].result, services[E2].service_kind) == ("体重评价：中", "child_check")
    assert services[E1].result is None and services[E1].dq_flags == ["UNMAPPED:result:中"]
    maternal = services[Y1]
    assert (maternal.service_kind, maternal.result, maternal.gestational_weeks) == (
        "maternal_followup",
        "第1次产前随访",
        12,
    )
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(Y2, "PHS004")]


def test_contracts_map_packages_and_status(results):
    contracts, quarantine = results["family_doctor_contract"]
    q1, q2, q3 = contracts[Q1], contracts[Q2], contracts[Q3]
    assert (q1.service_package, q1.is_key_population, q1.status, q1.valid_to) == (
        "高血压服务包",
        True,
        "已签约",
        date(2027, 11, 1),
    )
    assert (q1.team_name, q1.signed_at) == ("乔楼镇卫生院第2家庭医生团队", D)
    assert (q2.service_package, q2.is_key_population, q2.dq_flags) == (None, None, ["UNMAPPED:service_package:JC01"])
    assert q3.status == "已解约"
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(Q4, "FDC001")]


def test_every_record_points_to_a_health_record(results):
    archives = set(results["health_record"][0]) | {A4}  # A4: quarantined (birth after filing)
    referenced = {
        r.health_record_no
        for entity in ("chronic_registry", "chronic_followup", "public_health_service", "family_doctor_contract")
        for r in results[entity][0].values()
    }
    assert referenced <= archives
    assert {r.registry_id for r in results["chronic_followup"][0].values()} <= set(results["chronic_registry"][0])
