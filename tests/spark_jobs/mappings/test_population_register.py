"""全员人口库月报 (population_register) mapping on small bronze fixtures shaped like the monthly GBK CSVs (manual:
docs/simulator/file_sources.md §3): text values parsed, names reach GB/T codes, the newest month wins and
register_month comes from the file name.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.model import code_system, column_code_system, concept_map, source_mapping
from spark_jobs.standardize import standardize_frame
from tests.spark_jobs.bronze_rows import bronze_frame

SOURCE = "population_register"
ID1, ID2, ID3, ID4 = "410182194712157001", "41010219601215847X", "410182202610010026", "410182197709079510"


def _resident(id_number: str, **extra: Any) -> dict[str, Any]:
    return {
        "姓名": "于艳",
        "性别": "女",
        "出生日期": id_number[6:14],
        "公民身份号码": id_number,
        "民族": "汉族",
        "乡镇街道": "京城路街道",
        "村居委会": "中原路社区",
        "户编号": "410182000000044",
        "人口类别": "户籍",
        "现住址": "河南省荥阳市京城路街道中原路社区3号",
        **extra,
    }


def _month(spark, month: str, rows: list[dict[str, Any]], summary: bool = False) -> DataFrame:
    name = f"QYRK_410182_{month}{'_HZ' if summary else ''}.csv"
    positioned = [{**row, "_source_pos": f"{month}01|{name}|{n:09d}"} for n, row in enumerate(rows, 1)]
    return bronze_frame(spark, SOURCE, positioned, org_code="410182000").withColumn("_source_file", F.lit(name))


@pytest.fixture(scope="module")
def results(spark) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    october = [
        _resident(ID1),
        _resident(ID2, 姓名="张健", 性别="男", 人口类别="常住", 村居委会="郭湾村", 乡镇街道="贾峪镇"),
        _resident(ID4, 姓名="王强飞", 性别="男", 民族="回族", 出生日期="19770709"),
    ]  # date ≠ ID number
    november = [
        _resident(ID1, 现住址="河南省荥阳市京城路街道中原路社区5号"),
        _resident(ID3, 姓名="于子涵", 出生日期="20261001"),
    ]  # born, now registered
    qyrk = _month(spark, "202610", october).unionByName(_month(spark, "202611", november))
    cells = [
        {"乡镇街道": "京城路街道", "性别": s, "年龄组": g, "常住人口数": n, "户籍人口数": n}
        for s, g, n in (("男", "0-4岁", "10"), ("女", "85岁及以上", "3"), ("女", "80-84岁", "-1"))
    ]
    summary = _month(spark, "202610", cells, True).unionByName(
        _month(spark, "202611", [{**cells[0], "常住人口数": "11"}], True)
    )
    frames = {"QYRK": qyrk, "QYRK_HZ": summary}
    out = {}
    for spec in source_mapping(SOURCE)["tables"]:
        silver, quarantine = standardize_frame(frames[spec["bronze_table"]], spec, SOURCE)
        out[spec["entity"]] = ({r.source_key: r for r in silver.collect()}, quarantine.collect())
    return out


def test_mapping_loads_and_every_concept_map_target_is_a_standard_code():
    mapping = source_mapping(SOURCE)
    checked = 0
    for table in mapping["tables"]:
        for column, spec in table["columns"].items():
            label = column_code_system(table["entity"], column)
            if "concept_map" in spec and label:
                assert set(concept_map(SOURCE, spec["concept_map"]).values()) <= set(code_system(label))
                checked += 1
    assert checked == 3  # sex ×2, ethnicity


def test_register_rows_are_parsed_and_the_newest_month_wins(results):
    residents, quarantine = results["population_register"]
    assert set(residents) == {ID1, ID2, ID3}
    r1, r2, r3 = residents[ID1], residents[ID2], residents[ID3]
    assert (r1.address, r1.register_month, r1.sex_code, r1.ethnicity_code) == (
        "河南省荥阳市京城路街道中原路社区5号",
        "2026-11",
        "2",
        "01",
    )
    assert (r1.birth_date, r1.household_no, r1.residence_status) == (date(1947, 12, 15), "410182000000044", "户籍")
    # not in the November file any more: the row of the last month that listed it stays, with that month
    assert (r2.register_month, r2.residence_status, r2.township, r2.village, r2.id_number) == (
        "2026-10",
        "常住",
        "贾峪镇",
        "郭湾村",
        ID2,
    )
    assert (r3.birth_date, r3.register_month) == (date(2026, 10, 1), "2026-11")
    assert [(q.record_key, q.rule_id) for q in quarantine] == [(ID4, "POP002")]


def test_summary_cells_are_denominators_by_township_sex_and_age_group(results):
    cells, quarantine = results["population_summary"]
    boys = cells["京城路街道|男|0-4岁"]
    assert (boys.summary_id, boys.sex_code, boys.population, boys.register_month) == (
        "京城路街道|男|0-4岁",
        "1",
        11,
        "2026-11",
    )
    oldest = cells["京城路街道|女|85岁及以上"]
    assert (oldest.sex_code, oldest.age_group, oldest.population, oldest.township) == (
        "2",
        "85岁及以上",
        3,
        "京城路街道",
    )
    assert [(q.record_key, q.rule_id) for q in quarantine] == [("京城路街道|女|80-84岁", "POP003")]
