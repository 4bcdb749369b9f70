"""Run by Airflow's own interpreter: parse the DAG folder as the DAG processor does and print what it holds.

Writes JSON to the file named by the second argument (Airflow logs to stdout): parse seconds, import errors,
and per DAG its tasks (pool, retries, trigger rule, upstream ids, outlets), schedule, time zone, tags, docs.
"""

import json
import sys
import time

dags_folder = sys.argv[1]
sys.path.insert(0, dags_folder)  # as the DAG processor puts the DAG folder on the path
started = time.monotonic()
from airflow.dag_processing.dagbag import DagBag  # noqa: E402

bag = DagBag(dag_folder=dags_folder)
seconds = time.monotonic() - started
report = {"seconds": round(seconds, 2), "errors": {k: v[-1500:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    report["dags"][dag_id] = {
        "schedule": dag.schedule if isinstance(dag.schedule, str | None) else type(dag.timetable).__name__,
        "timezone": str(dag.timezone),
        "tags": sorted(dag.tags),
        "doc": bool(dag.doc_md),
        "tasks": {
            t.task_id: {
                "pool": t.pool,
                "retries": t.retries,
                "trigger_rule": str(t.trigger_rule),
                "upstream": sorted(t.upstream_task_ids),
                "doc": bool(t.doc_md),
                "outlets": [getattr(o, "uri", str(o)) for o in t.outlets],
            }
            for t in dag.tasks
        },
    }
with open(sys.argv[2], "w", encoding="utf-8") as out:
    json.dump(report, out, ensure_ascii=False)
