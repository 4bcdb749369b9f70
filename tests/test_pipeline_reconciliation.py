"""End to end over the simulated 人民医院 HIS: every visit reaches the mart, nothing lost or doubled."""

from __future__ import annotations

import sqlalchemy as sa
from pyspark.sql import functions as F

from cli.main import main as drc_main
from core.db import warehouse_engine
from core.spark import read_delta
from ingestion.bronze import bronze_path
from simulator.connections import mariadb_engine, source_pg_engine
from spark_jobs.standardize import current_state, quarantine_path, silver_path


def _source_visits_per_day() -> dict:
    with mariadb_engine("rmyy_his").connect() as conn:
        return dict(conn.execute(sa.text("SELECT DATE(JZSJ), COUNT(*) FROM MZ_JZJL GROUP BY 1")).all())


def test_visits_reconcile_source_bronze_silver_mart_per_day(spark, pipeline_done):
    source = _source_visits_per_day()
    assert sorted(source) == pipeline_done.days and all(n > 10 for n in source.values())
    landed = current_state(read_delta(spark, bronze_path("rmyy_his", "MZ_JZJL")), ["JZID"])  # 作废 deletes applied
    bronze = dict(landed.groupBy(F.to_date("JZSJ")).agg(F.countDistinct("JZID")).collect())
    visits = read_delta(spark, silver_path("encounter")).where(
        (F.col("source_system") == "rmyy_his") & F.col("encounter_class_code").isin("100", "200")
    )
    silver = dict(visits.groupBy("visit_date").count().collect())
    with warehouse_engine().connect() as conn:
        mart = dict(
            conn.execute(
                sa.text(
                    "SELECT visit_date, SUM(total_visits) FROM marts.fct_daily_outpatient_visits "
                    "WHERE org_code = '410182001' GROUP BY 1"
                )
            ).all()
        )
        # the mart counts each visit once: a duplicate save (a second id for the same registration) is flagged
        flagged = dict(
            conn.execute(
                sa.text(
                    "SELECT visit_date, count(*) FROM marts.fct_encounter WHERE source_system = 'rmyy_his' "
                    "AND encounter_class_code IN ('100', '200') AND NOT is_counted GROUP BY 1"
                )
            ).all()
        )
    assert bronze == source
    assert silver == source
    assert {day: mart[day] + flagged.get(day, 0) for day in mart} == source


def test_every_source_patient_is_in_silver_or_quarantine(spark, pipeline_done):
    with mariadb_engine("rmyy_his").connect() as conn:
        source_ids = {r[0] for r in conn.execute(sa.text("SELECT BRID FROM GH_BRJBXX"))}
    his = F.col("source_system") == "rmyy_his"
    silver_ids = {r.local_patient_id for r in read_delta(spark, silver_path("person")).where(his).collect()}
    quarantined = read_delta(spark, quarantine_path()).where((F.col("entity") == "person") & his)
    quarantined_ids = {r.record_key for r in quarantined.collect()}
    assert silver_ids | quarantined_ids == source_ids
    assert not silver_ids & quarantined_ids


def test_re_registered_resident_shares_one_master_id_and_bad_ids_stay_apart(pipeline_done):
    """The answer key says which local ids are one resident: valid ID numbers must link them."""
    with source_pg_engine("sim_truth").connect() as conn:
        truth = {
            r.local_patient_id: r.resident_id
            for r in conn.execute(
                sa.text("SELECT local_patient_id, resident_id FROM patient_truth WHERE source_system = 'rmyy_his'")
            )
        }
        defects = {
            (r.record_id, r.defect)
            for r in conn.execute(sa.text("SELECT record_id, defect FROM defect_log WHERE source_system = 'rmyy_his'"))
        }
    with warehouse_engine().connect() as conn:
        persons = {
            r.local_patient_id: r
            for r in conn.execute(
                sa.text(
                    "SELECT local_patient_id, master_id, id_number_valid FROM ods.person WHERE source_system = "
                    "'rmyy_his'"
                )
            )
        }
    by_master: dict[str, set[int]] = {}
    for local_id, person in persons.items():
        by_master.setdefault(person.master_id, set()).add(truth[local_id])
    assert all(len(residents) == 1 for residents in by_master.values()), "a master id mixes two residents"
    for local_id, defect in defects:
        if defect in ("missing_id_number", "wrong_check_digit"):
            assert persons[local_id].id_number_valid is False, f"{local_id} has a {defect} but passed"
    # Every resident's records with a valid ID number share one master id (re-registrations included).
    valid = [lid for lid, p in persons.items() if p.id_number_valid]
    assert len({persons[lid].master_id for lid in valid}) == len({truth[lid] for lid in valid})


def test_re_running_steps_changes_nothing(spark, pipeline_done):
    before = {e: read_delta(spark, silver_path(e)).count() for e in ("person", "encounter")}
    bronze_before = read_delta(spark, bronze_path("rmyy_his", "MZ_JZJL")).count()
    assert drc_main(["ingest"]) == 0
    assert drc_main(["silver"]) == 0
    assert read_delta(spark, bronze_path("rmyy_his", "MZ_JZJL")).count() == bronze_before
    assert {e: read_delta(spark, silver_path(e)).count() for e in before} == before


def test_quality_checks_every_silver_row(spark, pipeline_done):
    """The quality run's row count per dataset is the silver table's: no row escapes the rules."""
    with warehouse_engine().connect() as conn:
        checked = conn.execute(sa.text("SELECT sum(rows) FROM dq.dataset_volume WHERE dataset = 'encounter'")).scalar()
    assert checked == read_delta(spark, silver_path("encounter")).count() > 0
