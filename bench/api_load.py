"""Load on the running lookup API: 50 concurrent clients on loopback, bounded in time, per scenario.

Scenarios: a clinician's patient summary (GET /patients/{id}) and a FHIR Patient search by identifier, each
over the residents seen at the clinician's institution. Closed loop: each client sends its next request when
the last one answered. The load generator shares the machine's 2 cores with the API and PostgreSQL, as a
county server would not — so the figures are an upper bound on latency. Results: bench/results/api.json, .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from api.security import issue_token
from core.db import warehouse_engine

RESULTS = Path(__file__).parent / "results"
TARGET_P95_MS = 100


def _residents(limit: int = 2000) -> tuple[str, list[str], int]:
    """The institution with the most residents seen, and those residents."""
    with warehouse_engine().connect() as conn:
        org = conn.execute(sa.text(
            "SELECT org_code FROM marts.fct_encounter WHERE master_id IS NOT NULL GROUP BY 1 "
            "ORDER BY count(DISTINCT master_id) DESC LIMIT 1")).scalar_one()
        ids = conn.execute(sa.text("SELECT DISTINCT master_id FROM marts.fct_encounter WHERE org_code = :o "
                                   "AND master_id IS NOT NULL LIMIT :n"), {"o": org, "n": limit}).scalars().all()
        patients = conn.execute(sa.text("SELECT count(*) FROM marts.dim_patient")).scalar_one()
    return org, list(ids), patients


async def _client(http: httpx.AsyncClient, paths: list[str], stop: float, latencies: list[float],
                  errors: list[int]) -> None:
    rng = random.Random(id(latencies) ^ len(latencies))
    while time.perf_counter() < stop:
        path = rng.choice(paths)
        started = time.perf_counter()
        try:
            response = await http.get(path)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append((time.perf_counter() - started) * 1000)
        if not ok:
            errors.append(1)


async def _scenario(base: str, headers: dict[str, str], paths: list[str], clients: int,
                    seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        for path in paths[:20]:                      # warm-up: connections, plans, caches
            await http.get(path)
        latencies: list[float] = []
        errors: list[int] = []
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*[_client(http, paths, stop, latencies, errors) for _ in range(clients)])
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "throughput_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "p99_ms": round(cuts[98], 1),
            "error_rate": round(len(errors) / max(1, len(latencies)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{os.environ.get('DRC_API_PORT', '8000')}"
    org, residents, patients = _residents()
    headers = {"Authorization": f"Bearer {issue_token(f'doc_{org}', hours=1, issued_by='bench')[0]}"}
    scenarios = {
        "patient_summary": [f"/patients/{m}" for m in residents],
        "fhir_patient_search": [f"/fhir/Patient?identifier=urn:xydrc:master-id|{m}" for m in residents],
    }
    results = {}
    for name, paths in scenarios.items():
        print(f"  {name}: {args.clients} clients for {args.seconds:g} s over {len(paths)} residents …", flush=True)
        results[name] = asyncio.run(_scenario(base, headers, paths, args.clients, args.seconds))
        print(f"    {results[name]}", flush=True)
    report = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpus": os.cpu_count(), "residents_in_warehouse": patients, "clients": args.clients,
              "seconds_per_scenario": args.seconds, "target_p95_ms": TARGET_P95_MS,
              "api_workers": 2, "scenarios": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    lines = ["# Lookup API under load", "",
             f"{args.clients} concurrent clients, {args.seconds:g} s per scenario, loopback, {os.cpu_count()} "
             f"cores shared by load generator, API (2 uvicorn workers) and PostgreSQL; {patients:,} residents in "
             f"the warehouse. Command: `./drc bench-api`. Target: p95 ≤ {TARGET_P95_MS} ms, error rate 0.", "",
             "| scenario | requests | req/s | p50 ms | p95 ms | p99 ms | errors | p95 target met |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['requests']:,} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['p99_ms']} | {r['error_rate']:.2%} | {'yes' if r['p95_ms'] <= TARGET_P95_MS else 'no'} |")
    (RESULTS / "api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
