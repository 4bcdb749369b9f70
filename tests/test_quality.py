"""Data-quality management on the shared pipeline run: rules find the injected defects, scores trace to their
稽核条目, GX agrees with the compiled rules, and reports reach every institution."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

import pytest
import sqlalchemy as sa
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cli.main import main as drc_main
from core.db import warehouse_engine
from evaluation.quality import DETECTING_RULES, detection_report
from expectations.engine import load_datasets, register_views
from expectations.gx_check import data_docs_index, run_gx
from expectations.rules import dimensions, load_library
from expectations.scoring import score_rows
from spark_jobs.standardize import silver_path

MIN_RECALL = 0.95


def _rows(sql: str, **params) -> list[sa.Row]:
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_library_covers_every_dimension_and_descriptions_belong_to_rules():
    library = load_library()
    assert {r.dimension for r in library.rules} == set(dimensions())
    not_null = [
        r
        for r in library.rules
        if r.kind == "expect" and r.definition["expect"]["type"] == "expect_column_values_to_not_be_null"
    ]
    assert len(not_null) >= 3
    assert len({r.description_zh for r in not_null}) == len(not_null)  # not one text per expectation type


def test_every_rule_is_stored_with_its_own_description(pipeline_done):
    stored = dict(_rows("SELECT rule_id, description_zh FROM dq.rule"))
    for rule in load_library().rules:
        assert stored[rule.rule_id] == rule.description_zh


def test_injected_defects_are_found_and_nothing_else(pipeline_done, results_dir):
    """Per defect type the simulator logged: ≥ 95 % of the defective records are open problems of a rule meant
    to catch them; and no problem is raised on a record the simulator left clean."""
    report = detection_report(MIN_RECALL)
    (results_dir / "quality_detection.json").write_text(json.dumps(report, ensure_ascii=False, indent=2))
    assert report["recall"], "the answer key logged no detectable defect: the simulator's dirt is off?"
    low = report["below_min_recall"]
    assert not low, f"defect types found below {MIN_RECALL:.0%}: {low} (details {results_dir}/quality_detection.json)"
    # no false alarm: every open problem is a record the simulator dirtied
    assert not report["unexplained_problems"], (
        f"problems on records without a logged defect: {report['unexplained_by_rule']}"
    )


def test_scores_are_recomputed_from_audit_items(pipeline_done):
    """Every stored score equals the scheme applied to its 稽核条目: a score is traceable to what lowered it."""
    items = [
        dict(r._mapping)
        for r in _rows(
            "SELECT a.org_code, a.dataset, r.dimension, a.business_date, a.checked_rows, a.failed_rows, a.coefficient "
            "FROM dq.audit_item a JOIN dq.rule r USING (rule_id)"
        )
    ]
    org_types = dict(_rows("SELECT org_code, org_type FROM marts.dim_organization"))
    expected = {
        (s["org_code"], s["dataset"], s["dimension"], s["period_type"], s["period_start"]): s["score"]
        for s in score_rows(items, org_types)
    }
    stored = {
        (o, d, m, p, s): float(v)
        for o, d, m, p, s, v in _rows(
            "SELECT org_code, dataset, dimension, period_type, period_start, score FROM dq.score"
        )
    }
    assert stored.keys() == expected.keys()
    assert all(abs(stored[k] - expected[k]) < 0.01 for k in stored)
    lowered = _rows(
        "SELECT org_code, period_start FROM dq.score WHERE dimension = '*' AND dataset = '*' "
        "AND period_type = 'day' AND score < 100"
    )
    for org, day in lowered:  # a score below 100 has failed rows in its audit items
        assert _rows(
            "SELECT 1 FROM dq.audit_item WHERE org_code = :org AND business_date = :day AND failed_rows > 0",
            org=org,
            day=day,
        )


def test_great_expectations_agrees_with_the_compiled_rules(pipeline_done, spark):
    """GX itself, run on the same silver tables, counts the same failing rows as the one-pass SQL of each
    expectation rule (and writes Data Docs for engineers)."""
    library = load_library()
    outcomes = run_gx(spark, library, load_datasets(spark))
    assert outcomes
    ours = {
        (rule, dataset): failed
        for rule, dataset, failed in _rows("SELECT rule_id, dataset, sum(failed_rows) FROM dq.audit_item GROUP BY 1, 2")
    }
    for outcome in outcomes:
        assert ours.get((outcome.rule_id, outcome.dataset), 0) == outcome.unexpected_count, outcome
    assert data_docs_index().exists()


def test_the_death_the_rules_check_against_is_the_death_the_resident_mart_shows(pipeline_done, spark):
    """ENC-L04/FUP-L01/PHS-L02 read the quality view resident_death; analysts read dim_resident.death_date. Both
    must name the same residents and days, or a problem would contradict the dashboard beside it."""
    load_datasets(spark)
    register_views(spark, load_library())
    checked = {(r.master_id, r.death_date) for r in spark.table("resident_death").collect()}
    shown = set(_rows("SELECT master_id, death_date FROM marts.dim_resident WHERE death_date IS NOT NULL"))
    if not checked and not shown:
        pytest.skip("no death in hospital in this county (≈3 % of stays of residents over 75): nothing to compare")
    assert checked == {tuple(row) for row in shown}


def test_marts_serve_scores_problems_and_audit_items(pipeline_done):
    problems = _rows(
        "SELECT count(*), count(*) FILTER (WHERE org_name IS NULL AND org_code <> '') FROM marts.fct_dq_problem"
    )[0]
    assert problems[0] > 0 and problems[1] == 0
    totals = _rows(
        "SELECT org_code, score, rank_in_type FROM marts.fct_dq_score WHERE dataset = '*' "
        "AND dimension = '*' AND period_type = 'month'"
    )
    assert totals and all(0 <= float(score) <= 100 and rank >= 1 for _, score, rank in totals)


@pytest.mark.runs_last(order=1)  # changes silver and republishes ods: after the tests that read them
def test_a_blocking_rule_holds_back_only_its_source_and_dataset(pipeline_done, spark):
    """While a blocking rule fails for 人民医院's encounters, publishing keeps their last published rows and
    publishes everything else; once it passes, they are published again. Silver changes for every source (a
    doctor's name corrected everywhere) and is restored afterwards."""
    marker = "【本次更正】"
    encounters = DeltaTable.forPath(spark, silver_path("encounter"))
    persons = DeltaTable.forPath(spark, silver_path("person"))
    before = {table: table.history(1).first()["version"] for table in (encounters, persons)}
    silver = {r.source_system: r["count"] for r in encounters.toDF().groupBy("source_system").count().collect()}
    encounters.update(set={"doctor_name": F.lit(marker)})
    persons.update(F.col("source_system") == "rmyy_his", {"name": F.lit(marker)})
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text("INSERT INTO dq.blocked_publish VALUES ('rmyy_his', 'encounter', 'ENC-B01', 1, 1, 'pytest')")
        )
    try:
        assert drc_main(["publish"]) == 0
        published = {
            s: (n, changed)
            for s, n, changed in _rows(
                "SELECT source_system, count(*), count(*) FILTER (WHERE doctor_name = :m) FROM ods.encounter "
                "GROUP BY 1",
                m=marker,
            )
        }
        assert published["rmyy_his"][0] > 0 and published["rmyy_his"][1] == 0  # held back as last published
        assert all(published[s] == (n, n) for s, n in silver.items() if s != "rmyy_his")
        assert _rows("SELECT 1 FROM ods.person WHERE name = :m", m=marker)  # other datasets publish
        with warehouse_engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM dq.blocked_publish WHERE run_id = 'pytest'"))
        assert drc_main(["publish"]) == 0
        released = "SELECT count(*) FILTER (WHERE doctor_name = :m) FROM ods.encounter WHERE source_system = :s"
        assert _rows(released, m=marker, s="rmyy_his")[0][0] == silver["rmyy_his"]
    finally:
        with warehouse_engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM dq.blocked_publish WHERE run_id = 'pytest'"))
        for table, version in before.items():
            table.restoreToVersion(version)
    assert drc_main(["publish"]) == 0  # the restore is a change too: ods is as before
    assert not _rows("SELECT 1 FROM ods.encounter WHERE doctor_name = :m", m=marker)
    assert not _rows("SELECT 1 FROM ods.person WHERE name = :m", m=marker)


@pytest.mark.runs_last(order=3)  # changes the sources: after every test, including those adding days
def test_problems_fixed_at_the_source_close_and_the_score_rises(pipeline_done):
    """The 整改 loop: institutions fix half of their reported problems in their own systems; the next collection
    brings the corrected rows, the next quality run closes exactly those problems and their scores rise."""
    from simulator.config import load_simulator_config
    from simulator.county import County
    from simulator.source_fixes import ProblemRef, fix_reported_problems

    config = load_simulator_config()
    day_after = County(config).last_day() + timedelta(days=1)
    assert drc_main(["quality"]) == 0  # the baseline: the lake as the tests before this one left it

    open_problems = _rows(
        "SELECT problem_id, rule_id, source_system, source_table, business_key, org_code "
        "FROM dq.problem WHERE status = 'open' AND source_system = 'cloud_his' "
        "AND source_table IS NOT NULL"
    )
    reported = sorted({ProblemRef(s, t, k) for _, _, s, t, k, _ in open_problems})
    report = fix_reported_problems(
        config, reported, share=0.5, seed=20261204, fixed_at=datetime.combine(day_after, time(10, 0))
    )
    assert report.fixed, f"nothing fixable among {len(reported)} reported problems: {report.not_fixable[:3]}"
    fixed = {(f.problem, f.defect) for f in report.fixed}
    # the problems the fixed defects caused (a record may have other, unfixed ones)
    fixed_problems = {
        (pid, org)
        for pid, rule, s, t, k, org in open_problems
        if any(p == ProblemRef(s, t, k) and rule.startswith(DETECTING_RULES[d]) for p, d in fixed)
    }
    assert fixed_problems
    fixed_ids = [pid for pid, _ in fixed_problems]
    orgs = {org for _, org in fixed_problems}
    score = (
        "SELECT org_code, avg(score) FROM dq.score WHERE dataset = '*' AND dimension = '*' "
        "AND period_type = 'month' AND org_code = ANY(:orgs) GROUP BY 1"
    )
    before = dict(_rows(score, orgs=list(orgs)))
    sources = sorted({p.source_system for p, _ in fixed})
    for step in (
        ["ingest", *[a for s in sources for a in ("--source", s)]],
        ["silver", *[a for s in sources for a in ("--source", s)]],
        ["empi"],
        ["quality"],
    ):
        assert drc_main(step) == 0, step
    status = dict(_rows("SELECT problem_id, status FROM dq.problem WHERE problem_id = ANY(:ids)", ids=fixed_ids))
    assert set(status.values()) == {"closed"}, f"{sum(v == 'open' for v in status.values())} fixed problems still open"
    after = dict(_rows(score, orgs=list(orgs)))
    not_risen = {org: (before[org], after[org]) for org in orgs if after[org] <= before[org]}
    assert not not_risen, f"scores (before, after) that did not rise: {not_risen}"
    unfixed_open = _rows(
        "SELECT count(*) FROM dq.problem WHERE status = 'open' AND NOT (problem_id = ANY(:ids))", ids=fixed_ids
    )[0][0]
    assert unfixed_open > 0  # the other half stays open until it is fixed


def test_quality_reports_reach_every_institution(pipeline_done, tmp_path):
    """`./drc quality report`: every institution checked in the month gets its workbook and HTML report."""
    month = pipeline_done.first_day.replace(day=1)
    assert (
        drc_main(["quality", "report", "--period", "month", "--date", month.isoformat(), "--out", str(tmp_path)]) == 0
    )
    checked = {
        o
        for (o,) in _rows(
            "SELECT DISTINCT org_code FROM dq.audit_item WHERE org_code <> '' "
            "AND date_trunc('month', business_date) = :m",
            m=month,
        )
    }
    workbooks = {p.name.split("_")[0] for p in tmp_path.rglob("*.xlsx")}
    pages = {p.name.split("_")[0] for p in tmp_path.rglob("*.html") if p.name != "index.html"}
    assert checked and workbooks == pages == checked
    assert (next(tmp_path.rglob("index.html"))).read_text(encoding="utf-8").count("<a ") >= len(checked)
