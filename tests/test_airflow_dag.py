"""The nightly Airflow DAG runs the chain for a new business day; a stopped source is isolated and caught up.

The rmyy_his database (the 人民医院's HIS on MariaDB) is stopped during the night: the other sources land, the
night completes, the hospital's day is judged missing and alerted, and the day's exports go out marked
incomplete. When the database is back, the source's collection DAG sees the late data, and the catch-up DAG
re-runs the steps: the mart then counts every one of the hospital's visits and the export sends a new version.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, timedelta

import pytest
import requests
import sqlalchemy as sa
from pyspark.sql import functions as F
from selenium.webdriver.support.ui import WebDriverWait

from cli.main import main as drc_main
from core.db import warehouse_engine
from core.pipeline import load_pipeline
from core.settings import PROJECT_ROOT
from core.spark import read_delta
from simulator.connections import mariadb_engine
from spark_jobs.empi.identity import empi_path

PIPELINE = load_pipeline()
HOSPITAL = "410182001"  # 人民医院, whose HIS is rmyy_his on MariaDB
STOPPED_SOURCE = "rmyy_his"


def _dags_test(dag_id: str, logical_date: date, results_dir, name: str) -> str:
    done = subprocess.run(
        [os.environ["DRC_AIRFLOW_BIN"], "dags", "test", dag_id, logical_date.isoformat()],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    log = results_dir / f"airflow_dags_test_{name}.log"
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0 and "state=success" in done.stdout + done.stderr, f"{dag_id} failed; see {log}"
    return done.stdout + done.stderr


def _mariadb(action: str) -> None:
    script = {
        "stop": 'mariadb-admin --socket="$(MARIADB_SOCKET_FOR "$DRC_MARIADB_PORT")" -u root shutdown',
        "start": "start_mariadb",
    }[action]
    subprocess.run(
        [
            "bash",
            "-c",
            f"source scripts/common.sh && source scripts/services.sh && ensure_env && export_runtime_env && {script}",
        ],
        cwd=PROJECT_ROOT,
        check=True,
        timeout=120,
    )


def _visits(day: date) -> dict[str, int]:
    with warehouse_engine().connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT org_code, SUM(total_visits) FROM marts.fct_daily_outpatient_visits "
                    "WHERE visit_date = :d GROUP BY 1"
                ),
                {"d": day},
            ).all()
        )


def _hospital_day(day: date) -> dict:
    with warehouse_engine().connect() as conn:
        judged = conn.execute(
            sa.text(
                "SELECT status, was_missing FROM ingest.day_judgement WHERE source_system = :s AND org_code = :o "
                "AND business_date = :d"
            ),
            {"s": STOPPED_SOURCE, "o": HOSPITAL, "d": day},
        ).one()
        alert = conn.execute(
            sa.text(
                "SELECT resolved_at IS NULL FROM ops.alert WHERE kind = 'day_missing' AND subject = :subject "
                "ORDER BY alert_id DESC LIMIT 1"
            ),
            {"subject": f"{STOPPED_SOURCE}/{HOSPITAL}/{day}"},
        ).scalar()
        feed = conn.execute(
            sa.text(
                "SELECT version, complete, status FROM export.v_feed_status WHERE feed = 'daily_service_volume' "
                "AND period = :p"
            ),
            {"p": f"{day:%Y%m%d}"},
        ).one()
    return {
        "status": judged.status,
        "was_missing": judged.was_missing,
        "alert_open": alert,
        "export_version": feed.version,
        "export_complete": feed.complete,
        "export_status": feed.status,
    }


@pytest.mark.runs_last  # it adds a simulated day, which the other tests' reconciliations must not see
def test_nightly_dag_isolates_a_stopped_source_and_catches_it_up(spark, pipeline_done, results_dir):
    business_day = pipeline_done.last_day + timedelta(days=1)
    run_date = business_day + timedelta(days=1)  # the night after the business day (Beijing time)
    identities_before = _master_ids(spark)
    assert drc_main(["simulate", "--until", business_day.isoformat()]) == 0
    with mariadb_engine(STOPPED_SOURCE).connect() as conn:
        source_visits = conn.execute(
            sa.text("SELECT COUNT(*) FROM MZ_JZJL WHERE DATE(JZSJ) = :d"), {"d": business_day}
        ).scalar()
    assert source_visits > 0

    _mariadb("stop")
    try:
        _dags_test(PIPELINE.nightly_dag_id, run_date, results_dir, "nightly_with_source_down")
        night = _visits(business_day)
        assert night.get(HOSPITAL, 0) == 0, "nothing of the stopped hospital arrived"
        assert sum(1 for visits in night.values() if visits) > 5, "every other institution's day was processed"
        hospital = _hospital_day(business_day)
        assert hospital["status"] == "missing" and hospital["alert_open"]
        assert hospital["export_complete"] is False, "the day's file says it is incomplete"
        with warehouse_engine().connect() as conn:
            assert (
                conn.execute(
                    sa.text(
                        "SELECT complete FROM ingest.v_day_completeness WHERE org_code = :o AND business_date = :d"
                    ),
                    {"o": HOSPITAL, "d": business_day},
                ).scalar()
                is False
            )
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM ops.v_open_alert WHERE kind = 'source_down' AND subject = :s"),
                    {"s": STOPPED_SOURCE},
                ).scalar()
                == 1
            )
    finally:
        _mariadb("start")

    _dags_test(PIPELINE.collect.dag_id_prefix + STOPPED_SOURCE, run_date, results_dir, "collect_rmyy")
    hospital = _hospital_day(business_day)
    assert hospital["status"] == "late" and hospital["was_missing"] and hospital["alert_open"] is False
    _dags_test(PIPELINE.catch_up_dag_id, run_date, results_dir, "catch_up")
    caught_up = _visits(business_day)
    assert caught_up[HOSPITAL] == source_visits, "every one of the hospital's visits, once the data came"
    others = {k: v for k, v in night.items() if k != HOSPITAL}
    assert {k: v for k, v in caught_up.items() if k != HOSPITAL} == others, "the others are unchanged"
    hospital = _hospital_day(business_day)
    assert hospital["export_version"] >= 2 and hospital["export_complete"] is True
    assert hospital["export_status"] in ("delivered", "delivered_late")
    with warehouse_engine().connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM ops.v_open_alert WHERE kind = 'source_down' AND subject = :s"),
                {"s": STOPPED_SOURCE},
            ).scalar()
            == 0
        )
        manifest = conn.execute(
            sa.text(
                "SELECT manifest FROM export.feed_version WHERE feed = 'daily_service_volume' AND period = :p "
                "ORDER BY version DESC LIMIT 1"
            ),
            {"p": f"{business_day:%Y%m%d}"},
        ).scalar()
    assert json.loads(manifest)["row_count"] >= len(caught_up)

    # the new day's patients were matched incrementally; every unchanged record that belonged to a resident kept
    # its master id (a record still on its own may join the resident who turned up today)
    identities_after = _master_ids(spark)
    assert len(identities_after) > len(identities_before)
    kept = {k: v for k, v in identities_before.items() if k in identities_after}
    assert len(kept) >= 0.99 * len(identities_before)
    assert all(identities_after[k][0] == master for k, (master, attached) in kept.items() if attached)


def _master_ids(spark) -> dict[tuple[str, str], tuple[str, bool]]:
    """(record, identity fingerprint) -> (master id, whether a resident holds it: valid ID, link or manual)."""
    registry = read_delta(spark, empi_path("records"))
    attached = F.col("id_valid") | F.col("decision").isin("link", "manual", "id_number")
    return {
        (r.record_id, r.fingerprint): (r.master_id, r.attached)
        for r in registry.select("record_id", "fingerprint", "master_id", attached.alias("attached")).collect()
    }


@pytest.mark.runs_last(order=2)  # after the nightly, collection and catch-up runs above
def test_the_dag_grid_shows_the_night_in_the_airflow_ui(browser, results_dir):
    base = f"http://localhost:{os.environ['DRC_AIRFLOW_PORT']}"
    token = requests.post(
        f"{base}/auth/token",
        json={"username": "admin", "password": os.environ["DRC_AIRFLOW_ADMIN_PASSWORD"]},
        timeout=30,
    ).json()["access_token"]
    runs = requests.get(
        f"{base}/api/v2/dags/{PIPELINE.nightly_dag_id}/dagRuns",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["dag_runs"]
    assert any(r["state"] == "success" for r in runs), "the night's run is recorded where engineers look"
    browser.get(f"{base}/api/v2/monitor/health")
    browser.add_cookie({"name": "_token", "value": token, "path": "/"})
    browser.get(f"{base}/dags/{PIPELINE.nightly_dag_id}")
    WebDriverWait(browser, 90).until(
        lambda d: (
            "deadline" in d.find_element("tag name", "body").text
            and "silver" in d.find_element("tag name", "body").text
        )
    )
    text = browser.find_element("tag name", "body").text
    assert "login" not in browser.current_url and PIPELINE.nightly_dag_id in text
    browser.save_screenshot(str(results_dir / "airflow_nightly_grid.png"))
