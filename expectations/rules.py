"""The quality rule library: configuration in config/quality/, compiled to Spark SQL.

Three origins, one shape (:class:`Rule`): the library (``config/quality/rules/*.yaml``, written by people; a
user-defined rule is one YAML entry), rules generated from the canonical model (every coded column's 值域, every
other local code, every typed value's format), and the silver mapping rules that quarantine rows
(``config/mappings/*.yaml``, with standardisation's built-in key, format and institution checks). A row rule
becomes one SQL condition a row must meet, so the engine checks every rule of a dataset in a single pass over
it (:mod:`expectations.engine`); Great Expectations expectations are written in GX's own vocabulary and
compiled here to the same SQL (and can be run by GX itself, see :mod:`expectations.gx_check`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from core.settings import CONFIG_DIR
from spark_jobs.model import canonical_model, mapped_sources, source_mapping
from spark_jobs.standardize import BUILT_IN_RULES

QUALITY_DIR = CONFIG_DIR / "quality"
RULES_DIR = QUALITY_DIR / "rules"
SEVERITIES = ("blocking", "error", "warning")
ROW_KINDS = ("expect", "condition", "reference", "query", "flag")
KINDS = (*ROW_KINDS, "mapping", "timeliness", "volume")


class RuleError(ValueError):
    """A rule file that cannot be used: names the file and the rule."""


@dataclass(frozen=True)
class Rule:
    rule_id: str
    dataset: str  # canonical entity, or "*" for rules on the collection itself
    dimension: str
    severity: str
    description_zh: str
    kind: str
    origin: str  # library | generated | mapping
    definition: dict[str, Any] = field(default_factory=dict)
    where: str | None = None
    value: str | None = None
    coefficient: float = 1.0
    source_systems: tuple[str, ...] = ()  # mapping rules: the sources whose mapping declares them

    @property
    def blocking(self) -> bool:
        return self.severity == "blocking"


@dataclass(frozen=True)
class Library:
    rules: tuple[Rule, ...]
    business_dates: dict[str, str]  # dataset -> SQL of the day a row is scored on
    views: dict[str, str] = field(default_factory=dict)  # name -> Spark SQL over the entities (query rules)

    def for_dataset(self, dataset: str, *kinds: str) -> list[Rule]:
        return [r for r in self.rules if r.dataset == dataset and (not kinds or r.kind in kinds)]

    def by_id(self) -> dict[str, Rule]:
        return {r.rule_id: r for r in self.rules}


@lru_cache(maxsize=1)
def dimensions() -> dict[str, str]:
    """Dimension code -> 中文 name, in report order."""
    return dict(_settings()["dimensions"])


def _settings() -> dict[str, Any]:
    return yaml.safe_load((QUALITY_DIR / "dimensions.yaml").read_text(encoding="utf-8"))


# --- Great Expectations vocabulary -> SQL ---------------------------------------------------------------------
def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _col(name: str) -> str:
    return f"`{name}`"


def expectation_sql(spec: dict[str, Any]) -> str:
    """The condition a row meets when it satisfies the GX expectation ``spec`` (row-level expectations only)."""
    kind = spec["type"]
    column = spec.get("column")
    c = _col(column) if column else ""
    if kind == "expect_column_values_to_not_be_null":
        return f"{c} IS NOT NULL"
    if kind == "expect_column_values_to_be_in_set":
        return f"{c} IS NULL OR {c} IN ({', '.join(_quote(v) for v in spec['value_set'])})"
    if kind == "expect_column_values_to_not_be_in_set":
        return f"{c} IS NULL OR {c} NOT IN ({', '.join(_quote(v) for v in spec['value_set'])})"
    if kind == "expect_column_values_to_match_regex":
        return f"{c} IS NULL OR {c} RLIKE {_quote(spec['regex'])}"
    if kind == "expect_column_value_lengths_to_equal":
        return f"{c} IS NULL OR length({c}) = {int(spec['value'])}"
    if kind == "expect_column_values_to_be_between":
        bounds = [
            f"{c} >= {_quote(spec['min_value'])}" if spec.get("min_value") is not None else None,
            f"{c} <= {_quote(spec['max_value'])}" if spec.get("max_value") is not None else None,
        ]
        return f"{c} IS NULL OR ({' AND '.join(b for b in bounds if b) or 'true'})"
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = _col(spec["column_A"]), _col(spec["column_B"])
        op = ">=" if spec.get("or_equal") else ">"
        return f"{a} IS NULL OR {b} IS NULL OR {a} {op} {b}"
    raise RuleError(
        f"expectation type {kind} is not a row-level expectation this engine compiles; "
        "write it as a condition or a query"
    )


# --- loading --------------------------------------------------------------------------------------------------
def _rule_from_entry(entry: dict[str, Any], dataset: str, path: Path) -> Rule:
    where = f"{path.name}: rule {entry.get('id', '?')}"
    missing = [k for k in ("id", "dimension", "severity", "zh") if k not in entry]
    if missing:
        raise RuleError(f"{where}: missing {', '.join(missing)}")
    if entry["dimension"] not in dimensions():
        raise RuleError(f"{where}: dimension {entry['dimension']!r} is not one of {', '.join(dimensions())}")
    if entry["severity"] not in SEVERITIES:
        raise RuleError(f"{where}: severity {entry['severity']!r} is not one of {', '.join(SEVERITIES)}")
    kinds = [k for k in ("expect", "condition", "reference", "query") if k in entry]
    kind = entry.get("kind") or (kinds[0] if len(kinds) == 1 else None)
    if kind not in KINDS:
        raise RuleError(f"{where}: give exactly one of expect, condition, reference, query (or a kind)")
    definition = {
        k: v
        for k, v in entry.items()
        if k not in ("id", "dimension", "severity", "zh", "where", "value", "coefficient")
    }
    if kind == "expect":
        expectation_sql(entry["expect"])  # fails early on an unsupported type
    value = entry.get("value")
    if value is None and kind == "expect":
        value = entry["expect"].get("column")
    return Rule(
        entry["id"],
        dataset,
        entry["dimension"],
        entry["severity"],
        entry["zh"],
        kind,
        "library",
        definition,
        entry.get("where"),
        value,
        float(entry.get("coefficient", 1.0)),
    )


def _library(datasets: dict[str, dict[str, Any]]) -> tuple[list[Rule], dict[str, str]]:
    rules, business_dates = [], {}
    for path in sorted(RULES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        sections = doc.get("datasets") or ({doc["dataset"]: doc} if "dataset" in doc else {"*": doc})
        for dataset, section in sections.items():
            if dataset != "*" and dataset not in datasets:
                raise RuleError(f"{path.name}: dataset {dataset!r} is not an entity of the canonical model")
            if "business_date" in section:
                business_dates[dataset] = section["business_date"]
            rules += [_rule_from_entry(entry, dataset, path) for entry in section.get("rules") or []]
    return rules, business_dates


def _generated(datasets: dict[str, dict[str, Any]]) -> list[Rule]:
    """Rules every dataset gets from the canonical model, checked through the flags standardisation sets."""
    templates = _settings()["generated"]
    where = _settings().get("generated_where") or {}
    skip = set(_settings().get("generated_skip") or [])
    rules = []
    for dataset, spec in datasets.items():
        for column in spec["columns"]:
            if "code_system" not in column or f"{dataset}.{column['name']}" in skip:
                continue
            t = templates["code_mapped"]
            rules.append(
                Rule(
                    f"G-{dataset}-{column['name']}",
                    dataset,
                    t["dimension"],
                    t["severity"],
                    t["zh"].format(column_zh=column["zh"].split("（")[0], code_system=column["code_system"]),
                    "flag",
                    "generated",
                    {"flag_prefix": f"UNMAPPED:{column['name']}:"},
                    where=where.get(f"{dataset}.{column['name']}"),
                    value=f"{column['name'].removesuffix('_code')}_source_value"
                    if any(c["name"] == column["name"].removesuffix("_code") + "_source_value" for c in spec["columns"])
                    else None,
                )
            )
        coded = [c["name"] for c in spec["columns"] if "code_system" in c]
        t = templates["local_codes_mapped"]
        rules.append(
            Rule(
                f"G-{dataset}-LOCAL",
                dataset,
                t["dimension"],
                t["severity"],
                t["zh"].format(dataset_zh=spec["zh"].split("（")[0]),
                "condition",
                "generated",
                {
                    "condition": "NOT exists(dq_flags, f -> substr(f, 1, 9) = 'UNMAPPED:' AND split(f, ':')[1] NOT IN ("
                    + ", ".join(_quote(c) for c in coded or ["-"])
                    + "))"
                },
            )
        )
        t = templates["value_parseable"]
        rules.append(
            Rule(
                f"G-{dataset}-PARSE",
                dataset,
                t["dimension"],
                t["severity"],
                t["zh"].format(dataset_zh=spec["zh"].split("（")[0]),
                "flag",
                "generated",
                {"flag_prefix": "UNPARSEABLE:"},
            )
        )
    return rules


BUILT_IN = [
    {"id": rule_id, "reason": reason, **({"required": []} if rule_id == "STD-KEY" else {})}
    for rule_id, reason in BUILT_IN_RULES.items()
]


MappingEntry = tuple[str, str, str, dict[str, Any]]  # (source system, bronze table, entity, rule)
MergedRule = tuple[dict[str, Any], tuple[str, ...]]  # (the rule without its id, the sources declaring it)


def merge_mapping_rules(entries: Iterable[MappingEntry]) -> dict[tuple[str, str], MergedRule]:
    """(rule id, entity) -> one rule with the sources declaring it. The library gives a rule one description and
    one dimension, so an id that means two checks on one entity is refused rather than described as the first."""
    found: dict[tuple[str, str], list[tuple[dict[str, Any], list[tuple[str, str]]]]] = {}
    for source_system, bronze_table, entity, rule in entries:
        definition = {k: v for k, v in rule.items() if k != "id"}
        variants = found.setdefault((rule["id"], entity), [])
        if all(d != definition for d, _ in variants):
            variants.append((definition, []))
        next(tables for d, tables in variants if d == definition).append((source_system, bronze_table))
    clashes = [
        f"mapping rule {rule_id} on {entity} has {len(variants)} definitions: "
        + "; ".join(f"{d} in {', '.join(f'{s}.{t}' for s, t in tables)}" for d, tables in variants)
        for (rule_id, entity), variants in found.items()
        if len(variants) > 1
    ]
    if clashes:
        raise RuleError(
            "\n".join(clashes) + "\na mapping rule id means one check per entity: give the variant its "
            "own id in config/mappings/<source>.yaml (one no mapping uses on that entity yet), or word "
            "the same check the same way in every source"
        )
    return {key: (variants[0][0], tuple(sorted({s for s, _ in variants[0][1]}))) for key, variants in found.items()}


def _mapping_rules() -> list[Rule]:
    """The silver layer's quarantine rules, one per (rule id, dataset), with the sources that declare them
    (every table also gets standardisation's built-in rules: key present, values parseable, institution known)."""
    overrides = _settings().get("mapping_rule_dimensions") or {}
    merged = merge_mapping_rules(
        (source_system, table["bronze_table"], table["entity"], rule)
        for source_system in mapped_sources()
        for table in source_mapping(source_system)["tables"]
        for rule in [*BUILT_IN, *(table.get("rules") or [])]
    )
    rules = []
    for (rule_id, dataset), (rule, sources) in sorted(merged.items()):
        dimension = overrides.get(rule_id, "completeness" if "required" in rule else "logic")
        rules.append(
            Rule(
                rule_id,
                dataset,
                dimension,
                "error",
                rule["reason"],
                "mapping",
                "mapping",
                {"source_rule_id": rule_id, **{k: v for k, v in rule.items() if k != "reason"}},
                source_systems=sources,
            )
        )
    return rules


def load_library() -> Library:
    """Every rule, checked: ids unique, datasets and dimensions known."""
    datasets = canonical_model()["entities"]
    library, business_dates = _library(datasets)
    rules = [*library, *_generated(datasets), *_mapping_rules()]
    seen: dict[str, Rule] = {}
    for rule in rules:
        # a mapping rule id (e.g. ENC001) is shared by the datasets it guards: unique per dataset
        key = rule.rule_id if rule.kind != "mapping" else f"{rule.rule_id}@{rule.dataset}"
        if key in seen:
            raise RuleError(f"rule id {rule.rule_id} is defined twice ({seen[key].dataset}, {rule.dataset})")
        seen[key] = rule
    rules = [_unique_mapping_id(r, rules) for r in rules]
    views = _views()
    clashing = sorted(set(views) & set(datasets))
    if clashing:
        raise RuleError(f"views.yaml: {', '.join(clashing)} would hide the canonical entity of that name")
    return Library(tuple(rules), business_dates, dict(views))


def _views() -> dict[str, str]:
    path = QUALITY_DIR / "views.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("views") or {} if path.exists() else {}


def _unique_mapping_id(rule: Rule, rules: list[Rule]) -> Rule:
    if rule.kind != "mapping" or sum(r.rule_id == rule.rule_id for r in rules) == 1:
        return rule
    return Rule(**{**rule.__dict__, "rule_id": f"{rule.rule_id}-{rule.dataset}"})


def row_condition(rule: Rule) -> str:
    """SQL a row of the rule's dataset meets when it passes (expect / condition / flag rules)."""
    if rule.kind == "expect":
        return expectation_sql(rule.definition["expect"])
    if rule.kind == "condition":
        return rule.definition["condition"]
    if rule.kind == "flag":
        prefix = rule.definition["flag_prefix"]
        return f"NOT exists(dq_flags, f -> substr(f, 1, {len(prefix)}) = {_quote(prefix)})"
    raise RuleError(f"rule {rule.rule_id} ({rule.kind}) is not a single-row condition")
