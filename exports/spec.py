"""docs/exports.md: the receivers' specification of every feed, generated from the export catalog (never typed
twice). `./drc export spec` writes it; `--check` (run in the tests) fails when it is stale."""

from __future__ import annotations

from core.settings import PROJECT_ROOT
from exports.catalog import PSEUDONYMISATION, Catalog, catalog
from exports.runner import MANIFEST_SPEC, PRODUCER

SPEC_FILE = PROJECT_ROOT / "docs" / "exports.md"
PERIOD_ZH = {"day": "日（文件期间键 YYYYMMDD）", "month": "月（文件期间键 YYYYMM）"}
FORMAT_ZH = {
    "csv": "CSV（逗号分隔，首行列名，LF 换行）",
    "jsonl": "JSON Lines（UTF-8，每行一个对象）",
    "xlsx": "Excel 工作簿（中文表头；每个指标族一张表，“说明”表列出口径与公式）",
}
CORRECTIONS_ZH = {
    "new_version": "已上报期间的迟到数据：生成新版本（_V2、_V3…）并在清单中写明原因，从不覆盖旧版本",
    "next_period": "已完整上报的期间不再修订；之后的变更随变更当日的文件上报",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_spec(cat: Catalog | None = None) -> str:
    cat = cat or catalog()
    out = [
        "# 上报数据接口规范 · Export feed specification",
        "",
        "Generated from `config/exports/` by `./drc export spec`; do not edit by hand.",
        "",
        f"报送单位：{PRODUCER['name']}（{PRODUCER['code']}）。每次上报是一对文件：数据文件与清单 "
        "`<文件名>.manifest.json`，放在接收方 SFTP 目录 `<remote_dir>/<feed>/<期间>/` 下；先传数据文件、后传清单，"
        "均以临时名上传后改名，看到清单即表示数据文件完整。",
        "",
        f"## 清单（manifest，规范 `{MANIFEST_SPEC}`）",
        "",
        "| 字段 | 含义 |",
        "|---|---|",
        "| feed / feed_zh | 数据集标识与中文名 |",
        "| producer / receiver | 报送单位 / 接收单位 |",
        "| period | 期间：type（day/month）、key、start、end |",
        "| version / supersedes / reason | 版本号（从 1 起）、所替代的版本、生成原因"
        "（首次上报、迟到数据更正、补齐…） |",
        "| complete / missing | 输入是否完整；不完整时列出缺失的来源系统、表、机构与原因 |",
        "| file / format / row_count / bytes / sha256 | 数据文件名、格式、行数、字节数、SHA-256 校验值 |",
        "| contract_version / columns | 列契约版本与各列（name、zh、type、code_system） |",
        "| pseudonymisation / privacy | 数据级别；假名化数据另给 k、准标识符、最小组人数、抑制的行数与人数 |",
        "| deadline / generated_at | 约定的最晚上报时间、本版本生成时间 |",
        "",
        "值的写法：日期 ISO 8601（YYYY-MM-DD）；布尔 CSV 中为 1/0；空值 CSV 中为空串、JSON 中为 null；"
        "金额与比率为十进制小数。同一期间、同一数据重复运行得到逐字节相同的文件，不会重复上报。",
        "",
    ]
    for feed in cat.feeds.values():
        target = cat.targets[feed.target]
        example = feed.file_name.format(period="20261103" if feed.period == "day" else "202611")
        fmt = FORMAT_ZH[feed.extension]
        if feed.extension == "csv":
            fmt += f"，编码 {feed.format.get('encoding', 'utf-8').upper()}" + (
                "，带 BOM" if feed.format.get("bom") else "，无 BOM"
            )
        out += [
            f"## {feed.zh} · `{feed.name}`",
            "",
            "| 项 | 约定 |",
            "|---|---|",
            f"| 接收单位 | {_cell(feed.receiver)} |",
            f"| 送达 | {_cell(target.zh)}：`sftp://{target.user}@{target.host}:<{target.port_env}>"
            f"{target.remote_dir}/{feed.name}/<期间>/` |",
            f"| 周期 | {PERIOD_ZH[feed.period]}；期间结束后 {feed.deadline_days} 天 {feed.deadline_at} 前 |",
            f"| 文件 | `{example}_V<版本>.{feed.extension}` + `.manifest.json`；{fmt} |",
            f"| 数据来源 | {_cell(_dataset(feed.dataset))} |",
            f"| 完整性 | 依赖的标准数据集：{', '.join(feed.inputs) or '—'}；"
            "输入不全时等待至截止时间，之后标记为不完整上报，输入补齐后自动上报新版本 |",
            f"| 更正 | {CORRECTIONS_ZH[feed.corrections]} |",
            f"| 数据级别 | {PSEUDONYMISATION[feed.pseudonymisation]} |",
            f"| 列契约版本 | {feed.contract_version} |",
        ]
        if feed.k_anonymity:
            rule = feed.k_anonymity
            out.append(
                f"| 隐私保护 | 假名：HMAC-SHA256（每个接收方独立密钥）；k-匿名 k={rule.k}，准标识符 "
                f"{', '.join(rule.quasi_identifiers)}；"
                + ("小于 k 的组整组抑制并在清单中计数；" if rule.suppress_small_groups else "")
                + "发布前复核，仍有小于 k 的组则拒绝发布 |"
            )
        out += ["", "| 列 | 中文名 | 类型 | 代码体系 / 说明 |", "|---|---|---|---|"]
        for column in feed.columns:
            derived = {
                "pseudonym": f"由 {column.source} 生成的假名",
                "month": f"{column.source} 的年月",
                "birth_year_band": f"{column.source} 的 {column.transform_arg} 年出生年份段",
            }
            note = "；".join(x for x in (column.code_system, derived.get(column.transform or "", "")) if x)
            out.append(f"| `{column.name}` | {column.zh} | {column.type} | {_cell(note)} |")
        out.append("")
    return "\n".join(out)


def _dataset(dataset: dict) -> str:
    if dataset["kind"] == "mart":
        return f"marts.{dataset['model']}（按 {dataset['period_column']} 取期间）"
    families = ", ".join(dataset.get("families") or []) or "全部指标族"
    return (
        f"marts.fct_indicator_value，粒度 {dataset['grain']}，{families}；指标目录全部指标逐项列出，不可计算的注明原因"
    )
