"""Run dbt programmatically against the warehouse (profiles and project in dbt/)."""

from __future__ import annotations

import os
import shutil

from dbt.cli.main import dbtRunner

from core.indicators import write_generated_files
from core.settings import CONFIG_DIR, PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"
DOCS_DIR = DBT_DIR / "target"  # `dbt docs generate` writes index.html, manifest.json, catalog.json here
# Reference files the warehouse loads as dbt seeds, kept once in config/ (the pipeline reads them there too).
SEEDS_FROM_CONFIG = {
    "organizations.csv": CONFIG_DIR / "organizations.csv",
    "icd10_who.csv": CONFIG_DIR / "terminology" / "code_systems" / "ICD10_WHO.csv",
}


def _invoke(args: list[str]):
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


def prepare_project() -> None:
    """Seeds copied from config/ and the files generated from the indicator catalog, so dbt sees the catalog
    as it is now (an indicator added in config/indicators/ needs no dbt edit)."""
    for name, source in SEEDS_FROM_CONFIG.items():
        shutil.copyfile(source, DBT_DIR / "seeds" / name)
    write_generated_files()


def dbt_build(select: str | None = None, full_refresh: bool = False, tests: bool = True) -> None:
    """``dbt build`` (models, tests, snapshots, seeds), or ``dbt run`` without ``tests`` (a selection whose
    neighbours' relationship tests would see them half rebuilt); ``full_refresh``: incremental marts whole."""
    prepare_project()
    args = ["build" if tests else "run", *(["--select", select] if select else [])]
    _invoke([*args, *(["--full-refresh"] if full_refresh else [])])


def compile_sql(sql: str) -> str:
    """SQL with dbt's refs and macros (``{{ ref(...) }}``) resolved against the project, to run as it is."""
    result = _invoke(["compile", "--inline", sql, "--quiet"])
    return result.result.results[0].node.compiled_code


def dbt_docs_generate() -> None:
    """The engineers' model documentation (lineage, columns, tests), served from DOCS_DIR by `./drc start`."""
    prepare_project()
    _invoke(["docs", "generate"])
