"""Simulator configuration from config/simulator.yaml."""

from __future__ import annotations

import os
from dataclasses import fields
from datetime import date
from typing import Any

import yaml

from core.settings import CONFIG_DIR

# Rates of injected defects (per system, see config/simulator.yaml): all 0 in a county without dirt. Vendor
# behaviour (free-text diagnoses at village clinics, herbal prescriptions) and legitimate corrections stay.
DIRT_RATES = (
    "re_registration",
    "duplicate_submission",
    "unknown_local_code",
    "unknown_sex_code",
    "discharge_before_admission",
    "late_submission",
    "duplicate_file",
    "duplicate_row",
    "missing_id_number",
    "lag_rate",
    "followup_after_death",
)


def without_dirt(config: dict[str, Any]) -> dict[str, Any]:
    """The same county with every defect rate at 0: what the quality rules must find nothing in."""
    from simulator.dirt import IdentityDirt

    clean_identity = {f.name: 0.0 for f in fields(IdentityDirt)}
    systems = {}
    for name, system in config["systems"].items():
        system = {k: (0.0 if k in DIRT_RATES else v) for k, v in system.items()}
        if "dirt" in system:
            system["dirt"] = {k: 0.0 for k in system["dirt"]}
        if "schema_drift_day" in system:
            system["schema_drift_day"] = None
        system["identity_dirt"] = clean_identity
        systems[name] = system
    return {**config, "systems": systems, "dirt": "off"}


def load_simulator_config(scale: str | None = None) -> dict[str, Any]:
    """The simulator config at a scale (``test``, ``demo``, ``county``; default from DRC_SIM_SCALE or the file);
    DRC_SIM_DIRT=off gives the county without injected defects; DRC_SIM_DIAGNOSIS_TAIL=off draws diagnoses from
    the common list only (the county before the long tail of the whole classification)."""
    config = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text(encoding="utf-8"))
    if not isinstance(config["start_date"], date):
        config["start_date"] = date.fromisoformat(str(config["start_date"]))
    scale = scale or os.environ.get("DRC_SIM_SCALE") or config["scale"]
    if scale not in config["scales"]:
        raise ValueError(f"unknown simulator scale '{scale}': choose one of {sorted(config['scales'])}")
    config["scale"] = scale
    config["residents"] = config["scales"][scale]
    if os.environ.get("DRC_SIM_DIAGNOSIS_TAIL") == "off":
        config["activity"]["diagnosis_tail"] = {}
    return without_dirt(config) if os.environ.get("DRC_SIM_DIRT") == "off" else config
