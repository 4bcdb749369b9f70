"""Pairwise precision / recall / F1 of an EMPI clustering against an answer key (the simulator's, or a
benchmark set's): in Spark for the pipeline's registry, in pure Python for another tool's result."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from simulator.connections import source_pg_engine


def truth_frame(spark: SparkSession) -> DataFrame:
    """record_id -> resident_id from the answer key (sim_truth), never read by the pipeline itself."""
    with source_pg_engine("sim_truth").connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source_system || '|' || local_patient_id, resident_id::text FROM patient_truth")
        ).all()
    return spark.createDataFrame([tuple(r) for r in rows], "record_id string, resident_id string")


def _pairs(counts: DataFrame) -> int:
    return int(counts.select(F.sum(F.col("count") * (F.col("count") - 1) / 2)).first()[0] or 0)


def pairwise_quality(assignments: DataFrame, truth: DataFrame) -> dict[str, float]:
    """Over the records present in both: pairs put together vs pairs truly together."""
    joined = assignments.select("record_id", "master_id").join(truth, "record_id").persist()
    predicted = _pairs(joined.groupBy("master_id").count())
    actual = _pairs(joined.groupBy("resident_id").count())
    correct = _pairs(joined.groupBy("master_id", "resident_id").count())
    records = joined.count()
    joined.unpersist()
    return pair_scores(records, actual, predicted, correct)


def pair_scores(records: int, actual: int, predicted: int, correct: int) -> dict[str, float]:
    """Precision, recall and F1 from pair counts (shared with the benchmark's scoring of Splink)."""
    precision = correct / predicted if predicted else 1.0
    recall = correct / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "records": records,
        "true_pairs": actual,
        "predicted_pairs": predicted,
        "correct_pairs": correct,
        "precision": round(precision, 5),
        "recall": round(recall, 5),
        "f1": round(f1, 5),
    }


def pairwise(assigned: dict[str, str], truth: dict[str, str] | dict[str, int]) -> dict[str, float]:
    """The same scores for a clustering given as record -> cluster (pure Python: Splink's or a test's)."""

    def pairs(counter: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counter.values())

    common = [k for k in assigned if k in truth]
    predicted = pairs(Counter(assigned[k] for k in common))
    actual = pairs(Counter(truth[k] for k in common))
    correct = pairs(Counter((assigned[k], truth[k]) for k in common))
    return pair_scores(len(common), actual, predicted, correct)
