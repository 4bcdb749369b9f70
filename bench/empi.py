"""Benchmark: EMPI matching quality and speed, ours and Splink's side by side on the same records.

    ./drc bench-empi                        # county scale: 650,000 residents
    ./drc bench-empi --residents 100000     # smaller, e.g. to try a threshold change

The workload is the county's person records as the member systems hold them: the simulator's population
(households, twins, same-name-same-birthday pairs) registered at the systems a resident of that age uses in
a year (public health archive, 云HIS, the hospitals), each registration drawn through the simulator's own
front-desk dirt (``simulator.dirt.recorded_identity``: homophones, typos, traditional characters, missing /
legacy / mistyped IDs, swapped dates, changed phones, address variants). The truth is kept aside for scoring.

Measured, on this machine:
 1. **ours, full link**: every record through ``spark_jobs.empi.identity.run_empi(full=True)`` on a bench lake;
 2. **ours, one day**: a day's new registrations matched incrementally against the linked population;
 3. **Splink** (DuckDB backend, bench virtualenv only) on the same records: train, predict, cluster.
Both are scored pairwise (precision, recall, F1) against the truth. Writes bench/results/empi.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from bench.machine import describe, machine

RESULTS = Path(__file__).parent / "results"
REFERENCE_DAY = date(2026, 11, 1)
# Chance that a resident is registered at a system in a year (by the simulator's visit mix): nearly everyone
# has a public-health archive, most visit the 云HIS clinics, fewer the hospitals.
REGISTRATION = {
    "public_health": 0.85,
    "cloud_his": 0.55,
    "rmyy_his": 0.22,
    "zyy_his": 0.10,
    "private_api": 0.06,
    "fy_files": 0.04,
}
RE_REGISTRATION = 0.03  # a second local id at the same system (lost card, new registration)
DAY_SHARE = 0.004  # the held-out day: new registrations of one day


def build_records(residents: int, seed: int) -> tuple[list[dict], dict[str, int]]:
    """(person records as silver holds them, record_id -> true resident id)."""
    from simulator.dirt import IdentityDirt, recorded_identity
    from simulator.world import build_institutions, generate_population

    people = generate_population(seed, residents, build_institutions(), REFERENCE_DAY)
    rng = random.Random(f"bench-empi:{seed}")
    dirt = IdentityDirt()
    records, truth = [], {}
    counters = dict.fromkeys(REGISTRATION, 0)
    for person in people:
        systems = [
            s
            for s, p in REGISTRATION.items()
            if rng.random() < p
            and (s != "fy_files" or person.sex == 2 or REFERENCE_DAY.year - person.birth_date.year < 7)
        ]
        systems = systems or ["cloud_his"]
        systems += [s for s in systems if rng.random() < RE_REGISTRATION]
        for system in systems:
            counters[system] += 1
            local_id = f"{system[:2].upper()}{counters[system]:08d}"
            seen = recorded_identity(rng, person, dirt)
            record_id = f"{system}|{local_id}"
            records.append(
                {
                    "record_id": record_id,
                    "source_system": system,
                    "local_patient_id": local_id,
                    "name": seen.name,
                    "sex_code": str(seen.sex),
                    "birth_date": seen.birth_date,
                    "id_number": seen.id_number,
                    "phone": seen.phone,
                    "address": seen.address,
                    "source_updated_at": datetime(2026, 1, 1) + timedelta(minutes=rng.randrange(400_000)),
                }
            )
            truth[record_id] = person.resident_id
    return records, truth


def _write_silver_person(spark, rows: list[dict], mode: str) -> None:
    import pyarrow as pa

    from spark_jobs.standardize import silver_path

    table = pa.Table.from_pylist(rows)
    df = spark.createDataFrame(table.to_pandas()).selectExpr(
        "source_system",
        "local_patient_id",
        "name",
        "sex_code",
        "CAST(birth_date AS date) AS birth_date",
        "id_number",
        "phone",
        "address",
        "CAST(source_updated_at AS timestamp) AS source_updated_at",
        "CAST(NULL AS string) AS master_id",
    )
    df.write.format("delta").mode(mode).save(silver_path("person"))


def run_ours(records: list[dict], day: list[dict], truth: dict[str, int], lake: Path) -> dict:
    os.environ["DRC_LAKE_ROOT"] = str(lake)
    # the same memory bound as the peer's DuckDB (SPLINK_MEMORY_LIMIT in splink_runner.py, 8GB by default)
    os.environ.setdefault("DRC_SPARK_DRIVER_MEMORY", "8g")
    from core.settings import get_settings

    get_settings.cache_clear()
    from core.spark import get_spark, read_delta
    from evaluation.empi import pairwise_quality
    from spark_jobs.empi import identity

    spark = get_spark()
    shutil.rmtree(lake, ignore_errors=True)
    _write_silver_person(spark, records, "overwrite")
    full = identity.run_empi(spark, full=True, progress=_step)
    print(f"  ours, full link: {full.records:,} records → {full.masters:,} residents in {full.seconds} s", flush=True)
    import pandas as pd

    truth_df = spark.createDataFrame(
        pd.DataFrame(
            {
                "record_id": list(truth),  # via Arrow: 1M+ rows
                "resident_id": [str(v) for v in truth.values()],
            }
        )
    )
    registry = read_delta(spark, identity.empi_path("records"))
    quality_full = pairwise_quality(registry, truth_df)  # the history's records only, before the day
    _write_silver_person(spark, day, "append")
    incremental = identity.run_empi(spark, progress=_step)
    print(f"  ours, one day: {incremental.matched:,} new records matched in {incremental.seconds} s", flush=True)
    registry = read_delta(spark, identity.empi_path("records"))
    quality = pairwise_quality(registry, truth_df)
    review = read_delta(spark, identity.empi_path("review_queue")).count()
    return {
        "full_link_seconds": full.seconds,
        "day_seconds": incremental.seconds,
        "day_records": incremental.matched,
        "residents_found": incremental.masters,
        "review_queue": review,
        "review_share": round(review / max(quality["records"], 1), 5),
        "after_full_link": quality_full,
        **quality,
    }


def _step(done: str) -> None:
    print(f"    {done}", flush=True)


def run_splink(records: list[dict], truth: dict[str, int], work: Path) -> dict:
    """Splink in the bench virtualenv (it is not a platform dependency), scored like ours."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    python = os.environ.get("DRC_BENCH_PYTHON")
    if not python:
        return {"skipped": "no bench virtualenv (./drc bench-empi creates it)"}
    source, clusters = work / "splink_input.parquet", work / "splink_clusters.parquet"
    columns = ("record_id", "source_system", "name", "sex_code", "birth_date", "id_number", "phone", "address")
    pq.write_table(pa.Table.from_pylist([{c: r[c] for c in columns} for r in records]), source)
    runner = Path(__file__).with_name("splink_runner.py")
    started = time.perf_counter()
    subprocess.run([python, str(runner), str(source), str(clusters)], check=True)
    seconds = round(time.perf_counter() - started, 1)
    assigned = pq.read_table(clusters).to_pylist()
    from evaluation.empi import pairwise

    return {"seconds": seconds, **pairwise({r["record_id"]: r["cluster_id"] for r in assigned}, truth)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=650_000)
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--work", default="/tmp/xydrc-bench-empi", help="scratch folder (bench lake, files)")
    parser.add_argument("--skip-splink", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, truth = build_records(args.residents, args.seed)
    rng = random.Random(args.seed)
    day_ids = set(rng.sample(range(len(records)), int(len(records) * DAY_SHARE)))
    history = [r for i, r in enumerate(records) if i not in day_ids]
    day = [r for i, r in enumerate(records) if i in day_ids]
    print(
        f"  {args.residents:,} residents → {len(records):,} person records "
        f"({time.perf_counter() - started:.0f} s to generate); one day = {len(day):,} records",
        flush=True,
    )
    result = {
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "residents": args.residents,
        "records": len(records),
        "ours": run_ours(history, day, truth, work / "lake"),
        "splink": {"skipped": "--skip-splink"},
    }
    _save(result)  # ours is kept even if the peer fails
    if not args.skip_splink:
        from core.spark import get_spark

        get_spark().stop()  # the peer gets the machine to itself
        try:
            result["splink"] = run_splink(records, truth, work)
        except subprocess.CalledProcessError as exc:
            result["splink"] = {"failed": f"exit {exc.returncode} (a negative code is the signal, -9: out of memory)"}
        _save(result)
    print(_table(result))
    return result


def _save(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "empi.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _table(r: dict) -> str:
    o, s = r["ours"], r["splink"]
    lines = [
        f"EMPI on {r['records']:,} person records of {r['residents']:,} residents ({describe(r['machine'])})",
        "| measure | ours | Splink (DuckDB) | goal |",
        "|---|---|---|---|",
        f"| precision | {o['precision']} | {s.get('precision', '—')} | ≥ 0.999 |",
        f"| recall | {o['recall']} | {s.get('recall', '—')} | ≥ 0.98 |",
        f"| F1 | {o['f1']} | {s.get('f1', '—')} | beat Splink |",
        f"| review queue | {o['review_queue']:,} ({o['review_share']:.2%}) | — | ≤ 2% |",
        f"| full link | {o['full_link_seconds']} s | {s.get('seconds', '—')} s | ≤ 1800 s, within Splink's |",
        f"| one day ({o['day_records']:,} records), incremental | {o['day_seconds']} s | — | ≤ 120 s |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
