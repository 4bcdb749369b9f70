"""Benchmark: every proven supervision indicator of the county on the platform against the simulator's truth.

    ./drc bench-indicator-truth            # a county with dirt: no key above the truth, shortfalls accounted for
    ./drc bench-indicator-truth --clean    # a county simulated with DRC_SIM_DIRT=off: every key equal but
                                           # what an institution's source does not carry at all

Reads ``marts.fct_indicator_value`` and the answer key (``sim_truth``) of the county on the platform now, so
build it first with the same ``DRC_SIM_SCALE`` (and ``DRC_SIM_DIRT``) as this command, e.g.

    DRC_SIM_SCALE=demo ./drc simulate --reset --until 2026-11-14 && ./drc ingest && ./drc silver && ./drc empi \\
        && ./drc quality && ./drc publish && ./drc transform

The truth is taken as of the last day the platform has visits for; a county simulated further than it was
collected would show the uncollected days as shortfalls. Writes bench/results/indicator_truth.json, or
indicator_truth_clean.json; ``./drc docs-figures`` puts its table into docs/warehouse.md.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from bench.machine import machine
from bench.report import render_indicator_truth
from bench.simulated import add_clean_option, check_clean_setting

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench-indicator-truth")
    add_clean_option(parser)
    args = parser.parse_args(argv)
    from core.db import warehouse_engine
    from evaluation.indicators import account_encounters, compare_with_truth
    from simulator.config import load_simulator_config

    check_clean_setting(args.clean)
    with warehouse_engine().connect() as conn:
        first, last = conn.execute(
            sa.text("SELECT min(visit_date), max(visit_date) FROM marts.fct_encounter WHERE is_counted")
        ).one()
    if last is None:
        raise SystemExit("marts.fct_encounter has no visits: build the county and run ./drc transform first")
    config = load_simulator_config()
    comparison = compare_with_truth(last)
    with warehouse_engine().connect() as conn:
        names = dict(
            conn.execute(
                sa.text("SELECT org_code, org_name FROM marts.dim_organization WHERE org_code = ANY(:codes)"),
                {"codes": sorted({org for orgs in comparison.not_carried.values() for org in orgs})},
            ).all()
        )
    name = "indicator_truth_clean" if args.clean else "indicator_truth"
    result = {
        "name": name,
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "scale": config["scale"],
        "residents": config["residents"],
        "dirt": "off" if args.clean else "on",
        "days": f"{first} – {last}",
        "indicators": comparison.indicators,
        "keys_over_truth": len(comparison.over),
        "keys_unexplained": len(comparison.unexplained),
        "not_carried": {
            part: [f"{org} {names.get(org, '')}".strip() for org in orgs]
            for part, orgs in comparison.not_carried.items()
        },
        "differences": comparison.differences,
        "missing_visits": account_encounters(last).missing,
        "missing_admissions": account_encounters(last, kinds=("inpatient",)).missing,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str) + "\n")
    print(render_indicator_truth(result))
    failing = comparison.unexplained if args.clean else comparison.over
    if failing:
        raise SystemExit(f"{len(failing)} keys differ from the truth: see {RESULTS / name}.json")
    return result


if __name__ == "__main__":
    main()
