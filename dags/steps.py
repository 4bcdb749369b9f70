"""How a DAG task runs one ``./drc`` step: command, pool, retries with backoff, docs and the failure alert.

Everything a task needs comes from the catalogs (config/pipeline.yaml, config/sources/, config/exports/), read
by the project's own readers, so the DAG files only schedule and chain.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from airflow.sdk import task

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the catalog readers live in the project (core, ingestion, exports)

from core.pipeline import RetryPolicy, Step, load_pipeline  # noqa: E402
from exports.catalog import catalog  # noqa: E402
from ingestion.registry import load_sources  # noqa: E402

DRC = ROOT / "drc"
PIPELINE = load_pipeline()
COUNTY_TZ = ZoneInfo(PIPELINE.timezone)
START_DATE = datetime.combine(PIPELINE.start_date, datetime.min.time(), COUNTY_TZ)


def sources():
    """The source registry (config/sources/*.yaml): adding a file adds its DAG and nightly task."""
    return load_sources()


def feeds() -> list[str]:
    return sorted(catalog().feeds)


def business_day(logical_date: datetime | None, params: dict | None) -> date:
    """The day a run processes: the ``business_date`` param, else the Beijing calendar day before the run."""
    if params and params.get("business_date"):
        return date.fromisoformat(str(params["business_date"]))
    moment = (logical_date or datetime.now(COUNTY_TZ)).astimezone(COUNTY_TZ)
    return moment.date() - timedelta(days=1)


def report_failure(context) -> None:
    """Failure callback: an open row in ops.alert (through the CLI) and a line an operator can grep."""
    ti = context["ti"]
    run_id = getattr(context.get("dag_run"), "run_id", "")
    print(
        f"XYDRC-ALERT kind=task_failed subject={ti.dag_id}.{ti.task_id} run={run_id} try={ti.try_number}",
        file=sys.stderr,
    )
    subprocess.run(
        [
            str(DRC),
            "alert",
            "task-failed",
            "--dag",
            ti.dag_id,
            "--task",
            ti.task_id,
            "--run",
            run_id,
            "--try",
            str(ti.try_number),
            "--log-url",
            getattr(ti, "log_url", "") or "",
        ],
        capture_output=True,
        timeout=120,
    )


def doc(zh: str, en: str, on_failure: str = "") -> str:
    text = f"**{zh}**\n\n{en}"
    return text + (f"\n\n**失败时 / when it fails:** {on_failure}" if on_failure else "")


def retry_args(policy: RetryPolicy) -> dict:
    return {
        "retries": policy.retries,
        "retry_delay": policy.retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": policy.max_retry_delay,
    }


def drc_task(
    task_id: str,
    argv: str,
    *,
    retry: RetryPolicy,
    doc_md: str,
    pool: str | None = None,
    trigger_rule: str = "all_success",
    outlets: list | None = None,
    extra_args: str = "",
):
    """One task running ``./drc <argv>``; ``{business_date}`` is the run's business day. Exit 99 = skipped."""

    @task.bash(
        task_id=task_id,
        pool=pool or "default_pool",
        trigger_rule=trigger_rule,
        outlets=outlets or [],
        doc_md=doc_md,
        on_failure_callback=report_failure,
        env={"DRC_SPARK_DRIVER": "shared"},  # Spark commands run in the night's shared driver (cli/shared_driver.py)
        append_env=True,
        **retry_args(retry),
    )
    def run(logical_date=None, params=None) -> str:
        day = business_day(logical_date, params)
        extra = extra_args if params and params.get("include_open_periods") else ""
        return f"{DRC} {argv.format(business_date=day.isoformat())}{extra}"

    return run()


def step_tasks(step: Step, outlets_of) -> list:
    """The tasks of one pipeline step: one, or one per source / feed."""
    names = {"source": sorted(sources()), "feed": feeds()}
    if not step.per:
        return [
            drc_task(
                step.id,
                step.command,
                retry=step.retry,
                pool=step.pool,
                trigger_rule=step.trigger_rule,
                outlets=outlets_of(step, None),
                doc_md=doc(step.zh, step.en, step.on_failure),
                extra_args=" --include-open-periods" if step.id == "export" else "",
            )
        ]
    return [
        drc_task(
            name,
            step.command.replace("{" + step.per + "}", name),
            retry=step.retry,
            pool=step.pool,
            trigger_rule=step.trigger_rule,
            outlets=outlets_of(step, name),
            doc_md=doc(f"{step.zh}（{name}）", step.en, step.on_failure),
            extra_args=" --include-open-periods" if step.id == "export" else "",
        )
        for name in names[step.per]
    ]
