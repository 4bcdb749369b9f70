"""Canonical model and per-source mapping configuration (config/model.yaml, config/mappings/*.yaml)."""

from __future__ import annotations

import csv
from functools import cache, lru_cache
from typing import Any

import yaml

from core.settings import CONFIG_DIR

TERMINOLOGY_DIR = CONFIG_DIR / "terminology"


@lru_cache(maxsize=1)
def canonical_model() -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / "model.yaml").read_text(encoding="utf-8"))


def entity_columns(entity: str) -> list[dict[str, str]]:
    """Silver columns of an entity in table order: its own columns, then lineage."""
    model = canonical_model()
    return model["entities"][entity]["columns"] + model["lineage"]


@cache
def mapped_sources() -> list[str]:
    """Sources with a mapping to the canonical model (the others are collected but not standardised yet)."""
    return sorted(p.stem for p in (CONFIG_DIR / "mappings").glob("*.yaml"))


def source_mapping(source_system: str) -> dict[str, Any]:
    path = CONFIG_DIR / "mappings" / f"{source_system}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no mapping for source '{source_system}': create {path}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def concept_map(source_system: str, name: str) -> dict[str, str]:
    """Local code -> standard code for one source, from its versioned seed file."""
    path = TERMINOLOGY_DIR / "concept_maps" / source_system / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"mapping for {source_system} refers to concept map '{name}': create {path}")
    with path.open(encoding="utf-8") as f:
        return {row["source_code"]: row["target_code"] for row in csv.DictReader(f)}
