"""Benchmark: what the quality rules find on a simulated county, against the simulator's answer key.

    ./drc bench-quality-detection           # a county with dirt: recall per injected defect type, false alarms
    ./drc bench-quality-detection --clean   # a county simulated with DRC_SIM_DIRT=off: problems and scores

Reads the last ``./drc quality`` run (``dq.*``) and the answer key (``sim_truth``) of the county on the platform
now, so build that county first, with the same ``DRC_SIM_SCALE`` (and ``DRC_SIM_DIRT``) as this command:

    DRC_SIM_SCALE=demo ./drc simulate --reset --until 2027-01-31 && ./drc ingest && ./drc silver && ./drc empi \
        && ./drc quality && ./drc publish
    # --clean: DRC_SIM_DIRT=off, and collect day by day (simulate --until D && ingest, for each day) as production
    # does: a record changed before its first collection would otherwise arrive with a late change time

Writes bench/results/quality_detection.json / .md, or quality_clean.json / .md.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.machine import describe, machine
from bench.simulated import add_clean_option, check_clean_setting

RESULTS = Path(__file__).parent / "results"
MIN_RECALL = 0.95


def _county() -> dict[str, Any]:
    from core.db import warehouse_engine
    from simulator.answer_key import DATABASE
    from simulator.config import load_simulator_config
    from simulator.connections import source_pg_engine

    config = load_simulator_config()
    with source_pg_engine(DATABASE).connect() as conn:
        first, last = conn.execute(sa.text("SELECT min(day), max(day) FROM system_day")).one()
    with warehouse_engine().connect() as conn:
        run = (
            conn.execute(
                sa.text(
                    "SELECT run_id, rules_run, rows_checked, audit_items FROM dq.run ORDER BY finished_at DESC LIMIT 1"
                )
            )
            .mappings()
            .one()
        )
    return {
        "scale": config["scale"],
        "residents": config["residents"],
        "dirt": config.get("dirt", "on"),
        "days": f"{first} – {last}",
        "quality_run": dict(run),
    }


def _clean_result() -> dict[str, Any]:
    from core.db import warehouse_engine

    with warehouse_engine().connect() as conn:
        problems = dict(
            conn.execute(
                sa.text("SELECT rule_id, count(*) FROM dq.problem WHERE status = 'open' GROUP BY 1 ORDER BY 2 DESC")
            ).all()
        )
        scores, below, lowest = conn.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE score < 100), min(score) FROM dq.score")
        ).one()
    return {
        "open_problems": sum(problems.values()),
        "open_problems_by_rule": problems,
        "scores": scores,
        "scores_below_100": below,
        "lowest_score": float(lowest) if lowest is not None else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench-quality-detection")
    add_clean_option(parser)
    args = parser.parse_args(argv)
    from evaluation.quality import detection_report

    check_clean_setting(args.clean)
    result = {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        **_county(),
    }
    if args.clean:
        result.update(_clean_result())
        name = "quality_clean"
    else:
        result.update(detection_report(MIN_RECALL))
        name = "quality_detection"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(_table(result, args.clean))
    print(_table(result, args.clean))
    return result


def _table(r: dict, clean: bool) -> str:
    run = r["quality_run"]
    lines = [
        f"# Quality rules on a simulated county {'without dirt' if clean else 'against its answer key'}",
        "",
        f"Measured {r['measured_at']} on {describe(r['machine'])}: {r['scale']} county "
        f"({r['residents']:,} residents), "
        f"days {r['days']}, dirt {r['dirt']}; quality run {run['run_id']}: {run['rules_run']} rules, "
        f"{run['rows_checked']:,} rows checked, {run['audit_items']:,} 稽核条目.",
        "",
    ]
    if clean:
        lines += [
            "| measure | value | goal |",
            "|---|---|---|",
            f"| open problems | {r['open_problems']} | 0 |",
            f"| scores (institution × dataset × dimension × period) | {r['scores']:,} | |",
            f"| scores below 100 | {r['scores_below_100']} (lowest {r['lowest_score']}) | 0 |",
        ]
        lines += [f"| problems of {rule} | {n} | 0 |" for rule, n in r["open_problems_by_rule"].items()]
    else:
        lines += ["| defect type | logged | found | recall |", "|---|---|---|---|"]
        lines += [f"| {d} | {v['logged']:,} | {v['found']:,} | {v['recall']:.2%} |" for d, v in r["recall"].items()]
        lines += [
            "",
            "Left out of recall (not findable in the current data): "
            + (", ".join(f"{why}: {n}" for why, n in r["left_out_of_recall"].items()) or "none")
            + ".",
        ]
        lines += [
            "",
            f"Problems on records the simulator left clean: {r['unexplained_problems']}"
            + (
                f" ({', '.join(f'{k}: {v}' for k, v in r['unexplained_by_rule'].items())})"
                if r["unexplained_by_rule"]
                else ""
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
