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

FEATURES = (
    "record_id",
    "name_n",
    "pinyin",
    "id18",
    "id17",
    "id_valid",
    "birth",
    "sex",
    "phone_n",
    "township",
    "village",
    "house_no",
    "address_n",
    "birth_stated",
)


@cache
def empi_config() -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / "empi.yaml").read_text(encoding="utf-8"))


def candidate_pairs(
    left: DataFrame, right: DataFrame, rules: list[list[str]], max_block: int, same_side: bool, few_left: bool = False
) -> DataFrame:
    """(id_l, id_r) pairs agreeing on all columns of at least one rule; id_l < id_r when both sides match.

    Each record carries one block key per rule it can be blocked on (rule number + its values), so every rule
    is served by one join of the keys instead of one join per rule. ``few_left``: ``left`` is a day's records
    against the whole registry; the registry is first narrowed to the blocks those records fall in (a
    broadcast filter, no shuffle of the county).
    """
    lhs = _block_keys(left, rules).withColumnRenamed("record_id", "id_l")
    rhs = _block_keys(right, rules).withColumnRenamed("record_id", "id_r")
    if few_left:
        rhs = rhs.join(F.broadcast(lhs.select("_block").distinct()), "_block", "left_semi")
    rhs = rhs.withColumn("_n", F.count("*").over(Window.partitionBy("_block"))).where(F.col("_n") <= max_block)
    keep = (F.col("id_l") < F.col("id_r")) if same_side else (F.col("id_l") != F.col("id_r"))
    return lhs.join(rhs.drop("_n"), "_block").where(keep).select("id_l", "id_r").distinct()


def _block_keys(records: DataFrame, rules: list[list[str]]) -> DataFrame:
    """record_id, _block: one row per rule whose columns the record all has (rule number and the values)."""
    keys = [
        F.when(
            reduce(lambda a, b: a & b, [F.col(c).isNotNull() for c in rule]),
            F.concat_ws("\u0001", F.lit(str(number)), *[F.col(c).cast("string") for c in rule]),
        )
        for number, rule in enumerate(rules)
    ]
    return records.select("record_id", F.explode(F.array(*keys)).alias("_block")).where(F.col("_block").isNotNull())


def records_to_compare(records: DataFrame, sample_share: float) -> DataFrame:
    """The records whose candidate pairs are compared: those without a valid ID number, plus (``_sampled``) a
    random ``sample_share`` of all records when m/u are to be estimated.

    Why: a record with a valid ID number belongs to that number's resident whatever its pairs say (a county
    has a few records without one in a hundred), so only records without one need scoring; an estimate also
    needs pairs of ID-carrying records (two with the same valid number are labelled matches), and m is
    estimated on the sample's pairs (the level-pattern shares EM works on barely move with the sample's size).
    One blocking and comparison pass serves both.
    """
    return records.withColumn("_sampled", F.rand(seed=11) < sample_share).where(~F.col("id_valid") | F.col("_sampled"))


def comparison_levels(pairs: DataFrame, features: DataFrame, broadcast: str | None = None) -> DataFrame:
    """Each pair with both records' features and one level column per comparison (NULL = not comparable).

    ``broadcast``: ``"pairs"`` (a day's pairs, sent to the features instead of shuffling every record to
    them) or ``"features"`` (a file's records, sent to the pairs instead of shuffling the pairs twice).
    """
    left, right = _side(features, "l"), _side(features, "r")
    if broadcast == "pairs":
        df = left.join(F.broadcast(pairs), F.col("id_l") == F.col("record_id_l"))
        df = right.join(F.broadcast(df), F.col("id_r") == F.col("record_id_r"))
    else:
        if broadcast == "features":
            left, right = F.broadcast(left), F.broadcast(right)
        df = pairs.join(left, F.col("id_l") == F.col("record_id_l")).join(right, F.col("id_r") == F.col("record_id_r"))
    return _compared(df)


def _side(features: DataFrame, side: str) -> DataFrame:
    """The features of one side of a pair, suffixed; an address that does not parse also as its character
    pairs, computed once per record rather than once per pair it is in."""
    grams = F.when(F.col("township").isNull(), _bigrams("address_n"))
    return features.select(*[F.col(c).alias(f"{c}_{side}") for c in FEATURES], grams.alias(f"grams_{side}"))


def _compared(df: DataFrame) -> DataFrame:
    """Level columns of pairs given as id_l, id_r and both records' features (suffixed _l and _r)."""

    def both(column: str) -> Column:
        return F.col(f"{column}_l").isNotNull() & F.col(f"{column}_r").isNotNull()

    def eq(column: str) -> Column:
        return F.col(f"{column}_l") == F.col(f"{column}_r")

    chars = (F.length("name_n_l") == F.length("name_n_r")) & (
        F.array_sort(F.split(F.col("name_n_l"), "")) == F.array_sort(F.split(F.col("name_n_r"), ""))
    )
    # one character off, dropped or added (two in a long alphabetic name), or the same characters reordered;
    # edit distances are only counted up to what a level asks (-1 beyond: no full distance matrix per pair)
    name_edits = F.levenshtein("name_n_l", "name_n_r", 2)
    shorter = F.least(F.length("name_n_l"), F.length("name_n_r"))
    # ... or one name inside the other (a given name or a surname left out: livia / liviaswetnam)
    within = (shorter >= 2) & (
        F.col("name_n_l").contains(F.col("name_n_r")) | F.col("name_n_r").contains(F.col("name_n_l"))
    )
    similar = chars | name_edits.between(0, 1) | ((name_edits == 2) & (shorter >= 9)) | within
    # share of the two addresses' character pairs they have in common (typos, a word split or left out)
    shared_grams = F.size(F.array_intersect("grams_l", "grams_r"))
    address_overlap = shared_grams / (F.size("grams_l") + F.size("grams_r") - shared_grams)
    swapped = (
        (F.month("birth_l") == F.dayofmonth("birth_r"))
        & (F.dayofmonth("birth_l") == F.month("birth_r"))
        & (F.year("birth_l") == F.year("birth_r"))
    )
    one_field = (
        (F.year("birth_l") == F.year("birth_r")).cast("int")
        + (F.month("birth_l") == F.month("birth_r")).cast("int")
        + (F.dayofmonth("birth_l") == F.dayofmonth("birth_r")).cast("int")
    ) == 2
    # only the year known: the desk wrote 1 January of it
    year_only = (F.year("birth_l") == F.year("birth_r")) & (
        (F.date_format("birth_l", "MMdd") == "0101") | (F.date_format("birth_r", "MMdd") == "0101")
    )
    # one pair of neighbouring digits swapped (19 81 for 19 18) is one slip, as one digit off is
    id_edits = F.levenshtein("id17_l", "id17_r", 2)
    id_slip = id_edits.between(0, 1) | (
        (id_edits == 2)
        & (F.length("id17_l") == F.length("id17_r"))
        & (F.array_sort(F.split("id17_l", "")) == F.array_sort(F.split("id17_r", "")))
    )
    return df.select(
        "id_l",
        "id_r",
        "name_n_l",
        # both valid ID numbers: the same one (labels a match) or two different ones (never a match)
        F.when(F.col("id_valid_l") & F.col("id_valid_r"), eq("id18")).alias("same_valid_id"),
        (F.col("birth_stated_l") & F.col("birth_stated_r")).alias("births_stated"),
        F.when(both("name_n"), F.when(eq("name_n"), 0).when(eq("pinyin"), 1).when(similar, 2).otherwise(3)).alias(
            "name"
        ),
        # the same characters in another order, or one dropped or added (白明 for 白永明): a clerk's slip,
        # never how twins' names differ (same length, one character apart)
        (
            both("name_n")
            & ~eq("name_n")
            & (chars | (name_edits == 1) & (F.length("name_n_l") != F.length("name_n_r")))
        ).alias("name_slip"),
        F.when(both("birth"), F.when(eq("birth"), 0).when(swapped | one_field | year_only, 1).otherwise(2)).alias(
            "birth"
        ),
        F.when(both("sex"), F.when(eq("sex"), 0).otherwise(1)).alias("sex"),
        F.when(both("id17"), F.when(eq("id17"), 0).when(id_slip, 1).otherwise(2)).alias("id"),
        F.when(
            both("phone_n"),
            F.when(eq("phone_n"), 0).when(F.levenshtein("phone_n_l", "phone_n_r", 1) >= 0, 1).otherwise(2),
        ).alias("phone"),
        F.when(
            both("township") & both("village"),
            F.when(eq("township") & eq("village") & eq("house_no"), 0)
            .when(eq("township") & eq("village"), 1)
            .otherwise(2),
        )
        # an address that does not parse (another county's, an abbreviation): compared as text
        .when(
            F.col("township_l").isNull() & F.col("township_r").isNull() & both("address_n"),
            F.when(eq("address_n"), 0).when(address_overlap >= 0.6, 1).otherwise(2),
        )
        .alias("address"),
    )


def _bigrams(column: str) -> Column:
    """The distinct character pairs of a text, each as a 32-bit hash: intersecting integer arrays is several
    times cheaper than intersecting strings, and a collision among one address's few dozen pairs is
    negligible."""
    pairs = f"transform(sequence(1, greatest(length({column}) - 1, 1)), i -> hash(substring({column}, i, 2)))"
    return F.expr(f"array_distinct({pairs})")


Params = dict[str, dict[str, list[float]]]  # comparison -> {"m": [P(level | same)], "u": [P(level | different)]}


def prior_params() -> Params:
    """m and u as configured (used until a full run has estimated them on the county's own records)."""
    return {c: {"m": list(spec["m"]), "u": list(spec["u"])} for c, spec in empi_config()["comparisons"].items()}


def level_weights(params: Params) -> dict[str, list[float]]:
    return {
        name: [math.log2(m / u) for m, u in zip(spec["m"], spec["u"], strict=True)] for name, spec in params.items()
    }


def score(
    levels: DataFrame,
    params: Params,
    name_frequency: DataFrame,
    tf_floor: float,
    link_threshold: float,
    review_threshold: float,
) -> DataFrame:
    """Total match weight per pair; exact names weigh log2(m / frequency of that name) instead of log2(m/u)."""
    terms = []
    for comparison, values in level_weights(params).items():
        term = F.lit(0.0)
        for level, weight in enumerate(values):
            term = F.when(F.col(comparison) == level, F.lit(weight)).otherwise(term)
        terms.append(F.coalesce(term, F.lit(0.0)))
    scored = levels.join(F.broadcast(name_frequency), levels["name_n_l"] == name_frequency["name_n"], "left").drop(
        "name_n"
    )
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
    # Nor for a different name with the same birth date, when both records state it (a renamed or
    # misspelt resident; a child on a parent's number has its own birth date, or none but the number's).
    typo_vouched = (F.col("id") == 0) & ((F.col("name") == 2) | ((F.col("birth") == 0) & F.col("births_stated")))
    unlike_names = (
        (F.col("name").isNull() | (F.col("name") >= 2))
        & ~F.coalesce("name_slip", F.lit(False))
        & ~F.coalesce(typo_vouched, F.lit(False))
    )
    # The rule holds where names are reliable: where records of one resident rarely carry another name (m of
    # "different", estimated on the data being linked). Where they often do (names typed from handwriting,
    # heavily corrupted files), a name says little either way and the other fields decide.
    if params["name"]["m"][-1] <= empi_config()["thresholds"]["reliable_names_below"]:
        total = F.when(unlike_names, F.least(total, F.lit(link_threshold - 0.01))).otherwise(total)
    # Another name *and* another birth date, agreeing only on phone and address: another member of the
    # household, not a possible match for a reviewer to look at.
    household = (F.col("name") == 3) & (F.col("birth") == 2) & ~F.coalesce(F.col("id") == 0, F.lit(False))
    total = F.when(household, F.least(total, F.lit(review_threshold - 0.01))).otherwise(total)
    # Two different valid ID numbers are two residents (twins, namesakes): never a match, whatever else agrees.
    distinct_ids = ~F.col("same_valid_id")
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
    return named.groupBy("name_n").count().select("name_n", (F.col("count") / F.lit(max(total, 1))).alias("frequency"))


def random_pair_levels(features: DataFrame, pairs: int, seed: int) -> DataFrame:
    """Levels of about ``pairs`` record pairs drawn at random: two independent samples of records crossed (the
    samples carry their features, so the county's records are scanned once, not joined to the pairs)."""
    total = features.count()
    fraction = min(1.0, math.sqrt(pairs) / max(total, 1))
    left = _side(features.sample(fraction=fraction, seed=seed), "l")
    right = _side(features.sample(fraction=fraction, seed=seed + 1), "r")
    crossed = left.crossJoin(right).where(F.col("record_id_l") != F.col("record_id_r"))
    return _compared(crossed.withColumn("id_l", F.col("record_id_l")).withColumn("id_r", F.col("record_id_r")))


def estimate_params(
    features: DataFrame,
    blocked_levels: DataFrame,
    random_pair_count: int = 1_000_000,
    iterations: int = 30,
    seed: int = 7,
    min_labelled_pairs: int = 500,
    *,
    compared_records: int,
) -> Params:
    """m and u from the county's own records, the Fellegi–Sunter way.

    u: how often each level occurs between random pairs of records (almost all of them different residents).
    m: the records' own labels where they have them — two records carrying the same valid ID number are one
    resident, so how their names, birth dates, phones and addresses differ *is* m, whatever error model made
    them; expectation-maximisation over the candidate pairs (u fixed, each comparison conditionally
    independent, a missing value not counted) only for what such pairs cannot show (the ID comparison), or
    for everything when too few records carry an ID. EM alone takes household members (same phone, address,
    surname) for one resident and underrates every disagreement. Only level-pattern counts (a few hundred
    rows) leave Spark; the pairs stay distributed. ``compared_records``: how many records ``blocked_levels``
    pairs with everyone (the matches' share among all pairs is counted against them).
    """
    priors = prior_params()
    names = list(priors)
    sizes = {c: len(priors[c]["m"]) for c in names}
    at_random = random_pair_levels(features, random_pair_count, seed)
    counts = (
        at_random.agg(
            *[F.sum((F.col(c) == lv).cast("int")).alias(f"{c}_{lv}") for c in names for lv in range(sizes[c])]
        )
        .first()
        .asDict()
    )
    u_seen, floor = {}, {}
    for c in names:
        seen = [counts[f"{c}_{lv}"] or 0 for lv in range(sizes[c])]
        floor[c] = 0.5 / (sum(seen) + 0.5 * sizes[c])
        u_seen[c] = [(n + 0.5) / (sum(seen) + 0.5 * sizes[c]) for n in seen]  # smoothed: no level is impossible
    # the candidate pairs' level patterns, split by whether both records carry one valid ID number: the
    # labelled matches (m where labels exist) and EM's input come from one pass over the pairs
    labelled_patterns = [
        (tuple(r[c] for c in names), r["count"], r["same_valid_id"] is True)
        for r in blocked_levels.groupBy(*names, "same_valid_id").count().collect()
    ]
    labelled = {}
    if sum(n for _, n, same in labelled_patterns if same) >= min_labelled_pairs:
        for i, c in enumerate(names):
            if c != "id":
                seen = [sum(n for p, n, same in labelled_patterns if same and p[i] == lv) for lv in range(sizes[c])]
                labelled[c] = [(n + 0.5) / (sum(seen) + 0.5 * sizes[c]) for n in seen]
    merged: dict[tuple, int] = {}
    for pattern, n, _ in labelled_patterns:
        merged[pattern] = merged.get(pattern, 0) + n
    patterns = list(merged.items())
    total = sum(n for _, n in patterns) or 1

    def expectation_maximisation(u: dict[str, list[float]]) -> tuple[dict[str, list[float]], float]:
        """m, and how many of the candidate pairs are matches, with u fixed."""
        m = {c: list(labelled.get(c, priors[c]["m"])) for c in names}
        share, matched = 0.1, 0.0
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
            m = {
                c: labelled.get(c) or [(x + 0.5) / (sum(numerator[c]) + 0.5 * sizes[c]) for x in numerator[c]]
                for c in names
            }
        return m, matched

    m, matched = expectation_maximisation(u_seen)
    # Random pairs hold matches too: negligible in a county (two records are one resident about once in a million
    # pairs), not in a small file full of duplicates (FEBRL3: one pair in two thousand), where they inflate u of
    # every agreeing level (an identical identifier seemed a thousand times commoner among different people than
    # it is). Take them out, u = (u_seen − λ·m) / (1 − λ), λ = the share of matches among all the pairs the
    # compared records make (EM's matched candidate pairs; blocking misses few), then estimate m again.
    every_pair = max(compared_records * (features.count() - 1), 1)
    share_at_random = min(matched / every_pair, 0.5)
    u = {
        c: [max((seen - share_at_random * m[c][lv]) / (1 - share_at_random), floor[c]) for lv, seen in enumerate(u_c)]
        for c, u_c in u_seen.items()
    }
    u = {c: [x / sum(levels) for x in levels] for c, levels in u.items()}
    m, _ = expectation_maximisation(u)
    return {c: {"m": m[c], "u": u[c]} for c in names}
