"""Benchmark: build the simulated county at a scale for N days, then time one more day.

    ./drc bench-simulate --scale county --days 365

Writes bench/results/simulate_<scale>.json and prints a table. Peak memory is the process's max RSS,
to show that generation streams day by day instead of holding the history in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import timedelta
from pathlib import Path

from bench.machine import machine
from simulator.config import load_simulator_config
from simulator.county import County

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="county")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--workers", type=int, default=2, help="processes writing member systems in parallel")
    args = parser.parse_args(argv)
    config = load_simulator_config(args.scale)
    config["workers"] = args.workers
    county = County(config)
    started = time.monotonic()
    county.reset()
    reports = county.simulate_until(
        config["start_date"] + timedelta(days=args.days - 1),
        progress=lambda r: print(
            f"{r.day} {r.encounters:>7} encounters {sum(r.rows.values()):>8} rows {r.seconds:6.1f} s", flush=True
        ),
    )
    history_seconds = time.monotonic() - started
    next_day_started = time.monotonic()
    extra = county.simulate_until(config["start_date"] + timedelta(days=args.days))
    next_day_seconds = time.monotonic() - next_day_started
    result = {
        "scale": args.scale,
        "residents": config["residents"],
        "days": args.days,
        "workers": args.workers,
        "history_seconds": round(history_seconds, 1),
        "goal_history_seconds": 1800,
        "next_day_seconds": round(next_day_seconds, 1),
        "goal_next_day_seconds": 60,
        "encounters": sum(r.encounters for r in reports + extra),
        "rows_written": sum(sum(r.rows.values()) for r in reports + extra),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"simulate_{args.scale}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\n| measure | value | goal |\n|---|---|---|\n"
        f"| {args.days} days at {config['residents']:,} residents | {history_seconds / 60:.1f} min | ≤ 30 min |\n"
        f"| one more day | {next_day_seconds:.1f} s | ≤ 60 s |\n"
        f"| rows written | {result['rows_written']:,} | |\n| peak RSS | {result['peak_rss_mb']} MB | bounded |"
    )
    return result


if __name__ == "__main__":
    main()
