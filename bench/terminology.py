"""Benchmark: how much of a county's diagnosis coding the platform maps automatically.

    ./drc bench-terminology --label long_tail --silver-seconds S   # after building a county (below)

Reads silver ``diagnosis`` of the lake now and counts, per source system and per institution type, the
ICD-10-coded diagnosis rows (silver filled ``diagnosis_code`` or flagged it ``UNMAPPED``; 中医 病名/证候 rows are
out of scope, diagnoses sent as text only are counted apart) and the distinct codes a member system sent, and
which share of them silver mapped to an ICD-10 国家临床版2.0 code:

- **now**: ``diagnosis_code`` is set (concept map as sent, normalised or canonical dialect, any WHO code or
  valid 国临版 extension code; docs/terminology.md);
- **exact map only**: the code as sent (trimmed, or trimmed and upper-cased, as the mappings transform it) is
  a key of the source's concept map: the rule silver had before the full classification, dialect
  normalisation and extension codes (commit 19070df).

Unmapped codes are split into ICD-10-like (the canonical form parses as ICD-10, but is no WHO code or valid
extension) and local (a vendor's or tenant's own code: a concept mapping is the only way). The terminology
worklist is counted per institution (distinct unmapped codes). Each ``--label`` is one county (e.g.
simulated with the long tail of diagnoses, and with ``DRC_SIM_DIAGNOSIS_TAIL=off``); the results file keeps
every label side by side, with the silver time of that county given by ``--silver-seconds`` (measured as
``time ./drc silver`` on the county's bronze). Recipe for a county month:

    ./drc reset && ./drc setup
    DRC_SIM_SCALE=county ./drc simulate --reset --until 2026-11-30 && ./drc ingest
    time ./drc silver
    ./drc bench-terminology --label long_tail --silver-seconds <the time>
    # then the same with DRC_SIM_DIAGNOSIS_TAIL=off and --label no_tail

Writes bench/results/terminology.json / .md.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.machine import describe, machine

RESULTS = Path(__file__).parent / "results"
TIME_TOLERANCE = 0.10  # standardisation time may grow by at most 10 % with realistic coding variety


def _exact_map_keys() -> dict[str, list[str]]:
    """Per source: the keys of every concept map its diagnosis-coded columns use."""
    from spark_jobs.model import concept_map, mapped_sources, source_mapping, table_column_specs

    keys: dict[str, set[str]] = {}
    for source in mapped_sources():
        for table in source_mapping(source).get("tables", []):
            for column, spec in table_column_specs(table):
                if column.endswith("diagnosis_code") and "concept_map" in spec:
                    keys.setdefault(source, set()).update(concept_map(source, spec["concept_map"]))
    return {source: sorted(codes) for source, codes in keys.items()}


def measure(spark: Any) -> dict[str, Any]:
    """Mapped shares per source and institution type, and the worklist per institution, from silver."""
    from pyspark.sql import functions as F

    from core.organizations import organizations
    from core.settings import get_settings
    from spark_jobs.codes import icd10_canonical_col

    diagnoses = spark.read.format("delta").load(get_settings().lake_path("silver", "diagnosis"))
    keys = spark.createDataFrame(
        [(s, k) for s, codes in _exact_map_keys().items() for k in codes], "source_system string, map_key string"
    )
    org_types = spark.createDataFrame(
        [(code, row["org_type"]) for code, row in organizations().items()], "org_code string, org_type string"
    )
    sent = F.trim(F.col("diagnosis_source_code"))
    # in scope: rows whose ICD-10 column silver filled or flagged unmapped (a 中医 病名 row codes GB/T 15657 instead)
    unmapped = F.exists("dq_flags", lambda flag: flag.startswith("UNMAPPED:diagnosis_code:"))
    icd_rows = diagnoses.where(F.col("diagnosis_code").isNotNull() | unmapped)
    has_code = F.col("diagnosis_source_code").isNotNull() & (sent != "")
    coded = icd_rows.where(has_code).select("source_system", "org_code", sent.alias("code"), "diagnosis_code")
    text_only = (
        icd_rows.where(~has_code)
        .agg(F.count("*").alias("rows"), F.sum(F.col("diagnosis_code").isNotNull().cast("long")).alias("mapped"))
        .first()
    )
    exact = keys.groupBy("source_system").agg(F.collect_set("map_key").alias("map_keys"))
    coded = (
        coded.join(F.broadcast(exact), "source_system", "left")
        .join(F.broadcast(org_types), "org_code", "left")
        .withColumn("mapped_now", F.col("diagnosis_code").isNotNull())
        .withColumn("icd_like", icd10_canonical_col(F.col("code")).isNotNull())
        .withColumn(
            "mapped_exact",
            F.coalesce(
                F.array_contains("map_keys", F.col("code")) | F.array_contains("map_keys", F.upper("code")),
                F.lit(False),
            ),
        )
        .drop("map_keys")
        .cache()
    )

    def shares(group: str) -> list[dict[str, Any]]:
        rows = (
            coded.groupBy(group)
            .agg(
                F.count("*").alias("rows"),
                F.sum(F.col("mapped_now").cast("long")).alias("rows_mapped_now"),
                F.sum(F.col("mapped_exact").cast("long")).alias("rows_mapped_exact"),
                F.countDistinct("code").alias("codes"),
                F.countDistinct(F.when(F.col("mapped_now"), F.col("code"))).alias("codes_mapped_now"),
                F.countDistinct(F.when(F.col("mapped_exact"), F.col("code"))).alias("codes_mapped_exact"),
                F.countDistinct(F.when(~F.col("mapped_now") & F.col("icd_like"), F.col("code"))).alias(
                    "unmapped_icd_like_codes"
                ),
                F.countDistinct(F.when(~F.col("mapped_now") & ~F.col("icd_like"), F.col("code"))).alias(
                    "unmapped_local_codes"
                ),
                F.countDistinct("diagnosis_code").alias("standard_codes"),
                F.countDistinct(F.when(F.col("diagnosis_code").rlike("x[0-9]{3}$"), F.col("diagnosis_code"))).alias(
                    "extension_codes"
                ),
            )
            .orderBy(group)
            .collect()
        )
        return [r.asDict() for r in rows]

    worklist = (
        coded.where(~F.col("mapped_now"))
        .groupBy("org_code", "org_type")
        .agg(F.countDistinct("code").alias("unmapped_codes"), F.count("*").alias("unmapped_rows"))
        .orderBy(F.desc("unmapped_codes"))
        .collect()
    )
    institutions = coded.select("org_code").distinct().count()
    by_source, by_org_type = shares("source_system"), shares("org_type")
    coded.unpersist()
    return {
        "by_source": by_source,
        "by_org_type": by_org_type,
        "text_only_rows": text_only["rows"],
        "text_only_mapped": text_only["mapped"] or 0,
        "institutions_with_diagnoses": institutions,
        "worklist_by_institution": [r.asDict() for r in worklist],
    }


def _totals(section: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("rows", "rows_mapped_now", "rows_mapped_exact")
    return {k: sum(r[k] for r in section) for k in keys}


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _table(results: dict[str, Any]) -> str:
    lines = ["# Diagnosis codes mapped automatically", ""]
    for label, r in results.items():
        totals = _totals(r["by_source"])
        lines += [
            f"## {label}: {r['county']}",
            "",
            f"Measured {r['measured_at']} on {describe(r['machine'])}. Silver (`time ./drc silver`, whole "
            f"history): {r['silver_seconds'] or '–'} s. Coded diagnosis rows {totals['rows']:,} (plus "
            f"{r['text_only_rows']:,} sent as text only, {_share(r['text_only_mapped'], r['text_only_rows'])} of "
            f"them mapped by name); mapped now "
            f"{_share(totals['rows_mapped_now'], totals['rows'])}, by exact concept-map key only "
            f"{_share(totals['rows_mapped_exact'], totals['rows'])}.",
            "",
            "| source / institution type | rows | distinct codes sent | rows mapped now | codes mapped now "
            "| rows mapped, exact key only | codes mapped, exact key only | unmapped codes: ICD-10-like "
            "| unmapped codes: local | standard codes | of them 国临版 extension |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for group, key in (("by_source", "source_system"), ("by_org_type", "org_type")):
            for s in r[group]:
                lines.append(
                    f"| {s[key]} | {s['rows']:,} | {s['codes']:,} | "
                    f"{_share(s['rows_mapped_now'], s['rows'])} | "
                    f"{_share(s['codes_mapped_now'], s['codes'])} | "
                    f"{_share(s['rows_mapped_exact'], s['rows'])} | "
                    f"{_share(s['codes_mapped_exact'], s['codes'])} | {s['unmapped_icd_like_codes']:,} | "
                    f"{s['unmapped_local_codes']:,} | {s['standard_codes']:,} | "
                    f"{s['extension_codes']:,} |"
                )
        worklist = r["worklist_by_institution"]
        lines += [
            "",
            f"Worklist: {len(worklist)} of {r['institutions_with_diagnoses']} institutions have unmapped "
            f"codes; {sum(w['unmapped_codes'] for w in worklist):,} distinct (institution, code) entries.",
            "",
        ]
        if worklist:
            lines += ["| institution | type | unmapped codes | rows |", "|---|---|---|---|"]
            lines += [
                f"| {w['org_code']} | {w['org_type']} | {w['unmapped_codes']:,} | {w['unmapped_rows']:,} |"
                for w in worklist[:10]
            ]
            lines.append("")
    timed = {label: r["silver_seconds"] for label, r in results.items() if r["silver_seconds"]}
    if len(timed) >= 2:
        fastest = min(timed.values())
        lines += ["## Standardisation time", "", "| county | silver seconds | vs the fastest |", "|---|---|---|"]
        lines += [f"| {label} | {s} | {s / fastest:.2f}× |" for label, s in timed.items()]
        met = max(timed.values()) <= fastest * (1 + TIME_TOLERANCE)
        lines += ["", f"Goal: within {TIME_TOLERANCE:.0%} ({'met' if met else 'not met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench-terminology")
    parser.add_argument("--label", required=True, help="name of the county measured, e.g. long_tail, no_tail")
    parser.add_argument("--silver-seconds", type=float, help="`time ./drc silver` of this county, whole history")
    args = parser.parse_args(argv)
    from core.spark import get_spark
    from simulator.config import load_simulator_config

    config = load_simulator_config()
    tail = config.get("activity", {}).get("diagnosis_tail", {}).get("by_org_type")
    result = {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "county": f"{config['scale']} county ({config['residents']:,} residents), diagnosis long tail "
        f"{'on' if tail else 'off'}",
        "silver_seconds": args.silver_seconds,
        **measure(get_spark()),
    }
    path = RESULTS / "terminology.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = result
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, ensure_ascii=False, indent=2, default=str) + "\n")
    (RESULTS / "terminology.md").write_text(_table(results))
    print(_table(results))
    return result
