"""Decide who each record without a valid ID number is, from its scored candidate pairs (pure stages).

Records of one resident must never compete with each other. So the records without an ID that agree strongly
with each other (score >= link) are first clustered transitively into one *unidentified person*; each such
person then weighs only **residents** (anchored master ids and ID-number groups) against each other:

- link: the best resident scores >= link and the next *different resident* is at least the margin lower;
- review: the best resident scores >= review (ambiguous or weak): a possible match, kept apart until decided;
  with no resident at all, a weakly similar other unidentified person is the candidate to review;
- new: nothing clears review; the cluster's records share one new master id.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

RECORD_GROUP = "R|"  # a candidate that is itself a record without a valid ID number (not a resident)


def union_find(edges: list[tuple[str, str]]) -> dict[str, str]:
    """Connected components; an anchored resident (``M…``) wins as the root, else the smallest key."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb.startswith("M") and not ra.startswith("M"):
                parent[ra] = rb
            elif ra.startswith("M") and not rb.startswith("M"):
                parent[rb] = ra
            else:
                parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def candidate_edges(scored: DataFrame, groups: DataFrame, forbidden: DataFrame, review: float) -> DataFrame:
    """Scored pairs worth a look (>= review), each with the group its candidate belongs to, minus forbidden
    (record, resident) pairs. ``groups``: id_r -> group (a master id, ``ID|`` + number, or ``R|`` + record).

    A record a steward took out of a resident stays on its own: it neither clusters with nor is offered as the
    candidate of other records without an ID (they may lead straight back to that resident).
    """
    forbidden = F.broadcast(forbidden)  # a steward's decisions: a handful
    loners = forbidden.select("id_l").distinct()
    loner_groups = loners.select(F.concat(F.lit(RECORD_GROUP), "id_l").alias("group"))
    return (
        scored.where(F.col("score") >= review)
        .join(groups, "id_r")
        .join(forbidden, ["id_l", "group"], "left")
        .where(F.col("_forbidden").isNull())
        .drop("_forbidden")
        .join(F.broadcast(loner_groups), "group", "left_anti")
        .join(F.broadcast(loners.withColumn("_loner", F.lit(True))), "id_l", "left")
        .where(F.col("_loner").isNull() | ~F.col("group").startswith(RECORD_GROUP))
        .drop("_loner")
    )


def unidentified_people(spark: SparkSession, edges: DataFrame, records: DataFrame, link: float) -> DataFrame:
    """record_id -> person (``R|`` + its smallest record id): records without ID clustered by strong links.

    The strong links among records without an ID are few (a county has a few in a hundred such records):
    union-find on the driver.
    """
    strong = (
        edges.where(F.col("group").startswith(RECORD_GROUP) & (F.col("score") >= link)).select("id_l", "id_r").collect()
    )
    roots = union_find([(RECORD_GROUP + r.id_l, RECORD_GROUP + r.id_r) for r in strong])
    clustered = spark.createDataFrame(
        [(k[len(RECORD_GROUP) :], v) for k, v in roots.items()] or [("", "")], "record_id string, person string"
    )
    return (
        records.select("record_id")
        .join(F.broadcast(clustered) if len(roots) < 1_000_000 else clustered, "record_id", "left")
        .select("record_id", F.coalesce("person", F.concat(F.lit(RECORD_GROUP), "record_id")).alias("person"))
    )


def decide_people(edges: DataFrame, people: DataFrame, link: float, margin: float) -> DataFrame:
    """One decision per unidentified person, shared by its records.

    Returns record_id, root (the resident's group on a link, else the person), decision (link | review |
    new), score (the best resident's), candidate (group of the resident or other person it may be),
    candidate_record (the record that scored best), evidence (the comparison levels of that pair), second
    (the best *other* resident's score).
    """
    # records without a valid ID number: a few in a hundred of a county's, but a file may be all of them, so
    # Spark chooses the join (a forced broadcast measured no faster)
    person_of = people.select(F.col("record_id").alias("id_l"), "person")
    other_person = people.select(F.col("record_id").alias("id_r"), F.col("person").alias("_other"))
    with_person = edges.join(person_of, "id_l")
    is_record = F.col("group").startswith(RECORD_GROUP)
    # a record candidate stands for its whole person; the person's own records are no candidates at all
    resolved = (
        with_person.join(other_person, "id_r", "left")
        .withColumn("group", F.when(is_record, F.col("_other")).otherwise(F.col("group")))
        .where(F.col("group") != F.col("person"))
        .drop("_other")
    )
    best_pair = F.struct(F.col("score"), F.col("id_r"))
    per_candidate = resolved.groupBy("person", "group").agg(
        F.max("score").alias("score"),
        F.max_by("id_r", best_pair).alias("candidate_record"),
        F.max_by("evidence", best_pair).alias("evidence"),
    )
    order = Window.partitionBy("person").orderBy(F.col("score").desc(), "group")
    residents = per_candidate.where(~F.col("group").startswith(RECORD_GROUP)).withColumn(
        "_rank", F.row_number().over(order)
    )
    best = residents.where("_rank = 1").drop("_rank")
    second = residents.where("_rank = 2").select("person", F.col("score").alias("second"))
    # with no resident in sight, a weakly similar other person is still worth a reviewer's look
    others = (
        per_candidate.where(F.col("group").startswith(RECORD_GROUP))
        .withColumn("_rank", F.row_number().over(order))
        .where("_rank = 1")
        .drop("_rank")
        .join(best.select("person"), "person", "left_anti")
    )
    chosen = best.unionByName(others)
    clear = F.col("second").isNull() | (F.col("score") - F.col("second") >= margin)
    decisions = chosen.join(second, "person", "left").withColumn(
        "decision",
        F.when(~F.col("group").startswith(RECORD_GROUP) & (F.col("score") >= link) & clear, "link").otherwise("review"),
    )
    return people.join(decisions, "person", "left").select(
        "record_id",
        F.when(F.col("decision") == "link", F.col("group")).otherwise(F.col("person")).alias("root"),
        F.coalesce("decision", F.lit("new")).alias("decision"),
        "score",
        F.col("group").alias("candidate"),
        "candidate_record",
        "evidence",
        "second",
    )
