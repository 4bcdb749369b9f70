"""Run dbt programmatically against the warehouse (profiles and project in dbt/)."""

from __future__ import annotations

from dbt.cli.main import dbtRunner

from core.settings import PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"


def dbt_build(select: str | None = None) -> None:
    args = ["build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    if select:
        args += ["--select", select]
    result = dbtRunner().invoke(args)
    if not result.success:
        raise RuntimeError(f"dbt build failed ({result.exception or 'see the failing models and tests above'}); "
                           f"details in {DBT_DIR / 'logs' / 'dbt.log'}")
