"""Benchmark: the whole quality run (every rule, 稽核条目, problems, scores) on the lake, and GX on Spark as the peer.

    ./drc bench-quality            # on the platform's lake (meant: one simulated county day, ./drc bench-county-day)
    ./drc bench-quality --skip-gx

Measures ``./drc quality`` end to end with its stages, then the library's Great Expectations rules run by GX
itself (one Spark job per expectation) on the same silver tables, so the two engines' cost per rule can be
compared. Writes bench/results/quality.json and bench/results/quality.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.machine import describe, machine

RESULTS = Path(__file__).parent / "results"
GOAL_SECONDS = 600


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench-quality")
    parser.add_argument("--skip-gx", action="store_true")
    args = parser.parse_args(argv)

    from core.settings import get_settings
    from core.spark import get_spark
    from expectations.engine import load_datasets
    from expectations.gx_check import run_gx
    from expectations.rules import dimensions, load_library
    from expectations.store import run_quality

    spark = get_spark()
    library = load_library()
    started = time.perf_counter()
    run = run_quality(spark, progress=lambda text: print(f"  {text}", flush=True))
    seconds = round(time.perf_counter() - started, 1)
    zh = dimensions()
    result = {
        "machine": machine(),
        "lake": get_settings().lake_root,
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": seconds,
        "goal_seconds": GOAL_SECONDS,
        "rules": len(library.rules),
        "rules_by_dimension": {zh[d]: n for d, n in Counter(r.dimension for r in library.rules).items()},
        "rules_by_kind": dict(Counter(r.kind for r in library.rules)),
        "rows_checked": run.rows_checked,
        "audit_items": run.audit_items,
        "problems_open": run.open_problems,
        "stages_seconds": run.timings,
    }
    if not args.skip_gx:
        expect_rules = [r for r in library.rules if r.kind == "expect" and r.where is None]
        started = time.perf_counter()
        outcomes = run_gx(spark, library, load_datasets(spark), data_docs=False)
        gx_seconds = round(time.perf_counter() - started, 1)
        result["gx_peer"] = {
            "expectations": len(outcomes),
            "seconds": gx_seconds,
            "seconds_per_expectation": round(gx_seconds / max(len(outcomes), 1), 2),
            "note": f"GX 1.x on Spark, the {len(expect_rules)} expect rules only",
        }
        result["ours_seconds_per_rule"] = round(
            run.timings.get("rules on silver", seconds) / max(len(library.rules), 1), 3
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(_table(result))
    print(_table(result))
    return result


def _table(r: dict) -> str:
    lines = [
        "# Quality run benchmark",
        "",
        f"Measured {r['measured_at']} on {describe(r['machine'])}, lake {r['lake']}.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| whole quality run (all rules, 稽核条目, problems, scores) | {r['seconds']} s | ≤ {r['goal_seconds']} s |",
        f"| rules | {r['rules']} ({', '.join(f'{k} {v}' for k, v in r['rules_by_dimension'].items())}) | |",
        f"| rows checked | {r['rows_checked']:,} | |",
        f"| 稽核条目 | {r['audit_items']:,} | |",
    ]
    lines += [f"| stage: {k} | {v} s | |" for k, v in r["stages_seconds"].items()]
    if "gx_peer" in r:
        g = r["gx_peer"]
        lines += [
            f"| GX on Spark (peer): {g['expectations']} expectations | {g['seconds']} s "
            f"({g['seconds_per_expectation']} s each) | |",
            f"| ours: seconds per rule (all kinds, one pass per dataset) | {r['ours_seconds_per_rule']} s | |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
