"""Simulator configuration from config/simulator.yaml."""

from __future__ import annotations

import os
from datetime import date
from typing import Any

import yaml

from core.settings import CONFIG_DIR


def load_simulator_config(scale: str | None = None) -> dict[str, Any]:
    """The simulator config at a scale (``test``, ``demo``, ``county``; default from DRC_SIM_SCALE or the file)."""
    config = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text(encoding="utf-8"))
    if not isinstance(config["start_date"], date):
        config["start_date"] = date.fromisoformat(str(config["start_date"]))
    scale = scale or os.environ.get("DRC_SIM_SCALE") or config["scale"]
    if scale not in config["scales"]:
        raise ValueError(f"unknown simulator scale '{scale}': choose one of {sorted(config['scales'])}")
    config["scale"] = scale
    config["residents"] = config["scales"][scale]
    return config
