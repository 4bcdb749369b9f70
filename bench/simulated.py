"""What the benches that judge the platform against the simulator's answer key share: the ``--clean`` option.

A bench run with ``--clean`` compares a county the simulator made without dirt; the simulator's own settings
(read with ``DRC_SIM_DIRT``) must say the same, or the bench would judge a dirty county by the clean goal.
"""

from __future__ import annotations

import argparse
import os


def add_clean_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clean", action="store_true", help="the county was simulated with DRC_SIM_DIRT=off")


def check_clean_setting(clean: bool) -> None:
    """Stop a ``--clean`` run whose environment does not say the county was simulated without dirt."""
    if clean and os.environ.get("DRC_SIM_DIRT") != "off":
        raise SystemExit(
            "--clean judges a county simulated without dirt: run it with DRC_SIM_DIRT=off, as the county was made"
        )
