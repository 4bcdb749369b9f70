"""Two registers the county receives as files rather than from a clinical system.

* ``population_register`` — the monthly 全员人口 register (卫健/公安 population database export): on the first
  day of each month, ``QYRK_410182_<YYYYMM>.csv`` (one row per living resident known to the register at the end
  of the previous month) and ``QYRK_410182_<YYYYMM>_HZ.csv`` (denominators by township × sex × 5-year age
  band). GBK, CRLF. The register lags reality: a share of recent births and deaths are not yet in it.
* ``yb_settlement`` — the 医保 platform's daily settlement file ``YBJS_410182_<YYYYMMDD>.txt`` (UTF-8, '|'
  separated, LF), every settlement of the county's insured, including inpatient stays outside the county:
  the only view the platform has of care outside the county. ``YBDDJG_410182.txt`` lists the 医保 codes of
  the county's 定点 institutions.

Both write into ``$DRC_STATE_DIR/inbox/<source_system>/`` with an atomic rename.
"""

from __future__ import annotations

import json
import random
import shutil
import zlib
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from simulator import answer_key, clinical
from simulator.answer_key import AnswerKey
from simulator.events import DayActivity, InsuranceSettlement, Person
from simulator.systems.fy_files import SEX, FileSource, csv_bytes, read_csv, write_atomic
from simulator.world import TOWNSHIPS, World

QYRK_COLUMNS = [
    "姓名",
    "性别",
    "出生日期",
    "公民身份号码",
    "民族",
    "乡镇街道",
    "村居委会",
    "户编号",
    "人口类别",
    "现住址",
]
QYRK_SUMMARY_COLUMNS = ["乡镇街道", "性别", "年龄组", "常住人口数", "户籍人口数"]
AGE_BANDS = [f"{lo}-{lo + 4}岁" for lo in range(0, 85, 5)] + ["85岁及以上"]
YBJS_COLUMNS = [
    "结算流水号",
    "医保号",
    "身份证号",
    "姓名",
    "医疗机构编码",
    "医疗机构名称",
    "就医地",
    "医疗类别",
    "入院日期",
    "出院日期",
    "总费用",
    "统筹支付",
    "个人支付",
    "结算类型",
    "原结算流水号",
    "结算时间",
]
YBDDJG_COLUMNS = ["医疗机构编码", "医疗机构名称", "医疗机构等级", "机构类别", "所在乡镇"]
YB_CARE_TYPE = {"inpatient": "住院", "emergency": "急诊"}  # anything else: 门诊


def age_band(birth: date, on: date) -> str:
    return AGE_BANDS[min(clinical.completed_years(birth, on) // 5, len(AGE_BANDS) - 1)]


class PopulationRegister(FileSource):
    """The monthly 全员人口 register: who lives in the county at month end, as the register knows it."""

    source_system = "population_register"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.area = str(world.config.get("area_code", "410182"))
        self.lag_rate = float(config.get("lag_rate", 0.05))
        self.max_lag_days = int(config.get("max_lag_days", 60))

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        if self.already_written(activity.day):
            return {}
        counts = self._write_month(activity.day) if activity.day.day == 1 else {}
        answer_key.mark_day_written(self.source_system, activity.day)
        return counts

    def _lag(self, person: Person, event: str, on: date) -> int:
        """Days before the register reflects a birth or death: 0 for most, up to ``max_lag_days`` for a few."""
        rng = self.rng(on, f"{event}:{person.resident_id}")
        return rng.randint(1, self.max_lag_days) if rng.random() < self.lag_rate else 0

    def _write_month(self, day: date) -> dict[str, int]:
        month_end = day - timedelta(days=1)
        month = f"{month_end:%Y%m}"
        key = AnswerKey(self.source_system, day)
        table = f"QYRK_{month}"
        recent = month_end - timedelta(days=self.max_lag_days)
        listed: list[Person] = []
        for person in self.world.people.values():
            if person.birth_date > month_end:
                continue
            if (
                person.birth_date > recent
                and person.birth_date + timedelta(days=self._lag(person, "birth", person.birth_date)) > month_end
            ):
                key.defect(table, person.id_number, "late_submission", f"birth {person.birth_date} not yet registered")
                continue
            died = person.death_date
            if died is not None and died <= month_end:
                if died <= recent or died + timedelta(days=self._lag(person, "death", died)) <= month_end:
                    continue
                key.defect(table, person.id_number, "late_submission", f"death {died} not yet removed")
            listed.append(person)
        township_order = {t: n for n, t in enumerate(TOWNSHIPS)}
        listed.sort(
            key=lambda p: (township_order.get(p.township, 99), p.village, p.household_id, p.birth_date, p.resident_id)
        )
        known = set(answer_key.known_patients(self.source_system).values())
        rows = []
        for person in listed:
            if person.id_number not in known:
                key.patient(person.id_number, person.resident_id, self.area)
            rows.append(
                {
                    "姓名": person.name,
                    "性别": SEX.get(person.sex, "未知"),
                    "出生日期": f"{person.birth_date:%Y%m%d}",
                    "公民身份号码": person.id_number,
                    "民族": person.ethnicity,
                    "乡镇街道": person.township,
                    "村居委会": person.village,
                    "户编号": f"{self.area}{person.household_id:09d}",
                    "人口类别": "户籍" if person.id_number.startswith(self.area) else "常住",
                    "现住址": person.address,
                }
            )
        resident: Counter[tuple[str, str, str]] = Counter()
        registered: Counter[tuple[str, str, str]] = Counter()
        for person, row in zip(listed, rows, strict=True):
            cell = (person.township, row["性别"], age_band(person.birth_date, month_end))
            resident[cell] += 1
            registered[cell] += row["人口类别"] == "户籍"
        summary = [
            {
                "乡镇街道": t,
                "性别": s,
                "年龄组": band,
                "常住人口数": resident[(t, s, band)],
                "户籍人口数": registered[(t, s, band)],
            }
            for t in TOWNSHIPS
            for s in ("男", "女")
            for band in AGE_BANDS
        ]
        self.deliver(f"QYRK_{self.area}_{month}.csv", csv_bytes(QYRK_COLUMNS, rows))
        self.deliver(f"QYRK_{self.area}_{month}_HZ.csv", csv_bytes(QYRK_SUMMARY_COLUMNS, summary))
        key.flush()
        return {"QYRK": len(rows), "QYRK_HZ": len(summary)}


class InsuranceSettlements(FileSource):
    """The 医保 platform's daily settlement file for the county's insured, in and out of the county.

    A settlement belongs to the file of the day it is settled: an inpatient stay settled at discharge waits
    (as rendered rows, in the outbox) until that day is processed.
    """

    source_system = "yb_settlement"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.area = str(world.config.get("area_code", "410182"))
        self.missing_id_rate = float(config.get("missing_id_number", 0.03))
        # 医保 定点 codes are numbered in the order institutions became 定点, not by our institution codes.
        self.yb_codes = {inst.org_code: f"H{self.area}00{n:03d}" for n, inst in enumerate(world.institutions, 1)}

    def create_schema(self, reset: bool = False) -> None:
        super().create_schema(reset)
        rows = [
            {
                "医疗机构编码": self.yb_codes[i.org_code],
                "医疗机构名称": i.name,
                "医疗机构等级": i.level,
                "机构类别": i.org_type,
                "所在乡镇": i.township,
            }
            for i in self.world.institutions
        ]
        self.deliver(f"YBDDJG_{self.area}.txt", csv_bytes(YBDDJG_COLUMNS, rows, "utf-8", "|", "\n"))

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        if self.already_written(activity.day):
            return {}
        day = activity.day
        key = AnswerKey(self.source_system, day)
        newborn = {p.resident_id: p for p in activity.new_people}
        entries: list[dict[str, Any]] = []
        deferred: dict[date, list[dict[str, Any]]] = {}
        for settlement in activity.settlements:
            entry = self._entry(
                settlement, self.world.people.get(settlement.resident_id) or newborn[settlement.resident_id]
            )
            settled_on = settlement.settled_at.date()
            (deferred.setdefault(settled_on, []) if settled_on > day else entries).append(entry)
        for settled_on, held in deferred.items():
            write_atomic(
                self._deferred_dir(settled_on) / f"{day:%Y%m%d}.json",
                json.dumps(held, ensure_ascii=False, sort_keys=True).encode(),
            )
        if self._deferred_dir(day).is_dir():
            for held_file in sorted(self._deferred_dir(day).glob("*.json")):
                entries += json.loads(held_file.read_bytes())
        entries.sort(key=lambda e: (e["at"], e["uid"]))
        rows = []
        enrolees: set[str] = set()
        for n, entry in enumerate(entries, 1):
            local_id = f"{self.area}{day:%Y%m%d}{n:06d}"
            row = {**entry["row"], "结算流水号": local_id}
            if row["医保号"] not in enrolees:
                enrolees.add(row["医保号"])
                key.patient(row["医保号"], entry["resident_id"], self.area)
            key.encounter(local_id, entry["truth"])
            if not row["身份证号"]:
                key.defect("YBJS", local_id, "missing_id_number", "身份证号 blank")
            rows.append(row)
        today = {row["结算流水号"]: (entry["truth"], row) for entry, row in zip(entries, rows, strict=True)}
        rows += self._reversals(activity, key, today)
        self.deliver(f"YBJS_{self.area}_{day:%Y%m%d}.txt", csv_bytes(YBJS_COLUMNS, rows, "utf-8", "|", "\n"))
        key.flush()
        answer_key.mark_day_written(self.source_system, day)
        for folder in sorted(p for p in self.outbox.glob("settle_*") if p.name <= f"settle_{day:%Y%m%d}"):
            shutil.rmtree(folder)
        return {"YBJS": len(rows)}

    def _deferred_dir(self, settled_on: date) -> Path:
        return self.outbox / f"settle_{settled_on:%Y%m%d}"

    def _entry(self, settlement: InsuranceSettlement, person: Person) -> dict[str, Any]:
        """A settlement rendered as the 医保 platform records it, before its 结算流水号 is assigned."""
        # Whether the platform holds a person's ID number is a property of the enrolment, not of one bill.
        id_missing = (
            random.Random(f"{self.world.seed}:{self.source_system}:id:{person.insurance_no}").random()
            < self.missing_id_rate
        )
        in_county = bool(settlement.org_code)
        hospital = self.world.by_code[settlement.org_code].name if in_county else settlement.out_of_county_hospital
        row = {
            "医保号": person.insurance_no,
            "身份证号": "" if id_missing else person.id_number,
            "姓名": person.name,
            "医疗机构编码": self.yb_codes[settlement.org_code] if in_county else _outside_code(hospital),
            "医疗机构名称": hospital,
            "就医地": "县内" if in_county else "县外",
            "医疗类别": YB_CARE_TYPE.get(settlement.kind, "门诊"),
            "入院日期": f"{settlement.admitted_on:%Y-%m-%d}" if settlement.admitted_on else "",
            "出院日期": f"{settlement.discharged_on:%Y-%m-%d}" if settlement.discharged_on else "",
            "总费用": f"{settlement.total_yuan:.2f}",
            "统筹支付": f"{settlement.fund_paid_yuan:.2f}",
            "个人支付": f"{settlement.total_yuan - settlement.fund_paid_yuan:.2f}",
            "结算类型": "正常",
            "原结算流水号": "",
            "结算时间": _ts(settlement.settled_at),
        }
        return {
            "at": _ts(settlement.settled_at),
            "uid": settlement.settlement_uid,
            "resident_id": person.resident_id,
            "truth": settlement.encounter_uid or settlement.settlement_uid,
            "row": row,
        }

    def _reversals(
        self, activity: DayActivity, key: AnswerKey, today: dict[str, tuple[str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """A cancelled (退费/作废) visit that was settled is reversed by a negative 冲销 settlement.

        ``today`` holds today's rows by 结算流水号 with the truth uid they settle (a visit settled after midnight
        may be cancelled the same day its settlement is filed).
        """
        cancels = [c for c in activity.corrections if c.kind == "cancel"]
        local_ids = {
            **answer_key.local_encounter_ids(self.source_system, [c.target_uid for c in cancels]),
            **{uid: local_id for local_id, (uid, _) in today.items()},
        }
        rows: list[dict[str, Any]] = []
        numbered = len(today)
        earlier_files: dict[str, dict[str, dict[str, Any]]] = {}  # each earlier file parsed once
        for correction in cancels:
            original_id = local_ids.get(correction.target_uid, "")
            if original_id in today:
                original: dict[str, Any] | None = today[original_id][1]
            elif original_id:
                name = f"YBJS_{self.area}_{original_id[len(self.area) : len(self.area) + 8]}.txt"
                if name not in earlier_files:
                    path = self.find(name)
                    earlier_files[name] = {r["结算流水号"]: r for r in read_csv(path, "utf-8", "|")} if path else {}
                original = earlier_files[name].get(original_id)
            else:
                original = None
            if original is None:
                continue
            numbered += 1
            negate = {c: f"{-float(original[c]):.2f}" for c in ("总费用", "统筹支付", "个人支付")}
            reversal_id = f"{self.area}{activity.day:%Y%m%d}{numbered:06d}"
            rows.append(
                {
                    **original,
                    **negate,
                    "结算流水号": reversal_id,
                    "结算类型": "冲销",
                    "原结算流水号": original_id,
                    "结算时间": _ts(correction.at),
                }
            )
            key.defect("YBJS", original_id, "correction_cancel", correction.reason)
            if not original["身份证号"]:  # the reversal copies the enrolment's missing ID number
                key.defect("YBJS", reversal_id, "missing_id_number", f"身份证号 blank (冲销 of {original_id})")
        return rows


def _ts(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}"


def _outside_code(hospital: str) -> str:
    """A 医保 national institution code for a hospital outside the county (stable per hospital name)."""
    return f"H4101{zlib.crc32(hospital.encode()) % 10**7:07d}"
