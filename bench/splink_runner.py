"""Splink (DuckDB backend) on the EMPI benchmark's records; run by bench/empi.py in the bench virtualenv.

    python splink_runner.py INPUT.parquet OUTPUT.parquet

A setup an experienced Splink user would write for these fields: blocking on ID number, birth date + sex,
phone, and name + birth year (name alone makes blocks of thousands of 王伟 at county scale); u by random
sampling, m by expectation-maximisation on two blocking passes (birth date; ID number); clusters at a match
probability of 0.95.
Output: record_id, cluster_id.

    python splink_runner.py INPUT.parquet OUTPUT.parquet --normalised

(bench/empi_independent.py) reads the EMPI's own normalised columns instead (name_n, pinyin, id17, birth, sex,
phone_n, township, village, house_no from spark_jobs/empi/normalize.py), so Splink gets the same cleaned inputs
ours gets (pinyin, traditional -> simplified, 15 -> 18 digit IDs, one address key). In both modes a column
that is empty in the whole file (FEBRL has no phone or sex) is left out of comparisons and blocking.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import duckdb
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def _present(con: duckdb.DuckDBPyConnection, source: str, columns: tuple[str, ...]) -> set[str]:
    """The columns holding at least one non-empty value (an all-null column makes EM degenerate)."""
    counts = con.execute(
        "SELECT "
        + ", ".join(f"count(NULLIF(CAST({c} AS VARCHAR), ''))" for c in columns)
        + f" FROM read_parquet('{source}')"
    ).fetchall()[0]
    return {c for c, n in zip(columns, counts, strict=True) if n}


def raw_setup(con: duckdb.DuckDBPyConnection, source: str) -> tuple[duckdb.DuckDBPyRelation, dict]:
    """The fields as the file has them, with a generic comparison per field."""
    present = _present(con, source, ("name", "sex_code", "birth_date", "id_number", "phone", "address"))
    records = con.sql(
        f"SELECT record_id, name, sex_code, CAST(birth_date AS VARCHAR) AS birth_date, id_number, "
        f"phone, address FROM read_parquet('{source}')"
    )
    comparisons = {
        "name": cl.NameComparison("name"),
        "birth_date": cl.DateOfBirthComparison("birth_date", input_is_string=True),
        "sex_code": cl.ExactMatch("sex_code"),
        "id_number": cl.LevenshteinAtThresholds("id_number", [1]),
        "phone": cl.ExactMatch("phone"),
        "address": cl.LevenshteinAtThresholds("address", [2, 6]),
    }
    blocking = [("id_number",), ("birth_date", "sex_code"), ("phone",), ("name", "substr(birth_date, 1, 4)")]
    return records, {
        "comparisons": comparisons,
        "present": present,
        "blocking": blocking,
        "deterministic": [("id_number",), ("name", "birth_date")],
        "id": "id_number",
        "birth": "birth_date",
    }


def normalised_setup(con: duckdb.DuckDBPyConnection, source: str) -> tuple[duckdb.DuckDBPyRelation, dict]:
    """The EMPI's normalised columns: name by characters then by fuzzy pinyin, ID on 17 characters, address
    as township / village / house number."""
    present = _present(con, source, ("name_n", "sex", "birth", "id17", "phone_n", "township"))
    records = con.sql(
        f"SELECT record_id, name_n, pinyin, sex, CAST(birth AS VARCHAR) AS birth, id17, phone_n, "
        f"township, village, house_no FROM read_parquet('{source}')"
    )
    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel("name_n"),
            cll.ExactMatchLevel("name_n"),
            cll.ExactMatchLevel("pinyin"),
            cll.JaroWinklerLevel("name_n", 0.85),
            cll.JaroWinklerLevel("pinyin", 0.85),
            cll.ElseLevel(),
        ],
    )
    address = cl.CustomComparison(
        output_column_name="address",
        comparison_levels=[
            cll.NullLevel("township"),
            cll.CustomLevel("township_l = township_r AND village_l = village_r AND house_no_l = house_no_r", "house"),
            cll.CustomLevel("township_l = township_r AND village_l = village_r", "village"),
            cll.CustomLevel("township_l = township_r", "township"),
            cll.ElseLevel(),
        ],
    )
    comparisons = {
        "name_n": name,
        "birth": cl.DateOfBirthComparison("birth", input_is_string=True),
        "sex": cl.ExactMatch("sex"),
        "id17": cl.LevenshteinAtThresholds("id17", [1]),
        "phone_n": cl.ExactMatch("phone_n"),
        "township": address,
    }
    blocking = [
        ("id17",),
        ("birth", "sex"),
        ("phone_n",),
        ("pinyin", "substr(birth, 1, 4)"),
        ("birth", "township", "village"),
    ]
    return records, {
        "comparisons": comparisons,
        "present": present,
        "blocking": blocking,
        "deterministic": [("id17",), ("name_n", "birth")],
        "id": "id17",
        "birth": "birth",
    }


def _columns_of(rule: tuple[str, ...]) -> set[str]:
    return {c.removeprefix("substr(").split(",")[0] for c in rule}


def main(source: str, target: str, normalised: bool = False) -> None:
    started = time.perf_counter()
    con = duckdb.connect()
    # bounded like our Spark driver, spilling to disk beyond it (the county does not fit in RAM twice)
    con.execute(f"SET memory_limit = '{os.environ.get('SPLINK_MEMORY_LIMIT', '8GB')}'")
    con.execute("SET temp_directory = '" + str(Path(target).parent / "duckdb_spill") + "'")
    records, setup = (normalised_setup if normalised else raw_setup)(con, source)
    present = setup["present"]
    usable = [rule for rule in setup["blocking"] if _columns_of(rule) <= present]
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[c for column, c in setup["comparisons"].items() if column in present],
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in usable],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(records, settings, db_api=DuckDBAPI(connection=con))
    deterministic = [block_on(*rule) for rule in setup["deterministic"] if _columns_of(rule) <= present]
    linker.training.estimate_probability_two_random_records_match(deterministic[:1], recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(setup["birth"]))
    # a second pass not blocked on birth date, so every comparison (birth date too) gets its m estimated
    second = setup["id"] if setup["id"] in present else "substr(" + setup["birth"] + ", 1, 4)"
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(second))
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95)
    con.sql(
        f"COPY (SELECT record_id, CAST(cluster_id AS VARCHAR) AS cluster_id FROM {clusters.physical_name}) "
        f"TO '{target}' (FORMAT parquet)"
    )
    print(f"  Splink: clustered in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], normalised="--normalised" in sys.argv[3:])
