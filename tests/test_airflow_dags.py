"""DAG integrity: the DAG folder imports fast and cleanly, and its DAGs follow the registries.

Parsed by Airflow's own interpreter and DagBag, as the DAG processor does (no service needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core.pipeline import load_pipeline
from core.settings import PROJECT_ROOT
from exports.catalog import catalog
from ingestion.registry import load_sources

DAGS = PROJECT_ROOT / "dags"
REPORT_SCRIPT = PROJECT_ROOT / "tests" / "airflow" / "dagbag_report.py"


def _parse(tmp_path: Path, **env: str) -> dict:
    airflow_python = Path(os.environ["DRC_AIRFLOW_BIN"]).with_name("python")
    out = tmp_path / f"dagbag-{len(list(tmp_path.iterdir()))}.json"
    done = subprocess.run(
        [str(airflow_python), str(REPORT_SCRIPT), str(DAGS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> dict:
    return _parse(tmp_path_factory.mktemp("dagbag"))


def test_dag_folder_imports_fast_without_errors(bag):
    assert bag["errors"] == {}
    assert bag["seconds"] < 15, "the DAG processor re-parses these files every few minutes"


def test_every_registered_source_has_its_collection_dag_and_nightly_task(bag):
    pipeline = load_pipeline()
    nightly = bag["dags"][pipeline.nightly_dag_id]["tasks"]
    for name, source in load_sources().items():
        dag = bag["dags"][pipeline.collect.dag_id_prefix + name]
        assert dag["schedule"] == source.schedule, "a source runs on the schedule its YAML gives"
        assert dag["tasks"]["collect"]["outlets"] == [f"xydrc://bronze/{name}"]
        assert dag["tasks"]["collect"]["pool"] == "xydrc_collect" and dag["tasks"]["collect"]["retries"] > 0
        assert dag["tasks"]["late_arrivals"]["upstream"] == ["collect"]
        assert f"collect.{name}" in nightly
    assert {f"export.{feed}" for feed in catalog().feeds} <= set(nightly)


def test_nightly_chain_runs_on_beijing_time_with_isolation_and_one_spark_step_at_a_time(bag):
    pipeline = load_pipeline()
    dag = bag["dags"][pipeline.nightly_dag_id]
    assert dag["timezone"] == "Asia/Shanghai" and dag["schedule"] == pipeline.nightly_schedule
    tasks = dag["tasks"]
    # a failing source does not hold up the day: the deadline judgement and silver run when collection is done
    assert set(tasks["deadline"]["upstream"]) == {t for t in tasks if t.startswith("collect.")}
    assert tasks["deadline"]["trigger_rule"].endswith("ALL_DONE")
    assert tasks["silver"]["upstream"] == ["deadline"] and tasks["silver"]["trigger_rule"].endswith("ALL_DONE")
    assert tasks["empi"]["upstream"] == ["silver"] and tasks["transform"]["upstream"] == ["publish"]
    spark_steps = [t for t in tasks if not t.startswith("collect.") and t != "deadline"]
    assert {tasks[t]["pool"] for t in spark_steps} == {"xydrc_spark"}
    assert pipeline.pools["xydrc_spark"][0] == 1
    assert all(t["doc"] for t in tasks.values()) and dag["doc"]
    assert "xydrc_demo_simulate" in bag["dags"] and all(
        "simulate" not in d["tasks"] for i, d in bag["dags"].items() if "production" in d["tags"]
    )
    assert bag["dags"][pipeline.catch_up_dag_id]["schedule"] == "AssetTriggeredTimetable"


def test_adding_a_source_yaml_adds_its_dag_and_tasks(tmp_path):
    sources = tmp_path / "sources"
    shutil.copytree(PROJECT_ROOT / "config" / "sources", sources)
    extra = yaml.safe_load((sources / "referral.yaml").read_text(encoding="utf-8"))
    extra.update(name="village_lab", schedule="45 * * * *")
    (sources / "village_lab.yaml").write_text(yaml.safe_dump(extra, allow_unicode=True), encoding="utf-8")
    bag = _parse(tmp_path, DRC_SOURCES_DIR=str(sources))
    assert bag["errors"] == {}
    assert bag["dags"]["xydrc_collect_village_lab"]["schedule"] == "45 * * * *"
    assert "collect.village_lab" in bag["dags"]["xydrc_nightly"]["tasks"]
