"""
### 每日数据处理流水线 (daily pipeline)

For business day D (the day before the run's logical date, or the `business_date` param): fill the
simulated member systems up to D, collect into bronze, standardise to silver, give every person record its
master id (EMPI), gate on quality, publish to the warehouse, build the dbt models and deliver the export
catalog's feeds to the platforms above (one task per feed; each sends its due periods, waits for late inputs
until the feed's deadline, and catches up what an unreachable server missed). Every task is one `./drc` step,
so a data engineer can repeat any of them from a terminal with the same result.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task, task_group
from assets import MART_DAILY_VISITS, MASTER_INDEX, SILVER, bronze, export_feed, export_feeds, source_names

DRC = Path(__file__).resolve().parents[1] / "drc"
BUSINESS_DATE = "{{ params.business_date or macros.ds_add(ds, -1) }}"


def drc_step(step: str, outlets: list | None = None, task_id: str | None = None, **kwargs):
    """A task that runs one CLI step; its exit code decides success."""
    @task.bash(task_id=task_id or step, outlets=outlets or [], **kwargs)
    def run() -> str:
        return f"{DRC} {step}"
    return run


@dag(
    dag_id="xydrc_daily_pipeline",
    description="医共体数据资源中心每日流水线：采集→标准化→主索引→质控→发布→建模→上报",
    schedule="0 1 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["xydrc", "daily"],
    params={"business_date": Param(None, type=["null", "string"], format="date",
                                   description="业务日期 YYYY-MM-DD（默认：运行日前一天）")},
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
)
def xydrc_daily_pipeline():
    @task.bash(task_id="simulate")
    def simulate() -> str:
        return f"{DRC} simulate --until {BUSINESS_DATE}"

    @task_group(group_id="ingest", tooltip="采集：每个来源一个任务，一个来源失败不阻塞其他来源")
    def ingest():
        for name in source_names():
            drc_step(f"ingest --source {name}", [bronze(name)], task_id=name)()
    silver = drc_step("silver", [SILVER], trigger_rule="all_done")  # a failed source must not hold up the rest
    empi = drc_step("empi", [MASTER_INDEX])
    quality = drc_step("quality", retries=0)
    publish = drc_step("publish")
    transform = drc_step("transform", [MART_DAILY_VISITS])

    @task_group(group_id="export", tooltip="上报：每个上报数据集一个任务（config/exports/），到期的期间逐一生成、"
                                         "校验完整性并经 SFTP 送达；服务器不可达时稍后重试")
    def export():
        for feed in export_feeds():
            drc_step(f"export run --feed {feed} --through {BUSINESS_DATE}", [export_feed(feed)], task_id=feed,
                     retries=3, retry_delay=timedelta(minutes=10))()

    simulate() >> ingest() >> silver() >> empi() >> quality() >> publish() >> transform() >> export()


xydrc_daily_pipeline()
