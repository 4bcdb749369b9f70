"""The canonical model (config/model/*.yaml), per-source mappings (config/mappings/*.yaml) and terminology.

Everything here reads configuration and checks it; nothing touches Spark. A mapping is validated when it is
loaded, so a typo in a column name stops the run with a message that names the file, table and column.
"""

from __future__ import annotations

import csv
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core.organizations import ORGANIZATIONS_FILE, organizations
from core.settings import CONFIG_DIR

MODEL_DIR = CONFIG_DIR / "model"
MAPPINGS_DIR = CONFIG_DIR / "mappings"
TERMINOLOGY_DIR = CONFIG_DIR / "terminology"
CODE_SYSTEMS_DIR = TERMINOLOGY_DIR / "code_systems"
CONCEPT_MAPS_DIR = TERMINOLOGY_DIR / "concept_maps"

TRANSFORMS = ("trim", "upper", "lower", "digits", "fullwidth_to_halfwidth")
SOURCE_KINDS = ("from", "expr", "constant")
TABLE_OPTIONS = {"entity", "bronze_table", "key", "where", "void", "columns", "lookups", "rules"}
COLUMN_OPTIONS = {*SOURCE_KINDS, "transform", "values", "concept_map", "type", "format", "formats", "on_error"}


@cache
def canonical_model() -> dict[str, Any]:
    """{'lineage': [...columns], 'entities': {name: {zh, key, columns, ...}}} from config/model/."""
    lineage = yaml.safe_load((MODEL_DIR / "_lineage.yaml").read_text(encoding="utf-8"))["columns"]
    entities = {
        path.stem: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(MODEL_DIR.glob("*.yaml"))
        if not path.stem.startswith("_")
    }
    return {"lineage": lineage, "entities": entities}


def entity_columns(entity: str) -> list[dict[str, str]]:
    """Silver columns of an entity in table order: its own columns, then lineage."""
    model = canonical_model()
    return model["entities"][entity]["columns"] + model["lineage"]


def entity_key(entity: str) -> list[str]:
    """The entity's business key without source_system (every silver key is per source system)."""
    return [k for k in canonical_model()["entities"][entity]["key"] if k != "source_system"]


@cache
def mapped_sources() -> list[str]:
    """Sources with a mapping to the canonical model."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))


@cache
def source_mapping(source_system: str) -> dict[str, Any]:
    """The validated mapping of one source; raises ValueError listing every problem found."""
    path = MAPPINGS_DIR / f"{source_system}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no mapping for source '{source_system}': create {path} (see docs/standardisation.md)")
    mapping = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    problems = mapping_problems(source_system, mapping)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return mapping


def mapping_problems(source_system: str, mapping: dict[str, Any]) -> list[str]:
    problems = []
    if mapping.get("source_system") != source_system:
        problems.append(f"source_system must be '{source_system}'")
    entities = canonical_model()["entities"]
    seen = set()
    for i, table in enumerate(mapping.get("tables") or []):
        where = f"tables[{i}] ({table.get('bronze_table')} → {table.get('entity')})"
        if (table.get("entity"), table.get("bronze_table")) in seen:
            problems.append(f"{where}: mapped twice")
        seen.add((table.get("entity"), table.get("bronze_table")))
        if table.get("entity") not in entities:
            problems.append(f"{where}: unknown entity (see config/model/)")
            continue
        if not table.get("bronze_table") or not table.get("key"):
            problems.append(f"{where}: needs bronze_table and key")
        problems += [f"{where}: unknown option {k}" for k in sorted(set(table) - TABLE_OPTIONS)]
        own = {c["name"] for c in entities[table["entity"]]["columns"]}
        for owner, spec in [("", table), *[(f" lookup {n}", s) for n, s in (table.get("lookups") or {}).items()]]:
            void = spec.get("void") if isinstance(spec, dict) else None
            if void is not None and (
                not isinstance(void, dict) or not void or any(v in (None, "", []) for v in void.values())
            ):
                problems.append(
                    f"{where}{owner}: void must map flag columns to the value(s) that mean void, "
                    "e.g. void: {del_flag: '1'}"
                )
        columns = dict(table.get("columns") or {})
        for name, spec in (table.get("lookups") or {}).items():
            if not spec.get("bronze_table") or not spec.get("key") or len(spec.get("join_on") or {}) != 1:
                problems.append(f"{where}: lookup {name} needs bronze_table, key and one join_on pair")
                continue
            ((_, target),) = spec["join_on"].items()
            if "from" not in (table.get("columns") or {}).get(target, {}):
                problems.append(f"{where}: lookup {name} joins on {target}, which must be mapped with `from`")
            columns.update(spec.get("columns") or {})
        for column, spec in columns.items():
            problems += [f"{where}.{column}: {p}" for p in _column_problems(source_system, column, spec, own)]
        missing_key = [k for k in entity_key(table["entity"]) if k not in columns]
        problems += [f"{where}: business key column {k} is not mapped" for k in missing_key]
        for rule in table.get("rules") or []:
            if not rule.get("id") or not rule.get("reason") or not ({"required", "expression"} & set(rule)):
                problems.append(f"{where}: rule {rule} needs id, reason and required or expression")
    if not mapping.get("tables"):
        problems.append("no tables mapped")
    return problems


def _column_problems(source_system: str, column: str, spec: dict[str, Any], own: set[str]) -> list[str]:
    problems = []
    if column not in own:
        problems.append("not a column of the entity")
    if not isinstance(spec, dict):
        return [*problems, "spec must be a mapping"]
    if sum(k in spec for k in SOURCE_KINDS) != 1:
        problems.append("needs exactly one of from / expr / constant")
    problems += [f"unknown option {k}" for k in set(spec) - COLUMN_OPTIONS]
    if spec.get("transform") and spec["transform"] not in TRANSFORMS:
        problems.append(f"unknown transform {spec['transform']} (one of {', '.join(TRANSFORMS)})")
    if "concept_map" in spec:
        path = CONCEPT_MAPS_DIR / source_system / f"{spec['concept_map']}.csv"
        if not path.exists():
            problems.append(f"concept map {path} does not exist")
    return problems


def concept_map_path(source_system: str, name: str) -> Path:
    return CONCEPT_MAPS_DIR / source_system / f"{name}.csv"


def concept_map(source_system: str, name: str) -> dict[str, str]:
    """Local code -> standard code for one source, from its versioned seed file."""
    path = concept_map_path(source_system, name)
    if not path.exists():
        raise FileNotFoundError(f"mapping for {source_system} refers to concept map '{name}': create {path}")
    with path.open(encoding="utf-8") as f:
        return {
            row["source_code"]: row["target_code"]
            for row in csv.DictReader(f)
            if row.get("source_code") not in (None, "") and row.get("target_code") not in (None, "")
        }


@cache
def code_system_index() -> dict[str, dict[str, str]]:
    return yaml.safe_load((CODE_SYSTEMS_DIR / "_index.yaml").read_text(encoding="utf-8"))


def code_system_entry(label: str) -> dict[str, Any]:
    """A code system's entry in _index.yaml (file, name, version, content, base, rules, source ...)."""
    entry = code_system_index().get(label)
    if entry is None:
        raise KeyError(f"code system '{label}' is not registered in {CODE_SYSTEMS_DIR / '_index.yaml'}")
    return entry


def code_system_path(label: str) -> Path:
    return CODE_SYSTEMS_DIR / f"{code_system_entry(label)['file']}.csv"


def code_system_stamp(label: str) -> tuple[str, int, int]:
    """Changes when the code system's file does (a loader rewrote it): keys the caches of its content."""
    path = code_system_path(label)
    stat = path.stat() if path.exists() else None
    return (str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)


def code_system_rows(label: str) -> list[dict[str, str]]:
    """Every row of a code system's file (all its columns), in file order; [] when it has no file."""
    return list(_read_rows(*code_system_stamp(label)))


@cache
def _read_rows(path: str, _mtime: int, _size: int) -> tuple[dict[str, str], ...]:
    if not Path(path).exists():
        return ()
    with open(path, encoding="utf-8", newline="") as f:
        return tuple(csv.DictReader(f))


NOT_CODABLE = ("chapter", "block")  # hierarchy rows of a classification: no record carries them as its code


def code_system(label: str) -> dict[str, str]:
    """Code -> display of a standard code system, by its label in the model (e.g. 'GB/T 2261.1').

    The codes a column may hold: the file's own codes, then those of its ``base`` code system (ICD-10
    国家临床版2.0 lists its own codes, then the whole WHO classification); chapters and blocks are left out.
    ICD-10 also accepts 国临版 extension codes of WHO codes that no list names: spark_jobs.codes.in_code_system.
    """
    entry = code_system_entry(label)
    codes = {
        row["code"]: row.get("display", "") for row in code_system_rows(label) if row.get("level") not in NOT_CODABLE
    }
    if entry.get("base"):
        for code, display in code_system(entry["base"]).items():
            codes.setdefault(code, display)
    return codes


def column_code_system(entity: str, column: str) -> str | None:
    for spec in canonical_model()["entities"][entity]["columns"]:
        if spec["name"] == column:
            return spec.get("code_system")
    return None


@cache
def known_organizations() -> frozenset[str]:
    """Institution codes of the county's register (config/organizations.csv): the STD-ORG rule's reference."""
    return frozenset(organizations())


def table_column_specs(table: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(canonical column, spec) of a mapped table: its own columns, then its lookups' columns."""
    specs = list((table.get("columns") or {}).items())
    for lookup in (table.get("lookups") or {}).values():
        specs += list((lookup.get("columns") or {}).items())
    return specs


# How a local code meets its concept map (spark_jobs/standardize.py: concept_lookup): change it with that logic,
# so every table's history is standardised again with the new matching.
CODE_MATCHING = "exact, normalised, code-system rules (2)"


def table_fingerprint(source_system: str, table: dict[str, Any]) -> str:
    """Changes when anything that shapes this table's silver rows changes: mapping, concept maps, model.

    A changed fingerprint makes the next run re-standardise the table's whole history (how a new concept
    mapping fixes rows already in silver).
    """
    digest = hashlib.sha256()
    digest.update(yaml.safe_dump(table, sort_keys=True, allow_unicode=True).encode())
    digest.update(yaml.safe_dump(canonical_model()["entities"][table["entity"]], sort_keys=True).encode())
    digest.update(yaml.safe_dump(canonical_model()["lineage"], sort_keys=True).encode())
    digest.update(ORGANIZATIONS_FILE.read_bytes())
    digest.update(CODE_MATCHING.encode())
    for column, spec in table_column_specs(table):
        if "concept_map" in spec:
            digest.update(concept_map_path(source_system, spec["concept_map"]).read_bytes())
            label = column_code_system(table["entity"], column)
            if label and code_system_entry(label).get("rules"):  # codes accepted as they are: the lists count
                while label:
                    path = code_system_path(label)
                    digest.update(path.read_bytes() if path.exists() else b"")
                    label = code_system_entry(label).get("base")
    return digest.hexdigest()[:16]
