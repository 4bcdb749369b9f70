"""Assets the platform's DAGs produce and consume, declared once."""

from pathlib import Path

import yaml
from airflow.sdk import Asset

SOURCES_DIR = Path(__file__).resolve().parents[1] / "config" / "sources"
EXPORTS_DIR = Path(__file__).resolve().parents[1] / "config" / "exports"


def source_names() -> list[str]:
    """The registered sources (config/sources/*.yaml): one collection task and one bronze asset each."""
    return sorted(yaml.safe_load(p.read_text(encoding="utf-8"))["name"] for p in SOURCES_DIR.glob("*.yaml"))


def export_feeds() -> list[str]:
    """The export catalog's feeds (config/exports/*.yaml): one delivery task and one asset each."""
    return sorted(p.stem for p in EXPORTS_DIR.glob("*.yaml") if not p.name.startswith("_"))


def export_feed(feed: str) -> Asset:
    return Asset(f"xydrc://exports/{feed}")


def bronze(source: str) -> Asset:
    return Asset(f"xydrc://bronze/{source}")


SILVER = Asset("xydrc://silver")
MASTER_INDEX = Asset("xydrc://empi")
MART_DAILY_VISITS = Asset("xydrc://marts/fct_daily_outpatient_visits")
