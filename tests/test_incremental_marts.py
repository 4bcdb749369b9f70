"""Incremental marts against a whole rebuild, on the shared pipeline's county: a day's corrections reach
fct_encounter and the facts hanging off its encounters through publish's change log, and the incremental build
equals rebuilding those marts whole."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cli.main import main as drc_main
from core.db import warehouse_engine
from core.dbt import dbt_build
from spark_jobs.standardize import silver_path

PER_ENCOUNTER_MARTS = (
    "fct_encounter",
    "fct_diagnosis",
    "fct_prescription",
    "fct_lab_result",
    "fct_exam_report",
    "fct_surgery",
)
ENCOUNTER_MODELS = " ".join(("int_changes__window", "int_encounters__changed", *PER_ENCOUNTER_MARTS))


def _rows(sql: str, **params) -> list[sa.Row]:
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def _differences() -> dict[str, tuple[int, int]]:
    """Per mart, (rows only in the incremental build, rows only in a whole rebuild), where they differ."""
    with warehouse_engine().begin() as conn:
        for mart in PER_ENCOUNTER_MARTS:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS public.pytest_{mart}_incremental"))
            conn.execute(sa.text(f"CREATE TABLE public.pytest_{mart}_incremental AS SELECT * FROM marts.{mart}"))
    dbt_build(" ".join(PER_ENCOUNTER_MARTS), full_refresh=True, tests=False)
    differences = {}
    for mart in PER_ENCOUNTER_MARTS:
        incremental = f"public.pytest_{mart}_incremental"
        only_incremental, only_whole = _rows(
            f"SELECT (SELECT count(*) FROM (SELECT * FROM {incremental} EXCEPT ALL SELECT * FROM marts.{mart}) a), "
            f"(SELECT count(*) FROM (SELECT * FROM marts.{mart} EXCEPT ALL SELECT * FROM {incremental}) b)"
        )[0]
        if only_incremental or only_whole:
            differences[mart] = (only_incremental, only_whole)
        with warehouse_engine().begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {incremental}"))
    return differences


@pytest.mark.runs_last(order=1)  # changes silver (restored at the end): after the tests that read the marts
def test_a_days_corrections_rebuild_only_their_encounters_and_equal_a_whole_build(pipeline_done, spark):
    """An encounter deleted at the source, a second save of a visit, a fee gone from another visit, a lab result gone
    from a fourth and a person linked to another resident: the incremental build rebuilds those encounters, the
    person's and the duplicate's original (its group), nothing else, and every per-encounter mart equals a whole
    rebuild row for row."""
    tables = {
        name: DeltaTable.forPath(spark, silver_path(name)) for name in ("encounter", "fee", "person", "lab_result")
    }
    versions = {name: table.history(1).first()["version"] for name, table in tables.items()}
    encounters, fees = tables["encounter"].toDF(), tables["fee"].toDF()
    charged = encounters.join(
        fees.select("source_system", "encounter_id").distinct(), ["source_system", "encounter_id"]
    )
    deleted, visit, fee_of = charged.orderBy("source_system", "encounter_id").take(3)
    fee = fees.where((F.col("source_system") == fee_of.source_system) & (F.col("encounter_id") == fee_of.encounter_id))
    fee_id = fee.orderBy("fee_id").first().fee_id
    lab = tables["lab_result"].toDF().where("encounter_id IS NOT NULL").orderBy(F.col("encounter_id").desc()).first()
    moved = tables["person"].toDF().where("master_id IS NOT NULL").orderBy(F.col("local_patient_id").desc()).first()
    try:
        dbt_build(ENCOUNTER_MODELS, tests=False)  # consume whatever earlier tests published: the window starts here
        same = F.col("source_system") == deleted.source_system
        tables["encounter"].delete(same & (F.col("encounter_id") == deleted.encounter_id))
        (
            encounters.where(
                (F.col("source_system") == visit.source_system) & (F.col("encounter_id") == visit.encounter_id)
            )
            .withColumn("encounter_id", F.concat("encounter_id", F.lit("-2")))
            .withColumn("source_key", F.concat("source_key", F.lit("-2")))
            .withColumn("visit_at", F.col("visit_at") + F.expr("INTERVAL 2 MINUTES"))
            .write.format("delta")
            .mode("append")
            .save(silver_path("encounter"))
        )
        tables["fee"].delete((F.col("source_system") == fee_of.source_system) & (F.col("fee_id") == fee_id))
        tables["lab_result"].delete(
            (F.col("source_system") == lab.source_system) & (F.col("lab_result_id") == lab.lab_result_id)
        )
        tables["person"].update(
            (F.col("source_system") == moved.source_system) & (F.col("local_patient_id") == moved.local_patient_id),
            {"master_id": F.lit("M-PYTEST-RELINKED")},
        )
        assert drc_main(["publish"]) == 0
        dbt_build(ENCOUNTER_MODELS, tests=False)

        rebuilt = {key for key, rebuild_all in _rows("SELECT * FROM intermediate.int_encounters__changed")}
        key = "{}|{}".format
        persons_encounters = {
            r[0]
            for r in _rows(
                "SELECT source_system || '|' || encounter_id FROM ods.encounter WHERE source_system = :s "
                "AND local_patient_id = :p",
                s=moved.source_system,
                p=moved.local_patient_id,
            )
        }
        second_save = key(visit.source_system, visit.encounter_id + "-2")
        assert (
            rebuilt
            == {
                key(deleted.source_system, deleted.encounter_id),
                key(visit.source_system, visit.encounter_id),
                second_save,
                key(fee_of.source_system, fee_of.encounter_id),
                key(lab.source_system, lab.encounter_id),
            }
            | persons_encounters
        )
        flags = _rows(
            "SELECT is_duplicate_save, duplicate_of_encounter_key FROM marts.fct_encounter WHERE encounter_key = :k",
            k=second_save,
        )
        if visit.encounter_class_code in ("100", "200"):
            assert flags == [(True, key(visit.source_system, visit.encounter_id))]
        assert not _rows(
            "SELECT 1 FROM marts.fct_encounter WHERE encounter_key = :k",
            k=key(deleted.source_system, deleted.encounter_id),
        )
        assert not _rows(
            "SELECT 1 FROM marts.fct_lab_result WHERE lab_result_key = :k", k=key(lab.source_system, lab.lab_result_id)
        )
        assert {
            r[0]
            for r in _rows(
                "SELECT master_id FROM marts.fct_encounter WHERE encounter_key = ANY(:k)", k=list(persons_encounters)
            )
        } <= {"M-PYTEST-RELINKED"}
        assert _differences() == {}
    finally:
        for name, table in tables.items():
            table.restoreToVersion(versions[name])
    assert drc_main(["publish"]) == 0
    dbt_build(ENCOUNTER_MODELS, tests=False)
    assert _differences() == {}
    assert not _rows("SELECT 1 FROM marts.fct_encounter WHERE master_id = 'M-PYTEST-RELINKED'")


def test_a_seed_is_reloaded_only_when_its_file_or_configuration_changed(pipeline_done):
    """dbt reloads every seed on every build; ours leaves a seed alone while its file and settings are those the
    warehouse last loaded, and reloads it when they are not."""

    def load_transaction() -> str:
        return _rows("SELECT min(xmin::text) FROM reference.organizations")[0][0]

    loaded = load_transaction()
    dbt_build("organizations")
    assert load_transaction() == loaded, "an unchanged seed was reloaded"
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text("UPDATE dbt_meta.seed_checksum SET checksum = 'edited' WHERE seed = 'organizations'"))
    dbt_build("organizations")
    assert load_transaction() != loaded, "a seed whose file changed was not reloaded"
    assert _rows("SELECT checksum <> 'edited' FROM dbt_meta.seed_checksum WHERE seed = 'organizations'") == [(True,)]
