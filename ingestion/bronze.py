"""The bronze contract and the one way rows land in bronze: exactly once, offsets committed with the data.

Every mode builds a DataFrame of source columns plus ``_op`` (r snapshot/c insert/u update/d delete),
``_source_ts`` (source commit time) and ``_source_pos`` (a fixed-width string that sorts like the source's
own order) and hands it to :func:`land`. ``land`` appends it as one Delta commit that carries
 - ``txnAppId``/``txnVersion`` (Delta skips a version it has already committed), and
 - ``userMetadata`` = the source offset this batch reaches, so the offset commits atomically with the rows.
A mode resumes from :func:`committed_offset`; a ``kill -9`` before the commit leaves nothing, after it
leaves rows and offset together. The txn version is the table's next version at write time, so it cannot
tell two runs that read the same offset apart (they would land the same rows as versions n and n+1): the
runner's per-source lock (``monitoring.source_lock``) keeps runs of one source from overlapping.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from core.settings import PROJECT_ROOT, get_settings
from ingestion.registry import SourceConfig, TableConfig

BRONZE_COLUMNS = ("_op", "_source_ts", "_source_pos", "_ingested_at", "_batch_id", "_source_system", "_org_code")
MODE_COLUMNS = ("_op", "_source_ts", "_source_pos")


class TableStopped(RuntimeError):
    """Collection of one table must stop until an operator decides (status ``stopped``); others keep flowing."""


class SchemaDriftError(TableStopped):
    """A source column disappeared or changed type: that table stops until someone decides."""


class TooManyDeletes(TableStopped):
    """A snapshot would delete more than the configured share of a table: nothing lands until accepted."""


class SourceWentBack(TableStopped):
    """A watermark source's newest change is older than bronze's (reset or restored): stopped until accepted."""


@dataclass(frozen=True)
class TableResult:
    source: str
    table: str
    rows: int
    status: str = "success"  # success | no_change | stopped | failed | source_down | skipped
    offset: str | None = None
    error: str | None = None
    counts: dict[str, int] | None = None  # what else the run saw, e.g. null_watermark, reordered, deleted


def guard_deletes(source: SourceConfig, table: TableConfig, *, deletes: int, current: int, read: int) -> bool:
    """Stop a snapshot that would delete more than ``max_delete_share`` of the keys bronze holds.

    An empty or shrunken read (a wrong query, an emptied view, a permissions change) looks exactly like a
    mass delete; landing it would withdraw every record downstream. Returns True when the deletes were
    accepted by an operator (``ingest accept-deletes``; the acceptance is used up by this run), False when
    they are within the share; raises TooManyDeletes (nothing lands, the table is ``stopped``) otherwise.
    """
    from ingestion import monitoring

    share = float(table.options.get("max_delete_share", source.strategy.max_delete_share))
    if not current or deletes <= share * current:
        return False
    if monitoring.take_accepted_deletes(source.name, table.name):
        return True
    monitoring.record_pending_deletes(source.name, table.name, deletes=deletes, current=current, read=read)
    raise TooManyDeletes(
        f"{source.name}.{table.name}: the snapshot read {read:,} rows where bronze holds {current:,} live keys; "
        f"landing it would delete {deletes:,} keys ({deletes / current:.0%}, more than max_delete_share "
        f"{share:.0%}). Nothing landed and collection of this table is stopped; other tables keep flowing. "
        "Check the source (the table or view, its query, the collector's permissions). If the rows really "
        f"are gone, run `./drc ingest accept-deletes --source {source.name} --table {table.name}` and the "
        "next run lands the deletes."
    )


def bronze_path(source: str, table: str) -> str:
    return get_settings().lake_path("bronze", source, table.lower())


def delta_exists(spark: SparkSession, path: str) -> bool:
    """Whether a Delta table exists at a (local) lake path, without a round trip through Spark."""
    log = Path(path) / "_delta_log"
    return log.is_dir() and any(log.glob("*.json"))


def latest_versions(bronze: DataFrame, keys: list[str]) -> DataFrame:
    """The newest landed version of each key by source position, deletes included (snapshot diffs need them)."""
    latest = Window.partitionBy(*keys).orderBy(F.col("_source_pos").desc())
    return bronze.withColumn("_rank", F.row_number().over(latest)).where(F.col("_rank") == 1).drop("_rank")


def _log_dir(source: str, table: str) -> Path:
    return Path(bronze_path(source, table)) / "_delta_log"


def _latest_version(log: Path) -> int | None:
    versions = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()]
    return max(versions) if versions else None


def commit_log(source: str, table: str, newest_only: bool = False) -> list[dict[str, Any]]:
    """Bronze commits that landed a batch, newest first: version, timestamp, userMetadata, operationMetrics.

    Read straight from the Delta log's JSON commit files (milliseconds, where Spark's ``history()`` costs a
    second or more per table): offsets are looked up before every collection run. Commits compacted into a
    checkpoint are old and already recorded in monitoring.
    """
    log = _log_dir(source, table)
    commits = []
    for path in sorted(log.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1, reverse=True):
        if not path.stem.isdigit():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            info = json.loads(line).get("commitInfo") if line.startswith('{"commitInfo"') else None
            if info and info.get("userMetadata"):
                commits.append(
                    {
                        "version": int(path.stem),
                        "userMetadata": info["userMetadata"],
                        "operationMetrics": info.get("operationMetrics") or {},
                        "timestamp": datetime.fromtimestamp(info["timestamp"] / 1000).astimezone(),
                    }
                )
                break
        if commits and newest_only:
            break
    return commits


def bronze_version(source: str, table: str) -> int | None:
    """The newest Delta version of a bronze table (None before its first batch)."""
    return _latest_version(_log_dir(source, table))


def files_added_since(source: str, table: str, version: int, until: int) -> list[str] | None:
    """Data files appended by versions (version, until] — what changed since a reader's checkpoint.

    Bronze is append-only, so these files hold exactly the new rows. None when a commit file of the range is
    gone (log retention): the caller then re-reads the whole table.
    """
    log, root = _log_dir(source, table), Path(bronze_path(source, table))
    files = []
    for v in range(version + 1, until + 1):
        commit = log / f"{v:020d}.json"
        if not commit.exists():
            return None
        for line in commit.read_text(encoding="utf-8").splitlines():
            if line.startswith('{"add"'):
                files.append(str(root / unquote(json.loads(line)["add"]["path"])))
    return files


def uses_column_mapping(source: str, table: str) -> bool:
    """Whether the bronze table maps logical column names to other physical ones (file-drop tables do, for
    column names Parquet cannot hold): its data files then cannot be read by the logical names."""
    log = _log_dir(source, table)
    for commit in sorted(log.glob("*.json"), reverse=True):  # the newest metadata action holds
        for line in commit.read_text(encoding="utf-8").splitlines():
            if line.startswith('{"metaData"'):
                mode = json.loads(line)["metaData"].get("configuration", {}).get("delta.columnMapping.mode")
                return mode not in (None, "none")
    return True  # no metadata in the JSON commits (checkpointed away): read through Delta, which is always right


def batch_version() -> Column:
    """The bronze Delta version that landed a row, from its batch id (``<source>.<table>.<version>``)."""
    return F.regexp_extract("_batch_id", r"\.(\d+)$", 1).cast("long")


def landed_between(bronze: DataFrame, since: int, until: int) -> DataFrame:
    """The rows landed by versions (since, until]."""
    return bronze.where(batch_version().between(since + 1, until))


def committed_offset(spark: SparkSession, source: str, table: str) -> Any:
    """The offset stored with the newest batch landed in this bronze table (None before the first)."""
    newest = commit_log(source, table, newest_only=True)
    return json.loads(newest[0]["userMetadata"])["offset"] if newest else None


def _data_fields(schema: StructType) -> dict[str, str]:
    return {f.name.lower(): f.dataType.simpleString() for f in schema.fields if not f.name.startswith("_")}


def check_schema(
    spark: SparkSession, source: SourceConfig, table: TableConfig, incoming: StructType
) -> tuple[list[str], dict[str, str]]:
    """Compare a batch with the bronze table: returns (added columns, casts for accepted retyped columns).

    Added columns are taken in (schema evolution) and reported; a removed or retyped column raises
    SchemaDriftError until an operator accepts it (`ingest accept-drift`): then a removed column lands as
    NULL and a retyped one is cast to the landed type.
    """
    from ingestion import monitoring

    path = bronze_path(source.name, table.name)
    if not delta_exists(spark, path):
        return [], {}
    landed = _data_fields(spark.read.format("delta").load(path).schema)
    now = _data_fields(incoming)
    accepted = monitoring.accepted_changes(source.name, table.name)
    removed = sorted(c for c in set(landed) - set(now) if (c, "removed") not in accepted)
    retyped = sorted(c for c in set(landed) & set(now) if landed[c] != now[c] and now[c] != "void")
    open_retyped = [c for c in retyped if (c, "retyped") not in accepted]
    if removed or open_retyped:
        monitoring.record_schema_change(source.name, table.name, removed, "removed")
        monitoring.record_schema_change(source.name, table.name, open_retyped, "retyped")
        details = [f"column {c} is gone" for c in removed]
        details += [f"column {c} changed type {landed[c]} → {now[c]}" for c in open_retyped]
        raise SchemaDriftError(
            f"{source.name}.{table.name}: source schema changed ({'; '.join(details)}). Collection of this table "
            "is stopped; other tables keep flowing. Confirm the change with the vendor, adjust "
            f"config/sources/{source.name}.yaml and the mapping, then run `./drc ingest accept-drift "
            f"--source {source.name} --table {table.name}`."
        )
    return sorted(set(now) - set(landed)), {c: landed[c] for c in retyped}


def business_date_column(table: TableConfig) -> Column:
    """The business day of a bronze row, from the table's registered ``business_time`` (NULL without one)."""
    if not table.business_time:
        return F.lit(None).cast("date")
    column = F.col(table.business_time)
    if table.business_time_format:
        return F.to_date(F.to_timestamp(column.cast("string"), table.business_time_format))
    return F.to_date(column)


def org_code_column(source: SourceConfig, table: TableConfig) -> Column:
    """The institution of each row: fixed per source, or from a column (optionally via ``org_map``), or
    an ``org_expression`` (Spark SQL) for multi-tenant sources whose tenant ids are not org codes."""
    if "org_expression" in table.options:
        return F.expr(table.options["org_expression"]).cast("string")
    if not table.org_column:
        return F.lit(source.org_code)
    value = F.col(table.org_column).cast("string")
    codes = dict(table.options.get("org_map") or {})
    crosswalk = table.options.get("org_map_file") or source.options.get("org_map_file")
    if crosswalk:
        codes.update(_org_crosswalk(crosswalk, source.name))
    if codes:
        pairs = [F.lit(str(x)) for pair in codes.items() for x in pair]
        value = F.create_map(*pairs)[value]
    return F.coalesce(value, F.lit(source.org_code))


def _org_crosswalk(relative_path: str, source: str) -> dict[str, str]:
    """The source's institution codes -> the platform's (CSV with source_code,target_code)."""
    path = PROJECT_ROOT / relative_path
    if not path.exists():
        raise FileNotFoundError(
            f"source {source}: org_map_file {path} does not exist; create it with columns "
            "source_code,target_code (the source's institution code -> config/organizations.csv)"
        )
    with path.open(encoding="utf-8") as f:
        return {row["source_code"]: row["target_code"] for row in csv.DictReader(f) if row.get("target_code")}


def land(
    spark: SparkSession,
    rows: DataFrame,
    *,
    source: SourceConfig,
    table: TableConfig,
    offset: Any,
    ingested_at: datetime | None = None,
    offset_from: Any = None,
) -> int:
    """Append one batch (source columns + MODE_COLUMNS) to bronze with its offset; returns rows landed.

    Re-landing a batch that already committed is impossible by construction: callers read
    :func:`committed_offset` and only pass rows beyond it, one run per source at a time (the runner's lock).
    """
    from ingestion import monitoring

    ingested_at = ingested_at or datetime.now().astimezone()
    path = bronze_path(source.name, table.name)
    latest = _latest_version(_log_dir(source.name, table.name))
    version = 0 if latest is None else latest + 1
    batch_id = f"{source.name}.{table.name.lower()}.{version}"
    org = org_code_column(source, table)
    landed = (
        rows.withColumn("_source_ts", F.col("_source_ts").cast("timestamp"))
        .withColumn("_source_pos", F.col("_source_pos").cast("string"))
        .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
        .withColumn("_batch_id", F.lit(batch_id))
        .withColumn("_source_system", F.lit(source.name))
        .withColumn("_org_code", org)
    )
    added, casts = check_schema(spark, source, table, landed.schema)
    for column, landed_type in casts.items():
        landed = landed.withColumn(column, F.col(column).cast(landed_type))
    # Materialised once: a batch computed against bronze (a JDBC re-read window, a snapshot diff) would come out
    # empty if the arrival count below recomputed it after the write; the source is read once, too.
    landed = landed.localCheckpoint()
    metadata = json.dumps({"batch_id": batch_id, "offset": offset}, ensure_ascii=False, default=str)
    (
        landed.write.format("delta")
        .mode("append")
        .option("txnAppId", f"{source.name}.{table.name.lower()}")
        .option("txnVersion", version)
        .option("userMetadata", metadata)
        .option("mergeSchema", "true")
        .save(path)
    )
    commit = next(iter(commit_log(source.name, table.name, newest_only=True)), None)
    if added:
        monitoring.record_schema_change(source.name, table.name, added, "added")
    if commit is None or json.loads(commit["userMetadata"])["batch_id"] != batch_id:
        return 0  # a racing run landed this version first; Delta skipped ours
    return _record(spark, source, table, commit, ingested_at, offset_from, landed)


def _count_first_arrivals_only(
    spark: SparkSession,
    source: SourceConfig,
    table: TableConfig,
    batch_id: str,
    late: DataFrame,
    business_date: Column,
    arrivals: list[dict[str, Any]],
) -> None:
    """A record landed before and changed after the deadline is a correction (an institution fixing what the
    quality report showed it), not a late submission: only rows whose key bronze did not hold before count as
    late. Run only when a batch has rows past the deadline, so on-time batches never read bronze back."""
    earlier = (
        spark.read.format("delta")
        .load(bronze_path(source.name, table.name))
        .where(F.col("_batch_id") != batch_id)
        .select(*table.keys)
        .distinct()
    )
    first = {
        (r["org_code"], r["business_date"]): r["late_rows"]
        for r in late.join(earlier, list(table.keys), "left_anti")
        .groupBy(F.col("_org_code").alias("org_code"), business_date.alias("business_date"))
        .agg(F.count(F.lit(1)).alias("late_rows"))
        .collect()
    }
    for arrival in arrivals:
        arrival["late_rows"] = first.get((arrival["org_code"], arrival["business_date"]), 0)


def _record(
    spark: SparkSession,
    source: SourceConfig,
    table: TableConfig,
    commit: Any,
    started_at: datetime | None,
    offset_from: Any = None,
    batch: DataFrame | None = None,
) -> int:
    """Write one landed batch's monitoring rows (count, lag input, arrivals per institution and day).

    ``batch`` is the landed batch, materialised, when the caller holds it; otherwise it is read back from bronze
    by its id.
    """
    from ingestion import monitoring

    meta = json.loads(commit["userMetadata"])
    if batch is None:
        batch = (
            spark.read.format("delta")
            .load(bronze_path(source.name, table.name))
            .where(F.col("_batch_id") == meta["batch_id"])
        )
    count = int((commit["operationMetrics"] or {}).get("numOutputRows", 0))
    business_date = business_date_column(table)
    live = F.col("_op") != "d"
    late = live & (F.col("_source_ts") >= F.date_add(business_date, 2).cast("timestamp"))
    groups = (
        batch.groupBy(F.col("_org_code").alias("org_code"), F.when(live, business_date).alias("business_date"))
        .agg(
            F.count(F.when(live, 1)).alias("rows"),
            F.max("_source_ts").alias("last_source_ts"),
            F.count(F.when(late, 1)).alias("late_rows"),
        )
        .collect()
    )
    arrivals = [g.asDict() for g in groups if g["business_date"] is not None]
    if table.keys and any(a["late_rows"] for a in arrivals):
        _count_first_arrivals_only(spark, source, table, meta["batch_id"], batch.where(late), business_date, arrivals)
    newest = max((g["last_source_ts"] for g in groups if g["last_source_ts"] is not None), default=None)
    finished = commit["timestamp"]
    monitoring.record_batch(
        monitoring.BatchRecord(
            batch_id=meta["batch_id"],
            source_system=source.name,
            table_name=table.name,
            org_code=source.org_code,
            mode=source.mode,
            rows_landed=count,
            offset_from=_text(offset_from),
            offset_to=_text(meta["offset"]),
            last_source_ts=newest,
            started_at=started_at or finished,
            finished_at=finished,
            status="success",
        ),
        arrivals,
    )
    return count


def repair_monitoring(spark: SparkSession, source: SourceConfig, table: TableConfig) -> int:
    """Record batches that committed but whose process died before writing monitoring rows."""
    from ingestion import monitoring

    commits = commit_log(source.name, table.name)
    if not commits:
        return 0
    known = monitoring.known_batches(source.name, table.name)
    missing = [c for c in commits if json.loads(c["userMetadata"])["batch_id"] not in known]
    for commit in missing:
        _record(spark, source, table, commit, None)
    return len(missing)


def _text(offset: Any) -> str | None:
    return None if offset is None else offset if isinstance(offset, str) else json.dumps(offset, default=str)
