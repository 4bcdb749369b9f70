"""Tiny bronze frames for mapping tests: source columns as text plus the bronze contract columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

T0 = datetime(2026, 11, 1, 8)
CONTRACT = ("_op string, _source_ts timestamp, _source_pos string, _ingested_at timestamp, _batch_id string, "
            "_source_system string, _org_code string")


def bronze_frame(spark: SparkSession, source_system: str, rows: list[dict[str, Any]], *,
                 org_code: str = "410182001", types: dict[str, str] | None = None) -> DataFrame:
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
        contract = {"_op": "r", "_source_ts": T0, "_source_pos": f"{position:012d}", "_ingested_at": T0,
                    "_batch_id": f"{source_system}.test.0", "_source_system": source_system, "_org_code": org_code}
        contract.update({k: v for k, v in row.items() if k.startswith("_")})
        data.append(tuple(row[c] for c in columns) + tuple(contract.values()))
    return spark.createDataFrame(data, schema)
