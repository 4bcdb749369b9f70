"""The dashboard bundle built from the catalogs (superset/bundle.py), without Superset or a database."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from core.access import load_roles
from core.indicators import load_catalog
from superset.bundle import DASHBOARD_DIR, BundleError, build, load_datasets


def column_types() -> dict[str, dict[str, str]]:
    """What provision.py would probe: dates for the date columns, numbers for the measures, text else."""
    numeric = {
        "numerator",
        "denominator",
        "value",
        "value_prev_month",
        "value_prev_year",
        "scale",
        "score",
        "checked_rows",
        "failed_rows",
        "cases",
        "rows",
        "late_rows",
        "rows_total",
        "fund_paid",
    }
    return {
        name: {
            c: "date" if c == ds.time_column or c.endswith("_date") else "numeric" if c in numeric else "text"
            for c in ds.columns
        }
        for name, ds in load_datasets().items()
    }


@pytest.fixture(scope="module")
def bundle():
    return build(column_types())


def test_every_indicator_chart_describes_its_formula_from_the_catalog(bundle):
    catalog = load_catalog()
    checked = 0
    for path, text in bundle.contents.items():
        if not path.startswith("charts/"):
            continue
        chart = yaml.safe_load(text)
        codes = [f["comparator"] for f in chart["params"]["adhoc_filters"] if f.get("subject") == "indicator_code"]
        for code in codes[0] if codes else []:
            assert catalog.indicators[code].formula in chart["description"], f"{path}: {code}"
            checked += 1
    assert checked > 50


def test_every_computable_indicator_is_on_a_dashboard_with_its_formula(bundle):
    descriptions = "\n".join(
        yaml.safe_load(text)["description"] or ""
        for path, text in bundle.contents.items()
        if path.startswith("charts/")
    )
    missing = [
        f"{i.code} {i.zh}"
        for i in load_catalog().indicators.values()
        if i.supported and f"【{i.code} {i.zh}】{i.formula}" not in descriptions
    ]
    assert not missing, f"computable but on no dashboard: {missing}"


def test_every_chart_has_a_query_context_the_api_can_run(bundle):
    charts = [yaml.safe_load(t) for p, t in bundle.contents.items() if p.startswith("charts/")]
    assert len(charts) == sum(len(d["charts"]) for d in bundle.dashboards) > 60
    for chart in charts:
        context = json.loads(chart["query_context"])
        query = context["queries"][0]
        assert query["metrics"] or query["columns"], chart["slice_name"]
        assert context["form_data"]["viz_type"] == chart["viz_type"]


def test_rebuilding_gives_the_same_uuids(bundle):
    again = build(column_types())
    assert again.contents.keys() == bundle.contents.keys()
    assert [d["uuid"] for d in again.dashboards] == [d["uuid"] for d in bundle.dashboards]


def test_month_filter_leaves_trends_alone(bundle):
    cockpit = yaml.safe_load(bundle.contents["dashboards/cockpit.yaml"])
    month = next(f for f in cockpit["metadata"]["native_filter_configuration"] if f["name"] == "统计月份")
    ids = {
        c["meta"]["sliceName"]: c["meta"]["chartId"]
        for c in cockpit["position"].values()
        if isinstance(c, dict) and c.get("type") == "CHART"
    }
    assert ids["门急诊人次趋势"] in month["scope"]["excluded"]
    assert ids["门急诊人次"] in month["chartsInScope"]
    assert month["controlValues"]["defaultToFirstItem"]


def test_institution_roles_only_reach_row_secured_datasets(bundle):
    roles, users = load_roles()
    datasets = load_datasets()
    for role in roles.values():
        if role.rows != "own_org":
            continue
        for dash in bundle.dashboards:
            if dash["slug"] in role.dashboards:
                for chart in dash["charts"]:
                    assert datasets[chart.spec.get("dataset", "indicator")].org_column, (dash["slug"], chart.key)
    assert sum(u.org_code is not None for u in users) == 20


def test_unknown_indicator_is_named_with_file_and_chart(tmp_path):
    folder = tmp_path / "dashboards"
    shutil.copytree(DASHBOARD_DIR, folder)
    broken = folder / "resources.yaml"
    broken.write_text(
        broken.read_text(encoding="utf-8").replace("indicator: RS01", "indicator: RS99"), encoding="utf-8"
    )
    with pytest.raises(BundleError, match=r"resources.yaml chart staff: indicator RS99 is not in config/indicators"):
        build(column_types(), folder)
