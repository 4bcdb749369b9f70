"""Feed files as bytes, byte-for-byte reproducible: the same rows give the same file (fixed column order, LF line
ends, no clock inside the data file; workbooks with fixed zip and document times). Pure functions.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from exports.catalog import Feed
from exports.datasets import SHEET

FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def _text(value: Any, kind: str) -> str:
    """A cell as the spec writes it: dates ISO 8601, booleans 1/0, decimals as stored, empty for null."""
    if value is None:
        return ""
    if kind == "boolean":
        return "1" if value else "0"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")  # as the warehouse holds it (its scale), never in exponent form
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.loads(value) if isinstance(value, str) else value
    if kind == "boolean":
        return bool(value)
    if kind in ("integer",):
        return int(value)
    if kind == "decimal":
        return float(value)
    return _text(value, kind)


def render_csv(feed: Feed, rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in feed.columns])
    for row in rows:
        writer.writerow([_text(row[c.name], c.type) for c in feed.columns])
    encoding = feed.format.get("encoding", "utf-8")
    try:
        body = buffer.getvalue().encode(encoding)
    except UnicodeEncodeError as exc:
        bad = buffer.getvalue()[exc.start : exc.end]
        raise ValueError(
            f"{feed.name}: '{bad}' cannot be written in {encoding}; choose encoding utf-8 in "
            f"config/exports/{feed.name}.yaml"
        ) from None
    return (b"\xef\xbb\xbf" if feed.format.get("bom") and encoding == "utf-8" else b"") + body


def render_jsonl(feed: Feed, rows: list[dict[str, Any]]) -> bytes:
    lines = [
        json.dumps(
            {c.name: _json(row[c.name], c.type) for c in feed.columns}, ensure_ascii=False, separators=(",", ":")
        )
        for row in rows
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def render_xlsx(feed: Feed, rows: list[dict[str, Any]], notes: list[list[str]], generated_for: date) -> bytes:
    """One sheet per group (indicator family) with Chinese headers, then a notes sheet (说明)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    workbook.remove(workbook.active)
    sheets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        sheets.setdefault(row.get(SHEET) or "数据", []).append(row)
    bold = Font(bold=True)
    for title, members in (sheets or {"数据": []}).items():
        sheet = workbook.create_sheet(title[:31])
        sheet.append([c.zh for c in feed.columns])
        for cell in sheet[1]:
            cell.font = bold
        for row in members:
            sheet.append(
                [
                    _json(row[c.name], c.type)
                    if c.type in ("integer", "decimal", "boolean")
                    else _text(row[c.name], c.type)
                    for c in feed.columns
                ]
            )
        sheet.freeze_panes = "A2"
        for letter, column in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", feed.columns, strict=False):
            sheet.column_dimensions[letter].width = max(10, min(40, 2 * len(column.zh) + 4))
    notes_sheet = workbook.create_sheet("说明")
    for line in notes:
        notes_sheet.append(line)
    notes_sheet.column_dimensions["A"].width = 14
    notes_sheet.column_dimensions["B"].width = 30
    notes_sheet.column_dimensions["C"].width = 80
    moment = datetime.combine(generated_for, datetime.min.time())
    workbook.properties.creator = "荥阳医共体数据资源中心"
    workbook.properties.created = workbook.properties.modified = moment
    raw = io.BytesIO()
    workbook.save(raw)
    return _normalise_zip(raw.getvalue(), f"{moment:%Y-%m-%dT%H:%M:%SZ}")


def _normalise_zip(content: bytes, modified: str) -> bytes:
    """The same workbook → the same bytes: fixed entry times, and the document's modified time set to the period
    (openpyxl stamps the wall clock on save, whatever the properties say)."""
    source = zipfile.ZipFile(io.BytesIO(content))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + modified.encode() + rb"\g<2>",
                    data,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            target.writestr(entry, data)
    return out.getvalue()


def render(feed: Feed, rows: list[dict[str, Any]], notes: list[list[str]], period_end: date) -> bytes:
    if feed.extension == "csv":
        return render_csv(feed, rows)
    if feed.extension == "jsonl":
        return render_jsonl(feed, rows)
    return render_xlsx(feed, rows, notes, period_end)


def render_manifest(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode("utf-8")
