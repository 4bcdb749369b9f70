"""A county month of exports: every feed of the catalog for one month, built and delivered to the local SFTP
server, on tables the size 荥阳 produces (650,000 residents).

The demo county is too small to time this, so the bench fills a scratch schema ``bench_exports`` with synthetic
rows at county size — 258 institutions × 30 days of service volume, the residents the EMPI sees change per day,
a month of visits and stays for the research extract — and points copies of the catalog's mart feeds at it. The
indicator feeds read the real marts (their size is the catalog's, not the county's). Writes
bench/results/exports.json and .md. Needs the warehouse and the SFTP server running (./drc start).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from bench.machine import machine
from core.db import warehouse_engine
from exports.catalog import CATALOG_DIR, load_catalog
from exports.runner import run
from exports.store import ensure_tables

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = "bench_exports"
MONTH = date(2026, 11, 1)
DAYS = 30
COUNTY = {
    "institutions": 309,
    "residents_changed_per_day": 6_000,
    "encounters_per_month": 420_000,
    "residents": 650_000,
}
TOWNSHIPS = [
    "京城路街道",
    "索河街道",
    "豫龙镇",
    "广武镇",
    "王村镇",
    "高村乡",
    "汜水镇",
    "乔楼镇",
    "刘河镇",
    "贾峪镇",
    "城关乡",
    "崔庙镇",
    "高山镇",
    "金寨回族乡",
    "环翠峪管委会",
]


def build_tables(sizes: dict[str, int]) -> None:
    """County-size stand-ins for the three mart datasets, generated in PostgreSQL (seconds, not a simulation)."""
    townships = "ARRAY[" + ", ".join(f"'{t}'" for t in TOWNSHIPS) + "]"
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"))
        conn.execute(
            sa.text(f"""
            CREATE TABLE {SCHEMA}.fct_daily_service_volume AS
            SELECT d::date AS service_date, (410182000 + o)::text AS org_code, '机构' || o AS org_name,
                   CASE WHEN o < 6 THEN '二级甲等' ELSE '一级' END AS org_level,
                   (random() * 800)::int AS outpatient_visits, (random() * 40)::int AS emergency_visits,
                   0 AS total_visits, (random() * 30)::int AS admissions, (random() * 30)::int AS discharges
            FROM generate_series(:start, :start + interval '{DAYS - 1} days', interval '1 day') d,
                 generate_series(1, :institutions) o"""),
            {"start": MONTH, "institutions": sizes["institutions"]},
        )
        conn.execute(
            sa.text(f"""
            CREATE TABLE {SCHEMA}.fct_resident_change AS
            SELECT d::date AS change_date, 'M' || lpad(to_hex(r * 7919 + extract(day FROM d)::int), 16, '0')
                       AS master_id,
                   CASE WHEN r % 10 = 0 THEN '新建' ELSE '更新' END AS change_type, '居民' || r AS name,
                   (1 + r % 2)::text AS sex_code, date '1940-01-01' + (r % 28000) AS birth_date,
                   '410182' || lpad((r % 1000000000000)::text, 12, '0') AS id_number, true AS id_number_valid,
                   '[{{"system": "cloud_his", "id": "' || r || '"}}]' AS local_identifiers, 1 AS source_record_count
            FROM generate_series(:start, :start + interval '{DAYS - 1} days', interval '1 day') d,
                 generate_series(1, :changed) r"""),
            {"start": MONTH, "changed": sizes["residents_changed_per_day"]},
        )
        conn.execute(
            sa.text(f"""
            CREATE TABLE {SCHEMA}.xch_research_encounter AS
            SELECT :start + (e % {DAYS}) AS visit_date, 'M' || lpad(to_hex(p), 16, '0') AS master_id,
                   date '1930-01-01' + (p * 37 % 33000) AS birth_date, (1 + p % 2)::text AS sex_code,
                   ({townships})[1 + p % {len(TOWNSHIPS)}] AS township, '乡镇卫生院' AS org_type, '一级' AS org_level,
                   CASE WHEN e % 20 = 0 THEN '300' ELSE '100' END AS encounter_class_code,
                   'I10' AS primary_diagnosis_code,
                   e % 7 = 0 AS is_tcm, '07' AS payment_category_code, NULL::int AS bed_days,
                   round((random() * 500)::numeric, 2) AS total_fee, round((random() * 200)::numeric, 2) AS drug_fee,
                   false AS is_died, 'E' || e AS encounter_key
            FROM (SELECT e, (1 + (e::bigint * 104729) % :residents)::int AS p
                  FROM generate_series(1, :encounters) e) s"""),
            {"start": MONTH, "encounters": sizes["encounters_per_month"], "residents": sizes["residents"]},
        )
        conn.execute(
            sa.text(
                f"ANALYZE {SCHEMA}.fct_daily_service_volume, {SCHEMA}.fct_resident_change, "
                f"{SCHEMA}.xch_research_encounter"
            )
        )


def bench_catalog(folder: Path):
    """The real catalog, its feeds renamed bench_* (their own ledger rows) and mart feeds reading the scratch schema."""
    shutil.copy(CATALOG_DIR / "_targets.yaml", folder)
    for path in CATALOG_DIR.glob("*.yaml"):
        if path.name.startswith("_"):
            continue
        text = path.read_text(encoding="utf-8").replace(f"name: {path.stem}", f"name: bench_{path.stem}")
        text = text.replace("dataset: {kind: mart,", f"dataset: {{kind: mart, schema: {SCHEMA},")
        text = text.replace("lookback_periods: 7", f"lookback_periods: {DAYS}")
        (folder / f"bench_{path.name}").write_text(text, encoding="utf-8")
    return load_catalog(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the county's sizes (1 = 荥阳)")
    args = parser.parse_args(argv)
    sizes = {k: max(1, int(v * args.scale)) if k != "institutions" else v for k, v in COUNTY.items()}
    started = time.monotonic()
    build_tables(sizes)
    built = time.monotonic() - started
    through = date(2026, 11, DAYS)
    timings = []
    ensure_tables()
    with warehouse_engine().begin() as conn:  # a fresh ledger for the bench feeds: every file is new
        for table in ("delivery", "period_state", "feed_version"):
            conn.execute(sa.text(f"DELETE FROM export.{table} WHERE feed LIKE 'bench\\_%'"))
    with tempfile.TemporaryDirectory() as folder:
        cat = bench_catalog(Path(folder))
        for name, feed in cat.feeds.items():
            first = time.monotonic()
            outcomes = run([name], through, include_open=False, cat=cat)
            cold = time.monotonic() - first
            again = time.monotonic()
            rerun = run([name], through, include_open=False, cat=cat)
            warm = time.monotonic() - again
            delivered = [o for o in outcomes if o.state == "delivered"]
            with warehouse_engine().connect() as conn:
                rows, size = conn.execute(
                    sa.text(
                        "SELECT coalesce(sum(row_count), 0), coalesce(sum(bytes), 0) FROM export.feed_version "
                        "WHERE feed = :f"
                    ),
                    {"f": name},
                ).one()
            timings.append(
                {
                    "feed": name.removeprefix("bench_"),
                    "zh": feed.zh,
                    "periods": len(outcomes),
                    "delivered": len(delivered),
                    "rows": int(rows),
                    "bytes": int(size),
                    "seconds": round(cold, 2),
                    "rerun_seconds": round(warm, 2),
                    "rerun_states": sorted({o.state for o in rerun}),
                    "failed": [o.detail for o in outcomes if not o.ok][:3],
                }
            )
            print(
                f"  {name}: {len(delivered)}/{len(outcomes)} periods delivered, {rows} rows, {cold:.1f} s "
                f"(re-run {warm:.1f} s)",
                flush=True,
            )
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    result = {
        "machine": machine(),
        "month": f"{MONTH:%Y-%m}",
        "sizes": sizes,
        "build_tables_seconds": round(built, 1),
        "feeds": timings,
        "total_seconds": round(sum(t["seconds"] for t in timings), 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exports.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# County month of exports ({result['month']}, {sizes['residents']:,} residents, 2 cores)",
        "",
        "| feed | periods delivered | rows | MB | build + deliver (s) | re-run (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t['zh']} `{t['feed']}` | {t['delivered']}/{t['periods']} | {t['rows']:,} | "
        f"{t['bytes'] / 1e6:.1f} | {t['seconds']} | {t['rerun_seconds']} |"
        for t in timings
    ]
    lines += [
        "",
        f"Total: {result['total_seconds']} s for every feed of the month; a re-run finds every file "
        "unchanged and sends nothing.",
        "",
    ]
    (RESULTS / "exports.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
