"""Benchmark: collection speed into bronze Delta on this machine.

    ./drc bench-ingest                      # bulk load, CDC throughput (binlog, logical decoding), CDC latency
    ./drc bench-ingest --county-day         # plus: collect one simulated county-scale day from every source

Scratch databases and scratch source names only (``bench_*``): the platform's own state is not touched,
except with ``--county-day``, which advances the simulated county by one day and collects it. Writes
bench/results/ingestion.json and prints a table with the issue's goals side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from bench.machine import machine
from core.settings import PROJECT_ROOT, get_settings
from core.spark import get_spark
from ingestion.bronze import bronze_path
from ingestion.monitoring import forget_source
from ingestion.registry import SourceConfig, load_source
from ingestion.runner import collect_all, collect_source
from simulator.connections import mariadb_url, source_pg_url

RESULTS = Path(__file__).parent / "results"
CREDENTIALS = "user: his, password_env: DRC_HIS_DB_PASSWORD"


def _source(directory: Path, body: str) -> SourceConfig:
    path = directory / f"{body.split()[1]}.yaml"
    path.write_text(body, encoding="utf-8")
    source = load_source(path)
    shutil.rmtree(get_settings().lake_path("bronze", source.name), ignore_errors=True)
    forget_source(source.name)
    return source


def _pg(database: str) -> sa.Engine:
    return sa.create_engine(source_pg_url(database), isolation_level="AUTOCOMMIT")


def _mariadb(database: str) -> sa.Engine:
    return sa.create_engine(mariadb_url(database))


def _fresh_pg_database(name: str) -> sa.Engine:
    with _pg("postgres").connect() as conn:
        conn.execute(
            sa.text(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{name}'")
        )
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    return _pg(name)


VISIT_COLUMNS = (
    "id bigint PRIMARY KEY, tenant_id text, patient_id bigint, visit_type text, dept_code text, "
    "dept_name text, doctor_name text, visit_time timestamp, fee numeric(10,2), remark text, "
    "gmt_modified timestamp"
)
VISIT_ROWS = (
    "SELECT g, 'T410182' || lpad((100 + g % 15)::text, 3, '0'), g % 50000, (1 + g % 2)::text, "
    "'K' || (g % 40), '内科' || (g % 40), '医生' || (g % 300), "
    "timestamp '2026-11-01' + (g % 86400) * interval '1 second', (g % 500) / 3.0, NULL, "
    "timestamp '2026-11-01' + (g % 86400) * interval '1 second' FROM generate_series(1, {n}) g"
)


def bench_bulk(directory: Path, rows: int) -> dict:
    """Initial load: a 云HIS-like visit table of ``rows`` rows by parallel JDBC reads into Delta."""
    engine = _fresh_pg_database("bench_bulk")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE TABLE t_visit ({VISIT_COLUMNS})"))
        conn.execute(sa.text(f"INSERT INTO t_visit {VISIT_ROWS.format(n=rows)}"))
    source = _source(
        directory,
        f"""name: bench_bulk
org_code: "410182100"
mode: jdbc_incremental
connection: {{kind: postgresql, database: bench_bulk, schema: public, {CREDENTIALS}}}
strategy: {{parallelism: 2}}
tables: [{{name: t_visit, keys: [id], watermark: gmt_modified, partition_column: id}}]
""",
    )
    started = time.monotonic()
    landed = sum(r.rows for r in collect_source(get_spark(), source))
    seconds = time.monotonic() - started
    return {"rows": landed, "seconds": round(seconds, 1), "rows_per_second": round(landed / seconds)}


def _cdc_source(directory: Path, kind: str) -> tuple[SourceConfig, sa.Engine]:
    if kind == "mysql_binlog":
        with _mariadb("mysql").begin() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS bench_cdc"))
            conn.execute(sa.text("CREATE DATABASE bench_cdc CHARACTER SET utf8mb4"))
        engine = _mariadb("bench_cdc")
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE t_visit (id BIGINT PRIMARY KEY, v VARCHAR(32), n INT, gmt_modified DATETIME(3))")
            )
        connection = f"{{kind: mariadb, database: bench_cdc, {CREDENTIALS}}}"
    else:
        engine = _fresh_pg_database("bench_cdc")
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE t_visit (id bigint PRIMARY KEY, v text, n int, gmt_modified timestamp)"))
        connection = f"{{kind: postgresql, database: bench_cdc, schema: public, {CREDENTIALS}}}"
    source = _source(
        directory,
        f"""name: bench_cdc_{kind}
org_code: "410182100"
mode: {kind}
connection: {connection}
strategy: {{batch_size: 200000}}
tables: [{{name: t_visit, keys: [id], commit_time: gmt_modified}}]
""",
    )
    return source, engine


def bench_cdc_throughput(directory: Path, kind: str, rows: int, rounds: int) -> dict:
    """Change events per second from the log into bronze: ``rounds`` full-table updates of ``rows`` rows."""
    source, engine = _cdc_source(directory, kind)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO t_visit VALUES "
                + ",".join(f"({i}, 'v{i}', 0, '2026-11-01 08:00:00')" for i in range(rows))
            )
        )
    spark = get_spark()
    collect_source(spark, source)  # snapshot
    for n in range(1, rounds + 1):
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE t_visit SET n = {n}, gmt_modified = '2026-11-01 09:00:00'"))
    started = time.monotonic()
    landed = sum(r.rows for r in collect_source(spark, source))
    seconds = time.monotonic() - started
    _drop_slots("bench_cdc")
    return {"events": landed, "seconds": round(seconds, 1), "events_per_second": round(landed / seconds)}


def _drop_slots(database: str) -> None:
    with _pg("postgres").connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                f"WHERE database = '{database}' AND NOT active"
            )
        )


def bench_latency(directory: Path, kind: str, seconds: int, interval: float) -> dict:
    """Commit → landed in bronze, with the collector following the log every ``interval`` seconds."""
    source, engine = _cdc_source(directory, kind)
    spark = get_spark()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t_visit VALUES (0, 'seed', 0, '2026-11-01 08:00:00')"))
    collect_source(spark, source)
    follower = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "ingest", "--source", source.name, "--follow", str(interval)],
        env={**os.environ, "DRC_SOURCES_DIR": str(directory)},
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(20)  # the follower's JVM start-up is not latency
    committed: dict[int, float] = {}
    stop = time.monotonic() + seconds
    i = 1
    while time.monotonic() < stop:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t_visit VALUES (:i, 'x', 0, :t)"), {"i": i, "t": datetime.now()})
        committed[i] = time.time()
        i += 1
        time.sleep(0.2)
    deadline = time.monotonic() + 120
    path = bronze_path(source.name, "t_visit")
    while time.monotonic() < deadline:
        if spark.read.format("delta").load(path).where(F.col("id") >= 1).select("id").distinct().count() >= i - 1:
            break
        time.sleep(2)
    os.killpg(follower.pid, signal.SIGTERM)
    follower.wait()
    commits = {
        r["userMetadata"] and json.loads(r["userMetadata"])["batch_id"]: r["timestamp"].timestamp()
        for r in DeltaTable.forPath(spark, path).history().collect()
    }
    landed = {
        r.id: commits[r._batch_id]
        for r in spark.read.format("delta").load(path).where(F.col("id") >= 1).select("id", "_batch_id").collect()
    }
    lags = sorted(landed[k] - committed[k] for k in committed if k in landed)
    _drop_slots("bench_cdc")
    return {
        "changes": len(committed),
        "landed": len(lags),
        "interval_seconds": interval,
        "p50_seconds": round(statistics.median(lags), 1),
        "p95_seconds": round(lags[int(len(lags) * 0.95) - 1], 1),
        "max_seconds": round(lags[-1], 1),
    }


def bench_county_day() -> dict:
    """One more simulated county day in every member system, then one collection of every source."""
    from cli.main import main as drc_main
    from ingestion.registry import load_sources

    spark = get_spark()
    started = time.monotonic()
    catch_up = collect_all(spark, list(load_sources().values()))  # first: the day is measured alone
    catch_up_seconds = time.monotonic() - started
    assert drc_main(["simulate", "--advance", "1"]) == 0
    started = time.monotonic()
    results = collect_all(spark, list(load_sources().values()))
    seconds = time.monotonic() - started
    per_source: dict[str, int] = {}
    for r in results:
        per_source[r.source] = per_source.get(r.source, 0) + r.rows
    return {
        "seconds": round(seconds, 1),
        "rows": sum(per_source.values()),
        "per_source": per_source,
        "catch_up_seconds": round(catch_up_seconds, 1),
        "catch_up_rows": sum(r.rows for r in catch_up),
        "failed": [f"{r.source}.{r.table}" for r in results if r.status in ("failed", "source_down")],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bulk-rows", type=int, default=2_000_000)
    parser.add_argument("--cdc-rows", type=int, default=50_000)
    parser.add_argument("--cdc-rounds", type=int, default=4)
    parser.add_argument("--latency-seconds", type=int, default=120)
    parser.add_argument("--county-day", action="store_true")
    parser.add_argument("--only", help="run just this step, e.g. county_day (results merge into the file)")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench_sources_"))
    result: dict = {"machine": machine(), "measured_at": datetime.now().astimezone().isoformat(timespec="seconds")}
    steps = [("bulk_load", lambda: bench_bulk(directory, args.bulk_rows))]
    for kind in ("mysql_binlog", "pg_logical"):
        steps.append(
            (
                f"cdc_throughput_{kind}",
                lambda k=kind: bench_cdc_throughput(directory, k, args.cdc_rows, args.cdc_rounds),
            )
        )
        steps.append((f"cdc_latency_{kind}", lambda k=kind: bench_latency(directory, k, args.latency_seconds, 2.0)))
    if args.county_day or args.only == "county_day":
        steps.append(("county_day", bench_county_day))
    if args.only:
        steps = [(name, step) for name, step in steps if name == args.only]
        previous = RESULTS / "ingestion.json"
        result = {**(json.loads(previous.read_text(encoding="utf-8")) if previous.exists() else {}), **result}
    for name, step in steps:
        print(f"… {name}", flush=True)
        result[name] = step()
        print(f"  {result[name]}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingestion.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_table(result))
    return result


def _table(r: dict) -> str:
    lines = [
        "| measure | measured | goal |",
        "|---|---|---|",
        f"| bulk/initial load into Delta | {r['bulk_load']['rows_per_second']:,} rows/s "
        f"({r['bulk_load']['rows']:,} rows in {r['bulk_load']['seconds']} s) | ≥ 30,000 rows/s |",
    ]
    for kind in ("mysql_binlog", "pg_logical"):
        t, lat = r[f"cdc_throughput_{kind}"], r[f"cdc_latency_{kind}"]
        lines.append(
            f"| CDC throughput, {kind} | {t['events_per_second']:,} events/s ({t['events']:,} in "
            f"{t['seconds']} s) | ≥ 5,000 events/s |"
        )
        lines.append(
            f"| CDC latency commit → bronze, {kind} | p95 {lat['p95_seconds']} s (p50 {lat['p50_seconds']} s, "
            f"{lat['landed']}/{lat['changes']} changes) | p95 ≤ 60 s |"
        )
    if "county_day" in r:
        lines.append(
            f"| one county-scale day, every source | {r['county_day']['seconds']} s "
            f"({r['county_day']['rows']:,} rows) | ≤ 300 s |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
