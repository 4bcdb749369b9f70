"""Supervision indicators proven against the simulator's true events, not only layer-to-layer counts.

The pipeline fixture runs the default (dirty) county: every true visit must be counted once, or be accounted
for by a reason the pipeline records (quarantine rule, flag) or the source's state (committed after the last
collected day); nothing may be counted that did not happen or counted twice.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from core.db import warehouse_engine
from core.dbt import compile_sql
from core.indicators import load_catalog, render_measures_sql
from evaluation.indicators import account_encounters, compare_with_truth


def _accounted(account, name, results_dir) -> None:
    (results_dir / f"indicator_truth_{name}.json").write_text(
        json.dumps(account.__dict__, ensure_ascii=False, indent=1, default=str)
    )
    assert not account.over_counted, f"counted but not a true visit: {account.over_counted}: {account.examples[:5]}"
    assert "unexplained" not in account.missing, f"true visits lost without a reason: {account.examples[:5]}"
    assert account.matched + sum(account.missing.values()) == account.true_visits


def test_every_true_outpatient_visit_is_counted_once_or_accounted_for(pipeline_done, results_dir):
    account = account_encounters(pipeline_done.last_day)
    _accounted(account, "outpatient", results_dir)
    assert account.matched >= 0.97 * account.true_visits, account.missing


def test_every_true_admission_is_counted_once_or_accounted_for(pipeline_done, results_dir):
    account = account_encounters(pipeline_done.last_day, kinds=("inpatient",))
    _accounted(account, "inpatient", results_dir)


def test_indicators_never_exceed_the_truth_and_differ_only_by_accounted_rows(pipeline_done, results_dir):
    """Per institution and county and every period: each proven indicator's numerator and denominator in the mart
    against the true events' (evaluation.indicators.TRUTH_MEASURES)."""
    comparison = compare_with_truth(pipeline_done.last_day)
    (results_dir / "indicator_truth_values.json").write_text(
        json.dumps(comparison.__dict__, ensure_ascii=False, indent=1, default=str)
    )
    assert len(comparison.indicators) >= 21, f"only {sorted(comparison.indicators)} are proven against the truth"
    assert not comparison.over, f"mart above the truth (double counting?): {comparison.over[:10]}"
    oe_visits = comparison.indicators["HO01"]
    outpatient_missing = sum(account_encounters(pipeline_done.last_day).missing.values())
    assert oe_visits["county_numerator_truth"] - oe_visits["county_numerator_mart"] == outpatient_missing, (
        "门急诊人次 shortfall is not the accounted missing visits"
    )


def test_every_institution_and_day_has_a_row_even_without_visits(pipeline_done):
    with warehouse_engine().connect() as conn:
        institutions = conn.execute(
            sa.text("SELECT count(*) FROM marts.dim_organization WHERE org_type <> '卫生健康行政部门'")
        ).scalar()
        per_day = conn.execute(
            sa.text(
                "SELECT visit_date, count(*), count(*) FILTER (WHERE total_visits = 0) "
                "FROM marts.fct_daily_outpatient_visits GROUP BY visit_date"
            )
        ).all()
        monthly = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE numerator = 0) FROM marts.fct_indicator_value "
                "WHERE indicator_code = 'HO01' AND period_type = 'month' AND grain_type = 'institution'"
            )
        ).one()
    assert len(per_day) == len(pipeline_done.days)
    for day, rows, silent in per_day:
        assert rows == institutions, day
        assert silent > 0, "a small county has village clinics without visits on a day: they must show 0"
    assert monthly[0] == institutions and monthly[1] > 0


def test_every_catalog_indicator_has_values_and_rates_follow_their_formula(pipeline_done):
    catalog = load_catalog()
    scalar = {c for c, i in catalog.indicators.items() if i.supported and i.kind == "scalar"}
    with warehouse_engine().connect() as conn:
        present = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT indicator_code FROM marts.fct_indicator_value"))}
        wrong = conn.execute(
            sa.text(
                "SELECT v.indicator_code, v.grain_code, v.numerator, v.denominator, v.value "
                "FROM marts.fct_indicator_value v JOIN reference.indicator_catalog c USING (indicator_code) "
                "WHERE c.denominator_measure IS NOT NULL AND ("
                "(v.denominator = 0 AND v.value IS NOT NULL) OR "
                "(v.denominator > 0 AND abs(v.value - round(v.numerator * c.scale / v.denominator, 4)) > 0.0001))"
            )
        ).all()
        county_rate = conn.execute(
            sa.text(
                "SELECT value FROM marts.fct_indicator_value WHERE indicator_code = 'MC02' AND period_type = 'year' "
                "AND grain_type = 'county'"
            )
        ).scalar()
    assert scalar == present
    assert not wrong, wrong[:5]
    assert county_rate is not None and 30 < float(county_rate) < 80, "基层诊疗量占比 outside any plausible range"


def test_counts_and_sums_rolled_up_from_days_equal_them_computed_from_the_rows(pipeline_done):
    """int_indicator_measures sums counts and sums from one value per day and place; the same measures computed
    from every row of their marts (the definition) must give the same rows, grain by grain."""
    direct = render_measures_sql(load_catalog(), roll_up=False).replace("{{ config(materialized='table') }}", "")
    compiled = compile_sql(direct)
    columns = "measure_code, period_type, period_start, grain_type, grain_code, value"
    with warehouse_engine().connect() as conn:
        conn.execute(sa.text(f"CREATE TEMP TABLE measures_direct AS SELECT {columns} FROM ({compiled}) AS d"))
        built = f"SELECT {columns} FROM intermediate.int_indicator_measures"
        only_built = conn.execute(sa.text(f"{built} EXCEPT ALL SELECT * FROM measures_direct LIMIT 5")).all()
        only_direct = conn.execute(sa.text(f"SELECT * FROM measures_direct EXCEPT ALL {built} LIMIT 5")).all()
        rows = conn.execute(sa.text("SELECT count(*) FROM measures_direct")).scalar()
    assert rows > 1000
    assert not only_built and not only_direct, f"rolled up only: {only_built}; from the rows only: {only_direct}"
