"""Batch matching for bulk imports: a file of person records in, each one's master id and decision out.

    ./drc empi match --input people.csv --output matched.parquet

Input: Parquet or UTF-8 CSV with columns record_id, source, name, sex, birth_date, id_number, phone, address
(every value may be empty except record_id and source; sex as GB/T 2261.1 code or 男/女; birth_date
YYYY-MM-DD). Output: record_id, master_id, decision (match | possible_match | new), score, and for a possible
match the candidate (candidate_master_id, candidate_record_id: a registry record or a line of this file) and
the comparison levels that decided it (evidence). Records of the file link to each other as well as to the
registry: ``new`` records of one person share a master id. The registry is not changed: this answers "who
are these people", it does not register them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.spark import read_delta
from spark_jobs.empi.identity import empi_path, match_records
from spark_jobs.empi.match import empi_config
from spark_jobs.empi.normalize import normalize_records

COLUMNS = ("record_id", "source", "name", "sex", "birth_date", "id_number", "phone", "address")
SEX_CODES = {"0": "0", "1": "1", "2": "2", "9": "9", "男": "1", "女": "2"}


class BatchFileError(ValueError):
    """The input file cannot be matched as it is; the message says what to fix."""


def _check_utf8(path: Path) -> None:
    with path.open("rb") as f:
        offset = 0
        tail = b""
        while chunk := f.read(1 << 20):
            data = tail + chunk
            try:
                data.decode("utf-8")
                tail = b""
            except UnicodeDecodeError as exc:
                if exc.start >= len(data) - 3:  # a character cut at the chunk boundary
                    tail = data[exc.start :]
                    continue
                raise BatchFileError(
                    f"{path}: not UTF-8 text at byte {offset + exc.start - len(tail)}; "
                    "save the file as UTF-8 (GBK exports: iconv -f GBK -t UTF-8)"
                ) from exc
            offset += len(chunk)


def read_batch(spark: SparkSession, path: str) -> DataFrame:
    """The input file as strings, validated: raises BatchFileError naming the rows and the rule broken."""
    file = Path(path)
    if not file.exists():
        raise BatchFileError(f"{path}: no such file")
    if file.suffix.lower() == ".parquet":
        df = spark.read.parquet(path)
        df = df.select(*[F.col(c).cast("string").alias(c) for c in df.columns])
        df = df.withColumn("_line", F.monotonically_increasing_id() + 1)
    elif file.suffix.lower() == ".csv":
        _check_utf8(file)
        df = spark.read.option("header", True).option("encoding", "UTF-8").csv(path)  # every column as text
        df = df.withColumn("_line", F.monotonically_increasing_id() + 2)  # header is line 1
    else:
        raise BatchFileError(f"{path}: use a .csv (UTF-8) or .parquet file")
    missing = [c for c in ("record_id", "source") if c not in df.columns]
    unknown = [c for c in df.columns if c not in (*COLUMNS, "_line")]
    if missing or unknown:
        raise BatchFileError(
            f"{path}: columns must be {', '.join(COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    for column in COLUMNS:
        if column not in df.columns:
            df = df.withColumn(column, F.lit(None).cast("string"))
    sex_ok = F.col("sex").isNull() | (F.trim("sex") == "") | F.trim("sex").isin(*SEX_CODES)
    date_ok = (
        F.col("birth_date").isNull()
        | (F.trim("birth_date") == "")
        | (
            F.trim("birth_date").rlike(r"^\d{4}-\d{2}-\d{2}$")
            & F.to_date(F.trim("birth_date"), "yyyy-MM-dd").isNotNull()
        )
    )
    key_ok = (F.trim(F.coalesce("record_id", F.lit(""))) != "") & (F.trim(F.coalesce("source", F.lit(""))) != "")
    duplicate = F.count("*").over(Window.partitionBy("record_id")) > 1
    checked = df.withColumn(
        "_problem",
        F.when(~key_ok, "record_id and source are required")
        .when(~sex_ok, F.concat(F.lit("sex must be 0/1/2/9 or 男/女, not "), F.col("sex")))
        .when(~date_ok, F.concat(F.lit("birth_date must be YYYY-MM-DD, not "), F.col("birth_date")))
        .when(duplicate, F.concat(F.lit("record_id repeated: "), F.col("record_id"))),
    )
    problems = checked.where(F.col("_problem").isNotNull()).orderBy("_line").limit(5).collect()
    if problems:
        total = checked.where(F.col("_problem").isNotNull()).count()
        listed = "; ".join(f"line {r._line}: {r._problem}" for r in problems)
        raise BatchFileError(f"{path}: {total} invalid row(s), nothing matched. {listed}")
    sex_map = F.create_map(*[F.lit(x) for pair in SEX_CODES.items() for x in pair])
    return df.select(
        F.concat(F.lit("BATCH|"), F.trim("record_id")).alias("record_id"),
        F.trim("source").alias("source_system"),
        "name",
        sex_map[F.trim("sex")].alias("sex_code"),
        F.to_date(F.trim("birth_date"), "yyyy-MM-dd").alias("birth_date"),
        "id_number",
        "phone",
        "address",
    )


def match_file(
    spark: SparkSession,
    input_path: str,
    output_path: str,
    progress: Callable[[str], None] = lambda done: None,
    timings_path: str | None = None,
) -> int:
    """Match the file's records against the registry (and each other); returns the number of records written.

    ``progress`` hears each stage's end with the seconds since the start; ``timings_path``, if given, gets
    each stage's own seconds as JSON (for benchmarks, which should not parse the progress wording)."""
    started = time.perf_counter()
    stage_ends: dict[str, float] = {}

    def step(done: str, stage: str | None = None) -> None:
        elapsed = time.perf_counter() - started
        if stage:
            stage_ends[stage] = elapsed
        progress(f"{done} ({elapsed:.1f} s)")

    batch = normalize_records(read_batch(spark, input_path)).localCheckpoint()
    step(f"{batch.count():,} records read and normalised", stage="read and normalised")
    registry = read_delta(spark, empi_path("records"))
    anchored = None
    if registry is not None:
        anchored = registry.select(*batch.columns, "master_id")
    # m/u come from the data being linked: the county's (stored by its last full run), or, with no registry
    # yet, the file's own records when there are enough of them
    estimate = registry is None and batch.count() >= empi_config()["estimate_min_records"]
    assignments, _ = match_records(spark, batch, anchored, estimate=estimate, step=step)
    known = (
        registry.select("master_id").distinct().withColumn("_known", F.lit(True))
        if registry is not None
        else spark.createDataFrame([], "master_id string, _known boolean")
    )
    result = (
        assignments.join(known, "master_id", "left")
        .select(
            _without_prefix("record_id").alias("record_id"),
            "master_id",
            F.when(F.col("decision") == "review", "possible_match")
            .when(F.col("_known"), "match")
            .otherwise("new")
            .alias("decision"),
            F.round("score", 2).alias("score"),
            F.when(F.col("decision") == "review", F.col("candidate")).alias("candidate_master_id"),
            F.when(F.col("decision") == "review", _without_prefix("candidate_record")).alias("candidate_record_id"),
            F.when(F.col("decision") == "review", F.col("evidence")).alias("evidence"),
        )
        .localCheckpoint()
    )
    # one output file in record order: one task sorts it (no range-partitioning pass for a file's worth)
    _write_single(result.coalesce(1).sortWithinPartitions("record_id"), output_path)
    written = result.count()
    step(f"{written:,} records' master ids assigned, output written", stage="master ids assigned, output written")
    if timings_path:
        previous, seconds = 0.0, {}
        for stage, end in stage_ends.items():
            seconds[stage], previous = round(end - previous, 1), end
        Path(timings_path).write_text(json.dumps(seconds, ensure_ascii=False), encoding="utf-8")
    return written


def _without_prefix(column: str) -> Column:
    """A record id as the file gave it (its registry form carries ``BATCH|``); registry records unchanged."""
    return F.regexp_replace(F.col(column), r"^BATCH\|", "")


def _write_single(df: DataFrame, path: str) -> None:
    """One output file (CSV with header, or Parquet, by extension), replaced atomically."""
    target = Path(path)
    scratch = Path(tempfile.mkdtemp(prefix="empi_match_", dir=target.parent if target.parent.exists() else None))
    try:
        writer = df.coalesce(1).write.mode("overwrite")
        if target.suffix.lower() == ".parquet":
            writer.parquet(str(scratch / "out"))
            part = next((scratch / "out").glob("part-*.parquet"))
        else:
            writer.option("header", True).option("encoding", "UTF-8").csv(str(scratch / "out"))
            part = next((scratch / "out").glob("part-*.csv"))
        part.replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
