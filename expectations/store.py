"""Run the rule library and keep its results in PostgreSQL ``dq.*``: 稽核条目, problems with their lifecycle,
scores, and the (source, dataset) pairs a blocking rule holds back from publishing.

Every run checks the whole current state (silver is current state per business key), so a problem whose row
no longer fails is closed: corrected at the source, re-collected, re-checked. Nothing is deleted: a problem
keeps its first sighting, and every status change is an event in ``dq.problem_event``.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.db import apply_ddl, ensure_schemas, warehouse_engine
from core.organizations import organizations
from core.settings import get_settings
from expectations import engine
from expectations.rules import Library, Rule, dimensions, load_library
from expectations.scoring import score_rows

LOAD_SCHEMA = "dq_load"
DDL = [
    """CREATE TABLE IF NOT EXISTS dq.dimension (
        dimension text PRIMARY KEY, dimension_zh text NOT NULL, sort_order integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dq.rule (
        rule_id text PRIMARY KEY, dataset text NOT NULL, dimension text NOT NULL, severity text NOT NULL,
        description_zh text NOT NULL, kind text NOT NULL, origin text NOT NULL, definition jsonb NOT NULL,
        coefficient numeric NOT NULL DEFAULT 1)""",
    """CREATE TABLE IF NOT EXISTS dq.run (
        run_id text PRIMARY KEY, started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL,
        rules_run integer NOT NULL, rows_checked bigint NOT NULL, audit_items integer NOT NULL,
        problems_opened integer NOT NULL, problems_closed integer NOT NULL, problems_open integer NOT NULL,
        blocked text NOT NULL DEFAULT '', timings jsonb NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS dq.audit_item (
        rule_id text NOT NULL, dataset text NOT NULL, org_code text NOT NULL, source_system text NOT NULL,
        business_date date NOT NULL, checked_rows bigint NOT NULL, failed_rows bigint NOT NULL,
        coefficient numeric NOT NULL, run_id text NOT NULL,
        PRIMARY KEY (rule_id, dataset, org_code, source_system, business_date))""",
    """CREATE TABLE IF NOT EXISTS dq.problem (
        problem_id text PRIMARY KEY, rule_id text NOT NULL, dataset text NOT NULL, dimension text NOT NULL,
        org_code text, source_system text NOT NULL, source_table text, business_key text NOT NULL,
        business_date date, value text, description_zh text NOT NULL, status text NOT NULL,
        first_seen_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL, closed_at timestamptz,
        times_reopened integer NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS ix_problem_org ON dq.problem (org_code, status)",
    """CREATE TABLE IF NOT EXISTS dq.problem_event (
        problem_id text NOT NULL REFERENCES dq.problem, run_id text NOT NULL, at timestamptz NOT NULL,
        status text NOT NULL, PRIMARY KEY (problem_id, run_id))""",
    """CREATE TABLE IF NOT EXISTS dq.score (
        scheme_id text NOT NULL, scheme_version text NOT NULL, org_code text NOT NULL, dataset text NOT NULL,
        dimension text NOT NULL, period_type text NOT NULL, period_start date NOT NULL, score numeric(5, 2) NOT NULL,
        checked_rows bigint NOT NULL, failed_rows bigint NOT NULL, run_id text NOT NULL,
        PRIMARY KEY (org_code, dataset, dimension, period_type, period_start))""",
    # rows per dataset × institution × source × day, kept across runs: the volume rule's history
    """CREATE TABLE IF NOT EXISTS dq.dataset_volume (
        dataset text NOT NULL, org_code text NOT NULL, source_system text NOT NULL, business_date date NOT NULL,
        rows bigint NOT NULL, PRIMARY KEY (dataset, org_code, source_system, business_date))""",
    """CREATE TABLE IF NOT EXISTS dq.blocked_publish (
        source_system text NOT NULL, dataset text NOT NULL, rule_id text NOT NULL, failed_rows bigint NOT NULL,
        checked_rows bigint NOT NULL, run_id text NOT NULL, PRIMARY KEY (source_system, dataset, rule_id))""",
]


@dataclass
class QualityRun:
    run_id: str
    rules_run: int
    rows_checked: int
    audit_items: int
    opened: int
    closed: int
    open_problems: int
    blocked: list[tuple[str, str, str]]
    by_dimension: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def ensure_tables() -> None:
    ensure_schemas(LOAD_SCHEMA)
    apply_ddl("dq", DDL)


# --- audit items ----------------------------------------------------------------------------------------------
def mapping_items(
    library: Library, rows: dict[tuple, int], quarantined: dict[tuple, dict[str, int]]
) -> list[dict[str, Any]]:
    """稽核条目 of the silver mapping rules: a (dataset, institution, source, day) was checked on every row that
    reached silver plus every row quarantined; the failed ones are the rule's quarantined rows."""
    by_source_rule = {(r.definition["source_rule_id"], r.dataset): r for r in library.rules if r.kind == "mapping"}
    items = []
    for key in set(rows) | set(quarantined):
        dataset, org, source, day = key
        by_rule = quarantined.get(key, {})
        checked = rows.get(key, 0) + sum(by_rule.values())
        for (source_rule, rule_dataset), rule in by_source_rule.items():
            if rule_dataset != dataset or source not in rule.source_systems:
                continue
            items.append(_item(rule, org, source, day, checked, by_rule.get(source_rule, 0)))
    return items


def _item(rule: Rule, org: str, source: str, day: date, checked: int, failed: int) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id,
        "dataset": rule.dataset,
        "org_code": org or "",
        "source_system": source,
        "business_date": day,
        "checked_rows": checked,
        "failed_rows": failed,
        "coefficient": rule.coefficient,
        "dimension": rule.dimension,
    }


def volume_items(rule: Rule, rows: dict[tuple, int], history: dict[tuple, dict[date, int]]) -> list[dict[str, Any]]:
    """Each (dataset, institution, source) × day of this run against the median of its own previous days of the
    same kind (working days against working days, weekends against weekends: a village clinic closed on Sunday
    is not a gap): failed when far below. A day inside the run's range with no rows at all counts as 0 rows. A
    series whose usual volume is below ``min_median`` rows is not judged (3 visits against 0 is chance)."""
    if not rows:
        return []
    days = sorted({k[3] for k in rows})
    every_day = [days[0] + timedelta(days=i) for i in range((days[-1] - days[0]).days + 1)]
    window, min_days, share = rule.definition["history_days"], rule.definition["min_days"], rule.definition["min_share"]
    min_median = rule.definition.get("min_median", 0)
    items = []
    series = {k[:3] for k in rows}
    for dataset, org, source in series:
        past = history.get((dataset, org, source), {})
        for day in every_day:
            count = rows.get((dataset, org, source, day), 0)
            before = [
                past[d]
                for d in past
                if day - timedelta(days=window) <= d < day and (d.weekday() >= 5) == (day.weekday() >= 5)
            ]
            if len(before) < min_days or statistics.median(before) < min_median:
                continue
            low = count < share * statistics.median(before)
            items.append(
                {
                    **_item(rule, org, source, day, 1, int(low)),
                    "dataset": dataset,
                    "value": f"{count} / {statistics.median(before):.0f}",
                }
            )
    return items


def timeliness_rows(rule: Rule, table_datasets: dict[tuple[str, str], str]) -> tuple[list, list]:
    """稽核条目 and problems of the 24:00 next-day deadline, from the collection log (ingest.arrival)."""
    with warehouse_engine().connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('ingest.arrival') IS NOT NULL")).scalar()
        if not exists:
            return [], []
        arrivals = conn.execute(
            sa.text(
                "SELECT b.source_system, b.table_name, a.org_code, a.business_date, sum(a.rows), sum(a.late_rows) "
                "FROM ingest.arrival a JOIN ingest.landed_batch b USING (batch_id) GROUP BY 1, 2, 3, 4"
            )
        ).all()
    items: dict[tuple, dict[str, Any]] = {}
    problems = []
    for source, table, org, day, arrived, late in arrivals:
        dataset = table_datasets.get((source, table), table)
        key = (dataset, org, source, day)
        item = items.setdefault(key, {**_item(rule, org, source, day, 0, 0), "dataset": dataset})
        item["checked_rows"] += int(arrived)
        item["failed_rows"] += int(late)
        if late:
            problems.append(
                {
                    "dataset": dataset,
                    "rule_id": rule.rule_id,
                    "source_system": source,
                    "source_table": table,
                    "source_key": f"{table}@{day}",
                    "org_code": org,
                    "business_date": day,
                    "value": f"{late}/{arrived} 行逾期上传",
                }
            )
    return list(items.values()), problems


def _table_datasets() -> dict[tuple[str, str], str]:
    from spark_jobs.model import mapped_sources, source_mapping

    found = {}
    for source in mapped_sources():
        for table in source_mapping(source)["tables"]:
            found.setdefault((source, table["bronze_table"]), table["entity"])
    return found


# --- problems -------------------------------------------------------------------------------------------------
PROBLEM_SQL = [
    # problem id: rule + source row; the staging rows are this run's failures
    f"""CREATE TEMP TABLE seen ON COMMIT DROP AS
        SELECT DISTINCT ON (problem_id) * FROM (
          SELECT md5(f.rule_id || '|' || f.source_system || '|' || coalesce(f.source_table, '') || '|' ||
                     f.source_key) AS problem_id, f.*
          FROM {LOAD_SCHEMA}.failure f) x ORDER BY problem_id""",
    # new, reopened, or resubmitted by the institution and still failing (the row came again with another
    # value: the fix did not make it pass) — before the upsert below overwrites the value
    """CREATE TEMP TABLE changed ON COMMIT DROP AS
        SELECT s.problem_id, CASE WHEN p.problem_id IS NULL THEN 'open' WHEN p.status = 'closed' THEN 'reopened'
                                  ELSE 'still_failing' END AS status
        FROM seen s LEFT JOIN dq.problem p USING (problem_id)
        WHERE p.problem_id IS NULL OR p.status = 'closed' OR p.value IS DISTINCT FROM s.value""",
    """INSERT INTO dq.problem AS p (problem_id, rule_id, dataset, dimension, org_code, source_system, source_table,
            business_key, business_date, value, description_zh, status, first_seen_at, last_seen_at)
        SELECT s.problem_id, s.rule_id, s.dataset, coalesce(r.dimension, 'conformity'), s.org_code,
               s.source_system, s.source_table, s.source_key, s.business_date, s.value,
               coalesce(r.description_zh, s.rule_id), 'open', :now, :now
        FROM seen s LEFT JOIN dq.rule r USING (rule_id)
        ON CONFLICT (problem_id) DO UPDATE SET last_seen_at = :now, value = excluded.value, status = 'open',
            closed_at = NULL, org_code = excluded.org_code, business_date = excluded.business_date,
            times_reopened = p.times_reopened + (p.status = 'closed')::int""",
    "INSERT INTO dq.problem_event SELECT problem_id, :run_id, :now, status FROM changed",
    # checked again and not failing (or its rule retired): closed
    """WITH closing AS (
          UPDATE dq.problem p SET status = 'closed', closed_at = :now
          WHERE p.status = 'open'
            AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.problem_id = p.problem_id)
          RETURNING p.problem_id)
       INSERT INTO dq.problem_event SELECT problem_id, :run_id, :now, 'closed' FROM closing""",
]


def _write_failures(spark: SparkSession, failed: DataFrame) -> None:
    url, props = get_settings().warehouse_jdbc
    (
        failed.write.format("jdbc")
        .mode("overwrite")
        .option("truncate", "true")
        .option("url", url)
        .option("dbtable", f"{LOAD_SCHEMA}.failure")
        .option("batchsize", "10000")
        .options(**props)
        .save()
    )


def _write_extra_failures(rows: list[dict[str, Any]]) -> None:
    if rows:
        with warehouse_engine().begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {LOAD_SCHEMA}.failure (dataset, rule_id, source_system, source_table, source_key, "
                    "org_code, business_date, value) VALUES (:dataset, :rule_id, :source_system, :source_table, "
                    ":source_key, :org_code, :business_date, :value)"
                ),
                rows,
            )


# --- the run --------------------------------------------------------------------------------------------------
def run_quality(spark: SparkSession, progress: Callable[[str], None] = lambda _: None) -> QualityRun:
    """Check every rule, store 稽核条目, problems and scores; returns what happened."""
    started, timings = datetime.now().astimezone(), {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()
        progress(f"{name}: {timings[name]} s")

    ensure_tables()
    library = load_library()
    run_id = f"dq-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    _store_rules(library)
    evaluation = engine.evaluate(spark, library)
    rows: dict[tuple, int] = {}
    items: list[dict[str, Any]] = []
    rules = library.by_id()
    if evaluation.checks is not None:
        evaluation.checks = evaluation.checks.persist()
        for r in engine.audit_counts(evaluation.checks).collect():
            key = (r["dataset"], r["org_code"], r["source_system"], r["business_date"])
            if r["rule_id"] == engine.ROWS_CHECK:
                rows[key] = r["checked_rows"]
            else:
                items.append(
                    _item(
                        rules[r["rule_id"]],
                        r["org_code"],
                        r["source_system"],
                        r["business_date"],
                        r["checked_rows"],
                        r["failed_rows"],
                    )
                )
    lap("rules on silver")
    quarantined: dict[tuple, dict[str, int]] = defaultdict(dict)
    if evaluation.quarantine is not None:
        for r in engine.quarantine_counts(evaluation.quarantine).collect():
            quarantined[(r["dataset"], r["org_code"], r["source_system"], r["business_date"])][r["rule_id"]] = r[
                "failed_rows"
            ]
    items += mapping_items(library, rows, quarantined)
    lap("quarantine (mapping rules)")
    extra_failures: list[dict[str, Any]] = []
    for rule in library.for_dataset("*", "timeliness"):
        timely, late = timeliness_rows(rule, _table_datasets())
        items += timely
        extra_failures += late
    for rule in library.for_dataset("*", "volume"):
        volume = volume_items(rule, rows, _volume_history())
        items += volume
        extra_failures += [
            {
                "dataset": i["dataset"],
                "rule_id": rule.rule_id,
                "source_system": i["source_system"],
                "source_table": None,
                "source_key": f"{i['dataset']}@{i['business_date']}",
                "org_code": i["org_code"],
                "business_date": i["business_date"],
                "value": i["value"],
            }
            for i in volume
            if i["failed_rows"]
        ]
    lap("collection rules (timeliness, volume)")
    failed = engine.failures(evaluation) if evaluation.checks is not None else None
    if failed is not None:
        _write_failures(spark, failed.withColumn("rule_id", _library_rule_id(library)))
    else:
        with warehouse_engine().begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {LOAD_SCHEMA}.failure (dataset text, rule_id text, "
                    "source_system text, source_table text, source_key text, org_code text, "
                    "business_date date, value text)"
                )
            )
            conn.execute(sa.text(f"TRUNCATE {LOAD_SCHEMA}.failure"))
    _write_extra_failures(extra_failures)
    if evaluation.checks is not None:
        evaluation.checks.unpersist()
    lap("failing rows to PostgreSQL")
    orgs = organizations()
    scores = score_rows(items, {code: row["org_type"] for code, row in orgs.items()})
    blocked = _blocked(library, items)
    opened, closed, open_now = _store_results(run_id, library, items, scores, rows, blocked)
    lap("problems and scores")
    by_dimension: dict[str, int] = defaultdict(int)
    for rule in library.rules:
        by_dimension[rule.dimension] += 1
    result = QualityRun(
        run_id,
        len(library.rules),
        sum(rows.values()),
        len(items),
        opened,
        closed,
        open_now,
        blocked,
        dict(by_dimension),
        timings,
    )
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dq.run VALUES (:run_id, :started, now(), :rules, :rows, :items, :opened, :closed, :open, "
                ":blocked, CAST(:timings AS jsonb))"
            ),
            {
                "run_id": run_id,
                "started": started,
                "rules": result.rules_run,
                "rows": result.rows_checked,
                "items": result.audit_items,
                "opened": opened,
                "closed": closed,
                "open": open_now,
                "blocked": "; ".join(f"{s}/{d}" for s, d, _ in blocked),
                "timings": _json(timings),
            },
        )
    return result


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _library_rule_id(library: Library) -> Column:
    """Quarantine rows carry the mapping's own rule id (ENC001): the library's id may add the dataset."""
    renamed = {
        (r.definition["source_rule_id"], r.dataset): r.rule_id
        for r in library.rules
        if r.kind == "mapping" and r.rule_id != r.definition["source_rule_id"]
    }
    column = F.col("rule_id")
    for (source_rule, dataset), rule_id in renamed.items():
        column = F.when((F.col("rule_id") == source_rule) & (F.col("dataset") == dataset), rule_id).otherwise(column)
    return column


def _volume_history() -> dict[tuple, dict[date, int]]:
    history: dict[tuple, dict[date, int]] = defaultdict(dict)
    with warehouse_engine().connect() as conn:
        for dataset, org, source, day, count in conn.execute(
            sa.text("SELECT dataset, org_code, source_system, business_date, rows FROM dq.dataset_volume")
        ):
            history[(dataset, org, source)][day] = count
    return history


def _blocked(library: Library, items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(source, dataset, rule) pairs a blocking rule failed on more than its allowed share of rows."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    rules = library.by_id()
    for item in items:
        rule = rules[item["rule_id"]]
        if rule.blocking:
            acc = totals[(item["source_system"], item["dataset"], rule.rule_id)]
            acc[0] += item["checked_rows"]
            acc[1] += item["failed_rows"]
    return sorted(
        key
        for key, (checked, failed) in totals.items()
        if checked and failed / checked > float(rules[key[2]].definition.get("max_failed_share", 0))
    )


def _store_rules(library: Library) -> None:
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dq.dimension VALUES (:code, :zh, :n) ON CONFLICT (dimension) DO UPDATE SET "
                "dimension_zh = excluded.dimension_zh, sort_order = excluded.sort_order"
            ),
            [{"code": code, "zh": zh, "n": n} for n, (code, zh) in enumerate(dimensions().items())],
        )
        conn.execute(
            sa.text(
                "INSERT INTO dq.rule VALUES (:rule_id, :dataset, :dimension, :severity, :description_zh, :kind, "
                ":origin, CAST(:definition AS jsonb), :coefficient) ON CONFLICT (rule_id) DO UPDATE SET "
                "dataset = excluded.dataset, dimension = excluded.dimension, severity = excluded.severity, "
                "description_zh = excluded.description_zh, kind = excluded.kind, origin = excluded.origin, "
                "definition = excluded.definition, coefficient = excluded.coefficient"
            ),
            [
                {
                    "rule_id": r.rule_id,
                    "dataset": r.dataset,
                    "dimension": r.dimension,
                    "severity": r.severity,
                    "description_zh": r.description_zh,
                    "kind": r.kind,
                    "origin": r.origin,
                    "definition": _json(
                        {**r.definition, "where": r.where, "value": r.value, "source_systems": list(r.source_systems)}
                    ),
                    "coefficient": r.coefficient,
                }
                for r in library.rules
            ],
        )


def _store_results(
    run_id: str,
    library: Library,
    items: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    rows: dict[tuple, int],
    blocked: list[tuple[str, str, str]],
) -> tuple[int, int, int]:
    """Replace audit items, scores, volumes and blocks by this run's; move problems through their lifecycle."""
    now = datetime.now().astimezone()
    item_rows = [{**{k: v for k, v in i.items() if k not in ("dimension", "value")}, "run_id": run_id} for i in items]
    blocked_rows = [
        {
            "source_system": s,
            "dataset": d,
            "rule_id": r,
            "run_id": run_id,
            "checked_rows": sum(
                i["checked_rows"] for i in items if (i["source_system"], i["dataset"], i["rule_id"]) == (s, d, r)
            ),
            "failed_rows": sum(
                i["failed_rows"] for i in items if (i["source_system"], i["dataset"], i["rule_id"]) == (s, d, r)
            ),
        }
        for s, d, r in blocked
    ]
    with warehouse_engine().begin() as conn:
        # every run checks all of silver: an institution-day that has left silver leaves the volumes too
        conn.execute(sa.text("TRUNCATE dq.audit_item, dq.score, dq.blocked_publish, dq.dataset_volume"))
        _insert(conn, "dq.audit_item", item_rows)
        _insert(conn, "dq.score", [{**s, "run_id": run_id} for s in scores])
        _insert(conn, "dq.blocked_publish", blocked_rows)
        if rows:
            conn.execute(
                sa.text(
                    "INSERT INTO dq.dataset_volume VALUES (:dataset, :org, :source, :day, :rows) ON CONFLICT "
                    "(dataset, org_code, source_system, business_date) DO UPDATE SET rows = excluded.rows"
                ),
                [{"dataset": k[0], "org": k[1] or "", "source": k[2], "day": k[3], "rows": v} for k, v in rows.items()],
            )
        params = {"run_id": run_id, "now": now}
        for sql in PROBLEM_SQL:
            conn.execute(sa.text(sql), params)
        counts = dict(
            conn.execute(
                sa.text("SELECT status, count(*) FROM dq.problem_event WHERE run_id = :run_id GROUP BY status"),
                {"run_id": run_id},
            ).all()
        )
        open_now = conn.execute(sa.text("SELECT count(*) FROM dq.problem WHERE status = 'open'")).scalar()
    return counts.get("open", 0) + counts.get("reopened", 0), counts.get("closed", 0), open_now


def _insert(conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        conn.execute(
            sa.text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"), rows
        )


def blocked_sources(dataset: str) -> list[str]:
    """Sources whose rows of ``dataset`` a blocking rule holds back from publishing (their last published rows
    stay in ods)."""
    with warehouse_engine().connect() as conn:
        if not conn.execute(sa.text("SELECT to_regclass('dq.blocked_publish') IS NOT NULL")).scalar():
            return []
        return [
            r[0]
            for r in conn.execute(
                sa.text("SELECT DISTINCT source_system FROM dq.blocked_publish WHERE dataset = :dataset"),
                {"dataset": dataset},
            )
        ]
