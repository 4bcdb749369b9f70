"""Daily 门急诊人次 file for the upstream platform (county code 410182), one CSV and one manifest per day.

Files are byte-for-byte reproducible: fixed column order, rows sorted by institution, UTF-8, LF line
ends, and no generation time inside. Re-running a day rewrites identical files (written atomically).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.db import warehouse_engine
from core.settings import get_settings

SPEC = "XY-MJZRC-1.0"
COUNTY_CODE = "410182"
COLUMNS = ("visit_date", "org_code", "org_name", "outpatient_visits", "emergency_visits", "total_visits")


def render_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: r["org_code"]):
        writer.writerow([row[c] for c in COLUMNS])
    return buffer.getvalue().encode("utf-8")


def _write_atomically(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def export_day(day: date, out_dir: Path | None = None) -> dict[str, Any]:
    with warehouse_engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(
            f"SELECT {', '.join(COLUMNS)} FROM marts.fct_daily_outpatient_visits WHERE visit_date = :day"),
            {"day": day})]
    target = (out_dir or get_settings().exports_dir) / f"{day:%Y%m%d}"
    target.mkdir(parents=True, exist_ok=True)
    name = f"MJZRC_{COUNTY_CODE}_{day:%Y%m%d}"
    content = render_csv(rows)
    manifest = {"spec": SPEC, "file": f"{name}.csv", "data_date": day.isoformat(), "row_count": len(rows),
                "total_visits": sum(r["total_visits"] for r in rows), "encoding": "UTF-8",
                "columns": list(COLUMNS), "sha256": hashlib.sha256(content).hexdigest()}
    _write_atomically(target / manifest["file"], content)
    _write_atomically(target / f"{name}.manifest.json",
                      (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return manifest
