"""全员人口 register leavers: each monthly file is the whole register (``snapshot_file``), so a resident missing
from the newest month (moved away, died) is withdrawn — a delete in bronze, gone from silver — and a month
that would withdraw more than ``max_delete_share`` stops the table with a clear message until an operator
accepts it. Uses a scratch inbox and source shaped like config/sources/population_register.yaml."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from pyspark.sql import functions as F

from core.db import warehouse_engine
from core.privacy import id_number_hash
from core.settings import get_settings
from ingestion.bronze import bronze_path, latest_versions
from ingestion.file_drop import collect
from ingestion.monitoring import accept_deletes, forget_source
from ingestion.registry import load_source
from spark_jobs.model import source_mapping
from spark_jobs.standardize import standardize_frame

SOURCE = "scratch_population_register"
COLUMNS = ["姓名", "性别", "出生日期", "公民身份号码", "民族", "乡镇街道", "村居委会", "户编号", "人口类别", "现住址"]
YAML = f"""
name: {SOURCE}
org_code: "410182000"
mode: file_drop
connection:
  kind: files
  inbox: ${{SCRATCH_POPULATION}}/inbox
  archive: ${{SCRATCH_POPULATION}}/archive
  quarantine: ${{SCRATCH_POPULATION}}/quarantine
tables:
  - name: QYRK
    keys: [公民身份号码]
    snapshot_file: true
    max_delete_share: 0.3
    pattern: '^QYRK_410182_(?P<date>\\d{{6}})\\.csv$'
    date_format: '%Y%m'
    columns: [{", ".join(COLUMNS)}]
    required: [姓名, 公民身份号码]
"""
# 公民身份号码 of residents born 1960-01-01 .. 1960-01-10 (the mapping checks the birth date against them).
IDS = [
    "410182196001010012",
    "410182196001020018",
    "410182196001030013",
    "410182196001040019",
    "410182196001050014",
    "410182196001060011",
    "410182196001070017",
    "410182196001080012",
    "410182196001090018",
    "410182196001100011",
]


def _forget() -> None:
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)  # ledger, runs and the delete guard


@pytest.fixture
def register(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH_POPULATION", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    (tmp_path / f"{SOURCE}.yaml").write_text(YAML, encoding="utf-8")
    _forget()
    yield load_source(tmp_path / f"{SOURCE}.yaml"), tmp_path
    _forget()


def month_file(root: Path, month: str, ids: list[str]) -> str:
    """The register at the end of ``month`` (YYYYMM), GBK like the real feed, one row per listed resident."""
    buffer = io.StringIO()
    rows = [
        [f"居民{i[-4:]}", "男", i[6:14], i, "汉族", "乔楼镇", "宋楼村", "410182000000001", "户籍", "乔楼镇宋楼村1号"]
        for i in ids
    ]
    csv.writer(buffer, lineterminator="\r\n").writerows([COLUMNS, *rows])
    name = f"QYRK_410182_{month}.csv"
    (root / "inbox" / name).write_bytes(buffer.getvalue().encode("gbk"))
    return name


def current(spark) -> dict[str, str]:
    """公民身份号码 -> _op of its newest bronze row (a leaver's is 'd')."""
    rows = spark.read.format("delta").load(bronze_path(SOURCE, "QYRK"))
    return {r["公民身份号码"]: r["_op"] for r in latest_versions(rows, ["公民身份号码"]).collect()}


def silver_ids(spark) -> list[str]:
    """Who the population_register mapping puts in silver from this bronze."""
    spec = next(t for t in source_mapping("population_register")["tables"] if t["bronze_table"] == "QYRK")
    bronze = spark.read.format("delta").load(bronze_path(SOURCE, "QYRK"))
    silver, _ = standardize_frame(bronze, spec, "population_register")
    return sorted(r.id_number for r in silver.collect())


def test_a_resident_missing_from_the_newest_month_is_withdrawn(spark, register):
    source, root = register
    month_file(root, "202609", IDS[:6])
    assert collect(spark, source)[0].rows == 6
    month_file(root, "202610", IDS[:4] + IDS[5:7])  # IDS[4] died in October, IDS[6] was born
    result = collect(spark, source)[0]
    assert result.status == "success" and result.rows == 6
    assert (result.counts or {}).get("deleted") == 1
    state = current(spark)
    assert state[IDS[4]] == "d"
    assert silver_ids(spark) == sorted(IDS[:4] + IDS[5:7])

    # An older month arrives late (the vendor re-ran August): it brings nobody back, the newest month still
    # decides who is in the register.
    month_file(root, "202608", IDS[:6] + IDS[7:8])  # August: IDS[7] moved away before September
    collect(spark, source)
    assert silver_ids(spark) == sorted(IDS[:4] + IDS[5:7])
    assert current(spark)[IDS[7]] == "d"

    assert sum(r.rows for r in collect(spark, source)) == 0  # nothing new: nothing withdrawn twice
    deletes = spark.read.format("delta").load(bronze_path(SOURCE, "QYRK")).where(F.col("_op") == "d")
    assert deletes.count() == 2


def test_a_month_that_would_withdraw_too_many_stops_until_accepted(spark, register):
    source, root = register
    month_file(root, "202609", IDS)
    assert collect(spark, source)[0].rows == 10
    truncated = month_file(root, "202610", IDS[:3])  # a truncated export: 7 of 10 would leave (70 % > 30 %)
    result = collect(spark, source)[0]
    assert result.status == "stopped" and result.rows == 0
    assert "7" in result.error and "max_delete_share" in result.error and truncated in result.error
    assert f"./drc ingest accept-deletes --source {SOURCE} --table QYRK" in result.error
    assert (root / "inbox" / truncated).exists()  # the file waits in the inbox
    assert set(current(spark).values()) == {"r"}  # nobody withdrawn
    assert len(silver_ids(spark)) == 10

    assert collect(spark, source)[0].status == "stopped"  # still stopped on the next run
    assert accept_deletes(SOURCE, "QYRK")  # the operator confirms with the sender
    result = collect(spark, source)[0]
    assert result.status == "success" and (result.counts or {}).get("deleted") == 7
    assert silver_ids(spark) == sorted(IDS[:3])
    assert not (root / "inbox" / truncated).exists()


def test_a_rejected_register_file_names_residents_by_keyed_hash_not_by_id_number(spark, register):
    """The register's key is the 公民身份号码: a rejection reason names the offending line by its key, so the
    reason file, the file ledger and the run's error carry the key's keyed hash (the one marts.dim_patient_lookup
    stores), never the number."""
    source, root = register
    name = month_file(root, "202609", IDS[:3])
    path = root / "inbox" / name
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("gbk"))))
    rows[2][0] = ""  # line 3 (IDS[1]): 姓名 is required
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode("gbk"))
    result = collect(spark, source)[0]
    assert result.rows == 0
    reason = (root / "quarantine" / f"{name}.reason.txt").read_text(encoding="utf-8")
    assert "姓名 is required" in reason and "line 3" in reason
    assert f"hmac:{id_number_hash(IDS[1])[:12]}" in reason
    with warehouse_engine().connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT coalesce(string_agg(reason, ' '), '') FROM ingest.file_ledger "
                "WHERE source_system = :s AND file_name = :f"
            ),
            {"s": SOURCE, "f": name},
        ).scalar()
    stored += " " + (result.error or "")
    for id_number in IDS[:3]:
        assert id_number not in reason and id_number not in stored, f"{id_number} in clear"
