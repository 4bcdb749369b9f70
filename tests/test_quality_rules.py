"""Quality rules and scores on small hand-made inputs: compiled rules mean what they say, a silent day is
caught, schemes weigh dimensions as configured."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from expectations.engine import audit_counts, dataset_checks, register_views
from expectations.rules import Library, Rule, RuleError, expectation_sql, load_library, merge_mapping_rules
from expectations.scoring import ALL, load_schemes, score_rows
from expectations.store import volume_items

D = date(2026, 11, 3)


def _rule(rule_id: str, kind: str, **definition) -> Rule:
    return Rule(rule_id, "person", "conformity", "error", rule_id, kind, "library", definition)


def test_expectations_compile_to_the_conditions_gx_means(spark):
    df = spark.createDataFrame(
        [("1", "110101199003070012", "a"), ("2", "1101011990030700", None), ("3", None, "b")],
        "k string, id_number string, phone string",
    )
    df.createOrReplaceTempView("compiled")
    length = expectation_sql({"type": "expect_column_value_lengths_to_equal", "column": "id_number", "value": 18})
    present = expectation_sql({"type": "expect_column_values_to_not_be_null", "column": "phone"})
    failed = {r.k for r in spark.sql(f"SELECT k FROM compiled WHERE NOT ({length})").collect()}
    missing = {r.k for r in spark.sql(f"SELECT k FROM compiled WHERE NOT ({present})").collect()}
    assert failed == {"2"}  # a null is not the rule's business (GX ignores nulls too)
    assert missing == {"2"}
    with pytest.raises(RuleError):
        expectation_sql({"type": "expect_table_row_count_to_equal", "value": 3})


def test_one_pass_counts_checked_and_failed_rows_per_institution_and_day(spark):
    rows = [
        ("s", "t", "1", "410182001", None, [], "110101199003070012"),
        ("s", "t", "2", "410182001", None, ["UNMAPPED:sex_code:9"], None),
        ("s", "t", "3", "410182101", None, [], None),
    ]
    df = spark.createDataFrame(
        rows,
        "source_system string, source_table string, source_key string, org_code string, "
        "source_updated_at timestamp, dq_flags array<string>, id_number string",
    )
    library = Library(
        (
            _rule("ID", "expect", expect={"type": "expect_column_values_to_not_be_null", "column": "id_number"}),
            _rule("SEX", "flag", flag_prefix="UNMAPPED:sex_code:"),
        ),
        {"person": "date'2026-11-03'"},
    )
    counts = {
        (r.rule_id, r.org_code): (r.checked_rows, r.failed_rows)
        for r in audit_counts(dataset_checks(spark, "person", df, library, {})).collect()
    }
    assert counts[("ID", "410182001")] == (2, 1)
    assert counts[("ID", "410182101")] == (1, 1)
    assert counts[("SEX", "410182001")] == (2, 1)
    assert counts[("__rows__", "410182001")] == (2, 0)


def test_a_visit_or_follow_up_after_the_residents_death_in_hospital_fails_the_day_of_death_does_not(spark):
    """The death is known from one source (a 住院 stay ending 死亡), the visit or follow-up from another: the
    master id joins them."""
    library = load_library()
    rules = Library(
        tuple(r for r in library.rules if r.rule_id in ("ENC-L04", "FUP-L01", "PHS-L02")),
        library.business_dates,
        library.views,
    )
    row = (
        "source_system string, source_table string, source_key string, org_code string, "
        "source_updated_at timestamp, local_patient_id string"
    )
    frames = {
        "person": spark.createDataFrame(
            [("his", "P1", "M1"), ("gw", "A1", "M1"), ("his", "P2", "M2"), ("gw", "A2", "M2")],
            "source_system string, local_patient_id string, master_id string",
        ),
        "encounter": spark.createDataFrame(
            [
                ("his", "zy", "E1", "410182001", None, "P1", D, datetime(2026, 11, 8, 10), "4"),  # M1 dies on the 8th
                ("his", "mz", "E2", "410182001", None, "P1", D + timedelta(days=6), None, None),  # a visit after
                ("his", "mz", "E3", "410182001", None, "P1", D + timedelta(days=5), None, None),  # that same day
                ("his", "zy", "E4", "410182001", None, "P2", D, datetime(2026, 11, 6, 9), "2"),  # M2 goes home
                ("his", "mz", "E5", "410182001", None, "P2", D + timedelta(days=9), None, None),
            ],
            f"{row}, visit_date date, discharged_at timestamp, discharge_outcome_code string",
        ),
        "chronic_followup": spark.createDataFrame(
            [
                ("gw", "gxy_sf", "F1", "410182101", None, None, "A1", D + timedelta(days=6)),  # 虚假随访
                ("gw", "gxy_sf", "F2", "410182101", None, None, "A1", D + timedelta(days=2)),
                ("gw", "gxy_sf", "F3", "410182101", None, None, "A2", D + timedelta(days=20)),
            ],
            f"{row}, health_record_no string, followup_date date",
        ),
        "public_health_service": spark.createDataFrame(
            [
                ("gw", "lnr_tj", "S1", "410182101", None, "A1", D + timedelta(days=30)),
                ("gw", "lnr_tj", "S2", "410182101", None, "A2", D + timedelta(days=30)),
            ],
            f"{row}, service_date date",
        ),
    }
    for name, df in frames.items():
        df.createOrReplaceTempView(name)
    register_views(spark, rules)
    failed = {
        r.source_key
        for name in ("encounter", "chronic_followup", "public_health_service")
        for r in dataset_checks(spark, name, frames[name], rules, frames).where("failed").collect()
    }
    assert failed == {"E2", "F1", "S1"}


def test_rules_reading_a_view_whose_entity_has_no_data_yet_are_skipped_not_failed(spark):
    rule = Rule(
        "X-L01",
        "person",
        "logic",
        "error",
        "X",
        "query",
        "library",
        {"query": "SELECT source_system, source_key FROM person JOIN nothing_yet_view USING (master_id)"},
    )
    library = Library(
        (rule, _rule("ID", "condition", condition="true")),
        {},
        {"nothing_yet_view": "SELECT master_id FROM entity_without_data_yet"},
    )
    assert [r.rule_id for r in register_views(spark, library).rules] == ["ID"]


def test_a_silent_day_is_a_volume_problem():
    rule = _rule("VOL", "volume", history_days=28, min_days=7, min_share=0.3)
    history = {("encounter", "410182001", "s"): {D - timedelta(days=i): 100 for i in range(1, 15)}}
    rows = {("encounter", "410182001", "s", D): 20, ("encounter", "410182001", "s", D + timedelta(days=2)): 95}
    items = {i["business_date"]: i["failed_rows"] for i in volume_items(rule, rows, history)}
    assert items[D] == 1  # 20 < 30 % of the usual 100
    assert items[D + timedelta(days=1)] == 1  # no rows at all that day
    assert items[D + timedelta(days=2)] == 0


def test_a_quiet_weekend_or_a_tiny_clinic_is_not_a_volume_problem():
    rule = _rule("VOL", "volume", history_days=28, min_days=7, min_share=0.3, min_median=20)
    saturday = date(2026, 11, 28)
    busy_weekdays = {
        saturday - timedelta(days=i): (100 if (saturday - timedelta(days=i)).weekday() < 5 else 25)
        for i in range(1, 29)
    }
    history = {
        ("encounter", "410182001", "s"): busy_weekdays,
        ("encounter", "410182301", "s"): {saturday - timedelta(days=i): 3 for i in range(1, 29)},
    }
    rows = {("encounter", "410182001", "s", saturday): 24, ("encounter", "410182301", "s", saturday): 0}
    items = {(i["org_code"], i["business_date"]): i["failed_rows"] for i in volume_items(rule, rows, history)}
    assert items == {("410182001", saturday): 0}  # 24 against the usual weekend's 25; the clinic unjudged


def test_schemes_weigh_dimensions_as_configured():
    schemes, _ = load_schemes()
    items = [
        {
            "org_code": "410182001",
            "dataset": "encounter",
            "dimension": "conformity",
            "business_date": D,
            "checked_rows": 100,
            "failed_rows": 10,
            "coefficient": 1,
        },
        {
            "org_code": "410182001",
            "dataset": "encounter",
            "dimension": "timeliness",
            "business_date": D,
            "checked_rows": 100,
            "failed_rows": 0,
            "coefficient": 1,
        },
    ]
    hospital = {
        (s["dimension"], s["dataset"], s["period_type"]): s["score"]
        for s in score_rows(items, {"410182001": "综合医院"})
    }
    w = schemes["hospital"].weights
    assert hospital[("conformity", "encounter", "day")] == 90.0
    assert hospital[(ALL, ALL, "month")] == round(
        (90 * w["conformity"] + 100 * w["timeliness"]) / (w["conformity"] + w["timeliness"]), 2
    )
    village = {
        (s["dimension"], s["period_type"]): s["score"]
        for s in score_rows([{**i, "org_code": "410182101"} for i in items], {"410182101": "村卫生室"})
        if s["dataset"] == ALL
    }
    assert village[(ALL, "day")] == 95.0  # arithmetic mean


def test_rule_library_ids_are_unique_and_blocking_rules_say_how_much_they_tolerate():
    library = load_library()
    ids = [r.rule_id for r in library.rules]
    assert len(ids) == len(set(ids))
    assert all("max_failed_share" in r.definition for r in library.rules if r.blocking)


def test_the_library_loads_with_one_mapping_rule_per_id_and_dataset():
    mapping = [(r.definition["source_rule_id"], r.dataset) for r in load_library().rules if r.kind == "mapping"]
    assert mapping and len(mapping) == len(set(mapping))


AMOUNT = {"id": "FEE001", "expression": "amount IS NULL OR amount >= 0", "reason": "费用金额为负"}


def test_a_mapping_rule_two_sources_declare_alike_is_one_rule_of_both():
    merged = merge_mapping_rules(
        [
            ("a_his", "charge", "fee", AMOUNT),
            ("b_his", "fee_detail", "fee", dict(AMOUNT)),
            ("a_his", "visit", "encounter", {"id": "FEE001", "required": ["x"], "reason": "x"}),
        ]
    )
    assert merged[("FEE001", "fee")] == (
        {"expression": "amount IS NULL OR amount >= 0", "reason": "费用金额为负"},
        ("a_his", "b_his"),
    )
    assert merged[("FEE001", "encounter")][1] == ("a_his",)  # the same id on another entity is another rule


def test_a_mapping_rule_id_with_two_definitions_on_one_entity_is_refused():
    linked = {"id": "FEE001", "required": ["encounter_id"], "reason": "费用未关联门诊或住院记录"}
    reworded = {**AMOUNT, "reason": "收费金额为负"}  # another wording is another description too
    with pytest.raises(RuleError) as refused:
        merge_mapping_rules(
            [("a_his", "charge", "fee", AMOUNT), ("b_api", "charges", "fee", linked), ("c_his", "fee", "fee", reworded)]
        )
    message = str(refused.value)
    assert all(
        part in message
        for part in (
            "FEE001 on fee",
            "a_his.charge",
            "b_api.charges",
            "c_his.fee",
            "费用未关联门诊或住院记录",
            "config/mappings/",
        )
    )
