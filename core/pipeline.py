"""The scheduled work of the platform as configuration (config/pipeline.yaml), read once.

The Airflow DAGs, ``./drc pipeline`` and the runbook all read this catalog, so a step's command, pool, retry
policy and documentation live in one place. Pure: no layer is imported (the DAG processor loads it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import yaml

from core.settings import CONFIG_DIR

PIPELINE_FILE = CONFIG_DIR / "pipeline.yaml"
TRIGGER_RULES = {"all_success", "all_done"}


class PipelineConfigError(ValueError):
    """config/pipeline.yaml says something the scheduler cannot do; the message names the entry."""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    retry_delay: timedelta
    max_retry_delay: timedelta


@dataclass(frozen=True)
class Step:
    id: str
    command: str  # a ./drc command line; {business_date}, {source}, {feed} are filled in
    zh: str
    en: str
    retry: RetryPolicy
    per: str | None = None  # "source" or "feed": one task per registered source / export feed
    pool: str | None = None
    trigger_rule: str = "all_success"
    outlets: tuple[str, ...] = ()
    on_failure: str = ""

    def argv(self, business_date: date | None = None, **names: str) -> list[str]:
        """The step's ./drc arguments for one business day (and source or feed)."""
        text = self.command.format(business_date=business_date.isoformat() if business_date else "", **names)
        return text.split()


@dataclass(frozen=True)
class Collection:
    dag_id_prefix: str
    command: str
    pool: str
    retry: RetryPolicy
    late_check: str
    zh: str
    en: str
    on_failure: str


@dataclass(frozen=True)
class Pipeline:
    timezone: str
    start_date: date
    pools: dict[str, tuple[int, str]]
    collect: Collection
    nightly_dag_id: str
    nightly_schedule: str
    nightly_title: str
    steps: tuple[Step, ...]
    catch_up_dag_id: str
    catch_up_title: str
    catch_up_steps: tuple[str, ...]
    demo_dag_id: str
    demo_title: str
    shared_driver_commands: frozenset[str]  # ./drc commands an Airflow task runs in the shared Spark driver
    shared_driver_idle: timedelta

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def _policy(policies: dict, name: str, where: str) -> RetryPolicy:
    if name not in policies:
        raise PipelineConfigError(
            f"{PIPELINE_FILE.name}: {where} uses retry policy '{name}'; defined: {sorted(policies)}"
        )
    p = policies[name]
    return RetryPolicy(
        int(p["retries"]), timedelta(minutes=p["retry_delay_minutes"]), timedelta(minutes=p["max_retry_delay_minutes"])
    )


@cache
def load_pipeline(path: Path = PIPELINE_FILE) -> Pipeline:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    policies, pools = raw["retry_policies"], raw["pools"]
    steps = []
    for entry in raw["nightly"]["steps"]:
        where = f"nightly step '{entry['id']}'"
        if entry.get("pool") and entry["pool"] not in pools:
            raise PipelineConfigError(f"{path.name}: {where} uses pool '{entry['pool']}'; defined: {sorted(pools)}")
        if entry.get("trigger_rule", "all_success") not in TRIGGER_RULES:
            raise PipelineConfigError(f"{path.name}: {where}: trigger_rule must be one of {sorted(TRIGGER_RULES)}")
        if entry.get("per") not in (None, "source", "feed"):
            raise PipelineConfigError(f"{path.name}: {where}: per must be 'source' or 'feed'")
        steps.append(
            Step(
                id=entry["id"],
                command=entry["command"],
                zh=entry["zh"],
                en=entry["en"],
                retry=_policy(policies, entry["retry"], where),
                per=entry.get("per"),
                pool=entry.get("pool"),
                trigger_rule=entry.get("trigger_rule", "all_success"),
                outlets=tuple(entry.get("outlets", ())),
                on_failure=entry.get("on_failure", ""),
            )
        )
    ids = [s.id for s in steps]
    unknown = sorted(set(raw["catch_up"]["steps"]) - set(ids))
    if unknown or len(set(ids)) != len(ids):
        raise PipelineConfigError(f"{path.name}: catch_up names unknown steps {unknown} or a step id repeats")
    c = raw["collect"]
    collect = Collection(
        c["dag_id_prefix"],
        c["command"],
        c["pool"],
        _policy(policies, c["retry"], "collect"),
        c["late_check"],
        c["zh"],
        c["en"],
        c["on_failure"],
    )
    return Pipeline(
        timezone=raw["timezone"],
        start_date=raw["start_date"],
        pools={name: (p["slots"], p["description"]) for name, p in pools.items()},
        collect=collect,
        nightly_dag_id=raw["nightly"]["dag_id"],
        nightly_schedule=raw["nightly"]["schedule"],
        nightly_title=raw["nightly"]["title"],
        steps=tuple(steps),
        catch_up_dag_id=raw["catch_up"]["dag_id"],
        catch_up_title=raw["catch_up"]["title"],
        catch_up_steps=tuple(raw["catch_up"]["steps"]),
        demo_dag_id=raw["demo"]["dag_id"],
        demo_title=raw["demo"]["title"],
        shared_driver_commands=frozenset(raw["shared_spark_driver"]["commands"]),
        shared_driver_idle=timedelta(minutes=raw["shared_spark_driver"]["idle_minutes"]),
    )
