"""The EMPI's decision stage on hand-made scored pairs: records of one person never compete with each other,
two different residents do."""

from __future__ import annotations

import pytest

from spark_jobs.empi.decide import candidate_edges, decide_people, unidentified_people

LINK, REVIEW, MARGIN = 24.0, 12.0, 4.0
# group of each candidate record: residents (M…), a fresh ID-number group, records without an ID (R|…)
GROUPS = [
    ("a1", "M_A"),
    ("a2", "M_A"),
    ("b1", "M_B"),
    ("id1", "ID|410182196702030044"),
    ("x", "R|x"),
    ("y", "R|y"),
    ("z", "R|z"),
    ("w", "R|w"),
]


def _decide(spark, pairs: list[tuple[str, str, float]], forbidden: list[tuple[str, str]] = ()) -> dict:
    scored = spark.createDataFrame(
        [(a, b, s, f"name={a}-{b}") for a, b, s in pairs], "id_l string, id_r string, score double, evidence string"
    )
    groups = spark.createDataFrame(GROUPS, "id_r string, group string")
    forbids = spark.createDataFrame(
        [(r, m, True) for r, m in forbidden], "id_l string, group string, _forbidden boolean"
    )
    edges = candidate_edges(scored, groups, forbids, REVIEW)
    records = spark.createDataFrame([(r,) for r in ("x", "y", "z", "w")], "record_id string")
    people = unidentified_people(spark, edges, records, LINK)
    return {r.record_id: r for r in decide_people(edges, people, LINK, MARGIN).collect()}


def _both_ways(a: str, b: str, s: float) -> list[tuple[str, str, float]]:
    return [(a, b, s), (b, a, s)]


def test_two_records_of_one_person_do_not_compete_for_the_resident(spark):
    got = _decide(spark, [("x", "a1", 40.0), ("y", "a2", 38.0), *_both_ways("x", "y", 45.0)])
    assert got["x"].decision == got["y"].decision == "link"
    assert got["x"].root == got["y"].root == "M_A"
    assert got["y"].second is None  # x is not a second resident


def test_a_record_joins_through_its_twin_record_that_agrees_better(spark):
    """z agrees with the resident only weakly (changed phone), but strongly with x, who agrees with her."""
    got = _decide(spark, [("x", "a1", 40.0), ("z", "a1", 14.0), *_both_ways("x", "z", 30.0)])
    assert got["z"].decision == "link" and got["z"].root == "M_A"


def test_two_different_residents_close_together_go_to_review(spark):
    got = _decide(spark, [("x", "a1", 30.0), ("x", "b1", 28.0)])
    assert got["x"].decision == "review"
    assert got["x"].candidate == "M_A" and got["x"].candidate_record == "a1" and got["x"].second == 28.0
    assert got["x"].root == "R|x"  # keeps its own identity until someone decides


def test_an_id_group_is_a_resident_and_weak_pairs_review_or_stay_new(spark):
    got = _decide(spark, [("x", "id1", 30.0), ("y", "a1", 15.0), *_both_ways("z", "w", 16.0)])
    assert (got["x"].decision, got["x"].root) == ("link", "ID|410182196702030044")
    assert (got["y"].decision, got["y"].candidate) == ("review", "M_A")
    # two records without an ID, weakly alike, nobody else: each may be the other (review), neither merged
    assert got["z"].decision == got["w"].decision == "review"
    assert got["z"].root == "R|z" and got["z"].candidate == "R|w"


@pytest.mark.parametrize("forbid", [True, False])
def test_a_forbidden_resident_is_never_chosen_and_its_record_stays_alone(spark, forbid):
    got = _decide(
        spark,
        [("x", "a1", 40.0), *_both_ways("x", "y", 45.0), ("y", "a1", 40.0)],
        forbidden=[("x", "M_A")] if forbid else [],
    )
    if forbid:
        assert got["x"].decision == "new" and got["x"].root == "R|x"
        assert got["y"].decision == "link" and got["y"].root == "M_A"
    else:
        assert got["x"].root == got["y"].root == "M_A"
