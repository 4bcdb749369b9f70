"""Run the YAML-defined suites with Great Expectations 1.x on silver Delta tables.

Suites are configuration: adding a rule is a YAML line. Results (per expectation, with failing row keys)
go to PostgreSQL (``dq.validation_run``, ``dq.validation_result``) where dashboards and scoring read them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import sqlalchemy as sa
import yaml
from pyspark.sql import DataFrame, SparkSession

from core.db import ensure_schemas, warehouse_engine
from core.spark import read_delta
from spark_jobs.standardize import silver_path

SUITES_DIR = Path(__file__).parent / "suites"
META_KEYS = {"type", "zh"}
DDL = [
    """CREATE TABLE IF NOT EXISTS dq.validation_run (
        run_id text PRIMARY KEY, suite text NOT NULL, run_at timestamptz NOT NULL, success boolean NOT NULL,
        evaluated integer NOT NULL, passed integer NOT NULL, row_count bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dq.validation_result (
        run_id text NOT NULL REFERENCES dq.validation_run, suite text NOT NULL, expectation text NOT NULL,
        description_zh text, kwargs jsonb NOT NULL, success boolean NOT NULL, element_count bigint,
        unexpected_count bigint, unexpected_keys jsonb, PRIMARY KEY (run_id, expectation, kwargs))""",
]


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    blocking: bool
    evaluated: int
    passed: int


def _expectation(spec: dict[str, Any]) -> gxe.Expectation:
    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    return getattr(gxe, class_name)(**{k: v for k, v in spec.items() if k not in META_KEYS})


def load_suites() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(SUITES_DIR.glob("*.yaml"))]


def validate(context: Any, config: dict[str, Any], df: DataFrame) -> Any:
    """Run one suite on a DataFrame; the result lists, per expectation, the keys of failing rows."""
    name = config["suite"]
    batch = (context.data_sources.add_spark(name=f"spark_{name}")
             .add_dataframe_asset(name=config["entity"]).add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for spec in config["expectations"]:
        suite.add_expectation(_expectation(spec))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return validation.run(batch_parameters={"dataframe": df}, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": config["key"]})


def run_suite(spark: SparkSession, context: Any, config: dict[str, Any]) -> SuiteOutcome | None:
    df = read_delta(spark, silver_path(config["entity"]))
    if df is None:
        return None
    result = validate(context, config, df)
    _store(config["suite"], config, result, df.count())
    passed = sum(r.success for r in result.results)
    return SuiteOutcome(config["suite"], bool(result.success), config.get("blocking", False),
                        len(result.results), passed)


def _store(name: str, config: dict[str, Any], result: Any, row_count: int) -> None:
    ensure_schemas("dq")
    run_id = f"{name}-{uuid.uuid4().hex[:12]}"
    descriptions = {spec["type"]: spec.get("zh") for spec in config["expectations"]}
    rows = []
    for r in result.results:
        config_dict = r.expectation_config.to_json_dict()
        kwargs = {k: v for k, v in config_dict["kwargs"].items() if k != "batch_id"}
        details = r.result or {}
        keys = details.get("unexpected_index_list") or []
        rows.append({"run_id": run_id, "suite": name, "expectation": config_dict["type"],
                     "description_zh": descriptions.get(config_dict["type"]),
                     "kwargs": json.dumps(kwargs, ensure_ascii=False, sort_keys=True),
                     "success": bool(r.success), "element_count": details.get("element_count"),
                     "unexpected_count": details.get("unexpected_count"),
                     "unexpected_keys": json.dumps(keys[:100], ensure_ascii=False, default=str)})
    with warehouse_engine().begin() as conn:
        for ddl in DDL:
            conn.execute(sa.text(ddl))
        conn.execute(sa.text("INSERT INTO dq.validation_run VALUES (:run_id, :suite, :run_at, :success, "
                             ":evaluated, :passed, :row_count)"),
                     {"run_id": run_id, "suite": name, "run_at": datetime.now().astimezone(),
                      "success": bool(result.success), "evaluated": len(rows),
                      "passed": sum(r["success"] for r in rows), "row_count": row_count})
        conn.execute(sa.text("INSERT INTO dq.validation_result VALUES (:run_id, :suite, :expectation, "
                             ":description_zh, CAST(:kwargs AS jsonb), :success, :element_count, "
                             ":unexpected_count, CAST(:unexpected_keys AS jsonb))"), rows)


def run_suites(spark: SparkSession) -> list[SuiteOutcome]:
    context = gx.get_context(mode="ephemeral")
    outcomes = [run_suite(spark, context, config) for config in load_suites()]
    return [o for o in outcomes if o is not None]
