"""Run collection: every selected source by its mode, each table guarded so one failure stops only itself.

A source that is down or refuses connections is retried with backoff, reported as ``source_down`` and
caught up on the next run (offsets only move with landed data). A table whose schema drifted, or whose
snapshot would delete too much, is ``stopped``; every other table and source keeps flowing. Every mode runs
under one lock per source (:func:`monitoring.source_lock`): a second, overlapping run of the same source
waits ``strategy.lock_wait_seconds`` and then skips with a message naming the source, so two runs never read
the same offset and land the same batch twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from pyspark.sql import SparkSession

from ingestion import monitoring
from ingestion.bronze import TableResult, TableStopped, repair_monitoring
from ingestion.registry import SourceConfig, TableConfig

log = logging.getLogger(__name__)

UNAVAILABLE_MARKERS = (
    "connection refused",
    "could not connect",
    "can't connect",
    "communications link failure",
    "connection reset",
    "server has gone away",
    "lost connection",
    "timed out",
    "name or service not known",
    "503 service unavailable",
    "socket connection failed",
    "connection to server",
    "no route to host",
)


class SourceUnavailable(RuntimeError):
    """The source system cannot be reached (down, refusing connections, answering 503)."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error means 'the source is not reachable now' rather than 'this data is wrong'."""
    while exc is not None:
        if isinstance(exc, (SourceUnavailable, ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ in ("OperationalError", "InterfaceError", "ConnectError", "ConnectTimeout"):
            return True
        if any(marker in str(exc).lower() for marker in UNAVAILABLE_MARKERS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_table(
    spark: SparkSession, source: SourceConfig, table: TableConfig, collect: Callable[[], TableResult | int]
) -> TableResult:
    """Collect one table: record the attempt, stop it on schema drift, fail it alone on bad data.

    ``collect`` returns rows landed (or a TableResult). Unreachable-source errors propagate so the
    runner can retry the whole source.
    """
    started = datetime.now().astimezone()
    repair_monitoring(spark, source, table)
    try:
        outcome = collect()
    except TableStopped as exc:
        monitoring.record_run(source.name, table.name, source.mode, started, "stopped", error=str(exc))
        log.error(monitoring.mask(str(exc)))
        return TableResult(source.name, table.name, 0, "stopped", error=monitoring.mask(str(exc)))
    except Exception as exc:
        if is_unavailable(exc):
            raise
        message = monitoring.mask(f"{type(exc).__name__}: {exc}")
        monitoring.record_run(source.name, table.name, source.mode, started, "failed", error=message)
        log.exception("collecting %s.%s failed", source.name, table.name)
        return TableResult(source.name, table.name, 0, "failed", error=message)
    result = (
        outcome
        if isinstance(outcome, TableResult)
        else TableResult(source.name, table.name, outcome, "success" if outcome else "no_change")
    )
    monitoring.record_run(
        source.name, table.name, source.mode, started, result.status, result.rows, result.error, result.counts
    )
    return result


def collect_source(
    spark: SparkSession,
    source: SourceConfig,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[TableResult]:
    """One source under its collection lock, retried with exponential backoff while it is unreachable."""
    started = datetime.now().astimezone()
    if not source.strategy.allows(now or started):
        monitoring.record_run(
            source.name, "*", source.mode, started, "skipped", error="outside the allowed collection window"
        )
        return [TableResult(source.name, "*", 0, "skipped", error="outside the allowed collection window")]
    with monitoring.source_lock(source.name, source.strategy.lock_wait_seconds) as mine:
        if not mine:
            message = (
                f"source {source.name}: another collection of this source is running "
                f"({monitoring.lock_holder(source.name)}); this run collected nothing so as not to land a "
                "batch twice. That run (or the next one) collects everything from the committed offsets; "
                "to wait instead, set strategy.lock_wait_seconds in "
                f"config/sources/{source.name}.yaml."
            )
            log.warning(message)
            monitoring.record_run(source.name, "*", source.mode, started, "skipped", error=message)
            return [TableResult(source.name, "*", 0, "skipped", error=message)]
        return _collect_locked(spark, source, started, sleep)


def _collect_locked(
    spark: SparkSession, source: SourceConfig, started: datetime, sleep: Callable[[float], None]
) -> list[TableResult]:
    attempts = source.strategy.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            results = source.collector()(spark, source)
            monitoring.record_run(source.name, "*", source.mode, started, "success", sum(r.rows for r in results))
            return results
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            message = monitoring.mask(f"{source.connection.describe()} unreachable: {type(exc).__name__}: {exc}")
            log.warning("%s (attempt %d/%d)", message, attempt, attempts)
            if attempt < attempts:
                sleep(source.strategy.retry_backoff_seconds * 2 ** (attempt - 1))
    monitoring.record_run(
        source.name,
        "*",
        source.mode,
        started,
        "source_down",
        error=f"{message}; gave up after {attempts} attempts, will catch up on the next run",
    )
    return [TableResult(source.name, "*", 0, "source_down", error=message)]


def collect_all(
    spark: SparkSession, sources: list[SourceConfig], progress: Callable[[TableResult], None] | None = None
) -> list[TableResult]:
    results: list[TableResult] = []
    for source in sources:
        try:
            source_results = collect_source(spark, source)
        except Exception as exc:  # a bug or bad config in one source must not stop the others
            message = monitoring.mask(f"{type(exc).__name__}: {exc}")
            monitoring.record_run(source.name, "*", source.mode, datetime.now().astimezone(), "failed", error=message)
            log.exception("collecting %s failed", source.name)
            source_results = [TableResult(source.name, "*", 0, "failed", error=message)]
        for result in source_results:
            if progress:
                progress(result)
        results.extend(source_results)
    return results
