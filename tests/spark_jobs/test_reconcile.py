"""The reconciliation per source, table and day follows every source record to where it went."""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import functions as F

from cli.main import main as drc_main
from spark_jobs.reconcile import discrepancies, reconcile, reconcile_table

SPEC = {"entity": "lab_result", "bronze_table": "LAB", "key": ["id"], "void": {"zfbz": "1"}, "where": "kind = 'lab'"}
DAY = date(2026, 11, 2)


def _bronze(spark, rows):
    """(id, zfbz, kind, op, position, batch version) rows of one institution and day."""
    return spark.createDataFrame(
        [
            (i, flag, kind, op, pos, datetime(2026, 11, 2, 9), f"src.lab.{version}", "410182001", DAY)
            for i, flag, kind, op, pos, version in rows
        ],
        "id string, zfbz string, kind string, _op string, _source_pos string, _ingested_at timestamp, "
        "_batch_id string, _org_code string, d date",
    )


def _keys(spark, keys):
    return spark.createDataFrame([(k,) for k in keys], "source_key string")


def test_each_record_is_deleted_withdrawn_elsewhere_in_silver_quarantined_or_reported(spark):
    bronze = _bronze(
        spark,
        [
            ("a", None, "lab", "c", "1", 0),  # in silver
            ("b", None, "lab", "c", "1", 0),  # quarantined
            ("c", "1", "lab", "c", "1", 0),  # withdrawn (作废)
            ("d", None, "exam", "c", "1", 0),  # for another entity of the table
            ("e", None, "lab", "c", "1", 0),
            ("e", None, "lab", "d", "2", 1),  # deleted at the source
            ("f", None, "lab", "c", "1", 0),  # lost: nowhere
            ("g", None, "lab", "c", "1", 0),  # in both silver and quarantine
            ("h", None, "lab", "c", "1", 2),  # landed after the last standardisation
        ],
    )
    silver, quarantine = _keys(spark, ["a", "g", "e", "z"]), _keys(spark, ["b", "g"])
    row = reconcile_table(bronze, silver, quarantine, SPEC, F.col("d"), "src.LAB", standardized_through=1)
    counts = next(r.asDict() for r in row.collect() if r.business_date == DAY)
    assert counts["landed_versions"] == 9 and counts["current_records"] == 8
    assert (counts["pending"], counts["deleted"], counts["withdrawn"], counts["other_entity"]) == (1, 1, 1, 1)
    assert (counts["in_silver"], counts["quarantined"]) == (1, 1)
    assert (counts["lost"], counts["in_both"]) == (1, 1) and counts["lost_examples"] == ["f"]
    assert counts["stale_examples"] == ["e"]  # silver still holds a record the source deleted
    unknown = next(r.asDict() for r in row.collect() if r.business_date is None)
    assert unknown["stale"] == 1 and unknown["stale_examples"] == ["z"]  # a silver row bronze never had
    found = discrepancies([{"source_system": "src", "bronze_table": "LAB", "entity": "lab_result", **counts}])
    assert {d.problem for d in found} == {"lost", "in_both", "stale"}
    assert "src.LAB → silver.lab_result, 410182001 2026-11-02: 1 current source records neither in silver" in str(
        next(d for d in found if d.problem == "lost")
    )


def test_the_test_county_reconciles_without_a_difference(spark, pipeline_done):
    rows = reconcile(spark, ["referral", "fy_files"])
    assert rows and not discrepancies(rows)
    assert all(
        r["current_records"]
        == r["pending"] + r["deleted"] + r["withdrawn"] + r["other_entity"] + r["in_silver"] + r["quarantined"]
        for r in rows
    )
    assert sum(r["in_silver"] for r in rows) > 0
    assert drc_main(["silver", "reconcile", "--source", "referral", "--date", pipeline_done.last_day.isoformat()]) == 0
