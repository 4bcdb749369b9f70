"""Upstream daily export: one CSV + manifest per day, matching the mart, byte-identical on re-run."""

from __future__ import annotations

import csv
import hashlib
import json

import sqlalchemy as sa

from core.db import warehouse_engine
from core.settings import get_settings
from exports.daily_visits import export_day


def test_daily_export_matches_mart_and_manifest(pipeline_done):
    day = pipeline_done.last_day
    folder = get_settings().exports_dir / f"{day:%Y%m%d}"
    manifest = json.loads((folder / f"MJZRC_410182_{day:%Y%m%d}.manifest.json").read_text(encoding="utf-8"))
    content = (folder / manifest["file"]).read_bytes()
    rows = list(csv.DictReader(content.decode("utf-8").splitlines()))
    with warehouse_engine().connect() as conn:
        mart_total = conn.execute(sa.text("SELECT SUM(total_visits) FROM marts.fct_daily_outpatient_visits "
                                          "WHERE visit_date = :d"), {"d": day}).scalar()
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert manifest["row_count"] == len(rows) >= 1
    assert sum(int(r["total_visits"]) for r in rows) == manifest["total_visits"] == mart_total
    assert all(int(r["total_visits"]) == int(r["outpatient_visits"]) + int(r["emergency_visits"]) for r in rows)


def test_re_exporting_a_day_rewrites_identical_files(pipeline_done, tmp_path):
    day = pipeline_done.first_day
    first = export_day(day, tmp_path)
    files = {p.name: p.read_bytes() for p in (tmp_path / f"{day:%Y%m%d}").iterdir()}
    second = export_day(day, tmp_path)
    assert first == second
    assert {p.name: p.read_bytes() for p in (tmp_path / f"{day:%Y%m%d}").iterdir()} == files
    assert sorted(files) == [f"MJZRC_410182_{day:%Y%m%d}.csv", f"MJZRC_410182_{day:%Y%m%d}.manifest.json"]
