"""Watermark collection lands every row version exactly once, including rows committed late."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from core.db import mariadb_engine
from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import bronze_path
from ingestion.jdbc_incremental import ingest_table
from ingestion.registry import SourceConfig, TableConfig

T0 = datetime(2026, 11, 10, 8, 0, 0, 123000)


@pytest.fixture
def scratch_source():
    source = SourceConfig("scratch_his", "测试源", "410182001", "mariadb", "jdbc_incremental", "scratch_his",
                          (TableConfig("ZZ_VISIT", ("ID",), "XGSJ", late_arrival_minutes=30),))
    with mariadb_engine("mysql").begin() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS scratch_his"))
        conn.execute(sa.text("CREATE DATABASE scratch_his CHARACTER SET utf8mb4"))
    with mariadb_engine("scratch_his").begin() as conn:
        conn.execute(sa.text("CREATE TABLE ZZ_VISIT (ID INT PRIMARY KEY, V VARCHAR(8), XGSJ DATETIME(3))"))
    shutil.rmtree(bronze_path("scratch_his", "ZZ_VISIT"), ignore_errors=True)
    yield source
    shutil.rmtree(get_settings().lake_path("bronze", "scratch_his"), ignore_errors=True)
    with mariadb_engine("mysql").begin() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS scratch_his"))


def _write(sql: str, **params) -> None:
    with mariadb_engine("scratch_his").begin() as conn:
        conn.execute(sa.text(sql), params)


def test_late_rows_and_updates_land_once_and_reruns_are_no_ops(spark, scratch_source):
    table = scratch_source.tables[0]
    for i in range(3):
        _write("INSERT INTO ZZ_VISIT VALUES (:i, 'a', :t)", i=i, t=T0 + timedelta(minutes=i))
    assert ingest_table(spark, scratch_source, table).rows == 3
    assert ingest_table(spark, scratch_source, table).rows == 0

    # A row committed now but stamped before the newest landed one, and a new version of row 0.
    _write("INSERT INTO ZZ_VISIT VALUES (9, 'late', :t)", t=T0 + timedelta(seconds=90))
    _write("UPDATE ZZ_VISIT SET V = 'b', XGSJ = :t WHERE ID = 0", t=T0 + timedelta(minutes=5))
    assert ingest_table(spark, scratch_source, table).rows == 2
    assert ingest_table(spark, scratch_source, table).rows == 0

    bronze = read_delta(spark, bronze_path("scratch_his", "ZZ_VISIT"))
    versions = sorted((r.ID, r.V) for r in bronze.collect())
    assert versions == [(0, "a"), (0, "b"), (1, "a"), (2, "a"), (9, "late")]
    assert bronze.select("_source_pos").distinct().count() == 5
    assert bronze.where(F.col("_org_code") != "410182001").count() == 0
    assert bronze.select("_batch_id").distinct().count() == 2
