"""The answer key: the true resident behind every source patient record, and every injected defect.

Kept in its own PostgreSQL database (``sim_truth``), apart from every member system. The pipeline never
reads it; evaluation (tests, EMPI and quality benchmarks) does. Simulators buffer entries for a day and
flush them in the same run that writes the day to their source, so key and source stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import sqlalchemy as sa

from core.db import source_pg_engine
from simulator.pg_copy import copy_insert

DATABASE = "sim_truth"
DDL = [
    """CREATE TABLE IF NOT EXISTS person (
        resident_id integer PRIMARY KEY, household_id integer NOT NULL, name text NOT NULL,
        sex smallint NOT NULL, birth_date date NOT NULL, ethnicity text NOT NULL, id_number text NOT NULL,
        phone text, insurance_no text, township text, village text, address text,
        hypertension boolean NOT NULL, diabetes boolean NOT NULL, death_date date,
        twin_of integer, namesake_of integer, appeared_on date)""",
    """CREATE TABLE IF NOT EXISTS patient_truth (
        source_system text NOT NULL, local_patient_id text NOT NULL, resident_id integer NOT NULL,
        org_code text NOT NULL, PRIMARY KEY (source_system, local_patient_id))""",
    """CREATE TABLE IF NOT EXISTS defect_log (
        source_system text NOT NULL, table_name text NOT NULL, record_id text NOT NULL, defect text NOT NULL,
        detail text NOT NULL DEFAULT '', day date NOT NULL,
        PRIMARY KEY (source_system, table_name, record_id, defect))""",
    """CREATE TABLE IF NOT EXISTS system_day (
        source_system text NOT NULL, day date NOT NULL, written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source_system, day))""",
    """CREATE TABLE IF NOT EXISTS encounter_truth (
        source_system text NOT NULL, local_encounter_id text NOT NULL, encounter_uid text NOT NULL,
        PRIMARY KEY (source_system, local_encounter_id))""",
    # corrections find the local visit of an event: without it, every system's day scans the whole key
    "CREATE INDEX IF NOT EXISTS ix_encounter_truth_uid ON encounter_truth (source_system, encounter_uid)",
]


class PatientEntry(NamedTuple):
    source_system: str
    local_patient_id: str
    resident_id: int
    org_code: str


class DefectEntry(NamedTuple):
    source_system: str
    table_name: str
    record_id: str
    defect: str
    detail: str
    day: date


class EncounterEntry(NamedTuple):
    source_system: str
    local_encounter_id: str
    encounter_uid: str


def create_schema(reset: bool = False) -> None:
    with source_pg_engine(DATABASE).begin() as conn:
        if reset:
            for table in ("person", "patient_truth", "defect_log", "encounter_truth", "system_day"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        for ddl in DDL:
            conn.execute(sa.text(ddl))


@dataclass
class AnswerKey:
    """Buffered answer-key entries of one system for one day."""

    source_system: str
    day: date
    patients: list[PatientEntry] = field(default_factory=list)
    defects: list[DefectEntry] = field(default_factory=list)
    encounters: list[EncounterEntry] = field(default_factory=list)

    def patient(self, local_patient_id: str, resident_id: int, org_code: str) -> None:
        self.patients.append(PatientEntry(self.source_system, local_patient_id, resident_id, org_code))

    def defect(self, table: str, record_id: str, defect: str, detail: str = "") -> None:
        self.defects.append(DefectEntry(self.source_system, table, record_id, defect, detail, self.day))

    def encounter(self, local_encounter_id: str, encounter_uid: str) -> None:
        self.encounters.append(EncounterEntry(self.source_system, local_encounter_id, encounter_uid))

    def flush(self) -> None:
        """Write and clear the buffer (idempotent: re-flushing the same entries changes nothing)."""
        with source_pg_engine(DATABASE).begin() as conn, conn.connection.dbapi_connection.cursor() as cursor:
            if self.patients:
                copy_insert(cursor, "patient_truth", PatientEntry._fields, self.patients)
            if self.defects:
                copy_insert(cursor, "defect_log", DefectEntry._fields, self.defects)
            if self.encounters:
                copy_insert(cursor, "encounter_truth", EncounterEntry._fields, self.encounters)
        self.patients, self.defects, self.encounters = [], [], []


def known_patients(source_system: str) -> dict[tuple[int, str], str]:
    """(resident_id, org_code) -> local patient id already issued by a system (latest one wins)."""
    with source_pg_engine(DATABASE).connect() as conn:
        rows = conn.execute(sa.text("SELECT resident_id, org_code, local_patient_id FROM patient_truth "
                                    "WHERE source_system = :s ORDER BY local_patient_id"), {"s": source_system})
        return {(r.resident_id, r.org_code): r.local_patient_id for r in rows}


def last_written_day(source_system: str) -> date | None:
    with source_pg_engine(DATABASE).connect() as conn:
        return conn.execute(sa.text("SELECT max(day) FROM system_day WHERE source_system = :s"),
                            {"s": source_system}).scalar()


def mark_day_written(source_system: str, day: date) -> None:
    with source_pg_engine(DATABASE).begin() as conn:
        conn.execute(sa.text("INSERT INTO system_day (source_system, day) VALUES (:s, :d) ON CONFLICT DO NOTHING"),
                     {"s": source_system, "d": day})


def local_encounter_ids(source_system: str, encounter_uids: list[str]) -> dict[str, str]:
    """encounter_uid -> the system's (first) local encounter id, for applying later corrections."""
    if not encounter_uids:
        return {}
    with source_pg_engine(DATABASE).connect() as conn:
        rows = conn.execute(sa.text("SELECT encounter_uid, min(local_encounter_id) AS local_encounter_id "
                                    "FROM encounter_truth WHERE source_system = :s AND encounter_uid = ANY(:u) "
                                    "GROUP BY encounter_uid"),
                            {"s": source_system, "u": encounter_uids})
        return {r.encounter_uid: r.local_encounter_id for r in rows}
