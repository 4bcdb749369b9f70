"""PostgreSQL log-based CDC (pg_logical) against a real scratch database: snapshot then stream, exactly once.

Each test gets a fresh database ``scratch_pglogical`` (schema ``his``, two collected tables and one that is not
listed) and its own replication slot, which teardown drops (an abandoned slot would retain WAL forever).
"""

from __future__ import annotations

import io
import shutil
from contextlib import closing
from datetime import datetime, timedelta

import psycopg2
import pytest
from pyspark.sql import DataFrame

from core.alerts import open_alerts
from core.settings import get_settings
from core.spark import read_delta
from ingestion import monitoring, pg_logical
from ingestion.bronze import bronze_path
from ingestion.monitoring import accept_schema_change, forget_source, load_checkpoint
from ingestion.registry import SourceConfig, load_source
from simulator.connections import owner_password
from spark_jobs.standardize import current_state

SOURCE = "scratch_pglogical"
T0 = datetime(2026, 11, 10, 8, 0, 0)
YAML = f"""
name: {SOURCE}
org_code: "410182002"
mode: pg_logical
connection: {{kind: postgresql, database: {SOURCE}, schema: his, user: his, password_env: DRC_HIS_DB_PASSWORD}}
strategy: {{batch_size: 3, parallelism: 2, retries: 0}}
tables:
  - {{name: visit, keys: [id], commit_time: updated_at, business_time: visit_time}}
  - {{name: diag, keys: [diag_id], commit_time: updated_at}}
"""
DDL = [
    "CREATE SCHEMA his",
    "CREATE TABLE his.visit (id bigint PRIMARY KEY, name varchar(16), amount numeric(10,2), status char(1), "
    "id_card varchar(18) NOT NULL DEFAULT '', visit_time timestamp, updated_at timestamptz NOT NULL)",
    "CREATE TABLE his.diag (diag_id varchar(12) PRIMARY KEY, visit_id bigint, code varchar(8), seq smallint, "
    "updated_at timestamp(3) NOT NULL)",
    "CREATE TABLE his.not_listed (id int PRIMARY KEY)",
]


def _connect(database: str):
    settings = get_settings()
    conn = psycopg2.connect(
        host=settings.pg_host, port=settings.pg_port, dbname=database, user="his", password=owner_password()
    )
    conn.autocommit = True
    return conn


def _sql(*statements: str, params: tuple = ()) -> None:
    """One source transaction."""
    with closing(_connect(SOURCE)) as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        for statement in statements:
            cur.execute(statement, params)
        cur.execute("COMMIT")


def _drop_database() -> None:
    with closing(_connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s", (SOURCE,)
        )
        cur.execute(f"DROP DATABASE IF EXISTS {SOURCE} WITH (FORCE)")


def _forget() -> None:
    shutil.rmtree(get_settings().lake_path("bronze", SOURCE), ignore_errors=True)
    forget_source(SOURCE)


@pytest.fixture
def source(tmp_path) -> SourceConfig:
    _drop_database()
    _forget()
    with closing(_connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {SOURCE}")
    _sql(*DDL)
    path = tmp_path / f"{SOURCE}.yaml"
    path.write_text(YAML, encoding="utf-8")
    config = load_source(path)
    yield config
    pg_logical.drop_slot(config)
    _drop_database()
    _forget()


def _visits(ids: range, name: str, day: int = 0) -> None:
    at = T0 + timedelta(days=day)
    _sql(*[f"INSERT INTO his.visit VALUES ({i}, '{name}{i}', {i}.25, '1', '', '{at}', '{at}+08')" for i in ids])


def _bronze(spark, table: str) -> DataFrame:
    return read_delta(spark, bronze_path(SOURCE, table))


def _source_table(spark, config: SourceConfig, table: str) -> DataFrame:
    url, props = config.connection.jdbc()
    return spark.read.jdbc(url, f"his.{table}", properties=props)


def _assert_reconciles(spark, config: SourceConfig, table: str) -> None:
    """Bronze's current state (latest version per key, deletes applied) equals the source, column for column."""
    expected = _source_table(spark, config, table)
    landed = current_state(_bronze(spark, table), list(config.table(table).keys)).select(*expected.columns)
    assert landed.dtypes == expected.dtypes
    assert (expected.exceptAll(landed).count(), landed.exceptAll(expected).count()) == (0, 0)


def _statuses(results) -> dict[str, str]:
    return {r.table: r.status for r in results}


def _slot_lsn(config: SourceConfig) -> int:
    with closing(pg_logical.connect(config)) as conn:
        return pg_logical.slot_position(conn, pg_logical.slot_name(config))


def test_snapshot_then_inserts_updates_deletes_reconcile_and_rerun_lands_nothing(spark, source):
    _visits(range(1, 6), "v")
    _sql(
        "INSERT INTO his.diag VALUES ('D1', 1, 'I10', 1, '2026-11-10 08:01:00.123')",
        "INSERT INTO his.diag VALUES ('D2', 2, 'J06.9', 1, '2026-11-10 08:02:00')",
        "INSERT INTO his.not_listed VALUES (1)",
    )

    first = pg_logical.collect(spark, source)
    assert _statuses(first) == {"visit": "success", "diag": "success"}
    visit = _bronze(spark, "visit")
    assert visit.where("_op = 'r'").count() == 5 and visit.count() == 5
    assert _bronze(spark, "diag").count() == 2
    assert read_delta(spark, bronze_path(SOURCE, "not_listed")) is None
    _assert_reconciles(spark, source, "visit")

    # One transaction with more rows than batch_size, then updates, a key change, deletes, a re-insert.
    _visits(range(6, 11), "w", day=1)
    _sql(
        "UPDATE his.visit SET status = '2', amount = 99.99, updated_at = '2026-11-11 09:00+08' WHERE id IN (1, 6)",
        "DELETE FROM his.visit WHERE id = 2",
        "UPDATE his.diag SET code = 'I10.X00', updated_at = '2026-11-11 09:00' WHERE diag_id = 'D1'",
    )
    _sql(
        "UPDATE his.diag SET diag_id = 'D2B' WHERE diag_id = 'D2'",
        "DELETE FROM his.visit WHERE id = 7",
        "INSERT INTO his.visit VALUES (2, 'again', 1.00, '1', '410182', '2026-11-11 10:00', '2026-11-11 10:00+08')",
    )
    with closing(_connect(SOURCE)) as conn, conn.cursor() as cur:  # COPY: one WAL record for several rows
        cur.copy_expert(
            "COPY his.visit FROM STDIN",
            io.StringIO(
                "".join(f"{i}\tcopy{i}\t1.5\t1\t\t2026-11-11 11:00\t2026-11-11 11:00+08\n" for i in (20, 21, 22))
            ),
        )
    before = datetime.now()
    second = pg_logical.collect(spark, source)
    assert _statuses(second) == {"visit": "success", "diag": "success"}
    for table in ("visit", "diag"):
        _assert_reconciles(spark, source, table)
    visit = _bronze(spark, "visit")
    deletes = visit.where("_op = 'd'").collect()
    assert sorted(r.id for r in deletes) == [2, 7]
    assert all(r.name is None and r._source_ts >= before - timedelta(minutes=1) for r in deletes)
    assert visit.where("_op = 'c'").count() == 9 and visit.where("_op = 'u'").count() == 2
    assert visit.where("id = 6 AND _op = 'u'").first()._source_ts == datetime(2026, 11, 11, 9, 0)
    diag = _bronze(spark, "diag")
    assert [r.diag_id for r in diag.where("_op = 'd'").collect()] == ["D2"]  # the old key of the key change
    # Every position is unique and string order is source order; batches follow transaction boundaries.
    assert visit.select("_source_pos").distinct().count() == visit.count()
    assert {len(r._source_pos) for r in visit.where("_op <> 'r'").collect()} == {38}
    assert _slot_lsn(source) > 0 and load_checkpoint(SOURCE)

    rerun = pg_logical.collect(spark, source)
    assert _statuses(rerun) == {"visit": "no_change", "diag": "no_change"}
    assert _bronze(spark, "visit").count() == visit.count()


def test_a_kill_between_landing_and_advancing_the_slot_duplicates_nothing(spark, source, monkeypatch):
    _visits(range(1, 4), "v")
    pg_logical.collect(spark, source)
    _visits(range(4, 8), "w", day=1)
    _sql("UPDATE his.visit SET name = 'changed' WHERE id = 1", "DELETE FROM his.visit WHERE id = 3")
    held = _slot_lsn(source)

    def killed(*args, **kwargs):
        raise SystemExit("killed after landing, before advancing the slot")

    with monkeypatch.context() as patch:
        patch.setattr(pg_logical, "advance", killed)
        with pytest.raises(SystemExit):
            pg_logical.collect(spark, source)
    assert _slot_lsn(source) == held
    landed = _bronze(spark, "visit").count()
    assert landed == 3 + 4 + 2

    assert _statuses(pg_logical.collect(spark, source))["visit"] == "no_change"
    assert _bronze(spark, "visit").count() == landed
    assert _slot_lsn(source) > held
    _assert_reconciles(spark, source, "visit")


def test_an_added_column_arrives(spark, source):
    _visits(range(1, 3), "v")
    pg_logical.collect(spark, source)
    _sql(
        "ALTER TABLE his.visit ADD COLUMN pay_channel varchar(3)",
        "INSERT INTO his.visit VALUES (3, 'n', 3.00, '1', '', '2026-11-11 08:00', '2026-11-11 08:00+08', 'WX')",
    )
    _sql("UPDATE his.visit SET pay_channel = 'XJ' WHERE id = 1")
    assert _statuses(pg_logical.collect(spark, source))["visit"] == "success"
    visit = _bronze(spark, "visit")
    assert dict(visit.dtypes)["pay_channel"] == "string"
    assert {r.id: r.pay_channel for r in visit.where("_op <> 'r'").collect()} == {3: "WX", 1: "XJ"}
    _assert_reconciles(spark, source, "visit")


def test_a_retyped_column_stops_only_its_table_and_holds_the_slot_until_accepted(spark, source):
    _visits(range(1, 3), "v")
    _sql("INSERT INTO his.diag VALUES ('D1', 1, 'I10', 1, '2026-11-10 08:01:00')")
    pg_logical.collect(spark, source)
    held = _slot_lsn(source)
    _sql(
        "ALTER TABLE his.diag ALTER COLUMN seq TYPE integer",
        "INSERT INTO his.diag VALUES ('D2', 2, 'R51', 2, '2026-11-11 08:00:00')",
    )
    _visits(range(3, 5), "w", day=1)

    results = {r.table: r for r in pg_logical.collect(spark, source)}
    assert results["diag"].status == "stopped" and "seq changed type smallint → int" in results["diag"].error
    assert results["visit"].status == "success"
    _assert_reconciles(spark, source, "visit")
    assert _bronze(spark, "diag").count() == 1
    assert _slot_lsn(source) == held  # diag's change must stay readable until someone decides

    _visits(range(5, 6), "x", day=2)  # the other table keeps flowing while diag is stopped
    assert _statuses(pg_logical.collect(spark, source)) == {"visit": "success", "diag": "stopped"}
    assert _bronze(spark, "visit").count() == 5

    accept_schema_change(SOURCE, "diag")
    assert _statuses(pg_logical.collect(spark, source)) == {"visit": "no_change", "diag": "success"}
    diag = _bronze(spark, "diag")
    assert dict(diag.dtypes)["seq"] == "smallint" and diag.where("diag_id = 'D2'").first().seq == 2
    assert _slot_lsn(source) > held


def test_a_lost_slot_is_recreated_and_bronze_resynchronised_with_deletes(spark, source, tmp_path):
    path = tmp_path / "tiny.yaml"  # one delete of four keys is 25 %: above the default max_delete_share (0.2)
    path.write_text(YAML.replace("retries: 0}", "retries: 0, max_delete_share: 0.5}"), encoding="utf-8")
    source = load_source(path)
    _visits(range(1, 5), "v")
    pg_logical.collect(spark, source)
    assert pg_logical.drop_slot(source)
    _sql("DELETE FROM his.visit WHERE id = 4", "UPDATE his.visit SET name = 'gap' WHERE id = 1")
    _visits(range(5, 6), "n", day=1)

    assert _statuses(pg_logical.collect(spark, source))["visit"] == "success"
    visit = _bronze(spark, "visit")
    assert {(r.id, r._op) for r in visit.where("_op <> 'r'").collect()} == {(4, "d"), (1, "u"), (5, "c")}
    _assert_reconciles(spark, source, "visit")
    _sql("UPDATE his.visit SET name = 'after' WHERE id = 2")
    assert _statuses(pg_logical.collect(spark, source))["visit"] == "success"
    _assert_reconciles(spark, source, "visit")


def test_postgres_types_map_like_the_jdbc_reader(spark, source):
    """The stream builds each column with the type the JDBC snapshot gives it, so bronze never flips types."""
    _sql(
        "CREATE TABLE his.typed (id integer PRIMARY KEY, a smallint, b bigint, c numeric(12,4), d numeric, "
        "e real, f double precision, g boolean, h date, i timestamp(3), j timestamptz, k char(2), l text, "
        "m jsonb, n bytea)"
    )
    jdbc = _source_table(spark, source, "typed")
    with closing(pg_logical.connect(source)) as conn:
        catalog = pg_logical.read_catalog(conn, "his", ["typed"])["typed"]
    assert {name: pg_logical.spark_type(t) for name, t in catalog.columns.items()} == {
        f.name: f.dataType.simpleString() for f in jdbc.schema.fields
    }
    with pytest.raises(pg_logical.UnsupportedColumnType):
        pg_logical.spark_type("integer[]")


def test_a_stopped_table_holds_the_slot_only_up_to_the_configured_wal_size(spark, source, tmp_path):
    """The member's database keeps every WAL byte a held slot needs: past max_slot_wal_mb the stopped table
    lets go of the slot (alerted, recorded) and is re-synchronised by snapshot difference once it runs again."""
    path = tmp_path / "capped.yaml"
    path.write_text(
        YAML.replace("retries: 0}", "retries: 0, max_slot_wal_mb: 0.01, alert_slot_wal_mb: 0.005}"), encoding="utf-8"
    )
    capped = load_source(path)
    _visits(range(1, 3), "v")
    _sql("INSERT INTO his.diag VALUES ('D1', 1, 'I10', 1, '2026-11-10 08:01:00')")
    pg_logical.collect(spark, capped)
    held = _slot_lsn(capped)
    _sql(
        "ALTER TABLE his.diag ALTER COLUMN seq TYPE integer",
        "INSERT INTO his.diag VALUES ('D2', 2, 'R51', 2, '2026-11-11 08:00:00')",
    )
    _visits(range(3, 5), "w", day=1)
    _sql("INSERT INTO his.not_listed SELECT generate_series(1, 2000)")  # the hospital keeps writing: WAL grows

    results = {r.table: r for r in pg_logical.collect(spark, capped)}
    assert results["diag"].status == "stopped" and results["visit"].status == "success"
    slot = pg_logical.slot_name(capped)
    alert = results["*"].error
    assert slot in alert and "diag" in alert and "max_slot_wal_mb" in alert and "re-synchronise" in alert
    assert _slot_lsn(capped) > held  # released, not held for ever
    assert monitoring.slot_status(SOURCE)["released"] == "diag"
    status = {r["source_system"]: r for r in monitoring.source_rollup()}
    assert status[SOURCE]["slot_retained_bytes"] is not None
    operator_alert = [a for a in open_alerts() if a["kind"] == "slot_wal" and a["subject"] == SOURCE]
    assert operator_alert and slot in operator_alert[0]["message"], "the operators' alert table has it too"

    _visits(range(5, 6), "x", day=2)  # still drifted: stopped, holds nothing
    results = {r.table: r for r in pg_logical.collect(spark, capped)}
    assert (results["visit"].status, results["diag"].status) == ("success", "stopped")
    assert monitoring.slot_status(SOURCE)["held_by"] is None
    assert _bronze(spark, "visit").count() == 5

    accept_schema_change(SOURCE, "diag")  # fixed: diag resumes from a snapshot
    results = {r.table: r for r in pg_logical.collect(spark, capped)}
    assert results["diag"].status == "success"
    diag = _bronze(spark, "diag")
    assert sorted((r.diag_id, r.seq) for r in diag.collect()) == [("D1", 1), ("D2", 2)]
    assert pg_logical._load_state(capped).get("resync") == []
    _assert_reconciles(spark, capped, "visit")


def test_a_quiet_member_database_does_not_make_the_server_keep_the_wal_others_write(spark, source):
    """WAL is shared by every database of a server: while the member's own database has no transaction, the
    others' writes (here the warehouse's) must not pile up behind its slot."""
    _visits(range(1, 3), "v")
    pg_logical.collect(spark, source)
    with closing(_connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE elsewhere AS SELECT generate_series(1, 50000) AS n")  # another database's WAL
        cur.execute("SELECT pg_current_wal_lsn()::text")
        written = pg_logical.lsn_int(cur.fetchone()[0])
    results = _statuses(pg_logical.collect(spark, source))
    assert results["visit"] == "no_change" and _slot_lsn(source) >= written
    _visits(range(3, 4), "w")  # and what the member writes next still arrives
    pg_logical.collect(spark, source)
    _assert_reconciles(spark, source, "visit")
