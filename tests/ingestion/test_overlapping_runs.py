"""Overlapping runs: every collection mode runs under one lock per source, so a second run of the same source
(a manual `./drc ingest` while Airflow's is still going, a slow `--follow` round) can never read the offset
the first is about to move and land the same batch twice. The second run skips with a message naming the
source, or waits for `strategy.lock_wait_seconds`.

The sources here point at closed ports: while the lock is held no run may even try to connect."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from datetime import datetime

import pytest

from core.settings import get_settings
from core.spark import read_delta
from ingestion.bronze import bronze_path, commit_log, delta_exists
from ingestion.monitoring import forget_source, source_lock, source_status
from ingestion.registry import load_source
from ingestion.runner import collect_source

SOURCE = "scratch_overlap"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _connections(port: int) -> dict[str, str]:
    database = f"{{kind: %s, host: 127.0.0.1, port: {port}, database: x, user: u, password_env: DRC_HIS_DB_PASSWORD}}"
    return {
        "jdbc_incremental": database % "mariadb",
        "jdbc_snapshot": database % "postgresql",
        "mysql_binlog": database % "mariadb",
        "pg_logical": database % "postgresql",
        "http_api": f"{{kind: http, base_url: 'http://127.0.0.1:{port}', client_id: c, "
        "secret_env: DRC_HIS_DB_PASSWORD}",
        "file_drop": "{kind: files, inbox: '${SCRATCH_OVERLAP}/inbox', archive: '${SCRATCH_OVERLAP}/archive', "
        "quarantine: '${SCRATCH_OVERLAP}/quarantine'}",
    }


def _source(tmp_path, mode: str, lock_wait: float = 0):
    tables = {
        "jdbc_incremental": "{name: T, keys: [ID], watermark: XGSJ}",
        "http_api": "{name: T, keys: [id], endpoint: /api/v1/t, commit_time: updatedAt}",
        "file_drop": "{name: T, keys: [c], pattern: '^T_\\d{8}\\.csv$', columns: [c, n]}",
    }
    table = tables.get(mode, "{name: T, keys: [ID]}")
    path = tmp_path / f"{SOURCE}.yaml"
    path.write_text(
        f"""
name: {SOURCE}
org_code: "410182199"
mode: {mode}
connection: {_connections(_closed_port())[mode]}
strategy: {{retries: 0, retry_backoff_seconds: 0.01, lock_wait_seconds: {lock_wait}}}
tables:
  - {table}
""",
        encoding="utf-8",
    )
    return load_source(path)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH_OVERLAP", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "T_20261110.csv").write_text("c,n\n1,a\n2,b\n", encoding="utf-8")
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)
    yield tmp_path
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)


@pytest.mark.parametrize(
    "mode", ["jdbc_incremental", "jdbc_snapshot", "mysql_binlog", "pg_logical", "http_api", "file_drop"]
)
def test_a_second_run_of_a_source_skips_with_a_message_naming_it(spark, scratch, mode):
    source = _source(scratch, mode)
    with source_lock(SOURCE) as mine:  # the first run, still going
        assert mine
        with source_lock(SOURCE) as also:  # the lock is exclusive, even within one process
            assert not also
        started = time.monotonic()
        [result] = collect_source(spark, source, sleep=lambda _: None)
        assert time.monotonic() - started < 10
    assert result.status == "skipped" and result.rows == 0
    assert f"source {SOURCE}" in result.error and "another collection of this source is running" in result.error
    assert "lock_wait_seconds" in result.error
    status = {r["table_name"]: r for r in source_status() if r["source_system"] == SOURCE}
    assert status["*"]["last_status"] == "skipped" and SOURCE in status["*"]["last_error"]
    assert (scratch / "inbox" / "T_20261110.csv").exists()  # the file inbox was not touched
    assert not delta_exists(spark, bronze_path(SOURCE, "T"))


def test_a_second_run_waits_for_the_first_when_configured(spark, scratch):
    source = _source(scratch, "file_drop", lock_wait=60)
    taken, release = threading.Event(), threading.Event()

    def first_run() -> None:
        with source_lock(SOURCE):
            taken.set()
            release.wait(30)

    released: list[datetime] = []

    def release_first() -> None:
        released.append(datetime.now().astimezone())
        release.set()

    holder = threading.Thread(target=first_run)
    holder.start()
    try:
        assert taken.wait(30)
        threading.Timer(2.0, release_first).start()
        results = collect_source(spark, source)
    finally:
        release.set()
        holder.join(30)
    assert [(r.table, r.status, r.rows) for r in results] == [("T", "success", 2)]
    [commit] = commit_log(SOURCE, "T")
    assert released and commit["timestamp"] >= released[0]  # landed only after the first run let go
    assert read_delta(spark, bronze_path(SOURCE, "T")).count() == 2
