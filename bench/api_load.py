"""Load on the running lookup API: 50 concurrent connections on loopback, bounded in time, per scenario.

Load tool: wrk (C, Debian package; one thread), closed loop — each connection sends its next request when the
last one answered — with a Lua script that spreads requests over the residents seen at a clinician's
institution and reports the latency percentiles and non-200 answers. wrk, the API (2 uvicorn workers) and
PostgreSQL share the machine's 2 cores. Scenarios: the patient summary (GET /patients/{id}) and the FHIR Patient
search by identifier. Results: bench/results/api.json and api.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from api.security import issue_token
from bench.machine import describe, machine
from core.db import warehouse_engine

RESULTS = Path(__file__).parent / "results"
TARGET_P95_MS = 100
# wrk script: round-robin over the paths file; at the end print one JSON line with what we report.
WRK_SCRIPT = """
local paths, i, errors = {}, 0, 0
for line in io.lines(os.getenv("DRC_BENCH_PATHS")) do paths[#paths + 1] = line end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {["Authorization"] = "Bearer " .. os.getenv("DRC_BENCH_TOKEN")})
end
response = function(status) if status ~= 200 then errors = errors + 1 end end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p95_ms": %.2f, ' ..
    '"p99_ms": %.2f, "max_ms": %.2f, "socket_errors": %d, "non_200": %d}\\n', summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect + e.read + e.write + e.timeout,
    e.status))
end
"""


def _residents(limit: int = 2000) -> tuple[str, list[str], int]:
    """The institution with the most residents seen, those residents, and how many residents there are."""
    with warehouse_engine().connect() as conn:
        org = conn.execute(
            sa.text(
                "SELECT org_code FROM marts.fct_encounter WHERE master_id IS NOT NULL GROUP BY 1 "
                "ORDER BY count(DISTINCT master_id) DESC LIMIT 1"
            )
        ).scalar_one()
        ids = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT master_id FROM marts.fct_encounter WHERE org_code = :o "
                    "AND master_id IS NOT NULL LIMIT :n"
                ),
                {"o": org, "n": limit},
            )
            .scalars()
            .all()
        )
        patients = conn.execute(sa.text("SELECT count(*) FROM marts.dim_patient")).scalar_one()
    return org, list(ids), patients


def _wrk(base: str, token: str, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: run ./drc setup (it installs the Debian package)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "paths.txt").write_text("\n".join(paths) + "\n")
        (Path(tmp) / "load.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "DRC_BENCH_PATHS": str(Path(tmp) / "paths.txt"), "DRC_BENCH_TOKEN": token}
        out = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{clients}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                str(Path(tmp) / "load.lua"),
                base,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    rps = raw["requests"] / raw["seconds"]
    # Little's law: in a closed loop the mean latency is clients / throughput. A p99 below that mean means some
    # connections waited the whole run unanswered (wrk's histogram only holds answered requests).
    mean_ms = clients / rps * 1000
    return {
        "requests": raw["requests"],
        "throughput_rps": round(rps, 1),
        "littles_law_mean_ms": round(mean_ms, 1),
        "starved_connections_suspected": raw["p99_ms"] < mean_ms,
        "p50_ms": round(raw["p50_ms"], 1),
        "p95_ms": round(raw["p95_ms"], 1),
        "p99_ms": round(raw["p99_ms"], 1),
        "max_ms": round(raw["max_ms"], 1),
        "error_rate": round((raw["non_200"] + raw["socket_errors"]) / max(1, raw["requests"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)
    measured_on = machine()
    base = f"http://127.0.0.1:{os.environ.get('DRC_API_PORT', '8000')}"
    org, residents, patients = _residents()
    token = issue_token(f"doc_{org}", hours=1, issued_by="bench")[0]
    scenarios = {
        "patient_summary": [f"/patients/{m}" for m in residents],
        "fhir_patient_search": [f"/fhir/Patient?identifier=urn:xydrc:master-id|{m}" for m in residents],
    }
    results = {}
    for name, paths in scenarios.items():
        print(f"  {name}: {args.clients} clients for {args.seconds:g} s over {len(paths)} residents …", flush=True)
        results[name] = _wrk(base, token, paths, args.clients, args.seconds)
        print(f"    {results[name]}", flush=True)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": measured_on,
        "cpus": os.cpu_count(),
        "residents_in_warehouse": patients,
        "clients": args.clients,
        "seconds_per_scenario": args.seconds,
        "target_p95_ms": TARGET_P95_MS,
        "api_workers": 2,
        "load_tool": "wrk 4.1 (1 thread, closed loop)",
        "scenarios": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Lookup API under load",
        "",
        f"{args.clients} concurrent connections (wrk, closed loop), {args.seconds:g} s per scenario, loopback, "
        f"{describe(measured_on)}, shared by wrk, the API (2 uvicorn workers) and PostgreSQL; {patients:,} "
        f"residents in the warehouse. Command: `./drc bench-api`. Target: p95 ≤ {TARGET_P95_MS} ms, error "
        "rate 0.",
        "",
        "| scenario | requests | req/s | p50 ms | p95 ms | p99 ms | errors | p95 target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['requests']:,} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['p99_ms']} | {r['error_rate']:.2%} | {'yes' if r['p95_ms'] <= TARGET_P95_MS else 'no'} |"
        )
    (RESULTS / "api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
