"""Tiny bronze frames for mapping tests: source columns as text plus the bronze contract columns."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from spark_jobs.model import source_mapping
from spark_jobs.standardize import standardize_frame

T0 = datetime(2026, 11, 1, 8)
CONTRACT = (
    "_op string, _source_ts timestamp, _source_pos string, _ingested_at timestamp, _batch_id string, "
    "_source_system string, _org_code string"
)


def bronze_frame(
    spark: SparkSession,
    source_system: str,
    rows: list[dict[str, Any]],
    *,
    org_code: str = "410182001",
    types: dict[str, str] | None = None,
) -> DataFrame:
    """One bronze row per dict (keys = source columns, all of them in every dict).

    Contract columns default to a snapshot row (`_op` 'r') at T0 with increasing source positions; a dict may
    override them (e.g. ``{"_op": "d", "_source_pos": "9"}``). Source columns are strings unless ``types``
    names their Spark type (e.g. ``{"CSRQ": "date"}``).
    """
    types = types or {}
    columns = [c for c in rows[0] if not c.startswith("_")]
    schema = ", ".join(f"`{c}` {types.get(c, 'string')}" for c in columns) + ", " + CONTRACT
    data = []
    for position, row in enumerate(rows, start=1):
        contract = {
            "_op": "r",
            "_source_ts": T0,
            "_source_pos": f"{position:012d}",
            "_ingested_at": T0,
            "_batch_id": f"{source_system}.test.0",
            "_source_system": source_system,
            "_org_code": org_code,
        }
        contract.update({k: v for k, v in row.items() if k.startswith("_")})
        data.append(tuple(row[c] for c in columns) + tuple(contract.values()))
    return spark.createDataFrame(data, schema)


def by_entity(entity: str, _table: str) -> str:
    return entity


def by_table(_entity: str, table: str) -> str:
    return table


def by_entity_and_table(entity: str, table: str) -> tuple[str, str]:
    return entity, table


def standardize_source(
    source_system: str, frames: dict[str, DataFrame], by: Callable[[str, str], Hashable] = by_entity
) -> dict[Any, tuple[dict[str, Any], list[Any]]]:
    """Every mapped table of the source standardised from its bronze frame (lookups included), grouped by
    ``by(entity, bronze table)`` -> (silver rows by source key, quarantine rows). One Spark job per entity and
    one for all quarantine rows: each collect is a job, and a source has dozens of tables."""
    silver: dict[str, DataFrame] = {}
    quarantine: DataFrame | None = None
    tables = source_mapping(source_system)["tables"]
    for spec in tables:
        lookups = {name: frames[lookup["bronze_table"]] for name, lookup in (spec.get("lookups") or {}).items()}
        rows, bad = standardize_frame(frames[spec["bronze_table"]], spec, source_system, lookups)
        entity = spec["entity"]
        silver[entity] = silver[entity].unionByName(rows) if entity in silver else rows
        quarantine = bad if quarantine is None else quarantine.unionByName(bad)
    out: dict[Any, tuple[dict[str, Any], list[Any]]] = {
        by(spec["entity"], spec["bronze_table"]): ({}, []) for spec in tables
    }
    for entity, frame in silver.items():
        for row in frame.collect():
            out[by(entity, row.source_table)][0][row.source_key] = row
    for row in quarantine.collect() if quarantine is not None else []:
        out[by(row.entity, row.source_table)][1].append(row)
    return out
