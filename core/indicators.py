"""The indicator catalog (config/indicators/): one definition per indicator, read by every consumer.

dbt gets a generated measures model and a catalog seed, analysts a generated dictionary (docs/indicators.md);
dashboards, the monthly report and the API read the same entries through ``load_catalog``. Nothing about an
indicator is typed in a second place.
"""

from __future__ import annotations

import csv
import io
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


def _grain_columns(measure: Measure) -> tuple[dict[str, str], str]:
    """SQL column per grain the measure supports, and the extra select of institution attributes."""
    if measure.attribution == "institution":
        return (
            {"institution": f"f.{measure.org}", "institution_type": "f.inst_type", "township": "f.inst_township"},
            "institutions",
        )
    if measure.attribution == "residence":
        return {"township": "f.township"}, ""
    return {}, ""


def _measure_sql(measure: Measure, periods: tuple[str, ...]) -> str:
    """The measure at every grain it supports, for the periods the indicators reading it ask for."""
    grains, _ = _grain_columns(measure)
    period = "p.period_type, p.period_start"
    sets = [f"({period}, {column})" for column in grains.values()] + [f"({period})"]
    whens = "".join(f"when grouping({column}) = 0 then '{grain}' " for grain, column in grains.items())
    grain_type = f"case {whens}else 'county' end" if whens else "'county'"
    grain_code = ", ".join([*grains.values(), f"'{COUNTY_CODE}'"])
    if measure.attribution == "institution":
        source = (
            f"select f.*, i.inst_type, i.inst_township, i.inst_is_primary_care, i.inst_is_hospital\n"
            f"        from {{{{ ref('{measure.model}') }}}} as f\n"
            f"        left join institutions as i on i.org_code = f.{measure.org}"
        )
    else:
        source = f"select * from {{{{ ref('{measure.model}') }}}}"
    if measure.kind == "event":
        # Each row's own period starts, then an equality join: a range join (date between start and end) is a
        # nested loop over every period of a year, for every row.
        join = (
            f"    {{{{ period_starts({measure.date!r}, {list(periods)!r}, 'k') }}}}\n"
            f"    inner join periods as p on p.period_type = k.period_type and p.period_start = k.period_start\n"
            f"        and ({measure.date}) <= p.period_end"
        )
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
    return (
        f"-- {measure.zh}\n"
        f"select\n"
        f"    '{measure.code}'::text as measure_code,\n"
        f"    p.period_type,\n"
        f"    p.period_start,\n"
        f"    ({grain_type})::text as grain_type,\n"
        f"    (coalesce({grain_code}))::text as grain_code,\n"
        f"    ({measure.value})::numeric as value\n"
        f"from (\n        {source}\n    ) as f\n"
        f"{join}{where}\n"
        f"group by grouping sets ({', '.join(sets)})"
    )


def render_measures_sql(catalog: Catalog) -> str:
    periods: dict[str, set[str]] = {}
    for i in catalog.indicators.values():
        if i.supported and i.kind == "scalar":
            for name in (i.numerator, i.denominator):
                if name:
                    periods.setdefault(name, set()).update(i.periods)
    unions = "\n\nunion all\n\n".join(
        _measure_sql(catalog.measures[name], tuple(p for p in PERIODS if p in periods[name]))
        for name in sorted(periods)
    )
    return (
        "-- Generated by `./drc indicators` from config/indicators/_measures.yaml — do not edit by hand.\n"
        "-- One row per measure × period × grain member, each computed at its own grain (grouping sets), so\n"
        "-- distinct counts stay distinct and averages are not summed.\n"
        "{{ config(materialized='table') }}\n\n"
        "with periods as (\n    select * from {{ ref('int_indicator_periods') }}\n),\n\n"
        "institutions as (\n"
        "    select org_code, org_type as inst_type, township as inst_township,\n"
        "           is_primary_care as inst_is_primary_care, is_hospital as inst_is_hospital\n"
        "    from {{ ref('dim_organization') }}\n),\n\n"
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
