"""JDBC collection: watermark and snapshot modes land every change once; onboarding is configuration only;
an unreachable source is reported and caught up; schema drift stops only the drifted table; rows with a NULL
watermark are collected and counted; a snapshot that would delete too much stops until accepted."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from cli.main import main as drc_main
from core.db import warehouse_engine
from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import bronze_path, latest_versions
from ingestion.jdbc import collect_incremental_table, collect_snapshot_table
from ingestion.monitoring import forget_source, last_counts, source_status
from ingestion.registry import load_source
from ingestion.runner import collect_source
from simulator.connections import mariadb_url, source_pg_url

T0 = datetime(2026, 11, 10, 8, 0, 0, 123000)
SOURCE = "scratch_jdbc"


def _yaml(tmp_path, body: str, name: str = SOURCE) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _mariadb(database: str = "mysql") -> sa.Engine:
    return sa.create_engine(mariadb_url(database), poolclass=sa.pool.NullPool)


def _pg(database: str) -> sa.Engine:
    return sa.create_engine(source_pg_url(database), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


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
    _run(
        _mariadb(SOURCE),
        "CREATE TABLE ZZ_VISIT (ID INT PRIMARY KEY, V VARCHAR(8), JZSJ DATETIME, XGSJ DATETIME(3))",
        "CREATE TABLE ZZ_DIAG (ID INT PRIMARY KEY, D VARCHAR(8), XGSJ DATETIME(3))",
    )
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
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 3
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 0

    # A row committed now but stamped before the newest landed one, and a new version of row 0.
    _visit(9, "late", T0 + timedelta(seconds=90))
    _run(_mariadb(SOURCE), "UPDATE ZZ_VISIT SET V = 'b', XGSJ = :t WHERE ID = 0", t=T0 + timedelta(minutes=5))
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 2
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 0

    bronze = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert sorted((r.ID, r.V) for r in bronze.collect()) == [(0, "a"), (0, "b"), (1, "a"), (2, "a"), (9, "late")]
    assert bronze.select("_source_pos").distinct().count() == 5
    assert bronze.where(F.col("_org_code") != "410182101").count() == 0
    assert bronze.select("_batch_id").distinct().count() == 2


def test_a_correction_after_the_deadline_is_not_a_late_submission(spark, scratch_mariadb):
    """Timeliness (the 24:00 next-day deadline) judges a record's first arrival: an institution correcting a
    record after the deadline (as its quality report asks) is not late; a record first sent after it is."""
    table = scratch_mariadb.table("ZZ_VISIT")
    _visit(1, "a", T0)
    collect_incremental_table(spark, scratch_mariadb, table)
    after_deadline = T0 + timedelta(days=3)
    _run(_mariadb(SOURCE), "UPDATE ZZ_VISIT SET V = 'fixed', XGSJ = :t WHERE ID = 1", t=after_deadline)
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_VISIT VALUES (2, 'new', :d, :t)", d=T0, t=after_deadline)
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 2
    with warehouse_engine().connect() as conn:
        arrived = conn.execute(
            sa.text(
                "SELECT sum(a.rows), sum(a.late_rows) FROM ingest.arrival a JOIN ingest.landed_batch b USING "
                "(batch_id) "
                "WHERE b.source_system = :s AND b.table_name = 'ZZ_VISIT' GROUP BY b.batch_id "
                "ORDER BY max(b.finished_at) DESC LIMIT 1"
            ),
            {"s": SOURCE},
        ).one()
    assert tuple(arrived) == (2, 1), "two rows arrived after the deadline; only the first-time one is late"


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
strategy: {{max_delete_share: {{share}}, retries: 0}}
tables:
  - {{name: dept, keys: [code]}}
"""


def test_snapshot_mode_lands_only_the_difference_including_deletes(spark, tmp_path):
    _run(_pg("postgres"), f"DROP DATABASE IF EXISTS {SOURCE}", f"CREATE DATABASE {SOURCE}")
    try:
        _run(
            _pg(SOURCE),
            "CREATE SCHEMA dict",
            "CREATE TABLE dict.dept (code text PRIMARY KEY, name text)",
            "INSERT INTO dict.dept VALUES ('01', '内科'), ('02', '外科'), ('03', '儿科')",
        )
        # One delete of three keys is a third of this tiny dictionary: allow it (the default is 0.2).
        source = load_source(_yaml(tmp_path, SNAPSHOT_YAML.replace("{share}", "0.5"), f"{SOURCE}_pg"))
        table = source.tables[0]
        shutil.rmtree(get_settings().lake_path("bronze", source.name), ignore_errors=True)
        forget_source(source.name)
        assert collect_snapshot_table(spark, source, table).rows == 3
        assert collect_snapshot_table(spark, source, table).rows == 0
        _run(
            _pg(SOURCE),
            "UPDATE dict.dept SET name = '普外科' WHERE code = '02'",
            "DELETE FROM dict.dept WHERE code = '03'",
            "INSERT INTO dict.dept VALUES ('04', '中医科')",
        )
        assert collect_snapshot_table(spark, source, table).rows == 3
        assert collect_snapshot_table(spark, source, table).rows == 0
        changes = read_delta(spark, bronze_path(source.name, "dept")).where(F.col("_batch_id").endswith(".1"))
        assert sorted((r.code, r._op, r.name) for r in changes.collect()) == [
            ("02", "u", "普外科"),
            ("03", "d", "儿科"),
            ("04", "c", "中医科"),
        ]
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


def test_rows_with_a_null_watermark_are_collected_counted_and_land_once(spark, scratch_mariadb):
    """A NULL watermark is false for every comparison: without a read of its own such a row is never seen."""
    _visit(1, "a", T0)
    _run(_mariadb(SOURCE), "INSERT INTO ZZ_VISIT VALUES (7, 'n7', :t, NULL), (8, 'n8', :t, NULL)", t=T0)
    results = {r.table: r for r in collect_source(spark, scratch_mariadb)}
    assert results["ZZ_VISIT"].rows == 3 and results["ZZ_VISIT"].status == "success"
    assert "ZZ_VISIT" in results["ZZ_VISIT"].error and "XGSJ" in results["ZZ_VISIT"].error
    assert "7" in results["ZZ_VISIT"].error  # names a row key
    assert last_counts(SOURCE, "ZZ_VISIT") == {"null_watermark": 2, "null_watermark_landed": 2}
    status = {r["table_name"]: r for r in source_status() if r["source_system"] == SOURCE}
    assert status["ZZ_VISIT"]["last_counts"]["null_watermark"] == 2 and status["ZZ_VISIT"]["rows_total"] == 3
    bronze = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert sorted((r.ID, r.V) for r in bronze.collect()) == [(1, "a"), (7, "n7"), (8, "n8")]

    # Re-runs land nothing twice but keep reporting them; the NULL rows do not move the watermark window.
    assert {r.table: r.rows for r in collect_source(spark, scratch_mariadb)} == {"ZZ_VISIT": 0, "ZZ_DIAG": 0}
    assert last_counts(SOURCE, "ZZ_VISIT") == {"null_watermark": 2, "null_watermark_landed": 0}
    _visit(2, "b", T0 + timedelta(minutes=1))
    _run(_mariadb(SOURCE), "UPDATE ZZ_VISIT SET V = 'n7b' WHERE ID = 7")  # changed, still NULL
    _run(_mariadb(SOURCE), "UPDATE ZZ_VISIT SET XGSJ = :t WHERE ID = 8", t=T0 + timedelta(minutes=2))  # filled
    assert {r.table: r.rows for r in collect_source(spark, scratch_mariadb)} == {"ZZ_VISIT": 3, "ZZ_DIAG": 0}
    assert last_counts(SOURCE, "ZZ_VISIT") == {"null_watermark": 1, "null_watermark_landed": 1}

    bronze = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert bronze.count() == 6 and bronze.select("_source_pos").distinct().count() == 6
    current = {r.ID: (r.V, r.XGSJ is not None) for r in latest_versions(bronze, ["ID"]).collect()}
    assert current == {1: ("a", True), 2: ("b", True), 7: ("n7b", False), 8: ("n8", True)}


def test_snapshot_that_would_delete_too_much_stops_until_accepted(spark, tmp_path):
    """An emptied view reads like 'every key deleted': it stops the table, names it, and waits for a person."""
    name = f"{SOURCE}_pg"
    _run(_pg("postgres"), f"DROP DATABASE IF EXISTS {SOURCE}", f"CREATE DATABASE {SOURCE}")
    try:
        _run(
            _pg(SOURCE),
            "CREATE SCHEMA dict",
            "CREATE TABLE dict.dept (code text PRIMARY KEY, name text)",
            "INSERT INTO dict.dept SELECT lpad(n::text, 2, '0'), '科室' || n FROM generate_series(1, 10) n",
        )
        source = load_source(_yaml(tmp_path, SNAPSHOT_YAML.replace("{share}", "0.2"), name))
        shutil.rmtree(get_settings().lake_path("bronze", name), ignore_errors=True)
        forget_source(name)
        assert [r.rows for r in collect_source(spark, source)] == [10]
        _run(_pg(SOURCE), "DELETE FROM dict.dept WHERE code = '10'")  # 10 %: within the share
        assert [r.rows for r in collect_source(spark, source)] == [1]

        _run(_pg(SOURCE), "DELETE FROM dict.dept WHERE code > '02'")  # 7 of 9 live keys
        for _ in range(2):  # stays stopped until accepted
            [result] = collect_source(spark, source)
            assert result.status == "stopped" and result.rows == 0
            for part in (
                f"{name}.dept",
                "read 2 rows",
                "holds 9 live keys",
                "delete 7 keys",
                "max_delete_share",
                f"./drc ingest accept-deletes --source {name} --table dept",
            ):
                assert part in result.error, part
        bronze = read_delta(spark, bronze_path(name, "dept"))
        assert bronze.where(F.col("_op") == "d").count() == 1  # nothing more withdrawn
        status = {r["table_name"]: r for r in source_status() if r["source_system"] == name}
        assert status["dept"]["last_status"] == "stopped" and "accept-deletes" in status["dept"]["last_error"]

        assert drc_main(["ingest", "accept-deletes", "--source", name, "--table", "dept"]) == 0
        [result] = collect_source(spark, source)
        assert (result.status, result.rows) == ("success", 7)
        assert last_counts(name, "dept") == {"inserted": 0, "updated": 0, "deleted": 7, "deletes_accepted": 7}
        current = latest_versions(read_delta(spark, bronze_path(name, "dept")), ["code"])
        assert sorted(r.code for r in current.where(F.col("_op") != "d").collect()) == ["01", "02"]

        _run(_pg(SOURCE), "DELETE FROM dict.dept")  # the acceptance was used up
        assert collect_source(spark, source)[0].status == "stopped"
        with pytest.raises(SystemExit, match="nothing to accept"):
            drc_main(["ingest", "accept-deletes", "--source", name, "--table", "other"])
    finally:
        shutil.rmtree(get_settings().lake_path("bronze", name), ignore_errors=True)
        forget_source(name)
        _run(_pg("postgres"), f"DROP DATABASE IF EXISTS {SOURCE} WITH (FORCE)")


def test_a_source_restored_from_an_older_backup_stops_until_accepted_then_nothing_is_skipped(spark, scratch_mariadb):
    """A member restores last week's backup and types the lost records in again with their original times: the
    window (from bronze's newest change) would skip them without a word, so the table stops, says why and what
    to do, and after the operator's acceptance every row the source holds that bronze lacks lands."""
    table = scratch_mariadb.table("ZZ_VISIT")
    for i in range(4):
        _visit(i, "a", T0 + timedelta(hours=i))
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 4

    _run(_mariadb(SOURCE), "DELETE FROM ZZ_VISIT WHERE ID >= 2")  # the restore: the last two changes are gone
    _visit(7, "again", T0 + timedelta(hours=1, minutes=30))  # typed in again, stamped with its own (older) time
    for _ in range(2):  # stays stopped until accepted
        [result] = collect_source(spark, scratch_mariadb)[:1]
        assert (result.table, result.status, result.rows) == ("ZZ_VISIT", "stopped", 0)
        for part in (
            f"{SOURCE}.ZZ_VISIT",
            "2026-11-10 09:30:00.123000",  # the source's newest
            "2026-11-10 11:00:00.123000",  # bronze's newest
            "restored from an older backup",
            f"./drc ingest accept-rewind --source {SOURCE} --table ZZ_VISIT",
        ):
            assert part in result.error, part
    status = {r["table_name"]: r for r in source_status() if r["source_system"] == SOURCE}
    assert status["ZZ_VISIT"]["last_status"] == "stopped" and "accept-rewind" in status["ZZ_VISIT"]["last_error"]

    assert drc_main(["ingest", "accept-rewind", "--source", SOURCE, "--table", "ZZ_VISIT"]) == 0
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 1  # ID 7, below the old window
    _visit(8, "again", T0 + timedelta(hours=1, minutes=45))  # still behind bronze: read whole again
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 1
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 0  # nothing lands twice
    _visit(9, "new", T0 + timedelta(hours=5))  # caught up: the usual window again
    assert collect_incremental_table(spark, scratch_mariadb, table).rows == 1
    landed = read_delta(spark, bronze_path(SOURCE, "ZZ_VISIT"))
    assert sorted(r.ID for r in landed.collect()) == [0, 1, 2, 3, 7, 8, 9]
    with pytest.raises(SystemExit, match="nothing to accept"):
        drc_main(["ingest", "accept-rewind", "--source", SOURCE, "--table", "ZZ_VISIT"])
