"""Feed files without a database: catalog validation, periods, pseudonyms, k-anonymity, reproducible bytes."""

from __future__ import annotations

import io
import shutil
import zipfile
from datetime import date
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from exports.catalog import CATALOG_DIR, CatalogError, load_catalog
from exports.datasets import SHEET, ReleaseRefused, birth_year_band, enforce_k_anonymity, shape_rows
from exports.periods import Period, recent_periods
from exports.render import render_csv, render_jsonl, render_xlsx

CATALOG = load_catalog()


def test_the_catalog_holds_the_five_feeds_the_platforms_above_expect():
    assert set(CATALOG.feeds) == {
        "daily_service_volume",
        "empi_pix_daily",
        "monthly_indicator_report",
        "monthly_public_health_township",
        "research_extract",
    }
    research = CATALOG.feed("research_extract")
    assert research.pseudonymisation == "pseudonymised" and research.k_anonymity.k >= 5
    assert "master_id" not in {c.name for c in research.columns}
    assert {c.name for c in research.columns} >= {"patient_pseudonym", "birth_year_band", "township"}


def test_a_broken_feed_entry_is_refused_naming_file_and_field(tmp_path):
    shutil.copytree(CATALOG_DIR, tmp_path / "exports")
    path = tmp_path / "exports" / "daily_service_volume.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("period: day", "period: fortnight"), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"daily_service_volume\.yaml: period must be one of day, month"):
        load_catalog(tmp_path / "exports")
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("period: fortnight", "period: day")
        .replace("target: upstream_sftp", "target: nowhere"),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=r"target nowhere is not in _targets\.yaml"):
        load_catalog(tmp_path / "exports")


def test_periods_their_keys_bounds_and_deadlines():
    november = Period.parse("month", "2026-11")
    assert (november.key, november.start, november.end) == ("202611", date(2026, 11, 1), date(2026, 11, 30))
    assert Period.parse("day", "20261103").key == "20261103"
    assert november.deadline(10, "18:00").isoformat() == "2026-12-10T18:00:00+08:00"
    with pytest.raises(ValueError, match="write it like 2026-11"):
        Period.parse("month", "2026-13")
    assert [p.key for p in recent_periods("day", date(2026, 11, 3), 2, False)] == ["20261102", "20261103"]
    assert [p.key for p in recent_periods("month", date(2026, 11, 7), 1, False)] == ["202610"]
    assert [p.key for p in recent_periods("month", date(2026, 11, 7), 1, True)] == ["202611"]
    assert [p.key for p in recent_periods("month", date(2026, 11, 30), 1, False)] == ["202611"]


def _research_rows(count_per_group: dict[tuple, int]) -> list[dict]:
    rows = []
    for (year, sex, township), residents in count_per_group.items():
        for i in range(residents):
            rows.append(
                {
                    "master_id": f"M{year}{sex}{township}{i}",
                    "birth_date": date(year, 6, 1),
                    "sex_code": sex,
                    "township": township,
                    "visit_date": date(2026, 11, 2),
                    "org_type": "乡镇卫生院",
                    "encounter_class_code": "100",
                    "primary_diagnosis_code": "I10",
                    "is_tcm": False,
                    "payment_category_code": "01",
                    "bed_days": None,
                    "total_fee": Decimal("35.50"),
                    "drug_fee": Decimal("20"),
                    "encounter_key": f"E{year}{sex}{township}{i}",
                }
            )
    return rows


def test_pseudonyms_are_keyed_per_receiver_and_birth_dates_become_bands():
    feed = CATALOG.feed("research_extract")
    rows = _research_rows({(1961, "1", "广武镇"): 2})
    first, other = shape_rows(feed, rows, b"key-a"), shape_rows(feed, rows, b"key-b")
    assert first[0]["patient_pseudonym"] != other[0]["patient_pseudonym"]  # receivers cannot link
    assert first[0]["patient_pseudonym"] == shape_rows(feed, rows, b"key-a")[0]["patient_pseudonym"]
    assert "M1961" not in str(first) and first[0]["birth_year_band"] == "1960-1964"
    assert first[0]["visit_month"] == "2026-11"
    assert birth_year_band(None, 5) == "未知" and birth_year_band(date(1999, 1, 1), 1) == "1999"


def test_small_groups_are_suppressed_or_the_release_is_refused_naming_the_group():
    feed = CATALOG.feed("research_extract")
    rows = shape_rows(feed, _research_rows({(1961, "1", "广武镇"): 6, (1980, "2", "高山镇"): 2}), b"k")
    extract = enforce_k_anonymity(rows, feed.k_anonymity, feed.name)
    assert (len(extract.rows), extract.suppressed_rows, extract.suppressed_subjects) == (6, 2, 2)
    assert extract.smallest_group == 6
    strict = type(feed.k_anonymity)(
        k=5,
        quasi_identifiers=feed.k_anonymity.quasi_identifiers,
        subject="patient_pseudonym",
        suppress_small_groups=False,
    )
    with pytest.raises(ReleaseRefused, match="birth_year_band=1980-1984, sex_code=2, township=高山镇 with 2 resident"):
        enforce_k_anonymity(rows, strict, feed.name)


def test_csv_follows_encoding_and_bom_and_is_reproducible():
    daily = CATALOG.feed("daily_service_volume")
    row = {
        "service_date": date(2026, 11, 3),
        "org_code": "410182001",
        "org_name": "荥阳市人民医院",
        "org_level": "二级甲等",
        "outpatient_visits": 812,
        "emergency_visits": 40,
        "total_visits": 852,
        "admissions": 31,
        "discharges": 0,
    }
    content = render_csv(daily, [row])
    assert daily.format["encoding"] == "gbk" and not content.startswith(b"\xef\xbb\xbf")
    assert content.decode("gbk").splitlines()[1] == "2026-11-03,410182001,荥阳市人民医院,二级甲等,812,40,852,31,0"
    assert content == render_csv(daily, [dict(row)])
    township = CATALOG.feed("monthly_public_health_township")
    assert render_csv(township, []).startswith(b"\xef\xbb\xbftownship,")


def test_json_lines_keep_types():
    pix = CATALOG.feed("empi_pix_daily")
    line = render_jsonl(
        pix,
        [
            {
                "change_date": date(2026, 11, 3),
                "master_id": "M1",
                "change_type": "新建",
                "name": "张三",
                "sex_code": "1",
                "birth_date": date(1970, 1, 2),
                "id_number": "410182197001020011",
                "id_number_valid": True,
                "local_identifiers": '[{"system": "rmyy_his", "id": "B1"}]',
                "source_record_count": 1,
            }
        ],
    )
    assert line.decode("utf-8") == (
        '{"change_date":"2026-11-03","master_id":"M1","change_type":"新建","name":"张三","sex_code":"1",'
        '"birth_date":"1970-01-02","id_number":"410182197001020011","id_number_valid":true,'
        '"local_identifiers":[{"system":"rmyy_his","id":"B1"}],"source_record_count":1}\n'
    )


def test_workbooks_have_a_sheet_per_family_a_notes_sheet_and_identical_bytes():
    report = CATALOG.feed("monthly_indicator_report")
    rows = [
        {
            "indicator_code": "HO01",
            "indicator_name": "门急诊人次",
            "period_start": date(2026, 11, 1),
            "period_end": date(2026, 11, 30),
            "numerator": Decimal("1200"),
            "denominator": None,
            "value": Decimal("1200"),
            "unit": "人次",
            "note": "",
            SHEET: "医疗卫生运行状况监控",
        },
        {
            "indicator_code": "PH01",
            "indicator_name": "居民电子健康档案建档率",
            "period_start": date(2026, 11, 1),
            "period_end": None,
            "numerator": None,
            "denominator": None,
            "value": None,
            "unit": "%",
            "note": "本期无数据",
            SHEET: "基本公卫监管",
        },
    ]
    notes = [["报表", report.zh], ["指标编码", "指标名称", "计算公式"], ["HO01", "门急诊人次", "门诊人次 + 急诊人次"]]
    first = render_xlsx(report, rows, notes, date(2026, 11, 30))
    assert first == render_xlsx(report, [dict(r) for r in rows], notes, date(2026, 11, 30))
    core = zipfile.ZipFile(io.BytesIO(first)).read("docProps/core.xml").decode()
    assert '<dcterms:modified xsi:type="dcterms:W3CDTF">2026-11-30T00:00:00Z<' in core, "no wall clock inside"
    book = load_workbook(io.BytesIO(first))
    assert book.sheetnames == ["医疗卫生运行状况监控", "基本公卫监管", "说明"]
    assert [c.value for c in book["医疗卫生运行状况监控"][1]][:2] == ["指标编码", "指标名称"]
    assert book["医疗卫生运行状况监控"]["G2"].value == 1200
    assert book["说明"]["C3"].value == "门诊人次 + 急诊人次"
