"""
### 夜间流水线 xydrc_nightly · 迟到数据补算 xydrc_catch_up

**夜间流水线**（每天 00:30 北京时间，处理刚结束的业务日）：每个来源最后一次采集（互不阻塞）→ 到报判定
（按时/迟报/缺报，缺报机构该日标记为不完整并告警）→ 标准化 → 主索引 → 质控 → 发布 → dbt 建模 →
每个上报数据集一个上报任务。每个任务都是一个 `./drc` 命令，可在终端原样重跑。

The nightly DAG processes the business day that just ended (00:30 Beijing time): a last collection sweep per
source (isolated: a failing source does not stop the others), the deadline judgement, then standardise, link,
check, publish, build the marts and deliver each export feed. Backfill: `airflow backfill create --dag-id
xydrc_nightly --from-date D1 --to-date D2` or `./drc pipeline --from D1 --to D2` (the same commands).

**迟到数据补算** runs when data of a day judged missing has come (the `late_arrivals` asset, emitted by a
source's collection DAG): it re-runs the steps after collection; exports then send corrected versions.
Steps, pools and retries: config/pipeline.yaml. Runbook: docs/operations.md.
"""

from __future__ import annotations

from airflow.sdk import Param, chain, dag, task_group
from assets import LATE_ARRIVALS, NAMED, bronze, export_feed
from steps import PIPELINE, START_DATE, step_tasks


def _outlets(step, name):
    if step.per == "source":
        return [bronze(name)]
    if step.per == "feed":
        return [export_feed(name)]
    return [NAMED[o] for o in step.outlets]


def _chain_steps(step_ids):
    """Each step after the previous; a per-source or per-feed step is a task group of parallel tasks."""
    stages = []
    for step in (PIPELINE.step(s) for s in step_ids):
        if step.per:

            @task_group(group_id=step.id, tooltip=step.zh)
            def group(step=step):
                step_tasks(step, _outlets)

            stages.append(group())
        else:
            stages.append(step_tasks(step, _outlets)[0])
    chain(*stages)


PARAMS = {
    "business_date": Param(
        None,
        type=["null", "string"],
        format="date",
        description="业务日期 YYYY-MM-DD（默认：运行时刻北京时间的前一天）",
    ),
    "include_open_periods": Param(
        False, type="boolean", description="月报等尚未结束的期间也先上报（标记为期间未结束/初报）"
    ),
}


@dag(
    dag_id=PIPELINE.nightly_dag_id,
    description=PIPELINE.nightly_title,
    schedule=PIPELINE.nightly_schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    params=PARAMS,
    tags=["xydrc", "nightly", "production"],
)
def nightly():
    _chain_steps([s.id for s in PIPELINE.steps])


@dag(
    dag_id=PIPELINE.catch_up_dag_id,
    description=PIPELINE.catch_up_title,
    schedule=[LATE_ARRIVALS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    params=PARAMS,
    tags=["xydrc", "catch-up", "production"],
)
def catch_up():
    _chain_steps(PIPELINE.catch_up_steps)


nightly()
catch_up()
