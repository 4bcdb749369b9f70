"""Run dbt programmatically against the warehouse (profiles and project in dbt/)."""

from __future__ import annotations

import shutil

from dbt.cli.main import dbtRunner

from core.settings import CONFIG_DIR, PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"
# Reference files the warehouse loads as dbt seeds, kept once in config/ (the pipeline reads them there too).
SEEDS_FROM_CONFIG = ("organizations.csv",)


def dbt_build(select: str | None = None) -> None:
    for name in SEEDS_FROM_CONFIG:
        shutil.copyfile(CONFIG_DIR / name, DBT_DIR / "seeds" / name)
    args = ["build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    if select:
        args += ["--select", select]
    result = dbtRunner().invoke(args)
    if not result.success:
        raise RuntimeError(f"dbt build failed ({result.exception or 'see the failing models and tests above'}); "
                           f"details in {DBT_DIR / 'logs' / 'dbt.log'}")
