"""Build the Superset asset bundle from the catalogs: dashboards (config/dashboards/), indicators
(config/indicators/) and quality dimensions (config/quality/dimensions.yaml).

Nothing about a chart is typed twice: an indicator chart names indicator codes, and its title, unit,
metric label, target colouring and description (the formula analysts read) come from the indicator
catalog. The result is the {relative path: YAML text} mapping Superset's ImportAssetsCommand takes,
with a saved query context per chart (so /api/v1/chart/{id}/data answers) and uuids derived from
slugs and keys (so re-provisioning overwrites, never duplicates).

Pure: no Superset import, no database. superset/provision.py supplies each dataset's column types
(probed from the warehouse) and imports the result.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.indicators import Catalog, Indicator, load_catalog
from core.settings import CONFIG_DIR

DASHBOARD_DIR = CONFIG_DIR / "dashboards"
DIMENSIONS_FILE = CONFIG_DIR / "quality" / "dimensions.yaml"
NAMESPACE = uuid.UUID("6f1c7a52-3d0e-4c59-9b8e-1f0d7c6a2b11")
DATABASE_UUID = "2915bedf-1d15-410b-af4e-455c52667108"
DATABASE_NAME = "数据资源中心仓库"
VERSION = "1.0.0"
INDICATOR_DATASET = "indicator"
NUMERIC_TYPES = ("numeric", "integer", "bigint", "smallint", "double precision", "real")
DARK_CSS = """
.dashboard, .dashboard-content, .grid-container, .dashboard-header-container { background: #07162e !important; }
.dashboard-component-chart-holder { background: #0e2548 !important; border: 1px solid #1d4f91; border-radius: 6px; }
"""


class BundleError(ValueError):
    """A dashboard file contradicts the catalogs; the message names the file, chart and what to fix."""


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def _dump(obj: dict, comment: str) -> str:
    return f"# {comment}\n" + yaml.safe_dump(obj, allow_unicode=True, sort_keys=False, width=120)


@dataclass
class Dataset:
    name: str
    zh: str
    sql: str
    columns: dict[str, str]
    time_column: str | None = None
    org_column: str | None = None
    metrics: dict[str, dict] = field(default_factory=dict)
    cache_timeout: int | None = None  # seconds; None = Superset's data cache default

    @property
    def uuid(self) -> str:
        return stable_uuid("dataset", self.name)

    @property
    def table_name(self) -> str:
        return f"v_{self.name}"


@dataclass
class Chart:
    dashboard: str
    key: str
    spec: dict
    chart_id: int

    @property
    def uuid(self) -> str:
        return stable_uuid("chart", self.dashboard, self.key)


@dataclass
class Bundle:
    contents: dict[str, str]
    datasets: dict[str, Dataset]
    dashboards: list[dict]  # slug, title, theme, charts [Chart]


def load_datasets(directory: Path = DASHBOARD_DIR) -> dict[str, Dataset]:
    raw = yaml.safe_load((directory / "_datasets.yaml").read_text(encoding="utf-8"))["datasets"]
    return {
        name: Dataset(
            name=name,
            zh=spec["zh"],
            sql=spec["sql"].strip(),
            columns=spec["columns"],
            time_column=spec.get("time_column"),
            org_column=spec.get("org_column"),
            metrics=spec.get("metrics", {}),
            cache_timeout=spec.get("cache_timeout"),
        )
        for name, spec in raw.items()
    }


def load_dashboards(directory: Path = DASHBOARD_DIR) -> list[dict]:
    return [
        dict(yaml.safe_load(p.read_text(encoding="utf-8")), file=p.name)
        for p in sorted(directory.glob("*.yaml"))
        if not p.name.startswith("_")
    ]


def sections(dash: dict) -> list[tuple[str | None, list[dict]]]:
    """(tab title, rows) of a dashboard: its `tabs`, or one untitled section of its `rows`."""
    if "tabs" in dash:
        return [(tab["title"], tab["rows"]) for tab in dash["tabs"]]
    return [(None, dash["rows"])]


def chart_specs(rows: list[dict]) -> list[dict]:
    return [spec for row in rows for spec in row.get("charts", [])]


def quality_dimensions() -> list[str]:
    dims = yaml.safe_load(DIMENSIONS_FILE.read_text(encoding="utf-8"))["dimensions"]
    return list(dims.values())


def target_number(target: str) -> tuple[str, float] | None:
    """'≥ 90%' -> ('<', 90): the condition that marks a value as missing its target."""
    m = re.match(r"\s*([≥≤])\s*([\d.]+)", target or "")
    if not m:
        return None
    return ("<" if m.group(1) == "≥" else ">", float(m.group(2)))


# --- metrics ---------------------------------------------------------------------------------------------


def indicator_label(ind: Indicator) -> str:
    return f"{ind.zh}（{ind.unit}）"


def indicator_metric(ind: Indicator, *, summed: bool, only: bool) -> dict:
    """The indicator's value as a Superset adhoc metric.

    summed: the chart groups several institutions into one point (by tier, type, county trend), so the
    value is recomputed from the summed numerator and denominator (ratio of sums), never averaged.
    only: the query holds rows of other indicators too, so the aggregate is filtered to this one.
    """
    cond = f" filter (where indicator_code = '{ind.code}')" if only else ""
    if summed:
        num = f"sum(numerator){cond}"
        sql = f"round({num} * {ind.scale} / nullif(sum(denominator){cond}, 0), 2)" if ind.denominator else num
    else:
        sql = f"max(value){cond}"
    return {
        "expressionType": "SQL",
        "sqlExpression": sql,
        "label": indicator_label(ind),
        "optionName": f"metric_{ind.code.lower()}_{'sum' if summed else 'value'}",
    }


def dataset_metric(ds: Dataset, name: str) -> dict:
    if name not in ds.metrics:
        raise BundleError(f"dataset {ds.name} has no metric {name!r} (config/dashboards/_datasets.yaml)")
    m = ds.metrics[name]
    return {"expressionType": "SQL", "sqlExpression": m["sql"], "label": m["zh"], "optionName": f"metric_{name}"}


def sql_metric(sql: str, label: str) -> dict:
    return {
        "expressionType": "SQL",
        "sqlExpression": sql,
        "label": label,
        "optionName": "metric_" + re.sub(r"\W", "_", label),
    }


def simple_filter(column: str, value) -> dict:
    values = value if isinstance(value, list) else [value]
    return {
        "expressionType": "SIMPLE",
        "subject": column,
        "operator": "IN",
        "comparator": values,
        "clause": "WHERE",
        "isExtra": False,
    }


def sql_filter(sql: str) -> dict:
    return {"expressionType": "SQL", "sqlExpression": sql, "clause": "WHERE"}


# --- charts ----------------------------------------------------------------------------------------------


class ChartBuilder:
    """Turns one chart entry of a dashboard file into Superset params and a query context."""

    def __init__(self, catalog: Catalog, datasets: dict[str, Dataset], types: dict[str, dict[str, str]]):
        self.catalog = catalog
        self.datasets = datasets
        self.types = types

    def indicators(self, spec: dict, where: str) -> list[Indicator]:
        if "indicator" in spec:
            codes = [spec["indicator"]]
        elif "indicators" in spec:
            codes = spec["indicators"]
        elif "select" in spec:
            sel = spec["select"]
            dims = sel.get("dimension")
            dims = [dims] if isinstance(dims, str) else dims
            codes = [
                i.code
                for i in self.catalog.indicators.values()
                if i.family == sel["family"]
                and i.kind == "scalar"
                and i.supported
                and (not dims or i.dimension in dims)
                and (not sel.get("periods") or sel["periods"] in i.periods)
                and spec["grain"] in i.grains
            ]
        else:
            return []
        found = []
        for code in codes:
            ind = self.catalog.indicators.get(code)
            if ind is None:
                raise BundleError(f"{where}: indicator {code} is not in config/indicators/")
            if not ind.supported or ind.kind != "scalar":
                raise BundleError(
                    f"{where}: indicator {code} ({ind.zh}) has no values in fct_indicator_value "
                    f"(supported: {ind.supported}, kind: {ind.kind})"
                )
            if spec.get("grain") and spec["grain"] not in ind.grains:
                raise BundleError(f"{where}: indicator {code} is not computed at grain {spec['grain']}")
            if spec.get("period") and spec["period"] not in ind.periods:
                raise BundleError(f"{where}: indicator {code} is not computed per {spec['period']}")
            found.append(ind)
        if not found:
            raise BundleError(f"{where}: the selection {spec.get('select')} matches no indicator")
        return found

    def is_time(self, ds: Dataset, column: str | None) -> bool:
        return bool(column) and self.types[ds.name].get(column, "") in (
            "date",
            "timestamp with time zone",
            "timestamp without time zone",
        )

    def build(self, chart: Chart, where: str) -> tuple[str, str, dict, dict, str]:
        """(viz_type, title, params, query, description) of a chart."""
        spec = chart.spec
        ds = self.datasets[spec.get("dataset", INDICATOR_DATASET)]
        kind = spec["kind"]
        inds = self.indicators(spec, where) if ds.name == INDICATOR_DATASET else []
        if ds.name == INDICATOR_DATASET and not inds:
            raise BundleError(f"{where}: an indicator chart needs indicator, indicators or select")
        summed = bool(spec.get("sum"))
        several = len(inds) > 1

        filters: list[dict] = []
        if inds:
            filters += [
                simple_filter("indicator_code", [i.code for i in inds]),
                simple_filter("grain_type", spec["grain"]),
                simple_filter("period_type", spec["period"]),
            ]
        filters += [simple_filter(c, v) for c, v in (spec.get("where") or {}).items()]
        if spec.get("sql_where"):
            filters.append(sql_filter(spec["sql_where"]))
        if spec.get("current_period"):  # on a dashboard without a 统计期 filter: always the current period
            filters.append(simple_filter("is_current_period", [True]))

        # metrics: per indicator, or the dataset's named ones, or an inline aggregate
        if inds and (kind in ("table", "radar", "compare_table") or (several and kind == "bar" and spec.get("by"))):
            metrics = [indicator_metric(i, summed=summed, only=several) for i in inds]
        elif inds:
            metrics = (
                [indicator_metric(inds[0], summed=summed, only=False)]
                if not several
                else [sql_metric("max(value)", "指标值")]
            )
        elif "metrics" in spec:
            metrics = [dataset_metric(ds, m) for m in spec["metrics"]]
        elif "metric" in spec:
            metrics = [dataset_metric(ds, spec["metric"])]
        elif "metric_sql" in spec:
            metrics = [sql_metric(spec["metric_sql"], spec["metric_zh"])]
        elif kind == "raw_table":
            metrics = []
        else:
            raise BundleError(f"{where}: no metric (metric, metrics, metric_sql or an indicator)")

        title = spec.get("title") or (inds[0].zh if len(inds) == 1 else None)
        if not title:
            raise BundleError(f"{where}: a chart of several indicators needs a title")
        # a chart over an indicator's own mart (ranking, distribution) names it in `where`
        ranked = (spec.get("where") or {}).get("indicator_code")
        described = inds or ([self.catalog.indicators[ranked]] if ranked in self.catalog.indicators else [])
        description = self.describe(described, ds, spec)
        by = spec.get("by")
        by_cols = [by] if isinstance(by, str) else list(by or [])
        series = spec.get("series")
        if several and kind in ("line", "bar", "funnel", "pie") and not (kind == "bar" and by):
            series = series or "indicator_name"

        common = {
            "adhoc_filters": filters,
            "row_limit": spec.get("row_limit", 1000),
            "extra_form_data": {},
            "dashboards": [],
        }
        query: dict = {"columns": [], "metrics": metrics, "orderby": [], "row_limit": common["row_limit"]}
        time_grain = "P1M" if spec.get("period") == "month" or (by and "period" in str(by)) else "P1D"
        if spec.get("period") == "year":
            time_grain = "P1Y"
        fmt = self.number_format(inds, ds, spec)

        def axis(column: str) -> dict | str:
            if self.is_time(ds, column):
                return {
                    "timeGrain": time_grain,
                    "columnType": "BASE_AXIS",
                    "sqlExpression": column,
                    "label": column,
                    "expressionType": "SQL",
                }
            return column

        if kind in ("big_number", "big_number_total"):
            metric = metrics[0]
            params = {
                "viz_type": kind,
                "metric": metric,
                "y_axis_format": fmt,
                "header_font_size": 0.3,
                "subheader_font_size": 0.125,
                "subtitle": inds[0].unit if inds else "",
                "time_format": "%Y-%m",
            }
            if kind == "big_number":
                params.update(
                    {
                        "x_axis": ds.time_column,
                        "time_grain_sqla": time_grain,
                        "compare_lag": 1,
                        "compare_suffix": "环比上期",
                        "show_trend_line": True,
                        "start_y_axis_at_zero": True,
                        "show_timestamp": True,
                    }
                )
                query["columns"] = [axis(ds.time_column)]
                query["orderby"] = [[ds.time_column, True]]
        elif kind == "gauge":
            ind = inds[0] if inds else None
            top = spec.get("max") or (100 if (ind is None or ind.unit == "%") else None)
            params = {
                "viz_type": "gauge_chart",
                "metric": metrics[0],
                "groupby": [],
                "min_val": 0,
                "max_val": top,
                "start_angle": 225,
                "end_angle": -45,
                "font_size": 14,
                "number_format": fmt,
                "value_formatter": "",
                "show_pointer": True,
                "animation": True,
                "show_axis_line_ticks": False,
                "show_split_line": False,
                "split_number": 5,
                "show_progress": True,
                "overlap": True,
                "round_cap": False,
            }
            if ind and (tgt := target_number(ind.target)) and top:
                params["intervals"] = f"{tgt[1]},{top}"
                params["interval_color_indices"] = "4,1" if tgt[0] == "<" else "1,4"
        elif kind in ("line", "bar", "area"):
            x = by_cols[0] if by_cols else ds.time_column
            viz = {"line": "echarts_timeseries_line", "bar": "echarts_timeseries_bar", "area": "echarts_area"}[kind]
            timed = self.is_time(ds, x)
            params = {
                "viz_type": viz,
                "x_axis": x,
                "time_grain_sqla": time_grain if timed else None,
                "metrics": metrics,
                "groupby": [series] if series else [],
                "orientation": "horizontal" if spec.get("horizontal") else "vertical",
                "stack": "Stack" if spec.get("stack") else None,
                "show_legend": True,
                "legendType": "scroll",
                "legendOrientation": "top",
                "rich_tooltip": True,
                "tooltipTimeFormat": "%Y-%m-%d" if time_grain == "P1D" else "%Y-%m",
                "x_axis_time_format": "%Y-%m-%d" if time_grain == "P1D" else "%Y-%m",
                "y_axis_format": fmt,
                "truncateXAxis": True,
                "truncate_metric": True,
                "markerEnabled": True,
                "show_value": kind == "bar" and not spec.get("stack"),
                "x_axis_sort_asc": timed,
                "zoomable": False,
                "comparison_type": "values",
                "annotation_layers": [],
                "forecastEnabled": False,
                "y_axis_title_margin": 15,
                "x_axis_title_margin": 15,
            }
            if not timed:
                params["x_axis_sort"] = metrics[0]["label"]
                params["x_axis_sort_asc"] = bool(spec.get("horizontal"))
            query["columns"] = [axis(x)] + ([series] if series else [])
            query["orderby"] = [[x, True]] if timed else [[metrics[0], False]]
        elif kind in ("pie", "funnel"):
            group = by_cols or ([series] if series else [])
            params = {
                "viz_type": kind,
                "metric": metrics[0],
                "groupby": group,
                "sort_by_metric": True,
                "number_format": fmt,
                "show_legend": True,
                "legendType": "scroll",
                "legendOrientation": "bottom",
                "show_labels": True,
                "label_type": "key_value_percent" if kind == "pie" else "key_value",
                "tooltip_label_type": "key_value_percent",
            }
            if kind == "pie":
                params.update(
                    {
                        "labels_outside": True,
                        "label_line": True,
                        "outerRadius": 62,
                        "innerRadius": 35,
                        "donut": True,
                        "show_labels_threshold": 3,
                        "label_type": "key_percent",
                    }
                )
            query["columns"] = group
            query["orderby"] = [[metrics[0], False]]
        elif kind == "radar":
            if ds.name != INDICATOR_DATASET:
                axes = spec.get("axes") or (quality_dimensions() if by == "dimension_zh" else None)
                if not axes:
                    raise BundleError(f"{where}: a radar over {ds.name} needs axes")
                template = spec.get("axis_sql", "round(avg(score) filter (where {by} = '{axis}'), 2)")
                metrics = [sql_metric(template.format(by=by, axis=a), a) for a in axes]
            params = {
                "viz_type": "radar",
                "groupby": [series] if series else [],
                "metrics": metrics,
                "column_config": {
                    m["label"]: {"radarMetricMaxValue": 100}
                    for m in metrics
                    if "%" in m["label"] or ds.name == "dq_score"
                },
                "show_legend": True,
                "legendOrientation": "top",
                "show_labels": True,
                "label_type": "value",
                "number_format": fmt,
                "is_circle": False,
            }
            query["columns"] = [series] if series else []
            query["metrics"] = metrics
        elif kind == "heatmap":
            x = by_cols[0]
            params = {
                "viz_type": "heatmap_v2",
                "x_axis": x,
                "groupby": series,
                "metric": metrics[0],
                "time_grain_sqla": time_grain if self.is_time(ds, x) else None,
                "linear_color_scheme": "blue_white_yellow",
                "normalize_across": "heatmap",
                "show_legend": True,
                "show_values": True,
                "sort_x_axis": "alpha_asc",
                "sort_y_axis": "alpha_asc",
                "xscale_interval": -1,
                "yscale_interval": -1,
                "left_margin": "auto",
                "bottom_margin": "auto",
                "y_axis_format": fmt,
                "x_axis_time_format": "%Y-%m-%d" if time_grain == "P1D" else "%Y-%m",
                "value_bounds": [None, None],
            }
            query["columns"] = [axis(x), series]
        elif kind == "sankey":
            params = {"viz_type": "sankey_v2", "source": spec["source"], "target": spec["target"], "metric": metrics[0]}
            query["columns"] = [spec["source"], spec["target"]]
        elif kind in ("table", "compare_table"):
            if kind == "compare_table":
                by_cols = ["indicator_name", "unit"]
                metrics = [
                    sql_metric("max(value)", "本期值"),
                    sql_metric("max(value_prev_month)", "上期值"),
                    sql_metric(
                        "round(100.0 * (max(value) - max(value_prev_month)) / nullif(max(value_prev_month), 0), 1)",
                        "环比（%）",
                    ),
                    sql_metric("max(value_prev_year)", "去年同期值"),
                    sql_metric(
                        "round(100.0 * (max(value) - max(value_prev_year)) / nullif(max(value_prev_year), 0), 1)",
                        "同比（%）",
                    ),
                ]
            params = {
                "viz_type": "table",
                "query_mode": "aggregate",
                "groupby": by_cols,
                "metrics": metrics,
                "all_columns": [],
                "percent_metrics": [],
                "order_by_cols": [],
                "server_pagination": False,
                "table_timestamp_format": "%Y-%m-%d",
                "page_length": 0,
                "include_search": True,
                "show_cell_bars": False,
                "color_pn": True,
                "allow_rearrange_columns": False,
                "conditional_formatting": self.formatting(inds, metrics, spec, kind),
            }
            # rows ordered by the chart's `order`, else by its first metric, largest first
            order = (
                next((m for m in metrics if m["optionName"] == f"metric_{spec['order']}"), spec["order"])
                if spec.get("order")
                else metrics[0]
            )
            params["timeseries_limit_metric"] = order
            params["order_desc"] = not spec.get("ascending")
            query["orderby"] = [[order, bool(spec.get("ascending"))]]
            query["columns"] = by_cols
            query["metrics"] = metrics
        elif kind == "raw_table":
            cols = spec["columns"]
            order = spec.get("order", cols[0])
            params = {
                "viz_type": "table",
                "query_mode": "raw",
                "all_columns": cols,
                "groupby": [],
                "metrics": [],
                "order_by_cols": [json.dumps([order, bool(spec.get("ascending"))])],
                "server_pagination": False,
                "page_length": 20,
                "include_search": True,
                "table_timestamp_format": "%Y-%m-%d",
                "allow_rearrange_columns": False,
            }
            query = {
                "columns": cols,
                "metrics": [],
                "orderby": [[order, bool(spec.get("ascending"))]],
                "row_limit": common["row_limit"],
            }
        else:
            raise BundleError(f"{where}: unknown chart kind {kind!r}")

        params = {**common, **params}
        query.update(self.query_filters(ds, filters, spec, kind, inds))
        return params["viz_type"], title, params, query, description

    def number_format(self, inds: list[Indicator], ds: Dataset, spec: dict) -> str:
        if inds:
            return (
                ",d"
                if all(i.unit in ("人次", "人", "例", "个", "张", "台") and not i.denominator for i in inds)
                else ",.2f"
            )
        name = spec.get("metric") or (spec.get("metrics") or [None])[0]
        return ds.metrics.get(name, {}).get("format", "SMART_NUMBER") if name else "SMART_NUMBER"

    def formatting(self, inds: list[Indicator], metrics: list[dict], spec: dict, kind: str) -> list[dict]:
        """Red where an indicator misses its catalog target (or a chart's format_below threshold)."""
        rules = []
        for ind in inds:
            tgt = target_number(ind.target)
            if tgt and kind == "table":
                rules.append(
                    {
                        "column": indicator_label(ind),
                        "operator": tgt[0],
                        "targetValue": tgt[1],
                        "colorScheme": "colorError",
                    }
                )
        for name, threshold in (spec.get("format_below") or {}).items():
            label = next(m["label"] for m in metrics if m["optionName"] == f"metric_{name}")
            rules.append({"column": label, "operator": "<", "targetValue": threshold, "colorScheme": "colorError"})
        if kind == "compare_table":
            for label in ("环比（%）", "同比（%）"):
                rules += [
                    {"column": label, "operator": "<", "targetValue": 0, "colorScheme": "colorError"},
                    {"column": label, "operator": ">", "targetValue": 0, "colorScheme": "colorSuccess"},
                ]
        return rules

    def query_filters(self, ds: Dataset, filters: list[dict], spec: dict, kind: str, inds: list[Indicator]) -> dict:
        """The filters of the saved query context. A chart of one period (not a trend) answers the API
        for the current period; in the browser the dashboard's 统计期 filter picks it."""
        simple = [
            {"col": f["subject"], "op": "IN", "val": f["comparator"]}
            for f in filters
            if f["expressionType"] == "SIMPLE"
        ]
        where = [f["sqlExpression"] for f in filters if f["expressionType"] == "SQL"]
        period = spec.get("period") or (spec.get("where") or {}).get("period_type")
        if period and not spec.get("trend") and "is_current_period" in ds.columns and not spec.get("current_period"):
            simple.append({"col": "is_current_period", "op": "==", "val": True})
        return {
            "filters": simple,
            "extras": {"where": " and ".join(f"({w})" for w in where), "having": ""},
            "time_range": "No filter",
            "granularity": None,
            "applied_time_extras": {},
            "annotation_layers": [],
            "series_limit": 0,
            "order_desc": True,
            "url_params": {},
            "custom_params": {},
            "custom_form_data": {},
            "post_processing": [],
        }

    def describe(self, inds: list[Indicator], ds: Dataset, spec: dict) -> str:
        """The chart's description: each indicator's formula from the catalog, or the dataset's meaning."""
        if not inds:
            names = [spec["metric"]] if "metric" in spec else list(spec.get("metrics") or [])
            formulas = [ds.metrics[n]["formula"] for n in names if ds.metrics.get(n, {}).get("formula")]
            return "\n".join([*formulas, f"数据：{ds.zh}。"])
        lines = []
        for ind in inds:
            line = f"【{ind.code} {ind.zh}】{ind.formula}"
            if ind.target:
                line += f"；目标值 {ind.target}"
            if ind.note:
                line += f"（{ind.note}）"
            lines.append(line)
        if spec.get("sum"):
            lines.append("分组值由各机构的分子、分母分别加总后计算（不是机构比率的平均）。")
        return "\n".join(lines)


def is_period_chart(spec: dict, period: str) -> bool:
    """Does the dashboard's 统计月份/统计年度 filter apply to this chart (one period, not a trend)?"""
    if spec.get("trend"):
        return False
    if spec.get("period"):
        return spec["period"] == period
    return (spec.get("where") or {}).get("period_type") == period


# --- dashboards ------------------------------------------------------------------------------------------

FILTERS = {
    "month": ("统计月份", "filter_select", "period_label"),
    "year": ("统计年度", "filter_select", "period_label"),
    "township": ("乡镇（街道）", "filter_select", "township"),
    "institution": ("机构", "filter_select", "org_name"),
    "tier": ("医共体层级", "filter_select", "org_tier"),
    "dates": ("业务日期", "filter_time", None),
}


def native_filters(dash: dict, charts: list[Chart], datasets: dict[str, Dataset]) -> list[dict]:
    out = []
    for name in dash.get("filters", []):
        zh, ftype, column = FILTERS[name]
        fid = f"NATIVE_FILTER-{name}"
        scope_ids = [c.chart_id for c in charts]
        if name in ("month", "year"):
            scope_ids = [c.chart_id for c in charts if is_period_chart(c.spec, name)]
            if not scope_ids:
                raise BundleError(f"{dash['file']}: filter {name} applies to no chart")
        excluded = [c.chart_id for c in charts if c.chart_id not in scope_ids]
        target = {}
        if column:
            owner = next(
                (
                    datasets[c.spec.get("dataset", INDICATOR_DATASET)]
                    for c in charts
                    if c.chart_id in scope_ids and column in datasets[c.spec.get("dataset", INDICATOR_DATASET)].columns
                ),
                None,
            )
            if owner is None:
                raise BundleError(f"{dash['file']}: filter {name} needs a chart whose dataset has {column}")
            target = {"column": {"name": column}, "datasetUuid": owner.uuid}
        control = {
            "enableEmptyFilter": name in ("month", "year"),
            "defaultToFirstItem": name in ("month", "year"),
            "multiSelect": name not in ("month", "year"),
            "searchAllOptions": False,
            "inverseSelection": False,
            "sortAscending": name not in ("month", "year"),
        }
        # 统计月份 lists months only (the dataset holds days, quarters and years too): pre-filtered values
        prefilter = []
        if name in ("month", "year"):
            if "period_type" not in owner.columns:
                raise BundleError(f"{dash['file']}: filter {name} needs period_type in dataset {owner.name}")
            prefilter = [simple_filter("period_type", [name])]
        out.append(
            {
                "id": fid,
                "name": zh,
                "filterType": ftype,
                "type": "NATIVE_FILTER",
                "adhoc_filters": prefilter,
                "description": "",
                "targets": [target],
                "controlValues": control if column else {},
                "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
                "cascadeParentIds": [],
                "scope": {"rootPath": ["ROOT_ID"], "excluded": excluded},
                "chartsInScope": scope_ids,
                "tabsInScope": [],
            }
        )
    return out


def position(dash: dict, charts: dict[str, Chart], titles: dict[str, str]) -> dict:
    """Superset's layout: the rows (12 columns wide) in order, inside one tab each when the dashboard has tabs
    (a tab's charts load when it is first opened, so a long dashboard opens fast)."""
    pos: dict = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dash["title"]}},
    }
    tabbed = "tabs" in dash
    if tabbed:
        pos["GRID_ID"]["children"] = ["TABS-main"]
        pos["TABS-main"] = {
            "type": "TABS",
            "id": "TABS-main",
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {},
        }
    for t, (title, rows) in enumerate(sections(dash)):
        parents = ["ROOT_ID", "GRID_ID"]
        container = pos["GRID_ID"]
        if tabbed:
            tid = f"TAB-{t}"
            pos[tid] = {
                "type": "TAB",
                "id": tid,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID", "TABS-main"],
                "meta": {"text": title, "defaultText": "标签页", "placeholder": "标签页"},
            }
            pos["TABS-main"]["children"].append(tid)
            parents, container = ["ROOT_ID", "GRID_ID", "TABS-main", tid], pos[tid]
        for n, row in enumerate(rows):
            if "header" in row:
                hid = f"HEADER-{t}-{n}"
                pos[hid] = {
                    "type": "HEADER",
                    "id": hid,
                    "children": [],
                    "parents": parents,
                    "meta": {
                        "text": row["header"],
                        "headerSize": "MEDIUM_HEADER",
                        "background": "BACKGROUND_TRANSPARENT",
                    },
                }
                container["children"].append(hid)
                continue
            rid = f"ROW-{t}-{n}"
            pos[rid] = {
                "type": "ROW",
                "id": rid,
                "children": [],
                "parents": parents,
                "meta": {"background": "BACKGROUND_TRANSPARENT"},
            }
            container["children"].append(rid)
            if sum(c.get("width", 4) for c in row["charts"]) > 12:
                raise BundleError(f"{dash['file']}: row {n + 1} of {title or 'the dashboard'} is wider than 12")
            for spec in row["charts"]:
                chart = charts[spec["key"]]
                cid = f"CHART-{spec['key']}"
                pos[rid]["children"].append(cid)
                pos[cid] = {
                    "type": "CHART",
                    "id": cid,
                    "children": [],
                    "parents": [*parents, rid],
                    "meta": {
                        "chartId": chart.chart_id,
                        "uuid": chart.uuid,
                        "sliceName": titles[spec["key"]],
                        "width": spec.get("width", 4),
                        "height": spec.get("height", 50),
                    },
                }
    return pos


def dataset_yaml(ds: Dataset, types: dict[str, str]) -> dict:
    missing = sorted(set(ds.columns) - set(types))
    if missing:
        raise BundleError(f"dataset {ds.name}: its SQL returns no column {', '.join(missing)}")
    columns = []
    for name, zh in ds.columns.items():
        pg_type = types[name]
        is_time = pg_type in ("date",) or pg_type.startswith("timestamp")
        columns.append(
            {
                "column_name": name,
                "verbose_name": zh,
                "is_dttm": is_time,
                "is_active": True,
                "type": pg_type.upper(),
                "advanced_data_type": None,
                "groupby": pg_type not in NUMERIC_TYPES or name in ("rank", "rank_in_type"),
                "filterable": True,
                "expression": None,
                "description": None,
                "python_date_format": None,
                "extra": None,
            }
        )
    metrics = [
        {
            "metric_name": name,
            "verbose_name": m["zh"],
            "metric_type": None,
            "expression": m["sql"],
            "description": None,
            "d3format": m.get("format"),
            "extra": None,
            "warning_text": None,
        }
        for name, m in ds.metrics.items()
    ]
    return {
        "table_name": ds.table_name,
        "schema": "marts",
        "catalog": "warehouse",
        "main_dttm_col": ds.time_column,
        "description": ds.zh,
        "default_endpoint": None,
        "offset": 0,
        "cache_timeout": ds.cache_timeout,
        "sql": ds.sql,
        "params": None,
        "template_params": None,
        "filter_select_enabled": True,
        "fetch_values_predicate": None,
        "extra": None,
        "normalize_columns": False,
        "always_filter_main_dttm": False,
        "uuid": ds.uuid,
        "database_uuid": DATABASE_UUID,
        "version": VERSION,
        "metrics": metrics,
        "columns": columns,
    }


def database_yaml() -> dict:
    """The warehouse as Superset reads it: role drc_bi (marts, dq, ingest only), session time zone UTC so
    a day truncated on a DATE column is that day's midnight in UTC, the zone Superset shows times in."""
    return {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": "postgresql+psycopg2://drc_bi:XXXXXXXXXX@127.0.0.1:5433/warehouse",
        "cache_timeout": None,
        "expose_in_sqllab": True,  # for the roles with sql_lab in roles.yaml only (the others lack SQL Lab)
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_file_upload": False,
        "extra": {
            "allows_virtual_table_explore": True,
            "metadata_params": {},
            "engine_params": {"connect_args": {"options": "-c timezone=UTC"}},
            "schemas_allowed_for_file_upload": [],
        },
        "impersonate_user": False,
        "uuid": DATABASE_UUID,
        "version": VERSION,
    }


def build(types: dict[str, dict[str, str]], directory: Path = DASHBOARD_DIR) -> Bundle:
    """The whole bundle. types: dataset name -> {column: PostgreSQL type}, probed from the warehouse."""
    catalog = load_catalog()
    datasets = load_datasets(directory)
    builder = ChartBuilder(catalog, datasets, types)
    contents = {
        "metadata.yaml": _dump(
            {"version": VERSION, "type": "assets", "timestamp": "2026-12-01T00:00:00+00:00"},
            "Generated by superset/bundle.py from config/dashboards/; do not edit",
        ),
        "databases/warehouse.yaml": _dump(database_yaml(), "数据资源中心仓库 (password given at import)"),
    }
    for ds in datasets.values():
        contents[f"datasets/warehouse/{ds.table_name}.yaml"] = _dump(dataset_yaml(ds, types[ds.name]), ds.zh)
    dashboards = []
    for dash in load_dashboards(directory):
        specs = [spec for _, rows in sections(dash) for spec in chart_specs(rows)]
        keys = [s["key"] for s in specs]
        if len(set(keys)) != len(keys):
            raise BundleError(f"{dash['file']}: chart keys repeat")
        charts = {s["key"]: Chart(dash["slug"], s["key"], s, n + 1) for n, s in enumerate(specs)}
        titles = {}
        for chart in charts.values():
            where = f"config/dashboards/{dash['file']} chart {chart.key}"
            ds = datasets[chart.spec.get("dataset", INDICATOR_DATASET)]
            viz, title, params, query, description = builder.build(chart, where)
            titles[chart.key] = title
            params["datasource"] = f"{ds.uuid}__table"
            query_context = {
                "datasource": {"id": 0, "type": "table"},
                "force": False,
                "queries": [query],
                "form_data": params,
                "result_format": "json",
                "result_type": "full",
            }
            contents[f"charts/{dash['slug']}/{chart.key}.yaml"] = _dump(
                {
                    "slice_name": title,
                    "description": description,
                    "certified_by": None,
                    "certification_details": None,
                    "viz_type": viz,
                    "params": params,
                    "query_context": json.dumps(query_context, ensure_ascii=False),
                    "cache_timeout": None,
                    "uuid": chart.uuid,
                    "dataset_uuid": ds.uuid,
                    "version": VERSION,
                },
                f"{dash['title']} · {title}",
            )
        dash_uuid = stable_uuid("dashboard", dash["slug"])
        metadata = {
            "color_scheme": "supersetColors",
            "refresh_frequency": 0,
            "timed_refresh_immune_slices": [],
            "expanded_slices": {},
            "label_colors": {},
            "shared_label_colors": [],
            "color_scheme_domain": [],
            "cross_filters_enabled": True,
            "default_filters": "{}",
            "global_chart_configuration": {
                "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
                "chartsInScope": [c.chart_id for c in charts.values()],
            },
            "native_filter_configuration": native_filters(dash, list(charts.values()), datasets),
        }
        contents[f"dashboards/{dash['slug']}.yaml"] = _dump(
            {
                "dashboard_title": dash["title"],
                "description": dash.get("description"),
                "css": DARK_CSS if dash.get("theme") == "dark" else "",
                "slug": dash["slug"],
                "certified_by": None,
                "certification_details": None,
                "published": True,
                "uuid": dash_uuid,
                "version": VERSION,
                "position": position(dash, charts, titles),
                "metadata": metadata,
            },
            dash["title"],
        )
        dashboards.append(
            {
                "slug": dash["slug"],
                "title": dash["title"],
                "theme": dash.get("theme"),
                "uuid": dash_uuid,
                "charts": list(charts.values()),
                "titles": titles,
            }
        )
    return Bundle(contents=contents, datasets=datasets, dashboards=dashboards)
