"""荥阳市妇幼保健院: a vendor that can only export daily CSV files (GBK, CRLF) into an inbox folder (前置机).

Its export job writes, per day D, ``FYBJY_<file>_<D>.csv`` into ``$DRC_STATE_DIR/inbox/fy_files/``:
  MZJZ   门诊就诊     one row per outpatient/emergency visit: patient, visit and main diagnosis denormalised
  CSDJ   出生登记     one row per birth at the hospital: mother and newborn (dates written 'YYYY年MM月DD日')
  YCFSF  孕产妇随访   one row per obstetric contact (prenatal check, delivery, postnatal visit)
and, on days with corrections to earlier rows, ``FYBJY_<file>_<D>_XG.csv`` carrying 操作类型 修改/作废.
Some files arrive late (only when D+2 is processed) or twice (an identical ``_1`` copy the next day); both wait
in the vendor's outbox and move into the inbox by an atomic rename, so collectors never see a partial file.
The vendor does not export inpatient stays (visible only through 医保 settlements and CSDJ/YCFSF).
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
import zlib
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from core.settings import get_settings
from simulator import answer_key
from simulator.answer_key import AnswerKey
from simulator.dirt import IdentityDirt, RecordedIdentity, recorded_identity
from simulator.events import DayActivity, Encounter, Person, PublicHealthService, Staff
from simulator.systems.base import MemberSystem
from simulator.world import World

PREFIX = "FYBJY"
ENCODING = "gbk"
SEX = {1: "男", 2: "女"}
MZJZ_COLUMNS = [
    "就诊流水号",
    "患者编号",
    "姓名",
    "性别",
    "出生日期",
    "身份证号",
    "联系电话",
    "家庭住址",
    "就诊时间",
    "就诊类型",
    "科室编码",
    "科室名称",
    "医生工号",
    "医生姓名",
    "诊断编码",
    "诊断名称",
    "费用合计",
    "医保标志",
    "最后修改时间",
]
CSDJ_COLUMNS = [
    "出生登记号",
    "母亲患者编号",
    "母亲姓名",
    "母亲身份证号",
    "母亲出生日期",
    "新生儿患者编号",
    "新生儿姓名",
    "新生儿性别",
    "出生日期",
    "出生时间",
    "出生体重(克)",
    "出生机构",
    "家庭住址",
    "登记时间",
]
YCFSF_COLUMNS = [
    "随访编号",
    "患者编号",
    "孕产妇姓名",
    "身份证号",
    "就诊流水号",
    "随访日期",
    "随访类别",
    "孕周",
    "收缩压",
    "舒张压",
    "体重(kg)",
    "宫底高度(cm)",
    "胎心率",
    "随访医生",
    "最后修改时间",
]
XG_OPERATION = {"update": "修改", "cancel": "作废"}
# The vendor's department dictionary (by department name); unlisted names get a stable 9xxx code.
DEPARTMENTS = {
    "妇产科": "2010",
    "妇科": "2011",
    "产科": "2012",
    "妇女保健科": "2020",
    "儿科": "3010",
    "儿童保健科": "3020",
    "新生儿科": "3030",
    "急诊科": "1010",
    "内科": "4010",
    "外科": "4020",
}
# What a clinician picks when correcting a diagnosis (the vendor's 4-character ICD-10 codes).
CORRECTED_DIAGNOSES = [
    ("J06.9", "急性上呼吸道感染"),
    ("J20.9", "急性支气管炎"),
    ("N76.0", "急性阴道炎"),
    ("N73.9", "盆腔炎"),
    ("K52.9", "胃肠炎"),
    ("Z34.9", "正常妊娠监督"),
    ("N92.6", "月经不规则"),
]
OBSTETRIC_STEMS = ("Z32", "Z33", "Z34", "Z35", "Z36", "Z39")
DELIVERY_STEMS = ("O80", "O81", "O82", "O83", "O84")


# --- files on the 前置机 ----------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary dot-name, then rename: a collector never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def csv_bytes(
    columns: list[str],
    rows: Iterable[dict[str, Any]],
    encoding: str = ENCODING,
    delimiter: str = ",",
    newline: str = "\r\n",
) -> bytes:
    """One header line, then rows in column order; characters the encoding lacks become '?' as in the vendor's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(columns)
    writer.writerows([row.get(c, "") for c in columns] for row in rows)
    return buffer.getvalue().encode(encoding, errors="replace")


def read_csv(path: Path, encoding: str = ENCODING, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode(encoding), newline=""), delimiter=delimiter))


class FileSource(MemberSystem):
    """A member system whose only transport is files dropped into ``$DRC_STATE_DIR/inbox/<source_system>/``.

    Files not yet due wait in the vendor's outbox (``$DRC_STATE_DIR/simulator/<source_system>/outbox/<due>/``),
    outside the collectors' view. The vendor keeps a copy of every delivered file (``.../sent/``, hard links):
    the platform moves files out of the inbox, and later corrections still need the originals.
    ``inbox_dir`` / ``outbox_dir`` in the config move them (tests use it).
    """

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        state = get_settings().state_dir
        self.inbox = Path(config.get("inbox_dir") or state / "inbox" / self.source_system)
        self.outbox = Path(config.get("outbox_dir") or state / "simulator" / self.source_system / "outbox")
        self.sent = self.outbox.parent / "sent"

    def create_schema(self, reset: bool = False) -> None:
        if reset:
            shutil.rmtree(self.inbox, ignore_errors=True)
            shutil.rmtree(self.outbox, ignore_errors=True)
            shutil.rmtree(self.sent, ignore_errors=True)
        for folder in (self.inbox, self.outbox, self.sent):
            folder.mkdir(parents=True, exist_ok=True)

    def _keep_sent(self, delivered: Path) -> None:
        kept = self.sent / delivered.name
        kept.unlink(missing_ok=True)
        os.link(delivered, kept)

    def deliver(self, name: str, data: bytes) -> None:
        """Drop a file into the inbox now (atomic rename) and keep the vendor's copy."""
        write_atomic(self.inbox / name, data)
        self._keep_sent(self.inbox / name)

    def hold(self, name: str, data: bytes, due: date) -> None:
        """Keep a file in the outbox until the day ``due`` is processed."""
        write_atomic(self.outbox / f"{due:%Y%m%d}" / name, data)

    def release_due(self, day: date) -> None:
        """Move every held file due by ``day`` into the inbox (rename: atomic, and a re-run finds nothing left)."""
        if not self.outbox.is_dir():
            return
        for folder in sorted(p for p in self.outbox.iterdir() if p.is_dir() and p.name <= f"{day:%Y%m%d}"):
            for held in sorted(folder.iterdir()):
                os.replace(held, self.inbox / held.name)
                self._keep_sent(self.inbox / held.name)
            folder.rmdir()

    def find(self, name: str) -> Path | None:
        """A file already exported, whether delivered (collected or not) or still held."""
        for folder in (self.inbox, self.sent):
            if (folder / name).is_file():
                return folder / name
        return next(iter(sorted(self.outbox.glob(f"*/{name}"))), None) if self.outbox.is_dir() else None


# --- the 妇幼保健院 export ---------------------------------------------------------------------------
def vendor_icd(code: str) -> str:
    """ICD-10 国家临床版 'E11.900' -> the vendor's 4-character ICD-10 'E11.9' ('I10.x00' -> 'I10')."""
    stem, _, extension = code.partition(".")
    return f"{stem}.{extension[0]}" if extension[:1].isdigit() else stem


def vendor_department(name: str) -> str:
    return DEPARTMENTS.get(name) or f"9{zlib.crc32(name.encode()) % 1000:03d}"


def _ymd(value: date | None) -> str:
    return f"{value:%Y/%m/%d}" if value else ""


def _ymd_hms(value: datetime) -> str:
    return f"{value:%Y/%m/%d %H:%M:%S}"


def _cn_date(value: date | None) -> str:
    return f"{value:%Y年%m月%d日}" if value else ""


@dataclass
class _Day:
    """Everything one day's rendering shares: the answer key, patient ids issued so far, the people."""

    day: date
    key: AnswerKey
    people: Mapping[int, Person]
    known: dict[tuple[int, str], str]
    rereg: random.Random
    issued: dict[tuple[int, str], str] = field(default_factory=dict)
    appearances: int = 0


class FyFiles(FileSource):
    """Renders the days of 荥阳市妇幼保健院 into the vendor's daily GBK CSV files."""

    source_system = "fy_files"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        self.late_rate = float(config.get("late_submission", 0.03))
        self.duplicate_file_rate = float(config.get("duplicate_file", 0.02))
        self.duplicate_row_rate = float(config.get("duplicate_row", 0.002))
        self.unknown_code_rate = float(config.get("unknown_local_code", 0.01))
        self.re_registration_rate = float(config.get("re_registration", 0.03))
        self._known: dict[tuple[int, str], str] | None = None  # the answer key's, kept up to date day by day

    def create_schema(self, reset: bool = False) -> None:
        super().create_schema(reset)
        self._known = None  # read again from the answer key (a reset empties it)

    @cached_property
    def staff(self) -> dict[str, Staff]:
        """The hospital's staff by id, for the 工号 and names the vendor prints."""
        return {s.staff_id: s for org in self.institutions for s in self.world.staff[org]}

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        if self.already_written(activity.day):
            return {}
        day = activity.day
        if self._known is None:
            self._known = answer_key.known_patients(self.source_system)
        known, self._known = self._known, None  # dropped if this day fails
        ctx = _Day(
            day,
            AnswerKey(self.source_system, day),
            ChainMap({p.resident_id: p for p in activity.new_people}, self.world.people),
            known,
            self.rng(day, "re_registration"),
        )
        visits = [e for e in activity.encounters if e.org_code in self.institutions and e.kind != "inpatient"]
        visit_ids = {e.encounter_uid: f"MZ{day:%Y%m%d}{n:05d}" for n, e in enumerate(visits, 1)}
        files = {
            "MZJZ": (MZJZ_COLUMNS, self._visit_rows(ctx, visits, visit_ids)),
            "CSDJ": (CSDJ_COLUMNS, self._birth_rows(ctx, activity)),
            "YCFSF": (YCFSF_COLUMNS, self._maternal_rows(ctx, activity, visit_ids)),
        }
        files.update(self._correction_files(ctx, activity))
        counts = {}
        for kind, (columns, rows) in files.items():
            self._export(ctx, kind, columns, rows)
            counts[f"{PREFIX}_{kind}"] = len(rows)
        self.release_due(day)
        issued = list(ctx.key.patients)
        ctx.key.flush()
        answer_key.mark_day_written(self.source_system, day)
        # ids carry their day and sequence, so the newest is also the one the answer key would return
        known.update({(p.resident_id, p.org_code): p.local_patient_id for p in issued})
        self._known = known
        return counts

    # --- patients ---------------------------------------------------------------------------------
    def _patient(self, ctx: _Day, resident_id: int, org_code: str, table: str) -> str:
        """The 患者编号: date + sequence at first registration (or on re-registration), reused afterwards.

        The number depends only on the day's events, so a re-run after a crash issues the same numbers even
        when the answer key already holds them.
        """
        ctx.appearances += 1
        if (resident_id, org_code) in ctx.issued:
            return ctx.issued[(resident_id, org_code)]
        new_id = f"{ctx.day:%y%m%d}{ctx.appearances:05d}"
        old = ctx.known.get((resident_id, org_code))
        re_register = ctx.rereg.random() < self.re_registration_rate
        if old is None or old == new_id or re_register:
            local_id = new_id
            ctx.key.patient(local_id, resident_id, org_code)
            if old is not None and old != new_id:
                ctx.key.defect(table, local_id, "re_registration", f"also {old}")
            for defect, detail in self._identity(local_id, ctx.people[resident_id]).defects:
                ctx.key.defect(table, local_id, defect, detail)
        else:
            local_id = old
        ctx.issued[(resident_id, org_code)] = local_id
        return local_id

    def _identity(self, local_id: str, person: Person) -> RecordedIdentity:
        """What the registration desk typed for this 患者编号: fixed per number, whichever day renders it."""
        rng = random.Random(f"{self.world.seed}:{self.source_system}:patient:{local_id}")
        return recorded_identity(rng, person, self.identity_dirt)

    # --- rows -------------------------------------------------------------------------------------
    def _visit_rows(self, ctx: _Day, visits: list[Encounter], visit_ids: dict[str, str]) -> list[dict[str, Any]]:
        rng = self.rng(ctx.day, "MZJZ")
        rows = []
        for visit in visits:
            local_id = visit_ids[visit.encounter_uid]
            patient_id = self._patient(ctx, visit.resident_id, visit.org_code, f"{PREFIX}_MZJZ")
            who = self._identity(patient_id, ctx.people[visit.resident_id])
            doctor = self.staff.get(visit.doctor_id)
            main = next((d for d in visit.diagnoses if d.is_main), visit.diagnoses[0] if visit.diagnoses else None)
            code = vendor_icd(main.icd_code) if main else ""
            if rng.random() < self.unknown_code_rate and main:
                unknown = f"ZDY{rng.randrange(1, 1000):03d}"
                ctx.key.defect(f"{PREFIX}_MZJZ", local_id, "unknown_local_code", f"{code}->{unknown}")
                code = unknown
            modified = visit.start_at + timedelta(minutes=rng.randrange(2, 30), seconds=rng.randrange(60))
            ctx.key.encounter(local_id, visit.encounter_uid)
            rows.append(
                {
                    "就诊流水号": local_id,
                    "患者编号": patient_id,
                    "姓名": who.name,
                    "性别": SEX.get(who.sex, "未知"),
                    "出生日期": _ymd(who.birth_date),
                    "身份证号": who.id_number or "",
                    "联系电话": who.phone or "",
                    "家庭住址": who.address or "",
                    "就诊时间": _ymd_hms(visit.start_at),
                    "就诊类型": "急诊" if visit.kind == "emergency" else "门诊",
                    "科室编码": vendor_department(visit.department_name),
                    "科室名称": visit.department_name,
                    "医生工号": _staff_no(visit.doctor_id),
                    "医生姓名": doctor.name if doctor else "",
                    "诊断编码": code,
                    "诊断名称": main.name if main else "",
                    "费用合计": f"{visit.total_yuan:.2f}",
                    "医保标志": "是" if visit.insured else "否",
                    "最后修改时间": _ymd_hms(modified),
                }
            )
        return rows

    def _birth_rows(self, ctx: _Day, activity: DayActivity) -> list[dict[str, Any]]:
        rng = self.rng(ctx.day, "CSDJ")
        rows = []
        births = [b for b in activity.births if b.org_code in self.institutions]
        for n, birth in enumerate(births, 1):
            local_id = f"CS{ctx.day:%Y%m%d}{n:04d}"
            mother_id = self._patient(ctx, birth.mother_id, birth.org_code, f"{PREFIX}_CSDJ")
            mother = self._identity(mother_id, ctx.people[birth.mother_id])
            # The newborn is registered under a placeholder name (母亲姓名之子/之女) and has no ID number yet.
            child_id = self._patient_newborn(ctx, birth.child_id, birth.org_code)
            registered = birth.at + timedelta(minutes=rng.randrange(30, 240))
            ctx.key.encounter(local_id, birth.birth_uid)
            rows.append(
                {
                    "出生登记号": local_id,
                    "母亲患者编号": mother_id,
                    "母亲姓名": mother.name,
                    "母亲身份证号": mother.id_number or "",
                    "母亲出生日期": _cn_date(mother.birth_date),
                    "新生儿患者编号": child_id,
                    "新生儿姓名": f"{mother.name}之{'子' if birth.sex == 1 else '女'}",
                    "新生儿性别": SEX.get(birth.sex, "未知"),
                    "出生日期": _cn_date(birth.at.date()),
                    "出生时间": f"{birth.at:%H时%M分}",
                    "出生体重(克)": str(birth.weight_g),
                    "出生机构": self.institutions[birth.org_code].name,
                    "家庭住址": mother.address or "",
                    "登记时间": f"{registered:%Y年%m月%d日 %H:%M:%S}",
                }
            )
        return rows

    def _patient_newborn(self, ctx: _Day, child_id: int, org_code: str) -> str:
        ctx.appearances += 1
        local_id = f"{ctx.day:%y%m%d}{ctx.appearances:05d}"
        ctx.issued[(child_id, org_code)] = local_id
        ctx.key.patient(local_id, child_id, org_code)
        return local_id

    def _maternal_rows(self, ctx: _Day, activity: DayActivity, visit_ids: dict[str, str]) -> list[dict[str, Any]]:
        """Obstetric contacts: FY encounters with an obstetric diagnosis, and maternal follow-up services."""
        rng = self.rng(ctx.day, "YCFSF")
        contacts: list[Encounter | PublicHealthService] = [
            e for e in activity.encounters if e.org_code in self.institutions and _obstetric(e)
        ]
        contacts += [s for s in activity.services if s.org_code in self.institutions and s.kind == "maternal_followup"]
        rows = []
        for n, contact in enumerate(contacts, 1):
            local_id = f"SF{ctx.day:%Y%m%d}{n:05d}"
            patient_id = self._patient(ctx, contact.resident_id, contact.org_code, f"{PREFIX}_YCFSF")
            who = self._identity(patient_id, ctx.people[contact.resident_id])
            if isinstance(contact, Encounter):
                at, uid, values = contact.start_at, contact.encounter_uid, {}
                codes = [d.icd_code for d in contact.diagnoses]
                stage = (
                    "分娩"
                    if any(c.startswith(DELIVERY_STEMS) for c in codes)
                    else "产后访视"
                    if any(c.startswith("Z39") for c in codes)
                    else "产前检查"
                )
                visit_id = visit_ids.get(uid, "")
            else:
                at, uid, values, stage, visit_id = contact.at, contact.service_uid, contact.values, "产前检查", ""
            if not visit_id:  # a visit already in MZJZ is keyed there; the row links to it by 就诊流水号
                ctx.key.encounter(local_id, uid)
            week = {"产前检查": rng.randrange(8, 41), "分娩": rng.randrange(37, 42)}.get(stage)
            doctor = self.staff.get(contact.doctor_id)
            rows.append(
                {
                    "随访编号": local_id,
                    "患者编号": patient_id,
                    "孕产妇姓名": who.name,
                    "身份证号": who.id_number or "",
                    "就诊流水号": visit_id,
                    "随访日期": _ymd(at.date()),
                    "随访类别": stage,
                    "孕周": week or "",
                    "收缩压": values.get("sbp", round(rng.gauss(116, 10))),
                    "舒张压": values.get("dbp", round(rng.gauss(74, 7))),
                    "体重(kg)": values.get("weight_kg", f"{rng.gauss(63, 8):.1f}"),
                    "宫底高度(cm)": week - rng.randrange(0, 4) if stage == "产前检查" and week and week >= 20 else "",
                    "胎心率": rng.randrange(120, 161) if stage != "产后访视" else "",
                    "随访医生": doctor.name if doctor else "",
                    "最后修改时间": _ymd_hms(at + timedelta(minutes=rng.randrange(5, 60))),
                }
            )
        return rows

    def _correction_files(self, ctx: _Day, activity: DayActivity) -> dict[str, tuple[list[str], list[dict]]]:
        """Today's corrections to earlier visits and follow-ups, as ``_XG`` files (修改 / 作废 rows)."""
        local_ids = answer_key.local_encounter_ids(self.source_system, [c.target_uid for c in activity.corrections])
        rng = self.rng(ctx.day, "XG")
        originals: dict[str, list[dict[str, str]]] = {}
        out: dict[str, tuple[list[str], list[dict]]] = {}
        for correction in activity.corrections:
            local_id = local_ids.get(correction.target_uid, "")
            kind, id_column = {"MZ": ("MZJZ", "就诊流水号"), "SF": ("YCFSF", "随访编号")}.get(local_id[:2], ("", ""))
            if not kind:
                continue
            name = f"{PREFIX}_{kind}_{local_id[2:10]}.csv"
            if name not in originals:
                path = self.find(name)
                originals[name] = read_csv(path) if path else []
            row = next((dict(r) for r in originals[name] if r[id_column] == local_id), None)
            if row is None:
                continue
            if correction.kind == "update" and kind == "MZJZ":
                choices = [d for d in CORRECTED_DIAGNOSES if d[0] != row["诊断编码"]]
                row["诊断编码"], row["诊断名称"] = rng.choice(choices)
            elif correction.kind == "update":
                row["收缩压"] = str(round(rng.gauss(116, 10)))
            row.update(
                {
                    "操作类型": XG_OPERATION.get(correction.kind, "修改"),
                    "修改原因": correction.reason,
                    "最后修改时间": _ymd_hms(correction.at),
                }
            )
            defect = "correction_cancel" if correction.kind == "cancel" else "correction_update"
            ctx.key.defect(f"{PREFIX}_{kind}", local_id, defect, correction.reason)
            columns = ["操作类型", *(MZJZ_COLUMNS if kind == "MZJZ" else YCFSF_COLUMNS), "修改原因"]
            out.setdefault(f"{kind}_XG", (columns, []))[1].append(row)
        return out

    # --- delivery ---------------------------------------------------------------------------------
    def _export(self, ctx: _Day, kind: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Write one file of the day: on time, late (held until D+2), plus an identical ``_1`` copy if re-sent."""
        table = f"{PREFIX}_{kind}"
        rng = self.rng(ctx.day, f"export:{kind}")
        body: list[dict[str, Any]] = []
        id_column = columns[1] if columns[0] == "操作类型" else columns[0]
        for row in rows:
            body.append(row)
            if rng.random() < self.duplicate_row_rate:
                body.append(row)
                ctx.key.defect(table, row[id_column], "duplicate_submission", "row repeated in the same file")
        kind_part, _, suffix = kind.partition("_")
        name = f"{PREFIX}_{kind_part}_{ctx.day:%Y%m%d}{'_' + suffix if suffix else ''}.csv"
        data = csv_bytes(columns, body)
        due = ctx.day
        if rng.random() < self.late_rate:
            due = ctx.day + timedelta(days=2)
            ctx.key.defect(table, name, "late_submission", f"delivered when {due} is processed")
        if due == ctx.day:
            self.deliver(name, data)
        else:
            self.hold(name, data, due)
        if rng.random() < self.duplicate_file_rate:
            copy = name.removesuffix(".csv") + "_1.csv"
            self.hold(copy, data, due + timedelta(days=1))
            ctx.key.defect(table, copy, "duplicate_submission", f"identical copy of {name}")


def _obstetric(encounter: Encounter) -> bool:
    return any(d.icd_code.startswith("O") or d.icd_code.startswith(OBSTETRIC_STEMS) for d in encounter.diagnoses)


def _staff_no(staff_id: str) -> str:
    """The vendor's 工号: a role letter and the staff number ('410182003医007' -> 'Y007')."""
    roles = {"医": "Y", "护": "H", "药": "P", "技": "J"}
    return roles.get(staff_id[9:10], "Z") + staff_id[10:] if len(staff_id) > 10 else staff_id
