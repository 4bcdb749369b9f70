"""Publish by changes: after the first whole load, the next publish moves only the keys silver changed (updates,
deletes, inserts, several rows per source row), ods equals silver afterwards, and a source a blocking rule holds
back keeps its last published rows until it is released, then catches up. Uses a scratch silver table and a
scratch ods table, never the real ones."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from core.db import ensure_schemas, warehouse_engine
from expectations.store import ensure_tables
from spark_jobs import publish

TARGET = "ods.scratch_publish_changes"
COLUMNS = {
    "source_system": "string",
    "source_table": "string",
    "source_key": "string",
    "line": "int",
    "amount": "double",
}
KEY = publish.LINEAGE_KEY


def _clean() -> None:
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TARGET}"))
        conn.execute(sa.text(f"DELETE FROM {publish.STATE_TABLE} WHERE target = :t"), {"t": TARGET})
        conn.execute(sa.text(f"DELETE FROM {publish.CHANGE_LOG} WHERE dataset = 'scratch_publish_changes'"))
        conn.execute(sa.text("DELETE FROM dq.blocked_publish WHERE dataset = 'scratch_publish_changes'"))


@pytest.fixture
def silver(spark, tmp_path):
    """A silver table of 1,000 source rows from two sources (every tenth one two rows: a visit's diagnoses)."""
    ensure_schemas("ods", publish.STAGE_SCHEMA)
    ensure_tables()
    publish.ensure_publish_tables()
    _clean()
    path = str(tmp_path / "silver_changes")
    base = spark.range(1000).select(
        F.when(F.col("id") % 2 == 0, "HIS_A").otherwise("HIS_B").alias("source_system"),
        F.lit("VISIT").alias("source_table"),
        F.format_string("K%04d", "id").alias("source_key"),
        F.lit(1).alias("line"),
        (F.col("id") * 1.0).alias("amount"),
    )
    second = base.where(F.substring("source_key", -1, 1) == "0").withColumn("line", F.lit(2))
    base.unionByName(second).write.format("delta").save(path)
    yield path
    _clean()


def _publish(spark, path: str) -> publish.Published:
    return publish.publish_table(spark, path, TARGET, COLUMNS, KEY)


def _ods() -> set[tuple]:
    with warehouse_engine().connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text(f"SELECT {', '.join(COLUMNS)} FROM {TARGET}"))}


def _silver(spark, path: str) -> set[tuple]:
    return {tuple(r) for r in spark.read.format("delta").load(path).select(*COLUMNS).collect()}


def _change(spark, path: str, keys: list[str], amount: float) -> None:
    DeltaTable.forPath(spark, path).update(F.col("source_key").isin(keys), {"amount": F.lit(amount)})


def test_the_next_publish_moves_only_the_changed_keys_and_ods_equals_silver(spark, silver):
    first = _publish(spark, silver)
    assert (first.mode, first.rows) == ("full", 1100)

    _change(spark, silver, ["K0001", "K0010", "K0020"], -1.0)  # K0010 and K0020 have two rows each
    DeltaTable.forPath(spark, silver).delete("source_key IN ('K0003', 'K0030')")  # K0030: both its rows
    DeltaTable.forPath(spark, silver).delete("source_key = 'K0040' AND line = 2")  # one of a key's two rows
    spark.createDataFrame(
        [("HIS_A", "VISIT", "K9000", 1, 9.0), ("HIS_B", "VISIT", "K9001", 1, 9.5)],
        ", ".join(f"{c} {t}" for c, t in COLUMNS.items()),
    ).write.format("delta").mode("append").save(silver)

    second = _publish(spark, silver)
    assert second.mode == "changes"
    # replaced: K0001 (1), K0010 (2), K0020 (2), K0003 (1), K0030 (2), K0040 (2); back: 5 changed + K0040's one
    assert (second.rows, second.removed) == (5 + 1 + 2, 10)
    assert _ods() == _silver(spark, silver)
    with warehouse_engine().connect() as conn:  # what dbt's incremental models read: the whole table, then keys
        logged = conn.execute(
            sa.text(
                f"SELECT source_system, source_key, before FROM {publish.CHANGE_LOG} "
                "WHERE dataset = 'scratch_publish_changes' ORDER BY published_at, source_key NULLS FIRST"
            )
        ).all()
    assert logged[0] == (None, None, None)
    assert sorted(key for _, key, before in logged[1:] if before is None) == sorted(
        ["K0001", "K0010", "K0020", "K0003", "K0030", "K0040", "K9000", "K9001"]
    )
    replaced = sorted((before["source_key"], before["line"], before["amount"]) for *_, before in logged if before)
    assert len(replaced) == 10 and ("K0030", 2, 30.0) in replaced  # a deleted row, as it was

    assert _publish(spark, silver).mode == "unchanged"
    assert _ods() == _silver(spark, silver)


def test_a_source_held_back_keeps_its_rows_until_released_then_catches_up(spark, silver):
    _publish(spark, silver)
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dq.blocked_publish VALUES ('HIS_B', 'scratch_publish_changes', 'R-TEST', 1, 10, 'test')"
            )
        )
    _change(spark, silver, ["K0002", "K0005"], -2.0)  # HIS_A, HIS_B
    held = _publish(spark, silver)
    assert held.mode == "changes" and held.rows == 1
    amounts = {key: amount for _, _, key, _, amount in _ods()}
    assert amounts["K0002"] == -2.0 and amounts["K0005"] == 5.0  # HIS_B's change waits

    _change(spark, silver, ["K0007"], -3.0)  # HIS_B again, while held
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text("DELETE FROM dq.blocked_publish WHERE dataset = 'scratch_publish_changes'"))
    released = _publish(spark, silver)
    assert released.mode == "changes" and released.rows == 2  # both of HIS_B's changes, nothing else again
    assert _ods() == _silver(spark, silver)


def test_a_column_added_to_the_model_reloads_the_table_whole(spark, silver):
    _publish(spark, silver)
    spark.read.format("delta").load(silver).withColumn("unit", F.lit("元")).write.format("delta").mode(
        "overwrite"
    ).option("overwriteSchema", "true").save(silver)
    widened = publish.publish_table(spark, silver, TARGET, COLUMNS | {"unit": "string"}, KEY)
    assert (widened.mode, widened.rows) == ("full", 1100)
    with warehouse_engine().connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {TARGET} WHERE unit = '元'")).scalar() == 1100
    assert _publish(spark, silver).mode == "unchanged"
