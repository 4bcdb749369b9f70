"""The Airflow DAG runs the whole chain for a new business day, through the same CLI steps."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from core.db import mariadb_engine, warehouse_engine
from core.spark import read_delta
from spark_jobs.empi.identity import empi_path

DAG_ID = "xydrc_daily_pipeline"


@pytest.mark.runs_last  # it adds a simulated day, which the other tests' reconciliations must not see
def test_dag_processes_the_next_business_day_end_to_end(spark, pipeline_done, results_dir):
    business_day = pipeline_done.last_day + timedelta(days=1)
    identities_before = _master_ids(spark)
    logical_date = business_day + timedelta(days=1)
    completed = subprocess.run([os.environ["DRC_AIRFLOW_BIN"], "dags", "test", DAG_ID, logical_date.isoformat()],
                               capture_output=True, text=True, timeout=1200)
    (results_dir / "airflow_dags_test.log").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    assert completed.returncode == 0, f"airflow dags test failed; see {results_dir / 'airflow_dags_test.log'}"
    assert "state=success" in completed.stdout + completed.stderr

    with mariadb_engine("rmyy_his").connect() as conn:
        source = conn.execute(sa.text("SELECT COUNT(*) FROM MZ_JZJL WHERE DATE(JZSJ) = :d"),
                              {"d": business_day}).scalar()
    with warehouse_engine().connect() as conn:
        per_org = dict(conn.execute(sa.text("SELECT org_code, SUM(total_visits) FROM marts.fct_daily_outpatient_visits "
                                            "WHERE visit_date = :d GROUP BY 1"), {"d": business_day}).all())
    assert source > 0 and per_org["410182001"] == source       # the 人民医院's visits, every one
    assert len(per_org) > 5, "the township clinics' and other hospitals' visits of the day are counted too"
    with warehouse_engine().connect() as conn:     # the day's feeds were delivered by their export tasks
        delivered = dict(conn.execute(sa.text(
            "SELECT feed, status FROM export.v_feed_status WHERE period = :p"), {"p": f"{business_day:%Y%m%d}"}).all())
        manifest = conn.execute(sa.text(
            "SELECT manifest FROM export.feed_version WHERE feed = 'daily_service_volume' AND period = :p "
            "ORDER BY version DESC LIMIT 1"), {"p": f"{business_day:%Y%m%d}"}).scalar()
    assert set(delivered) == {"daily_service_volume", "empi_pix_daily"}
    assert set(delivered.values()) <= {"delivered", "delivered_late"}, delivered
    assert json.loads(manifest)["row_count"] >= len(per_org)

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
    return {(r.record_id, r.fingerprint): (r.master_id, r.attached) for r in registry.select(
        "record_id", "fingerprint", "master_id", attached.alias("attached")).collect()}
