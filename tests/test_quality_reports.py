"""Per-institution data-quality reports on small hand-made dq.* rows: the officer's files hold the score dq.score
holds, the right rank, every failing row of their own institution and no other's, escaped values, and days
that add up to the 稽核条目."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from openpyxl import load_workbook

from expectations.reports import (
    HTML_ROWS_PER_RULE,
    SHEETS,
    build_report_data,
    period_bounds,
    report_stem,
    write_reports_from_tables,
)

A, B, C = "410182001", "410182009", "410182002"  # two 综合医院 and a 中医医院 with a better score
D1, D2, OLD = date(2026, 11, 3), date(2026, 11, 4), date(2026, 10, 31)
MONTH = date(2026, 11, 1)
SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://example.invalid")'
SCHEME = {
    "scheme_id": "hospital",
    "scheme_version": "2026.1",
    "zh": "医院数据质量评价方案",
    "method": "weighted",
    "weights": {
        "conformity": 25.0,
        "completeness": 20.0,
        "consistency": 10.0,
        "timeliness": 15.0,
        "logic": 20.0,
        "uniqueness": 10.0,
    },
}
RULES = [
    {
        "rule_id": "R1",
        "dataset": "person",
        "dimension": "completeness",
        "severity": "error",
        "description_zh": "患者姓名不能为空",
        "kind": "expectation",
        "origin": "library",
    },
    {
        "rule_id": "R2",
        "dataset": "person",
        "dimension": "conformity",
        "severity": "warning",
        "description_zh": "性别代码符合值域",
        "kind": "expectation",
        "origin": "library",
    },
    {
        "rule_id": "R3",
        "dataset": "encounter",
        "dimension": "logic",
        "severity": "blocking",
        "description_zh": "入院日期不晚于出院日期",
        "kind": "condition",
        "origin": "library",
    },
]
COEFFICIENT = {"R1": 1.0, "R2": 1.0, "R3": 2.0}
DIMENSION = {r["rule_id"]: r["dimension"] for r in RULES}
# (org, rule, day): (checked, failed); R2 of A on D1 fails more rows than the page lists
COUNTS = {
    (A, "R1", D1): (100, 2),
    (A, "R1", D2): (120, 1),
    (A, "R2", D1): (1000, 205),
    (A, "R2", D2): (900, 0),
    (A, "R3", D1): (50, 5),
    (A, "R3", D2): (60, 3),
    (A, "R1", OLD): (999, 9),
    (B, "R1", D1): (100, 0),
    (B, "R1", D2): (100, 1),
    (B, "R2", D1): (500, 3),
    (B, "R2", D2): (500, 0),
    (B, "R3", D1): (40, 0),
    (B, "R3", D2): (40, 1),
}


def _items() -> list[dict[str, Any]]:
    return [
        {
            "rule_id": rule,
            "dataset": "person" if rule != "R3" else "encounter",
            "org_code": org,
            "source_system": "his",
            "business_date": day,
            "checked_rows": checked,
            "failed_rows": failed,
            "coefficient": COEFFICIENT[rule],
            "run_id": "run-1",
        }
        for (org, rule, day), (checked, failed) in COUNTS.items()
    ]


def _problems() -> list[dict[str, Any]]:
    rows = []
    for (org, rule, day), (_, failed) in COUNTS.items():
        for n in range(failed):
            key = f"{org}-{rule}-{day}-{n}"
            value = {0: SCRIPT, 1: FORMULA}.get(n) if (org, rule, day) == (A, "R1", D1) else str(n)
            closed = (org, rule, day, n) == (A, "R3", D1, 0)
            rows.append(
                {
                    "problem_id": key,
                    "rule_id": rule,
                    "dataset": "person",
                    "dimension": DIMENSION[rule],
                    "org_code": org,
                    "source_system": "his",
                    "source_table": "his.patient",
                    "business_key": key,
                    "business_date": day,
                    "value": value,
                    "description_zh": f"{rule} 不通过",
                    "status": "closed" if closed else "open",
                    "first_seen_at": datetime(2026, 11, 5, 2, 0, tzinfo=UTC),
                    "last_seen_at": datetime(2026, 11, 5, 2, 0, tzinfo=UTC),
                    "closed_at": datetime(2026, 11, 6, 2, 0, tzinfo=UTC) if closed else None,
                }
            )
    return rows


def _score(org: str, period_type: str, start: date, days: set[date]) -> list[dict[str, Any]]:
    """dq.score rows as the scheme defines them: coefficient-weighted pass rate per dimension, weighted total."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for (item_org, rule, day), (checked, failed) in COUNTS.items():
        if item_org == org and day in days:
            acc = sums[DIMENSION[rule]]
            acc[0] += COEFFICIENT[rule] * checked
            acc[1] += COEFFICIENT[rule] * failed
            acc[2] += checked
            acc[3] += failed
    scores = {d: 100.0 * (wc - wf) / wc for d, (wc, wf, _, _) in sums.items()}
    weights = SCHEME["weights"]
    total = sum(weights[d] * s for d, s in scores.items()) / sum(weights[d] for d in scores)
    base = {
        "scheme_id": "hospital",
        "scheme_version": "2026.1",
        "org_code": org,
        "dataset": "*",
        "period_type": period_type,
        "period_start": start,
    }
    return [
        {**base, "dimension": d, "score": round(scores[d], 2), "checked_rows": c, "failed_rows": f}
        for d, (_, _, c, f) in sums.items()
    ] + [
        {
            **base,
            "dimension": "*",
            "score": round(total, 2),
            "checked_rows": sum(v[2] for v in sums.values()),
            "failed_rows": sum(v[3] for v in sums.values()),
        }
    ]


def _tables() -> dict[str, list[dict[str, Any]]]:
    scores = [row for org in (A, B) for row in _score(org, "month", MONTH, {D1, D2})]
    scores += [row for org in (A, B) for day in (D1, D2) for row in _score(org, "day", day, {day})]
    scores.append(
        {
            "scheme_id": "hospital",
            "scheme_version": "2026.1",
            "org_code": C,
            "dataset": "*",
            "dimension": "*",
            "period_type": "month",
            "period_start": MONTH,
            "score": 100.0,
            "checked_rows": 10,
            "failed_rows": 0,
        }
    )
    organizations = [
        {"org_code": A, "org_name": "荥阳市人民医院", "org_level": "二级甲等", "org_type": "综合医院"},
        {"org_code": B, "org_name": "荥阳市某民营医院", "org_level": "", "org_type": "综合医院"},
        {"org_code": C, "org_name": "荥阳市中医院", "org_level": "二级甲等", "org_type": "中医医院"},
    ]
    return {
        "rule": RULES,
        "audit_item": _items(),
        "problem": _problems(),
        "score": scores,
        "organization": organizations,
        "scheme": [SCHEME],
    }


@pytest.fixture(scope="module")
def tables() -> dict[str, list[dict[str, Any]]]:
    return _tables()


@pytest.fixture(scope="module")
def written(tables, tmp_path_factory) -> dict[str, Path]:
    """The month's files, by name."""
    paths = write_reports_from_tables("month", MONTH, tmp_path_factory.mktemp("reports"), tables)
    return {p.name: p for p in paths}


def _file(written: dict[str, Path], tables: dict, org_code: str, suffix: str) -> Path:
    org = next(o for o in tables["organization"] if o["org_code"] == org_code)
    return written[f"{report_stem(org, 'month', MONTH)}.{suffix}"]


def _values(sheet) -> list[Any]:
    return [cell.value for row in sheet.iter_rows() for cell in row if cell.value is not None]


def test_one_workbook_and_page_per_institution_with_audit_items_under_the_period(written, tables):
    assert set(written) == {
        "index.html",
        "410182001_荥阳市人民医院_数据质量报告_2026-11.xlsx",
        "410182001_荥阳市人民医院_数据质量报告_2026-11.html",
        "410182009_荥阳市某民营医院_数据质量报告_2026-11.xlsx",
        "410182009_荥阳市某民营医院_数据质量报告_2026-11.html",
    }
    assert {p.parent.name for p in written.values()} == {"2026-11"}
    assert load_workbook(_file(written, tables, A, "xlsx")).sheetnames == list(SHEETS)


def test_summary_shows_the_score_row_and_the_rank_among_institutions_of_the_same_type(written, tables):
    total = next(
        s["score"] for s in tables["score"] if (s["org_code"], s["dimension"], s["period_type"]) == (A, "*", "month")
    )
    fields = {
        row[0].value: row[1].value
        for row in load_workbook(_file(written, tables, A, "xlsx"))["综合报告"].iter_rows(max_col=2)
        if row[0].value
    }
    assert fields["总分"] == total
    assert fields["排名"].startswith("2/2")  # behind B; C is a 中医医院 and does not count
    assert build_report_data(B, "month", MONTH, tables)["summary"]["rank"] == 1
    summary = build_report_data(A, "month", MONTH, tables)["summary"]
    assert (summary["open_problems"], summary["closed_problems"]) == (215, 1)  # October's are not counted


def test_lost_points_of_the_top_rules_add_up_to_what_the_total_misses(tables):
    summary = build_report_data(A, "month", MONTH, tables)["summary"]
    assert [r["rule_id"] for r in summary["top_rules"]] == ["R2", "R3", "R1"]
    assert sum(r["points_lost"] for r in summary["top_rules"]) == pytest.approx(100 - summary["total_score"], abs=0.02)


def test_detail_lists_every_failing_row_of_the_institution_and_none_of_another(written, tables):
    values = set(_values(load_workbook(_file(written, tables, A, "xlsx"))["明细报告"]))
    in_period = {p["business_key"] for p in tables["problem"] if p["org_code"] == A and p["business_date"] != OLD}
    elsewhere = {p["business_key"] for p in tables["problem"] if p["org_code"] != A or p["business_date"] == OLD}
    assert len(in_period) == 216
    assert in_period <= values
    assert not elsewhere & values
    page = _file(written, tables, A, "html").read_text(encoding="utf-8")
    assert page.count(f"<td>{A}-R2-{D1}-") == HTML_ROWS_PER_RULE  # the page caps a rule's rows
    assert "仅列出前 200 行，共 205 行" in page


def test_values_from_the_source_are_escaped_and_never_formulas(written, tables):
    page = _file(written, tables, A, "html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    sheet = load_workbook(_file(written, tables, A, "xlsx"))["明细报告"]
    formula = next(cell for row in sheet.iter_rows() for cell in row if cell.value == FORMULA)
    assert formula.data_type == "s"


def test_daily_rows_add_up_to_the_audit_items(written, tables):
    rows = list(load_workbook(_file(written, tables, A, "xlsx"))["日校验报告"].iter_rows(min_row=2, values_only=True))
    header, days = rows[0], rows[1:]
    first, last = period_bounds("month", MONTH)
    items = [i for i in tables["audit_item"] if i["org_code"] == A and first <= i["business_date"] <= last]
    assert len(days) == 30
    for column, key in (("检查行数", "checked_rows"), ("失败行数", "failed_rows")):
        assert sum(row[header.index(column)] for row in days) == sum(i[key] for i in items)
    assert sum(row[header.index("新增问题数")] for row in days) == 216
    d1 = next(row for row in days if row[0].date() == D1)
    assert d1[header.index("总分")] == next(
        s["score"]
        for s in tables["score"]
        if (s["org_code"], s["dimension"], s["period_type"], s["period_start"]) == (A, "*", "day", D1)
    )


def test_index_lists_institutions_by_score_with_links_to_their_reports(written, tables):
    page = written["index.html"].read_text(encoding="utf-8")
    assert page.index(C) < page.index(B) < page.index(A)
    assert f'href="{quote(_file(written, tables, A, "html").name)}"' in page
    assert page.count("<a href=") == 4  # C was scored but has no 稽核条目 this month: no files


@pytest.mark.parametrize(
    ("period_type", "start", "bounds"),
    [
        ("day", date(2026, 11, 3), (date(2026, 11, 3), date(2026, 11, 3))),
        ("week", date(2026, 11, 2), (date(2026, 11, 2), date(2026, 11, 8))),
        ("month", date(2026, 2, 1), (date(2026, 2, 1), date(2026, 2, 28))),
        ("quarter", date(2026, 10, 1), (date(2026, 10, 1), date(2026, 12, 31))),
        ("year", date(2026, 1, 1), (date(2026, 1, 1), date(2026, 12, 31))),
    ],
)
def test_period_bounds(period_type, start, bounds):
    assert period_bounds(period_type, start) == bounds


@pytest.mark.parametrize(
    ("period_type", "start"),
    [("week", date(2026, 11, 3)), ("month", date(2026, 11, 3)), ("quarter", date(2026, 11, 1)), ("fortnight", MONTH)],
)
def test_a_start_that_does_not_begin_a_period_is_refused(period_type, start):
    with pytest.raises(ValueError):
        period_bounds(period_type, start)
