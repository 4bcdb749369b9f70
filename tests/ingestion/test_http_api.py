"""HTTP JSON API collection (mode ``http_api``) against the simulator's vendor API (docs/simulator/private_api.md).

The full pull reads the shared simulator API (read only). Tests that change data or need faults serve the
simulator's own API code (``simulator.api_server``) from a subprocess on a free port, over a scratch copy of
the backend tables in schema ``scratch_httpapi_<pid>`` of ``private_his``, with their own settings (fault
rate, token lifetime, rate limit). Bronze and monitoring rows go under ``scratch_privapi_*`` source names and
are removed afterwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from pyspark.sql import functions as F

from core.db import warehouse_engine
from core.settings import PROJECT_ROOT, get_settings
from ingestion import bronze, http_api, monitoring, runner
from ingestion.registry import SourceConfig, load_source
from simulator.api_server import client_secret
from simulator.connections import source_pg_engine
from simulator.systems.private_api import DATABASE

CONFIG = PROJECT_ROOT / "config" / "sources" / "private_api.yaml"
HOSPITALS = {"HZ001": "410182004", "RX001": "410182005"}
SCRATCH_SCHEMA = f"scratch_httpapi_{os.getpid()}"
SCRATCH_SECRET_ENV = "SCRATCH_PRIVAPI_CLIENT_SECRET"
ADDED = "129912310000001"  # a visit the scratch backend gains (hospital 1, resource 2, day 991231)
SCRATCH_SECRET = base64.b64encode(os.urandom(18)).decode()
SERVER = """
import os, sys, uvicorn
from simulator.api_server import ApiSettings, app, configure
schema, ttl, rate, faults, port = sys.argv[1:]
configure(ApiSettings(client_id="xydrc-collector", client_secret=os.environ["SCRATCH_PRIVAPI_CLIENT_SECRET"],
                      pg_schema=schema, token_ttl_seconds=int(ttl), rate_limit_per_second=float(rate),
                      fault_rate=float(faults)))
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
"""


class Killed(BaseException):
    """Stands in for kill -9: escapes every ``except Exception`` on its way out."""


# --- helpers ---------------------------------------------------------------------------------------------
def _forget(name: str) -> None:
    """Remove a scratch source's bronze tables and monitoring rows."""
    shutil.rmtree(get_settings().lake_path("bronze", name), ignore_errors=True)
    monitoring.ensure_tables()
    with warehouse_engine().begin() as conn:
        for table in ("landed_batch", "table_run", "schema_change", "source_checkpoint"):
            conn.execute(sa.text(f"DELETE FROM ingest.{table} WHERE source_system = :s"), {"s": name})


def _source(
    tmp_path: Path,
    name: str,
    base_url: str,
    tables: list[str],
    *,
    secret_env: str = SCRATCH_SECRET_ENV,
    batch_size: int = 20000,
    page_size: int = 1000,
    rate: float = 15,
    retries: int = 3,
) -> SourceConfig:
    """The real private_api.yaml, renamed and narrowed for a test."""
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["name"] = name
    raw["connection"].update(base_url=base_url, secret_env=secret_env, max_backoff_seconds=0.2)
    raw["strategy"].update(
        batch_size=batch_size, rate_limit_per_second=rate, retries=retries, retry_backoff_seconds=0.05
    )
    raw["options"]["page_size"] = page_size
    raw["tables"] = [t for t in raw["tables"] if t["name"] in tables]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_source(path)


@pytest.fixture
def scratch_name(request, pipeline_done) -> Iterator[str]:
    """A scratch source name; the simulated county (its private_his backend) must exist first."""
    name = f"scratch_privapi_{request.node.name.removeprefix('test_')[:24]}"
    _forget(name)
    yield name
    _forget(name)


def _walk(base_url: str, secret: str, resource: str) -> list[dict[str, Any]]:
    """Every record of a resource, by an independent minimal client (token, then the cursor to the end)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = client.post("/api/v1/auth/token", json={"client_id": "xydrc-collector", "client_secret": secret})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        records: list[dict[str, Any]] = []
        for hospital in HOSPITALS:
            params: dict[str, Any] = {"page_size": 1000}
            while True:
                time.sleep(0.1)  # stay below the vendor's rate limit
                data = (
                    client.get(f"/api/v1/hospitals/{hospital}/{resource}", params=params, headers=headers)
                    .raise_for_status()
                    .json()["data"]
                )
                records += data["list"]
                if not data["nextCursor"]:
                    break
                params["cursor"] = data["nextCursor"]
        return records


def _bronze(spark, name: str, table: str):
    return spark.read.format("delta").load(bronze.bronze_path(name, table))


def _versions(spark, name: str, table: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, bronze.bronze_path(name, table)).history().count()


def _backend(schema: str, table: str) -> dict[str, bool]:
    """id -> deleted, straight from the scratch backend."""
    with source_pg_engine(DATABASE).connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT id, deleted FROM {schema}.{table}")).all())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def scratch_backend(monkeypatch) -> Iterator[str]:
    """A private copy of the vendor's backend tables (the API reads whatever schema it is configured with)."""
    monkeypatch.setenv(SCRATCH_SECRET_ENV, SCRATCH_SECRET)
    with source_pg_engine(DATABASE).begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCRATCH_SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCRATCH_SCHEMA}"))
        for table in ("patients", "visits", "admissions", "diagnoses", "orders", "charges"):
            conn.execute(sa.text(f"CREATE TABLE {SCRATCH_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)"))
            conn.execute(sa.text(f"INSERT INTO {SCRATCH_SCHEMA}.{table} SELECT * FROM public.{table}"))
    yield SCRATCH_SCHEMA
    with source_pg_engine(DATABASE).begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCRATCH_SCHEMA} CASCADE"))


@contextmanager
def serve(schema: str, *, ttl: int = 1800, rate: float = 1000, faults: float = 0.0) -> Iterator[str]:
    """The simulator's API code in a subprocess on a free port, over ``schema``; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, schema, str(ttl), str(rate), str(faults), str(port)],
        env={**os.environ, SCRATCH_SECRET_ENV: SCRATCH_SECRET},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("scratch API did not start")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the shared simulator API ----------------------------------------------------------------------------
def test_full_pull_reconciles_with_the_simulator_api(spark, scratch_name, tmp_path, monkeypatch, capsys) -> None:
    secret = os.environ.get("DRC_SIM_API_CLIENT_SECRET") or client_secret()
    monkeypatch.setenv("DRC_SIM_API_CLIENT_SECRET", secret)
    base_url = http_api.expand_env("http://127.0.0.1:${DRC_SIM_API_PORT:-8090}")
    resources = ["patients", "visits", "admissions", "diagnoses", "orders", "charges"]
    source = _source(tmp_path, scratch_name, base_url, resources, secret_env="DRC_SIM_API_CLIENT_SECRET")

    started = time.monotonic()
    results = http_api.collect(spark, source)
    seconds = time.monotonic() - started
    landed = sum(r.rows for r in results)
    with capsys.disabled():
        print(
            f"\nhttp_api full pull of the test county: {landed} records in {seconds:.1f} s "
            f"= {landed / seconds:.1f} records/s ({len(resources)} resources, 2 hospitals)"
        )

    assert [r.status for r in results if r.status not in ("success", "no_change")] == []
    served = {resource: _walk(base_url, secret, resource) for resource in resources}
    # a small county's few days may hold no record of a resource (the private hospitals admit few patients)
    held = [resource for resource, records in served.items() if records]
    assert {"patients", "visits", "orders"} <= set(held)
    assert all(r.rows == 0 for r in results if r.table not in held)
    for resource in held:
        expected = served[resource]
        rows = _bronze(spark, scratch_name, resource)
        got = rows.select(
            "id",
            "hospitalCode",
            "_op",
            "_org_code",
            "_source_pos",
            "updatedAt",
            F.date_format("_source_ts", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("ts"),
        ).collect()
        assert sorted(r.id for r in got) == sorted(r["id"] for r in expected), resource  # all, once
        assert {r.id for r in got if r._op == "d"} == {r["id"] for r in expected if r["deleted"]}, resource
        assert all(r._org_code == HOSPITALS[r.hospitalCode] for r in got), resource
        assert all(r.ts == r.updatedAt for r in got), resource  # _source_ts = updatedAt
        assert {len(r._source_pos) for r in got} <= {15 + http_api.KEY_WIDTH}, resource
    assert _bronze(spark, scratch_name, "orders").schema["quantity"].dataType.simpleString() == "string"

    versions = {t: _versions(spark, scratch_name, t) for t in held}
    again = http_api.collect(spark, source)
    assert {r.status for r in again} == {"no_change"}
    assert {t: _versions(spark, scratch_name, t) for t in held} == versions  # no empty commits


# --- a scratch copy of the API ---------------------------------------------------------------------------
def test_changes_deletes_and_new_fields_arrive_once(spark, scratch_name, scratch_backend, tmp_path) -> None:
    with serve(scratch_backend) as base_url:
        source = _source(tmp_path, scratch_name, base_url, ["visits", "diagnoses"])
        http_api.collect(spark, source)
        before = {t: _bronze(spark, scratch_name, t).count() for t in ("visits", "diagnoses")}
        with source_pg_engine(DATABASE).begin() as conn:
            schema = scratch_backend
            cancelled, corrected = (
                conn.execute(sa.text(f"SELECT id FROM {schema}.visits WHERE NOT deleted ORDER BY id LIMIT 2"))
                .scalars()
                .all()
            )
            latest = conn.execute(sa.text(f"SELECT max(updated_at) FROM {schema}.visits")).scalar()
            stamp = {"t": latest + timedelta(minutes=5)}
            conn.execute(
                sa.text(
                    f"UPDATE {schema}.visits SET deleted = true, status = 'cancelled', remark = '退费', "
                    f"updated_at = :t WHERE id = '{cancelled}'"
                ),
                stamp,
            )
            gone = conn.execute(
                sa.text(
                    f"UPDATE {schema}.diagnoses SET deleted = true, updated_at = :t "
                    f"WHERE visit_id = '{cancelled}' AND NOT deleted"
                ),
                stamp,
            ).rowcount
            conn.execute(sa.text(f"ALTER TABLE {schema}.visits ADD COLUMN pay_type varchar(16)"))  # vendor drift
            conn.execute(
                sa.text(
                    f"UPDATE {schema}.visits SET pay_type = 'insurance', remark = '诊断更正', "
                    f"updated_at = :t WHERE id = '{corrected}'"
                ),
                stamp,
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {schema}.visits SELECT '{ADDED}', hospital_code, "
                    f"'MZ99123100001', patient_id, patient_no, visit_type, dept_code, dept_name, doctor_code, "
                    f"doctor_name, visit_time, status, NULL, created_at, :t, false, 'self_pay' "
                    f"FROM {schema}.visits WHERE id = '{corrected}'"
                ),
                stamp,
            )

        results = {r.table: r for r in http_api.collect(spark, source)}
        assert results["visits"].rows == 3 and results["diagnoses"].rows == gone > 0
        visits = _bronze(spark, scratch_name, "visits")
        assert visits.count() == before["visits"] + 3
        assert "payType" in visits.columns  # the new field became a column
        latest_rows = {r.id: r for r in visits.orderBy("_source_pos").collect()}  # last version per id wins
        assert latest_rows[cancelled]._op == "d" and latest_rows[cancelled].status == "cancelled"
        assert latest_rows[corrected].payType == "insurance" and latest_rows[corrected]._op == "u"
        assert latest_rows[ADDED]._op == "u" and latest_rows[ADDED].payType == "self_pay"
        assert visits.where(F.col("payType").isNotNull()).count() == 2  # older versions: null
        diagnoses = _bronze(spark, scratch_name, "diagnoses")
        assert diagnoses.count() == before["diagnoses"] + gone
        assert {r.id for r in diagnoses.where(F.col("_op") == "d").collect()} == {
            i for i, deleted in _backend(schema, "diagnoses").items() if deleted
        }
        assert {r.table: r.status for r in http_api.collect(spark, source)} == {
            "visits": "no_change",
            "diagnoses": "no_change",
        }
        assert sorted(r.id for r in visits.select("id").distinct().collect()) == sorted(_backend(schema, "visits"))


def test_pull_completes_through_faults_throttling_and_token_expiry(
    spark, scratch_name, scratch_backend, tmp_path
) -> None:
    # The server: 30 % of data calls fail (500/503), 4 requests/s, tokens live 2 s. The client asks 20/s.
    with serve(scratch_backend, ttl=2, rate=4, faults=0.3) as base_url:
        source = _source(tmp_path, scratch_name, base_url, ["visits", "diagnoses"], page_size=10, rate=20, retries=10)
        with http_api.VendorClient(source) as client:
            first = client.call("GET", "/api/v1/hospitals")
            time.sleep(3)  # the token expires
            assert client.call("GET", "/api/v1/hospitals") == first
            for _ in range(12):  # three times the server's burst of 4 within a second: it must throttle
                assert client.call("GET", "/api/v1/hospitals") == first
            records = [r for page in client.pages("/api/v1/hospitals/HZ001/visits", None) for r in page]
            assert client.stats["renewals"] >= 1 and client.stats["tokens"] >= 2
            assert client.stats["throttled"] >= 1 and client.stats["retries"] >= 1
        assert sorted(r["id"] for r in records) == sorted(
            i for i in _backend(scratch_backend, "visits") if i.startswith("1")
        )

        results = http_api.collect(spark, source)
        assert {r.status for r in results} == {"success"}
        for table in ("visits", "diagnoses"):
            rows = _bronze(spark, scratch_name, table)
            expected = _backend(scratch_backend, table)
            assert rows.count() == len(expected)
            assert sorted(r.id for r in rows.select("id").collect()) == sorted(expected)
            assert {r.id for r in rows.where(F.col("_op") == "d").collect()} == {i for i, d in expected.items() if d}


def test_source_down_is_retried_and_reported(spark, scratch_name, scratch_backend, tmp_path, monkeypatch) -> None:
    nobody = _source(tmp_path, scratch_name, f"http://127.0.0.1:{_free_port()}", ["visits"])
    with pytest.raises(runner.SourceUnavailable):
        http_api.collect(spark, nobody)
    results = runner.collect_source(spark, nobody, sleep=lambda _: None)
    assert [r.status for r in results] == ["source_down"]
    assert SCRATCH_SECRET not in (results[0].error or "")

    with serve(scratch_backend, faults=1.0) as base_url:  # every data call fails
        failing = _source(tmp_path, scratch_name, base_url, ["visits"], retries=2)
        with pytest.raises(runner.SourceUnavailable, match="failed 3 times"):
            http_api.collect(spark, failing)

        monkeypatch.setenv(SCRATCH_SECRET_ENV, "not-the-secret")  # wrong credentials: fail, no retry
        [result] = http_api.collect(spark, failing)
        assert result.status == "failed" and "40104" in result.error and "not-the-secret" not in result.error
    assert not bronze.delta_exists(spark, bronze.bronze_path(scratch_name, "visits"))


def test_interrupted_pull_resumes_without_loss_or_duplicates(
    spark, scratch_name, scratch_backend, tmp_path, monkeypatch
) -> None:
    with serve(scratch_backend) as base_url:
        source = _source(tmp_path, scratch_name, base_url, ["visits"], batch_size=15, page_size=10)
        real_land = bronze.land

        def land_then_die(*args: Any, **kwargs: Any) -> int:
            real_land(*args, **kwargs)
            raise Killed("killed right after the first commit")

        monkeypatch.setattr(bronze, "land", land_then_die)
        with pytest.raises(Killed):
            http_api.collect(spark, source)
        monkeypatch.setattr(bronze, "land", real_land)
        assert _bronze(spark, scratch_name, "visits").count() == 15

        [result] = http_api.collect(spark, source)
        expected = _backend(scratch_backend, "visits")
        rows = _bronze(spark, scratch_name, "visits")
        assert result.rows == len(expected) - 15
        assert rows.count() == rows.select("id").distinct().count() == len(expected)
        assert sorted(r.id for r in rows.select("id").collect()) == sorted(expected)
        assert rows.select("_batch_id").distinct().count() == -(-len(expected) // 15)


def test_a_bulk_pull_lands_every_record_once(spark, scratch_name, scratch_backend, tmp_path) -> None:
    """Synthetic orders in the scratch backend, paged at the vendor's rate limit; DRC_HTTPAPI_BULK_ROWS sets how
    many (default 20,000). How fast is for a benchmark to say, not for this test."""
    count = int(os.environ.get("DRC_HTTPAPI_BULK_ROWS", "20000"))
    with source_pg_engine(DATABASE).begin() as conn:
        columns = (
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = "
                    "'orders' "
                    "ORDER BY ordinal_position"
                ),
                {"s": scratch_backend},
            )
            .scalars()
            .all()
        )
        made = {
            "id": "(CASE n % 2 WHEN 0 THEN '1' ELSE '2' END) || '5' || lpad(n::text, 13, '0')",
            "hospital_code": "(CASE n % 2 WHEN 0 THEN 'HZ001' ELSE 'RX001' END)",
            "updated_at": "timestamp '2026-10-01' + n * interval '37 millisecond'",
        }
        conn.execute(
            sa.text(
                f"INSERT INTO {scratch_backend}.orders SELECT {', '.join(made.get(c, 't.' + c) for c in columns)} "
                f"FROM (SELECT * FROM {scratch_backend}.orders LIMIT 1) t, generate_series(1, :n) n"
            ),
            {"n": count},
        )
    with serve(scratch_backend, rate=20) as base_url:
        source = _source(tmp_path, scratch_name, base_url, ["orders"], rate=18)
        [result] = http_api.collect(spark, source)
    expected = _backend(scratch_backend, "orders")
    assert result.rows == len(expected) == _bronze(spark, scratch_name, "orders").count()


# --- a scripted vendor (no simulated county needed) ------------------------------------------------------
class ScriptedVendor:
    """The vendor API as a list of records in the order the vendor serves them (not necessarily by
    (updatedAt, id)): ``updated_since`` inclusive, two records a page, an opaque cursor."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.asked_since: list[str | None] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 1800})
        since = request.url.params.get("updated_since")
        if request.url.params.get("cursor") is None:
            self.asked_since.append(since)
        start = int(request.url.params.get("cursor") or 0)
        matching = [
            r
            for r in self.records
            if since is None or datetime.fromisoformat(r["updatedAt"]) >= datetime.fromisoformat(since)
        ]
        page = matching[start : start + 2]
        cursor = str(start + 2) if start + 2 < len(matching) else None
        return httpx.Response(
            200,
            json={
                "code": 0,
                "msg": "ok",
                "data": {"total": len(matching), "page": 1, "pageSize": 2, "nextCursor": cursor, "list": page},
            },
        )

    def add(self, id_: str, minute: int, name: str) -> None:
        self.records.append(
            {
                "id": id_,
                "hospitalCode": "HZ001",
                "name": name,
                "deleted": False,
                "updatedAt": f"2026-11-10T10:{minute:02d}:00.000+08:00",
            }
        )


@pytest.fixture
def scripted(tmp_path, monkeypatch) -> Iterator[tuple[SourceConfig, ScriptedVendor]]:
    name = "scratch_privapi_scripted"
    vendor = ScriptedVendor()
    real_client = http_api.VendorClient

    class ScriptedClient(real_client):
        def __init__(self, source: SourceConfig, sleep: Any = time.sleep) -> None:
            super().__init__(source, sleep)
            self.http.close()
            self.http = httpx.Client(base_url="http://vendor.test", transport=httpx.MockTransport(vendor.handle))

    monkeypatch.setattr(http_api, "VendorClient", ScriptedClient)
    monkeypatch.setenv(SCRATCH_SECRET_ENV, SCRATCH_SECRET)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""
name: {name}
org_code: "410182004"
mode: http_api
connection: {{kind: http, base_url: "http://vendor.test", client_id: xydrc-collector, secret_env: {SCRATCH_SECRET_ENV}}}
strategy: {{batch_size: 2, late_arrival_minutes: 60, retries: 0}}
options: {{hospitals: [HZ001], page_size: 2, tombstone_field: deleted}}
tables:
  - {{name: visits, endpoint: "/api/v1/hospitals/{{hospitalCode}}/visits", keys: [id], org_column: hospitalCode,
      org_map: {{HZ001: "410182004"}}, commit_time: updatedAt}}
""",
        encoding="utf-8",
    )
    _forget(name)
    yield load_source(path), vendor
    _forget(name)


def test_records_out_of_the_vendors_order_are_kept_deduplicated_and_counted(spark, scripted) -> None:
    source, vendor = scripted
    vendor.add("101", 0, "a")
    vendor.add("102", 5, "b")
    vendor.add("103", 2, "c")  # served after a later record: a vendor transaction that committed late
    vendor.add("102", 5, "b")  # the same version again
    [result] = http_api.collect(spark, source)
    assert (result.status, result.rows) == ("success", 3)
    assert monitoring.last_counts(source.name, "visits") == {"read": 4, "reordered": 1, "already_landed": 1}

    # Committed after the last run but stamped before its offset (10:05): inside the late-arrival window.
    vendor.add("104", 3, "d")
    vendor.add("101", 8, "a2")  # a new version of 101
    vendor.add("105", 10, "e")
    [result] = http_api.collect(spark, source)
    assert vendor.asked_since[-1] == "2026-11-10T09:05:00.000+08:00"
    assert (result.status, result.rows) == ("success", 3)
    counts = monitoring.last_counts(source.name, "visits")
    assert counts == {"read": 7, "reordered": 1, "already_landed": 4}  # the vendor still serves the repeat
    assert counts["read"] == result.rows + counts["already_landed"]  # every record read is accounted for

    [result] = http_api.collect(spark, source)
    assert (result.status, result.rows) == ("no_change", 0)
    rows = _bronze(spark, source.name, "visits")
    assert sorted((r.id, r.name) for r in rows.collect()) == [
        ("101", "a"),
        ("101", "a2"),
        ("102", "b"),
        ("103", "c"),
        ("104", "d"),
        ("105", "e"),
    ]
    assert rows.select("_source_pos").distinct().count() == rows.count() == 6
    latest = {r.id: r.name for r in bronze.latest_versions(rows, ["id"]).collect()}
    assert latest == {"101": "a2", "102": "b", "103": "c", "104": "d", "105": "e"}
    status = {r["table_name"]: r for r in monitoring.source_status() if r["source_system"] == source.name}
    assert status["visits"]["rows_total"] == 6
