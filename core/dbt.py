"""Run dbt programmatically against the warehouse (profiles and project in dbt/)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import sqlalchemy as sa
from dbt.cli.main import dbtRunner, dbtRunnerResult

from core.classification import grant_governed, install
from core.db import warehouse_engine
from core.indicators import write_generated_files
from core.privacy import MASKING_MACRO, render_masking_macro
from core.settings import CONFIG_DIR, PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"
DOCS_DIR = DBT_DIR / "target"  # `dbt docs generate` writes index.html, manifest.json, catalog.json here
# Reference files the warehouse loads as dbt seeds, kept once in config/ (the pipeline reads them there too).
SEEDS_FROM_CONFIG = {
    "organizations.csv": CONFIG_DIR / "organizations.csv",
    "icd10_who.csv": CONFIG_DIR / "terminology" / "code_systems" / "ICD10_WHO.csv",
}


def _invoke(args: list[str]) -> dbtRunnerResult:
    # The ID-number lookup key reaches dbt's sessions as a setting (dim_patient_lookup), not as SQL text.
    key = os.environ.get("DRC_ID_LOOKUP_KEY")
    if key and "drc.id_lookup_key" not in os.environ.get("PGOPTIONS", ""):
        os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c drc.id_lookup_key={key}".strip()
    result = dbtRunner().invoke([*args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)])
    if not result.success:
        raise RuntimeError(
            f"dbt {args[0]} failed ({result.exception or 'see the failing models and tests above'}); "
            f"details in {DBT_DIR / 'logs' / 'dbt.log'}"
        )
    return result


def prepare_project() -> list[Path]:
    """Seeds copied from config/ and the files generated from the indicator catalog and the platform's masking,
    so dbt sees them as they are now (an indicator added in config/indicators/ needs no dbt edit)."""
    for name, source in SEEDS_FROM_CONFIG.items():
        shutil.copyfile(source, DBT_DIR / "seeds" / name)
    MASKING_MACRO.write_text(render_masking_macro(), encoding="utf-8")
    return [*write_generated_files(), MASKING_MACRO]


def dbt_build(select: str | None = None, full_refresh: bool = False, tests: bool = True) -> None:
    """``dbt build`` (models, tests, snapshots, seeds), or ``dbt run`` without ``tests`` (a selection whose
    neighbours' relationship tests would see them half rebuilt); ``full_refresh``: incremental marts whole, and
    every seed reloaded."""
    prepare_project()
    with warehouse_engine().begin() as conn:
        install(conn)  # the field classification every model's post-hook grants by (core/classification.py)
    checksums = _seed_checksums()
    unchanged = [] if full_refresh else _loaded_seeds(checksums)
    args = ["build" if tests else "run", *(["--select", select] if select else [])]
    result = _invoke(
        [*args, *(["--exclude", *unchanged] if unchanged else []), *(["--full-refresh"] if full_refresh else [])]
    )
    with warehouse_engine().begin() as conn:
        grant_governed(conn)  # the same for the governed relations dbt does not build (ingest, ops, audit)
    loaded = {r.node.name for r in result.result.results if r.node.resource_type == "seed" and r.status == "success"}
    _record_seeds({seed: checksums[seed] for seed in loaded if seed in checksums})


# dbt reloads every seed on every build (the 12,500-row ICD-10 table alone took 14 s of a 40 s build): a seed whose
# file and configuration are those the warehouse last loaded is left out of the build, with its tests.
SEED_CHECKSUMS = "dbt_meta.seed_checksum"


def _seed_checksums() -> dict[str, str]:
    settings = b"".join(p.read_bytes() for p in (DBT_DIR / "dbt_project.yml", *sorted(DBT_DIR.glob("seeds/*.yml"))))
    return {p.stem: hashlib.sha256(settings + p.read_bytes()).hexdigest() for p in sorted(DBT_DIR.glob("seeds/*.csv"))}


def _loaded_seeds(checksums: dict[str, str]) -> list[str]:
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS dbt_meta"))
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {SEED_CHECKSUMS} (seed text PRIMARY KEY, checksum text NOT NULL, "
                "loaded_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        loaded = conn.execute(
            sa.text(f"SELECT seed, checksum FROM {SEED_CHECKSUMS} WHERE to_regclass('reference.' || seed) IS NOT NULL")
        ).all()
    return sorted(seed for seed, checksum in loaded if checksums.get(seed) == checksum)


def _record_seeds(checksums: dict[str, str]) -> None:
    if not checksums:
        return
    with warehouse_engine().begin() as conn:
        for seed, checksum in checksums.items():
            conn.execute(
                sa.text(
                    f"INSERT INTO {SEED_CHECKSUMS} (seed, checksum) VALUES (:seed, :checksum) "
                    "ON CONFLICT (seed) DO UPDATE SET checksum = excluded.checksum, loaded_at = now()"
                ),
                {"seed": seed, "checksum": checksum},
            )


def compile_sql(sql: str) -> str:
    """SQL with dbt's refs and macros (``{{ ref(...) }}``) resolved against the project, to run as it is."""
    result = _invoke(["compile", "--inline", sql, "--quiet"])
    return result.result.results[0].node.compiled_code


def dbt_docs_generate() -> None:
    """The engineers' model documentation (lineage, columns, tests), served from DOCS_DIR by `./drc start`."""
    prepare_project()
    _invoke(["docs", "generate"])
