"""Candidate pairs (blocking), comparison levels and Fellegi–Sunter weights, all on Spark DataFrames.

Blocking joins records that agree on the columns of a rule (config/empi.yaml); a pair is compared column by
column into levels (exact / sound-alike / similar / different ...); each level carries the weight
log2(m/u). The exact-name weight is frequency-aware: two 王伟 agreeing says less than two 欧阳娜 agreeing.
m and u start from the configuration and are re-estimated by recordlinkage's ECM on a sample of pairs.
"""

from __future__ import annotations

import math
from functools import cache, reduce
from typing import Any

import yaml
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.settings import CONFIG_DIR

FEATURES = ("record_id", "name_n", "pinyin", "surname", "id18", "id17", "id_valid", "birth", "sex", "phone_n",
            "township", "village", "house_no")


@cache
def empi_config() -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / "empi.yaml").read_text(encoding="utf-8"))


def candidate_pairs(left: DataFrame, right: DataFrame, rules: list[list[str]], max_block: int,
                    same_side: bool) -> DataFrame:
    """(id_l, id_r) pairs agreeing on all columns of at least one rule; id_l < id_r when both sides match."""
    pairs = []
    for rule in rules:
        present = reduce(lambda a, b: a & b, [F.col(c).isNotNull() for c in rule])
        sized = Window.partitionBy(*rule)
        r = right.where(present).select("record_id", *rule).withColumn("_n", F.count("*").over(sized))
        r = r.where(F.col("_n") <= max_block).drop("_n")
        lhs = left.where(present).select(F.col("record_id").alias("id_l"), *rule)
        joined = lhs.join(r.withColumnRenamed("record_id", "id_r"), rule)
        keep = (F.col("id_l") < F.col("id_r")) if same_side else (F.col("id_l") != F.col("id_r"))
        pairs.append(joined.where(keep).select("id_l", "id_r"))
    return reduce(DataFrame.unionByName, pairs).distinct()


def comparison_levels(pairs: DataFrame, features: DataFrame) -> DataFrame:
    """Each pair with both records' features and one level column per comparison (NULL = not comparable)."""
    left = features.select(*[F.col(c).alias(f"{c}_l") for c in FEATURES])
    right = features.select(*[F.col(c).alias(f"{c}_r") for c in FEATURES])
    df = pairs.join(left, F.col("id_l") == F.col("record_id_l")).join(right, F.col("id_r") == F.col("record_id_r"))

    def both(column: str) -> Column:
        return F.col(f"{column}_l").isNotNull() & F.col(f"{column}_r").isNotNull()

    def eq(column: str) -> Column:
        return F.col(f"{column}_l") == F.col(f"{column}_r")

    chars = F.array_sort(F.split(F.col("name_n_l"), "")) == F.array_sort(F.split(F.col("name_n_r"), ""))
    similar = (F.length("name_n_l") == F.length("name_n_r")) & (
        (F.levenshtein("name_n_l", "name_n_r") <= 1) | chars)
    swapped = ((F.month("birth_l") == F.dayofmonth("birth_r")) & (F.dayofmonth("birth_l") == F.month("birth_r"))
               & (F.year("birth_l") == F.year("birth_r")))
    one_field = ((F.year("birth_l") == F.year("birth_r")).cast("int") + (F.month("birth_l") == F.month("birth_r"))
                 .cast("int") + (F.dayofmonth("birth_l") == F.dayofmonth("birth_r")).cast("int")) == 2
    return df.select(
        "id_l", "id_r", "name_n_l", "name_n_r", "id_valid_l", "id_valid_r", "id18_l", "id18_r",
        F.when(both("name_n"), F.when(eq("name_n"), 0).when(eq("pinyin"), 1).when(similar, 2).otherwise(3))
        .alias("name"),
        F.when(both("birth"), F.when(eq("birth"), 0).when(swapped | one_field, 1).otherwise(2)).alias("birth"),
        F.when(both("sex"), F.when(eq("sex"), 0).otherwise(1)).alias("sex"),
        F.when(both("id17"), F.when(eq("id17"), 0).when(F.levenshtein("id17_l", "id17_r") <= 1, 1).otherwise(2))
        .alias("id"),
        F.when(both("phone_n"), F.when(eq("phone_n"), 0).otherwise(1)).alias("phone"),
        F.when(both("township") & both("village"),
               F.when(eq("township") & eq("village") & eq("house_no"), 0)
                .when(eq("township") & eq("village"), 1).otherwise(2)).alias("address"))


def level_weights(comparisons: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    return {name: [math.log2(m / u) for m, u in zip(spec["m"], spec["u"], strict=True)]
            for name, spec in comparisons.items()}


def score(levels: DataFrame, weights: dict[str, list[float]], name_frequency: DataFrame | None,
          tf_floor: float) -> DataFrame:
    """Total match weight per pair; exact names weigh log2(m / frequency of that name) instead of log2(m/u)."""
    terms = []
    for comparison, values in weights.items():
        term = F.lit(0.0)
        for level, weight in enumerate(values):
            term = F.when(F.col(comparison) == level, F.lit(weight)).otherwise(term)
        terms.append(F.coalesce(term, F.lit(0.0)))
    scored = levels
    if name_frequency is not None:
        name = empi_config()["comparisons"]["name"]
        scored = scored.join(F.broadcast(name_frequency), scored["name_n_l"] == name_frequency["name_n"],
                             "left").drop("name_n")
        # u of agreeing on this very name: its frequency, between the floor and the configured u (which
        # already bounds chance agreement inside a block)
        u_name = F.least(F.greatest(F.coalesce("frequency", F.lit(tf_floor)), F.lit(tf_floor)), F.lit(name["u"][0]))
        exact = F.log2(F.lit(name["m"][0]) / u_name)
        terms[0] = F.when(F.col("name") == 0, exact).otherwise(terms[0])
    total = reduce(lambda a, b: a + b, terms)
    # Two different valid ID numbers are two residents (twins, namesakes): never a match, whatever else agrees.
    distinct_ids = F.col("id_valid_l") & F.col("id_valid_r") & (F.col("id18_l") != F.col("id18_r"))
    return scored.withColumn("score", F.when(distinct_ids, F.lit(-99.0)).otherwise(total))


def name_frequencies(features: DataFrame) -> DataFrame:
    """Share of records carrying each normalised name (the u of an exact-name agreement on that name)."""
    total = features.count()
    return (features.where(F.col("name_n").isNotNull()).groupBy("name_n").count()
            .select("name_n", (F.col("count") / F.lit(max(total, 1))).alias("frequency")))


def estimate_weights(levels: DataFrame, sample_size: int = 200_000, seed: int = 7) -> dict[str, list[float]]:
    """m/u by expectation-maximisation (recordlinkage ECM) on a sample of the pairs' levels.

    One indicator per comparison level (missing = no indicator set); falls back to the configured m/u for a
    comparison whose estimate is degenerate. Only the sample (not the population) is brought to the driver.
    """
    import pandas as pd
    from recordlinkage import ECMClassifier

    config = empi_config()["comparisons"]
    total = levels.count()
    sample = levels.sample(fraction=min(1.0, sample_size / max(total, 1)), seed=seed)
    frame = sample.select(*config).toPandas()
    indicators = pd.DataFrame({f"{c}_{i}": (frame[c] == i).astype(int)
                               for c, spec in config.items() for i in range(len(spec["levels"]))})
    weights = level_weights(config)
    if len(indicators) < 100:
        return weights
    ecm = ECMClassifier(binarize=None)
    ecm.fit(indicators)
    for comparison, spec in config.items():
        estimated = []
        for i in range(len(spec["levels"])):
            m, u = ecm.m_probs.get(f"{comparison}_{i}", {}).get(1), ecm.u_probs.get(f"{comparison}_{i}", {}).get(1)
            if not m or not u or m <= 0 or u <= 0:
                estimated = None
                break
            estimated.append(math.log2(m / u))
        if estimated and estimated[0] > estimated[-1]:   # agreement must weigh more than disagreement
            weights[comparison] = estimated
    return weights
