"""Binlog CDC (mode mysql_binlog) against the real MariaDB: a snapshot, then every insert, update and delete
lands once and bronze's current state equals the source; reruns land nothing; an added column comes through;
a dropped column stops only its table. Runs in a scratch database, never the simulated HIS."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.settings import get_settings
from core.spark import read_delta
from ingestion import mysql_binlog
from ingestion.bronze import bronze_path
from ingestion.monitoring import forget_source, load_checkpoint
from ingestion.registry import SourceConfig, load_source
from simulator.connections import mariadb_url

SOURCE = "scratch_binlog"
OTHER_DB = "scratch_binlog_other"
T0 = datetime(2026, 11, 10, 8, 0, 0, 123000)

YAML = f"""
name: {SOURCE}
org_code: "410182001"
mode: mysql_binlog
connection: {{kind: mariadb, database: {SOURCE}, user: his, password_env: DRC_HIS_DB_PASSWORD}}
strategy: {{batch_size: {{batch_size}}, parallelism: 2, retries: 0}}
tables:
  - {{name: ZZ_VISIT, keys: [ID], commit_time: XGSJ, business_time: JZSJ}}
  - {{name: ZZ_DICT, keys: [CODE], commit_time: XGSJ}}
"""


def _engine(database: str = "mysql") -> sa.Engine:
    return sa.create_engine(mariadb_url(database), poolclass=sa.pool.NullPool)


def _run(*statements: str, database: str = SOURCE, **params) -> None:
    """One transaction."""
    with _engine(database).begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


def _forget() -> None:
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)
    _run(f"DROP DATABASE IF EXISTS {SOURCE}", f"DROP DATABASE IF EXISTS {OTHER_DB}", database="mysql")


def _source(tmp_path, batch_size: int = 50_000) -> SourceConfig:
    path = tmp_path / f"{SOURCE}.yaml"
    path.write_text(YAML.replace("{batch_size}", str(batch_size)), encoding="utf-8")
    return load_source(path)


@pytest.fixture
def scratch(tmp_path):
    _forget()
    _run(f"CREATE DATABASE {SOURCE} CHARACTER SET utf8mb4", f"CREATE DATABASE {OTHER_DB}", database="mysql")
    _run(
        "CREATE TABLE ZZ_VISIT (ID INT PRIMARY KEY, V VARCHAR(16), JE DECIMAL(10,2), JZSJ DATETIME, XGSJ DATETIME(3))",
        "CREATE TABLE ZZ_DICT (CODE VARCHAR(8) PRIMARY KEY, NAME VARCHAR(32), YXBZ TINYINT, XGSJ DATETIME(3))",
        "CREATE TABLE ZZ_UNLISTED (ID INT PRIMARY KEY)",
    )
    _run("CREATE TABLE ZZ_VISIT (ID INT PRIMARY KEY, V VARCHAR(16))", database=OTHER_DB)
    for i in range(1, 6):
        _visit(i, f"初{i}")
    _run("INSERT INTO ZZ_DICT VALUES ('101', '内科', 1, :t), ('201', '外科', 1, :t), ('301', '儿科', 1, :t)", t=T0)
    yield tmp_path
    _forget()


def _visit(i: int, value: str, minutes: int = 0) -> None:
    at = T0 + timedelta(minutes=minutes)
    _run("INSERT INTO ZZ_VISIT VALUES (:i, :v, :je, :t, :t)", i=i, v=value, je=i * 1.25, t=at)


def _bronze(spark, table: str) -> DataFrame:
    return read_delta(spark, bronze_path(SOURCE, table))


def _versions(spark, table: str) -> int:
    return DeltaTable.forPath(spark, bronze_path(SOURCE, table)).history(1).first()["version"]


def _current(bronze: DataFrame, keys: list[str]) -> DataFrame:
    latest = Window.partitionBy(*keys).orderBy(F.col("_source_pos").desc())
    return bronze.withColumn("_rank", F.row_number().over(latest)).where((F.col("_rank") == 1) & (F.col("_op") != "d"))


def _assert_reconciles(spark, source: SourceConfig, table: str) -> None:
    """Bronze's current state (latest version per key, deletes applied) equals the source table."""
    url, props = source.connection.jdbc()
    truth = spark.read.jdbc(url, table, properties=props)
    current = _current(_bronze(spark, table), list(source.table(table).keys)).select(*truth.columns)
    assert current.exceptAll(truth).count() == 0, f"{table}: bronze holds rows the source does not"
    assert truth.exceptAll(current).count() == 0, f"{table}: the source holds rows bronze does not"


def _results(spark, source: SourceConfig) -> dict[str, tuple[str, int]]:
    return {r.table: (r.status, r.rows) for r in mysql_binlog.collect(spark, source)}


def test_snapshot_then_changes_reconcile_and_rerun_lands_nothing(spark, scratch):
    source = _source(scratch, batch_size=4)  # several batches, each cut at a transaction end
    assert _results(spark, source) == {"ZZ_VISIT": ("success", 5), "ZZ_DICT": ("success", 3)}
    assert {r._op for r in _bronze(spark, "ZZ_VISIT").select("_op").distinct().collect()} == {"r"}
    assert not os.path.exists(bronze_path(SOURCE, "ZZ_UNLISTED"))

    for i in range(6, 16):  # ten inserts in five transactions
        _visit(i, f"新{i}", minutes=i)
    _run("UPDATE ZZ_VISIT SET V = '改', XGSJ = :t WHERE ID IN (1, 7)", t=T0 + timedelta(hours=1))
    _run("DELETE FROM ZZ_VISIT WHERE ID IN (2, 8)")
    _run("UPDATE ZZ_VISIT SET ID = 100, XGSJ = :t WHERE ID = 3", t=T0 + timedelta(hours=2))  # key change
    _run("UPDATE ZZ_DICT SET NAME = '普外科', YXBZ = 0, XGSJ = :t WHERE CODE = '201'", t=T0 + timedelta(hours=1))
    _run("DELETE FROM ZZ_DICT WHERE CODE = '301'")
    _run("INSERT INTO ZZ_UNLISTED VALUES (1)")
    _run("INSERT INTO ZZ_VISIT VALUES (1, 'x')", database=OTHER_DB)
    end = mysql_binlog.binlog_end(source)
    results = _results(spark, source)

    assert results["ZZ_VISIT"][0] == results["ZZ_DICT"][0] == "success"
    # 10 inserts + 2 updates + 2 deletes + the key change (delete old key, new version) = 16
    assert results["ZZ_VISIT"][1] == 16 and results["ZZ_DICT"][1] == 2
    for table in ("ZZ_VISIT", "ZZ_DICT"):
        _assert_reconciles(spark, source, table)
    visits = _bronze(spark, "ZZ_VISIT")
    assert sorted(r.ID for r in visits.where("_op = 'd'").collect()) == [2, 3, 8]
    assert [r.CODE for r in _bronze(spark, "ZZ_DICT").where("_op = 'd'").collect()] == ["301"]
    positions = [(r._op, r._source_pos) for r in visits.select("_op", "_source_pos").collect()]
    assert len({p for _, p in positions}) == len(positions), "every landed row has its own position"
    assert len({len(p) for _, p in positions}) == 1, "positions are fixed width"
    assert max(p for op, p in positions if op == "r") < min(p for op, p in positions if op != "r"), (
        "the snapshot sorts before later changes"
    )
    changed = visits.where("_op IN ('c', 'u')")
    assert changed.where("_source_ts <> XGSJ").count() == 0, "c/u rows carry the row's own commit time"
    assert not os.path.exists(bronze_path(SOURCE, "ZZ_UNLISTED"))
    assert mysql_binlog.Position.parse(load_checkpoint(SOURCE)) >= end, "the checkpoint reached the binlog end"

    versions = {t: _versions(spark, t) for t in ("ZZ_VISIT", "ZZ_DICT")}
    assert _results(spark, source) == {"ZZ_VISIT": ("no_change", 0), "ZZ_DICT": ("no_change", 0)}
    assert {t: _versions(spark, t) for t in versions} == versions, "a rerun without changes commits nothing"


def test_added_column_arrives(spark, scratch):
    source = _source(scratch)
    _results(spark, source)
    _run("ALTER TABLE ZZ_VISIT ADD COLUMN YBJZLSH VARCHAR(20)")
    _run("INSERT INTO ZZ_VISIT VALUES (6, '医保', 3.00, :t, :t, 'YB0001')", t=T0)
    _run("UPDATE ZZ_VISIT SET YBJZLSH = 'YB0002', XGSJ = :t WHERE ID = 1", t=T0 + timedelta(hours=1))
    assert _results(spark, source)["ZZ_VISIT"] == ("success", 2)
    visits = _bronze(spark, "ZZ_VISIT")
    assert {r.ID: r.YBJZLSH for r in visits.where("_op <> 'r'").collect()} == {6: "YB0001", 1: "YB0002"}
    assert visits.where("_op = 'r'").where("YBJZLSH IS NOT NULL").count() == 0
    _assert_reconciles(spark, source, "ZZ_VISIT")


def test_dropped_column_stops_only_that_table(spark, scratch):
    source = _source(scratch)
    _results(spark, source)
    _run("INSERT INTO ZZ_DICT VALUES ('401', '妇产科', 1, :t)", t=T0)  # before the drop: still lands
    _run("ALTER TABLE ZZ_DICT DROP COLUMN YXBZ")
    _run("INSERT INTO ZZ_DICT VALUES ('501', '眼科', :t)", t=T0)
    _visit(6, "照常")
    results = _results(spark, source)
    assert results["ZZ_DICT"][0] == "stopped"
    assert results["ZZ_VISIT"] == ("success", 1)
    assert [r.CODE for r in _bronze(spark, "ZZ_DICT").where("_op = 'c'").collect()] == ["401"]

    _visit(7, "仍照常")
    results = _results(spark, source)
    assert results["ZZ_DICT"][0] == "stopped", "the table stays stopped until the drift is accepted"
    assert results["ZZ_VISIT"] == ("success", 1)
    _assert_reconciles(spark, source, "ZZ_VISIT")


def test_cdc_throughput(spark, scratch, results_dir):
    """Updates from binlog to bronze; DRC_BINLOG_BENCH_EVENTS sets the count (benchmark: 100000)."""
    events = int(os.environ.get("DRC_BINLOG_BENCH_EVENTS", "2000"))
    _run(
        "CREATE TABLE ZZ_BENCH (ID INT PRIMARY KEY, V INT, NAME VARCHAR(32), JE DECIMAL(12,2), JZSJ DATETIME, "
        "XGSJ DATETIME(3))"
    )
    with _engine(SOURCE).begin() as conn:
        conn.execute(
            sa.text("INSERT INTO ZZ_BENCH VALUES (:i, 0, '门诊病人', 12.50, :t, :t)"),
            [{"i": i, "t": T0} for i in range(events)],
        )
    path = scratch / "bench.yaml"
    path.write_text(
        YAML.replace("{batch_size}", "50000").replace(
            "tables:", "tables:\n  - {name: ZZ_BENCH, keys: [ID], commit_time: XGSJ, business_time: JZSJ}"
        ),
        "utf-8",
    )
    source = load_source(path)
    started = time.perf_counter()
    assert _results(spark, source)["ZZ_BENCH"] == ("success", events)
    snapshot_seconds = time.perf_counter() - started
    for low in range(0, events, 10_000):  # transactions of 10k row changes
        _run("UPDATE ZZ_BENCH SET V = V + 1, XGSJ = NOW(3) WHERE ID >= :low AND ID < :high", low=low, high=low + 10_000)
    started = time.perf_counter()
    assert _results(spark, source)["ZZ_BENCH"] == ("success", events)
    cdc_seconds = time.perf_counter() - started
    _assert_reconciles(spark, source, "ZZ_BENCH")
    figures = {
        "events": events,
        "snapshot_seconds": round(snapshot_seconds, 1),
        "cdc_seconds": round(cdc_seconds, 1),
        "cdc_events_per_second": round(events / cdc_seconds),
    }
    (results_dir / "mysql_binlog_throughput.json").write_text(json.dumps(figures, indent=2), "utf-8")
    print(figures)
