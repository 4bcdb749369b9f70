"""The one Spark session factory: local jars (no Ivy download), Delta enabled, small shuffles for 2 cores."""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from core.settings import PROJECT_ROOT, get_settings

JARS_DIR = PROJECT_ROOT / ".jars"


@lru_cache(maxsize=1)
def get_spark() -> SparkSession:
    jars = sorted(str(p) for p in JARS_DIR.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no jars in {JARS_DIR}: run ./drc setup to fetch Delta and JDBC jars")
    settings = get_settings()
    # Python workers (pandas UDFs) run the driver's interpreter, i.e. the lake venv, not whatever python3 is.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(settings.spark_master)
        .appName("xydrc")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "Asia/Shanghai")
        .config("spark.driver.memory", os.environ.get("DRC_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # A long-lived session (the test run, a catch-up over weeks) must not keep every query's plan and
        # stage history in the driver heap: the status store retains 1,000 of each by default.
        .config("spark.sql.ui.retainedExecutions", "20")
        .config("spark.ui.retainedJobs", "50")
        .config("spark.ui.retainedStages", "50")
        .config("spark.ui.retainedTasks", "2000")
        .config("spark.ui.dagGraph.retainedRootRDDs", "50")
        .config("spark.sql.ansi.enabled", "false")
        # Collectors build batches from Python rows (binlog, files, API): Arrow makes that ~3x faster.
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=Asia/Shanghai")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def newest_commit(path: str) -> tuple[int, dict]:
    """(version, commitInfo) of the newest commit of the Delta table at ``path``, read from its log without a
    Spark job (the newest commit file is always kept)."""
    log = Path(path) / "_delta_log"
    newest = max((p for p in log.glob("*.json") if p.stem.isdigit()), key=lambda p: int(p.stem))
    for line in newest.read_text(encoding="utf-8").splitlines():
        if line.startswith('{"commitInfo"'):
            return int(newest.stem), json.loads(line)["commitInfo"]
    return int(newest.stem), {}


def read_delta(spark: SparkSession, path: str, version: int | None = None) -> DataFrame | None:
    """A Delta table (as of ``version``, else its newest), or None when nothing has been written there yet."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    reader = spark.read.format("delta")
    return (reader if version is None else reader.option("versionAsOf", version)).load(path)
