"""
### 演示：模拟成员单位系统 xydrc_demo_simulate

不属于生产流水线。为演示环境的模拟县（docs/simulator.md）生成一个业务日的数据，之后由采集 DAG 和夜间流水线处理。
Not part of production: fills the simulated member systems up to a business day (param, default yesterday).
"""

from __future__ import annotations

from airflow.sdk import Param, dag
from steps import PIPELINE, START_DATE, RetryPolicy, drc_task

NO_RETRY = RetryPolicy(0, PIPELINE.collect.retry.retry_delay, PIPELINE.collect.retry.retry_delay)


@dag(
    dag_id=PIPELINE.demo_dag_id,
    description=PIPELINE.demo_title,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["xydrc", "demo"],
    params={"business_date": Param(None, type=["null", "string"], format="date", description="模拟到此业务日")},
)
def demo_simulate():
    drc_task(
        "simulate",
        "simulate --until {business_date}",
        retry=NO_RETRY,
        doc_md="模拟成员单位系统到指定业务日（幂等）。Simulate the member systems up to the business day.",
    )


demo_simulate()
