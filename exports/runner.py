"""Produce and deliver the catalog's feeds, per feed × period, idempotently.

A period is exported when it has ended (or, asked for, while still open, marked so). Its inputs are checked
first: incomplete inputs make it wait until its deadline, after which it goes out marked incomplete (what is
missing named in the manifest). The file's bytes decide what happens next: the same bytes as the latest version
→ nothing new (a re-run writes and sends nothing); different bytes → a new version with the reason (late data,
inputs completed), never an overwrite. Every version sits in the local outbox; delivery retries with backoff and
a later run catches up what the server missed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.db import warehouse_engine
from core.indicators import load_catalog as load_indicator_catalog
from core.settings import get_settings
from exports import store
from exports.catalog import PSEUDONYMISATION, Catalog, Feed, catalog
from exports.completeness import missing_inputs
from exports.datasets import ReleaseRefused, build_extract
from exports.periods import COUNTY_TZ, Period, recent_periods
from exports.render import render, render_manifest
from exports.sftp import DeliveryError, Endpoint, upload

PRODUCER = {"code": "410182", "name": "荥阳市紧密型医共体数据资源中心", "system": "xydrc"}
MANIFEST_SPEC = "xydrc-export-manifest/1.0"


@dataclass(frozen=True)
class Outcome:
    feed: str
    period: str
    state: str  # delivered | unchanged | final | waiting | refused | failed | no_data
    version: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state not in ("refused", "failed")


def outbox_root() -> Path:
    return get_settings().exports_dir / "outbox"


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


@contextmanager
def feed_lock(feed: str) -> Iterator[None]:
    """One run per feed at a time (Airflow tasks and a hand-run CLI may overlap)."""
    with warehouse_engine().connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(hashtext('xydrc export ' || :f))"), {"f": feed})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext('xydrc export ' || :f))"), {"f": feed})
            conn.commit()


def first_data_day(conn: sa.Connection, feed: Feed) -> date | None:
    """The first day the feed's dataset holds: periods before it are not the platform's to report."""
    if feed.dataset["kind"] == "indicators":  # indicator months start with the visits the platform collected
        return conn.execute(sa.text("SELECT min(visit_date) FROM marts.fct_daily_outpatient_visits")).scalar()
    spec = feed.dataset
    return conn.execute(
        sa.text(f"SELECT min({spec['period_column']}) FROM {spec.get('schema', 'marts')}.{spec['model']}")
    ).scalar()


def notes_for(feed: Feed, period: Period) -> list[list[str]]:
    """The workbook's 说明 sheet: what the file is and how every number is computed (from the catalogs)."""
    lines = [
        ["报表", feed.zh],
        ["统计期", f"{period.start:%Y-%m-%d} 至 {period.end:%Y-%m-%d}"],
        ["报送单位", PRODUCER["name"]],
        ["接收单位", feed.receiver],
        ["数据级别", PSEUDONYMISATION[feed.pseudonymisation]],
        [],
    ]
    if feed.dataset["kind"] != "indicators":
        return (
            lines
            + [["列名", "中文名", "类型与代码体系"]]
            + [[c.name, c.zh, c.type + (f"；{c.code_system}" if c.code_system else "")] for c in feed.columns]
        )
    indicators = load_indicator_catalog()
    measures = indicators.measures
    lines.append(["指标编码", "指标名称", "计算公式", "分子", "分母", "单位", "说明"])
    families = feed.dataset.get("families")
    for indicator in indicators.indicators.values():
        if indicator.kind != "scalar" or (families and not ({indicator.family, *indicator.also_in} & set(families))):
            continue
        lines.append(
            [
                indicator.code,
                indicator.zh,
                indicator.formula,
                measures[indicator.numerator].zh if indicator.numerator in measures else "",
                measures[indicator.denominator].zh if indicator.denominator in measures else "",
                indicator.unit,
                indicator.note if not indicator.supported else "",
            ]
        )
    return lines


def _reason(latest: dict[str, Any] | None, complete: bool, open_period: bool, rows: int) -> str:
    if latest is None:
        if complete:
            return "首次上报"
        return "期间未结束，先行上报（初报）" if open_period else "截止时间已到，输入不完整，按期上报（缺失见 missing）"
    superseded = f"替代第 {latest['version']} 版"
    if complete and not latest["complete"]:
        return f"补齐：缺失的输入已到达，{superseded}"
    if not complete:
        return f"部分补齐：仍有缺失（见 missing），{superseded}"
    return f"迟到数据更正：行数 {latest['row_count']} → {rows}，内容有变化，{superseded}"


def export_period(
    cat: Catalog, feed: Feed, period: Period, through: date, as_of: datetime, include_open: bool
) -> Outcome:
    """Produce the period's file if it is due and differs from what was delivered; then deliver it."""
    open_period = period.end > through
    deadline = period.deadline(feed.deadline_days, feed.deadline_at)
    with warehouse_engine().begin() as conn:
        first = first_data_day(conn, feed)
        if first is None or period.end < first:
            return Outcome(feed.name, period.key, "no_data", detail=f"数据始于 {first or '—'}")
        latest = store.latest_version(conn, feed.name, period.key)
        if latest and latest["complete"] and feed.corrections == "next_period":
            return Outcome(feed.name, period.key, "final", latest["version"], "已完整上报；之后的变更随变更当日上报")
        missing = [m.as_dict() for m in missing_inputs(conn, feed.inputs, period.start, period.end)]
        if open_period:
            missing.insert(
                0, {"source_system": "*", "table": "*", "reason": f"期间未结束，数据截至 {through}", "institutions": []}
            )
        if missing and latest and latest["complete"]:
            return Outcome(
                feed.name, period.key, "unchanged", latest["version"], "已完整上报；当前输入不完整，不以不完整数据替代"
            )
        if missing and as_of < deadline and not (open_period and include_open):
            detail = "; ".join(f"{m['source_system']}.{m['table']}: {m['reason']}" for m in missing)[:500]
            store.set_period_state(
                conn, feed.name, period.key, "waiting", f"等待输入（截止 {deadline:%Y-%m-%d %H:%M}）：{detail}"
            )
            return Outcome(feed.name, period.key, "waiting", detail=f"until {deadline:%Y-%m-%d %H:%M}: {detail}")
        try:
            extract = build_extract(conn, feed, period)
        except ReleaseRefused as exc:
            store.set_period_state(conn, feed.name, period.key, "refused", str(exc))
            return Outcome(feed.name, period.key, "refused", detail=str(exc))
        content = render(feed, extract.rows, notes_for(feed, period), period.end)
        digest = hashlib.sha256(content).hexdigest()
        complete = not missing
        if latest and latest["sha256"] == digest and latest["complete"] == complete and latest["missing"] == missing:
            store.set_period_state(conn, feed.name, period.key, "done", None)
            row = latest
            new = False
        else:
            number = latest["version"] + 1 if latest else 1
            base = f"{feed.file_name.format(period=period.key)}_V{number}"
            folder = outbox_root() / feed.name / period.key / f"v{number}"
            generated_at = datetime.now(UTC).replace(microsecond=0)
            manifest = {
                "spec": MANIFEST_SPEC,
                "feed": feed.name,
                "feed_zh": feed.zh,
                "producer": PRODUCER,
                "receiver": feed.receiver,
                "period": {
                    "type": feed.period,
                    "key": period.key,
                    "start": period.start.isoformat(),
                    "end": period.end.isoformat(),
                },
                "version": number,
                "supersedes": latest["version"] if latest else None,
                "reason": _reason(latest, complete, open_period, len(extract.rows)),
                "complete": complete,
                "missing": missing,
                "file": f"{base}.{feed.extension}",
                "format": feed.format,
                "row_count": len(extract.rows),
                "bytes": len(content),
                "sha256": digest,
                "contract_version": feed.contract_version,
                "columns": feed.contract(),
                "pseudonymisation": feed.pseudonymisation,
                **(
                    {
                        "privacy": {
                            "k": feed.k_anonymity.k,
                            "quasi_identifiers": list(feed.k_anonymity.quasi_identifiers),
                            "smallest_group": extract.smallest_group,
                            "suppressed_rows": extract.suppressed_rows,
                            "suppressed_residents": extract.suppressed_subjects,
                        }
                    }
                    if feed.k_anonymity
                    else {}
                ),
                "deadline": deadline.isoformat(),
                "generated_at": generated_at.isoformat(),
            }
            manifest_bytes = render_manifest(manifest)
            _write_atomically(folder / manifest["file"], content)
            _write_atomically(folder / f"{base}.manifest.json", manifest_bytes)
            row = {
                "feed": feed.name,
                "period": period.key,
                "version": number,
                "period_start": period.start,
                "period_end": period.end,
                "complete": complete,
                "reason": manifest["reason"],
                "missing": missing,
                "file_name": manifest["file"],
                "sha256": digest,
                "bytes": len(content),
                "row_count": len(extract.rows),
                "manifest": manifest_bytes.decode("utf-8"),
                "outbox_dir": str(folder),
                "deadline": deadline,
                "generated_at": generated_at,
            }
            store.insert_version(conn, row)
            store.set_period_state(conn, feed.name, period.key, "done", None)
            new = True
    if not new:
        return Outcome(feed.name, period.key, "unchanged", row["version"], "与已上报版本一致，未重复上报")
    return deliver(cat, row, "run")


def _files_of(row: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The version's data file and manifest from the outbox, checked against the ledger's checksum."""
    folder = Path(row["outbox_dir"])
    data = (folder / row["file_name"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise DeliveryError(
            f"{folder / row['file_name']} no longer matches its sha256 in export.feed_version; "
            "the outbox was altered — re-export the period with a new version"
        )
    manifest_name = row["file_name"].rsplit(".", 1)[0] + ".manifest.json"
    return [(row["file_name"], data), (manifest_name, row["manifest"].encode("utf-8"))]


def deliver(cat: Catalog, row: dict[str, Any], trigger: str, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Send one version to its feed's target, retrying with exponential backoff; log every attempt."""
    feed = cat.feed(row["feed"])
    target = cat.targets[feed.target]
    endpoint = Endpoint.of(target, get_settings().state_dir)
    error = ""
    for attempt in range(1, target.retries + 1):
        started = datetime.now(UTC)
        try:
            receipt = upload(endpoint, f"{row['feed']}/{row['period']}", _files_of(row))
            result, error = "delivered", None
        except (DeliveryError, OSError) as exc:
            receipt, result, error = None, "failed", str(exc)
        with warehouse_engine().begin() as conn:
            store.record_attempt(
                conn,
                {
                    "feed": row["feed"],
                    "period": row["period"],
                    "version": row["version"],
                    "target": target.name,
                    "trigger": trigger,
                    "attempt": attempt,
                    "started_at": started,
                    "finished_at": datetime.now(UTC),
                    "result": result,
                    "error": error,
                    "receipt": receipt,
                },
            )
        if result == "delivered":
            return Outcome(row["feed"], row["period"], "delivered", row["version"], receipt["files"][0]["path"])
        if attempt < target.retries:
            sleep(target.backoff_seconds * 2 ** (attempt - 1))
    return Outcome(
        row["feed"],
        row["period"],
        "failed",
        row["version"],
        f"{error}. The version waits in the outbox ({row['outbox_dir']}); the next `./drc export run` "
        "sends it, or `./drc export deliver` now",
    )


def catch_up(cat: Catalog, feed: str | None = None) -> list[Outcome]:
    """Deliver every latest version the server has not confirmed (the server was down, a run was cut off)."""
    with warehouse_engine().connect() as conn:
        pending = store.undelivered(conn, feed)
    return [deliver(cat, row, "catch_up") for row in pending if row["feed"] in cat.feeds]


def run(
    feeds: list[str] | None,
    through: date,
    as_of: datetime | None = None,
    include_open: bool = False,
    progress: Callable[[Outcome], None] | None = None,
    cat: Catalog | None = None,
) -> list[Outcome]:
    """Catch up undelivered versions, then export every due period of the feeds (all feeds if none named)."""
    cat = cat or catalog()
    store.ensure_tables()
    as_of = as_of or datetime.now(COUNTY_TZ)
    selected = [cat.feed(name) for name in feeds] if feeds else list(cat.feeds.values())
    outcomes = []
    for feed in selected:
        with feed_lock(feed.name):
            for outcome in catch_up(cat, feed.name):
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
            for period in recent_periods(feed.period, through, feed.lookback_periods, include_open):
                outcome = export_period(cat, feed, period, through, as_of, include_open)
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
    return outcomes


def redeliver(feed: str, period: str, version: int | None = None, cat: Catalog | None = None) -> Outcome:
    """Send a delivered version again (the receiver lost it); a new attempt is logged, no new version made."""
    cat = cat or catalog()
    store.ensure_tables()
    spec = cat.feed(feed)
    key = Period.parse(spec.period, period).key
    with warehouse_engine().connect() as conn:
        row = store.version(conn, feed, key, version)
    if row is None:
        raise LookupError(
            f"{feed} has no version {version or ''} for {key}: `./drc export status --feed {feed}` lists what exists"
        )
    return deliver(cat, row, "redeliver")


def status(feed: str | None = None) -> list[dict[str, Any]]:
    store.ensure_tables()
    with warehouse_engine().connect() as conn:
        return store.feed_status(conn, feed)
