"""Data-quality management on the shared pipeline run: rules find the injected defects, scores trace to their
稽核条目, GX agrees with the compiled rules, and reports reach every institution."""

from __future__ import annotations

import json
from collections import defaultdict

import sqlalchemy as sa

from core.db import warehouse_engine
from evaluation.quality import NOT_ROW_DETECTABLE, detection
from expectations.engine import load_datasets
from expectations.gx_check import data_docs_index, run_gx
from expectations.rules import dimensions, load_library
from expectations.scoring import score_rows

MIN_RECALL = 0.95


def _rows(sql: str, **params) -> list[sa.Row]:
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_library_covers_every_dimension_and_descriptions_belong_to_rules():
    library = load_library()
    assert {r.dimension for r in library.rules} == set(dimensions())
    not_null = [r for r in library.rules if r.kind == "expect"
                and r.definition["expect"]["type"] == "expect_column_values_to_not_be_null"]
    assert len(not_null) >= 3
    assert len({r.description_zh for r in not_null}) == len(not_null)   # not one text per expectation type


def test_every_rule_is_stored_with_its_own_description(pipeline_done):
    stored = dict(_rows("SELECT rule_id, description_zh FROM dq.rule"))
    for rule in load_library().rules:
        assert stored[rule.rule_id] == rule.description_zh


def test_injected_defects_are_found_and_nothing_else(pipeline_done, results_dir):
    """Per defect type the simulator logged: ≥ 95 % of the defective records are open problems of a rule meant
    to catch them; and no problem is raised on a record the simulator left clean."""
    found, unexplained = detection()
    report = {"recall": {d.defect: {"logged": d.logged, "found": d.found, "recall": round(d.recall, 4)}
                         for d in found},
              "not_row_detectable": NOT_ROW_DETECTABLE,
              "unexplained_problems": len(unexplained),
              "unexplained_by_rule": _count(unexplained)}
    (results_dir / "quality_detection.json").write_text(json.dumps(report, ensure_ascii=False, indent=2))
    assert found, "the answer key logged no detectable defect: the simulator's dirt is off?"
    low = {d.defect: f"{d.found}/{d.logged}" for d in found if d.recall < MIN_RECALL}
    assert not low, f"defect types found below {MIN_RECALL:.0%}: {low} (details {results_dir}/quality_detection.json)"
    # no false alarm: every open problem is a record the simulator dirtied
    assert not unexplained, f"problems on records without a logged defect: {report['unexplained_by_rule']}"


def _count(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[f"{row['rule_id']} {row['source_system']}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def test_scores_are_recomputed_from_audit_items(pipeline_done):
    """Every stored score equals the scheme applied to its 稽核条目: a score is traceable to what lowered it."""
    items = [dict(r._mapping) for r in _rows(
        "SELECT a.org_code, a.dataset, r.dimension, a.business_date, a.checked_rows, a.failed_rows, a.coefficient "
        "FROM dq.audit_item a JOIN dq.rule r USING (rule_id)")]
    org_types = dict(_rows("SELECT org_code, org_type FROM marts.dim_organization"))
    expected = {(s["org_code"], s["dataset"], s["dimension"], s["period_type"], s["period_start"]): s["score"]
                for s in score_rows(items, org_types)}
    stored = {(o, d, m, p, s): float(v) for o, d, m, p, s, v in _rows(
        "SELECT org_code, dataset, dimension, period_type, period_start, score FROM dq.score")}
    assert stored.keys() == expected.keys()
    assert all(abs(stored[k] - expected[k]) < 0.01 for k in stored)
    lowered = _rows("SELECT org_code, period_start FROM dq.score WHERE dimension = '*' AND dataset = '*' "
                    "AND period_type = 'day' AND score < 100")
    for org, day in lowered:   # a score below 100 has failed rows in its audit items
        assert _rows("SELECT 1 FROM dq.audit_item WHERE org_code = :org AND business_date = :day "
                     "AND failed_rows > 0", org=org, day=day)


def test_great_expectations_agrees_with_the_compiled_rules(pipeline_done, spark):
    """GX itself, run on the same silver tables, counts the same failing rows as the one-pass SQL of each
    expectation rule (and writes Data Docs for engineers)."""
    library = load_library()
    outcomes = run_gx(spark, library, load_datasets(spark))
    assert outcomes
    ours = {(rule, dataset): failed for rule, dataset, failed in _rows(
        "SELECT rule_id, dataset, sum(failed_rows) FROM dq.audit_item GROUP BY 1, 2")}
    for outcome in outcomes:
        assert ours.get((outcome.rule_id, outcome.dataset), 0) == outcome.unexpected_count, outcome
    assert data_docs_index().exists()


def test_marts_serve_scores_problems_and_audit_items(pipeline_done):
    problems = _rows("SELECT count(*), count(*) FILTER (WHERE org_name IS NULL AND org_code <> '') "
                     "FROM marts.fct_dq_problem")[0]
    assert problems[0] > 0 and problems[1] == 0
    totals = _rows("SELECT org_code, score, rank_in_type FROM marts.fct_dq_score WHERE dataset = '*' "
                   "AND dimension = '*' AND period_type = 'month'")
    assert totals and all(0 <= float(score) <= 100 and rank >= 1 for _, score, rank in totals)
