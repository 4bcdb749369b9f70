"""Identity management: master ids, the cross-reference (PIX) table, review queue, golden records, manual
link/unlink/merge/unmerge with an append-only event log.

A run matches only new and changed person records against the registry (``full`` re-matches everything):
 1. a record with a valid ID number joins the resident of that ID (deterministic);
 2. a record without one is scored against its candidates (match.py); records without an ID that agree
    strongly are one person (clustered transitively), and that person weighs only residents: the best wins
    when it clears the link threshold by the ambiguity margin over the next *different* resident, a possible
    match goes to the review queue, else a new person (decide.py). Two different valid ID numbers never
    score as a match, so twins with their own IDs can never end up together.
Master ids are salted hashes of the resident's ID number (or of its first record), so they are stable across
runs; records whose identity did not change keep theirs. Manual decisions are constraints every later run
obeys: an assignment pins a record to a master, a separation forbids a record/master pair.

This module is the I/O shell: Delta reads and writes, checkpoints, counts that choose broadcasts. The stages
themselves are pure functions of DataFrames: block, compare, score (match.py), decide (decide.py), assign and
the registry diff (assign.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.settings import get_settings
from core.spark import read_delta
from spark_jobs.empi.assign import (
    KNOWN_IDS_SCHEMA,
    affected_residents,
    assignments,
    candidate_groups,
    forbidden_pairs,
    known_ids,
    master_id_of,
    registry_changes,
)
from spark_jobs.empi.decide import candidate_edges, decide_people, unidentified_people
from spark_jobs.empi.match import (
    FEATURES,
    Params,
    candidate_pairs,
    comparison_levels,
    empi_config,
    estimate_params,
    evidence,
    name_frequencies,
    prior_params,
    records_to_compare,
    score,
)
from spark_jobs.empi.normalize import normalize_records
from spark_jobs.standardize import silver_path

IDENTITY_COLUMNS = ("name", "sex_code", "birth_date", "id_number", "phone", "address")
# Up to this many records matched against known residents, their blocks are broadcast (a day's records).
INCREMENTAL_BROADCAST_LIMIT = 200_000
# Up to this many candidate pairs, the pairs go to the records' features (broadcast) rather than the reverse.
PAIR_BROADCAST_LIMIT = 100_000
# What a decision carries besides the master id: its weight, the best candidate's master id and record, the
# comparison levels of that pair, the runner-up resident's weight.
DECISION_DETAIL = {
    "score": "double",
    "candidate": "string",
    "candidate_record": "string",
    "evidence": "string",
    "second": "double",
}


def empi_path(table: str) -> str:
    return get_settings().lake_path("empi", table)


def person_records(spark: SparkSession) -> DataFrame | None:
    """Every silver person record as an EMPI record (record_id = source_system|local_patient_id)."""
    person = read_delta(spark, silver_path("person"))
    if person is None:
        return None
    return person.select(
        F.concat_ws("|", "source_system", "local_patient_id").alias("record_id"),
        "source_system",
        "local_patient_id",
        *IDENTITY_COLUMNS,
        "source_updated_at",
        F.sha2(
            F.concat_ws("\u0001", *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in IDENTITY_COLUMNS]), 256
        ).alias("fingerprint"),
    )


@dataclass(frozen=True)
class EmpiReport:
    records: int
    matched: int  # records (re)matched in this run
    linked: int  # of those, joined to an existing/other resident
    review: int  # records in the review queue (possible matches awaiting a decision)
    masters: int  # residents (distinct master ids) after the run
    seconds: float


def _constraints(spark: SparkSession) -> DataFrame:
    found = read_delta(spark, empi_path("constraints"))
    if found is None:
        return spark.createDataFrame([], "record_id string, kind string, master_id string, event_id string")
    return found


def model_params(spark: SparkSession) -> Params:
    """m/u of the last full run (estimated on the county's records), else the configured priors — also when
    the comparisons have changed since (another level added): the next full run estimates them again."""
    stored = Path(empi_path("model.json"))
    priors = prior_params()
    if not stored.exists():
        return priors
    params = json.loads(stored.read_text(encoding="utf-8"))
    shape = {c: len(p["m"]) for c, p in params.items()}
    return params if shape == {c: len(p["m"]) for c, p in priors.items()} else priors


# the stages of match_records whose end a caller may time (without an estimate, the comparison ends unnoticed
# and its seconds count with the decision)
STAGE_COMPARED = "blocked and compared, m and u estimated"
STAGE_DECIDED = "scored and decided"


def match_records(
    spark: SparkSession,
    fresh: DataFrame,
    anchored: DataFrame | None,
    params: Params | None = None,
    estimate: bool = False,
    step: Callable[..., None] = lambda done, stage=None: None,
) -> tuple[DataFrame, Params]:
    """Assign master ids to ``fresh`` records (normalised features), given ``anchored`` ones with master ids.

    ``estimate``: first estimate m/u on these records (a full run over enough of them). Returns (assignments:
    the records with master_id, decision and DECISION_DETAIL; the m/u used). A possible match (decision
    ``review``) keeps its own master id until someone decides; ``candidate`` is the master id of the resident
    it may be, ``candidate_record`` that resident's best-matching record, ``evidence`` their comparison levels.
    ``step`` hears each stage's end: a message, and the stage's name (``STAGE_COMPARED``, ``STAGE_DECIDED``).

    The I/O shell around the pure stages block (candidate_pairs) -> compare (comparison_levels) -> score
    (score, evidence) -> decide (candidate_edges, unidentified_people, decide_people) -> assign
    (assignments): it reads the constraints, cuts plans (checkpoints), counts to choose broadcasts.
    """
    config = empi_config()
    thresholds = config["thresholds"]
    constraints = _constraints(spark)
    # cut the plans: both sides are read by every blocking rule and both comparison joins
    fresh = fresh.localCheckpoint()
    total = fresh.count()
    incremental = anchored is not None and total <= INCREMENTAL_BROADCAST_LIMIT
    everyone = fresh
    if anchored is not None:
        everyone = fresh.unionByName(anchored.drop("master_id"))
        if not incremental:  # every blocking rule and both comparison joins read it whole
            everyone = everyone.localCheckpoint()
    # block: the records without a valid ID number (and, for an estimate, a sample of all) against everyone
    sample_share = min(1.0, config["estimate_sample_records"] / max(total, 1)) if estimate else 0.0
    compared = records_to_compare(fresh, sample_share).localCheckpoint()
    # a day's records against the registry are few, and so are a county's records without an ID against the
    # county; a file whose records mostly go unidentified is not (it is most of the right side: narrowing
    # that to the left side's blocks would not narrow it)
    compared_count = compared.count()
    few = compared_count <= INCREMENTAL_BROADCAST_LIMIT and (anchored is not None or compared_count * 4 <= total)
    pairs = candidate_pairs(
        compared, everyone, config["blocking"], config["max_block_size"], same_side=False, few_left=few
    ).localCheckpoint()
    pair_count = pairs.count()
    # compare
    if pair_count <= PAIR_BROADCAST_LIMIT:
        broadcast = "pairs"
    elif anchored is None and total <= INCREMENTAL_BROADCAST_LIMIT:
        broadcast = "features"  # a file matched on its own: its records are fewer than their pairs
    else:
        broadcast = None
    all_levels = comparison_levels(pairs, everyone, broadcast).persist()
    if estimate:
        sampled = compared.where("_sampled").select(F.col("record_id").alias("id_l"))
        params = estimate_params(
            everyone, all_levels.join(_small(sampled), "id_l", "left_semi"), compared_records=sampled.count()
        )
        step("m and u estimated on the records' own pairs", stage=STAGE_COMPARED)
    unidentified = compared.where(~F.col("id_valid"))
    without_id = unidentified.select(F.col("record_id").alias("id_l"))
    levels = all_levels.join(_small(without_id), "id_l", "left_semi")
    # score
    params = params or model_params(spark)
    frequencies = name_frequencies(everyone, only=unidentified if few else None)
    scored = evidence(
        score(levels, params, frequencies, thresholds["tf_adjust_floor"], thresholds["link"], thresholds["review"])
    )
    # the resident each candidate belongs to
    if anchored is not None:
        pins = constraints.where("kind = 'assign'").select("record_id")
        known = known_ids(anchored, pins, only_ids_of=fresh if incremental else None).localCheckpoint()
    else:
        known = spark.createDataFrame([], KNOWN_IDS_SCHEMA)
    groups = candidate_groups(fresh, known, anchored)
    # decide
    edges = candidate_edges(scored, groups, forbidden_pairs(constraints), thresholds["review"]).persist()
    people = unidentified_people(spark, edges, unidentified, thresholds["link"])
    decided = decide_people(edges, people, thresholds["link"], thresholds["ambiguity_margin"]).persist()
    step(
        f"{decided.count():,} records without a valid ID number scored ({pair_count:,} candidate pairs compared, "
        f"{decided.where('score IS NOT NULL').count():,} records with a candidate)",
        stage=STAGE_DECIDED,
    )
    # assign (the records carry their features through: callers keep them, no second join of the county's)
    assigned = assignments(fresh, decided, known).localCheckpoint()
    edges.unpersist()
    all_levels.unpersist()
    decided.unpersist()
    return assigned, params


def run_empi(spark: SparkSession, full: bool = False, progress: Callable[[str], None] | None = None) -> EmpiReport:
    """Match new and changed silver person records against the registry; keep everything else as it is.

    Only the new and changed records are normalised and scored (the registry keeps every record's features),
    and only the residents they touch get a new golden record, so a day costs what the day brings plus a few
    scans of the county, not a re-match of it. The registry is written last: a run that stops half-way is
    simply repeated by the next one. ``progress`` hears each step's end.
    """
    started = datetime.now()

    def step(done: str, stage: str | None = None) -> None:
        if progress:
            progress(f"{done} ({(datetime.now() - started).total_seconds():.1f} s)")

    records = person_records(spark)
    if records is None:
        raise RuntimeError("silver.person is empty: run `./drc silver` first")
    lineage = ("fingerprint", "source_updated_at", "local_patient_id")
    registry = None if full else _pinned(spark, empi_path("records"))  # this run overwrites it
    if registry is not None and not set(FEATURES) <= set(registry.columns):
        step("the registry predates today's comparison features: every record is matched again")
        registry = None
    if registry is None:
        changed_records, unchanged, differing = records, None, None
    else:
        differing = registry_changes(records, registry).localCheckpoint()
        changed_records = records.join(
            _small(differing.where("NOT deleted").select("record_id")), "record_id", "left_semi"
        )
        unchanged = registry.join(_small(differing.select("record_id")), "record_id", "left_anti")
    changed = normalize_records(changed_records, keep=lineage).localCheckpoint()
    step(f"{changed.count():,} new or changed records normalised")
    feature_columns = changed.columns
    pinned = _constraints(spark).where("kind = 'assign'").select("record_id", F.col("master_id").alias("pinned"))
    everyone = changed if unchanged is None else changed.unionByName(unchanged.select(*feature_columns))
    pinned_rows = (
        everyone.join(F.broadcast(pinned), "record_id").withColumnRenamed("pinned", "master_id").localCheckpoint()
    )
    fresh = changed.join(F.broadcast(pinned), "record_id", "left_anti")
    kept = unchanged.join(F.broadcast(pinned), "record_id", "left_anti") if unchanged is not None else None
    if kept is not None:  # records still on their own may belong to a resident who only arrived now
        loose = _loose_records_near(kept, fresh)
        fresh = fresh.unionByName(loose.select(*feature_columns)).localCheckpoint()
        kept = kept.join(_small(loose.select("record_id")), "record_id", "left_anti")
        step(f"{loose.count():,} unclaimed records near them gathered")
    anchored = pinned_rows if kept is None else kept.select(*feature_columns, "master_id").unionByName(pinned_rows)
    matched = fresh.count()
    estimate = registry is None and matched >= empi_config()["estimate_min_records"]
    assigned, params = match_records(
        spark, fresh, anchored if kept is not None or pinned_rows.count() else None, estimate=estimate, step=step
    )
    if estimate:
        Path(empi_path("model.json")).parent.mkdir(parents=True, exist_ok=True)
        Path(empi_path("model.json")).write_text(json.dumps(params, indent=1), encoding="utf-8")
    now = F.lit(datetime.now().astimezone()).cast("timestamp")
    manual = pinned_rows.select(
        *feature_columns,
        "master_id",
        F.lit("manual").alias("decision"),
        *[F.lit(None).cast(t).alias(c) for c, t in DECISION_DETAIL.items()],
    )
    decided = assigned.unionByName(manual).withColumn("matched_at", now)  # assigned is checkpointed
    step(f"{matched:,} records matched")
    new_registry = decided if kept is None else decided.unionByName(kept.select(*decided.columns))
    update_silver_master_ids(spark, decided, kept)
    step("master ids written to silver person")
    old_golden = None if registry is None else _pinned(spark, empi_path("golden"))
    if old_golden is None:
        golden = golden_records(new_registry, records)
    else:
        few_touched = decided.count() + differing.count() <= INCREMENTAL_BROADCAST_LIMIT
        affected = affected_residents(decided, differing, registry, broadcast=few_touched).localCheckpoint()
        members = new_registry.join(_small(affected), "master_id", "left_semi").localCheckpoint()
        their_records = records.join(_small(members.select("record_id")), "record_id", "left_semi")
        golden = old_golden.join(_small(affected), "master_id", "left_anti").unionByName(
            golden_records(members, their_records)
        )
    golden.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(empi_path("golden"))
    step("golden records written")
    review_queue = new_registry.where("decision = 'review'").select(
        "record_id",
        "candidate",
        "candidate_record",
        "evidence",
        "score",
        "second",
        F.col("matched_at").alias("queued_at"),
    )
    review_queue.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        empi_path("review_queue")
    )
    new_registry.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(empi_path("records"))
    step("review queue and registry written")
    linked = decided.where(F.col("decision").isin("link", "id_number")).count()
    return EmpiReport(
        read_delta(spark, empi_path("records")).count(),
        matched,
        linked,
        read_delta(spark, empi_path("review_queue")).count(),
        read_delta(spark, empi_path("golden")).count(),
        round((datetime.now() - started).total_seconds(), 1),
    )


def _pinned(spark: SparkSession, path: str) -> DataFrame | None:
    """A Delta table as of its current version: it stays readable while this run overwrites it."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    version = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def _small(ids: DataFrame) -> DataFrame:
    """A day's worth of keys is broadcast to the county's rows; a rebuild's worth is joined the usual way."""
    return F.broadcast(ids) if ids.count() <= INCREMENTAL_BROADCAST_LIMIT else ids


def _loose_records_near(kept: DataFrame, fresh: DataFrame) -> DataFrame:
    """Registry records without a valid ID that no resident took (new, or awaiting review) and that share a
    block with this run's records: they are matched again, now that their resident may have turned up."""
    config = empi_config()
    loose = kept.where(F.col("decision").isin("new", "review") & ~F.col("id_valid"))
    near = candidate_pairs(
        fresh,
        loose,
        config["blocking"],
        config["max_block_size"],
        same_side=False,
        few_left=fresh.count() <= INCREMENTAL_BROADCAST_LIMIT,
    )
    near = near.select(F.col("id_r").alias("record_id")).distinct()
    return loose.join(near, "record_id", "left_semi").localCheckpoint()


def golden_records(registry: DataFrame, records: DataFrame) -> DataFrame:
    """One golden record per master id of ``registry``: each attribute from the best record that has it."""
    trust = empi_config()["survivorship"]["source_trust"]
    rank_of = F.create_map(*[F.lit(x) for i, s in enumerate(trust) for x in (s, i)])
    joined = registry.select("record_id", "master_id", "id_valid").join(
        records.select("record_id", "source_system", *IDENTITY_COLUMNS, "source_updated_at"), "record_id"
    )
    # best first: a valid ID, then the most trusted source, then the most recently updated. One aggregation
    # instead of three window passes: each attribute is the value whose record has the smallest such key
    # among the records that have one.
    best_first = F.struct(
        ~F.col("id_valid"),
        F.coalesce(rank_of[F.col("source_system")], F.lit(99)),
        F.coalesce(-F.unix_micros("source_updated_at"), F.lit(2**62)),
        F.col("record_id"),
    )
    return joined.groupBy("master_id").agg(
        *[F.min_by(c, F.when(F.col(c).isNotNull(), best_first)).alias(c) for c in IDENTITY_COLUMNS],
        F.count("*").alias("record_count"),
        F.max(F.col("id_valid").cast("int")).cast("boolean").alias("id_number_valid"),
        F.max("source_updated_at").alias("last_updated_at"),
    )


def update_silver_master_ids(spark: SparkSession, decided: DataFrame, kept: DataFrame | None) -> None:
    """Write each record's master id into silver person (the PIX cross-reference in the canonical table).

    ``decided``: this run's assignments; ``kept``: everyone else's, needed only for silver rows that have no
    master id although their record was not matched now (silver was rebuilt).
    """
    silver = read_delta(spark, silver_path("person")).select(
        "source_system", "local_patient_id", F.col("master_id").alias("_current")
    )
    key = ["source_system", "local_patient_id"]
    rows = decided.select(*key, "master_id")
    if kept is not None:
        unset = silver.where(F.col("_current").isNull()).select(*key)
        rows = rows.unionByName(kept.join(_small(unset), key, "left_semi").select(*key, "master_id"))
    # only rows whose master id differs: a MERGE rewrites every file it touches
    updates = (
        silver.join(_small(rows), key)
        .where(F.col("_current").isNull() | (F.col("_current") != F.col("master_id")))
        .drop("_current")
    )
    (
        DeltaTable.forPath(spark, silver_path("person"))
        .alias("t")
        .merge(updates.alias("s"), "t.source_system = s.source_system AND t.local_patient_id = s.local_patient_id")
        .whenMatchedUpdate(condition="t.master_id IS DISTINCT FROM s.master_id", set={"master_id": "s.master_id"})
        .execute()
    )


def review_entries(spark: SparkSession, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """(queue length, the ``limit`` strongest possible matches): each the record and its candidate record side
    by side, identity fields masked (a steward decides from the comparison levels, not the digits)."""
    queue = read_delta(spark, empi_path("review_queue"))
    if queue is None:
        return 0, []
    masked = {"id_number": _masked_tail(4), "phone": _masked_tail(4)}
    people = person_records(spark).select(
        "record_id",
        "source_system",
        *[masked[c](F.col(c)).alias(c) if c in masked else F.col(c) for c in IDENTITY_COLUMNS],
    )
    side = {s: people.select(*[F.col(c).alias(f"{s}_{c}") for c in people.columns]) for s in ("record", "candidate")}
    top = (
        queue.orderBy(F.col("score").desc(), "record_id")
        .limit(limit)
        .join(side["record"], F.col("record_id") == F.col("record_record_id"), "left")
        .join(side["candidate"], F.col("candidate_record") == F.col("candidate_record_id"), "left")
    )
    return queue.count(), [r.asDict() for r in top.orderBy(F.col("score").desc(), "record_id").collect()]


def _masked_tail(keep: int) -> Callable[[Column], Column]:
    return lambda c: F.when(
        c.isNotNull(),
        F.concat(F.repeat(F.lit("*"), F.greatest(F.length(c) - keep, F.lit(0))), F.substring(c, -keep, keep)),
    )


# --- manual decisions (CLI now, the API later) ----------------------------------------------------------
def _log_event(
    spark: SparkSession, action: str, actor: str, reason: str, records: list[str], masters: list[str]
) -> str:
    event_id = uuid.uuid4().hex
    row = [(event_id, datetime.now().astimezone(), actor, action, reason, records, masters)]
    (
        spark.createDataFrame(
            row,
            "event_id string, at timestamp, actor string, action string, reason string, "
            "record_ids array<string>, master_ids array<string>",
        )
        .write.format("delta")
        .mode("append")
        .save(empi_path("events"))
    )
    return event_id


def _add_constraints(spark: SparkSession, rows: list[tuple[str, str, str, str]]) -> None:
    """Constraints are replaced per (record, kind): the newest decision about a record wins."""
    new = spark.createDataFrame(rows, "record_id string, kind string, master_id string, event_id string")
    path = empi_path("constraints")
    if read_delta(spark, path) is None:
        new.write.format("delta").save(path)
        return
    assigns = [r for r in rows if r[1] == "assign"]
    table = DeltaTable.forPath(spark, path)
    if assigns:  # a new assignment supersedes the record's previous one
        old = spark.createDataFrame([(r[0],) for r in assigns], "record_id string")
        table.alias("t").merge(
            old.alias("s"), "t.record_id = s.record_id AND t.kind = 'assign'"
        ).whenMatchedDelete().execute()
    new.write.format("delta").mode("append").save(path)


def _records_of(spark: SparkSession, master_id: str) -> list[str]:
    registry = read_delta(spark, empi_path("records"))
    return [r.record_id for r in registry.where(F.col("master_id") == master_id).select("record_id").collect()]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def link(spark: SparkSession, record_id: str, master_id: str, actor: str, reason: str) -> str:
    """Pin a record to a resident (e.g. a reviewed possible match confirmed)."""
    _require(bool(_records_of(spark, master_id)), f"no resident {master_id} in the EMPI registry")
    event = _log_event(spark, "link", actor, reason, [record_id], [master_id])
    _add_constraints(spark, [(record_id, "assign", master_id, event)])
    return event


def unlink(spark: SparkSession, record_id: str, actor: str, reason: str) -> str:
    """Take a record out of its resident: it becomes its own person and never rejoins that resident."""
    registry = read_delta(spark, empi_path("records"))
    current = registry.where(F.col("record_id") == record_id).select("master_id").first()
    _require(current is not None, f"no record {record_id} in the EMPI registry")
    new_master = _new_master_id(spark, record_id)
    event = _log_event(spark, "unlink", actor, reason, [record_id], [current.master_id, new_master])
    _add_constraints(spark, [(record_id, "forbid", current.master_id, event), (record_id, "assign", new_master, event)])
    return event


def separate(spark: SparkSession, record_id: str, master_id: str, actor: str, reason: str) -> str:
    """A reviewed possible match is not the same person: the record never joins that resident."""
    registry = read_delta(spark, empi_path("records"))
    _require(
        registry is not None and registry.where(F.col("record_id") == record_id).limit(1).count() == 1,
        f"no record {record_id} in the EMPI registry",
    )
    _require(bool(_records_of(spark, master_id)), f"no resident {master_id} in the EMPI registry")
    event = _log_event(spark, "separate", actor, reason, [record_id], [master_id])
    _add_constraints(spark, [(record_id, "forbid", master_id, event)])
    return event


def merge(spark: SparkSession, survivor: str, merged: str, actor: str, reason: str) -> str:
    """Two master ids are one resident: every record of ``merged`` moves to ``survivor``."""
    moving = _records_of(spark, merged)
    _require(bool(moving) and bool(_records_of(spark, survivor)), "both master ids must exist in the registry")
    event = _log_event(spark, "merge", actor, reason, moving, [survivor, merged])
    _add_constraints(spark, [(r, "assign", survivor, event) for r in moving])
    return event


def unmerge(spark: SparkSession, master_id: str, record_ids: list[str], actor: str, reason: str) -> str:
    """Split records out of a resident into a new one; automatic runs never put them back together."""
    members = set(_records_of(spark, master_id))
    _require(
        set(record_ids) <= members and set(record_ids) != members,
        f"records to split must be some (not all) records of {master_id}",
    )
    new_master = _new_master_id(spark, sorted(record_ids)[0])
    event = _log_event(spark, "unmerge", actor, reason, record_ids, [master_id, new_master])
    rows = [(r, "assign", new_master, event) for r in record_ids]
    rows += [(r, "forbid", master_id, event) for r in record_ids]
    rows += [(r, "assign", master_id, event) for r in members - set(record_ids)]
    _add_constraints(spark, rows)
    return event


def _new_master_id(spark: SparkSession, record_id: str) -> str:
    return spark.range(1).select(master_id_of(F.lit(f"MANUAL|{record_id}|{uuid.uuid4().hex}"))).first()[0]


def apply_manual_decisions(spark: SparkSession) -> EmpiReport:
    """Manual decisions take effect at once: re-run matching for the records they touch."""
    return run_empi(spark)
