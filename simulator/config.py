"""Simulator configuration from config/simulator.yaml."""

from __future__ import annotations

from datetime import date
from typing import Any

import yaml

from core.settings import CONFIG_DIR


def load_simulator_config() -> dict[str, Any]:
    config = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text(encoding="utf-8"))
    if not isinstance(config["start_date"], date):
        config["start_date"] = date.fromisoformat(str(config["start_date"]))
    return config
