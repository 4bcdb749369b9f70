"""Candidate pairs (blocking), comparison levels and Fellegi–Sunter weights, all on Spark DataFrames.

Blocking joins records that agree on the columns of a rule (config/empi.yaml); a pair is compared column by
column into levels (exact / sound-alike / similar / different ...); each level carries the weight
log2(m/u). The exact-name weight is frequency-aware: two 王伟 agreeing says less than two 欧阳娜 agreeing.
m and u start from the configuration; each full run estimates them on the county's own records (u from random
pairs, m by expectation-maximisation over the candidate pairs) and later runs reuse that estimate.
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
            "township", "village", "house_no", "address_n")


@cache
def empi_config() -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / "empi.yaml").read_text(encoding="utf-8"))


def candidate_pairs(left: DataFrame, right: DataFrame, rules: list[list[str]], max_block: int,
                    same_side: bool, few_left: bool = False) -> DataFrame:
    """(id_l, id_r) pairs agreeing on all columns of at least one rule; id_l < id_r when both sides match.

    ``few_left``: ``left`` is a day's records against the whole registry; the registry is first narrowed to
    the blocks those records fall in (a broadcast filter, no shuffle of the county).
    """
    pairs = []
    for rule in rules:
        present = reduce(lambda a, b: a & b, [F.col(c).isNotNull() for c in rule])
        lhs = left.where(present).select(F.col("record_id").alias("id_l"), *rule)
        r = right.where(present).select("record_id", *rule)
        if few_left:
            r = r.join(F.broadcast(lhs.select(*rule).distinct()), rule, "left_semi")
        r = r.withColumn("_n", F.count("*").over(Window.partitionBy(*rule)))
        r = r.where(F.col("_n") <= max_block).drop("_n")
        joined = lhs.join(r.withColumnRenamed("record_id", "id_r"), rule)
        keep = (F.col("id_l") < F.col("id_r")) if same_side else (F.col("id_l") != F.col("id_r"))
        pairs.append(joined.where(keep).select("id_l", "id_r"))
    return reduce(DataFrame.unionByName, pairs).distinct()


def comparison_levels(pairs: DataFrame, features: DataFrame, few_pairs: bool = False) -> DataFrame:
    """Each pair with both records' features and one level column per comparison (NULL = not comparable).

    ``few_pairs``: a day's pairs, broadcast to the features instead of shuffling every record to them.
    """
    left, right = _side(features, "l"), _side(features, "r")
    if few_pairs:
        df = left.join(F.broadcast(pairs), F.col("id_l") == F.col("record_id_l"))
        df = right.join(F.broadcast(df), F.col("id_r") == F.col("record_id_r"))
    else:
        df = pairs.join(left, F.col("id_l") == F.col("record_id_l")).join(right,
                                                                          F.col("id_r") == F.col("record_id_r"))
    return _compared(df)


def _side(features: DataFrame, side: str) -> DataFrame:
    return features.select(*[F.col(c).alias(f"{c}_{side}") for c in FEATURES])


def _compared(df: DataFrame) -> DataFrame:
    """Level columns of pairs given as id_l, id_r and both records' features (suffixed _l and _r)."""

    def both(column: str) -> Column:
        return F.col(f"{column}_l").isNotNull() & F.col(f"{column}_r").isNotNull()

    def eq(column: str) -> Column:
        return F.col(f"{column}_l") == F.col(f"{column}_r")

    chars = F.array_sort(F.split(F.col("name_n_l"), "")) == F.array_sort(F.split(F.col("name_n_r"), ""))
    # one character off (a longer, alphabetic name: also one inserted or dropped; two in a long one)
    name_edits = F.levenshtein("name_n_l", "name_n_r")
    shorter = F.least(F.length("name_n_l"), F.length("name_n_r"))
    similar = (chars | ((name_edits <= 1) & ((F.length("name_n_l") == F.length("name_n_r")) | (shorter >= 5)))
               | ((name_edits <= 2) & (shorter >= 9)))
    address_edits = F.levenshtein("address_n_l", "address_n_r")
    swapped = ((F.month("birth_l") == F.dayofmonth("birth_r")) & (F.dayofmonth("birth_l") == F.month("birth_r"))
               & (F.year("birth_l") == F.year("birth_r")))
    one_field = ((F.year("birth_l") == F.year("birth_r")).cast("int") + (F.month("birth_l") == F.month("birth_r"))
                 .cast("int") + (F.dayofmonth("birth_l") == F.dayofmonth("birth_r")).cast("int")) == 2
    return df.select(
        "id_l", "id_r", "name_n_l", "name_n_r", "id_valid_l", "id_valid_r", "id18_l", "id18_r",
        F.when(both("name_n"), F.when(eq("name_n"), 0).when(eq("pinyin"), 1).when(similar, 2).otherwise(3))
        .alias("name"),
        # the same characters in another order: a clerk's slip, never how twins' names differ
        (both("name_n") & ~eq("name_n") & chars).alias("name_swapped"),
        F.when(both("birth"), F.when(eq("birth"), 0).when(swapped | one_field, 1).otherwise(2)).alias("birth"),
        F.when(both("sex"), F.when(eq("sex"), 0).otherwise(1)).alias("sex"),
        F.when(both("id17"), F.when(eq("id17"), 0).when(F.levenshtein("id17_l", "id17_r") <= 1, 1).otherwise(2))
        .alias("id"),
        F.when(both("phone_n"), F.when(eq("phone_n"), 0).otherwise(1)).alias("phone"),
        F.when(both("township") & both("village"),
               F.when(eq("township") & eq("village") & eq("house_no"), 0)
                .when(eq("township") & eq("village"), 1).otherwise(2))
         # an address that does not parse (another county's, an abbreviation): compared as text
         .when(F.col("township_l").isNull() & F.col("township_r").isNull() & both("address_n"),
               F.when(eq("address_n"), 0)
                .when(address_edits <= F.greatest(F.lit(2), F.length("address_n_l") / 5), 1).otherwise(2))
        .alias("address"))


Params = dict[str, dict[str, list[float]]]   # comparison -> {"m": [P(level | same)], "u": [P(level | different)]}


def prior_params() -> Params:
    """m and u as configured (used until a full run has estimated them on the county's own records)."""
    return {c: {"m": list(spec["m"]), "u": list(spec["u"])} for c, spec in empi_config()["comparisons"].items()}


def level_weights(params: Params) -> dict[str, list[float]]:
    return {name: [math.log2(m / u) for m, u in zip(spec["m"], spec["u"], strict=True)]
            for name, spec in params.items()}


def score(levels: DataFrame, params: Params, name_frequency: DataFrame, tf_floor: float,
          link_threshold: float) -> DataFrame:
    """Total match weight per pair; exact names weigh log2(m / frequency of that name) instead of log2(m/u)."""
    terms = []
    for comparison, values in level_weights(params).items():
        term = F.lit(0.0)
        for level, weight in enumerate(values):
            term = F.when(F.col(comparison) == level, F.lit(weight)).otherwise(term)
        terms.append(F.coalesce(term, F.lit(0.0)))
    scored = levels.join(F.broadcast(name_frequency), levels["name_n_l"] == name_frequency["name_n"], "left") \
        .drop("name_n")
    # u of agreeing on this very name is the chance a random record carries it: its frequency (floored)
    u_name = F.greatest(F.coalesce("frequency", F.lit(tf_floor)), F.lit(tf_floor))
    exact = F.log2(F.lit(params["name"]["m"][0]) / u_name)
    terms[0] = F.when(F.col("name") == 0, exact).otherwise(terms[0])
    total = reduce(lambda a, b: a + b, terms)
    # Household members share birth day (twins), phone and address: agreement there says "same household", so
    # names that neither agree, sound alike nor are the same characters swapped are never linked
    # automatically (at most a possible match).
    # The same identifier (an ID number whose check character is wrong, another system's number) vouches
    # for a name with a typo (twins carry different numbers); not for a different name (a mother's number
    # written on her child's record).
    typo_vouched = (F.col("name") == 2) & (F.col("id") == 0)
    unlike_names = ((F.col("name").isNull() | (F.col("name") >= 2)) & ~F.coalesce("name_swapped", F.lit(False))
                    & ~F.coalesce(typo_vouched, F.lit(False)))
    total = F.when(unlike_names, F.least(total, F.lit(link_threshold - 0.01))).otherwise(total)
    # Two different valid ID numbers are two residents (twins, namesakes): never a match, whatever else agrees.
    distinct_ids = F.col("id_valid_l") & F.col("id_valid_r") & (F.col("id18_l") != F.col("id18_r"))
    return scored.withColumn("score", F.when(distinct_ids, F.lit(-99.0)).otherwise(total))


def evidence(levels: DataFrame) -> DataFrame:
    """Adds ``evidence``: each comparison's level by name (``name=sound birth=near phone=- ...``; ``-`` = a
    side is missing), what a reviewer reads to see which fields agree and which do not."""
    parts = []
    for comparison, spec in empi_config()["comparisons"].items():
        level_name = F.element_at(F.array(*[F.lit(n) for n in spec["levels"]]), F.col(comparison) + 1)
        parts.append(F.concat(F.lit(f"{comparison}="), F.coalesce(level_name, F.lit("-"))))
    return levels.withColumn("evidence", F.concat_ws(" ", *parts))


def name_frequencies(features: DataFrame, only: DataFrame | None = None) -> DataFrame:
    """Share of records carrying each normalised name (the u of an exact-name agreement on that name).

    ``only``: just the names in this frame's ``name_n`` (a day's names: a broadcast filter, not the county's
    whole name list).
    """
    total = features.count()
    named = features.where(F.col("name_n").isNotNull()).select("name_n")
    if only is not None:
        named = named.join(F.broadcast(only.select("name_n").distinct()), "name_n", "left_semi")
    return (named.groupBy("name_n").count()
            .select("name_n", (F.col("count") / F.lit(max(total, 1))).alias("frequency")))


def random_pair_levels(features: DataFrame, pairs: int, seed: int) -> DataFrame:
    """Levels of about ``pairs`` record pairs drawn at random: two independent samples of records crossed (the
    samples carry their features, so the county's records are scanned once, not joined to the pairs)."""
    total = features.count()
    fraction = min(1.0, math.sqrt(pairs) / max(total, 1))
    left = _side(features.sample(fraction=fraction, seed=seed), "l")
    right = _side(features.sample(fraction=fraction, seed=seed + 1), "r")
    crossed = left.crossJoin(right).where(F.col("record_id_l") != F.col("record_id_r"))
    return _compared(crossed.withColumn("id_l", F.col("record_id_l")).withColumn("id_r", F.col("record_id_r")))


def estimate_params(features: DataFrame, blocked_levels: DataFrame, random_pair_count: int = 1_000_000,
                    iterations: int = 30, seed: int = 7) -> Params:
    """m and u from the county's own records, the Fellegi–Sunter way.

    u: how often each level occurs between random pairs of records (almost all of them different residents).
    m: expectation-maximisation over the candidate pairs with u fixed, each comparison conditionally
    independent and a missing value simply not counted. Only level-pattern counts (a few hundred rows) leave
    Spark; the pairs stay distributed.
    """
    priors = prior_params()
    names = list(priors)
    sizes = {c: len(priors[c]["m"]) for c in names}
    at_random = random_pair_levels(features, random_pair_count, seed)
    counts = at_random.agg(*[F.sum((F.col(c) == lv).cast("int")).alias(f"{c}_{lv}")
                             for c in names for lv in range(sizes[c])]).first().asDict()
    u = {}
    for c in names:
        seen = [counts[f"{c}_{lv}"] or 0 for lv in range(sizes[c])]
        u[c] = [(n + 0.5) / (sum(seen) + 0.5 * sizes[c]) for n in seen]     # smoothed: no level is impossible
    patterns = [(tuple(r[c] for c in names), r["count"]) for r in blocked_levels.groupBy(*names).count().collect()]
    total = sum(n for _, n in patterns) or 1
    m = {c: list(priors[c]["m"]) for c in names}
    share = 0.1
    for _ in range(iterations):
        matched = 0.0
        numerator = {c: [0.0] * sizes[c] for c in names}
        for pattern, n in patterns:
            pm, pu = share, 1.0 - share
            for c, level in zip(names, pattern, strict=True):
                if level is not None:
                    pm *= m[c][level]
                    pu *= u[c][level]
            weight = n * pm / (pm + pu)
            matched += weight
            for c, level in zip(names, pattern, strict=True):
                if level is not None:
                    numerator[c][level] += weight
        share = min(max(matched / total, 1e-6), 1 - 1e-6)
        m = {c: [(x + 0.5) / (sum(numerator[c]) + 0.5 * sizes[c]) for x in numerator[c]] for c in names}
    return {c: {"m": m[c], "u": u[c]} for c in names}
