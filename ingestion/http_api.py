"""HTTP JSON API collection (vendor 数据开放接口): token auth, keyset paging, retries, exactly once.

Per resource (table) and hospital the offset is the highest landed ``(updatedAt, id)``. A run asks for
``updated_since = <that updatedAt> - strategy.late_arrival_minutes`` (inclusive) and follows ``nextCursor``
to the end. A record is one version of one key (its position: updatedAt millis + id); a version bronze
already holds, or one repeated within the run, is skipped, every other is kept, even when it arrives out of
the vendor's (updatedAt, id) order: a vendor transaction that commits after a later-stamped one, or clock
skew between the vendor's servers. Those are counted as ``reordered`` in the run's monitoring
(``table_run.counts``, with ``read`` and ``already_landed``: read = landed + already_landed). A record
stamped more than the late-arrival window before the offset is outside the vendor's answer and cannot be
seen. Every ``strategy.batch_size`` records land as one bronze commit whose offset is each hospital's highest
position so far: a ``kill -9`` resumes after the last commit and lands nothing twice; a run with nothing new
lands nothing.

The client renews the bearer token once on 401 ``40102``/``40103`` (expired/invalid), waits ``Retry-After``
on 429, retries 500/502/503/504 and transport errors with capped exponential backoff, then raises
``SourceUnavailable`` so the runner reports ``source_down`` and a later run catches up. Requests are spaced
to ``strategy.rate_limit_per_second``. Neither the secret nor the token is ever logged.

Records land with every JSON field as a string column (bronze keeps raw values; objects/arrays as JSON
text), so a field the vendor adds becomes a new column, and a value's JSON type never retypes a column.
``_op`` is ``d`` for tombstones and ``u`` (upsert by key) otherwise: the vendor's ``createdAt`` is business
time, so a first version cannot be told from a later one.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from ingestion import bronze
from ingestion.monitoring import mask
from ingestion.registry import SourceConfig, TableConfig, expand_env
from ingestion.runner import SourceUnavailable, run_table

log = logging.getLogger(__name__)

RETRYABLE_STATUS = (500, 502, 503, 504)
RENEW_TOKEN = (40102, 40103)  # expired / not valid any more (e.g. the vendor rotated its signing key): renew once
MAX_THROTTLED = 60  # consecutive 429 answers to one request before the source counts as down
KEY_WIDTH = 20  # record keys are left-padded with zeros to this width in ``_source_pos``


class VendorApiError(RuntimeError):
    """The API refused a request for a reason retrying cannot fix (bad parameter, credentials, unknown tenant)."""


class RateLimiter:
    """Spaces requests at most ``rate`` a second (a token bucket holding one token), below the vendor's limit."""

    def __init__(self, rate: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()
        self.sleep = sleep

    def wait(self) -> None:
        now = time.monotonic()
        if self.next_at > now:
            self.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


class VendorClient:
    """One authenticated session with the vendor API; ``stats`` counts requests, retries, throttling, renewals."""

    def __init__(self, source: SourceConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        options = source.connection.options
        base_url = expand_env(options["base_url"])
        self.where = f"{source.name} ({base_url})"
        self.client_id = options["client_id"]
        self.secret_reader = source.connection.secret
        self.token_path = options.get("token_path", "/api/v1/auth/token")
        self.page_size = int(source.options.get("page_size", 1000))
        self.retries = source.strategy.retries
        self.backoff = source.strategy.retry_backoff_seconds
        self.max_backoff = float(options.get("max_backoff_seconds", 30))
        self.limiter = RateLimiter(source.strategy.rate_limit_per_second, sleep)
        self.sleep = sleep
        self.http = httpx.Client(base_url=base_url, timeout=float(options.get("timeout_seconds", 30)))
        self.token: str | None = None
        self.stats: Counter[str] = Counter()

    def __enter__(self) -> VendorClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _bearer(self) -> str:
        if self.token is None:
            data = self.call(
                "POST",
                self.token_path,
                body={"client_id": self.client_id, "client_secret": self.secret_reader()},
                auth=False,
            )
            self.token = data["access_token"]
            self.stats["tokens"] += 1
        return self.token

    def _delay(self, failures: int, retry_after: float | None) -> float:
        return max(min(self.max_backoff, self.backoff * 2 ** (failures - 1)), retry_after or 0.0)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        """One API call, retried as the vendor asks; returns the envelope's ``data``."""
        failures = throttled = 0
        renewed = False
        while True:
            headers = {"Authorization": f"Bearer {self._bearer()}"} if auth else {}
            self.limiter.wait()
            self.stats["requests"] += 1
            try:
                response = self.http.request(method, path, params=params, json=body, headers=headers)
            except httpx.TransportError as exc:
                failures += 1
                problem = f"{type(exc).__name__}: {exc}"
                retry_after = None
            else:
                envelope = _envelope(response)
                code, status = envelope.get("code", 0), response.status_code
                if status == 200 and code == 0:  # the token endpoint answers OAuth style, without an envelope
                    return envelope["data"] if "data" in envelope else envelope
                if status == 401 and code in RENEW_TOKEN and auth and not renewed:
                    self.token, renewed = None, True
                    self.stats["renewals"] += 1
                    continue
                if status == 429:
                    throttled += 1
                    self.stats["throttled"] += 1
                    if throttled > MAX_THROTTLED:
                        raise SourceUnavailable(f"{self.where}: still throttled (429) after {throttled} waits")
                    self.sleep(_retry_after(response) or 1.0)
                    continue
                problem = f"HTTP {status} code {code}: {envelope.get('msg')}"
                if status not in RETRYABLE_STATUS:
                    raise VendorApiError(mask(f"{self.where} {method} {path} refused: {problem}"))
                failures += 1
                retry_after = _retry_after(response)
            if failures > self.retries:
                raise SourceUnavailable(mask(f"{self.where} {method} {path} failed {failures} times: {problem}"))
            self.stats["retries"] += 1
            log.warning("%s %s %s: %s; retry %d/%d", self.where, method, path, mask(problem), failures, self.retries)
            self.sleep(self._delay(failures, retry_after))

    def pages(self, endpoint: str, updated_since: str | None) -> Iterator[list[dict[str, Any]]]:
        """Every page of records changed since ``updated_since`` (inclusive), in (updatedAt, id) order."""
        params: dict[str, Any] = {"page_size": self.page_size}
        if updated_since:
            params["updated_since"] = updated_since
        while True:
            data = self.call("GET", endpoint, params=params)
            yield data["list"]
            if not data.get("nextCursor"):
                return
            params = {**params, "cursor": data["nextCursor"]}


def _envelope(response: httpx.Response) -> dict[str, Any]:
    """The vendor's ``{code, msg, data}``; a non-JSON answer (e.g. a proxy's error page) gets code None."""
    try:
        body = response.json()
    except ValueError:
        return {"code": None, "msg": response.text[:200]}
    return body if isinstance(body, dict) else {"code": None, "msg": str(body)[:200]}


def _retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` seconds a vendor asks for (an HTTP-date or garbage counts as not given)."""
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _millis(stamp: str) -> int:
    """UTC epoch milliseconds of an ISO 8601 time (no offset = Beijing time, as the vendor documents)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the process runs in Asia/Shanghai
    return int(moment.timestamp() * 1000)


def position(commit_time: str, keys: list[str]) -> str:
    """Fixed-width sortable source position: UTC millis of the commit time, then each key zero-padded."""
    return f"{_millis(commit_time):015d}" + "".join(str(k).rjust(KEY_WIDTH, "0") for k in keys)


def _text(value: Any) -> str | None:
    """A JSON value as bronze keeps it: strings as they are, everything else in its JSON spelling."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def records_frame(spark: SparkSession, records: list[dict[str, Any]], table: TableConfig, tombstone: str) -> DataFrame:
    """Records as a DataFrame: every field a string column (in order of first appearance) + the mode columns."""
    commit_time = table.commit_time or "updatedAt"
    columns = list(dict.fromkeys(field for record in records for field in record))
    schema = StructType(
        [StructField(c, StringType()) for c in columns]
        + [StructField("_op", StringType()), StructField("_source_pos", StringType())]
    )
    rows = [
        (
            *(_text(record.get(c)) for c in columns),
            "d" if record.get(tombstone) is True else "u",
            position(record[commit_time], [record[k] for k in table.keys]),
        )
        for record in records
    ]
    return spark.createDataFrame(rows, schema).withColumn("_source_ts", F.col(commit_time).cast("timestamp"))


def _since(stamp: str, window_minutes: int) -> str:
    """The ``updated_since`` of a run: the offset's updatedAt minus the late-arrival window, same spelling."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) - timedelta(minutes=window_minutes)
    return moment.isoformat(timespec="milliseconds")


def _landed_positions(spark: SparkSession, source: SourceConfig, table: TableConfig, floor: str) -> set[str]:
    """Positions (key + version) bronze already holds from ``floor`` on: the re-read window's records."""
    path = bronze.bronze_path(source.name, table.name)
    if not floor or not bronze.delta_exists(spark, path):
        return set()
    rows = spark.read.format("delta").load(path).where(F.col("_source_pos") >= floor).select("_source_pos")
    return {r[0] for r in rows.collect()}


def _collect_table(
    spark: SparkSession, source: SourceConfig, table: TableConfig, client: VendorClient
) -> bronze.TableResult:
    """Pull one resource for every hospital from its committed offset; returns records landed and counts.

    Hospitals share batches (one commit can carry the tail of one and the head of the next): fewer, larger
    commits, and the offset holds each hospital's own position.
    """
    commit_time = table.commit_time or "updatedAt"
    window = source.strategy.late_arrival_minutes
    offset: dict[str, dict[str, Any]] = bronze.committed_offset(spark, source.name, table.name) or {}
    hospitals = [str(h or "*") for h in source.options.get("hospitals") or [None]]
    since = {part: _since(offset[part][commit_time], window) for part in hospitals if part in offset}
    floor = min((position(stamp, []) for stamp in since.values()), default="")
    known = _landed_positions(spark, source, table, floor)
    pending: list[tuple[str, dict[str, Any], str]] = []
    landed = 0
    counts = Counter(read=0, reordered=0, already_landed=0)
    for hospital, part in zip(source.options.get("hospitals") or [None], hospitals, strict=True):
        last = offset.get(part)
        high = position(last[commit_time], last["keys"]) if last else ""
        endpoint = table.options["endpoint"].format(hospitalCode=hospital)
        for page in client.pages(endpoint, since.get(part)):
            for record in page:
                counts["read"] += 1
                here = position(record[commit_time], [record[k] for k in table.keys])
                if here in known:  # this version landed already (or came twice in this run)
                    counts["already_landed"] += 1
                    continue
                known.add(here)
                if here <= high:  # out of the vendor's order: kept, and counted
                    counts["reordered"] += 1
                    log.info(
                        "%s.%s: record %s (%s %s) arrived after a later one; kept",
                        source.name,
                        table.name,
                        [record[k] for k in table.keys],
                        commit_time,
                        record[commit_time],
                    )
                high = max(high, here)
                pending.append((part, record, here))
            while len(pending) >= source.strategy.batch_size:
                batch, pending = pending[: source.strategy.batch_size], pending[source.strategy.batch_size :]
                landed, offset = _land(spark, source, table, batch, offset, landed)
    if pending:
        landed, offset = _land(spark, source, table, pending, offset, landed)
    if counts["reordered"]:
        log.warning(
            "%s.%s: %d record(s) arrived out of the vendor's order and were kept",
            source.name,
            table.name,
            counts["reordered"],
        )
    return bronze.TableResult(
        source.name, table.name, landed, "success" if landed else "no_change", counts=dict(counts)
    )


def _land(
    spark: SparkSession,
    source: SourceConfig,
    table: TableConfig,
    batch: list[tuple[str, dict[str, Any], str]],
    offset: dict[str, Any],
    landed: int,
) -> tuple[int, dict[str, Any]]:
    """Land one batch with each hospital's offset moved to its highest position; returns (landed so far, offset)."""
    commit_time = table.commit_time or "updatedAt"
    moved = dict(offset)
    for part, record, here in batch:
        last = moved.get(part)
        if last is None or here > position(last[commit_time], last["keys"]):
            moved[part] = {commit_time: record[commit_time], "keys": [record[k] for k in table.keys]}
    frame = records_frame(
        spark, [record for _, record, _ in batch], table, source.options.get("tombstone_field", "deleted")
    )
    rows = bronze.land(spark, frame, source=source, table=table, offset=moved, offset_from=offset or None)
    log.info("%s.%s: landed %d records, offset %s", source.name, table.name, rows, moved)
    return landed + rows, moved


def collect(spark: SparkSession, source: SourceConfig) -> list[bronze.TableResult]:
    """Every resource of an HTTP API source, each guarded by the runner."""
    with VendorClient(source) as client:
        results = [
            run_table(spark, source, table, lambda t=table: _collect_table(spark, source, t, client))
            for table in source.tables
        ]
        log.info("%s: %s", source.name, dict(client.stats))
    return results
