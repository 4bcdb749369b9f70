"""What a feed carries for a period: rows read from the marts, then made into the feed's columns (pseudonyms,
generalisations) and checked for k-anonymity before anything is released. Reading is I/O; the rest are pure
functions on lists of dicts, testable without a database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from core.indicators import GRAIN_ZH
from core.indicators import load_catalog as load_indicator_catalog
from exports.catalog import Feed, KAnonymity
from exports.periods import Period

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
SHEET = "_sheet"  # the workbook sheet a row belongs to (an indicator family), never a column of the file


class ReleaseRefused(RuntimeError):
    """The extract would identify people (k-anonymity broken); nothing is written or delivered."""


@dataclass(frozen=True)
class Extract:
    rows: list[dict[str, Any]]
    suppressed_rows: int = 0
    suppressed_subjects: int = 0
    smallest_group: int | None = None


def _identifier(name: str, feed: Feed) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"{feed.path.name}: '{name}' is not a plain column or model name")
    return name


def read_mart(conn: sa.Connection, feed: Feed, period: Period) -> list[dict[str, Any]]:
    """The period's rows of the feed's mart, only the columns the feed is made from, in a stable order."""
    spec = feed.dataset
    columns = sorted(
        {_identifier(c.source, feed) for c in feed.columns} | {_identifier(c, feed) for c in spec["order_by"]}
    )
    sql = (
        f"SELECT {', '.join(columns)} FROM {_identifier(spec.get('schema', 'marts'), feed)}."
        f"{_identifier(spec['model'], feed)} "
        f"WHERE {_identifier(spec['period_column'], feed)} BETWEEN :start AND :end "
        f"ORDER BY {', '.join(_identifier(c, feed) for c in spec['order_by'])}"
    )
    return [dict(r) for r in conn.execute(sa.text(sql), {"start": period.start, "end": period.end}).mappings()]


def read_indicators(conn: sa.Connection, feed: Feed, period: Period) -> list[dict[str, Any]]:
    """Every catalog indicator of the feed's families × every member of its grain, computed or not: a value the
    data cannot give reads empty with the catalog's reason, never as a missing row."""
    spec = feed.dataset
    grain, families = spec["grain"], spec.get("families")
    catalog = load_indicator_catalog()
    members = (
        [("410182", "荥阳市")]
        if grain == "county"
        else [
            (t, t)
            for t in conn.execute(
                sa.text(
                    "SELECT DISTINCT township FROM marts.dim_organization WHERE township IS NOT NULL ORDER BY township"
                )
            ).scalars()
        ]
    )
    values = {
        (r["grain_code"], r["indicator_code"]): r
        for r in conn.execute(
            sa.text(
                "SELECT grain_code, indicator_code, period_end, numerator, denominator, value FROM "
                "marts.fct_indicator_value "
                "WHERE grain_type = :grain AND period_type = :ptype AND period_start = :start"
            ),
            {"grain": grain, "ptype": spec.get("period_type", "month"), "start": period.start},
        ).mappings()
    }
    rows = []
    for family, family_zh in catalog.families.items():
        if families and family not in families:
            continue
        members_of_family = [
            i for i in catalog.indicators.values() if i.kind == "scalar" and (i.family == family or family in i.also_in)
        ]
        for code, name in members:
            for indicator in members_of_family:
                value = values.get((code, indicator.code), {})
                note = (
                    ""
                    if value
                    else indicator.note
                    if not indicator.supported
                    else f"不按{GRAIN_ZH[grain]}统计"
                    if grain not in indicator.grains
                    else "本期无数据"
                )
                rows.append(
                    {
                        "grain_code": code,
                        "township": name,
                        "family": family,
                        "family_name": family_zh,
                        "indicator_code": indicator.code,
                        "indicator_name": indicator.zh,
                        "period_start": period.start,
                        "period_end": value.get("period_end"),
                        "numerator": value.get("numerator"),
                        "denominator": value.get("denominator"),
                        "value": value.get("value"),
                        "unit": indicator.unit,
                        "note": note,
                    }
                )
    return rows


def pseudonym_key(key_id: str) -> bytes:
    """Per receiver key: HMAC of the platform's export secret and the feed's key id (two receivers never share
    pseudonyms, so their extracts cannot be joined)."""
    secret = os.environ.get("DRC_EXPORT_PSEUDONYM_KEY")
    if not secret:
        raise RuntimeError("DRC_EXPORT_PSEUDONYM_KEY is not set: run exports through ./drc, which loads .env")
    return hmac.new(secret.encode(), f"xydrc export pseudonym {key_id}".encode(), hashlib.sha256).digest()


def birth_year_band(value: date | None, width: int) -> str:
    if value is None:
        return "未知"
    low = value.year // width * width
    return f"{low}-{low + width - 1}" if width > 1 else str(low)


def shape_rows(feed: Feed, rows: list[dict[str, Any]], key: bytes | None = None) -> list[dict[str, Any]]:
    """Dataset rows → the feed's columns, applying each column's transform."""

    def cell(column, row):
        value = row.get(column.source)
        if column.transform == "pseudonym":
            return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32] if value is not None else None
        if column.transform == "birth_year_band":
            return birth_year_band(value, int(column.transform_arg or 1))
        if column.transform == "month":
            return f"{value:%Y-%m}" if value is not None else None
        return value

    return [{c.name: cell(c, row) for c in feed.columns} for row in rows]


def enforce_k_anonymity(rows: list[dict[str, Any]], rule: KAnonymity, feed_name: str) -> Extract:
    """Suppress subjects of groups smaller than k (if the feed allows it), then refuse any release that still
    holds such a group — the check stands on its own, whatever produced the rows."""

    def groups(data):
        subjects: dict[tuple, set] = defaultdict(set)
        for row in data:
            subjects[tuple(row[q] for q in rule.quasi_identifiers)].add(row[rule.subject])
        return subjects

    small = {g for g, s in groups(rows).items() if len(s) < rule.k}
    released = rows
    if small and rule.suppress_small_groups:
        released = [r for r in rows if tuple(r[q] for q in rule.quasi_identifiers) not in small]
    final = groups(released)
    violations = sorted((len(s), g) for g, s in final.items() if len(s) < rule.k)
    if violations:
        size, group = violations[0]
        named = ", ".join(f"{q}={v}" for q, v in zip(rule.quasi_identifiers, group, strict=True))
        raise ReleaseRefused(
            f"{feed_name}: release refused: k-anonymity k={rule.k} broken by {len(violations)} group(s) of "
            f"({', '.join(rule.quasi_identifiers)}); smallest: {named} with {size} resident(s). Generalise the "
            f"quasi-identifiers or set suppress_small_groups in config/exports/{feed_name}.yaml"
        )
    suppressed = len(rows) - len(released)
    return Extract(
        rows=released,
        suppressed_rows=suppressed,
        suppressed_subjects=len({r[rule.subject] for r in rows}) - len({r[rule.subject] for r in released}),
        smallest_group=min((len(s) for s in final.values()), default=None),
    )


def build_extract(conn: sa.Connection, feed: Feed, period: Period) -> Extract:
    """The feed's rows for a period, ready to render; raises ReleaseRefused when privacy forbids the release."""
    if feed.dataset["kind"] == "indicators":
        rows = read_indicators(conn, feed, period)
        return Extract(
            rows=[
                {**shaped, SHEET: row["family_name"]} for shaped, row in zip(shape_rows(feed, rows), rows, strict=True)
            ]
        )
    rows = read_mart(conn, feed, period)
    shaped = shape_rows(feed, rows, pseudonym_key(feed.pseudonym_key) if feed.pseudonym_key else None)
    if feed.k_anonymity:
        return enforce_k_anonymity(shaped, feed.k_anonymity, feed.name)
    return Extract(rows=shaped)
