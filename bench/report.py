"""The benchmark figures the docs quote, rendered from ``bench/results/*.json`` (never typed in by hand).

Each figure block in a doc sits between two marker comments::

    <!-- bench:empi_independent -->
    ...generated: a markdown table and a line naming the results file, the run date, the runs and the machine...
    <!-- /bench:empi_independent -->

``./drc docs-figures`` rewrites every block from its results file; ``./drc docs-figures --check`` changes
nothing and exits 1 when a block differs from what its results file gives (a re-run benchmark whose docs were
not regenerated; ``tests/test_docs_figures.py`` runs the same check). The prose around a block is the
author's and should not restate the block's numbers.

A measure taken several times is stored as a spread (``bench.machine.spread`` / ``timed_runs``: runs, median,
min, max) and rendered "median (min–max, n runs)"; a plain number is one run, and the block says "1 run".
Goals (the ✔/✘ columns) are the project's targets, kept here beside the tables that judge them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bench.empi_independent import describe_stages
from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

MARKER = re.compile(r"<!-- (/?)bench:([a-z0-9_]+) -->")


# ---------------------------------------------------------------- formatting


def is_spread(value: Any) -> bool:
    return isinstance(value, dict) and {"runs", "median", "min", "max"} <= value.keys()


def median(value: Any) -> float:
    """The figure a goal is judged on: a spread's median, or the one run's value."""
    return value["median"] if is_spread(value) else value


def measured(value: Any, unit: str = "s", fmt: str = "{:,}") -> str:
    """'65.0 s' for one run; '65.0 s (61.2–70.3, 3 runs)' for a spread."""
    sep = " " if unit else ""
    if is_spread(value):
        return (
            f"{fmt.format(value['median'])}{sep}{unit} ({fmt.format(value['min'])}–{fmt.format(value['max'])}, "
            f"{value['runs']} runs)"
        )
    return f"{fmt.format(value)}{sep}{unit}"


def _spreads(node: Any) -> list[dict]:
    if is_spread(node):
        return [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [s for child in children for s in _spreads(child)]


def runs_note(results: dict) -> str:
    """'1 run', or how the spreads of a repeated run are shown."""
    spreads = _spreads(results)
    if not spreads:
        return "1 run"
    counts = sorted({s["runs"] for s in spreads})
    return f"timings median (min–max) of {'/'.join(map(str, counts))} runs"


def _when(results: dict) -> str:
    stamp = results.get("measured_at")
    return stamp[:16].replace("T", " ") if stamp else "date not recorded"


def _machine(results: dict) -> str:
    facts = results.get("machine")
    text = describe(facts) if facts is not None else "not recorded"
    if isinstance(facts, str) and results.get("cpus") and "core" not in facts:
        text += f", {results['cpus']} cores"
    return text


def source_line(name: str, results: dict, when: str | None = None, runs: str | None = None) -> str:
    return (
        f"_From `bench/results/{name}.json`: run {when or _when(results)}, {runs or runs_note(results)}; "
        f"machine: {_machine(results)}. Regenerate with `./drc docs-figures`._"
    )


def ok(passed: bool) -> str:
    return "✔" if passed else "✘"


def pct(part: float, whole: float, digits: int = 1) -> str:
    return f"{100 * part / whole:.{digits}f} %" if whole else "–"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _days(span: str) -> int:
    """'2026-11-01 – 2027-01-31' → 92 (both days counted)."""
    first, last = (date.fromisoformat(d.strip()) for d in span.split("–"))
    return (last - first).days + 1


# ---------------------------------------------------------------- EMPI

EMPI_NAMES = {"error_model": "error_model", "simulator": "simulator", "febrl4": "FEBRL4", "febrl3": "FEBRL3"}
# Goals: the records our county's systems hold; on other countries' files (FEBRL) F1 only; speed against Splink.
EMPI_GOAL = {"precision": 0.995, "recall": 0.99, "f1": 0.993, "review_share": 0.02}
FEBRL_GOAL_F1 = 0.97
SPEED_GOAL_VS_SPLINK = 2.0


def _prf(r: dict, bold: bool = False) -> str:
    f1 = f"**{r['f1']:.4f}**" if bold else f"{r['f1']:.4f}"
    return f"{r['precision']:.4f} / {r['recall']:.4f} / {f1}"


def render_empi_independent(results: dict) -> str:
    rows = []
    for key, d in results["datasets"].items():
        ours, splink = d["ours"], d.get("splink_raw")
        facts = d["facts"]
        if key.startswith("febrl"):
            goal = f"F1 ≥ {FEBRL_GOAL_F1} {ok(ours['f1'] >= FEBRL_GOAL_F1)}"
        else:
            passed = (
                all(ours[k] >= EMPI_GOAL[k] for k in ("precision", "recall", "f1"))
                and ours["review_share"] <= EMPI_GOAL["review_share"]
            )
            goal = (
                f"≥ {EMPI_GOAL['precision']} / {EMPI_GOAL['recall']} / {EMPI_GOAL['f1']}, "
                f"≤ {pct(EMPI_GOAL['review_share'], 1, 0)} {ok(passed)}"
            )
        rl = [d[k]["f1"] for k in ("recordlinkage_ecm", "recordlinkage_logistic") if k in d]
        rows.append(
            [
                f"{EMPI_NAMES.get(key, key)} ({facts['records']:,}; {facts['true_pairs']:,})",
                f"{_prf(ours, bold=True)}, {ours['review_share']:.2%}".replace("%", " %"),
                _prf(splink) if splink else "—",
                " / ".join(f"{f:.4f}" for f in rl) or "—",
                goal,
            ]
        )
    first = next(iter(results["datasets"]))
    ours_s, splink_s = (
        results["datasets"][first]["ours"]["seconds"],
        results["datasets"][first]["splink_raw"]["seconds"],
    )
    ratio = median(ours_s) / median(splink_s)
    rows.append(
        [
            f"time, {EMPI_NAMES.get(first, first)} file",
            measured(ours_s),
            measured(splink_s),
            "—",
            f"≤ {SPEED_GOAL_VS_SPLINK:g}× Splink {ok(ratio <= SPEED_GOAL_VS_SPLINK)} ({ratio:.1f}×)",
        ]
    )
    code: dict[str, list[str]] = {}
    for key, d in results["datasets"].items():
        c = d["ours"].get("code")
        if c:
            label = f"commit {c['commit']}" + (" + uncommitted edits" if c.get("empi_uncommitted_changes") else "")
            code.setdefault(label, []).append(EMPI_NAMES.get(key, key))
    lines = [
        table(
            [
                "set (records, true pairs)",
                "ours P / R / F1, review",
                "Splink P / R / F1 (file as given)",
                "recordlinkage ECM / logistic F1",
                "goal",
            ],
            rows,
        ),
        "",
    ]
    stages = results["datasets"][first]["ours"].get("stages")
    if stages:
        lines += [
            f"Where ours' {measured(ours_s)} went on the {EMPI_NAMES.get(first, first)} file (`empi match --timings`): "
            + describe_stages(stages)
            + ".",
            "",
        ]
    if code:
        lines += [
            "EMPI code measured: "
            + "; ".join(f"{label} ({', '.join(sets)})" for label, sets in code.items())
            + ("." if len(code) == 1 else " — it changed between the sets of this run."),
            "",
        ]
    lines.append(
        source_line(
            "empi_independent",
            results,
            runs=f"{runs_note(results)}, {results['residents']:,} residents per generated set, seed {results['seed']}",
        )
    )
    return "\n".join(lines)


def _prf5(r: dict, bold: bool = False) -> str:
    f1 = f"**{r['f1']}**" if bold else f"{r['f1']}"
    return f"{r['precision']} / {r['recall']} / {f1}"


EMPI_COUNTY_GOAL = {
    "precision": 0.999,
    "recall": 0.98,
    "review_share": 0.02,
    "full_link_seconds": 1800,
    "day_seconds": 120,
}


def render_empi_county(results: dict) -> str:
    o, s = results["ours"], results["splink"]
    g = EMPI_COUNTY_GOAL
    quality_ok = o["precision"] >= g["precision"] and o["recall"] >= g["recall"] and o["f1"] > s["f1"]
    ratio = median(o["full_link_seconds"]) / median(s["seconds"])
    full_ok = median(o["full_link_seconds"]) <= g["full_link_seconds"]
    rows = [
        [
            f"{results['residents']:,} residents, {o['records']:,} records: precision / recall / F1",
            _prf5(o, bold=True),
            _prf5(s),
            f"≥ {g['precision']} / ≥ {g['recall']} / beat Splink {ok(quality_ok)}",
        ],
        [
            f"pairs missed / wrong pairs joined (of {o['true_pairs']:,} true pairs)",
            f"{o['true_pairs'] - o['correct_pairs']:,} / {o['predicted_pairs'] - o['correct_pairs']:,}",
            f"{s['true_pairs'] - s['correct_pairs']:,} / {s['predicted_pairs'] - s['correct_pairs']:,}",
            "",
        ],
        [
            "review queue",
            f"{o['review_queue']:,} records ({o['review_share']:.2%})".replace("%", " %"),
            "— (no review band)",
            f"≤ {pct(g['review_share'], 1, 0)} {ok(o['review_share'] <= g['review_share'])}",
        ],
        [
            f"full link ({o['after_full_link']['records']:,} records), everything written",
            measured(o["full_link_seconds"]),
            measured(s["seconds"]),
            f"≤ {g['full_link_seconds']:,} s {ok(full_ok)}; within Splink's {ok(ratio <= 1)} ({ratio:.2f}×)",
        ],
        [
            f"one day incremental ({o['day_records']:,} records: new ones and unclaimed ones re-matched; "
            f"{o['residents_found']:,} residents after it)",
            measured(o["day_seconds"]),
            "— (re-links everything)",
            f"≤ {g['day_seconds']} s {ok(median(o['day_seconds']) <= g['day_seconds'])}",
        ],
    ]
    return "\n".join([table(["measure", "ours", "Splink 4 (DuckDB)", "goal"], rows), "", source_line("empi", results)])


# ---------------------------------------------------------------- collection, standardisation, simulation

INGEST_GOAL = {
    "bulk_rows_per_second": 30_000,
    "cdc_events_per_second": 5_000,
    "latency_p95_seconds": 60,
    "county_day_seconds": 300,
}


def render_ingestion(results: dict) -> str:
    g = INGEST_GOAL
    bulk = results["bulk_load"]
    rows = [
        [
            f"bulk / initial load into Delta (JDBC snapshot, {bulk['rows']:,} rows)",
            f"{measured(bulk['seconds'])}, {bulk['rows_per_second']:,} rows/s",
            f"≥ {g['bulk_rows_per_second']:,} rows/s {ok(bulk['rows_per_second'] >= g['bulk_rows_per_second'])}",
        ]
    ]
    for key, label in (("mysql_binlog", "MariaDB binlog"), ("pg_logical", "PostgreSQL logical decoding")):
        t = results.get(f"cdc_throughput_{key}")
        if t:
            rows.append(
                [
                    f"CDC throughput, {label} ({t['events']:,} events)",
                    f"{measured(t['seconds'])}, {t['events_per_second']:,} events/s",
                    f"≥ {g['cdc_events_per_second']:,} events/s "
                    f"{ok(t['events_per_second'] >= g['cdc_events_per_second'])}",
                ]
            )
    for key, label in (("mysql_binlog", "binlog (`--follow`)"), ("pg_logical", "logical decoding")):
        lat = results.get(f"cdc_latency_{key}")
        if lat:
            rows.append(
                [
                    f"CDC latency, source commit → bronze, {label}, {lat['changes']:,} changes "
                    f"({lat['landed']:,} landed)",
                    f"p50 {lat['p50_seconds']} s, p95 {lat['p95_seconds']} s, max {lat['max_seconds']} s",
                    f"p95 ≤ {g['latency_p95_seconds']} s {ok(lat['p95_seconds'] <= g['latency_p95_seconds'])}",
                ]
            )
    day = results.get("county_day")
    if day:
        rows.append(
            [
                f"one county day from every source ({day['rows']:,} rows, {len(day['per_source'])} sources"
                f"{', failed: ' + ', '.join(day['failed']) if day['failed'] else ''})",
                measured(day["seconds"]),
                f"≤ {g['county_day_seconds']} s {ok(median(day['seconds']) <= g['county_day_seconds'])}",
            ]
        )
    return "\n".join([table(["measure", "measured", "goal"], rows), "", source_line("ingestion", results)])


# What each recorded history run measured (the JSON keeps sizes, not how many days were simulated).
SILVER_HISTORY_DAYS = {
    "2026-11-26T19:33:27+08:00": "a few county days",
    "2026-11-27T10:39:35+08:00": "30 county days",
    "2026-11-27T11:16:20+08:00": "90 county days",
}
SILVER_GOAL = {"day_seconds": 300, "year_minutes": 60}


def render_silver(results: dict) -> str:
    rows = []
    for run in results["history_runs"]:
        label = SILVER_HISTORY_DAYS.get(run["measured_at"], f"run of {run['measured_at'][:10]}")
        rows.append(
            [
                f"history, {label} ({run['tables']} tables)",
                f"{measured(run['seconds'])} for {run['bronze_rows']:,} bronze rows "
                f"({run['rows_per_second']:,} rows/s)",
                "—",
            ]
        )
    day = results["one_day"]
    rows.append(
        [
            "one county day, incremental",
            f"{measured(day['seconds'])} ({day['bronze_rows']:,} new bronze rows, {day['changed_keys']:,} "
            "changed keys)",
            f"≤ {SILVER_GOAL['day_seconds']} s {ok(median(day['seconds']) <= SILVER_GOAL['day_seconds'])}",
        ]
    )
    year = results.get("county_year_estimate")
    if year:
        worst = max(year["seconds"], year["seconds_at_largest_run_rate"]) / 60
        rows.append(
            [
                f"county year, {year['bronze_rows'] / 1e6:.1f} M bronze rows (the simulated year's source "
                "rows; extrapolated)",
                f"≈ {year['seconds'] / 60:.0f} min by a line through the {len(results['history_runs'])} runs "
                f"(≈ {year['fixed_seconds']:.0f} s fixed, ≈ {year['rows_per_second_marginal']:,} rows/s "
                f"marginal); ≈ {year['seconds_at_largest_run_rate'] / 60:.0f} min even at the largest run's "
                "average rate",
                f"≤ {SILVER_GOAL['year_minutes']} min {ok(worst <= SILVER_GOAL['year_minutes'])}",
            ]
        )
    when = ", ".join(r["measured_at"][:16].replace("T", " ") for r in results["history_runs"])
    return "\n".join(
        [
            table(["measure", "measured", "goal"], rows),
            "",
            source_line(
                "silver",
                results,
                when=f"{_when(results)} (history runs {when}; the day {day['measured_at'][:16].replace('T', ' ')})",
                runs="1 run each",
            ),
        ]
    )


def render_simulate_county(results: dict) -> str:
    hist, goal = results["history_seconds"], results["goal_history_seconds"]
    nxt, goal_next = results["next_day_seconds"], results["goal_next_day_seconds"]

    def minutes(v: Any) -> Any:
        return {**v, **{k: round(v[k] / 60, 1) for k in ("median", "min", "max")}} if is_spread(v) else round(v / 60, 1)

    rows = [
        [
            f"{results['days']} days at {results['residents']:,} residents ({results['rows_written'] / 1e6:.1f} M "
            f"source rows, answer key included; {results['encounters']:,} encounters)",
            measured(minutes(hist), "min"),
            f"≤ {goal / 60:g} min {ok(median(hist) <= goal)}",
        ],
        [
            f"one more day after {'that year' if results['days'] == 365 else 'them'}",
            measured(nxt),
            f"≤ {goal_next:g} s {ok(median(nxt) <= goal_next)}",
        ],
        [
            "peak memory of the generator",
            f"{results['peak_rss_mb']:,} MB (the writers hold their own systems' state)",
            "bounded",
        ],
    ]
    return "\n".join(
        [
            table(["measure", "measured", "goal"], rows),
            "",
            source_line(
                "simulate_county",
                results,
                runs=f"{runs_note(results)}, scale {results['scale']}, {results['workers']} writer processes",
            ),
        ]
    )


# ---------------------------------------------------------------- quality


def render_quality(results: dict) -> str:
    rows = [
        [
            f"whole run: {results['rules']} rules on {results['rows_checked']:,} silver rows → "
            f"{results['audit_items']:,} 稽核条目, {results['problems_open']:,} open problems, scores",
            f"**{measured(results['seconds'])}**",
            f"≤ {results['goal_seconds']} s {ok(median(results['seconds']) <= results['goal_seconds'])}",
        ]
    ]
    rows += [[f"· {stage}", measured(seconds), ""] for stage, seconds in results["stages_seconds"].items()]
    rows.append(
        [
            "ours per rule (all rules of every kind, one pass per dataset)",
            f"{results['ours_seconds_per_rule']:.2f} s",
            "",
        ]
    )
    gx = results.get("gx_peer")
    if gx:
        rows.append(
            [
                f"peer: {gx['note']} ({gx['expectations']} expectations, one Spark job each)",
                f"{measured(gx['seconds'])} ({gx['seconds_per_expectation']:.2f} s per expectation)",
                "",
            ]
        )
    return "\n".join([table(["measure", "measured", "goal"], rows), "", source_line("quality", results)])


def _scope(results: dict) -> str:
    return (
        f"{results['scale']} county, {results['residents']:,} residents, {results['days']} "
        f"({_days(results['days'])} days), dirt {results['dirt']}; quality run {results['quality_run']['run_id']}: "
        f"{results['quality_run']['rules_run']} rules, {results['quality_run']['rows_checked']:,} rows checked, "
        f"{results['quality_run']['audit_items']:,} 稽核条目"
    )


def render_quality_detection(results: dict) -> str:
    rec = sorted(results["recall"].items(), key=lambda kv: (-kv[1]["logged"], kv[0]))
    goal = results["min_recall"]
    rows = [
        [kind, f"{r['found']:,} / {r['logged']:,}", f"{r['recall']:.2%}".replace("%", " %"), ok(r["recall"] >= goal)]
        for kind, r in rec
    ]
    lines = [table(["defect type", "found / logged", "recall", f"≥ {pct(goal, 1, 0)}"], rows), ""]
    left = results.get("left_out_of_recall") or {}
    if left:
        lines += [
            "Left out of recall (the data cannot show them): "
            + "; ".join(f"{why} {n}" for why, n in left.items())
            + ".",
            "",
        ]
    by_rule = results.get("unexplained_by_rule") or {}
    lines += [
        f"Problems on records the simulator left clean: **{results['unexplained_problems']:,}**"
        + (f" ({', '.join(f'{rule} {n}' for rule, n in by_rule.items())})" if by_rule else "")
        + ".",
        "",
        source_line("quality_detection", results, runs=f"1 run; {_scope(results)}"),
    ]
    return "\n".join(lines)


def render_quality_clean(results: dict) -> str:
    rows = [
        ["open problems", f"**{results['open_problems']:,}**"],
        [
            "scores",
            f"{results['scores']:,}, {results['scores_below_100']:,} below 100 (lowest {results['lowest_score']:g})",
        ],
    ]
    rows += [[f"· {rule}", n] for rule, n in (results.get("open_problems_by_rule") or {}).items()]
    return "\n".join(
        [
            table(["clean county", "result"], rows),
            "",
            source_line("quality_clean", results, runs=f"1 run; {_scope(results)}"),
        ]
    )


# ---------------------------------------------------------------- indicators


def _amount(value: float) -> str:
    return f"{value:,.2f}" if value != int(value) else f"{int(value):,}"


def render_indicator_truth(results: dict) -> str:
    """Each proven indicator's keys (period × place × numerator/denominator) against the simulator's truth."""
    rows = [
        [
            f"{code} {s['name']}",
            f"{s['keys']:,}",
            f"{s['equal']:,}",
            f"{s['under']:,}" + (f" ({s['not_carried']:,})" if s.get("not_carried") else ""),
            f"**{s['over']:,}**",
            f"{_amount(s.get('county_numerator_truth', 0))} / {_amount(s.get('county_numerator_mart', 0))}",
        ]
        for code, s in results["indicators"].items()
    ]
    lines = [
        table(
            [
                "indicator",
                "keys",
                "equal",
                "below truth (of which not carried)",
                "above truth",
                "county numerator: truth / mart",
            ],
            rows,
        ),
        "",
    ]
    by_institution: dict[str, list[str]] = {}
    for part, institutions in results.get("not_carried", {}).items():
        for institution in institutions:
            by_institution.setdefault(institution, []).append(part)
    for institution, parts in by_institution.items():
        lines.append(
            f"Not carried: {institution}'s source delivers none of {', '.join(parts)} over the whole run (below "
            "the truth by exactly that, at its own keys and the county's)."
        )
    if "keys_unexplained" in results:
        lines.append(f"Keys that differ for any other reason: **{results['keys_unexplained']:,}**.")
    for title, missing in (("门急诊 visits", results["missing_visits"]), ("admissions", results["missing_admissions"])):
        reasons = ", ".join(f"{why}: {n:,}" for why, n in sorted(missing.items(), key=lambda m: -m[1])) or "none"
        lines.append(f"True {title} the mart does not count, by the reason the platform records: {reasons}.")
    scope = f"{results['scale']} county, {results['residents']:,} residents, {results['days']}, dirt {results['dirt']}"
    return "\n".join([*lines, "", source_line(results["name"], results, runs=f"1 run; {scope}")])


TRANSFORM_RUNS = {"year": "a county year, whole build", "next_day": "the same + one more day"}


def render_transform(results: dict) -> str:
    """The dbt build's time per run (a county year, then one more day) and where the year's build went."""
    runs = results["runs"]
    rows = [
        [
            TRANSFORM_RUNS.get(name, name),
            run["days"],
            f"{run['rows']['marts.fct_encounter']:,}",
            f"{run['rows']['marts.fct_indicator_value']:,}",
            run["nodes"],
            f"**{measured(run['seconds'])}**",
            f"≤ {run['goal_seconds']} s {ok(run['seconds'] <= run['goal_seconds'])}",
        ]
        for name, run in runs.items()
    ]
    lines = [table(["run", "days", "encounters", "indicator values", "dbt nodes", "build", "goal"], rows), ""]
    for name, run in runs.items():
        slowest = ", ".join(f"`{n['node']}` {n['seconds']:.0f} s" for n in run["slowest"][:8])
        kinds = ", ".join(f"{kind} {seconds:,.0f} s" for kind, seconds in run["seconds_by_kind"].items())
        lines.append(f"- {TRANSFORM_RUNS.get(name, name)}: nodes' own time {kinds}; slowest: {slowest}.")
    first = next(iter(runs.values()))
    when = first["measured_at"][:16].replace("T", " ")
    return "\n".join([*lines, "", source_line("transform", first, when=when, runs=f"1 run each of {len(runs)}")])


# ---------------------------------------------------------------- serving

API_SCENARIOS = {
    "patient_summary": "patient summary `GET /patients/{id}`",
    "fhir_patient_search": "FHIR `Patient?identifier=`",
}


def render_api(results: dict) -> str:
    target = results["target_p95_ms"]
    rows = [
        [
            API_SCENARIOS.get(name, name),
            f"{s['requests']:,}",
            measured(s["throughput_rps"], ""),
            measured(s["p50_ms"], ""),
            measured(s["p95_ms"], ""),
            measured(s["p99_ms"], ""),
            f"{s['error_rate']:.2%}".replace("%", " %"),
            ok(median(s["p95_ms"]) <= target),
        ]
        for name, s in results["scenarios"].items()
    ]
    return "\n".join(
        [
            table(
                ["scenario", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", f"p95 ≤ {target} ms"], rows
            ),
            "",
            f"{results['clients']} concurrent connections, {results['seconds_per_scenario']:g} s per scenario, load "
            "tool "
            f"{results['load_tool']}, {results['api_workers']} API workers, {results['residents_in_warehouse']:,} "
            "residents in the warehouse.",
            "",
            source_line("api", results),
        ]
    )


def render_dashboards(results: dict) -> str:
    target = results["target_warm_s"]
    rows = []
    for d in results["dashboards"]:
        warm = d.get("warm_s")  # a spread, when a run records one
        cell = measured(warm) if is_spread(warm) else f"{d['warm_median_s']:.2f} s (max {d['warm_max_s']:.2f})"
        rows.append(
            [
                d["dashboard"],
                d["charts"],
                measured(d["cold_s"], fmt="{:.2f}"),
                cell,
                ok(median(warm) <= target if is_spread(warm) else d["warm_median_s"] <= target),
            ]
        )
    within = sum(r[-1] == "✔" for r in rows)
    return "\n".join(
        [
            table(["看板 dashboard", "charts", "first open", "warm: median (max)", f"warm ≤ {target:g} s"], rows),
            "",
            f"{within} of {len(rows)} open warm within {target:g} s (median). Warm loads per dashboard: "
            f"{results.get('warm_loads', 'not recorded (`--repeat` defaults to 3)')}; "
            f"first open: 1 load. Scale: {results['scale']}.",
            "",
            source_line("dashboards", results, runs="1 run of the bench"),
        ]
    )


# ---------------------------------------------------------------- terminology

TERMINOLOGY_TYPES = {
    "综合医院": "人民医院",
    "中医医院": "中医院",
    "民营综合医院": "民营",
    "妇幼保健院": "妇幼",
    "乡镇卫生院": "卫生院",
    "村卫生室": "村卫生室",
}
LEAD_HOSPITAL = "综合医院"


def render_terminology(results: dict) -> str:
    labels = list(results)
    keys = ("rows", "rows_mapped_now", "rows_mapped_exact", "unmapped_icd_like_codes")
    totals = {lb: {k: sum(r[k] for r in results[lb]["by_source"]) for k in keys} for lb in labels}
    by_type = {lb: {r["org_type"]: r for r in results[lb]["by_org_type"]} for lb in labels}

    def per_type(lb: str, field: str) -> str:
        return " / ".join(f"{by_type[lb][t][field]:,}" if t in by_type[lb] else "–" for t in TERMINOLOGY_TYPES)

    def lead(lb: str, part: str, whole: str) -> str:
        r = by_type[lb].get(LEAD_HOSPITAL)
        return pct(r[part], r[whole]) if r else "–"

    village = {lb: by_type[lb].get("村卫生室") for lb in labels}
    rows = [
        ["ICD-10-coded diagnosis rows"] + [f"{totals[lb]['rows']:,}" for lb in labels],
        ["distinct codes sent, " + " / ".join(TERMINOLOGY_TYPES.values())] + [per_type(lb, "codes") for lb in labels],
        ["rows mapped automatically now"] + [pct(totals[lb]["rows_mapped_now"], totals[lb]["rows"]) for lb in labels],
        ["rows mapped by exact concept-map key only (before); 人民医院"]
        + [
            f"{pct(totals[lb]['rows_mapped_exact'], totals[lb]['rows'])}; {lead(lb, 'rows_mapped_exact', 'rows')}"
            for lb in labels
        ],
        ["distinct codes mapped now, 人民医院"] + [lead(lb, "codes_mapped_now", "codes") for lb in labels],
        ["unmapped codes that look like ICD-10"] + [f"{totals[lb]['unmapped_icd_like_codes']:,}" for lb in labels],
        ["国临版 extension codes kept exact, " + " / ".join(TERMINOLOGY_TYPES.values())]
        + [per_type(lb, "extension_codes") for lb in labels],
        ["村卫生室: distinct codes sent, of them local (unmapped); its rows unmapped"]
        + [
            f"{v['codes']:,}, {v['unmapped_local_codes']:,}; {pct(v['rows'] - v['rows_mapped_now'], v['rows'])}"
            if v
            else "–"
            for v in village.values()
        ],
        ["worklist: institutions with unmapped codes (of those with diagnoses); (institution, code) entries"]
        + [
            f"{len(results[lb]['worklist_by_institution']):,} (of {results[lb]['institutions_with_diagnoses']:,}); "
            f"{sum(w['unmapped_codes'] for w in results[lb]['worklist_by_institution']):,}"
            for lb in labels
        ],
        ["diagnoses sent as text only (村卫生室), mapped by name"]
        + [
            f"{results[lb]['text_only_rows']:,}, {pct(results[lb]['text_only_mapped'], results[lb]['text_only_rows'])}"
            for lb in labels
        ],
        ["`./drc silver`, whole month from bronze"]
        + [
            measured(results[lb]["silver_seconds"]) if results[lb].get("silver_seconds") is not None else "–"
            for lb in labels
        ],
    ]
    if len(labels) == 2 and all(results[lb].get("silver_seconds") for lb in labels):
        a, b = (median(results[lb]["silver_seconds"]) for lb in labels)
        rows.append(["silver time, " + " against ".join(reversed(labels)), "", pct(abs(b - a), a) + " apart"])
    first = results[labels[0]]
    return "\n".join(
        [
            table(["", *labels], rows),
            "",
            source_line(
                "terminology",
                first,
                when=", ".join(f"{lb} {_when(results[lb])}" for lb in labels),
                runs="1 run each; " + "; ".join(f"{lb}: {results[lb]['county']}" for lb in labels),
            ),
        ]
    )


# ---------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    results: str  # bench/results/<results>.json
    doc: str  # docs/<doc>
    render: Callable[[dict], str]


BLOCKS: dict[str, Block] = {
    "empi_independent": Block("empi_independent", "docs/empi.md", render_empi_independent),
    "empi_county": Block("empi", "docs/empi.md", render_empi_county),
    "ingestion": Block("ingestion", "docs/onboarding.md", render_ingestion),
    "silver": Block("silver", "docs/standardisation.md", render_silver),
    "simulate_county": Block("simulate_county", "docs/simulator.md", render_simulate_county),
    "quality": Block("quality", "docs/quality.md", render_quality),
    "quality_detection": Block("quality_detection", "docs/quality.md", render_quality_detection),
    "quality_clean": Block("quality_clean", "docs/quality.md", render_quality_clean),
    "indicator_truth": Block("indicator_truth", "docs/warehouse.md", render_indicator_truth),
    "indicator_truth_clean": Block("indicator_truth_clean", "docs/warehouse.md", render_indicator_truth),
    "transform": Block("transform", "docs/warehouse.md", render_transform),
    "api": Block("api", "docs/api.md", render_api),
    "dashboards": Block("dashboards", "docs/dashboards.md", render_dashboards),
    "terminology": Block("terminology", "docs/terminology.md", render_terminology),
}


def load(results: str, results_dir: Path = RESULTS) -> dict:
    return json.loads((results_dir / f"{results}.json").read_text(encoding="utf-8"))


def render(name: str, results_dir: Path = RESULTS) -> str:
    """The body between a block's markers: blank line, the generated text, blank line."""
    block = BLOCKS[name]
    return "\n" + block.render(load(block.results, results_dir)).strip("\n") + "\n\n"


def marker_errors(text: str) -> list[str]:
    """Every opening marker closed by its own name before the next opens; no stray closing marker; no name twice."""
    errors, open_name, seen = [], None, set()
    for m in MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if not closing:
            if open_name:
                errors.append(f"line {line}: bench:{name} opens inside bench:{open_name}")
            if name in seen:
                errors.append(f"line {line}: bench:{name} appears twice")
            if name not in BLOCKS:
                errors.append(f"line {line}: bench:{name} is not a block bench/report.py renders")
            seen.add(name)
            open_name = name
        elif open_name != name:
            errors.append(f"line {line}: /bench:{name} closes " + (f"bench:{open_name}" if open_name else "nothing"))
        else:
            open_name = None
    if open_name:
        errors.append(f"bench:{open_name} is never closed")
    return errors


def blocks_in(text: str) -> dict[str, tuple[int, int]]:
    """name → (start, end) of the body between its markers (the text must be well-formed)."""
    spans, start = {}, {}
    for m in MARKER.finditer(text):
        if m.group(1):
            spans[m.group(2)] = (start.pop(m.group(2)), m.start())
        else:
            start[m.group(2)] = m.end()
    return spans


def update(text: str, doc: str, results_dir: Path = RESULTS) -> tuple[str, list[str]]:
    """The doc with every block rendered afresh, and the problems found (bad markers, blocks missing)."""
    errors = [f"{doc}: {e}" for e in marker_errors(text)]
    if errors:
        return text, errors
    spans = blocks_in(text)
    errors += [
        f"{doc}: has no bench:{name} block (add `<!-- bench:{name} -->` … `<!-- /bench:{name} -->`)"
        for name, b in BLOCKS.items()
        if b.doc == doc and name not in spans
    ]
    errors += [f"{doc}: bench:{name} belongs in {BLOCKS[name].doc}" for name in spans if BLOCKS[name].doc != doc]
    for name, (start, end) in sorted(spans.items(), key=lambda kv: -kv[1][0]):
        text = text[:start] + render(name, results_dir) + text[end:]
    return text, errors


def docs_with_blocks(root: Path = ROOT) -> list[str]:
    """The docs BLOCKS names, plus any doc or README that has a marker."""
    docs = {b.doc for b in BLOCKS.values()}
    for path in [*sorted((root / "docs").glob("**/*.md")), root / "README.md"]:
        if path.exists() and MARKER.search(path.read_text(encoding="utf-8")):
            docs.add(str(path.relative_to(root)))
    return sorted(docs)


def run(check: bool, root: Path = ROOT) -> int:
    """Rewrite (or with ``check`` only compare) every doc's blocks; 0 when all is well."""
    problems, stale = [], []
    for doc in docs_with_blocks(root):
        path = root / doc
        text = path.read_text(encoding="utf-8")
        new, errors = update(text, doc, root / "bench" / "results")
        problems += errors
        if new != text:
            stale.append(doc)
            if not check:
                path.write_text(new, encoding="utf-8")
    for p in problems:
        print(f"✘ {p}", file=sys.stderr)
    if check:
        for doc in stale:
            print(f"✘ {doc}: figures differ from bench/results/ (run ./drc docs-figures)", file=sys.stderr)
        if not (stale or problems):
            print(f"✔ {len(BLOCKS)} figure blocks up to date with bench/results/", file=sys.stderr)
        return 1 if stale or problems else 0
    for doc in stale:
        print(f"  rewrote {doc}", file=sys.stderr)
    if not stale:
        print("  every figure block was already up to date", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a doc is out of date")
    return run(parser.parse_args(argv).check)


if __name__ == "__main__":
    sys.exit(main())
