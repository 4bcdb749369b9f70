"""The deadline rule on small cases: who is on time, late, missing, pending, or simply had a quiet day."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from ingestion.deadline import COUNTY_TZ, classify, deadline_of

DAY = date(2026, 11, 8)
AFTER_DEADLINE = deadline_of(DAY) + timedelta(minutes=1)
HOSPITAL, VILLAGE = "410182001", "410182201"


def _week(org: str, days: int = 7) -> dict:
    return {(org, DAY - timedelta(days=i)): (100, 0, None) for i in range(1, days + 1)}


def _status(arrived: dict, now: datetime = AFTER_DEADLINE, down: bool = False, was_missing=frozenset()) -> dict:
    return {
        j.org_code: j.status
        for j in classify("his", (HOSPITAL, VILLAGE), [DAY], arrived, down=down, was_missing=set(was_missing), now=now)
    }


def test_the_deadline_is_24_00_of_the_next_day_beijing_time():
    assert deadline_of(DAY) == datetime(2026, 11, 10, 0, 0, tzinfo=COUNTY_TZ)


def test_a_regular_sender_with_nothing_is_missing_after_the_deadline_and_pending_before():
    arrived = {**_week(HOSPITAL), (VILLAGE, DAY - timedelta(days=3)): (2, 0, None)}
    assert _status(arrived) == {HOSPITAL: "missing", VILLAGE: "no_activity"}  # a quiet village day is no alarm
    assert _status(arrived, now=deadline_of(DAY) - timedelta(hours=1))[HOSPITAL] == "pending"


def test_rows_committed_after_the_deadline_or_after_a_missing_judgement_are_late():
    arrived = {**_week(HOSPITAL), (HOSPITAL, DAY): (50, 3, None), (VILLAGE, DAY): (5, 0, None)}
    assert _status(arrived) == {HOSPITAL: "late", VILLAGE: "on_time"}
    arrived[(HOSPITAL, DAY)] = (50, 0, None)
    assert _status(arrived, was_missing={(HOSPITAL, DAY)})[HOSPITAL] == "late"


def test_when_the_source_is_down_everyone_who_ever_sent_is_missing():
    arrived = {(VILLAGE, DAY - timedelta(days=2)): (2, 0, None), **_week(HOSPITAL, 1)}
    assert _status(arrived, down=True) == {HOSPITAL: "missing", VILLAGE: "missing"}
    assert _status({}, down=True) == {HOSPITAL: "no_activity", VILLAGE: "no_activity"}  # never sent: unknown


def test_one_day_of_history_does_not_make_an_institution_expected():
    arrived = {**_week(HOSPITAL, 2), **_week(VILLAGE, 2)}
    assert _status(arrived) == {HOSPITAL: "no_activity", VILLAGE: "no_activity"}
