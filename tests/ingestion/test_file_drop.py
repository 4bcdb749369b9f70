"""File drop: GBK and UTF-8 files land as sent, re-sends and re-runs land nothing, bad files go to quarantine
with a reason, corrections become updates/deletes that sort after the originals, and a kill after the commit
is finished on restart without landing twice. Uses a scratch inbox and a scratch source, never the real ones."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from delta.tables import DeltaTable
from openpyxl import Workbook
from pyspark.sql import Window
from pyspark.sql import functions as F

from core.db import warehouse_engine
from core.settings import get_settings
from ingestion.bronze import bronze_path
from ingestion.file_drop import Delivered, FileSpec, collect, land_file, parse_file, record_file
from ingestion.monitoring import forget_source
from ingestion.registry import SourceConfigError, load_source

SOURCE = "scratch_file_drop"
COLUMNS = ["就诊流水号", "姓名", "就诊时间", "体重(kg)", "最后修改时间"]
XG_COLUMNS = ["操作类型", *COLUMNS, "修改原因"]
YAML = f"""
name: {SOURCE}
org_code: "410182003"
mode: file_drop
connection:
  kind: files
  inbox: ${{SCRATCH_FILE_DROP}}/inbox
  archive: ${{SCRATCH_FILE_DROP}}/archive
  quarantine: ${{SCRATCH_FILE_DROP}}/quarantine
tables:
  - name: VISIT
    keys: [就诊流水号]
    pattern: '^ZZ_VISIT_(?P<date>\\d{{8}})(?P<correction>_XG)?(_1)?\\.csv$'
    encoding: auto
    allow_empty: true
    columns: [{", ".join(COLUMNS)}]
    required: [就诊流水号, 最后修改时间]
    formats: {{就诊时间: '%Y/%m/%d %H:%M:%S', 体重(kg): decimal, 最后修改时间: '%Y/%m/%d %H:%M:%S'}}
    correction: {{operation_column: 操作类型, extra_columns: [修改原因], ops: {{修改: u, 作废: d}}}}
    commit_time: 最后修改时间
    business_time: 就诊时间
    business_time_format: yyyy/MM/dd HH:mm:ss
  - {{name: CAT_XLSX, keys: [编码], pattern: '^ZZ_CAT_\\d{{8}}\\.xlsx$', format: excel, columns: [编码, 名称, 数量],
      formats: {{数量: integer}}}}
  - {{name: CAT_JSON, keys: [编码], pattern: '^ZZ_CAT_\\d{{8}}\\.jsonl?$', format: json, columns: [编码, 名称, 数量],
      formats: {{数量: integer}}}}
"""


def _forget() -> None:
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)  # the file ledger too


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH_FILE_DROP", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    (tmp_path / f"{SOURCE}.yaml").write_text(YAML, encoding="utf-8")
    _forget()
    yield load_source(tmp_path / f"{SOURCE}.yaml"), tmp_path
    _forget()


def csv_bytes(
    rows: list[list[str]], header: list[str] = COLUMNS, encoding: str = "gbk", newline: str = "\r\n"
) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows([header, *rows])
    return buffer.getvalue().encode(encoding)


def drop(root: Path, name: str, data: bytes) -> Path:
    path = root / "inbox" / name
    path.write_bytes(data)
    return path


def bronze(spark, table: str = "VISIT"):
    return spark.read.format("delta").load(bronze_path(SOURCE, table))


def version(spark, table: str = "VISIT") -> int:
    return DeltaTable.forPath(spark, bronze_path(SOURCE, table)).history(1).first()["version"]


def ledger() -> list[dict]:
    with warehouse_engine().connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.text(
                    "SELECT file_name, status, reason, rows, encoding, batch_id, moved_to FROM ingest.file_ledger "
                    "WHERE source_system = :s ORDER BY file_id"
                ),
                {"s": SOURCE},
            )
        ]


def inbox(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "inbox").iterdir())


def visit(i: str, name: str, day: str, weight: str = "60.5", modified: str = "08:10:00") -> list[str]:
    return [i, name, f"2026/11/{day} 08:00:00", weight, f"2026/11/{day} {modified}"]


GBK_ROWS = [visit("MZ1", "荥阳张三", "01"), visit("MZ2", "李,四", "01", "", "09:00:00"), visit("MZ3", "王五", "01")]
UTF8_ROWS = [visit("MZ4", "张𪚥", "02"), visit("MZ5", "赵六", "02")]


def test_gbk_and_utf8_files_land_as_sent_and_re_sends_land_nothing(spark, scratch):
    source, root = scratch
    gbk = csv_bytes(GBK_ROWS)
    drop(root, "ZZ_VISIT_20261101.csv", gbk)
    drop(root, "ZZ_VISIT_20261102.csv", csv_bytes(UTF8_ROWS, encoding="utf-8", newline="\n"))
    drop(root, "ZZ_VISIT_20261101_1.csv", gbk)  # the vendor's identical re-send
    drop(root, ".ZZ_VISIT_20261103.csv.tmp", b"half written")  # still being written: ignored
    drop(root, "ZZ_VISIT_20261105.csv", csv_bytes([]))  # header-only days: identical bytes,
    drop(root, "ZZ_VISIT_20261106.csv", csv_bytes([]))  # yet two deliveries

    results = {r.table: r for r in collect(spark, source)}
    assert results["VISIT"].rows == 5 and results["VISIT"].status == "success"
    rows = {r["就诊流水号"]: r for r in bronze(spark).collect()}
    assert rows["MZ1"]["姓名"] == "荥阳张三" and rows["MZ2"]["姓名"] == "李,四" and rows["MZ4"]["姓名"] == "张𪚥"
    assert rows["MZ2"]["体重(kg)"] == "" and rows["MZ1"]["就诊时间"] == "2026/11/01 08:00:00"
    assert [rows[k]["_source_line"] for k in ("MZ1", "MZ2", "MZ3")] == [2, 3, 4]
    assert rows["MZ1"]["_source_file"] == "ZZ_VISIT_20261101.csv" and {r["_op"] for r in rows.values()} == {"r"}
    assert rows["MZ2"]["_source_ts"] == datetime(2026, 11, 1, 9, 0)  # the row's 最后修改时间
    assert rows["MZ1"]["_org_code"] == "410182003" and rows["MZ1"]["_source_system"] == SOURCE
    assert len({len(r["_source_pos"]) for r in rows.values()}) == 1  # fixed width
    assert sorted(rows, key=lambda k: rows[k]["_source_pos"]) == ["MZ1", "MZ2", "MZ3", "MZ4", "MZ5"]
    log = {r["file_name"]: r for r in ledger()}
    assert log["ZZ_VISIT_20261101.csv"]["status"] == "landed" and log["ZZ_VISIT_20261101.csv"]["rows"] == 3
    assert log["ZZ_VISIT_20261101.csv"]["encoding"] == "gb18030" and log["ZZ_VISIT_20261102.csv"]["encoding"] == "utf-8"
    assert log["ZZ_VISIT_20261101_1.csv"]["status"] == "duplicate"
    assert [log[f"ZZ_VISIT_2026110{d}.csv"]["status"] for d in (5, 6)] == ["landed", "landed"]
    assert log["ZZ_VISIT_20261101_1.csv"]["reason"] == "duplicate of ZZ_VISIT_20261101.csv"
    assert inbox(root) == [".ZZ_VISIT_20261103.csv.tmp"]
    assert (root / "archive/20261101/ZZ_VISIT_20261101.csv").read_bytes() == gbk
    assert (root / "archive/20261101/ZZ_VISIT_20261101_1.csv").exists()
    assert (root / "archive/20261102/ZZ_VISIT_20261102.csv").exists()

    landed_version = version(spark)
    assert sum(r.rows for r in collect(spark, source)) == 0  # re-run: no-op
    assert version(spark) == landed_version

    drop(root, "ZZ_VISIT_20261101.csv", gbk)  # rewritten with identical bytes
    assert sum(r.rows for r in collect(spark, source)) == 0
    assert version(spark) == landed_version and bronze(spark).count() == 5
    assert [r["status"] for r in ledger()].count("duplicate") == 2 and inbox(root) == [".ZZ_VISIT_20261103.csv.tmp"]


def test_corrections_land_as_updates_and_deletes_that_sort_after_the_originals(spark, scratch):
    source, root = scratch
    drop(root, "ZZ_VISIT_20261101.csv", csv_bytes(GBK_ROWS))
    corrections = [
        ["修改", *visit("MZ1", "荥阳张三", "01", "61.0", "18:00:00"), "体重录入错误"],
        ["作废", *visit("MZ2", "李,四", "01", "", "18:05:00"), "退费"],
    ]
    drop(root, "ZZ_VISIT_20261101_XG.csv", csv_bytes(corrections, header=XG_COLUMNS))
    assert collect(spark, source)[0].rows == 5

    latest = Window.partitionBy("就诊流水号").orderBy(F.col("_source_pos").desc())
    state = {
        r["就诊流水号"]: r for r in bronze(spark).withColumn("n", F.row_number().over(latest)).where("n = 1").collect()
    }
    assert state["MZ1"]["_op"] == "u" and state["MZ1"]["体重(kg)"] == "61.0"
    assert state["MZ1"]["修改原因"] == "体重录入错误"
    assert state["MZ2"]["_op"] == "d" and state["MZ2"]["操作类型"] == "作废"
    assert state["MZ3"]["_op"] == "r" and state["MZ3"]["操作类型"] is None


def test_bad_files_go_to_quarantine_with_the_rule_and_the_row_and_the_rest_lands(spark, scratch):
    source, root = scratch
    drop(
        root,
        "ZZ_VISIT_20261104.csv",
        csv_bytes([r[:3] + r[4:] for r in GBK_ROWS], header=[c for c in COLUMNS if c != "体重(kg)"]),
    )
    bad_date = [visit("MZ51", "甲", "05"), ["MZ52", "乙", "2026-11-05 09:00", "1.0", "2026/11/05 09:30:00"]]
    drop(root, "ZZ_VISIT_20261105.csv", csv_bytes(bad_date))
    drop(root, "ZZ_VISIT_20261106.csv", csv_bytes([]) + b"\xff\xfe\xfd broken\r\n")
    drop(root, "ZZ_VISIT_20261107.csv", csv_bytes(UTF8_ROWS, encoding="utf-8"))
    drop(root, "readme.txt", "请查收".encode())

    results = collect(spark, source)
    assert results[0].rows == 2 and "quarantined" in results[0].error
    assert sorted(bronze(spark).select("就诊流水号").toPandas()["就诊流水号"]) == ["MZ4", "MZ5"]
    quarantine = root / "quarantine"
    missing = (quarantine / "ZZ_VISIT_20261104.csv.reason.txt").read_text(encoding="utf-8")
    assert f"source: {SOURCE}" in missing and "file: ZZ_VISIT_20261104.csv" in missing
    assert "rule: columns" in missing and "missing column(s) ['体重(kg)']" in missing
    wrong = (quarantine / "ZZ_VISIT_20261105.csv.reason.txt").read_text(encoding="utf-8")
    assert "rule: 就诊时间 format '%Y/%m/%d %H:%M:%S'" in wrong
    assert "line 3 (就诊流水号=MZ52): 就诊时间 = '2026-11-05 09:00'" in wrong and "MZ51" not in wrong
    assert "rule: encoding" in (quarantine / "ZZ_VISIT_20261106.csv.reason.txt").read_text(encoding="utf-8")
    assert "matches no table's pattern" in (quarantine / "readme.txt.reason.txt").read_text(encoding="utf-8")
    assert {r["file_name"]: r["status"] for r in ledger()} == {
        "ZZ_VISIT_20261104.csv": "quarantined",
        "ZZ_VISIT_20261105.csv": "quarantined",
        "ZZ_VISIT_20261106.csv": "quarantined",
        "ZZ_VISIT_20261107.csv": "landed",
        "readme.txt": "quarantined",
    }
    assert inbox(root) == [] and (quarantine / "ZZ_VISIT_20261105.csv").exists()

    # fixed and put back: it lands
    drop(root, "ZZ_VISIT_20261105.csv", csv_bytes(bad_date[:1]))
    assert collect(spark, source)[0].rows == 1


def test_a_kill_after_the_commit_is_finished_on_restart_without_landing_twice(spark, scratch):
    """Kill points simulated by calling the steps of a run up to the commit / up to the ledger row."""
    source, root = scratch
    spec = FileSpec.of(source, source.table("VISIT"))
    committed = Delivered.read(drop(root, "ZZ_VISIT_20261101.csv", csv_bytes(GBK_ROWS)))
    recorded = Delivered.read(drop(root, "ZZ_VISIT_20261102.csv", csv_bytes(UTF8_ROWS, encoding="utf-8")))
    landed = land_file(spark, source, spec, committed, parse_file(spec, committed)[0])  # killed after the commit
    second = land_file(spark, source, spec, recorded, parse_file(spec, recorded)[0])  # ... after the ledger row
    record_file(SOURCE, "VISIT", recorded, "landed", landed=second)
    before = version(spark)
    assert bronze(spark).count() == 5 and len(inbox(root)) == 2

    assert sum(r.rows for r in collect(spark, source)) == 0
    assert bronze(spark).count() == 5 and version(spark) == before and inbox(root) == []
    log = {r["file_name"]: r for r in ledger()}
    assert log["ZZ_VISIT_20261101.csv"]["batch_id"] == landed.batch_id and log["ZZ_VISIT_20261101.csv"]["rows"] == 3
    assert "interrupted run" in log["ZZ_VISIT_20261101.csv"]["reason"]
    assert all(r["status"] == "landed" and r["moved_to"] for r in log.values()) and len(log) == 2
    assert (root / "archive/20261101/ZZ_VISIT_20261101.csv").exists()

    # bronze deleted and rebuilt from the archive: the ledger's older landings lapse with the old table
    shutil.rmtree(bronze_path(SOURCE, "VISIT"))
    shutil.copy(root / "archive/20261101/ZZ_VISIT_20261101.csv", root / "inbox")
    assert collect(spark, source)[0].rows == 3 and bronze(spark).count() == 3


def test_excel_and_json_files_land_as_text(spark, scratch):
    source, root = scratch
    book = Workbook()
    book.active.append(["编码", "名称", "数量"])
    book.active.append(["A01", "荥阳", 3])
    book.active.append(["A02", "郑州", None])
    buffer = io.BytesIO()
    book.save(buffer)
    drop(root, "ZZ_CAT_20261101.xlsx", buffer.getvalue())
    drop(
        root,
        "ZZ_CAT_20261101.json",
        json.dumps([{"编码": "J1", "名称": "索河", "数量": 5}], ensure_ascii=False).encode("gbk"),
    )
    drop(root, "ZZ_CAT_20261102.jsonl", '{"编码": "J2", "数量": "7"}\n{"编码": "J3", "名称": "广武"}\n'.encode())
    results = {r.table: r.rows for r in collect(spark, source)}
    assert results["CAT_XLSX"] == 2 and results["CAT_JSON"] == 3
    excel = {r["编码"]: (r["名称"], r["数量"], r["_source_line"]) for r in bronze(spark, "CAT_XLSX").collect()}
    assert excel == {"A01": ("荥阳", "3", 2), "A02": ("郑州", None, 3)}
    js = {r["编码"]: (r["名称"], r["数量"]) for r in bronze(spark, "CAT_JSON").collect()}
    assert js == {"J1": ("索河", "5"), "J2": (None, "7"), "J3": ("广武", None)}


@pytest.mark.parametrize(
    "original, broken, message",
    [
        ("体重(kg): decimal", "体重(kg): decimals", "formats.体重(kg) 'decimals' is not a valid rule"),
        (
            "required: [就诊流水号, 最后修改时间]",
            "required: [就诊流水号, 科室]",
            "['科室'] not among the table's columns",
        ),
    ],
)
def test_table_rules_are_checked_when_the_source_is_loaded(tmp_path, monkeypatch, original, broken, message):
    monkeypatch.setenv("SCRATCH_FILE_DROP", str(tmp_path))
    (tmp_path / "bad.yaml").write_text(YAML.replace(original, broken), encoding="utf-8")
    source = load_source(tmp_path / "bad.yaml")
    with pytest.raises(SourceConfigError, match=re.escape(message)):
        FileSpec.of(source, source.table("VISIT"))


def test_a_table_creation_killed_before_its_first_commit_does_not_block_the_table(spark, scratch):
    source, root = scratch
    leftover = Path(bronze_path(SOURCE, "VISIT"))
    (leftover / "_delta_log").mkdir(parents=True)  # what kill -9 during the creation leaves behind
    (leftover / "part-00000-orphan.parquet").write_bytes(b"never committed")
    drop(root, "ZZ_VISIT_20261101.csv", csv_bytes(GBK_ROWS))
    [result] = [r for r in collect(spark, source) if r.table == "VISIT"]
    assert result.status == "success" and bronze(spark).count() == len(GBK_ROWS)
    assert not (leftover / "part-00000-orphan.parquet").exists()
