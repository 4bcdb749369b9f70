"""The indicator catalog is the one definition: generated dbt and docs match it, and contradictions are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.indicators import (
    CATALOG_DIR,
    DICTIONARY_FILE,
    MEASURES_MODEL,
    CatalogError,
    load_catalog,
    render_dictionary,
    render_measures_sql,
)

# Indicators the tender and the 国家 norms name (../shared/reference, tender 平台监管): each must be in the
# catalog, computable or saying why not.
NAMED_IN_TENDER = [
    "病床使用率",
    "平均开放病床数",
    "病床周转次数",
    "病床工作日",
    "出院者平均住院日",
    "医师日均担负诊疗人次",
    "医师日均担负住院床日",
    "门诊病人次均医药费用",
    "住院病人人均医药费用",
    "药占比",
    "住院死亡率",
    "入出院诊断符合率",
    "无菌手术甲级愈合率",
    "每百门急诊入院人次",
    "门急诊疾病 Top10",
    "住院疾病 Top10",
    "手术等级分布",
    "切口愈合等级分布",
    "中医门诊人次占比",
    "住院病人日均医药费用",
    "居民电子健康档案建档率",
    "健康档案使用率",
    "老年人健康管理率",
    "高血压患者规范管理率",
    "管理人群血压控制率",
    "2型糖尿病患者规范管理率",
    "管理人群血糖控制率",
    "0～6岁儿童健康管理率",
    "新生儿访视率",
    "早孕建册率",
    "产后访视率",
    "严重精神障碍患者规范管理率",
    "肺结核患者管理率",
    "肺结核患者规则服药率",
    "县域内住院人次占比",
    "基层诊疗量占比",
    "上转患者数",
    "下转患者数",
    "下转患者占比",
    "慢病患者基层管理率",
    "县域医保基金县域内支出率",
    "全人群签约覆盖率",
    "重点人群签约覆盖率",
    "签约居民定点机构就诊率",
    "签约医生就诊率",
    "具有处方权的全科医生数",
    "家庭医生签约医保基金金额",
    "家庭医生签约财政投入金额",
    "家庭医生签约公共卫生服务经费金额",
    "卫生技术人员数",
    "执业（助理）医师数",
    "每千常住人口床位数",
]


def test_generated_dbt_model_and_dictionary_match_the_catalog():
    catalog = load_catalog()
    assert MEASURES_MODEL.read_text(encoding="utf-8") == render_measures_sql(catalog), (
        "dbt/models/intermediate/int_indicator_measures.sql is stale: run ./drc indicators"
    )
    assert DICTIONARY_FILE.read_text(encoding="utf-8") == render_dictionary(catalog), (
        "docs/indicators.md is stale: run ./drc indicators"
    )


def test_catalog_covers_the_named_indicators_and_says_why_when_it_cannot():
    indicators = load_catalog().indicators.values()
    names = {i.zh for i in indicators}
    assert not [n for n in NAMED_IN_TENDER if n not in names]
    for indicator in indicators:
        assert indicator.supported or indicator.note, indicator.code
        assert indicator.formula and indicator.unit, indicator.code


def test_every_family_is_in_the_dictionary_with_its_formulas():
    text = DICTIONARY_FILE.read_text(encoding="utf-8")
    catalog = load_catalog()
    for zh in catalog.families.values():
        assert f"## {zh}" in text
    for indicator in catalog.indicators.values():
        assert indicator.formula.replace("|", "\\|") in text, indicator.code


def _catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "indicators"
    shutil.copytree(CATALOG_DIR, target)
    return target


def test_an_indicator_naming_an_unknown_measure_is_refused_with_file_and_code(tmp_path):
    directory = _catalog_copy(tmp_path)
    path = directory / "medcom.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("numerator: up_referrals", "numerator: up_referals"), encoding="utf-8"
    )
    with pytest.raises(CatalogError, match=r"medcom.yaml: indicator MC03: numerator 'up_referals'"):
        load_catalog.__wrapped__(directory)


def test_a_resident_measure_cannot_be_cut_by_institution(tmp_path):
    directory = _catalog_copy(tmp_path)
    path = directory / "public_health.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "defaults: {grains: [township, county]", "defaults: {grains: [institution, township, county]"
        ),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=r"attribution residence\) cannot be cut by \['institution'\]"):
        load_catalog.__wrapped__(directory)


def test_an_indicator_defined_twice_is_refused(tmp_path):
    directory = _catalog_copy(tmp_path)
    (directory / "copy.yaml").write_text(
        "family: copy\nzh: 副本\nindicators:\n  - {code: HO01, zh: 门急诊人次, formula: x, unit: 人次, "
        "numerator: oe_visits}\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="HO01 is already defined"):
        load_catalog.__wrapped__(directory)


def test_monthly_data_cannot_be_reported_per_day(tmp_path):
    """Fees come from a monthly mart: a daily 门诊次均费用 would put the whole month on its first day."""
    directory = _catalog_copy(tmp_path)
    path = directory / "public_health.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "periods: [month, quarter, year]}", "periods: [day, month, quarter, year]}"
        ),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=r"population is monthly data and cannot be reported per \['day'\]"):
        load_catalog.__wrapped__(directory)
