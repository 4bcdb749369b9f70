"""Publish (silver -> ods) is atomic for readers: a dashboard or dbt view reading an ods table while it is
reloaded sees the old rows or the new ones, never an empty or half-loaded table, and a reload that fails
half-way leaves the old rows in place. Uses a scratch silver table and a scratch ods table with a view over
it (as dbt's staging views are), never the real ones."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from core.db import ensure_schemas, warehouse_engine
from spark_jobs import publish

TARGET = "ods.scratch_publish_atomic"
VIEW = "ods.scratch_publish_atomic_v"  # stands for a dbt staging view (bound to the table, not its name)
COLUMNS = {"record_id": "string", "name": "string", "amount": "double"}


def _drop() -> None:
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {VIEW}"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TARGET}"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {publish.STAGE_SCHEMA}.ods__scratch_publish_atomic"))


@pytest.fixture
def scratch_ods(spark, tmp_path):
    """A silver Delta table of ``rows`` rows at a scratch path, published once, with a view over the ods table."""
    ensure_schemas("ods", publish.STAGE_SCHEMA)
    _drop()
    path = str(tmp_path / "silver_scratch")

    def write_silver(rows: int, partitions: int = 1) -> None:
        (
            spark.range(rows, numPartitions=partitions)
            .select(
                F.format_string("R%07d", "id").alias("record_id"),
                F.lit("张三").alias("name"),
                (F.col("id") * 1.5).alias("amount"),
            )
            .write.format("delta")
            .mode("overwrite")
            .save(path)
        )

    write_silver(1000)
    assert publish.publish_table(spark, path, TARGET, COLUMNS).rows == 1000
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"CREATE VIEW {VIEW} AS SELECT record_id, name, amount FROM {TARGET}"))
    yield path, write_silver
    _drop()


def _count(conn: sa.Connection) -> int:
    return conn.execute(sa.text(f"SELECT count(*) FROM {VIEW}")).scalar()


def test_a_reader_during_publish_never_sees_an_empty_or_partial_table(spark, scratch_ods):
    path, write_silver = scratch_ods
    new_rows = 200_000
    write_silver(new_rows, partitions=8)  # eight JDBC tasks: the old way committed each one separately
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        with warehouse_engine().connect() as conn:
            while not done.is_set():
                seen.append(_count(conn))
                conn.commit()
                time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        published = publish.publish_table(spark, path, TARGET, COLUMNS)
        time.sleep(0.2)
    finally:
        done.set()
        reader.join()
    assert published.rows == new_rows
    assert seen and seen[0] == 1000
    assert set(seen) <= {1000, new_rows}, f"a reader saw {sorted(set(seen) - {1000, new_rows})[:5]} rows"
    with warehouse_engine().connect() as conn:
        assert _count(conn) == new_rows  # the view over the table reads the new rows
        staged = conn.execute(
            sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name <> :state"),
            {"s": publish.STAGE_SCHEMA, "state": publish.STATE_TABLE.split(".")[1]},
        ).scalar()
    assert staged == 0  # the staging table is gone


def test_a_publish_that_fails_half_way_leaves_the_old_rows(spark, scratch_ods, monkeypatch):
    path, write_silver = scratch_ods
    write_silver(50_000, partitions=4)
    read = publish.read_delta

    def breaks_on_one_row(spark, at, version=None):  # a value the load cannot take, found only when that task runs
        df = read(spark, at, version)
        return df.withColumn(
            "name", F.when(F.col("record_id") == "R0040000", F.raise_error(F.lit("bad row"))).otherwise(F.col("name"))
        )

    monkeypatch.setattr(publish, "read_delta", breaks_on_one_row)
    with pytest.raises(Exception, match="bad row"):
        publish.publish_table(spark, path, TARGET, COLUMNS)
    with warehouse_engine().connect() as conn:
        assert _count(conn) == 1000  # yesterday's data, not an empty or partial table
