"""Scores from 稽核条目 under a 质量评价方案 (config/quality/schemes.yaml): pure functions on plain rows.

A dimension score is the coefficient-weighted pass rate of the audit items in it, so a score is traceable to
the items (and through them to the rows) that lowered it. The institution's total is the scheme's weighted or
arithmetic mean over the dimensions it was checked on. Scores exist per institution × dataset × dimension and
per period (day, ISO week, month, quarter, year); dataset '*' is all datasets, dimension '*' the total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import yaml

from expectations.rules import QUALITY_DIR

ALL = "*"
PERIOD_TYPES = ("day", "week", "month", "quarter", "year")


@dataclass(frozen=True)
class Scheme:
    scheme_id: str
    version: str
    zh: str
    method: str  # weighted | arithmetic
    weights: dict[str, float]


@dataclass(frozen=True)
class Assignment:
    scheme_id: str
    org_types: tuple[str, ...]
    valid_from: date
    valid_to: date | None


@lru_cache(maxsize=1)
def load_schemes() -> tuple[dict[str, Scheme], tuple[Assignment, ...]]:
    doc = yaml.safe_load((QUALITY_DIR / "schemes.yaml").read_text(encoding="utf-8"))
    schemes = {
        s["id"]: Scheme(
            s["id"], str(s["version"]), s["zh"], s["method"], {k: float(v) for k, v in s["weights"].items()}
        )
        for s in doc["schemes"]
    }
    assignments = tuple(
        Assignment(a["scheme"], tuple(a["org_types"]), a["valid_from"], a.get("valid_to")) for a in doc["assignments"]
    )
    for a in assignments:
        if a.scheme_id not in schemes:
            raise ValueError(f"config/quality/schemes.yaml: assignment names unknown scheme {a.scheme_id!r}")
    return schemes, assignments


def scheme_for(org_type: str, day: date, schemes: dict[str, Scheme], assignments: Iterable[Assignment]) -> Scheme:
    """方案分配: the first assignment covering the institution's type and the day."""
    for a in assignments:
        if (
            (org_type in a.org_types or ALL in a.org_types)
            and a.valid_from <= day
            and (a.valid_to is None or day <= a.valid_to)
        ):
            return schemes[a.scheme_id]
    raise ValueError(f"no quality scheme is assigned to institutions of type {org_type!r} on {day}")


def period_start(period_type: str, day: date) -> date:
    if period_type == "day":
        return day
    if period_type == "week":
        return day - timedelta(days=day.weekday())
    if period_type == "month":
        return day.replace(day=1)
    if period_type == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if period_type == "year":
        return day.replace(month=1, day=1)
    raise ValueError(f"period type {period_type!r} is not one of {', '.join(PERIOD_TYPES)}")


def _pass_rate(checked: float, failed: float) -> float:
    return 100.0 * (checked - failed) / checked


def score_rows(items: Iterable[dict[str, Any]], org_types: dict[str, str]) -> list[dict[str, Any]]:
    """Scores for every institution × dataset × dimension × period from audit items.

    ``items``: dicts with org_code, dataset, dimension, business_date, checked_rows, failed_rows, coefficient.
    The scheme is the one assigned on the period's first day.
    """
    schemes, assignments = load_schemes()
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])  # weighted checked/failed, raw
    for item in items:
        if not item["checked_rows"]:
            continue
        coefficient = float(item.get("coefficient") or 1.0)
        for period_type in PERIOD_TYPES:
            start = period_start(period_type, item["business_date"])
            for dataset in (item["dataset"], ALL):
                acc = sums[(item["org_code"], period_type, start, dataset, item["dimension"])]
                acc[0] += coefficient * item["checked_rows"]
                acc[1] += coefficient * item["failed_rows"]
                acc[2] += item["checked_rows"]
                acc[3] += item["failed_rows"]
    rows, dimension_scores = [], defaultdict(dict)
    for (org, period_type, start, dataset, dimension), (wc, wf, checked, failed) in sums.items():
        scheme = scheme_for(org_types.get(org, ""), start, schemes, assignments)
        score = _pass_rate(wc, wf)
        rows.append(_row(scheme, org, dataset, dimension, period_type, start, score, checked, failed))
        dimension_scores[(org, period_type, start, dataset)][dimension] = (score, checked, failed)
    for (org, period_type, start, dataset), by_dimension in dimension_scores.items():
        scheme = scheme_for(org_types.get(org, ""), start, schemes, assignments)
        weights = {d: (scheme.weights.get(d, 0.0) if scheme.method == "weighted" else 1.0) for d in by_dimension}
        total_weight = sum(weights.values())
        if not total_weight:
            continue
        total = sum(weights[d] * s for d, (s, _, _) in by_dimension.items()) / total_weight
        rows.append(
            _row(
                scheme,
                org,
                dataset,
                ALL,
                period_type,
                start,
                total,
                sum(c for _, c, _ in by_dimension.values()),
                sum(f for _, _, f in by_dimension.values()),
            )
        )
    return rows


def _row(
    scheme: Scheme,
    org: str,
    dataset: str,
    dimension: str,
    period_type: str,
    start: date,
    score: float,
    checked: float,
    failed: float,
) -> dict[str, Any]:
    return {
        "scheme_id": scheme.scheme_id,
        "scheme_version": scheme.version,
        "org_code": org,
        "dataset": dataset,
        "dimension": dimension,
        "period_type": period_type,
        "period_start": start,
        "score": round(score, 2),
        "checked_rows": int(checked),
        "failed_rows": int(failed),
    }
