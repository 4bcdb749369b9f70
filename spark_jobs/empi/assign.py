"""Who each record is, once its pairs are decided, and what a run must look at again (pure stages).

A run is block -> compare -> score (match.py) -> decide (decide.py) -> assign (here). These are functions of
DataFrames only: no Delta reads or writes, no checkpoints, no counts; identity.py is the shell that reads the
lake, cuts plans and writes the results.

- ``registry_changes``: which silver records are new, changed or gone since the registry was written, so a
  run re-matches only those (a day's records, not the county);
- ``known_ids`` / ``candidate_groups``: the resident each candidate record belongs to, so records of one
  resident count as one candidate and a valid ID number joins the resident already holding it;
- ``forbidden_pairs``: a steward's separations, so no run links those again;
- ``assignments``: each record's master id and the decision behind it;
- ``affected_residents``: the residents whose golden record has to be rebuilt after a run.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.settings import get_settings
from spark_jobs.empi.decide import RECORD_GROUP

ID_GROUP = "ID|"  # a group of records sharing one valid ID number (a resident, known or not yet)
KNOWN_IDS_SCHEMA = "root string, _known string"


def master_id_of(key: Any) -> Any:
    """M + 16 hex of a salted hash: stable, and does not reveal the ID number it may be derived from."""
    return F.concat(F.lit("M"), F.substring(F.sha2(F.concat(F.lit(get_settings().empi_salt), key), 256), 1, 16))


def id_group() -> Column:
    """``ID|`` + the ID number of a record with a valid one, else NULL."""
    return F.when(F.col("id_valid"), F.concat(F.lit(ID_GROUP), "id18"))


def resolved_master(group: str, known: str) -> Column:
    """Master id of a group: an anchored master id as it is, a known ID number's resident, else the salted
    hash of the ID number (``ID|``) or of the person's first record (``R|`` -> ``LOCAL|``)."""
    col = F.col(group)
    return (
        F.when(col.startswith("M"), col)
        .when(F.col(known).isNotNull(), F.col(known))
        .when(col.startswith(ID_GROUP), master_id_of(col))
        .when(col.startswith(RECORD_GROUP), master_id_of(F.concat(F.lit("LOCAL|"), F.substring(col, 3, 10_000))))
    )


def registry_changes(records: DataFrame, registry: DataFrame) -> DataFrame:
    """record_id, change (``new`` | ``changed`` | ``deleted``), deleted: silver records whose identity fields
    differ from the registry's by fingerprint, and registry records silver no longer has.

    Why: only these are normalised and matched again; every other record keeps its master id, so a day costs
    what the day brings. One narrow full join of (record, fingerprint) pairs.
    """
    change = F.when(F.col("fingerprint").isNull(), "deleted").when(F.col("_old").isNull(), "new").otherwise("changed")
    return (
        records.select("record_id", "fingerprint")
        .join(registry.select("record_id", F.col("fingerprint").alias("_old")), "record_id", "full")
        .where(~F.col("fingerprint").eqNullSafe(F.col("_old")))
        .select("record_id", change.alias("change"), F.col("fingerprint").isNull().alias("deleted"))
    )


def known_ids(anchored: DataFrame, pins: DataFrame, only_ids_of: DataFrame | None = None) -> DataFrame:
    """root (``ID|`` + number) -> _known (the master id): ID numbers whose resident is already known, from
    the anchored records (with master ids) that are not pinned by hand.

    Why: a record carrying a valid ID number belongs to the resident that already holds that number, whatever
    its pairs say. Manual pins (``pins``: record_id) are left out: a steward may have split one number's
    records, and the pin must not drag the rest along. ``only_ids_of``: just the numbers of these records (a
    day's), a broadcast filter instead of grouping the county. Two masters on one number (a split): the
    smallest.
    """
    known = anchored.where("id_valid").join(pins, "record_id", "left_anti")
    if only_ids_of is not None:
        known = known.join(F.broadcast(only_ids_of.where("id_valid").select("id18").distinct()), "id18", "left_semi")
    return known.groupBy(F.concat(F.lit(ID_GROUP), "id18").alias("root")).agg(F.min("master_id").alias("_known"))


def fresh_groups(fresh: DataFrame, known: DataFrame) -> DataFrame:
    """id_r -> group for the records being matched: the known resident of its ID number, else ``ID|`` + its
    number if valid, else ``R|`` + its record id.

    Why: as a candidate, a record stands for its resident; a record without an ID (``R|``) is no resident at
    all: it is clustered with its like and never competes with residents.
    """
    return (
        fresh.withColumn("root", id_group())
        .join(known, "root", "left")
        .select(
            F.col("record_id").alias("id_r"),
            F.coalesce("_known", "root", F.concat(F.lit(RECORD_GROUP), "record_id")).alias("group"),
        )
    )


def candidate_groups(fresh: DataFrame, known: DataFrame, anchored: DataFrame | None) -> DataFrame:
    """id_r -> group for every candidate record: an anchored record's master id, else ``fresh_groups``.

    Why: decide.py weighs residents against each other, so each candidate record must name its resident.
    """
    groups = fresh_groups(fresh, known)
    if anchored is None:
        return groups
    return anchored.select(F.col("record_id").alias("id_r"), F.col("master_id").alias("group")).unionByName(groups)


def forbidden_pairs(constraints: DataFrame) -> DataFrame:
    """id_l, group, _forbidden: the (record, master id) pairs a steward separated (``forbid`` constraints).

    Why: a manual separation is a constraint every later run obeys; candidate_edges drops these pairs.
    """
    return constraints.where(F.col("kind") == "forbid").select(
        F.col("record_id").alias("id_l"), F.col("master_id").alias("group"), F.lit(True).alias("_forbidden")
    )


def assignments(fresh: DataFrame, decided: DataFrame, known: DataFrame) -> DataFrame:
    """The ``fresh`` records (all their columns) with master_id, decision (link | review | new | id_number),
    score, candidate (a master id), candidate_record, evidence, second.

    Why: turns groups into master ids. A record without an ID takes its decided root (the resident on a
    link, else its own person: a possible match keeps its own master id until someone decides); a record with
    a valid ID number takes its number's resident (``id_number``), known or new. The candidate is named by
    master id too, so a reviewer sees the resident, not an internal group. ``decided``: decide_people's
    output; ``known``: known_ids.
    """
    roots = (
        fresh.join(decided.select(F.col("record_id"), F.col("root").alias("_decided")), "record_id", "left")
        .withColumn("root", F.coalesce("_decided", id_group()))
        .drop("_decided")
    )
    known_candidates = known.select(F.col("root").alias("candidate"), F.col("_known").alias("_known_candidate"))
    return (
        roots.join(known, "root", "left")
        .join(decided.drop("root"), "record_id", "left")
        .join(known_candidates, "candidate", "left")
        .select(
            *fresh.columns,
            resolved_master("root", "_known").alias("master_id"),
            F.coalesce("decision", F.lit("id_number")).alias("decision"),
            "score",
            resolved_master("candidate", "_known_candidate").alias("candidate"),
            "candidate_record",
            "evidence",
            "second",
        )
    )


def affected_residents(
    decided: DataFrame, changes: DataFrame, registry: DataFrame, broadcast: bool = False
) -> DataFrame:
    """master_id of every resident whose golden record must be rebuilt: the residents this run's records now
    belong to, and the ones they (and the deleted records) belonged to before.

    Why: a golden record is built from all of a resident's records; only residents that gained or lost a
    record, or whose record changed, need a new one. ``decided``: this run's record_id -> master_id;
    ``changes``: registry_changes; ``registry``: the previous run's record_id -> master_id. ``broadcast``: the
    touched records are few (a day's), broadcast them to the registry.
    """
    touched = decided.select("record_id").unionByName(changes.select("record_id"))
    before = registry.join(F.broadcast(touched) if broadcast else touched, "record_id", "left_semi")
    return decided.select("master_id").unionByName(before.select("master_id")).distinct()
