"""GB 11643 check characters: the generator's rule and the Spark validation rule agree on every case."""

from __future__ import annotations

import random
from datetime import date

import pytest
from pyspark.sql import functions as F

from core.gb11643 import check_char, is_valid
from simulator.world import issue_id_number
from spark_jobs.standardize import id_number_is_valid


@pytest.mark.parametrize("id_number", ["41018219800101001X", "410182199212310025"])
def test_published_examples_are_valid(id_number):
    assert check_char(id_number[:17]) == id_number[17]
    assert is_valid(id_number)


def test_spark_rule_matches_python_rule_on_valid_corrupted_and_legacy_numbers(spark):
    rng = random.Random(7)
    cases = []
    for _ in range(300):
        good = issue_id_number(
            rng,
            "410182",
            date(1930 + rng.randrange(90), 1 + rng.randrange(12), 1 + rng.randrange(28)),
            rng.choice((1, 2)),
            set(),
        )
        cases.append(good)
        cases.append(good[:17] + rng.choice([c for c in "0123456789X" if c != good[17]]))  # wrong check char
        cases.append(good[:6] + good[8:17])  # legacy 15-digit
    cases += ["", "41018219801301001X", "4101821980010100XX", "41018219800101001x"]
    df = spark.createDataFrame([(c,) for c in cases], "id_number string")
    spark_verdicts = dict(df.select("id_number", id_number_is_valid(F.col("id_number")).alias("ok")).collect())
    # The Spark rule also rejects impossible birth dates (month 13); the check-character rule alone does not.
    expected = {c: is_valid(c) and c[10:12] <= "12" for c in cases}
    assert spark_verdicts == expected
    assert sum(expected.values()) == 301  # 300 generated + the lower-case 'x' variant
