"""Scheduled exports end to end, checked from the receiving side: what the SFTP server holds is downloaded and
verified against its manifest, its column contract and the marts; outages, late data and privacy refusals."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import socket
from collections import defaultdict
from datetime import datetime, timedelta

import paramiko
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from core.db import warehouse_engine
from core.settings import get_settings
from exports.catalog import CATALOG_DIR, catalog, load_catalog
from exports.periods import COUNTY_TZ, Period
from exports.runner import redeliver, run
from exports.sftp import Endpoint, connect

CAT = catalog()


class Receiver:
    """The municipal platform's side: reads what was delivered to its SFTP inbox."""

    def __init__(self) -> None:
        target = CAT.targets["upstream_sftp"]
        self.root = target.remote_dir
        self.client = connect(Endpoint.of(target, get_settings().state_dir))
        self.sftp = self.client.open_sftp()

    def names(self, feed: str, period: str) -> list[str]:
        try:
            return sorted(self.sftp.listdir(f"{self.root}/{feed}/{period}"))
        except FileNotFoundError:
            return []

    def read(self, feed: str, period: str, name: str) -> bytes:
        with self.sftp.open(f"{self.root}/{feed}/{period}/{name}", "rb") as handle:
            return handle.read()

    def delivery(self, feed: str, period: str, version: int | None = None) -> tuple[dict, bytes]:
        """The manifest of a version (default the newest delivered) and its data file, checksum verified."""
        manifests = [n for n in self.names(feed, period) if n.endswith(".manifest.json")]
        assert manifests, f"nothing delivered for {feed} {period}"
        chosen = (
            max(manifests, key=lambda n: int(n.rsplit("_V", 1)[1].split(".")[0]))
            if version is None
            else next(n for n in manifests if n.endswith(f"_V{version}.manifest.json"))
        )
        manifest = json.loads(self.read(feed, period, chosen))
        data = self.read(feed, period, manifest["file"])
        assert len(data) == manifest["bytes"] and hashlib.sha256(data).hexdigest() == manifest["sha256"]
        assert not [n for n in self.names(feed, period) if n.endswith(".part")], "a half-written file is visible"
        return manifest, data

    def rows(self, manifest: dict, data: bytes) -> list[dict]:
        names = [c["name"] for c in manifest["columns"]]
        if manifest["format"]["type"] == "csv":
            encoding = "utf-8-sig" if manifest["format"].get("bom") else manifest["format"]["encoding"]
            reader = csv.DictReader(io.StringIO(data.decode(encoding)))
            assert reader.fieldnames == names, "columns differ from the contract"
            return list(reader)
        lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert all(list(line) == names for line in lines)
        return lines

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def receiver(pipeline_done):
    checker = Receiver()
    yield checker
    checker.close()


def _mart(sql: str, **params):
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_every_feed_of_the_demo_days_is_on_the_server_and_matches_the_marts(pipeline_done, receiver):
    for day in pipeline_done.days:
        manifest, data = receiver.delivery("daily_service_volume", f"{day:%Y%m%d}")
        rows = receiver.rows(manifest, data)
        ((institutions, visits, admissions),) = _mart(
            "SELECT count(*), sum(total_visits), sum(admissions) FROM marts.fct_daily_service_volume "
            "WHERE service_date = :d",
            d=day,
        )
        assert manifest["row_count"] == len(rows) == institutions > 200  # every institution, 0 where silent
        assert sum(int(r["total_visits"]) for r in rows) == visits > 0
        assert sum(int(r["admissions"]) for r in rows) == admissions
        assert manifest["producer"]["code"] == "410182" and manifest["generated_at"]
        assert manifest["contract_version"] == "1.0" and manifest["columns"][0]["type"] == "date"

        manifest, data = receiver.delivery("empi_pix_daily", f"{day:%Y%m%d}")
        residents = receiver.rows(manifest, data)
        ((changed,),) = _mart("SELECT count(*) FROM marts.fct_resident_change WHERE change_date = :d", d=day)
        assert len(residents) == changed > 0
        assert all(r["local_identifiers"] and r["change_type"] in ("新建", "更新") for r in residents)

    month = f"{pipeline_done.last_day:%Y%m}"
    manifest, data = receiver.delivery("monthly_indicator_report", month)
    assert not manifest["complete"] and "期间未结束" in manifest["missing"][0]["reason"]  # demo month still open
    book = load_workbook(io.BytesIO(data))
    assert "说明" in book.sheetnames and len(book.sheetnames) >= 6
    notes = [[c.value for c in row] for row in book["说明"].iter_rows()]
    assert any(line[0] == "HO01" and line[2] for line in notes), "formulas are written down for the analyst"

    manifest, data = receiver.delivery("monthly_public_health_township", month)
    rows = receiver.rows(manifest, data)
    ((townships,),) = _mart("SELECT count(DISTINCT township) FROM marts.dim_organization WHERE township IS NOT NULL")
    assert len({r["township"] for r in rows}) == townships and data.startswith(b"\xef\xbb\xbf")

    manifest, data = receiver.delivery("research_extract", month)
    rows = receiver.rows(manifest, data)
    groups = defaultdict(set)
    for row in rows:
        groups[(row["birth_year_band"], row["sex_code"], row["township"])].add(row["patient_pseudonym"])
    assert manifest["row_count"] == len(rows) and manifest["privacy"]["k"] == 5
    assert all(len(s) >= 5 for s in groups.values()), "every released group holds at least k residents"
    ((encounters,),) = _mart(
        "SELECT count(*) FROM marts.xch_research_encounter WHERE visit_date BETWEEN :a AND :b",
        a=pipeline_done.first_day,
        b=pipeline_done.last_day,
    )
    assert len(rows) + manifest["privacy"]["suppressed_rows"] == encounters
    master_ids = {m for (m,) in _mart("SELECT master_id FROM marts.dim_patient")}
    assert not master_ids & {r["patient_pseudonym"] for r in rows}, "no master id leaves in a research extract"


def test_re_running_sends_nothing_twice_and_rewrites_nothing(pipeline_done):
    before = _mart("SELECT feed, period, version, sha256 FROM export.feed_version ORDER BY 1, 2, 3")
    deliveries = _mart("SELECT count(*) FROM export.delivery")
    outcomes = run(None, pipeline_done.last_day, include_open=True)
    assert {o.state for o in outcomes} <= {"unchanged", "final", "no_data"}, outcomes
    assert _mart("SELECT feed, period, version, sha256 FROM export.feed_version ORDER BY 1, 2, 3") == before
    assert _mart("SELECT count(*) FROM export.delivery") == deliveries


def _test_catalog(tmp_path, feed: str, tag: str, edit=lambda text: text, port_env: str = "DRC_SFTP_PORT"):
    """A copy of the catalog with one feed renamed t_<tag> (its own ledger rows) and edited."""
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CATALOG_DIR / "_targets.yaml", folder)
    targets = folder / "_targets.yaml"
    targets.write_text(
        targets.read_text(encoding="utf-8")
        .replace("port_env: DRC_SFTP_PORT", f"port_env: {port_env}")
        .replace("backoff_seconds: 2", "backoff_seconds: 0.1"),
        encoding="utf-8",
    )
    name = f"t_{tag}"
    text = (CATALOG_DIR / f"{feed}.yaml").read_text(encoding="utf-8").replace(f"name: {feed}", f"name: {name}")
    (folder / f"{name}.yaml").write_text(edit(text), encoding="utf-8")
    return load_catalog(folder), name


def test_server_down_then_back_delivers_later_without_duplicates(pipeline_done, receiver, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on: the server is down
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("DRC_TEST_DOWN_PORT", str(probe.getsockname()[1]))
    down, feed = _test_catalog(tmp_path, "daily_service_volume", "outage", port_env="DRC_TEST_DOWN_PORT")
    day = pipeline_done.last_day
    outcomes = run([feed], day, cat=down)
    assert (
        outcomes and {o.state for o in outcomes} <= {"failed", "no_data"} and any(o.state == "failed" for o in outcomes)
    )
    failed = _mart(
        "SELECT count(*), count(DISTINCT attempt) FROM export.delivery WHERE feed = :f "
        "AND result = 'failed' AND period = :p",
        f=feed,
        p=f"{day:%Y%m%d}",
    )
    assert failed == [(3, 3)], "three attempts with backoff, each logged"
    assert receiver.names(feed, f"{day:%Y%m%d}") == []

    shutil.rmtree(tmp_path / "exports")
    up, _ = _test_catalog(tmp_path, "daily_service_volume", "outage")
    outcomes = run([feed], day, cat=up)  # the next run catches up first
    assert [o.state for o in outcomes if o.period == f"{day:%Y%m%d}"] == ["delivered", "unchanged"]
    assert _mart(
        "SELECT count(*) FROM export.feed_version WHERE feed = :f AND period = :p", f=feed, p=f"{day:%Y%m%d}"
    ) == [(1,)], "the version made while the server was down is the one delivered"
    run([feed], day, cat=up)
    assert _mart(
        "SELECT count(*) FROM export.delivery WHERE feed = :f AND period = :p AND result = 'delivered'",
        f=feed,
        p=f"{day:%Y%m%d}",
    ) == [(1,)]
    assert len([n for n in receiver.names(feed, f"{day:%Y%m%d}") if not n.startswith(".")]) == 2

    receiver.sftp.remove(f"{receiver.root}/{feed}/{day:%Y%m%d}/{receiver.names(feed, f'{day:%Y%m%d}')[0]}")
    assert redeliver(feed, day.isoformat(), cat=up).state == "delivered"  # the receiver lost a file
    receiver.delivery(feed, f"{day:%Y%m%d}")


def test_late_data_makes_version_two_with_its_reason(pipeline_done, receiver, tmp_path):
    cat, feed = _test_catalog(tmp_path, "daily_service_volume", "late")
    day = pipeline_done.first_day
    run([feed], day, cat=cat)
    v1, _ = receiver.delivery(feed, f"{day:%Y%m%d}")
    try:
        with warehouse_engine().begin() as conn:  # a late-arriving admission, as the next transform would add it
            conn.execute(
                sa.text(
                    "UPDATE marts.fct_daily_service_volume SET admissions = admissions + 1 "
                    "WHERE service_date = :d AND org_code = '410182001'"
                ),
                {"d": day},
            )
        run([feed], day, cat=cat)
    finally:
        with warehouse_engine().begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE marts.fct_daily_service_volume SET admissions = admissions - 1 "
                    "WHERE service_date = :d AND org_code = '410182001'"
                ),
                {"d": day},
            )
    v2, _ = receiver.delivery(feed, f"{day:%Y%m%d}")
    assert (v1["version"], v2["version"], v2["supersedes"]) == (1, 2, 1)
    assert v2["reason"].startswith("迟到数据更正") and v2["sha256"] != v1["sha256"]
    assert receiver.delivery(feed, f"{day:%Y%m%d}", version=1)[0] == v1, "version 1 is never overwritten"


def test_incomplete_inputs_wait_until_the_deadline_then_go_out_marked(pipeline_done, tmp_path):
    cat, feed = _test_catalog(tmp_path, "daily_service_volume", "wait")
    day = pipeline_done.first_day
    with warehouse_engine().begin() as conn:  # the 人民医院 HIS went down for a while
        run_id = conn.execute(
            sa.text(
                "INSERT INTO ingest.table_run (source_system, table_name, mode, started_at, finished_at, status, "
                "error) "
                "VALUES ('rmyy_his', 'MZ_JZJL', 'mysql_binlog', now(), now(), 'source_down', 'connection refused') "
                "RETURNING run_id"
            )
        ).scalar()
    try:
        before_deadline = datetime.combine(day + timedelta(days=1), datetime.min.time(), COUNTY_TZ)
        waiting = run([feed], day, as_of=before_deadline, cat=cat)
        assert [o.state for o in waiting if o.period == f"{day:%Y%m%d}"] == ["waiting"]
        late = run([feed], day, as_of=before_deadline + timedelta(days=2), cat=cat)
        assert [o.state for o in late if o.period == f"{day:%Y%m%d}"] == ["delivered"]
        ((complete, missing),) = _mart(
            "SELECT complete, missing FROM export.feed_version WHERE feed = :f AND period = :p AND version = 1",
            f=feed,
            p=Period("day", day).key,
        )
        assert not complete and any(
            m["source_system"] == "rmyy_his"
            and m["reason"].startswith("来源系统不可达")
            and "410182001" in m["institutions"]
            for m in missing
        )
    finally:
        with warehouse_engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM ingest.table_run WHERE run_id = :r"), {"r": run_id})
    completed = run([feed], day, cat=cat)
    assert [o.state for o in completed if o.period == f"{day:%Y%m%d}"] == ["delivered"]
    ((reason, missing),) = _mart(
        "SELECT reason, missing FROM export.feed_version WHERE feed = :f AND period = :p AND version = 2",
        f=feed,
        p=Period("day", day).key,
    )
    assert "补齐" in reason and not any(m["source_system"] == "rmyy_his" for m in missing)


def test_a_release_breaking_k_anonymity_is_refused_naming_the_group(pipeline_done, tmp_path):
    cat, feed = _test_catalog(
        tmp_path,
        "research_extract",
        "kanon",
        lambda t: t.replace("suppress_small_groups: true", "suppress_small_groups: false").replace(
            "birth_year_band: 5", "birth_year_band: 1"
        ),
    )
    outcomes = run([feed], pipeline_done.last_day, include_open=True, cat=cat)
    refused = [o for o in outcomes if o.state == "refused"]
    assert refused and "release refused: k-anonymity k=5" in refused[0].detail
    assert "smallest: birth_year_band=" in refused[0].detail and "township=" in refused[0].detail
    assert _mart("SELECT count(*) FROM export.feed_version WHERE feed = :f", f=feed) == [(0,)]
    assert not (get_settings().exports_dir / "outbox" / feed).exists()


def test_status_and_spec_document_every_feed(pipeline_done):
    from cli.main import main as drc_main

    assert drc_main(["export", "status"]) == 0
    assert drc_main(["export", "spec", "--check"]) == 0
    statuses = {
        (r.feed, r.status) for r in _mart("SELECT feed, status FROM export.v_feed_status WHERE feed NOT LIKE 't\\_%'")
    }
    assert {f for f, _ in statuses} == set(CAT.feeds)
    assert {s for _, s in statuses} <= {"delivered", "delivered_late"}


def test_the_server_refuses_passwords_and_unknown_host_keys(pipeline_done, tmp_path):
    endpoint = Endpoint.of(CAT.targets["upstream_sftp"], get_settings().state_dir)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            endpoint.host,
            endpoint.port,
            username="upstream",
            password="guess",
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
    client.close()
    pinned = paramiko.SSHClient()
    (tmp_path / "known_hosts").write_text("")
    pinned.load_host_keys(str(tmp_path / "known_hosts"))
    pinned.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        pinned.connect(
            endpoint.host,
            endpoint.port,
            username="upstream",
            key_filename=str(endpoint.key_file),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
