"""A member institution fixes reported data-quality problems in its own system (整改 after 稽核反馈).

The platform reports each problem against a source record (system, table, key). The institution corrects a share
of them on a later day, in its own system and its own codes; the platform only learns of it through its normal
incremental collection. So every fix is an UPDATE that also moves the row's modification time: log-based CDC
sees any UPDATE, but watermark and API cursors follow that column (``gmt_modified``, ``XGSJ``, ``updated_at``).

The true values come from the answer key (the resident's real ID number and sex, the encounter's real discharge
time, the code the system used before the defect replaced it), and each fix is recorded there (``source_fix``),
so evaluation can tell fixed defects from open ones. Only defects a clerk can correct from the record are fixed;
identity variants, duplicates, late deliveries or corrections are reported as not fixable.
"""

from __future__ import annotations

import importlib
import random
import re
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from simulator import answer_key, clinical
from simulator.connections import mariadb_engine, source_pg_engine
from simulator.systems import cloud_his, private_api, rmyy_his, zyy_his

IDENTITY = ("missing_id_number", "legacy_15_digit", "wrong_check_digit")
FIXABLE = frozenset({*IDENTITY, "unknown_sex_code", "discharge_before_admission", "unknown_local_code"})
ONE_DAY = timedelta(days=1)  # the stay assumed when the true discharge is unknown
BEIJING = ZoneInfo("Asia/Shanghai")  # every simulated source keeps Beijing time
CLOUD_HIS_CODES = {"t_visit_diag": "diag_code", "t_recipe_detail": "drug_code"}  # where 云HIS puts local codes
# The private vendor's drug code -> the national (医保) code its dictionary pairs it with.
NATIONAL_DRUG = {private_api.drug_code(d[0]): d[0] for drugs in clinical.DRUGS.values() for d in drugs}


@dataclass(frozen=True, order=True)
class ProblemRef:
    """The source record a reported problem names: ``business_key`` is its key value(s) joined by '|'."""

    source_system: str
    source_table: str
    business_key: str


@dataclass(frozen=True)
class Fix:
    """One defect corrected at the source: the record as the answer key logs it and the value it holds now."""

    problem: ProblemRef
    table_name: str
    record_id: str
    defect: str
    value: str


@dataclass(frozen=True)
class NotFixed:
    problem: ProblemRef
    reason: str


@dataclass
class FixReport:
    """What the institutions did with the picked problems (a problem with several defects may give several fixes)."""

    fixed: list[Fix] = field(default_factory=list)
    not_fixable: list[NotFixed] = field(default_factory=list)


class _Defect(NamedTuple):
    table_name: str
    record_id: str
    defect: str
    detail: str


class _Unfixable(Exception):
    """A defect that cannot be corrected from what the record and the answer key tell."""


def _table(name: str) -> str:
    """A table name as the platform and the answer key both know it: without schema, case-insensitive."""
    return name.split(".")[-1].lower()


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class _Truth:
    """The answer key of one system: its logged defects and the true values behind its records."""

    def __init__(self, conn: sa.Connection, source_system: str) -> None:
        self.conn, self.source_system = conn, source_system

    def defects(self, problem: ProblemRef, behind: list[tuple[str, str]]) -> list[_Defect]:
        """The problem's record's defects (another table's record with the same key when the record has none,
        as the answer key logs 出院 on the discharge table), and those of the records ``behind`` it."""
        keys = {problem.business_key, *problem.business_key.split("|")}
        rows = [
            _Defect(*r)
            for r in self.conn.execute(
                sa.text(
                    "SELECT table_name, record_id, defect, detail FROM defect_log WHERE source_system = :s "
                    "AND record_id = ANY(:k) ORDER BY table_name, record_id, defect"
                ),
                {"s": self.source_system, "k": sorted(keys | {k for _, k in behind})},
            )
        ]
        table = _table(problem.source_table)
        own = [d for d in rows if d.record_id in keys and _table(d.table_name) == table] or [
            d for d in rows if d.record_id in keys
        ]
        related = {(_table(t), k) for t, k in behind}
        return own + [d for d in rows if (_table(d.table_name), d.record_id) in related and d not in own]

    def person(self, local_patient_id: str) -> sa.Row:
        person = self.conn.execute(
            sa.text(
                "SELECT p.id_number, p.sex FROM patient_truth t JOIN person p USING (resident_id) "
                "WHERE t.source_system = :s AND t.local_patient_id = :l"
            ),
            {"s": self.source_system, "l": local_patient_id},
        ).first()
        if person is None:
            raise _Unfixable(f"patient {local_patient_id} has no true resident in the answer key")
        return person

    def discharge(self, local_encounter_id: str, admitted: datetime) -> datetime:
        """The true discharge time, or a day after admission when the answer key does not know it."""
        end = self.conn.execute(
            sa.text(
                "SELECT e.end_at FROM encounter_truth t JOIN event_encounter e USING (encounter_uid) "
                "WHERE t.source_system = :s AND t.local_encounter_id = :l"
            ),
            {"s": self.source_system, "l": local_encounter_id},
        ).scalar()
        return end if end is not None else admitted + ONE_DAY


class _Source(ABC):
    """One vendor's storage as a clerk corrects it: where the patient's identity lives, the vendor's sex codes,
    and the column its collection follows. Subclasses fix discharges and local codes their own way."""

    patient: tuple[str, str, str, str]  # table, key column, ID number column, sex column
    sex_codes: dict[int, str]
    modified: str

    def __init__(self, section: dict[str, Any]) -> None:
        self.section = section

    @abstractmethod
    def engine(self) -> sa.Engine:
        """The system's own database."""

    def qualified(self, table: str) -> str:
        return table

    def stamp(self, at: datetime) -> datetime:
        return at

    def behind(self, conn: sa.Connection, table: str, key: str) -> list[tuple[str, str]]:
        """Records whose defects show on a problem about ``table``/``key`` (none unless the vendor splits them)."""
        return []

    def update(
        self, conn: sa.Connection, table: str, key_column: str, key: str, values: dict[str, Any], at: datetime
    ) -> None:
        sets = ", ".join(f"{column} = :{column}" for column in values)
        changed = conn.execute(
            sa.text(
                f"UPDATE {self.qualified(table)} SET {sets}, {self.modified} = :fixed_at WHERE {key_column} = "
                ":fixed_key"
            ),
            {**values, "fixed_at": self.stamp(at), "fixed_key": key},
        ).rowcount
        if not changed:
            raise _Unfixable(f"{table} {key} is not in the source")

    def fix(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """Write the true value; returns it as stored."""
        if defect.defect in IDENTITY:
            return self.fix_id_number(conn, defect.record_id, truth, at)
        if defect.defect == "unknown_sex_code":
            return self.fix_sex(conn, defect.record_id, truth, at)
        if defect.defect == "discharge_before_admission":
            return self.fix_discharge(conn, defect, truth, at)
        return self.fix_local_code(conn, defect, truth, at)

    def id_values(self, id_number: str) -> dict[str, Any]:
        return {self.patient[2]: id_number}

    def fix_id_number(self, conn: sa.Connection, record_id: str, truth: _Truth, at: datetime) -> str:
        table, key, _, _ = self.patient
        id_number = truth.person(record_id).id_number
        self.update(conn, table, key, record_id, self.id_values(id_number), at)
        return id_number

    def fix_sex(self, conn: sa.Connection, record_id: str, truth: _Truth, at: datetime) -> str:
        table, key, _, sex_column = self.patient
        code = self.sex_codes[truth.person(record_id).sex]
        self.update(conn, table, key, record_id, {sex_column: code}, at)
        return code

    @abstractmethod
    def fix_discharge(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """A discharge time after the admission: the true one when the answer key knows it."""

    @abstractmethod
    def fix_local_code(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """The code the system uses where the defect put an unknown local one."""

    def admitted(self, conn: sa.Connection, sql: str, key: str) -> sa.Row:
        row = conn.execute(sa.text(sql), {"k": key}).first()
        if row is None:
            raise _Unfixable(f"stay {key} is not in the source")
        return row


class _CloudHis(_Source):
    """云HIS (PostgreSQL, CDC; ``gmt_modified`` for the watermark fallback)."""

    patient = ("t_patient", "id", "id_card", "sex")
    sex_codes = cloud_his.SEX
    modified = "gmt_modified"
    REPLACED = re.compile(r"(\w+) (\S+)->(\S+)")  # 'diag_code I10->ZDY123' as the renderer logs it

    def engine(self) -> sa.Engine:
        return source_pg_engine(self.section.get("database", "cloud_his"))

    def qualified(self, table: str) -> str:
        return f"{self.section.get('schema', 'his')}.{table}"

    def behind(self, conn: sa.Connection, table: str, key: str) -> list[tuple[str, str]]:
        """A visit's stay (出院 is checked on the encounter) and main diagnosis (its code on the encounter)."""
        if table != "t_visit" or not key.isdigit():
            return []
        return [
            (t, k)
            for t, k in conn.execute(
                sa.text(
                    f"SELECT 't_inpatient', CAST(id AS text) FROM {self.qualified('t_inpatient')} WHERE visit_id = :v "
                    f"UNION ALL SELECT 't_visit_diag', CAST(id AS text) FROM {self.qualified('t_visit_diag')} "
                    f"WHERE visit_id = :v AND main_flag = '1'"
                ),
                {"v": int(key)},
            )
        ]

    def id_values(self, id_number: str) -> dict[str, Any]:
        return {"id_card": id_number, "id_card_type": "01"}  # a blank number had no card type either

    def fix_discharge(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        stay = self.admitted(
            conn,
            f"SELECT in_time, visit_id FROM {self.qualified('t_inpatient')} WHERE id = CAST(:k AS bigint)",
            defect.record_id,
        )
        out_time = _ms(truth.discharge(str(stay.visit_id), stay.in_time))
        self.update(conn, "t_inpatient", "id", defect.record_id, {"out_time": out_time}, at)
        return str(out_time)

    def fix_local_code(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        replaced = self.REPLACED.fullmatch(defect.detail)
        column = CLOUD_HIS_CODES.get(defect.table_name)
        if replaced is None or replaced[1] != column:
            raise _Unfixable(f"no replaced {column or 'code'} in '{defect.detail}'")
        self.update(conn, defect.table_name, "id", defect.record_id, {column: replaced[2]}, at)
        return replaced[2]


class _RmyyHis(_Source):
    """人民医院 HIS (MariaDB, binlog CDC; ``XGSJ`` for watermark collection)."""

    patient = ("GH_BRJBXX", "BRID", "SFZH", "XB")
    sex_codes = rmyy_his.SEX
    modified = "XGSJ"
    TYPED = re.compile(r"ZDY\d+ (.*) \(ICD (\S+)\)")  # 'ZDY0042 高血压病待查 (ICD I10.x00)'

    def engine(self) -> sa.Engine:
        return mariadb_engine(self.section.get("database", "rmyy_his"))

    def fix_discharge(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """出院记录 and 入院登记 carry the same typed CYSJ; 住院天数 follows it."""
        admitted = self.admitted(conn, "SELECT RYSJ FROM ZY_CYJL WHERE ZYID = :k", defect.record_id).RYSJ
        out = truth.discharge(defect.record_id, admitted).replace(microsecond=0)
        days = max(1, (out.date() - admitted.date()).days)
        self.update(conn, "ZY_CYJL", "ZYID", defect.record_id, {"CYSJ": out, "ZYTS": days}, at)
        self.update(conn, "ZY_RYDJ", "ZYID", defect.record_id, {"CYSJ": out}, at)
        return str(out)

    def fix_local_code(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """The 疾病字典 entry of the true ICD code (added to the dictionary the way the HIS adds a new one)."""
        typed = self.TYPED.fullmatch(defect.detail)
        if typed is None or defect.table_name not in ("MZ_ZDJL", "ZY_ZDJL"):
            raise _Unfixable(f"no true ICD code in '{defect.detail}'")
        name = next((typed[1].removesuffix(s) for s in rmyy_his.UNKNOWN_SUFFIXES if typed[1].endswith(s)), typed[1])
        code, name = rmyy_his.local_diagnosis(typed[2], name)
        if typed[2] not in rmyy_his.DIAGNOSES:
            conn.execute(
                sa.text("INSERT IGNORE INTO ZD_JBZD (JBBM, JBMC, GBBM, YXBZ, XGSJ) VALUES (:c, :n, :g, 1, :at)"),
                {"c": code, "n": name, "g": typed[2][:3], "at": at},
            )
        self.update(conn, defect.table_name, "ZDID", defect.record_id, {"ZDDM": code, "ZDMC": name}, at)
        return code


class _ZyyHis(_Source):
    """中医院 HIS (PostgreSQL, CDC; ``updated_at timestamptz`` for watermark collection)."""

    patient = ("pat_master", "pat_id", "id_card_no", "sex")
    sex_codes = zyy_his.SEX
    modified = "updated_at"
    TYPED = re.compile(r"diag_code=\S+ for (\S+)")  # 'diag_code=ZDY0042 for I10.x00'

    def engine(self) -> sa.Engine:
        return source_pg_engine(self.section.get("database", "zyy_his"))

    def qualified(self, table: str) -> str:
        return f"{zyy_his.SCHEMA}.{table}"

    def stamp(self, at: datetime) -> datetime:
        return at.replace(tzinfo=BEIJING)

    def fix_discharge(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """出院记录 keeps date and time as text; 住院天数 follows them."""
        admitted = self.admitted(
            conn, f"SELECT adm_time FROM {self.qualified('ip_adm')} WHERE adm_no = :k", defect.record_id
        ).adm_time
        out = truth.discharge(defect.record_id, admitted)
        self.update(
            conn,
            "ip_disch",
            "adm_no",
            defect.record_id,
            {
                "disch_date": f"{out:%Y%m%d}",
                "disch_time": f"{out:%H%M%S}",
                "los_days": (out.date() - admitted.date()).days,
            },
            at,
        )
        return f"{out:%Y%m%d %H%M%S}"

    def fix_local_code(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """A sex code of the old interface ('sex=1' in the key), or a 自定义诊断 instead of the library's code."""
        if defect.table_name == "pat_master" and defect.detail.startswith("sex="):
            return self.fix_sex(conn, defect.record_id, truth, at)
        typed = self.TYPED.fullmatch(defect.detail)
        if typed is None or defect.table_name not in ("op_diag", "ip_diag"):
            raise _Unfixable(f"no true ICD code in '{defect.detail}'")
        code, _ = zyy_his.vendor_diagnosis(typed[1], "")
        self.update(conn, defect.table_name, "diag_id", defect.record_id, {"diag_code": code}, at)
        return code


class _PrivateApi(_Source):
    """The private hospitals' vendor backend: collected only through its API, by ``updated_at`` cursor."""

    patient = ("patients", "id", "id_card_no", "gender")
    sex_codes = private_api.GENDER
    modified = "updated_at"
    REPLACED = re.compile(r"(\S+)->(\S+)")  # 'I10->ZDY1234', 'YP86066->LS97256'

    def engine(self) -> sa.Engine:
        return source_pg_engine(private_api.DATABASE)

    def qualified(self, table: str) -> str:
        return f'"{self.section.get("pg_schema", "public")}".{table}'

    def fix_discharge(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        admitted = self.admitted(
            conn, f"SELECT admit_time FROM {self.qualified('admissions')} WHERE id = :k", defect.record_id
        ).admit_time
        out = truth.discharge(defect.record_id, admitted).replace(microsecond=0)
        self.update(conn, "admissions", "id", defect.record_id, {"discharge_time": out}, at)
        return str(out)

    def fix_local_code(self, conn: sa.Connection, defect: _Defect, truth: _Truth, at: datetime) -> str:
        """A 自定义诊断 back to the ICD code; a 临时药品 back to the dictionary drug and its 医保 code."""
        replaced = self.REPLACED.fullmatch(defect.detail)
        if replaced is None or defect.table_name not in ("diagnoses", "orders"):
            raise _Unfixable(f"no replaced code in '{defect.detail}'")
        code = replaced[1]
        values = (
            {"item_code": code, "insurance_code": NATIONAL_DRUG.get(code)}
            if defect.table_name == "orders"
            else {"diagnosis_code": code}
        )
        self.update(conn, defect.table_name, "id", defect.record_id, values, at)
        return code


SOURCES: list[tuple[type, type[_Source]]] = [
    (cloud_his.CloudHis, _CloudHis),
    (rmyy_his.RmyyHis, _RmyyHis),
    (zyy_his.ZyyHis, _ZyyHis),
    (private_api.PrivateHospitalApi, _PrivateApi),
]


def _source(section: dict[str, Any] | None) -> _Source | None:
    """The storage of a configured system (by its renderer class, so a test subclass counts too)."""
    if not section or "class" not in section:
        return None
    module, name = section["class"].split(":")
    renderer = getattr(importlib.import_module(module), name)
    return next((fixer(section) for base, fixer in SOURCES if issubclass(renderer, base)), None)


def pick(problems: list[ProblemRef], share: float, seed: int) -> list[ProblemRef]:
    """``share`` of the distinct problems, the same ones for the same seed whatever their order, sorted."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} is not within 0..1")
    distinct = sorted(set(problems))
    return sorted(random.Random(seed).sample(distinct, round(share * len(distinct))))


def fix_reported_problems(
    config: dict[str, Any], problems: list[ProblemRef], share: float, seed: int, fixed_at: datetime
) -> FixReport:
    """Fix ``share`` of the problems (picked by ``seed``) at their sources, as of ``fixed_at``.

    ``config`` is the simulator configuration: ``systems.<source_system>`` names the renderer class and its
    storage. ``fixed_at`` (Beijing time) must fall on a day after the last one a system has written, so the fix
    commits after every row it corrects, as in the real system; a collection whose watermark or cursor is
    already past it would miss it. Defects already fixed are left alone, so a repeated call changes nothing.
    """
    at = _ms(fixed_at.astimezone(BEIJING).replace(tzinfo=None) if fixed_at.tzinfo else fixed_at)
    answer_key.create_schema()
    report = FixReport()
    by_system: dict[str, list[ProblemRef]] = defaultdict(list)
    for problem in pick(problems, share, seed):
        by_system[problem.source_system].append(problem)
    sources = {name: _source(config.get("systems", {}).get(name)) for name in by_system}
    for name in (name for name, source in sources.items() if source is not None):
        last = answer_key.last_written_day(name)
        if last is not None and at.date() <= last:
            raise ValueError(f"{name} has written {last} already: a fix at {at} would commit before its rows")
    for name, picked in by_system.items():
        source = sources[name]
        if source is None:
            report.not_fixable += [NotFixed(p, f"fixes at {name} are not simulated") for p in picked]
            continue
        done = answer_key.fixed_defects(name)
        entries: list[answer_key.FixEntry] = []
        with source_pg_engine(answer_key.DATABASE).connect() as key_conn, source.engine().begin() as conn:
            truth = _Truth(key_conn, name)
            for problem in picked:
                defects = truth.defects(
                    problem, source.behind(conn, _table(problem.source_table), problem.business_key)
                )
                fixable = [d for d in defects if d.defect in FIXABLE]
                todo = [d for d in fixable if (d.table_name, d.record_id, d.defect) not in done]
                reasons = (
                    ["no defect logged for this record"]
                    if not defects
                    else [f"not corrected at the source: {', '.join(sorted({d.defect for d in defects}))}"]
                    if not fixable
                    else []
                    if todo
                    else ["already fixed"]
                )
                fixes = []
                for defect in todo:
                    try:
                        with conn.begin_nested():  # a defect half fixed when it turns out unfixable is undone
                            value = source.fix(conn, defect, truth, at)
                    except _Unfixable as reason:
                        reasons.append(str(reason))
                        continue
                    done.add((defect.table_name, defect.record_id, defect.defect))
                    fixes.append(Fix(problem, defect.table_name, defect.record_id, defect.defect, value))
                    entries.append(answer_key.FixEntry(name, defect.table_name, defect.record_id, defect.defect, at))
                report.fixed += fixes
                if not fixes:
                    report.not_fixable.append(NotFixed(problem, "; ".join(reasons)))
        answer_key.record_fixes(entries)
    return report
