"""Source registry: one YAML file per source under config/sources/, validated on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from core.settings import CONFIG_DIR

SOURCES_DIR = CONFIG_DIR / "sources"
SUPPORTED_MODES = {"jdbc_incremental"}


class SourceConfigError(ValueError):
    """A source YAML file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class TableConfig:
    name: str
    keys: tuple[str, ...]
    watermark: str
    late_arrival_minutes: int = 60


@dataclass(frozen=True)
class SourceConfig:
    name: str
    description: str
    org_code: str
    kind: str
    mode: str
    database: str
    tables: tuple[TableConfig, ...]


def _require(raw: dict, field: str, path: Path):
    if field not in raw or raw[field] in (None, "", []):
        raise SourceConfigError(f"{path.name}: missing required field '{field}'")
    return raw[field]


def load_source(path: Path) -> SourceConfig:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    mode = _require(raw, "mode", path)
    if mode not in SUPPORTED_MODES:
        raise SourceConfigError(f"{path.name}: mode '{mode}' is not one of {sorted(SUPPORTED_MODES)}")
    tables = []
    for i, table in enumerate(_require(raw, "tables", path)):
        where = f"{path.name}: tables[{i}]"
        for field in ("name", "keys", "watermark"):
            if not table.get(field):
                raise SourceConfigError(f"{where}: missing required field '{field}'")
        tables.append(TableConfig(table["name"], tuple(table["keys"]), table["watermark"],
                                  int(table.get("late_arrival_minutes", raw.get("late_arrival_minutes", 60)))))
    return SourceConfig(
        name=_require(raw, "name", path),
        description=raw.get("description", ""),
        org_code=str(_require(raw, "org_code", path)),
        kind=_require(raw, "kind", path),
        mode=mode,
        database=_require(_require(raw, "connection", path), "database", path),
        tables=tuple(tables),
    )


def load_sources() -> dict[str, SourceConfig]:
    sources = [load_source(p) for p in sorted(SOURCES_DIR.glob("*.yaml"))]
    return {s.name: s for s in sources}
