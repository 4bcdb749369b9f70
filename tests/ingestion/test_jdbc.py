"""JDBC collection: watermark and snapshot modes land every change once; onboarding is configuration only;
an unreachable source is reported and caught up; schema drift stops only the drifted table."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from core.cli import main as drc_main
from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import bronze_path
from ingestion.jdbc import collect_incremental_table, collect_snapshot_table
from ingestion.monitoring import forget_source, source_status
from ingestion.registry import load_source
from ingestion.runner import collect_source

T0 = datetime(2026, 11, 10, 8, 0, 0, 123000)
SOURCE = "scratch_jdbc"


def _yaml(tmp_path, body: str, name: str = SOURCE) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _mariadb(database: str = "mysql") -> sa.Engine:
    return sa.create_engine(get_settings().mariadb_url(database), poolclass=sa.pool.NullPool)


def _pg(database: str) -> sa.Engine:
    return sa.create_engine(get_settings().source_pg_url(database), poolclass=sa.pool.NullPool,
                            isolation_level="AUTOCOMMIT")


def _run(engine: sa.Engine, *statements: str, **params) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


MARIADB_YAML = f"""
name: {SOURCE}
org_code: "410182101"
mode: jdbc_incremental
connection: {{kind: mariadb, database: {SOURCE}, user: his, password_env: DRC_HIS_DB_PASSWORD}}
strategy: {{late_arrival_minutes: 30, retries: 1, retry_backoff_seconds: 0.1}}
tables:
  - {{name: ZZ_VISIT, keys: [ID], watermark: XGSJ, business_time: JZSJ, partition_column: ID}}
  - {{name: ZZ_DIAG, keys: [ID], watermark: XGSJ}}
"""


@pytest.fixture
def scratch_mariadb(tmp_path):
    _run(_mariadb(), f"DROP DATABASE IF EXISTS {SOURCE}", f"CREATE DATABASE {SOURCE} CHARACTER SET utf8mb4")
    _run(_mariadb(SOURCE), "CREATE TABLE ZZ_VISIT (ID INT PRIMARY KEY, V VARCHAR(8), JZSJ DATETIME, XGSJ DATETIME(3))",
         "CREATE TABLE ZZ_DIAG (ID INT PRIMARY KEY, D VARCHAR(8), XGSJ DATETIME(3))")
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)
    yield load_source(_yaml(tmp_path, MARIADB_YAML))
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    _run(_mariadb(), f"DROP DATABASE IF EXISTS {SOURCE}")


def _visit(i: int, value: str, at: datetime) -> None:
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_VISIT VALUES (:i, :v, :t, :t)", i=i, v=value, t=at)


def test_late_rows_and_updates_land_once_and_reruns_are_no_ops(spark, scratch_mariadb):
    table = scratch_mariadb.table("ZZ_VISIT")
    for i in range(3):
        _visit(i, "a", T0 + timedelta(minutes=i))
    assert collect_incremental_table(spark, scratch_mariadb, table) == 3
    assert collect_incremental_table(spark, scratch_mariadb, table) == 0

    # A row committed now but stamped before the newest landed one, and a new version of row 0.
    _visit(9, "late", T0 + timedelta(seconds=90))
    _run(_mariadb(SOURCE), "UPDATE ZZ_VISIT SET V = 'b', XGSJ = :t WHERE ID = 0", t=T0 + timedelta(minutes=5))
    assert collect_incremental_table(spark, scratch_mariadb, table) == 2
    assert collect_incremental_table(spark, scratch_mariadb, table) == 0

    bronze = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert sorted((r.ID, r.V) for r in bronze.collect()) == [(0, "a"), (0, "b"), (1, "a"), (2, "a"), (9, "late")]
    assert bronze.select("_source_pos").distinct().count() == 5
    assert bronze.where(F.col("_org_code") != "410182101").count() == 0
    assert bronze.select("_batch_id").distinct().count() == 2


def test_unreachable_source_is_retried_reported_without_secret_then_caught_up(spark, scratch_mariadb, tmp_path):
    _visit(1, "a", T0)
    down = load_source(_yaml(tmp_path, MARIADB_YAML.replace("user: his,", "user: his, port: 1,")))
    waits: list[float] = []
    results = collect_source(spark, down, sleep=waits.append)
    assert [r.status for r in results] == ["source_down"] and waits == [0.1]
    status = {r["table_name"]: r for r in source_status() if r["source_system"] == SOURCE}
    assert status["*"]["last_status"] == "source_down"
    assert "unreachable" in status["*"]["last_error"]
    assert os.environ["DRC_HIS_DB_PASSWORD"] not in status["*"]["last_error"]

    results = collect_source(spark, scratch_mariadb)
    assert {r.table: r.rows for r in results} == {"ZZ_VISIT": 1, "ZZ_DIAG": 0}


def test_schema_drift_added_column_flows_removed_column_stops_only_its_table(spark, scratch_mariadb):
    _visit(1, "a", T0)
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_DIAG VALUES (1, 'I10', :t)", t=T0)
    assert [r.rows for r in collect_source(spark, scratch_mariadb)] == [1, 1]

    _run(_mariadb(SOURCE), "ALTER TABLE ZZ_VISIT ADD COLUMN YBLSH VARCHAR(20)", "ALTER TABLE ZZ_DIAG DROP COLUMN D")
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_VISIT VALUES (2, 'b', :t, :t, 'YB001')", t=T0 + timedelta(hours=1))
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_DIAG VALUES (2, :t)", t=T0 + timedelta(hours=1))
    results = {r.table: r for r in collect_source(spark, scratch_mariadb)}
    assert results["ZZ_VISIT"].rows == 1 and results["ZZ_VISIT"].status == "success"
    assert results["ZZ_DIAG"].status == "stopped" and "column d is gone" in results["ZZ_DIAG"].error
    assert read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT")).where("ID = 2").first()["YBLSH"] == "YB001"

    assert drc_main(["ingest", "accept-drift", "--source", SOURCE, "--table", "ZZ_DIAG"]) == 0
    results = {r.table: r for r in collect_source(spark, scratch_mariadb)}
    assert results["ZZ_DIAG"].rows == 1
    assert read_delta(spark, bronze_path(SOURCE, "ZZ_DIAG")).where("ID = 2").first()["D"] is None


SNAPSHOT_YAML = f"""
name: {SOURCE}_pg
org_code: "410182102"
mode: jdbc_snapshot
connection: {{kind: postgresql, database: {SOURCE}, schema: dict, user: his, password_env: DRC_HIS_DB_PASSWORD}}
tables:
  - {{name: dept, keys: [code]}}
"""


def test_snapshot_mode_lands_only_the_difference_including_deletes(spark, tmp_path):
    _run(_pg("postgres"), f"DROP DATABASE IF EXISTS {SOURCE}", f"CREATE DATABASE {SOURCE}")
    try:
        _run(_pg(SOURCE), "CREATE SCHEMA dict", "CREATE TABLE dict.dept (code text PRIMARY KEY, name text)",
             "INSERT INTO dict.dept VALUES ('01', '内科'), ('02', '外科'), ('03', '儿科')")
        source = load_source(_yaml(tmp_path, SNAPSHOT_YAML, f"{SOURCE}_pg"))
        table = source.tables[0]
        shutil.rmtree(get_settings().lake_path("bronze", source.name), ignore_errors=True)
        forget_source(source.name)
        assert collect_snapshot_table(spark, source, table) == 3
        assert collect_snapshot_table(spark, source, table) == 0
        _run(_pg(SOURCE), "UPDATE dict.dept SET name = '普外科' WHERE code = '02'",
             "DELETE FROM dict.dept WHERE code = '03'", "INSERT INTO dict.dept VALUES ('04', '中医科')")
        assert collect_snapshot_table(spark, source, table) == 3
        assert collect_snapshot_table(spark, source, table) == 0
        changes = read_delta(spark, bronze_path(source.name, "dept")).where(F.col("_batch_id").endswith(".1"))
        assert sorted((r.code, r._op, r.name) for r in changes.collect()) == [
            ("02", "u", "普外科"), ("03", "d", "儿科"), ("04", "c", "中医科")]
    finally:
        shutil.rmtree(get_settings().lake_path("bronze", f"{SOURCE}_pg"), ignore_errors=True)
        _run(_pg("postgres"), f"DROP DATABASE IF EXISTS {SOURCE} WITH (FORCE)")


def test_a_new_database_is_onboarded_by_a_yaml_file_alone(spark, scratch_mariadb, tmp_path, monkeypatch):
    """docs/onboarding.md: drop a YAML into the sources folder, validate, collect — no code change."""
    sources = tmp_path / "sources"
    sources.mkdir()
    shutil.copy(tmp_path / f"{SOURCE}.yaml", sources / f"{SOURCE}.yaml")
    monkeypatch.setenv("DRC_SOURCES_DIR", str(sources))
    for i in range(25):
        _visit(i, "x", T0 + timedelta(minutes=i))
    assert drc_main(["ingest", "validate"]) == 0
    assert drc_main(["ingest", "--source", SOURCE]) == 0
    assert drc_main(["ingest", "status", "--source", SOURCE]) == 0
    bronze = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert bronze.count() == 25 and bronze.select("ID").distinct().count() == 25
    status = {r["table_name"]: r for r in source_status() if r["source_system"] == SOURCE}
    assert status["ZZ_VISIT"]["rows_total"] == 25 and status["ZZ_VISIT"]["last_status"] == "success"
