"""The EMPI's pure stages on hand-made frames: which records a run re-matches, the resident each candidate
stands for, the master id each record ends up with, and which golden records a run must rebuild."""

from __future__ import annotations

import pytest

from spark_jobs.empi.assign import (
    affected_residents,
    assignments,
    candidate_groups,
    forbidden_pairs,
    known_ids,
    registry_changes,
)
from spark_jobs.empi.match import records_to_compare

SUN_ID = "410182196702030044"  # a resident already in the registry (master M_SUN)
NEW_ID = "410182200103040076"  # an ID number nobody in the registry carries yet
FEATURES = "record_id string, id_valid boolean, id18 string, name string"
DECIDED = (
    "record_id string, root string, decision string, score double, candidate string, "
    "candidate_record string, evidence string, second double"
)
CONSTRAINTS = "record_id string, kind string, master_id string, event_id string"


@pytest.fixture
def frames(spark):
    def make(rows, schema):
        return spark.createDataFrame(rows, schema)

    return make


def _anchored(frames, rows):
    return frames(rows, FEATURES + ", master_id string")


def _known(frames, anchored_rows, pins=(), only=None):
    pins_df = frames([(r,) for r in pins], "record_id string")
    return known_ids(_anchored(frames, anchored_rows), pins_df, only)


# --- which records a run looks at again -----------------------------------------------------------------


def test_changed_new_and_deleted_records_are_told_apart_and_unchanged_ones_left_alone(frames):
    schema = "record_id string, fingerprint string"
    silver = frames([("his|1", "fp1"), ("his|2", "fp2-today"), ("his|4", "fp4")], schema)
    registry = frames([("his|1", "fp1"), ("his|2", "fp2"), ("his|3", "fp3")], schema)
    got = {r.record_id: (r.change, r.deleted) for r in registry_changes(silver, registry).collect()}
    assert got == {"his|2": ("changed", False), "his|3": ("deleted", True), "his|4": ("new", False)}


def test_records_with_a_valid_id_are_compared_only_when_sampled_for_the_estimate(frames):
    fresh = frames([("a", True, SUN_ID, "孙秀英"), ("b", False, None, "孙秀英")], FEATURES)
    assert [r.record_id for r in records_to_compare(fresh, 0.0).collect()] == ["b"]
    assert sorted(r.record_id for r in records_to_compare(fresh, 1.0).collect()) == ["a", "b"]


# --- the resident each candidate stands for -------------------------------------------------------------


def test_an_id_number_already_held_by_a_resident_is_known_unless_its_record_was_pinned_by_hand(frames):
    anchored = [("his|S0", True, SUN_ID, "孙秀英", "M_SUN"), ("vc|S1", False, None, "孙秀英", "M_SUN")]
    assert {r.root: r._known for r in _known(frames, anchored).collect()} == {f"ID|{SUN_ID}": "M_SUN"}
    # a steward put the number's only record elsewhere: the number no longer vouches for a resident
    assert _known(frames, anchored, pins=["his|S0"]).count() == 0


def test_known_ids_can_be_narrowed_to_the_numbers_of_the_days_records(frames):
    anchored = [("his|S0", True, SUN_ID, "孙秀英", "M_SUN"), ("his|T0", True, NEW_ID, "马海涛", "M_MA")]
    today = frames([("fy|9", True, NEW_ID, "马海涛")], FEATURES)
    assert {r._known for r in _known(frames, anchored, only=today).collect()} == {"M_MA"}


def test_each_candidate_stands_for_its_resident_and_an_id_less_record_for_itself(frames):
    anchored_rows = [("his|S0", True, SUN_ID, "孙秀英", "M_SUN")]
    known = _known(frames, anchored_rows)
    fresh = frames(
        [
            ("zyy|S2", True, SUN_ID, "孙秀英"),  # her number: she is known
            ("his|T1", True, NEW_ID, "马海涛"),  # a number nobody holds yet
            ("vc|X", False, None, "孙秀英"),
        ],
        FEATURES,
    )
    got = {r.id_r: r.group for r in candidate_groups(fresh, known, _anchored(frames, anchored_rows)).collect()}
    assert got == {"his|S0": "M_SUN", "zyy|S2": "M_SUN", "his|T1": f"ID|{NEW_ID}", "vc|X": "R|vc|X"}


def test_only_separations_are_forbidden_pairs(frames):
    constraints = frames([("vc|X", "forbid", "M_SUN", "e1"), ("vc|Y", "assign", "M_SUN", "e2")], CONSTRAINTS)
    assert [(r.id_l, r.group) for r in forbidden_pairs(constraints).collect()] == [("vc|X", "M_SUN")]


# --- the master id each record ends up with -------------------------------------------------------------


def _assign(frames, fresh_rows, decided_rows, anchored_rows=()):
    fresh = frames(fresh_rows, FEATURES)
    known = _known(frames, list(anchored_rows))
    return {r.record_id: r for r in assignments(fresh, frames(decided_rows, DECIDED), known).collect()}


def test_a_record_with_a_known_id_number_gets_that_residents_master_id(frames):
    got = _assign(
        frames, [("zyy|S2", True, SUN_ID, "孙秀英")], [], anchored_rows=[("his|S0", True, SUN_ID, "孙秀英", "M_SUN")]
    )
    assert (got["zyy|S2"].master_id, got["zyy|S2"].decision) == ("M_SUN", "id_number")
    assert got["zyy|S2"].candidate is None and got["zyy|S2"].name == "孙秀英"  # features carried through


def test_records_sharing_a_new_id_number_share_one_master_id_that_does_not_reveal_it(frames):
    got = _assign(frames, [("his|T1", True, NEW_ID, "马海涛"), ("zyy|T1", True, NEW_ID, "马海涛")], [])
    assert got["his|T1"].master_id == got["zyy|T1"].master_id
    assert got["his|T1"].master_id.startswith("M") and NEW_ID[:6] not in got["his|T1"].master_id


def test_a_linked_record_takes_its_residents_master_id(frames):
    got = _assign(
        frames,
        [("ph|S3", False, None, "孙秀英")],
        [("ph|S3", "M_SUN", "link", 30.0, "M_SUN", "his|S0", "name=exact", None)],
    )
    assert (got["ph|S3"].master_id, got["ph|S3"].decision, got["ph|S3"].candidate) == ("M_SUN", "link", "M_SUN")


def test_a_review_keeps_its_own_master_id_and_names_the_candidate_resident(frames):
    decided = [("vc|X", "R|vc|X", "review", 18.0, f"ID|{SUN_ID}", "his|S0", "name=exact phone=other", 16.0)]
    got = _assign(
        frames, [("vc|X", False, None, "孙秀英")], decided, anchored_rows=[("his|S0", True, SUN_ID, "孙秀英", "M_SUN")]
    )["vc|X"]
    assert got.decision == "review" and got.master_id != "M_SUN" and got.master_id.startswith("M")
    # the candidate is named as the resident holding that ID number, with the record and levels behind it
    assert (got.candidate, got.candidate_record, got.evidence) == ("M_SUN", "his|S0", "name=exact phone=other")
    assert (got.score, got.second) == (18.0, 16.0)


def test_id_less_records_of_one_new_person_share_a_master_id_distinct_from_others(frames):
    decided = [
        ("vc|X", "R|fy|X", "new", None, None, None, None, None),
        ("fy|X", "R|fy|X", "new", None, None, None, None, None),
        ("vc|Z", "R|vc|Z", "new", None, None, None, None, None),
    ]
    got = _assign(frames, [("vc|X", False, None, "a"), ("fy|X", False, None, "a"), ("vc|Z", False, None, "b")], decided)
    assert got["vc|X"].master_id == got["fy|X"].master_id != got["vc|Z"].master_id
    assert {r.decision for r in got.values()} == {"new"}


# --- which golden records a run rebuilds ----------------------------------------------------------------


@pytest.mark.parametrize("broadcast", [False, True])
def test_residents_gaining_or_losing_a_record_get_a_new_golden_record_and_no_one_else(frames, broadcast):
    registry = frames(
        [("vc|X", "M_OLD"), ("his|D", "M_GONE"), ("his|S0", "M_SUN"), ("his|Q", "M_QUIET")],
        "record_id string, master_id string",
    )
    decided = frames([("vc|X", "M_SUN"), ("fy|N", "M_NEW")], "record_id string, master_id string")
    changes = frames(
        [("vc|X", "changed", False), ("his|D", "deleted", True), ("fy|N", "new", False)],
        "record_id string, change string, deleted boolean",
    )
    got = {r.master_id for r in affected_residents(decided, changes, registry, broadcast).collect()}
    assert got == {"M_SUN", "M_NEW", "M_OLD", "M_GONE"}
