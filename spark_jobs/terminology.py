"""Terminology service: the loaded code systems, the worklist of unmapped local codes, adding a concept mapping.

Rows with an unmapped code stay in silver with the standard code empty and an ``UNMAPPED:<column>:<code>``
flag. The worklist groups those flags per source, concept map and code with a count and example rows; a
terminology admin adds the mapping (``./drc terminology map``), which changes the concept map's fingerprint,
so the next ``./drc silver`` re-standardises the affected tables' whole history.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.settings import get_settings
from core.spark import read_delta
from spark_jobs.codes import code_rules, in_code_system
from spark_jobs.model import (
    NOT_CODABLE,
    canonical_model,
    code_system,
    code_system_index,
    code_system_path,
    code_system_rows,
    column_code_system,
    concept_map,
    concept_map_path,
    mapped_sources,
    source_mapping,
    table_column_specs,
)
from spark_jobs.standardize import silver_path

_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class CodeSystemSummary:
    label: str
    name: str
    version: str
    content: str  # complete | subset
    codes: int  # codes a record may carry (chapters and blocks of a classification left out)
    rows: int  # rows of its file
    chinese: int  # rows with a Chinese title (display_language, or Chinese characters in display)
    file: str
    source: str  # where it came from: a registry package, an official file (and checksum), curated
    base: str | None  # the code system whose codes it also accepts (ICD-10 → ICD-10 WHO)
    rules: str | None  # code rules (icd10: canonical form, 国临版 extension codes, roll-up)
    used_by: list[str]  # entity.column of the canonical model coded in it


def code_systems() -> list[CodeSystemSummary]:
    """Every code system of config/terminology/code_systems/_index.yaml, with its version and size."""
    used: dict[str, list[str]] = {}
    for entity, spec in canonical_model()["entities"].items():
        for column in spec["columns"]:
            if column.get("code_system"):
                used.setdefault(column["code_system"], []).append(f"{entity}.{column['name']}")
    result = []
    for label, entry in code_system_index().items():
        rows = code_system_rows(label)
        languages = [r.get("display_language") or ("zh" if _CJK.search(r.get("display") or "") else "") for r in rows]
        result.append(
            CodeSystemSummary(
                label,
                entry.get("name", ""),
                str(entry.get("version", "")),
                entry.get("content", "?"),
                sum(r.get("level") not in NOT_CODABLE for r in rows),
                len(rows),
                sum(x == "zh" for x in languages),
                f"config/terminology/code_systems/{code_system_path(label).name}",
                entry.get("source") or "curated",
                entry.get("base"),
                code_rules(label),
                used.get(label, []),
            )
        )
    return result


def worklist_path() -> str:
    return get_settings().lake_path("silver", "_terminology_worklist")


def concept_map_columns(source_system: str) -> dict[tuple[str, str], str]:
    """(entity, canonical column) -> concept map name, from the source's mapping."""
    result = {}
    for table in source_mapping(source_system)["tables"]:
        for column, spec in dict(table_column_specs(table)).items():
            if "concept_map" in spec:
                result[(table["entity"], column)] = spec["concept_map"]
    return result


def unmapped_codes(silver: DataFrame, entity: str) -> DataFrame:
    """Per source table, column and local code: how many silver rows carry it unmapped, and 3 examples."""
    flags = silver.select("source_system", "source_table", "source_key", F.explode("dq_flags").alias("flag")).where(
        F.col("flag").startswith("UNMAPPED:")
    )
    parts = F.split("flag", ":", 3)
    return (
        flags.select(
            "source_system",
            "source_table",
            F.lit(entity).alias("entity"),
            parts[1].alias("column"),
            parts[2].alias("source_code"),
            "source_key",
        )
        .groupBy("source_system", "entity", "source_table", "column", "source_code")
        .agg(F.count("*").alias("rows"), F.slice(F.sort_array(F.collect_set("source_key")), 1, 3).alias("example_keys"))
    )


def refresh_worklist(spark: SparkSession) -> int:
    """Rebuild the worklist from every silver table; returns the number of open (source, map, code) items."""
    names = {
        (source, entity, column): name
        for source in mapped_sources()
        for (entity, column), name in concept_map_columns(source).items()
    }
    lookup = F.create_map(*[F.lit(x) for key, name in names.items() for x in ("|".join(key), name)])
    parts = []
    for entity in canonical_model()["entities"]:
        silver = read_delta(spark, silver_path(entity))
        if silver is not None and "dq_flags" in silver.columns:
            parts.append(unmapped_codes(silver, entity))
    if not parts:
        return 0
    worklist = parts[0]
    for part in parts[1:]:
        worklist = worklist.unionByName(part)
    worklist = worklist.withColumn("concept_map", lookup[F.concat_ws("|", "source_system", "entity", "column")])
    worklist = worklist.withColumn("example_keys", F.array_join("example_keys", ", "))
    worklist.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(worklist_path())
    return read_delta(spark, worklist_path()).count()


def read_worklist(spark: SparkSession, source_system: str | None = None) -> list[dict]:
    worklist = read_delta(spark, worklist_path())
    if worklist is None:
        return []
    if source_system:
        worklist = worklist.where(F.col("source_system") == source_system)
    return [r.asDict() for r in worklist.orderBy("source_system", F.col("rows").desc(), "source_code").collect()]


@dataclass(frozen=True)
class MappingAdded:
    path: str
    code_system: str | None


def add_concept_mapping(
    source_system: str, map_name: str, source_code: str, target_code: str, source_display: str = "", note: str = ""
) -> MappingAdded:
    """Append ``source_code -> target_code`` to a source's concept map, after checking it makes sense."""
    users = [
        (entity, column) for (entity, column), name in concept_map_columns(source_system).items() if name == map_name
    ]
    if not users:
        raise ValueError(
            f"{source_system} has no concept map '{map_name}' in config/mappings/{source_system}.yaml "
            "(see `./drc terminology worklist` for the map of each unmapped code)"
        )
    existing = concept_map(source_system, map_name)
    if source_code in existing:
        raise ValueError(
            f"{source_code} is already mapped to {existing[source_code]} in "
            f"{concept_map_path(source_system, map_name)}; edit that file to change it"
        )
    labels = {column_code_system(entity, column) for entity, column in users} - {None}
    for label in labels:
        if not in_code_system(label, target_code):
            examples = ", ".join(list(code_system(label))[:8])
            raise ValueError(
                f"{target_code} is not a code of {label}; valid examples: {examples} "
                "(full list: config/terminology/code_systems/; `./drc terminology` lists them)"
            )
    path = concept_map_path(source_system, map_name)
    with path.open("a", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow([source_code, target_code, source_display, note])
    return MappingAdded(str(path), next(iter(labels), None))
