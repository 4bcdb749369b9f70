"""Property tests of the mapping primitives: dates parse back, codes map exactly as the map says, IDs check.

Each example is one small Spark job over a list of generated values, so a few examples cover many values.
"""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from core import gb11643
from spark_jobs.standardize import column_expression, enrich, id_number_is_valid

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = {"yyyy-MM-dd": "%Y-%m-%d", "yyyyMMdd": "%Y%m%d", "yyyy/MM/dd": "%Y/%m/%d", "dd.MM.yyyy": "%d.%m.%Y"}
codes = st.text(alphabet="ABCXYZ0123456789男女", min_size=1, max_size=3)


@SETTINGS
@given(
    days=st.lists(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)), min_size=1, max_size=40),
    used=st.lists(st.sampled_from(sorted(FORMATS)), min_size=1, max_size=4, unique=True),
)
def test_a_date_written_in_any_configured_format_parses_back(spark, days, used):
    texts = [(d.strftime(FORMATS[used[i % len(used)]]), d) for i, d in enumerate(days)]
    value, _, error = column_expression("birth_date", {"from": "v", "type": "date", "formats": used}, "x")
    rows = spark.createDataFrame(texts, "v string, expected date").select(value, error.alias("e"), "expected")
    assert all(r.birth_date == r.expected and r.e is None for r in rows.collect())


@SETTINGS
@given(garbage=st.lists(st.text(alphabet="abc-/:xyz", min_size=1, max_size=8), min_size=1, max_size=20))
def test_text_that_is_not_a_date_is_an_error_never_a_wrong_date(spark, garbage):
    value, _, error = column_expression(
        "birth_date", {"from": "v", "type": "date", "formats": ["yyyy-MM-dd", "yyyyMMdd"]}, "x"
    )
    rows = spark.createDataFrame([(g,) for g in garbage], "v string").select(value, error.alias("e")).collect()
    assert all(r.birth_date is None and r.e == f"birth_date={g}" for r, g in zip(rows, garbage, strict=True))


@SETTINGS
@given(
    mapping=st.dictionaries(codes, st.sampled_from(["0", "1", "2", "9"]), max_size=8),
    values=st.lists(st.one_of(codes, st.just(""), st.just("  "), st.none()), min_size=1, max_size=30),
)
def test_a_code_maps_exactly_as_the_map_says_and_unknown_codes_are_flagged(spark, mapping, values):
    value, flag, _ = column_expression("sex_code", {"from": "v", "values": mapping}, "x")
    rows = spark.createDataFrame([(v,) for v in values], "v string").select(value, flag.alias("f")).collect()
    for row, raw in zip(rows, values, strict=True):
        code = (raw or "").strip()
        assert row.sex_code == mapping.get(code)
        assert row.f == (f"UNMAPPED:sex_code:{code}" if code and code not in mapping else None)


def _python_check(id_number: str) -> bool:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    if len(id_number) != 18 or not id_number[:17].isdigit():
        return False
    try:
        date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return False
    return (
        "10X98765432"[sum(int(c) * w for c, w in zip(id_number, weights, strict=False)) % 11] == id_number[17].upper()
    )


@SETTINGS
@given(
    bodies=st.lists(
        st.tuples(
            st.dates(min_value=date(1920, 1, 1), max_value=date(2025, 12, 31)),
            st.integers(0, 999),
            st.sampled_from("0123456789Xx"),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_id_number_check_agrees_with_gb11643(spark, bodies):
    numbers = [f"410182{d:%Y%m%d}{seq:03d}{check}" for d, seq, check in bodies]
    rows = (
        spark.createDataFrame([(n,) for n in numbers], "n string")
        .select("n", id_number_is_valid(F.col("n")).alias("ok"))
        .collect()
    )
    assert all(r.ok == _python_check(r.n) for r in rows)


@SETTINGS
@given(
    people=st.lists(
        st.tuples(
            st.dates(min_value=date(1920, 1, 1), max_value=date(1999, 12, 31)),
            st.integers(0, 999),
            st.sampled_from(["valid", "bad_check", "legacy"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_birth_date_and_sex_come_from_a_checked_or_legacy_id_number_only(spark, people):
    """The quality rules PER-S01/PER-S02 compare with these: a wrong check digit proves nothing, a 15-digit
    number (issued before 1999) carries 19yyMMdd and its last digit is the sex digit."""
    numbers, expected = [], []
    for born, seq, kind in people:
        body = f"410182{born:%Y%m%d}{seq:03d}"
        sex = "1" if seq % 2 else "2"
        if kind == "valid":
            numbers.append(body + gb11643.check_char(body))
            expected.append((born, sex))
        elif kind == "bad_check":
            chars = gb11643.CHECK_CHARS
            wrong = chars[(chars.index(gb11643.check_char(body)) + 1) % len(chars)]
            numbers.append(body + wrong)
            expected.append((None, None))
        else:
            numbers.append(f"410182{born:%y%m%d}{seq:03d}")
            expected.append((born, sex))
    df = spark.createDataFrame([(n,) for n in numbers], "id_number string")
    rows = enrich("person", df).select("id_birth_date", "id_sex_code").collect()
    assert [(r.id_birth_date, r.id_sex_code) for r in rows] == expected
