"""Benchmark: standardisation speed (bronze → silver) on this machine.

    ./drc bench-silver                       # on the platform's lake
    ./drc bench-silver --lake /path/to/lake  # on another lake, e.g. one filled by `./drc bench-ingest --county-day`

Two measures over whatever bronze the lake holds (meant: a county-scale collection, history + one day):
 1. **history**: every mapped table re-standardised from all of its bronze (``--full``);
 2. **one day**: the incremental run that follows the newest collection round — the checkpoints are set back
    to just before that round (the largest pause between bronze commits, or ``--day-since``), so the run
    does exactly what the daily pipeline does after collecting that day.
``--history-only`` measures just the first (e.g. on a lake holding several collected days, where there is no
single newest day); the last one-day measurement is kept.

Writes bench/results/silver.json and prints a table with the issue's goals side by side. Every history
measurement is kept (one per bronze volume); the county year is extrapolated from them by a straight line
seconds = fixed + rows x per-row cost (least squares; one measurement: its rate alone) to the simulator's
county-year bronze volume.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from datetime import datetime
from pathlib import Path

from bench.machine import machine

RESULTS = Path(__file__).parent / "results"


def _commits(lake: Path) -> list[tuple[float, str, str, int, int]]:
    """(timestamp s, source, table, version, rows) of every bronze commit."""
    found = []
    for log in sorted(lake.glob("bronze/*/*/_delta_log")):
        source, table = log.parent.parent.name, log.parent.name
        for commit in log.glob("*.json"):
            if not commit.stem.isdigit():
                continue
            for line in commit.read_text(encoding="utf-8").splitlines():
                if line.startswith('{"commitInfo"'):
                    info = json.loads(line)["commitInfo"]
                    rows = int((info.get("operationMetrics") or {}).get("numOutputRows", 0))
                    found.append((info["timestamp"] / 1000, source, table, int(commit.stem), rows))
    return sorted(found)


def _newest_round_start(commits: list[tuple[float, str, str, int, int]]) -> float:
    """The start of the newest collection round: after the longest pause between two bronze commits of the
    last hour (older history in the lake, e.g. an earlier run's, does not count)."""
    recent = [c for c in commits if c[0] >= commits[-1][0] - 3600]
    gaps = [(later[0] - earlier[0], later[0]) for earlier, later in itertools.pairwise(recent)]
    return max(gaps)[1]


def _rewind(source_system: str, commits: list, since: float) -> None:
    """Set a source's silver checkpoints to the bronze versions committed before ``since``."""
    from spark_jobs.standardize import _save_state, load_state

    before: dict[str, int] = {}
    for ts, source, table, version, _ in commits:
        if source == source_system and ts < since:
            before[table] = max(before.get(table, -1), version)
    state = load_state(source_system)
    for checkpoint in state.values():
        checkpoint["versions"] = {t: before.get(t.lower(), -1) for t in checkpoint["versions"]}
    _save_state(source_system, state)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", help="lake root to benchmark on (default: the platform's)")
    parser.add_argument("--day-since", help="ISO time the measured day's collection started (default: detect)")
    parser.add_argument("--history-only", action="store_true", help="measure the history only, keep the last day")
    args = parser.parse_args(argv)
    if args.lake:
        os.environ["DRC_LAKE_ROOT"] = args.lake
    from core.settings import get_settings
    from core.spark import get_spark
    from spark_jobs.model import mapped_sources
    from spark_jobs.standardize import prepare_silver, standardize_sources

    get_settings.cache_clear()
    lake = Path(get_settings().lake_root)
    spark = get_spark()
    prepare_silver(spark)
    commits = _commits(lake)
    since = datetime.fromisoformat(args.day_since).timestamp() if args.day_since else _newest_round_start(commits)
    result: dict = {
        "machine": machine(),
        "lake": str(lake),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }

    def run_all(full: bool) -> dict:
        started = time.monotonic()
        reports = standardize_sources(spark, mapped_sources(), full=full)
        return {
            "seconds": round(time.monotonic() - started, 1),
            "tables": sum(r.mode in ("full", "incremental") for r in reports),
            "silver_rows_written": sum(r.silver_rows for r in reports),
            "quarantined": sum(r.quarantined for r in reports),
            "changed_keys": sum(r.changed_keys for r in reports),
        }

    print("… history: every table from all of its bronze", flush=True)
    history = run_all(full=True)
    history["bronze_rows"] = sum(c[4] for c in commits)
    history["rows_per_second"] = round(history["bronze_rows"] / history["seconds"])
    history["measured_at"] = result["measured_at"]
    print(f"  {history}", flush=True)
    saved = RESULTS / "silver.json"
    previous = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    earlier = previous.get("history_runs") or (
        [{**previous["history"], "measured_at": previous["measured_at"]}] if "history" in previous else []
    )
    runs = {r["bronze_rows"]: r for r in earlier}
    runs[history["bronze_rows"]] = history
    result["history_runs"] = sorted(runs.values(), key=lambda r: r["bronze_rows"])
    if args.history_only:
        result["one_day"] = previous.get("one_day")
    else:
        for source in mapped_sources():
            _rewind(source, commits, since)
        print(
            f"… one day: the incremental run after the collection round of {datetime.fromtimestamp(since)}", flush=True
        )
        day = run_all(full=False)
        day["bronze_rows"] = sum(c[4] for c in commits if c[0] >= since)
        day["measured_at"] = result["measured_at"]
        result["one_day"] = day
        print(f"  {day}", flush=True)
    county = RESULTS / "simulate_county.json"
    if county.exists():
        simulated = json.loads(county.read_text(encoding="utf-8"))
        year_rows = simulated["rows_written"] / simulated["days"] * 365
        result["county_year_estimate"] = _year_estimate(result["history_runs"], year_rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "silver.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_table(result))
    return result


def _year_estimate(runs: list[dict], year_rows: float) -> dict:
    """Seconds for a county year's bronze from the history measurements: a least-squares line through them."""
    xs, ys = [r["bronze_rows"] for r in runs], [r["seconds"] for r in runs]
    if len(runs) == 1:
        fixed, per_row = 0.0, ys[0] / xs[0]
    else:
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        per_row = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        fixed = mean_y - per_row * mean_x
    largest = max(runs, key=lambda r: r["bronze_rows"])
    return {
        "bronze_rows": round(year_rows),
        "seconds": round(fixed + per_row * year_rows),
        "fixed_seconds": round(fixed, 1),
        "rows_per_second_marginal": round(1 / per_row),
        # no fixed cost at all: the largest run's average rate throughout (the pessimistic bound)
        "seconds_at_largest_run_rate": round(year_rows / largest["rows_per_second"]),
        "basis": f"simulator county rows/day x 365; line through {len(runs)} measured history run(s) (extrapolated)",
    }


def _table(r: dict) -> str:
    d = r["one_day"]
    lines = ["| measure | measured | goal |", "|---|---|---|"]
    for h in r["history_runs"]:
        lines.append(
            f"| history standardised (all bronze, {h['tables']} tables) | {h['seconds']} s for "
            f"{h['bronze_rows']:,} bronze rows ({h['rows_per_second']:,} rows/s) | — |"
        )
    lines.append(
        f"| one day, incremental | {d['seconds']} s ({d['bronze_rows']:,} new bronze rows, "
        f"{d['changed_keys']:,} keys) | ≤ 300 s |"
    )
    if "county_year_estimate" in r:
        e = r["county_year_estimate"]
        lines.append(
            f"| county year (extrapolated) | ≈ {e['seconds'] / 60:.0f} min for {e['bronze_rows']:,} rows "
            f"(at the largest run's average rate: {e['seconds_at_largest_run_rate'] / 60:.0f} min) "
            "| ≤ 60 min |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
