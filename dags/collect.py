"""
### 采集 xydrc_collect_<来源> — one DAG per registered source, generated from config/sources/*.yaml

每个来源一个 DAG，按其登记的 `schedule` 运行（日志 CDC 每 5 分钟一个微批；JDBC、文件前置机、HTTP 接口按各自
周期）。新增一个来源 YAML 即新增其 DAG，无需改 DAG 代码。采集后检查：此前被判定缺报的业务日若已到达，则
标记为迟报、关闭告警，并触发迟到数据补算（xydrc_catch_up）。

One DAG per source on the source's own schedule (CDC micro-batches every few minutes; batch sources on
theirs). After collecting, a check: if data came for a day already judged missing, the day becomes late, its
alert closes, and the `late_arrivals` asset schedules the catch-up DAG (the task is skipped otherwise).
"""

from __future__ import annotations

from airflow.sdk import dag
from assets import LATE_ARRIVALS, bronze
from steps import PIPELINE, START_DATE, doc, drc_task, sources

COLLECT = PIPELINE.collect


def collection_dag(source):
    @dag(
        dag_id=COLLECT.dag_id_prefix + source.name,
        description=f"采集 {source.name}（{source.mode}）：{source.description or ''}"[:200],
        schedule=source.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        tags=["xydrc", "collect", source.mode, "production"],
    )
    def collect():
        landed = drc_task(
            "collect",
            COLLECT.command.format(source=source.name),
            retry=COLLECT.retry,
            pool=COLLECT.pool,
            outlets=[bronze(source.name)],
            doc_md=doc(COLLECT.zh, COLLECT.en, COLLECT.on_failure),
        )
        late = drc_task(
            "late_arrivals",
            COLLECT.late_check.split("#")[0].strip().format(source=source.name),
            retry=PIPELINE.step("deadline").retry,
            outlets=[LATE_ARRIVALS],
            doc_md=doc(
                "迟到检查：此前判定缺报的业务日，数据是否已到达（到达则触发补算）",
                "Did data come for a day judged missing? If so, schedule the catch-up DAG; skipped otherwise.",
            ),
        )
        landed >> late

    return collect()


for _source in sources().values():
    collection_dag(_source)
