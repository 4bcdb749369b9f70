"""The export catalog (config/exports/): one YAML entry per feed, read by the exporter, the CLI, the DAG and the
generated specification (docs/exports.md). Onboarding a feed is a new YAML file, not code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core.settings import CONFIG_DIR

CATALOG_DIR = CONFIG_DIR / "exports"
TARGETS_FILE = CATALOG_DIR / "_targets.yaml"

PERIOD_KINDS = ("day", "month")
DATASET_KINDS = ("mart", "indicators")
FORMATS = {"csv": {"encoding", "bom"}, "jsonl": set(), "xlsx": set()}
ENCODINGS = ("utf-8", "gbk")
COLUMN_TYPES = ("string", "integer", "decimal", "date", "boolean", "json")
TRANSFORMS = ("pseudonym", "birth_year_band", "month")
PSEUDONYMISATION = {
    "aggregate": "汇总数据（不含个人）",
    "identified": "实名（仅限法定交换对象）",
    "pseudonymised": "假名化（键控哈希、泛化、k-匿名）",
}
CORRECTIONS = ("new_version", "next_period")
FEED_FIELDS = {
    "name",
    "zh",
    "receiver",
    "target",
    "dataset",
    "inputs",
    "period",
    "deadline",
    "lookback_periods",
    "corrections",
    "file_name",
    "format",
    "pseudonymisation",
    "contract_version",
    "columns",
    "privacy",
}


class CatalogError(ValueError):
    """The export catalog is wrong; the message names the file, the feed and what to fix."""


@dataclass(frozen=True)
class Column:
    name: str
    zh: str
    type: str
    source: str  # the dataset column it is made from
    transform: str | None = None
    transform_arg: Any = None
    code_system: str = ""


@dataclass(frozen=True)
class KAnonymity:
    k: int
    quasi_identifiers: tuple[str, ...]
    subject: str  # the column that identifies a person (counted distinct per group)
    suppress_small_groups: bool


@dataclass(frozen=True)
class Target:
    name: str
    zh: str
    kind: str
    host: str
    port_env: str
    user: str
    key_file: str
    known_hosts: str
    remote_dir: str
    retries: int = 3
    backoff_seconds: float = 2.0
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Feed:
    name: str
    zh: str
    receiver: str
    target: str
    dataset: dict[str, Any]
    inputs: tuple[str, ...]
    period: str
    deadline_days: int
    deadline_at: str
    lookback_periods: int
    corrections: str
    file_name: str
    format: dict[str, Any]
    pseudonymisation: str
    contract_version: str
    columns: tuple[Column, ...]
    pseudonym_key: str | None = None
    k_anonymity: KAnonymity | None = None
    path: Path = field(default=CATALOG_DIR)

    @property
    def extension(self) -> str:
        return self.format["type"]

    def contract(self) -> list[dict[str, str]]:
        """The column contract as the manifest states it (names, types, Chinese names, code systems)."""
        return [
            {"name": c.name, "zh": c.zh, "type": c.type, **({"code_system": c.code_system} if c.code_system else {})}
            for c in self.columns
        ]


@dataclass(frozen=True)
class Catalog:
    feeds: dict[str, Feed]
    targets: dict[str, Target]

    def feed(self, name: str) -> Feed:
        if name not in self.feeds:
            raise CatalogError(f"no export feed '{name}'; feeds: {', '.join(sorted(self.feeds))} (config/exports/)")
        return self.feeds[name]


def _column(raw: dict, where: str) -> Column:
    if not isinstance(raw, dict) or not raw.get("name") or not raw.get("zh"):
        raise CatalogError(f"{where}: every column needs name and zh (Chinese header)")
    if raw.get("type") not in COLUMN_TYPES:
        raise CatalogError(f"{where}: column {raw['name']} type must be one of {', '.join(COLUMN_TYPES)}")
    transform, argument = raw.get("transform"), None
    if isinstance(transform, dict):
        ((transform, argument),) = transform.items()
    if transform is not None and transform not in TRANSFORMS:
        raise CatalogError(f"{where}: column {raw['name']}: unknown transform {transform} ({', '.join(TRANSFORMS)})")
    return Column(
        name=raw["name"],
        zh=raw["zh"],
        type=raw["type"],
        source=raw.get("from", raw["name"]),
        transform=transform,
        transform_arg=argument,
        code_system=str(raw.get("code_system", "")),
    )


def _feed(path: Path, raw: dict, targets: dict[str, Target]) -> Feed:
    where = f"{path.name}"
    unknown = set(raw) - FEED_FIELDS
    missing = {
        "name",
        "zh",
        "receiver",
        "target",
        "dataset",
        "period",
        "deadline",
        "file_name",
        "format",
        "pseudonymisation",
        "contract_version",
        "columns",
    } - set(raw)
    if unknown or missing:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}, missing field(s) {sorted(missing)}")
    if raw["name"] != path.stem:
        raise CatalogError(f"{where}: name must be the file's name ({path.stem})")
    if raw["target"] not in targets:
        raise CatalogError(f"{where}: target {raw['target']} is not in {TARGETS_FILE.name} ({', '.join(targets)})")
    if raw["period"] not in PERIOD_KINDS:
        raise CatalogError(f"{where}: period must be one of {', '.join(PERIOD_KINDS)}")
    dataset = dict(raw["dataset"])
    if dataset.get("kind") not in DATASET_KINDS:
        raise CatalogError(f"{where}: dataset.kind must be one of {', '.join(DATASET_KINDS)}")
    if dataset["kind"] == "mart" and not {"model", "period_column", "order_by"} <= set(dataset):
        raise CatalogError(
            f"{where}: a mart dataset needs model, period_column and order_by (schema: marts unless given)"
        )
    fmt = dict(raw["format"])
    if fmt.get("type") not in FORMATS or set(fmt) - {"type"} - FORMATS[fmt["type"]]:
        raise CatalogError(f"{where}: format must be csv (encoding, bom), jsonl or xlsx, got {fmt}")
    if fmt.get("encoding", "utf-8") not in ENCODINGS:
        raise CatalogError(f"{where}: csv encoding must be one of {', '.join(ENCODINGS)}")
    if raw["pseudonymisation"] not in PSEUDONYMISATION:
        raise CatalogError(f"{where}: pseudonymisation must be one of {', '.join(PSEUDONYMISATION)}")
    corrections = raw.get("corrections", "new_version")
    if corrections not in CORRECTIONS:
        raise CatalogError(f"{where}: corrections must be one of {', '.join(CORRECTIONS)}")
    columns = tuple(_column(c, where) for c in raw["columns"])
    privacy = raw.get("privacy") or {}
    k_anon = None
    if "k_anonymity" in privacy:
        spec = privacy["k_anonymity"]
        k_anon = KAnonymity(
            k=int(spec["k"]),
            quasi_identifiers=tuple(spec["quasi_identifiers"]),
            subject=spec["subject"],
            suppress_small_groups=bool(spec.get("suppress_small_groups")),
        )
        unknown_columns = {*k_anon.quasi_identifiers, k_anon.subject} - {c.name for c in columns}
        if unknown_columns or k_anon.k < 2:
            raise CatalogError(
                f"{where}: k_anonymity needs k ≥ 2 and columns of the feed (unknown: {sorted(unknown_columns)})"
            )
    pseudonymous = [c.name for c in columns if c.transform == "pseudonym"]
    if raw["pseudonymisation"] == "pseudonymised" and (
        not pseudonymous or not privacy.get("pseudonym_key") or k_anon is None
    ):
        raise CatalogError(
            f"{where}: a pseudonymised feed needs a pseudonym column, privacy.pseudonym_key and privacy.k_anonymity"
        )
    deadline = raw["deadline"]
    return Feed(
        name=raw["name"],
        zh=raw["zh"],
        receiver=raw["receiver"],
        target=raw["target"],
        dataset=dataset,
        inputs=tuple(raw.get("inputs") or ()),
        period=raw["period"],
        deadline_days=int(deadline["days_after_period_end"]),
        deadline_at=str(deadline.get("at", "00:00")),
        lookback_periods=int(raw.get("lookback_periods", 1)),
        corrections=corrections,
        file_name=raw["file_name"],
        format=fmt,
        pseudonymisation=raw["pseudonymisation"],
        contract_version=str(raw["contract_version"]),
        columns=columns,
        pseudonym_key=privacy.get("pseudonym_key"),
        k_anonymity=k_anon,
        path=path,
    )


def _targets(path: Path) -> dict[str, Target]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    targets = {}
    for name, spec in (raw.get("targets") or {}).items():
        if spec.get("kind") != "sftp":
            raise CatalogError(f"{path.name}: target {name}: only kind sftp is supported")
        targets[name] = Target(name=name, **{k: v for k, v in spec.items()})
    return targets


def load_catalog(directory: Path = CATALOG_DIR) -> Catalog:
    targets = _targets(directory / TARGETS_FILE.name)
    feeds = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path.name}: not valid YAML ({exc})") from None
        feeds[raw.get("name", path.stem)] = _feed(path, raw, targets)
    return Catalog(feeds=feeds, targets=targets)


@cache
def catalog() -> Catalog:
    return load_catalog()
