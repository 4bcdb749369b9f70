"""Are a feed's inputs complete for a period? The member-system tables behind its silver entities (from
config/mappings/) must have been collected: not down, not stopped by schema drift or a delete guard, no file
of the period in quarantine, no silver table held back by a blocking quality rule. What is missing is named
(source, table, institutions, why) so the receiver knows what the incomplete file lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

import sqlalchemy as sa

from ingestion.registry import load_sources
from spark_jobs.model import mapped_sources, source_mapping

PROBLEM_STATUSES = {"failed": "采集失败", "source_down": "来源系统不可达", "stopped": "因结构变更或删除保护暂停采集"}


@dataclass(frozen=True)
class MissingInput:
    source_system: str
    table: str
    reason: str
    institutions: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "source_system": self.source_system,
            "table": self.table,
            "reason": self.reason,
            "institutions": list(self.institutions),
        }


@cache
def feeding_tables(entities: tuple[str, ...]) -> dict[str, set[str]]:
    """source system → the bronze tables mapped to any of the entities."""
    tables: dict[str, set[str]] = {}
    for source in mapped_sources():
        for table in source_mapping(source).get("tables") or []:
            if table["entity"] in entities:
                tables.setdefault(source, set()).add(table["bronze_table"])
                for lookup in (table.get("lookups") or {}).values():
                    tables[source].add(lookup["bronze_table"])
    return tables


def missing_inputs(conn: sa.Connection, entities: tuple[str, ...], start: date, end: date) -> list[MissingInput]:
    sources = load_sources()
    feeding = feeding_tables(entities)
    if not feeding:
        return []
    institutions = {name: tuple(s.institutions) for name, s in sources.items()}
    missing: list[MissingInput] = []
    status_rows = (
        conn.execute(
            sa.text(
                "SELECT source_system, table_name, last_status, last_error FROM ingest.v_table_status "
                "WHERE source_system = ANY(:sources)"
            ),
            {"sources": list(feeding)},
        )
        .mappings()
        .all()
    )
    seen = {(r["source_system"], r["table_name"]) for r in status_rows}
    for row in status_rows:
        source, table = row["source_system"], row["table_name"]
        if row["last_status"] in PROBLEM_STATUSES and (table in feeding[source] or table == "*"):
            detail = (row["last_error"] or "").splitlines()[0][:200] if row["last_error"] else ""
            missing.append(
                MissingInput(
                    source,
                    table,
                    PROBLEM_STATUSES[row["last_status"]] + (f"：{detail}" if detail else ""),
                    institutions.get(source, ()),
                )
            )
    for source, tables in feeding.items():
        if source in sources and not any((source, t) in seen for t in (*tables, "*")):
            missing.append(MissingInput(source, "*", "尚未采集", institutions.get(source, ())))
    for row in conn.execute(
        sa.text(
            "SELECT source_system, coalesce(table_name, '*') AS table_name, string_agg(DISTINCT file_name, ', ') "
            "AS files, string_agg(DISTINCT reason, '; ') AS reasons FROM ingest.file_ledger f "
            "WHERE status = 'quarantined' AND business_date BETWEEN :start AND :end AND source_system = ANY(:sources) "
            "AND NOT EXISTS (SELECT 1 FROM ingest.file_ledger l WHERE l.status = 'landed' "
            "AND l.source_system = f.source_system AND l.business_date = f.business_date "
            "AND l.table_name IS NOT DISTINCT FROM f.table_name AND l.processed_at > f.processed_at) "
            "GROUP BY 1, 2"
        ),
        {"start": start, "end": end, "sources": list(feeding)},
    ).mappings():
        missing.append(
            MissingInput(
                row["source_system"],
                row["table_name"],
                f"文件被隔离：{row['files']}（{(row['reasons'] or '')[:200]}）",
                institutions.get(row["source_system"], ()),
            )
        )
    if conn.execute(sa.text("SELECT to_regclass('dq.blocked_publish') IS NOT NULL")).scalar():
        for row in conn.execute(
            sa.text(
                "SELECT source_system, dataset, string_agg(rule_id, ', ' ORDER BY rule_id) AS rules "
                "FROM dq.blocked_publish WHERE dataset = ANY(:entities) GROUP BY 1, 2"
            ),
            {"entities": list(entities)},
        ).mappings():
            missing.append(
                MissingInput(
                    row["source_system"],
                    f"silver.{row['dataset']}",
                    f"质量规则阻断发布：{row['rules']}",
                    institutions.get(row["source_system"], ()),
                )
            )
    return sorted(missing, key=lambda m: (m.source_system, m.table))
