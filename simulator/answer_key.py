"""The answer key: the true resident behind every source patient record, and every injected defect.

Kept in its own PostgreSQL database (``sim_truth``), apart from every member system. The pipeline never
reads it; evaluation (tests, EMPI and quality benchmarks) does. Simulators buffer entries for a day and
flush them in the same run that writes the day to their source, so key and source stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

import sqlalchemy as sa

from simulator.connections import source_pg_engine
from simulator.events import DayActivity
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
    # What really happened, event by event (before any member system renders or dirties it): the ground truth
    # the indicator tests recompute every supervision indicator from. ``day`` is the simulated day that
    # produced the row (a re-run of a day replaces its rows).
    """CREATE TABLE IF NOT EXISTS event_encounter (
        encounter_uid text PRIMARY KEY, day date NOT NULL, resident_id integer NOT NULL, org_code text NOT NULL,
        kind text NOT NULL, department_code text NOT NULL, doctor_id text NOT NULL, start_at timestamp NOT NULL,
        end_at timestamp, discharge_status text NOT NULL, main_icd text, tcm_diagnosis boolean NOT NULL,
        total_yuan numeric(14, 2) NOT NULL, drug_yuan numeric(14, 2) NOT NULL, insured boolean NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_surgery (
        encounter_uid text NOT NULL, day date NOT NULL, procedure_code text NOT NULL, at timestamp NOT NULL,
        incision_class text NOT NULL, healing_grade text NOT NULL, PRIMARY KEY (encounter_uid, procedure_code))""",
    """CREATE TABLE IF NOT EXISTS event_referral (
        referral_uid text PRIMARY KEY, day date NOT NULL, resident_id integer NOT NULL, from_org text NOT NULL,
        to_org text NOT NULL, direction text NOT NULL, at timestamp NOT NULL, refused boolean NOT NULL)""",
    # answer keys created before referrals could be refused
    "ALTER TABLE event_referral ADD COLUMN IF NOT EXISTS refused boolean NOT NULL DEFAULT false",
    """CREATE TABLE IF NOT EXISTS event_service (
        service_uid text PRIMARY KEY, day date NOT NULL, resident_id integer NOT NULL, org_code text NOT NULL,
        kind text NOT NULL, at timestamp NOT NULL, sbp numeric, dbp numeric, fbg numeric)""",
    """CREATE TABLE IF NOT EXISTS event_settlement (
        settlement_uid text PRIMARY KEY, day date NOT NULL, resident_id integer NOT NULL, org_code text NOT NULL,
        out_of_county_hospital text NOT NULL, kind text NOT NULL, settled_at timestamp NOT NULL,
        total_yuan numeric(14, 2) NOT NULL, fund_paid_yuan numeric(14, 2) NOT NULL, encounter_uid text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_birth (
        birth_uid text PRIMARY KEY, day date NOT NULL, mother_id integer NOT NULL, child_id integer NOT NULL,
        org_code text NOT NULL, at timestamp NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_correction (
        target_uid text NOT NULL, day date NOT NULL, kind text NOT NULL, at timestamp NOT NULL,
        PRIMARY KEY (target_uid, kind))""",
    # A defect its institution has corrected at the source (simulator/source_fixes.py), keyed like defect_log:
    # evaluation tells fixed defects from open ones.
    """CREATE TABLE IF NOT EXISTS source_fix (
        source_system text NOT NULL, table_name text NOT NULL, record_id text NOT NULL, defect text NOT NULL,
        fixed_at timestamp NOT NULL, PRIMARY KEY (source_system, table_name, record_id, defect))""",
]
EVENT_TABLES = (
    "event_encounter",
    "event_surgery",
    "event_referral",
    "event_service",
    "event_settlement",
    "event_birth",
    "event_correction",
)


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


class FixEntry(NamedTuple):
    source_system: str
    table_name: str
    record_id: str
    defect: str
    fixed_at: datetime


def create_schema(reset: bool = False) -> None:
    with source_pg_engine(DATABASE).begin() as conn:
        if reset:
            for table in (
                "person",
                "patient_truth",
                "defect_log",
                "encounter_truth",
                "system_day",
                "source_fix",
                *EVENT_TABLES,
            ):
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


def logged_defects(
    source_system: str, table: str, record_ids: list[str], pending: AnswerKey | None = None
) -> list[DefectEntry]:
    """The defects logged on these records (stored, and still in ``pending``'s buffer), for a system that copies
    a record under a new id: the copy carries its original's defects and must be logged with them."""
    wanted = set(record_ids)
    buffered = [d for d in (pending.defects if pending else []) if d.table_name == table and d.record_id in wanted]
    if not wanted:
        return buffered
    with source_pg_engine(DATABASE).connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT source_system, table_name, record_id, defect, detail, day FROM defect_log "
                "WHERE source_system = :s AND table_name = :t AND record_id = ANY(:ids)"
            ),
            {"s": source_system, "t": table, "ids": sorted(wanted)},
        ).all()
    return [DefectEntry(*row) for row in stored] + buffered


def record_fixes(fixes: list[FixEntry]) -> None:
    """Store defects corrected at their source (a defect already recorded keeps its first fix)."""
    if fixes:
        with source_pg_engine(DATABASE).begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO source_fix (source_system, table_name, record_id, defect, fixed_at) "
                    "VALUES (:source_system, :table_name, :record_id, :defect, :fixed_at) "
                    "ON CONFLICT DO NOTHING"
                ),
                [f._asdict() for f in fixes],
            )


def fixed_defects(source_system: str) -> set[tuple[str, str, str]]:
    """(table_name, record_id, defect) of every defect of a system already fixed at its source."""
    with source_pg_engine(DATABASE).connect() as conn:
        return {
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT table_name, record_id, defect FROM source_fix WHERE source_system = :s"),
                {"s": source_system},
            )
        }


def record_events(activity: DayActivity) -> None:
    """Store the day's true events (replacing an earlier run of the same day): the indicators' ground truth."""
    day = activity.day
    drugs = ("药品", "中草药")  # 西药 and 中成药 are 药品; 中药饮片 are charged as 中草药
    tables: dict[str, tuple[tuple[str, ...], list[tuple]]] = {
        "event_encounter": (
            (
                "encounter_uid",
                "day",
                "resident_id",
                "org_code",
                "kind",
                "department_code",
                "doctor_id",
                "start_at",
                "end_at",
                "discharge_status",
                "main_icd",
                "tcm_diagnosis",
                "total_yuan",
                "drug_yuan",
                "insured",
            ),
            [
                (
                    e.encounter_uid,
                    day,
                    e.resident_id,
                    e.org_code,
                    e.kind,
                    e.department_code,
                    e.doctor_id,
                    e.start_at,
                    e.end_at,
                    e.discharge_status,
                    next((d.icd_code for d in e.diagnoses if d.is_main), None),
                    e.tcm is not None,
                    e.total_yuan,
                    round(sum(c.amount_yuan for c in e.charges if c.category in drugs), 2),
                    e.insured,
                )
                for e in activity.encounters
            ],
        ),
        "event_surgery": (
            ("encounter_uid", "day", "procedure_code", "at", "incision_class", "healing_grade"),
            [
                (e.encounter_uid, day, s.procedure_code, s.at, s.incision_class, s.healing_grade)
                for e in activity.encounters
                for s in e.surgeries
            ],
        ),
        "event_referral": (
            ("referral_uid", "day", "resident_id", "from_org", "to_org", "direction", "at", "refused"),
            [
                (r.referral_uid, day, r.resident_id, r.from_org, r.to_org, r.direction, r.at, r.refused)
                for r in activity.referrals
            ],
        ),
        "event_service": (
            ("service_uid", "day", "resident_id", "org_code", "kind", "at", "sbp", "dbp", "fbg"),
            [
                (
                    s.service_uid,
                    day,
                    s.resident_id,
                    s.org_code,
                    s.kind,
                    s.at,
                    s.values.get("sbp"),
                    s.values.get("dbp"),
                    s.values.get("fbg"),
                )
                for s in activity.services
            ],
        ),
        "event_settlement": (
            (
                "settlement_uid",
                "day",
                "resident_id",
                "org_code",
                "out_of_county_hospital",
                "kind",
                "settled_at",
                "total_yuan",
                "fund_paid_yuan",
                "encounter_uid",
            ),
            [
                (
                    s.settlement_uid,
                    day,
                    s.resident_id,
                    s.org_code,
                    s.out_of_county_hospital,
                    s.kind,
                    s.settled_at,
                    s.total_yuan,
                    s.fund_paid_yuan,
                    s.encounter_uid,
                )
                for s in activity.settlements
            ],
        ),
        "event_birth": (
            ("birth_uid", "day", "mother_id", "child_id", "org_code", "at"),
            [(b.birth_uid, day, b.mother_id, b.child_id, b.org_code, b.at) for b in activity.births],
        ),
        "event_correction": (
            ("target_uid", "day", "kind", "at"),
            [(c.target_uid, day, c.kind, c.at) for c in activity.corrections],
        ),
    }
    with source_pg_engine(DATABASE).begin() as conn, conn.connection.dbapi_connection.cursor() as cursor:
        for table, (columns, rows) in tables.items():
            cursor.execute(f"DELETE FROM {table} WHERE day = %s", (day,))
            if rows:
                copy_insert(cursor, table, columns, rows)


def known_patients(source_system: str) -> dict[tuple[int, str], str]:
    """(resident_id, org_code) -> local patient id already issued by a system (latest one wins)."""
    with source_pg_engine(DATABASE).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT resident_id, org_code, local_patient_id FROM patient_truth "
                "WHERE source_system = :s ORDER BY local_patient_id"
            ),
            {"s": source_system},
        )
        return {(r.resident_id, r.org_code): r.local_patient_id for r in rows}


def last_written_day(source_system: str) -> date | None:
    with source_pg_engine(DATABASE).connect() as conn:
        return conn.execute(
            sa.text("SELECT max(day) FROM system_day WHERE source_system = :s"), {"s": source_system}
        ).scalar()


def mark_day_written(source_system: str, day: date) -> None:
    with source_pg_engine(DATABASE).begin() as conn:
        conn.execute(
            sa.text("INSERT INTO system_day (source_system, day) VALUES (:s, :d) ON CONFLICT DO NOTHING"),
            {"s": source_system, "d": day},
        )


def local_encounter_ids(source_system: str, encounter_uids: list[str]) -> dict[str, str]:
    """encounter_uid -> the system's (first) local encounter id, for applying later corrections."""
    if not encounter_uids:
        return {}
    with source_pg_engine(DATABASE).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT encounter_uid, min(local_encounter_id) AS local_encounter_id "
                "FROM encounter_truth WHERE source_system = :s AND encounter_uid = ANY(:u) "
                "GROUP BY encounter_uid"
            ),
            {"s": source_system, "u": encounter_uids},
        )
        return {r.encounter_uid: r.local_encounter_id for r in rows}
