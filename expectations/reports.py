"""数据质量报告: what an institution's data officer receives for a period, as an Excel workbook (for filtering and
整改 work) and a self-contained HTML page (for reading and printing), plus an index page per period.

Both files hold the same four parts: 综合报告 (scores, rank among institutions of the same type, the rules that
lowered the score most), 明细报告 (rules per dimension and the failing rows), 问题数据报告 (the 稽核条目) and
日校验报告 (each day of the period). ``build_report_data`` works on plain rows so the content is testable without
a database; ``write_reports`` loads those rows from ``dq.*`` one institution at a time.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from core.db import warehouse_engine
from core.organizations import organizations
from expectations.rules import dimensions
from expectations.scoring import load_schemes as scoring_schemes

ALL = "*"
PERIOD_TYPES = ("day", "week", "month", "quarter", "year")
DIMENSION_ZH = dimensions()
SEVERITY_ZH = {"blocking": "阻断", "error": "错误", "warning": "警告"}
STATUS_ZH = {"open": "未关闭", "closed": "已关闭"}
SHEETS = ("综合报告", "明细报告", "问题数据报告", "日校验报告")
HTML_ROWS_PER_RULE = 200  # the HTML page stays readable; the workbook lists every failing row
TOP_RULES = 5
LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # every time the county reads is Beijing time

Columns = Sequence[tuple[str, str]]  # (header, key of the row dict)
DIMENSION_COLUMNS: Columns = (
    ("维度", "dimension_zh"),
    ("得分", "score"),
    ("权重(%)", "weight"),
    ("检查行数", "checked_rows"),
    ("失败行数", "failed_rows"),
)
TOP_RULE_COLUMNS: Columns = (
    ("规则编号", "rule_id"),
    ("规则说明", "description_zh"),
    ("维度", "dimension_zh"),
    ("数据集", "dataset"),
    ("检查行数", "checked_rows"),
    ("失败行数", "failed_rows"),
    ("扣分", "points_lost"),
)
RULE_COLUMNS: Columns = (
    ("规则编号", "rule_id"),
    ("规则说明", "description_zh"),
    ("数据集", "dataset"),
    ("严重程度", "severity_zh"),
    ("检查行数", "checked_rows"),
    ("失败行数", "failed_rows"),
    ("通过率(%)", "pass_rate"),
)
PROBLEM_COLUMNS: Columns = (
    ("规则编号", "rule_id"),
    ("来源系统", "source_system"),
    ("来源表", "source_table"),
    ("业务主键", "business_key"),
    ("业务日期", "business_date"),
    ("值", "value"),
    ("问题描述", "description_zh"),
    ("状态", "status_zh"),
    ("首次发现", "first_seen"),
)
AUDIT_COLUMNS: Columns = (
    ("业务日期", "business_date"),
    ("规则编号", "rule_id"),
    ("规则说明", "description_zh"),
    ("维度", "dimension_zh"),
    ("数据集", "dataset"),
    ("来源系统", "source_system"),
    ("检查行数", "checked_rows"),
    ("失败行数", "failed_rows"),
    ("系数", "coefficient"),
    ("通过率(%)", "pass_rate"),
)


# --- periods --------------------------------------------------------------------------------------------------
def period_bounds(period_type: str, period_start: date) -> tuple[date, date]:
    """First and last day of a period; a start that is not the period's first day is refused, since dq.score
    keys periods by their first day and a misaligned start would silently find no scores."""
    if period_type == "day":
        return period_start, period_start
    if period_type == "week" and period_start.weekday() == 0:
        return period_start, period_start + timedelta(days=6)
    if period_type == "month" and period_start.day == 1:
        return period_start, _add_months(period_start, 1) - timedelta(days=1)
    if period_type == "quarter" and period_start.day == 1 and period_start.month % 3 == 1:
        return period_start, _add_months(period_start, 3) - timedelta(days=1)
    if period_type == "year" and (period_start.month, period_start.day) == (1, 1):
        return period_start, period_start.replace(month=12, day=31)
    if period_type not in PERIOD_TYPES:
        raise ValueError(f"period type {period_type!r} is not one of {', '.join(PERIOD_TYPES)}")
    raise ValueError(f"{period_start} is not the first day of a {period_type}")


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return day.replace(year=day.year + month // 12, month=month % 12 + 1)


def period_label(period_type: str, period_start: date) -> str:
    """Short label for folder and file names: 2026-11-03, 2026-W45, 2026-11, 2026-Q4, 2026."""
    period_bounds(period_type, period_start)
    if period_type == "day":
        return period_start.isoformat()
    if period_type == "week":
        year, week, _ = period_start.isocalendar()
        return f"{year}-W{week:02d}"
    if period_type == "month":
        return f"{period_start:%Y-%m}"
    if period_type == "quarter":
        return f"{period_start.year}-Q{(period_start.month - 1) // 3 + 1}"
    return str(period_start.year)


def period_label_zh(period_type: str, period_start: date) -> str:
    first, last = period_bounds(period_type, period_start)
    if period_type == "day":
        return f"{first.year}年{first.month}月{first.day}日"
    if period_type == "week":
        year, week, _ = first.isocalendar()
        return f"{year}年第{week}周（{first.month}月{first.day}日至{last.month}月{last.day}日）"
    if period_type == "month":
        return f"{first.year}年{first.month}月"
    if period_type == "quarter":
        return f"{first.year}年第{(first.month - 1) // 3 + 1}季度"
    return f"{first.year}年"


# --- report content (pure) -----------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _pass_rate(checked: float, failed: float) -> float | None:
    """Pass rate in %, never shown as 100.00 while a row failed."""
    if not checked:
        return None
    rate = round(100.0 * (checked - failed) / checked, 2)
    return min(rate, 99.99) if failed else rate


def _local(moment: datetime | None) -> datetime | None:
    """Naive Beijing time: what the officer reads, and what Excel can store."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(LOCAL_TZ).replace(tzinfo=None)


def _problem_day(problem: dict[str, Any]) -> date:
    """The day a problem belongs to: its row's business day, else (rules on no single day) the day it was found."""
    return problem["business_date"] or _local(problem["first_seen_at"]).date()


def _dimension_order(codes: Iterable[str]) -> list[str]:
    codes = set(codes)
    return [d for d in DIMENSION_ZH if d in codes] + sorted(codes - DIMENSION_ZH.keys())


def _score_rows(scores: Iterable[dict[str, Any]], period_type: str, start: date) -> dict[tuple[str, str], dict]:
    """(org_code, dimension) -> the all-datasets score row of one period."""
    return {
        (s["org_code"], s["dimension"]): s
        for s in scores
        if s["period_type"] == period_type and s["period_start"] == start and s["dataset"] == ALL
    }


def build_report_data(
    org_code: str, period_type: str, period_start: date, tables: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Everything the four report parts show for one institution and period, from plain rows.

    ``tables`` holds lists of row dicts keyed 'rule', 'audit_item', 'problem', 'score' and 'organization' (the
    columns of dq.* and config/organizations.csv), and optionally 'scheme' (id, version, zh, method, weights of
    config/quality/schemes.yaml): without it every dimension weighs the same when apportioning lost points.
    Rows of other institutions and periods are ignored, except scores, which rank the institution.
    """
    first, last = period_bounds(period_type, period_start)
    orgs = {o["org_code"]: o for o in tables["organization"]}
    org = orgs.get(org_code, {"org_code": org_code, "org_name": org_code, "org_type": "", "org_level": ""})
    rules = {r["rule_id"]: r for r in tables["rule"]}
    items = [i for i in tables["audit_item"] if i["org_code"] == org_code and first <= i["business_date"] <= last]
    problems = [p for p in tables["problem"] if p["org_code"] == org_code and first <= _problem_day(p) <= last]

    def dimension_of(row: dict[str, Any]) -> str:
        return rules.get(row["rule_id"], {}).get("dimension") or row.get("dimension") or ""

    period_scores = _score_rows(tables["score"], period_type, period_start)
    total_row = period_scores.get((org_code, ALL))
    scheme = _scheme(total_row, tables.get("scheme", []))

    by_rule: dict[str, dict[str, Any]] = {}
    for item in items:
        acc = by_rule.setdefault(
            item["rule_id"], {"checked_rows": 0, "failed_rows": 0, "weighted_checked": 0.0, "weighted_failed": 0.0}
        )
        coefficient = _num(item.get("coefficient")) or 1.0
        acc["checked_rows"] += item["checked_rows"]
        acc["failed_rows"] += item["failed_rows"]
        acc["weighted_checked"] += coefficient * item["checked_rows"]
        acc["weighted_failed"] += coefficient * item["failed_rows"]
    problems_by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in sorted(problems, key=lambda p: (_problem_day(p), p["source_table"] or "", p["business_key"])):
        problems_by_rule[p["rule_id"]].append(_problem_row(p))

    rule_rows = {}
    for rule_id in sorted(by_rule.keys() | problems_by_rule.keys()):
        rule = rules.get(rule_id, {})
        acc = by_rule.get(
            rule_id, {"checked_rows": 0, "failed_rows": 0, "weighted_checked": 0.0, "weighted_failed": 0.0}
        )
        dimension = rule.get("dimension") or next((p["dimension"] for p in problems_by_rule.get(rule_id, [])), "")
        rule_rows[rule_id] = {
            "rule_id": rule_id,
            "description_zh": rule.get("description_zh", ""),
            "dataset": rule.get("dataset", ""),
            "dimension": dimension,
            "dimension_zh": DIMENSION_ZH.get(dimension, dimension),
            "severity_zh": SEVERITY_ZH.get(rule.get("severity", ""), rule.get("severity", "")),
            "checked_rows": acc["checked_rows"],
            "failed_rows": acc["failed_rows"],
            "pass_rate": _pass_rate(acc["checked_rows"], acc["failed_rows"]),
            "weighted_checked": acc["weighted_checked"],
            "weighted_failed": acc["weighted_failed"],
            "problems": problems_by_rule.get(rule_id, []),
        }
    dimensions = _dimension_order(r["dimension"] for r in rule_rows.values())
    shares = _dimension_shares(rule_rows.values(), scheme)
    top_rules = _top_rules(rule_rows.values(), shares)

    checked = sum(i["checked_rows"] for i in items)
    failed = sum(i["failed_rows"] for i in items)
    rank, rank_of = _rank(org_code, org.get("org_type", ""), orgs, period_scores)
    summary = {
        "total_score": _num(total_row["score"]) if total_row else None,
        "rank": rank,
        "rank_of": rank_of,
        "checked_rows": checked,
        "failed_rows": failed,
        "pass_rate": _pass_rate(checked, failed),
        "open_problems": sum(p["status"] == "open" for p in problems),
        "closed_problems": sum(p["status"] == "closed" for p in problems),
        "dimensions": [_dimension_summary(d, period_scores.get((org_code, d)), shares.get(d)) for d in dimensions],
        "top_rules": top_rules,
    }
    detail = [
        {
            "dimension": d,
            "dimension_zh": DIMENSION_ZH.get(d, d),
            "score": _num(period_scores[(org_code, d)]["score"]) if (org_code, d) in period_scores else None,
            "rules": sorted(
                (r for r in rule_rows.values() if r["dimension"] == d),
                key=lambda r: (100.0 if r["pass_rate"] is None else r["pass_rate"], r["rule_id"]),
            ),
        }
        for d in dimensions
    ]
    return {
        "org": org,
        "scheme": scheme,
        "period": {
            "type": period_type,
            "start": period_start,
            "first": first,
            "last": last,
            "label": period_label(period_type, period_start),
            "label_zh": period_label_zh(period_type, period_start),
        },
        "summary": summary,
        "detail": detail,
        "audit_items": _audit_rows(items, rules, dimension_of),
        "daily_dimensions": dimensions,
        "daily": _daily_rows(org_code, first, last, items, problems, tables["score"], dimensions),
    }


def _scheme(total_row: dict[str, Any] | None, schemes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The scheme the total was scored under, with its name and weights when known."""
    if total_row is None:
        return None
    for s in schemes:
        if (s["scheme_id"], str(s["scheme_version"])) == (total_row["scheme_id"], str(total_row["scheme_version"])):
            return s
    return {
        "scheme_id": total_row["scheme_id"],
        "scheme_version": total_row["scheme_version"],
        "zh": "",
        "method": "arithmetic",
        "weights": {},
    }


def _dimension_shares(rule_rows: Iterable[dict[str, Any]], scheme: dict[str, Any] | None) -> dict[str, float]:
    """Each checked dimension's share of the total, as scoring weighs them: the scheme's weight (weighted) or
    equal (arithmetic) over the dimensions the institution was checked on."""
    checked = {r["dimension"] for r in rule_rows if r["weighted_checked"]}
    weighted = scheme is not None and scheme["method"] == "weighted"
    weights = {d: float(scheme["weights"].get(d, 0.0)) if weighted else 1.0 for d in checked}
    total = sum(weights.values())
    return {d: w / total for d, w in weights.items()} if total else {}


def _top_rules(rule_rows: Iterable[dict[str, Any]], shares: dict[str, float]) -> list[dict[str, Any]]:
    """The rules that took the most points off the total. A rule's lost points are its coefficient-weighted
    failed rows over its dimension's weighted checked rows, times the dimension's share: they add up to
    100 − total score."""
    rule_rows = list(rule_rows)
    dimension_checked: dict[str, float] = defaultdict(float)
    for r in rule_rows:
        dimension_checked[r["dimension"]] += r["weighted_checked"]
    lost = [
        {
            **r,
            "points_lost": round(
                100.0 * shares.get(r["dimension"], 0.0) * r["weighted_failed"] / dimension_checked[r["dimension"]], 2
            ),
        }
        for r in rule_rows
        if r["weighted_failed"] and dimension_checked[r["dimension"]]
    ]
    lost = [r for r in lost if r["points_lost"] > 0]
    return sorted(lost, key=lambda r: (-r["points_lost"], r["rule_id"]))[:TOP_RULES]


def _rank(
    org_code: str, org_type: str, orgs: dict[str, dict[str, Any]], period_scores: dict[tuple[str, str], dict]
) -> tuple[int | None, int]:
    """Rank n of N among scored institutions of the same type; ties share the better rank."""
    totals = {
        org: _num(row["score"])
        for (org, dimension), row in period_scores.items()
        if dimension == ALL and orgs.get(org, {}).get("org_type") == org_type
    }
    if org_code not in totals:
        return None, len(totals)
    return 1 + sum(score > totals[org_code] for score in totals.values()), len(totals)


def _dimension_summary(dimension: str, row: dict[str, Any] | None, share: float | None) -> dict[str, Any]:
    return {
        "dimension": dimension,
        "dimension_zh": DIMENSION_ZH.get(dimension, dimension),
        "score": _num(row["score"]) if row else None,
        "weight": round(100.0 * share, 2) if share is not None else None,
        "checked_rows": row["checked_rows"] if row else None,
        "failed_rows": row["failed_rows"] if row else None,
    }


def _problem_row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule_id": p["rule_id"],
        "dimension": p["dimension"],
        "source_system": p["source_system"],
        "source_table": p["source_table"],
        "business_key": p["business_key"],
        "business_date": p["business_date"],
        "value": p["value"],
        "description_zh": p["description_zh"],
        "status": p["status"],
        "status_zh": STATUS_ZH.get(p["status"], p["status"]),
        "first_seen": _local(p["first_seen_at"]),
    }


def _audit_rows(
    items: list[dict[str, Any]], rules: dict[str, dict[str, Any]], dimension_of: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    rows = []
    for i in sorted(items, key=lambda i: (i["business_date"], i["rule_id"], i["dataset"], i["source_system"])):
        dimension = dimension_of(i)
        rows.append(
            {
                "business_date": i["business_date"],
                "rule_id": i["rule_id"],
                "description_zh": rules.get(i["rule_id"], {}).get("description_zh", ""),
                "dimension_zh": DIMENSION_ZH.get(dimension, dimension),
                "dataset": i["dataset"],
                "source_system": i["source_system"],
                "checked_rows": i["checked_rows"],
                "failed_rows": i["failed_rows"],
                "coefficient": _num(i.get("coefficient")),
                "pass_rate": _pass_rate(i["checked_rows"], i["failed_rows"]),
            }
        )
    return rows


def _daily_rows(
    org_code: str,
    first: date,
    last: date,
    items: list[dict[str, Any]],
    problems: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    dimensions: list[str],
) -> list[dict[str, Any]]:
    """One row per day of the period, days without data included. Problems count on their business day, like
    the audit items, so a day's failed rows and its problems describe the same data (the time a problem was
    found is a run's wall clock, unrelated to the day when data arrives late or is re-collected)."""
    day_scores = {
        (s["period_start"], s["dimension"]): _num(s["score"])
        for s in scores
        if s["org_code"] == org_code and s["period_type"] == "day" and s["dataset"] == ALL
    }
    rows = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        that_day = [i for i in items if i["business_date"] == day]
        found = [p for p in problems if _problem_day(p) == day]
        rows.append(
            {
                "day": day,
                "total_score": day_scores.get((day, ALL)),
                **{d: day_scores.get((day, d)) for d in dimensions},
                "checked_rows": sum(i["checked_rows"] for i in that_day),
                "failed_rows": sum(i["failed_rows"] for i in that_day),
                "new_problems": len(found),
                "closed_problems": sum(p["status"] == "closed" for p in found),
            }
        )
    return rows


def _daily_columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("日期", "day"),
        ("总分", "total_score"),
        *((DIMENSION_ZH.get(d, d), d) for d in data["daily_dimensions"]),
        ("检查行数", "checked_rows"),
        ("失败行数", "failed_rows"),
        ("新增问题数", "new_problems"),
        ("其中已关闭", "closed_problems"),
    ]


def _summary_fields(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The 综合报告 heading block, shared by the workbook and the page."""
    org, period, summary, scheme = data["org"], data["period"], data["summary"], data["scheme"]
    scheme_text = (
        f"{scheme['zh'] or scheme['scheme_id']}（{scheme['scheme_id']} {scheme['scheme_version']}）" if scheme else None
    )
    rank = (
        f"{summary['rank']}/{summary['rank_of']}（同类机构：{org.get('org_type') or '未分类'}）"
        if summary["rank"]
        else None
    )
    return [
        ("机构名称", org["org_name"]),
        ("机构编码", org["org_code"]),
        ("机构类型", org.get("org_type") or None),
        ("统计周期", f"{period['label_zh']}（{period['first']} 至 {period['last']}）"),
        ("评价方案", scheme_text),
        ("总分", summary["total_score"]),
        ("排名", rank),
        ("检查行数", summary["checked_rows"]),
        ("失败行数", summary["failed_rows"]),
        ("通过率(%)", summary["pass_rate"]),
        ("未关闭问题", summary["open_problems"]),
        ("已关闭问题", summary["closed_problems"]),
    ]


# --- Excel ----------------------------------------------------------------------------------------------------
_TITLE, _SECTION, _BOLD = Font(bold=True, size=14), Font(bold=True, size=12), Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")


class _Sheet:
    """A write-only sheet (a year of failing rows must not sit in memory as cells) with the report's styles."""

    def __init__(self, workbook: Workbook, title: str, widths: Sequence[int]) -> None:
        self.ws = workbook.create_sheet(title)
        for index, width in enumerate(widths, start=1):
            self.ws.column_dimensions[get_column_letter(index)].width = width

    def _cell(self, value: Any, font: Font | None = None, fill: PatternFill | None = None) -> WriteOnlyCell:
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        cell = WriteOnlyCell(self.ws, value)
        if isinstance(value, str):
            cell.data_type = "s"  # a source value starting with '=' stays text, never a formula
        elif isinstance(value, float):
            cell.number_format = "0.00"
        elif isinstance(value, int):
            cell.number_format = "#,##0"
        elif isinstance(value, datetime):
            cell.number_format = "yyyy-mm-dd hh:mm"
        elif isinstance(value, date):
            cell.number_format = "yyyy-mm-dd"
        if font:
            cell.font = font
        if fill:
            cell.fill = fill
        return cell

    def line(self, *values: Any, font: Font | None = None, fill: PatternFill | None = None) -> None:
        self.ws.append([self._cell(v, font, fill) for v in values])

    def table(self, columns: Columns, rows: Iterable[dict[str, Any]]) -> None:
        self.line(*(header for header, _ in columns), font=_BOLD, fill=_HEADER_FILL)
        for row in rows:
            self.line(*(row[key] for _, key in columns))


def write_workbook(data: dict[str, Any], path: Path) -> Path:
    """The four parts as sheets; the detail sheet lists every failing row."""
    org, period = data["org"], data["period"]
    workbook = Workbook(write_only=True)

    summary = _Sheet(workbook, SHEETS[0], (16, 40, 16, 16, 12, 12, 10))
    summary.line(f"{org['org_name']}数据质量综合报告", font=_TITLE)
    summary.line()
    for label, value in _summary_fields(data):
        summary.line(label, value)
    summary.line()
    summary.line("各维度得分", font=_SECTION)
    summary.table(DIMENSION_COLUMNS, data["summary"]["dimensions"])
    summary.line()
    summary.line(f"扣分最多的规则（前{TOP_RULES}条）", font=_SECTION)
    summary.table(TOP_RULE_COLUMNS, data["summary"]["top_rules"])

    detail = _Sheet(workbook, SHEETS[1], (16, 40, 20, 24, 12, 24, 40, 10, 18))
    detail.line(f"{org['org_name']}数据质量明细报告（{period['label_zh']}）", font=_TITLE)
    for dimension in data["detail"]:
        detail.line()
        detail.line(f"{dimension['dimension_zh']}　得分 {_text(dimension['score'])}", font=_SECTION)
        detail.table(RULE_COLUMNS, dimension["rules"])
        failing = [p for rule in dimension["rules"] for p in rule["problems"]]
        if failing:
            detail.line()
            detail.line(f"{dimension['dimension_zh']}问题数据（{len(failing)}行）", font=_BOLD)
            detail.table(PROBLEM_COLUMNS, failing)

    audit = _Sheet(workbook, SHEETS[2], (12, 16, 40, 14, 16, 14, 12, 12, 8, 10))
    audit.ws.freeze_panes = "A3"
    audit.ws.auto_filter.ref = f"A2:{get_column_letter(len(AUDIT_COLUMNS))}{len(data['audit_items']) + 2}"
    audit.line(f"{org['org_name']}稽核条目（{period['label_zh']}）", font=_TITLE)
    audit.table(AUDIT_COLUMNS, data["audit_items"])

    columns = _daily_columns(data)
    daily = _Sheet(workbook, SHEETS[3], [12] * len(columns))
    daily.ws.freeze_panes = "B3"
    daily.line(f"{org['org_name']}日校验报告（{period['label_zh']}）", font=_TITLE)
    daily.table(columns, data["daily"])

    tmp = path.with_name(path.name + ".tmp")
    workbook.save(tmp)
    os.replace(tmp, path)
    return path


# --- HTML -----------------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    """How a value reads on the page (and in the workbook's headings)."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


_STYLE = """
body{font-family:"Microsoft YaHei","PingFang SC","WenQuanYi Micro Hei",sans-serif;color:#222;max-width:1280px;
margin:1.5em auto;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:2px solid #2f6fb0;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #c8c8c8;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#ddebf7}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
nav a{margin-right:1.2em}.note{color:#666;font-size:.85em}
@media print{nav{display:none}h2{page-break-before:always}}
"""

_MACROS = """
{%- macro table(columns, rows) -%}
<table><thead><tr>{% for header, _ in columns %}<th>{{ header }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr>{% for _, key in columns %}{% set v = row[key] %}<td{{ ' class="n"' | safe
if v is number else '' }}>{{ v | text }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{%- endmacro -%}
"""

_REPORT = (
    _MACROS
    + """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ org.org_name }}数据质量报告（{{ period.label_zh }}）</title><style>{{ style | safe }}</style></head><body>
<h1>{{ org.org_name }}数据质量报告</h1>
<p>{{ org.org_code }}　{{ period.label_zh }}（{{ period.first }} 至 {{ period.last }}）</p>
<nav>{% for id, name in sections %}<a href="#{{ id }}">{{ name }}</a>{% endfor %}</nav>

<h2 id="summary">一、综合报告</h2>
<table>{% for label, value in fields %}<tr><th>{{ label }}</th><td>{{ value | text }}</td></tr>{% endfor %}</table>
<h3>各维度得分</h3>
{{ table(dimension_columns, summary.dimensions) }}
<h3>扣分最多的规则（前{{ top_rules }}条）</h3>
{% if summary.top_rules %}{{ table(top_rule_columns, summary.top_rules) }}
{% else %}<p>本期没有失败的规则。</p>{% endif %}

<h2 id="detail">二、明细报告</h2>
{% for dimension in detail %}
<h3>{{ dimension.dimension_zh }}　得分 {{ dimension.score | text }}</h3>
{{ table(rule_columns, dimension.rules) }}
{% for rule in dimension.rules if rule.problems %}
<h4>{{ rule.rule_id }} {{ rule.description_zh }}：问题数据 {{ rule.problems | length | text }} 行</h4>
{{ table(problem_columns, rule.problems[:cap]) }}
{% if rule.problems | length > cap %}<p class="note">仅列出前 {{ cap }} 行，共 {{ rule.problems | length | text }} 行；
完整清单见 Excel 报告的“明细报告”。</p>{% endif %}
{% endfor %}
{% else %}<p>本期没有稽核条目。</p>
{% endfor %}

<h2 id="audit">三、问题数据报告（稽核条目）</h2>
{{ table(audit_columns, audit_items) }}

<h2 id="daily">四、日校验报告</h2>
{{ table(daily_columns, daily) }}
</body></html>
"""
)

_INDEX = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>数据质量报告（{{ label_zh }}）</title><style>{{ style | safe }}</style></head><body>
<h1>各机构数据质量报告（{{ label_zh }}）</h1>
<table><thead><tr><th>序号</th><th>机构编码</th><th>机构名称</th><th>机构类型</th><th>总分</th><th>报告</th></tr></thead>
<tbody>{% for row in rows %}<tr><td class="n">{{ loop.index }}</td><td>{{ row.org_code }}</td>
<td>{{ row.org_name }}</td><td>{{ row.org_type }}</td><td class="n">{{ row.score | text }}</td>
<td>{% if row.html %}<a href="{{ row.html }}">网页</a> {% endif %}
{% if row.xlsx %}<a href="{{ row.xlsx }}">Excel</a>{% endif %}</td></tr>
{% endfor %}</tbody></table>
</body></html>
"""


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"report": _REPORT, "index": _INDEX}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["text"] = _text
    return env


def render_html(data: dict[str, Any]) -> str:
    """The four parts on one self-contained page (inline style, no scripts); every value is escaped."""
    return (
        _environment()
        .get_template("report")
        .render(
            **data,
            style=_STYLE,
            fields=_summary_fields(data),
            cap=HTML_ROWS_PER_RULE,
            top_rules=TOP_RULES,
            sections=(
                ("summary", "综合报告"),
                ("detail", "明细报告"),
                ("audit", "问题数据报告"),
                ("daily", "日校验报告"),
            ),
            dimension_columns=DIMENSION_COLUMNS,
            top_rule_columns=TOP_RULE_COLUMNS,
            rule_columns=RULE_COLUMNS,
            problem_columns=PROBLEM_COLUMNS,
            audit_columns=AUDIT_COLUMNS,
            daily_columns=_daily_columns(data),
        )
    )


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# --- files ----------------------------------------------------------------------------------------------------
def report_stem(org: dict[str, Any], period_type: str, period_start: date) -> str:
    """<org_code>_<org_name>_数据质量报告_<period_label>, the name safe on every file system."""
    name = re.sub(r'[\\/:*?"<>|\s]+', "_", org.get("org_name") or org["org_code"])
    return f"{org['org_code']}_{name}_数据质量报告_{period_label(period_type, period_start)}"


def write_index(period_type: str, period_start: date, out_dir: Path, tables: dict[str, list[dict[str, Any]]]) -> Path:
    """index.html of a period: every institution scored in it, best first, linked to its reports when they are
    in the folder (a run for some institutions keeps the others' links)."""
    target = Path(out_dir) / period_label(period_type, period_start)
    target.mkdir(parents=True, exist_ok=True)
    orgs = {o["org_code"]: o for o in tables["organization"]}
    rows = []
    for (org_code, dimension), row in _score_rows(tables["score"], period_type, period_start).items():
        if dimension != ALL:
            continue
        org = orgs.get(org_code, {"org_code": org_code, "org_name": org_code, "org_type": ""})
        stem = report_stem(org, period_type, period_start)
        rows.append(
            {
                "org_code": org_code,
                "org_name": org["org_name"],
                "org_type": org["org_type"],
                "score": _num(row["score"]),
                **{
                    ext: quote(f"{stem}.{ext}") if (target / f"{stem}.{ext}").exists() else None
                    for ext in ("html", "xlsx")
                },
            }
        )
    rows.sort(key=lambda r: (-r["score"], r["org_code"]))
    page = (
        _environment()
        .get_template("index")
        .render(rows=rows, style=_STYLE, label_zh=period_label_zh(period_type, period_start))
    )
    return _write_text(target / "index.html", page)


def write_reports_from_tables(
    period_type: str,
    period_start: date,
    out_dir: Path,
    tables: dict[str, list[dict[str, Any]]],
    org_codes: Iterable[str] | None = None,
    index: bool = True,
) -> list[Path]:
    """Workbook and page for every institution with 稽核条目 in the period (or those of ``org_codes``) under
    <out_dir>/<period_label>/, then the period's index.html unless ``index`` is false."""
    first, last = period_bounds(period_type, period_start)
    target = Path(out_dir) / period_label(period_type, period_start)
    target.mkdir(parents=True, exist_ok=True)
    codes = sorted(
        {i["org_code"] for i in tables["audit_item"] if i["org_code"] and first <= i["business_date"] <= last}
    )
    if org_codes is not None:
        wanted = set(org_codes)
        codes = [c for c in codes if c in wanted]
    paths = []
    for org_code in codes:
        data = build_report_data(org_code, period_type, period_start, tables)
        stem = report_stem(data["org"], period_type, period_start)
        paths.append(write_workbook(data, target / f"{stem}.xlsx"))
        paths.append(_write_text(target / f"{stem}.html", render_html(data)))
    if index:
        paths.append(write_index(period_type, period_start, out_dir, tables))
    return paths


# --- loading from dq.* ----------------------------------------------------------------------------------------
def load_organizations() -> list[dict[str, str]]:
    return list(organizations().values())


def load_schemes() -> list[dict[str, Any]]:
    """The 质量评价方案 (config/quality/schemes.yaml) as rows: their names and weights explain a total."""
    schemes, _ = scoring_schemes()
    return [
        {
            "scheme_id": s.scheme_id,
            "scheme_version": s.version,
            "zh": s.zh,
            "method": s.method,
            "weights": dict(s.weights),
        }
        for s in schemes.values()
    ]


def _query(conn: sa.Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(sa.text(sql), params)]


def write_reports(
    period_type: str, period_start: date, out_dir: Path, org_codes: Iterable[str] | None = None
) -> list[Path]:
    """Reports for every institution with 稽核条目 in the period (or those of ``org_codes``), from dq.*, and the
    period's index. Institutions load one at a time: a county's year of 稽核条目 and problems does not fit in
    memory at once."""
    first, last = period_bounds(period_type, period_start)
    wanted = None if org_codes is None else sorted(set(org_codes))
    paths = []
    with warehouse_engine().connect() as conn:
        shared = {
            "organization": load_organizations(),
            "scheme": load_schemes(),
            "rule": _query(
                conn, "SELECT rule_id, dataset, dimension, severity, description_zh, kind, origin FROM dq.rule"
            ),
            "score": _query(
                conn,
                "SELECT * FROM dq.score WHERE dataset = '*' AND period_type = :type AND period_start = :start",
                type=period_type,
                start=period_start,
            ),
        }
        codes = [
            r["org_code"]
            for r in _query(
                conn,
                "SELECT DISTINCT org_code FROM dq.audit_item WHERE business_date BETWEEN :first AND :last "
                "AND org_code <> '' AND (CAST(:wanted AS text[]) IS NULL OR org_code = ANY(:wanted)) "
                "ORDER BY org_code",
                first=first,
                last=last,
                wanted=wanted,
            )
        ]
        for org_code in codes:
            params = {"org": org_code, "first": first, "last": last}
            tables = {
                **shared,
                "audit_item": _query(
                    conn,
                    "SELECT * FROM dq.audit_item WHERE org_code = :org AND business_date BETWEEN :first AND :last",
                    **params,
                ),
                "problem": _query(
                    conn,
                    "SELECT * FROM dq.problem WHERE org_code = :org AND (business_date BETWEEN "
                    ":first AND :last OR (business_date IS NULL AND CAST(first_seen_at AT TIME "
                    "ZONE 'Asia/Shanghai' AS date) BETWEEN :first AND :last))",
                    **params,
                ),
                "score": shared["score"]
                + _query(
                    conn,
                    "SELECT * FROM dq.score WHERE org_code = :org AND dataset = '*' AND period_type = 'day' "
                    "AND period_start BETWEEN :first AND :last",
                    **params,
                ),
            }
            paths += write_reports_from_tables(period_type, period_start, out_dir, tables, [org_code], index=False)
    paths.append(write_index(period_type, period_start, out_dir, shared))
    return paths
