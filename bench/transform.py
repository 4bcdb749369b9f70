"""Benchmark: the dbt build (staging → intermediate → marts, with every test and contract) on the warehouse now.

    ./drc bench-transform --run year       # after publishing a county year: the whole build
    ./drc bench-transform --run next_day   # after one more day was collected, standardised and published

Build the county first (DRC_SIM_SCALE=county; simulate, ingest, silver, empi, quality, publish). Each run is
stored under its name in bench/results/transform.json with the build's seconds, the slowest nodes (from dbt's
run_results.json) and the size of the facts it built, and the table (bench/report.py ``render_transform``)
is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from bench.machine import machine
from bench.report import render_transform

RESULTS = Path(__file__).parent / "results"
GOALS = {"year": 600, "next_day": 120}  # seconds (issue 16)
# Facts whose size says what the build worked on.
SIZED = ("ods.encounter", "ods.fee", "marts.fct_encounter", "marts.dim_resident", "marts.fct_indicator_value")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench-transform")
    parser.add_argument("--run", choices=sorted(GOALS), required=True)
    args = parser.parse_args(argv)
    from core.db import warehouse_engine
    from core.dbt import DBT_DIR, dbt_build
    from expectations.store import ensure_tables
    from spark_jobs.publish import ensure_publish_tables

    ensure_tables()
    ensure_publish_tables()
    started = time.monotonic()
    dbt_build()
    seconds = round(time.monotonic() - started, 1)
    run_results = json.loads((DBT_DIR / "target" / "run_results.json").read_text(encoding="utf-8"))
    nodes = [
        {"node": r["unique_id"].split(".", 2)[-1], "kind": r["unique_id"].split(".")[0], "seconds": r["execution_time"]}
        for r in run_results["results"]
    ]
    by_kind: dict[str, float] = {}
    for node in nodes:
        by_kind[node["kind"]] = round(by_kind.get(node["kind"], 0.0) + node["seconds"], 1)
    with warehouse_engine().connect() as conn:
        sizes = {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() for table in SIZED}
        first, last = conn.execute(sa.text("SELECT min(visit_date), max(visit_date) FROM marts.fct_encounter")).one()
    run = {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": seconds,
        "goal_seconds": GOALS[args.run],
        "nodes": len(nodes),
        "seconds_by_kind": by_kind,
        "slowest": sorted(nodes, key=lambda n: -n["seconds"])[:12],
        "days": f"{first} – {last}",
        "rows": sizes,
    }
    path = RESULTS / "transform.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": {}}
    results["runs"][args.run] = run
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    print(render_transform(results))
    return run


if __name__ == "__main__":
    main()
