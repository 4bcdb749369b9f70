"""The library's Great Expectations rules run by GX itself on Spark, and GX Data Docs for engineers.

The daily check compiles ``expect`` rules to SQL (:mod:`expectations.engine`: one scan per dataset). This
module runs the same expectations through GX 1.x, suite per dataset, for two reasons: Data Docs (the engineers'
browsable validation results, served with the dbt docs at ``/gx/``) and a cross-check that the compiled SQL
means what GX means (tests compare failed counts). GX runs a Spark job per expectation, which is why it is not
the daily engine (bench/quality.py measures both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from pyspark.sql import DataFrame, SparkSession

from core.settings import PROJECT_ROOT
from expectations.rules import Library, Rule

DATA_DOCS_DIR = PROJECT_ROOT / "dbt" / "target" / "gx"  # served by the docs site (scripts/services.sh)


@dataclass(frozen=True)
class GxOutcome:
    rule_id: str
    dataset: str
    success: bool
    element_count: int
    unexpected_count: int


def _expectation(rule: Rule) -> gxe.Expectation:
    spec = dict(rule.definition["expect"])
    class_name = "".join(part.capitalize() for part in spec.pop("type").split("_"))
    expectation = getattr(gxe, class_name)(**spec)
    expectation.meta = {"rule_id": rule.rule_id, "zh": rule.description_zh, "dimension": rule.dimension}
    expectation.description = f"{rule.rule_id} {rule.description_zh}"
    return expectation


def _context(data_docs: bool) -> Any:
    if not data_docs:
        return gx.get_context(mode="ephemeral")
    context = gx.get_context(mode="ephemeral")
    DATA_DOCS_DIR.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(
        site_name="drc",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(DATA_DOCS_DIR)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def run_gx(
    spark: SparkSession, library: Library, datasets: dict[str, DataFrame], data_docs: bool = True
) -> list[GxOutcome]:
    """Validate each dataset's ``expect`` rules with GX; build Data Docs when asked."""
    context = _context(data_docs)
    source = context.data_sources.add_spark(name="silver")
    outcomes = []
    for dataset, df in datasets.items():
        rules = [r for r in library.for_dataset(dataset, "expect") if r.where is None]
        if not rules:
            continue
        batch = source.add_dataframe_asset(name=dataset).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"silver_{dataset}"))
        by_description = {}
        for rule in rules:
            suite.add_expectation(_expectation(rule))
            by_description[f"{rule.rule_id} {rule.description_zh}"] = rule
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"silver_{dataset}", data=batch, suite=suite)
        )
        result = validation.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
        for r in result.results:
            rule = by_description[r.expectation_config.description]
            details = r.result or {}
            outcomes.append(
                GxOutcome(
                    rule.rule_id,
                    dataset,
                    bool(r.success),
                    int(details.get("element_count") or 0),
                    int(details.get("unexpected_count") or 0),
                )
            )
        if data_docs:
            context.build_data_docs(site_names=["drc"])
    return outcomes


def data_docs_index() -> Path:
    return DATA_DOCS_DIR / "index.html"
