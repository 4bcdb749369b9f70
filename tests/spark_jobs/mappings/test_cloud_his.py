"""基层云HIS (cloud_his) mapping on small multi-tenant bronze fixtures shaped like the vendor's PostgreSQL tables
(manual: docs/simulator/cloud_his.md): tenants become organizations, 基层 ICD codes and village doctors' typed
diagnoses reach ICD-10 国家临床版 2.0, unknown codes are flagged and kept, logic errors and duplicate
submissions are quarantined with their rule id, 作废 (del_flag) rows leave silver, and ids agree across tables.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from tests.spark_jobs.bronze_rows import bronze_frame, by_entity_and_table, standardize_source

SOURCE = "cloud_his"
TOWN, VILLAGE = "410182103", "410182301"  # 乔楼镇卫生院 and one of its 村卫生室
D = datetime(2026, 11, 3, 9, 30)
ADM = datetime(2026, 11, 3, 10)
PT1, PT2 = 1032611030001, 3012611030001
V1, V2, V3, V4 = 261103103000001, 261103103000002, 261103103000003, 261103103000004
V5, V6 = 261103301000001, 261103301000002
R1 = V1 * 10 + 1
I3, I4 = V3 * 10 + 3, V4 * 10 + 3

TYPES = {
    "id": "bigint",
    "user_id": "bigint",
    "patient_id": "bigint",
    "visit_id": "bigint",
    "doctor_id": "bigint",
    "recipe_id": "bigint",
    "inpatient_id": "bigint",
    "bed_num": "int",
    "sort_no": "smallint",
    "birthday": "date",
    "quantity": "decimal(10,2)",
    "unit_price": "decimal(10,4)",
    "amount": "decimal(12,2)",
    "total_amount": "decimal(12,2)",
    "retail_price": "decimal(10,4)",
    "gmt_create": "timestamp",
    "gmt_modified": "timestamp",
    "visit_time": "timestamp",
    "recipe_time": "timestamp",
    "charge_time": "timestamp",
    "in_time": "timestamp",
    "out_time": "timestamp",
    "oper_time": "timestamp",
    "report_time": "timestamp",
}


def _row(tenant: str, at: datetime = D, deleted: bool = False, **columns: Any) -> dict[str, Any]:
    """A vendor row: tenant_id, its columns, the audit columns; bronze _org_code = tenant without the 'T'."""
    return {
        "tenant_id": "T" + tenant,
        **columns,
        "del_flag": "1" if deleted else "0",
        "gmt_create": at,
        "gmt_modified": at + timedelta(days=2) if deleted else at,
        "_org_code": tenant,
    }


def _visit(
    visit_id: int,
    tenant: str,
    patient: int,
    visit_type: str = "1",
    at: datetime = D,
    deleted: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    columns = {
        "id": visit_id,
        "patient_id": patient,
        "visit_type": visit_type,
        "dept_code": "1001",
        "dept_name": "全科门诊",
        "doctor_id": 103001,
        "doctor_name": "王兰磊",
        "visit_time": D,
        "remark": "退费" if deleted else None,
        **extra,
    }
    return _row(tenant, at, deleted, **columns)


def _diag(
    visit_id: int,
    n: int,
    code: str | None,
    name: str,
    main: str = "1",
    kind: str = "1",
    tenant: str = TOWN,
    deleted: bool = False,
) -> dict[str, Any]:
    return _row(
        tenant,
        D + timedelta(minutes=5),
        deleted,
        id=visit_id * 100 + n,
        visit_id=visit_id,
        diag_type=kind,
        main_flag=main,
        sort_no=n,
        diag_code=code,
        diag_name=name,
        diag_desc=None,
    )


def _charge(
    visit_id: int,
    n: int,
    fee_code: str,
    item: str,
    name: str,
    amount: str,
    pay: str = "1",
    tenant: str = TOWN,
    patient: int = PT1,
    deleted: bool = False,
) -> dict[str, Any]:
    return _row(
        tenant,
        D + timedelta(minutes=20),
        deleted,
        id=visit_id * 100 + n,
        visit_id=visit_id,
        patient_id=patient,
        fee_code=fee_code,
        item_code=item,
        item_name=name,
        amount=Decimal(amount),
        pay_type=pay,
        charge_time=D + timedelta(minutes=20),
    )


def _stay(visit_id: int, out_time: datetime) -> dict[str, Any]:
    return _row(
        TOWN,
        out_time,
        id=visit_id * 10 + 3,
        visit_id=visit_id,
        patient_id=PT1,
        inpatient_no=f"ZY261103{visit_id % 10**4:04d}",
        dept_code="1002",
        dept_name="中医科",
        bed_no="004",
        doctor_id=103001,
        in_time=ADM,
        in_diag_code="K80.2",
        in_diag_name="胆囊结石",
        out_time=out_time,
        out_status="2",
        out_diag_code="K80.2",
        out_diag_name="胆囊结石",
        in_status="2",
    )


BRONZE: dict[str, list[dict[str, Any]]] = {
    "sys_tenant": [
        _row(
            TOWN,
            tenant_name="乔楼镇卫生院",
            tenant_level="1",
            parent_tenant_id="0",
            area_code="410182",
            town_name="乔楼镇",
            bed_num=40,
            status="0",
        ),
        _row(
            VILLAGE,
            tenant_name="乔楼镇丁营村卫生室",
            tenant_level="3",
            parent_tenant_id="T" + TOWN,
            area_code="410182",
            town_name="乔楼镇",
            bed_num=0,
            status="0",
        ),
    ],
    "sys_dept": [
        _row(TOWN, id=1031001, dept_code="1001", dept_name="全科门诊", std_dept_code="0101"),
        _row(VILLAGE, id=3011001, dept_code="1001", dept_name="全科诊室", std_dept_code="0100"),
    ],
    "sys_user": [
        _row(TOWN, user_id=103001, user_name="王兰磊", user_type="1", title_name="主任医师", cert_no="648564379644089"),
        _row(TOWN, deleted=True, user_id=103002, user_name="陈永帅", user_type="2", title_name="护师", cert_no=None),
    ],
    "t_patient": [
        _row(
            TOWN,
            id=PT1,
            patient_name="刘红健",
            sex="1",
            birthday=date(1973, 5, 21),
            id_card_type="01",
            id_card="41018219730521165x",
            mobile="13185642633",
            address="河南省荥阳市乔楼镇丁营村１６９号",
            nation="03",
        ),  # full-width digits, lower-case check char
        _row(
            VILLAGE,
            id=PT2,
            patient_name="王静巧",
            sex="9",
            birthday=date(1989, 10, 8),
            id_card_type=None,
            id_card=None,
            mobile=None,
            address="荥阳市乔楼镇丁营村60号",
            nation="01",
        ),  # '9': 旧数据 未知
    ],
    "t_visit": [
        _visit(V1, TOWN, PT1),
        _visit(V2, TOWN, PT1, at=D + timedelta(seconds=8)),  # the same registration saved twice
        _visit(V3, TOWN, PT1, "3", dept_code="1002", dept_name="中医科", visit_time=ADM),
        _visit(V4, TOWN, PT1, "3", dept_code="1002", dept_name="中医科", visit_time=ADM + timedelta(hours=2)),
        _visit(V5, VILLAGE, PT2, dept_name="全科诊室", doctor_id=301001, doctor_name="李建国"),
        _visit(
            V6,
            VILLAGE,
            PT2,
            deleted=True,
            dept_name="全科诊室",
            doctor_id=301001,
            doctor_name="李建国",
            visit_time=D + timedelta(hours=1),
        ),
    ],
    "t_visit_diag": [
        _diag(V1, 1, "I10", "原发性高血压"),
        _diag(V1, 2, "ZDY017", "眩晕待查", main="0"),  # 租户自定义诊断
        _diag(V2, 1, "I10", "原发性高血压"),
        _diag(V3, 1, "K80.2", "胆囊结石", kind="2"),
        _diag(V5, 1, None, "高血压", tenant=VILLAGE),  # typed by the village doctor, no code
        _diag(V5, 2, "", "腿疼", main="0", tenant=VILLAGE),
        _diag(V6, 1, "J06.9", "急性上呼吸道感染", tenant=VILLAGE, deleted=True),
    ],
    "t_recipe": [
        _row(
            TOWN,
            D + timedelta(minutes=10),
            id=R1,
            visit_id=V1,
            patient_id=PT1,
            recipe_type="1",
            doctor_id=103001,
            recipe_time=D + timedelta(minutes=10),
            total_amount=Decimal("37.20"),
        )
    ],
    "t_recipe_detail": [
        _row(
            TOWN,
            id=R1 * 100 + 1,
            recipe_id=R1,
            drug_code="YP34196551",
            drug_name="苯磺酸氨氯地平片",
            drug_spec="5mg*28片",
            quantity=Decimal("2"),
            unit_price=Decimal("18.6"),
            amount=Decimal("37.20"),
            frequency="QD",
        ),
        _row(
            TOWN,
            id=R1 * 100 + 2,
            recipe_id=R1,
            drug_code="ZB0417",
            drug_name="硝苯地平缓释片（自备）",
            drug_spec="20mg*30片",
            quantity=Decimal("1"),
            unit_price=Decimal("0"),
            amount=Decimal("0.00"),
            frequency="bid",
        ),  # 自备药, outside the dictionary
        _row(
            TOWN,
            id=R1 * 100 + 3,
            recipe_id=R1,
            drug_code="YP22786066",
            drug_name="连花清瘟胶囊",
            drug_spec="0.35g*24粒",
            quantity=Decimal("1"),
            unit_price=Decimal("28"),
            amount=Decimal("28.00"),
            frequency="tid",
        ),
    ],
    "t_drug_dict": [  # platform-wide (tenant '0')
        {
            **_row(
                "410182000",
                drug_code="YP34196551",
                drug_name="苯磺酸氨氯地平片",
                drug_spec="5mg*28片",
                ybbm="XC08CAA033A001010100223",
                retail_price=Decimal("18.6"),
            ),
            "tenant_id": "0",
        },
        {
            **_row(
                "410182000",
                drug_code="YP22786066",
                drug_name="连花清瘟胶囊",
                drug_spec="0.35g*24粒",
                ybbm="ZA01AAL0130010102050",
                retail_price=Decimal("28"),
            ),
            "tenant_id": "0",
        },
    ],
    "t_charge": [
        _charge(V1, 1, "08", "110200001", "挂号费", "6.00"),
        _charge(V1, 2, "01", "YP34196551", "苯磺酸氨氯地平片", "37.20"),
        _charge(V3, 1, "06", "110900001", "床位费", "150.00", pay="2"),
        _charge(V3, 2, "05", "120100001", "护理费", "-25.00", pay="2"),  # negative: impossible here
        _charge(V6, 1, "08", "110200001", "挂号费", "1.00", pay="2", tenant=VILLAGE, patient=PT2, deleted=True),
    ],
    "t_inpatient": [_stay(V3, datetime(2026, 11, 8, 9)), _stay(V4, datetime(2026, 11, 1, 9))],  # I4: out < in
    "t_operation": [
        _row(
            TOWN,
            datetime(2026, 11, 8, 9),
            id=V3 * 100 + 1,
            inpatient_id=I3,
            visit_id=V3,
            oper_code="51.2301",
            oper_name="腹腔镜胆囊切除术",
            oper_time=datetime(2026, 11, 4, 9),
            incision_level="2",
            heal_level="1",
        )
    ],
    "t_lab": [
        _row(
            TOWN,
            id=V1 * 100 + 1,
            visit_id=V1,
            patient_id=PT1,
            item_code="GLU",
            item_name="葡萄糖",
            result_value="6.3",
            unit="mmol/L",
            ref_range="3.9-6.1",
            abnormal_flag="H",
            report_time=D,
        ),
        _row(
            TOWN,
            id=V1 * 100 + 2,
            visit_id=V1,
            patient_id=PT1,
            item_code="WBC",
            item_name="白细胞计数",
            result_value="6.5",
            unit="10^9/L",
            ref_range="3.5-9.5",
            abnormal_flag=None,
            report_time=D,
        ),
    ],
    "t_exam": [
        _row(
            TOWN,
            id=V1 * 100 + 1,
            visit_id=V1,
            patient_id=PT1,
            exam_class="03",
            body_part="腹部",
            exam_see="肝胆胰脾未见明显异常",
            exam_result="腹部超声未见异常",
            report_time=D,
        ),
        _row(
            TOWN,
            id=V1 * 100 + 2,
            visit_id=V1,
            patient_id=PT1,
            exam_class="07",
            body_part="胸部",
            exam_see="未见异常",
            exam_result="未见异常",
            report_time=D,
        ),  # not in the vendor's list
    ],
}


@pytest.fixture(scope="module")
def results(spark) -> dict[tuple[str, str], tuple[dict[str, Any], list[Any]]]:
    """(entity, bronze table) -> (silver rows by source key, quarantine rows) for every mapped table."""
    frames = {
        table: bronze_frame(spark, SOURCE, rows, org_code=TOWN, types={c: t for c, t in TYPES.items() if c in rows[0]})
        for table, rows in BRONZE.items()
    }
    return standardize_source(SOURCE, frames, by_entity_and_table)


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    assert {t["bronze_table"] for t in mapping["tables"]} == set(BRONZE) - {"t_recipe", "t_inpatient", "t_drug_dict"}
    checked = 0
    for table in mapping["tables"]:
        columns = dict(table["columns"])
        for lookup in (table.get("lookups") or {}).values():
            columns.update(lookup["columns"])
        for column, spec in columns.items():
            if "concept_map" in spec:
                standard = code_system(column_code_system(table["entity"], column))
                targets = set(concept_map(SOURCE, spec["concept_map"]).values())
                assert standard and targets <= set(standard), (spec["concept_map"], targets - set(standard))
                checked += 1
    assert checked >= 13


def test_tenants_departments_and_users(results):
    orgs, _ = results[("organization", "sys_tenant")]
    town, village = orgs["T" + TOWN], orgs["T" + VILLAGE]
    assert (town.organization_code, town.organization_type, town.parent_organization_code) == (TOWN, "乡镇卫生院", None)
    assert (village.organization_code, village.organization_type, village.parent_organization_code) == (
        VILLAGE,
        "村卫生室",
        TOWN,
    )
    assert (village.organization_name, village.township, village.is_active, village.org_code) == (
        "乔楼镇丁营村卫生室",
        "乔楼镇",
        True,
        VILLAGE,
    )
    departments, _ = results[("department", "sys_dept")]
    assert {k: (d.department_code, d.department_name, d.org_code) for k, d in departments.items()} == {
        "1031001": ("1001", "全科门诊", TOWN),
        "3011001": ("1001", "全科诊室", VILLAGE),
    }
    users, _ = results[("practitioner", "sys_user")]
    assert (users["103001"].role, users["103001"].title, users["103001"].licence_no) == (
        "医师",
        "主任医师",
        "648564379644089",
    )
    assert (users["103002"].role, users["103002"].is_active) == ("护士", False)


def test_patients_map_sex_including_the_legacy_unknown_code(results):
    persons, quarantine = results[("person", "t_patient")]
    p1, p2 = persons[str(PT1)], persons[str(PT2)]
    assert (p1.sex_code, p1.ethnicity_code, p1.id_type_code, p1.id_number, p1.id_number_valid) == (
        "1",
        "03",
        "01",
        "41018219730521165X",
        True,
    )
    assert (p1.address, p1.birth_date, p1.org_code, p1.dq_flags) == (
        "河南省荥阳市乔楼镇丁营村169号",
        date(1973, 5, 21),
        TOWN,
        [],
    )
    assert (p2.sex_code, p2.sex_source_value, p2.id_number, p2.id_type_code, p2.org_code) == (
        "0",
        "9",
        None,
        None,
        VILLAGE,
    )
    assert quarantine == []


def test_visits_take_stay_diagnosis_and_payment_and_quarantine_bad_ones(results):
    visits, quarantine = results[("encounter", "t_visit")]
    v1, v3, v5 = visits[str(V1)], visits[str(V3)], visits[str(V5)]
    assert (v1.encounter_class_code, v1.local_patient_id, v1.visit_at, v1.department_code) == (
        "100",
        str(PT1),
        D,
        "1001",
    )
    assert (v1.primary_diagnosis_code, v1.payment_category_code, v1.status, v1.dq_flags) == ("I10.x00", "99", None, [])
    assert (v3.encounter_class_code, v3.admitted_at, v3.discharged_at, v3.length_of_stay_days) == (
        "300",
        ADM,
        datetime(2026, 11, 8, 9),
        5,
    )
    assert (v3.bed_id, v3.discharge_outcome_code, v3.primary_diagnosis_code, v3.payment_category_code) == (
        "004",
        "2",
        "K80.200",
        "07",
    )
    # a village doctor's typed diagnosis is mapped by name
    assert (v5.primary_diagnosis_code, v5.primary_diagnosis_name, v5.org_code) == ("I10.x00", "高血压", VILLAGE)
    assert str(V6) not in visits  # 作废 (del_flag '1') is a delete
    assert str(V2) not in visits and str(V4) not in visits
    assert sorted((q.record_key, q.rule_id) for q in quarantine) == [(str(V2), "ENC004"), (str(V4), "ENC003")]


def test_diagnoses_map_codes_and_typed_names_and_flag_unknown_ones(results):
    diagnoses, quarantine = results[("diagnosis", "t_visit_diag")]
    coded, custom = diagnoses[str(V1 * 100 + 1)], diagnoses[str(V1 * 100 + 2)]
    assert (coded.diagnosis_code, coded.diagnosis_source_code, coded.is_primary, coded.diagnosis_kind) == (
        "I10.x00",
        "I10",
        True,
        "门诊",
    )
    assert (coded.encounter_id, coded.local_patient_id, coded.diagnosed_at) == (
        str(V1),
        str(PT1),
        D + timedelta(minutes=5),
    )
    assert (custom.diagnosis_code, custom.diagnosis_source_code, custom.dq_flags) == (
        None,
        "ZDY017",
        ["UNMAPPED:diagnosis_code:ZDY017"],
    )
    assert (diagnoses[str(V3 * 100 + 1)].diagnosis_kind, diagnoses[str(V3 * 100 + 1)].diagnosis_code) == (
        "入院",
        "K80.200",
    )
    typed, unknown = diagnoses[str(V5 * 100 + 1)], diagnoses[str(V5 * 100 + 2)]
    assert (typed.diagnosis_code, typed.diagnosis_source_code, typed.diagnosis_name, typed.dq_flags) == (
        "I10.x00",
        None,
        "高血压",
        [],
    )
    assert (unknown.diagnosis_code, unknown.diagnosis_name, unknown.dq_flags) == (
        None,
        "腿疼",
        ["UNMAPPED:diagnosis_code:腿疼"],
    )
    assert str(V6 * 100 + 1) not in diagnoses and quarantine == []  # the 作废 visit's diagnosis


def test_prescriptions_map_dictionary_drugs_and_flag_own_supply(results):
    items, quarantine = results[("prescription", "t_recipe_detail")]
    drug, own, patent = items[str(R1 * 100 + 1)], items[str(R1 * 100 + 2)], items[str(R1 * 100 + 3)]
    assert (drug.drug_code, drug.atc_code, drug.drug_source_code, drug.frequency_code, drug.drug_category) == (
        "XC08CAA033A001010100223",
        "C08CA01",
        "YP34196551",
        "qd",
        "西药",
    )
    assert (drug.prescription_id, drug.encounter_id, drug.local_patient_id, drug.prescribed_at) == (
        str(R1),
        str(V1),
        str(PT1),
        D + timedelta(minutes=10),
    )
    assert (drug.quantity, drug.unit_price, drug.amount, drug.dq_flags) == (
        Decimal("2.00"),
        Decimal("18.60"),
        Decimal("37.20"),
        [],
    )
    assert (own.drug_code, own.drug_source_code, own.encounter_id, own.drug_category) == (None, "ZB0417", str(V1), None)
    assert own.dq_flags == ["UNMAPPED:drug_code:ZB0417"] and quarantine == []
    assert (patent.drug_code, patent.drug_category, patent.atc_code, patent.dq_flags) == (
        "ZA01AAL0130010102050",
        "中成药",
        None,
        [],
    )  # 中成药: no ATC, not flagged


def test_charges_map_categories_and_mark_refunds(results):
    fees, quarantine = results[("fee", "t_charge")]
    registration, drug = fees[str(V1 * 100 + 1)], fees[str(V1 * 100 + 2)]
    assert (registration.fee_category_code, registration.fee_category_source_value, registration.amount) == (
        "01",
        "08",
        Decimal("6.00"),
    )
    assert (drug.fee_category_code, drug.is_refunded, drug.refunded_at) == ("13", False, None)
    refunded = fees[str(V6 * 100 + 1)]
    assert (refunded.is_refunded, refunded.refunded_at, refunded.encounter_id) == (
        True,
        D + timedelta(minutes=20, days=2),
        str(V6),
    )
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(str(V3 * 100 + 2), "FEE001")]


def test_operations_labs_and_exams(results):
    surgeries, _ = results[("surgery", "t_operation")]
    s = surgeries[str(V3 * 100 + 1)]
    assert (s.procedure_code, s.incision_class_code, s.incision_class_source_value) == ("51.2301", "II", "2")
    assert (s.encounter_id, s.local_patient_id, s.started_at) == (str(V3), str(PT1), datetime(2026, 11, 4, 9))
    labs, _ = results[("lab_result", "t_lab")]
    glucose, wbc = labs[str(V1 * 100 + 1)], labs[str(V1 * 100 + 2)]
    assert (glucose.item_code, glucose.item_source_code, glucose.numeric_value, glucose.abnormal_flag) == (
        "2345-7",
        "GLU",
        6.3,
        "H",
    )
    assert (wbc.item_code, wbc.abnormal_flag, wbc.unit, wbc.reference_range) == ("6690-2", "N", "10^9/L", "3.5-9.5")
    exams, _ = results[("exam_report", "t_exam")]
    us, other = exams[str(V1 * 100 + 1)], exams[str(V1 * 100 + 2)]
    assert (us.exam_class_code, us.body_part, us.conclusion, us.encounter_id) == (
        "US",
        "腹部",
        "腹部超声未见异常",
        str(V1),
    )
    assert (other.exam_class_code, other.dq_flags) == (None, ["UNMAPPED:exam_class_code:07"])


def test_ids_agree_across_tables(results):
    encounters = set(results[("encounter", "t_visit")][0]) | {str(V2), str(V4)}  # + the quarantined ones
    children = [
        ("diagnosis", "t_visit_diag"),
        ("prescription", "t_recipe_detail"),
        ("fee", "t_charge"),
        ("surgery", "t_operation"),
        ("lab_result", "t_lab"),
        ("exam_report", "t_exam"),
    ]
    referenced = {r.encounter_id for table in children for r in results[table][0].values()}
    assert referenced - encounters == {str(V6)}  # only the refunded charge of the 作废 visit
    persons = set(results[("person", "t_patient")][0])
    assert {
        r.local_patient_id for table in [("encounter", "t_visit"), *children] for r in results[table][0].values()
    } == persons
