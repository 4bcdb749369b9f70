"""Splink (DuckDB backend) on the EMPI benchmark's records; run by bench/empi.py in the bench virtualenv.

    python splink_runner.py INPUT.parquet OUTPUT.parquet

A setup an experienced Splink user would write for these fields: blocking on ID number, birth date + sex,
phone, and name + birth year (name alone makes blocks of thousands of 王伟 at county scale); u by random
sampling, m by expectation-maximisation on two blocking passes (birth date; ID number); clusters at a match
probability of 0.95.
Output: record_id, cluster_id.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import duckdb
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def main(source: str, target: str) -> None:
    started = time.perf_counter()
    con = duckdb.connect()
    # bounded like our Spark driver, spilling to disk beyond it (the county does not fit in RAM twice)
    con.execute(f"SET memory_limit = '{os.environ.get('SPLINK_MEMORY_LIMIT', '8GB')}'")
    con.execute("SET temp_directory = '" + str(Path(target).parent / "duckdb_spill") + "'")
    records = con.sql(f"SELECT record_id, name, sex_code, CAST(birth_date AS VARCHAR) AS birth_date, id_number, "
                      f"phone, address FROM read_parquet('{source}')")
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[
            cl.NameComparison("name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.ExactMatch("sex_code"),
            cl.LevenshteinAtThresholds("id_number", [1]),
            cl.ExactMatch("phone"),
            cl.LevenshteinAtThresholds("address", [2, 6]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("id_number"), block_on("birth_date", "sex_code"), block_on("phone"),
            block_on("name", "substr(birth_date, 1, 4)")],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(records, settings, db_api=DuckDBAPI(connection=con))
    linker.training.estimate_probability_two_random_records_match([block_on("id_number")], recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    # a second pass not blocked on birth date, so every comparison (birth date too) gets its m estimated
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("id_number"))
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95)
    con.sql(f"COPY (SELECT record_id, CAST(cluster_id AS VARCHAR) AS cluster_id FROM {clusters.physical_name}) "
            f"TO '{target}' (FORMAT parquet)")
    print(f"  Splink: clustered in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
