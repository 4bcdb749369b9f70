"""The indicator catalog (config/indicators/): one definition per indicator, read by every consumer.

dbt gets a generated measures model and a catalog seed, analysts a generated dictionary (docs/indicators.md);
dashboards, the monthly report and the API read the same entries through ``load_catalog``. Nothing about an
indicator is typed in a second place.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import yaml

from core.settings import CONFIG_DIR, PROJECT_ROOT

CATALOG_DIR = CONFIG_DIR / "indicators"
MEASURES_FILE = CATALOG_DIR / "_measures.yaml"
MEASURES_MODEL = PROJECT_ROOT / "dbt" / "models" / "intermediate" / "int_indicator_measures.sql"
CATALOG_SEED = PROJECT_ROOT / "dbt" / "seeds" / "indicator_catalog.csv"
DICTIONARY_FILE = PROJECT_ROOT / "docs" / "indicators.md"

COUNTY_CODE, COUNTY_NAME = "410182", "荥阳市"
GRAINS = ("institution", "institution_type", "township", "county")
GRAIN_ZH = {"institution": "机构", "institution_type": "机构类别", "township": "乡镇（街道）", "county": "全县"}
PERIODS = ("day", "month", "quarter", "year")
PERIOD_ZH = {"day": "日", "month": "月", "quarter": "季", "year": "年"}
# Every indicator has these unless its entry says otherwise; days are for the counts a daily screen shows.
DEFAULT_PERIODS = ("month", "quarter", "year")
# Which grains a measure can be cut by, from how its rows are attributed to a place.
ATTRIBUTION_GRAINS = {"institution": GRAINS, "residence": ("township", "county"), "county": ("county",)}
DIRECTION_ZH = {"higher_better": "越高越好", "lower_better": "越低越好", "neutral": "适中为宜"}


class CatalogError(ValueError):
    """The catalog contradicts itself; the message names the file, the entry and what to fix."""


@dataclass(frozen=True)
class Measure:
    code: str
    zh: str
    model: str
    value: str
    date: str | None = None
    filter: str | None = None
    kind: str = "event"
    valid_from: str | None = None
    valid_to: str | None = None
    attribution: str = "institution"
    org: str = "org_code"
    finest_period: str = "day"

    @property
    def grains(self) -> tuple[str, ...]:
        return ATTRIBUTION_GRAINS[self.attribution]


@dataclass(frozen=True)
class Indicator:
    code: str
    zh: str
    family: str
    family_zh: str
    formula: str
    unit: str
    kind: str = "scalar"  # scalar (in fct_indicator_value) / ranking / distribution (own mart)
    numerator: str | None = None
    denominator: str | None = None
    scale: int = 1
    grains: tuple[str, ...] = GRAINS
    periods: tuple[str, ...] = DEFAULT_PERIODS
    direction: str = "neutral"
    target: str = ""
    dimension: str = ""
    mart: str = "fct_indicator_value"
    supported: bool = True
    note: str = ""
    also_in: tuple[str, ...] = field(default_factory=tuple)  # families that include it (e.g. 医改重点指标)


@dataclass(frozen=True)
class Catalog:
    measures: dict[str, Measure]
    indicators: dict[str, Indicator]
    families: dict[str, str]  # family code -> 中文名称, in the families' `order`


def _read(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _measure(code: str, spec: dict) -> Measure:
    where = f"{MEASURES_FILE.name}: measure {code}"
    missing = [k for k in ("zh", "model", "value") if not spec.get(k)]
    kind = spec.get("kind", "event")
    if kind == "event" and not spec.get("date"):
        missing.append("date")
    if kind == "as_of" and not spec.get("valid_from"):
        missing.append("valid_from")
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(missing)}")
    if kind not in ("event", "as_of"):
        raise CatalogError(f"{where}: kind must be event or as_of, not {kind!r}")
    if spec.get("finest_period", "day") not in PERIODS:
        raise CatalogError(f"{where}: finest_period must be one of {', '.join(PERIODS)}")
    if spec.get("attribution", "institution") not in ATTRIBUTION_GRAINS:
        raise CatalogError(f"{where}: attribution must be one of {', '.join(ATTRIBUTION_GRAINS)}")
    return Measure(code=code, **spec)


def _indicator(
    spec: dict, family: str, family_zh: str, defaults: dict, path: Path, measures: dict[str, Measure]
) -> Indicator:
    spec = {**defaults, **spec}
    code = spec.get("code", "?")
    where = f"{path.name}: indicator {code}"
    for key in ("code", "zh", "formula", "unit"):
        if not spec.get(key):
            raise CatalogError(f"{where}: missing {key}")
    for key in ("grains", "periods"):
        if key in spec:
            spec[key] = tuple(spec[key])
    indicator = Indicator(family=family, family_zh=family_zh, **spec)
    unknown = [g for g in indicator.grains if g not in GRAINS] + [p for p in indicator.periods if p not in PERIODS]
    if unknown:
        raise CatalogError(f"{where}: unknown grain/period {unknown}; grains are {GRAINS}, periods {PERIODS}")
    if indicator.supported and indicator.kind == "scalar":
        if not indicator.numerator:
            raise CatalogError(
                f"{where}: a supported indicator needs a numerator measure (or supported: false "
                "with a note saying why it cannot be computed)"
            )
        for role in ("numerator", "denominator"):
            name = getattr(indicator, role)
            if name is None:
                continue
            if name not in measures:
                raise CatalogError(f"{where}: {role} {name!r} is not a measure in {MEASURES_FILE.name}")
            beyond = [g for g in indicator.grains if g not in measures[name].grains]
            if beyond:
                raise CatalogError(
                    f"{where}: {role} {name} (attribution {measures[name].attribution}) cannot be "
                    f"cut by {beyond}; set grains: {list(measures[name].grains)} or fewer"
                )
            finest = PERIODS.index(measures[name].finest_period)
            shorter = [p for p in indicator.periods if PERIODS.index(p) < finest]
            if shorter:
                raise CatalogError(
                    f"{where}: {role} {name} is {measures[name].finest_period}ly data and cannot be "
                    f"reported per {shorter}; set periods without them"
                )
    if indicator.supported and indicator.kind != "scalar" and indicator.mart == "fct_indicator_value":
        raise CatalogError(f"{where}: a {indicator.kind} indicator names the mart that holds it (mart: ...)")
    if not indicator.supported and not indicator.note:
        raise CatalogError(f"{where}: an unsupported indicator says why in note")
    return indicator


@cache
def load_catalog(directory: Path = CATALOG_DIR) -> Catalog:
    """Every family file of the catalog, validated against the measures it names."""
    measures = {code: _measure(code, spec) for code, spec in _read(directory / MEASURES_FILE.name)["measures"].items()}
    indicators: dict[str, Indicator] = {}
    families: dict[str, str] = {}
    includes: dict[str, list[str]] = {}
    documents = [_read(path) | {"path": path} for path in directory.glob("*.yaml") if not path.name.startswith("_")]
    for doc in sorted(documents, key=lambda d: (d.get("order", 99), d["path"].name)):
        path = doc["path"]
        family, family_zh = doc["family"], doc["zh"]
        families[family] = family_zh
        includes[family] = list(doc.get("includes", []))
        for spec in doc.get("indicators", []):
            indicator = _indicator(spec, family, family_zh, doc.get("defaults", {}), path, measures)
            if indicator.code in indicators:
                raise CatalogError(
                    f"{path.name}: indicator {indicator.code} is already defined in family "
                    f"{indicators[indicator.code].family}; define it once and include it"
                )
            indicators[indicator.code] = indicator
    for family, codes in includes.items():
        for code in codes:
            if code not in indicators:
                raise CatalogError(f"{family}.yaml: includes {code}, which no family defines")
            current = indicators[code]
            indicators[code] = replace(current, also_in=(*current.also_in, family))
    return Catalog(measures, indicators, families)


# --- dbt: the measures model ------------------------------------------------------------------------------


def _grain_columns(measure: Measure, key: str | None = None) -> dict[str, str]:
    """SQL column per grain the measure supports; ``key``: the column that holds the institution or township when
    it is not the measure's own (a roll-up's ``grain_key``)."""
    if measure.attribution == "institution":
        return {
            "institution": key or f"f.{measure.org}",
            "institution_type": "f.inst_type",
            "township": "f.inst_township",
        }
    if measure.attribution == "residence":
        return {"township": key or "f.township"}
    return {}


# A count or a sum adds up: its value for a month, a township or the county is the sum of its values per day and
# institution, so it is computed once per day and place in one pass over its mart (all such measures of that mart
# and date together) and rolled up from there; distinct counts and averages are computed from the rows.
_ADDITIVE = (
    (re.compile(r"count\(\*\)"), "count(*)", "sum(value)"),
    (re.compile(r"sum\((?P<expr>.+)\)"), "sum({expr})", "sum(value)"),
    (re.compile(r"coalesce\(sum\((?P<expr>.+)\), 0\)"), "sum({expr})", "coalesce(sum(value), 0)"),
)


def _additive(measure: Measure) -> tuple[str, str] | None:
    """(aggregate per day and place, aggregate rolling those up) of an additive event measure; None otherwise."""
    if measure.kind != "event":
        return None
    for pattern, partial, rollup in _ADDITIVE:
        match = pattern.fullmatch(measure.value.strip())
        if match and "(" not in match.groupdict().get("expr", ""):
            return partial.format(**match.groupdict()), rollup
    return None


def _source_sql(measure: Measure) -> str:
    if measure.attribution == "institution":
        return (
            f"select f.*, i.inst_type, i.inst_township, i.inst_is_primary_care, i.inst_is_hospital\n"
            f"        from {{{{ ref('{measure.model}') }}}} as f\n"
            f"        left join institutions as i on i.org_code = f.{measure.org}"
        )
    return f"select * from {{{{ ref('{measure.model}') }}}}"


def _event_join(date: str, periods: tuple[str, ...]) -> str:
    # Each row's own period starts, then an equality join: a range join (date between start and end) is a
    # nested loop over every period of a year, for every row.
    return (
        f"    {{{{ period_starts({date!r}, {list(periods)!r}, 'k') }}}}\n"
        f"    inner join periods as p on p.period_type = k.period_type and p.period_start = k.period_start\n"
        f"        and ({date}) <= p.period_end"
    )


def _grouped_sql(measure: Measure, value: str, source: str, join: str, where: str, grains: dict[str, str]) -> str:
    period = "p.period_type, p.period_start"
    sets = [f"({period}, {column})" for column in grains.values()] + [f"({period})"]
    whens = "".join(f"when grouping({column}) = 0 then '{grain}' " for grain, column in grains.items())
    grain_type = f"case {whens}else 'county' end" if whens else "'county'"
    grain_code = ", ".join([*grains.values(), f"'{COUNTY_CODE}'"])
    return (
        f"-- {measure.zh}\n"
        f"select\n"
        f"    '{measure.code}'::text as measure_code,\n"
        f"    p.period_type,\n"
        f"    p.period_start,\n"
        f"    ({grain_type})::text as grain_type,\n"
        f"    (coalesce({grain_code}))::text as grain_code,\n"
        f"    ({value})::numeric as value\n"
        f"from (\n        {source}\n    ) as f\n"
        f"{join}{where}\n"
        f"group by grouping sets ({', '.join(sets)})"
    )


def measure_sql(measure: Measure, periods: tuple[str, ...]) -> str:
    """The measure at every grain it supports, for the periods the indicators reading it ask for, computed from
    its mart's rows (the definition; additive measures are computed by roll-up instead, with the same result)."""
    if measure.kind == "event":
        join = _event_join(measure.date, periods)
    else:
        valid_to = (
            f" and (({measure.valid_to}) is null or ({measure.valid_to}) >= p.period_end)" if measure.valid_to else ""
        )
        period_types = ", ".join(f"'{p}'" for p in periods)
        join = (
            f"    inner join periods as p on p.period_type in ({period_types})\n"
            f"        and ({measure.valid_from}) <= p.period_end{valid_to}"
        )
    where = f"\n    where {measure.filter}" if measure.filter else ""
    return _grouped_sql(measure, measure.value, _source_sql(measure), join, where, _grain_columns(measure))


def _rollup_sql(measure: Measure, periods: tuple[str, ...], partials: str) -> str:
    """An additive measure summed from its per-day-and-place values in ``partials``."""
    _, rollup = _additive(measure)
    if measure.attribution == "institution":
        source = (
            "select f.*, i.inst_type, i.inst_township\n"
            f"        from {partials} as f\n"
            "        left join institutions as i on i.org_code = f.grain_key\n"
            f"        where f.measure_code = '{measure.code}'"
        )
    else:
        source = f"select * from {partials} where measure_code = '{measure.code}'"
    return _grouped_sql(
        measure, rollup, source, _event_join("day", periods), "", _grain_columns(measure, key="f.grain_key")
    )


NEWLINE_IN_SOURCE = "\n        "


def _partials_sql(measures: list[Measure]) -> str:
    """One pass over the mart of ``measures`` (additive, same mart, date and place): each one's value per day and
    place, as rows (measure_code, day, grain_key, value); a day and place none of a measure's rows fall in has no
    row for it, as a group without rows has none in the direct computation."""
    first = measures[0]
    key = {"institution": f"f.{first.org}", "residence": "f.township"}.get(first.attribution, "null::text")
    columns = []
    for m in measures:
        partial, _ = _additive(m)
        only = f" filter (where {m.filter})" if m.filter else ""
        columns += [f"{partial}{only} as value_{m.code}", f"count(*){only} as rows_{m.code}"]
    values = ",\n".join(f"            ('{m.code}', value_{m.code}::numeric, rows_{m.code})" for m in measures)
    where = (
        "\n        where " + "\n            or ".join(f"({m.filter})" for m in measures)
        if all(m.filter for m in measures)
        else ""
    )
    select = ",\n            ".join(columns)
    return (
        f"    select m.measure_code, f.day, f.grain_key, m.value\n"
        f"    from (\n"
        f"        select ({first.date})::date as day, {key} as grain_key,\n            {select}\n"
        f"        from (\n            {_source_sql(first).replace(NEWLINE_IN_SOURCE, NEWLINE_IN_SOURCE + '    ')}\n"
        f"        ) as f{where}\n"
        f"        group by 1, 2\n"
        f"    ) as f\n"
        f"    cross join lateral (values\n{values}\n    ) as m (measure_code, value, row_count)\n"
        f"    where m.row_count > 0"
    )


def render_measures_sql(catalog: Catalog, roll_up: bool = True) -> str:
    """The measures model; ``roll_up=False`` computes every measure from its mart's rows (the definition the
    roll-up is tested against)."""
    periods: dict[str, set[str]] = {}
    for i in catalog.indicators.values():
        if i.supported and i.kind == "scalar":
            for name in (i.numerator, i.denominator):
                if name:
                    periods.setdefault(name, set()).update(i.periods)
    passes: dict[tuple, list[Measure]] = {}
    for name in sorted(periods):
        m = catalog.measures[name]
        if roll_up and _additive(m):
            passes.setdefault((m.model, m.date, m.attribution, m.org), []).append(m)
    partial_of = {m.code: f"partials_{n}" for n, group in enumerate(passes.values(), start=1) for m in group}
    partial_ctes = "".join(
        f"partials_{n} as (\n    -- {group[0].model} by {group[0].date}\n{_partials_sql(group)}\n),\n\n"
        for n, group in enumerate(passes.values(), start=1)
    )

    def one(name: str) -> str:
        m, asked = catalog.measures[name], tuple(p for p in PERIODS if p in periods[name])
        return _rollup_sql(m, asked, partial_of[name]) if name in partial_of else measure_sql(m, asked)

    unions = "\n\nunion all\n\n".join(one(name) for name in sorted(periods))
    return (
        "-- Generated by `./drc indicators` from config/indicators/_measures.yaml — do not edit by hand.\n"
        "-- One row per measure × period × grain member, each computed at its own grain (grouping sets), so\n"
        "-- distinct counts stay distinct and averages are not summed. Counts and sums are computed once per day\n"
        "-- and place in one pass over their mart (partials_*) and summed from there to every period and grain.\n"
        "{{ config(materialized='table') }}\n\n"
        "with periods as (\n    select * from {{ ref('int_indicator_periods') }}\n),\n\n"
        "institutions as (\n"
        "    select org_code, org_type as inst_type, township as inst_township,\n"
        "           is_primary_care as inst_is_primary_care, is_hospital as inst_is_hospital\n"
        "    from {{ ref('dim_organization') }}\n),\n\n"
        f"{partial_ctes}"
        f"measures as (\n\n{unions}\n\n)\n\n"
        "select * from measures\n"
    )


# --- dbt: the catalog seed -----------------------------------------------------------------------------------

SEED_COLUMNS = (
    "indicator_code",
    "indicator_name",
    "family",
    "family_name",
    "also_in",
    "dimension",
    "kind",
    "mart",
    "formula",
    "numerator_measure",
    "numerator_description",
    "denominator_measure",
    "denominator_description",
    "scale",
    "unit",
    "grains",
    "periods",
    "direction",
    "target",
    "supported",
    "note",
)


def render_catalog_seed(catalog: Catalog) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SEED_COLUMNS)
    for i in catalog.indicators.values():
        numerator = catalog.measures[i.numerator].zh if i.numerator else ""
        denominator = catalog.measures[i.denominator].zh if i.denominator else ""
        writer.writerow(
            [
                i.code,
                i.zh,
                i.family,
                i.family_zh,
                "|".join(i.also_in),
                i.dimension,
                i.kind,
                i.mart,
                i.formula,
                i.numerator or "",
                numerator,
                i.denominator or "",
                denominator,
                i.scale,
                i.unit,
                "|".join(i.grains),
                "|".join(i.periods),
                i.direction,
                i.target,
                "true" if i.supported else "false",
                i.note,
            ]
        )
    return out.getvalue()


# --- the indicator dictionary for analysts ----------------------------------------------------------------------


def render_dictionary(catalog: Catalog) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    counts = {f: sum(1 for i in catalog.indicators.values() if i.family == f) for f in catalog.families}
    lines = [
        "# 指标字典 · Indicator dictionary",
        "",
        "Generated by `./drc indicators` from `config/indicators/*.yaml` — do not edit by hand. Every number "
        "on the dashboards, in the reports and exports comes from `marts.fct_indicator_value` (or the mart "
        "named), computed exactly as written here.",
        "",
        "计算口径：分子、分母均在各自粒度上独立计算（按人计数的指标在乡镇、全县粒度上按主索引去重，不由机构数相加）；"
        "分母为 0 时指标值为空（不是 0）；无业务发生的机构、乡镇每期仍有一行，分子为 0。"
        "就诊计数不含作废、退费及重复提交的记录。",
        "",
        "| 指标族 family | 指标数 | 可计算 |",
        "|---|---|---|",
    ]
    for family, zh in catalog.families.items():
        supported = sum(1 for i in catalog.indicators.values() if i.family == family and i.supported)
        included = sum(1 for i in catalog.indicators.values() if family in i.also_in)
        extra = f"（另引用 {included} 项）" if included else ""
        lines.append(f"| {zh} `{family}` | {counts[family]}{extra} | {supported} |")
    for family, zh in catalog.families.items():
        lines += ["", f"## {zh} · {family}", ""]
        members = [i for i in catalog.indicators.values() if i.family == family or family in i.also_in]
        for i in members:
            if family in i.also_in:
                lines.append(f"- **{i.code} {i.zh}**: 定义见 {catalog.families[i.family]}（{i.family}）。")
                continue
            lines += [f"### {i.code} {i.zh}", "", f"- 计算公式：{cell(i.formula)}"]
            if i.numerator:
                lines.append(f"- 分子：{catalog.measures[i.numerator].zh}（`{i.numerator}`）")
            if i.denominator:
                lines.append(f"- 分母：{catalog.measures[i.denominator].zh}（`{i.denominator}`）")
            scale = f"，× {i.scale}" if i.scale != 1 else ""
            lines.append(
                f"- 单位：{i.unit}{scale}；方向：{DIRECTION_ZH.get(i.direction, i.direction)}"
                + (f"；目标值：{i.target}" if i.target else "")
            )
            if i.supported:
                lines.append(
                    f"- 粒度：{'、'.join(GRAIN_ZH[g] for g in i.grains)}；周期："
                    f"{'、'.join(PERIOD_ZH[p] for p in i.periods)}；数据表：`marts.{i.mart}`"
                )
            else:
                lines.append("- **暂不能计算**")
            if i.note:
                lines.append(f"- 说明：{cell(i.note)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_generated_files() -> list[Path]:
    """Regenerate the measures model, the catalog seed and the dictionary; returns the files written."""
    catalog = load_catalog()
    outputs = {
        MEASURES_MODEL: render_measures_sql(catalog),
        CATALOG_SEED: render_catalog_seed(catalog),
        DICTIONARY_FILE: render_dictionary(catalog),
    }
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
    return list(outputs)
