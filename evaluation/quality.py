"""How well the quality rules find the defects the simulator injected (its answer key, ``sim_truth.defect_log``).

Recall per defect type: a logged defect is found when a problem of one of the rules meant to catch it names the
same source system and source record (or, for late delivery, a late business day of the same source table on or
before the day it was delivered). Defect types no
row rule can see are listed with the reason and measured elsewhere (identity variants: the EMPI's F1;
corrections: legitimate source edits; schema drift: the collection's schema monitor). Problems whose record
carries no logged defect are reported as unexplained: on a county without dirt they are false alarms.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from core.db import warehouse_engine
from simulator.answer_key import DATABASE
from simulator.config import load_simulator_config
from simulator.connections import source_pg_engine

DETECTING_RULES: dict[str, tuple[str, ...]] = {  # defect type -> rule ids (prefix match) that catch it
    "missing_id_number": ("PER-C01", "HRD-C01", "INS-C01", "REF-C01"),
    "legacy_15_digit": ("PER-F01", "HRD-F01"),
    "wrong_check_digit": ("PER-F02",),
    "day_month_swap": ("PER-S01",),
    "unknown_sex_code": ("G-person-sex_code", "G-health_record-sex_code", "PER-S02"),
    "unknown_local_code": ("G-",),
    "discharge_before_admission": ("ENC003", "ENC-L02", "INS001"),
    "duplicate_submission": ("ENC004", "ENC-U01"),
    "re_registration": ("PER-U01", "HRD-U01"),
    "late_submission": ("TIM-001",),
    "followup_after_death": ("FUP-L01", "PHS-L02"),
}
NOT_ROW_DETECTABLE = {
    "homophone": "identity variant: the EMPI links it (EMPI F1)",
    "name_typo": "identity variant: the EMPI links it (EMPI F1)",
    "swapped_chars": "identity variant: the EMPI links it (EMPI F1)",
    "traditional_chars": "identity variant: the EMPI links it (EMPI F1)",
    "changed_phone": "a resident's new number is not an error",
    "address_variant": "the same address written differently is not an error",
    "correction_update": "a legitimate correction at the source",
    "correction_cancel": "a legitimate cancellation at the source",
    "schema_drift": "a table change: the collection's schema monitor (ingest.schema_change)",
    "local_code_dialect": "a vendor spelling of a standard code: normalised by the terminology service",
}
# (source, defect) pairs no row rule can see, with why
NOT_ROW_DETECTABLE_AT = {
    ("fy_files", "duplicate_submission"): "an identical file sent again or a row repeated in a file: collection "
    "keeps one copy (ingest.file_ledger 'duplicate of …'), silver one row",
    ("population_register", "late_submission"): "a birth or death the register does not show yet is a missing "
    "row: reconciled in dbt (int_residents__population_reconciliation)",
}


ID_UNREADABLE = ("missing_id_number", "wrong_check_digit")
NEEDS_READABLE_ID = ("day_month_swap", "unknown_sex_code")  # found by comparing with the ID number
MIN_PARENT_ID_LENGTH = 8


@dataclass(frozen=True)
class Detection:
    defect: str
    logged: int
    found: int

    @property
    def recall(self) -> float:
        return self.found / self.logged if self.logged else 1.0


def _table(name: str | None) -> str:
    return (name or "").split(".")[-1].lower()


def _keys(business_key: str) -> set[str]:
    return {business_key, *business_key.split("|")}


def _prefixes(record: str) -> list[str]:
    """The record id and the ids it extends: the vendors number child rows after their parent (a diagnosis or an
    inpatient row is the visit id plus a suffix), so a defect on one is seen on the row the platform keys by."""
    return [record[:n] for n in range(len(record), MIN_PARENT_ID_LENGTH - 1, -1)]


def detection(present_only: bool = True) -> tuple[list[Detection], list[dict], dict[str, int]]:
    """Recall per detectable defect type, the problems no logged defect explains, and the defects left out.

    ``present_only``: count only defects whose record is still current in silver or quarantine (a visit later
    cancelled at the source takes its defect with it). Not counted either, and returned by reason:
    a defect not found whose record was corrected or cancelled at the source afterwards (the correction replaced
    the bad value), and a birth date or sex defect on a record whose ID number is missing or fails its check (the
    number that would show the error is not there).
    """
    systems = list(load_simulator_config()["systems"])  # not the test-only systems other tests log
    with source_pg_engine(DATABASE).connect() as conn:
        defects = conn.execute(
            sa.text(
                "SELECT source_system, table_name, record_id, defect, day, detail "
                "FROM defect_log WHERE source_system = ANY(:systems)"
            ),
            {"systems": systems},
        ).all()
        simulated_until = conn.execute(sa.text("SELECT max(day) FROM system_day")).scalar()
    with warehouse_engine().connect() as conn:
        problems = conn.execute(
            sa.text(
                "SELECT rule_id, source_system, source_table, business_key, business_date, value FROM dq.problem "
                "WHERE status = 'open'"
            )
        ).all()
        current = (
            {
                (s, k)
                for s, k in conn.execute(
                    sa.text(
                        "SELECT source_system, source_key FROM ods.person UNION ALL "
                        "SELECT source_system, source_key FROM ods.health_record UNION ALL "
                        "SELECT source_system, record_key FROM ods.quarantine"
                    )
                )
            }
            if present_only
            else set()
        )
    by_record: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    late: dict[tuple[str, str], list] = defaultdict(list)
    for rule_id, source, table, key, day, _ in problems:
        if rule_id == "TIM-001":
            late[(source, _table(table))].append(day)
            continue
        for k in _keys(key):
            by_record[(source, _table(table), k)].append(rule_id)
            by_record[(source, "*", k)].append(rule_id)
    changed_later = {
        (source, record)
        for source, _, record, defect, _, _ in defects
        if defect in ("correction_update", "correction_cancel")
    }
    id_unreadable = {
        (source, _table(table), record) for source, table, record, defect, _, _ in defects if defect in ID_UNREADABLE
    }
    logged: dict[str, int] = defaultdict(int)
    found: dict[str, int] = defaultdict(int)
    explained: set[tuple[str, str]] = set()
    left_out: dict[str, int] = defaultdict(int)
    for source, table, record, defect, day, detail in defects:
        rules = DETECTING_RULES.get(defect)
        if rules is None or (source, defect) in NOT_ROW_DETECTABLE_AT:
            continue
        committed = re.match(r"committed (\d{4}-\d{2}-\d{2})", detail or "")
        if committed and date.fromisoformat(committed.group(1)) > simulated_until:
            continue  # a late row the source has not committed yet: nothing has arrived to judge
        if defect == "late_submission":
            hit = any(d <= day for d in late.get((source, _table(table)), []))  # business day before delivery
        else:
            hits = by_record.get((source, _table(table), record)) or next(
                (by_record[(source, "*", p)] for p in _prefixes(record) if (source, "*", p) in by_record), []
            )
            hit = any(r.startswith(rules) for r in hits)
            if hits:
                explained.update((source, p) for p in _prefixes(record))
        if not hit and any((source, p) in changed_later for p in _prefixes(record)):
            left_out[f"{defect}: corrected or cancelled at the source later"] += 1
            continue
        if not hit and defect in NEEDS_READABLE_ID and (source, _table(table), record) in id_unreadable:
            left_out[f"{defect}: the ID number that would show it is missing or fails its check"] += 1
            continue
        if (
            not hit
            and present_only
            and (source, record) not in current
            and defect not in ("late_submission", "unknown_local_code", "duplicate_submission", "followup_after_death")
        ):
            continue  # the record left the source (a cancelled visit, a merged patient): nothing to find
        logged[defect] += 1
        found[defect] += hit
    # a problem whose value names a defective record (the orphaned diagnoses of a quarantined visit, a service
    # whose archive carries a wrong birth date) is explained by it
    defective = {(source, p) for source, _, record, _, _, _ in defects for p in _prefixes(record)}
    unexplained = [
        {"rule_id": r, "source_system": s, "source_table": t, "business_key": k}
        for r, s, t, k, _, value in problems
        if r != "TIM-001" and not any((s, k2) in explained for k2 in _keys(k)) and (s, value) not in defective
    ]
    return [Detection(d, logged[d], found[d]) for d in sorted(logged)], unexplained, dict(left_out)


def detection_report(min_recall: float) -> dict[str, Any]:
    """Recall per defect type, what no row rule can see and why, and the problems no defect explains."""
    found, unexplained, left_out = detection()
    by_rule: dict[str, int] = defaultdict(int)
    for row in unexplained:
        by_rule[f"{row['rule_id']} {row['source_system']}"] += 1
    return {
        "recall": {d.defect: {"logged": d.logged, "found": d.found, "recall": round(d.recall, 4)} for d in found},
        "min_recall": min_recall,
        "below_min_recall": {d.defect: f"{d.found}/{d.logged}" for d in found if d.recall < min_recall},
        "not_row_detectable": {
            **NOT_ROW_DETECTABLE,
            **{f"{s} {d}": why for (s, d), why in NOT_ROW_DETECTABLE_AT.items()},
        },
        "left_out_of_recall": left_out,
        "unexplained_problems": len(unexplained),
        "unexplained_by_rule": dict(sorted(by_rule.items(), key=lambda kv: -kv[1])),
    }
