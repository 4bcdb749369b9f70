"""荥阳市人民医院 HIS on MariaDB: a vendor-style schema (pinyin-abbreviation names, local codes).

Tables (all carry XGSJ, the vendor's last-modified time, which collection uses as watermark):
  GH_BRJBXX  病人基本信息  patient master (BRID local id, XB sex as '男'/'女'/'未知')
  MZ_JZJL    门诊就诊记录  outpatient/emergency visits (JZLX '门诊'/'急诊')
  MZ_ZDJL    门诊诊断记录  diagnoses per visit (ZZDBZ=1 marks the main diagnosis)
Each simulated day is one transaction, so a day is either wholly present or absent.
The answer key (true resident behind each BRID, injected defects) goes to database ``sim_truth``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from core.db import mariadb_engine
from simulator.population import Resident, generate_residents

SOURCE_SYSTEM = "rmyy_his"

DDL = [
    """CREATE TABLE IF NOT EXISTS GH_BRJBXX (
        BRID VARCHAR(16) PRIMARY KEY, XM VARCHAR(32) NOT NULL, XB VARCHAR(4), CSRQ DATE,
        SFZH VARCHAR(18), LXDH VARCHAR(20), JTZZ VARCHAR(128), JDSJ DATETIME NOT NULL,
        XGSJ DATETIME(3) NOT NULL, KEY ix_xgsj (XGSJ)) DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS MZ_JZJL (
        JZID VARCHAR(20) PRIMARY KEY, BRID VARCHAR(16) NOT NULL, JZLX VARCHAR(4) NOT NULL,
        KSDM VARCHAR(8), KSMC VARCHAR(32), YSXM VARCHAR(32), JZSJ DATETIME NOT NULL,
        XGSJ DATETIME(3) NOT NULL, KEY ix_xgsj (XGSJ), KEY ix_jzsj (JZSJ)) DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS MZ_ZDJL (
        ZDID VARCHAR(24) PRIMARY KEY, JZID VARCHAR(20) NOT NULL, ZDDM VARCHAR(16), ZDMC VARCHAR(64),
        ZZDBZ TINYINT NOT NULL DEFAULT 0, XGSJ DATETIME(3) NOT NULL, KEY ix_xgsj (XGSJ))
        DEFAULT CHARSET=utf8mb4""",
]
TRUTH_DDL = [
    """CREATE TABLE IF NOT EXISTS patient_truth (
        source_system VARCHAR(32), local_patient_id VARCHAR(32), resident_id INT NOT NULL,
        PRIMARY KEY (source_system, local_patient_id)) DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS defect_log (
        source_system VARCHAR(32), table_name VARCHAR(32), record_id VARCHAR(32), defect VARCHAR(32),
        detail VARCHAR(128), PRIMARY KEY (source_system, table_name, record_id, defect))
        DEFAULT CHARSET=utf8mb4""",
]

DEPARTMENTS = [("0101", "内科", 30), ("0201", "外科", 15), ("0301", "儿科", 14), ("0401", "妇产科", 10),
               ("0501", "中医科", 8), ("0601", "眼科", 5), ("0701", "口腔科", 5), ("0801", "皮肤科", 4)]
EMERGENCY_DEPARTMENT = ("0901", "急诊科")
DOCTORS = ["王建华", "李秀梅", "张国强", "刘红霞", "陈志刚", "杨丽", "赵永军", "郭晓燕"]
# Local diagnosis codes as this vendor writes them (ICD-10 with local suffixes).
DIAGNOSES = [("I10.x00", "原发性高血压", 20), ("E11.900", "2型糖尿病", 10), ("J06.900", "急性上呼吸道感染", 25),
             ("J20.900", "急性支气管炎", 10), ("K29.700", "胃炎", 8), ("M54.500", "腰痛", 6),
             ("I25.100", "动脉粥样硬化性心脏病", 5), ("J18.900", "肺炎", 4), ("N39.000", "泌尿道感染", 4)]


def _weighted(rng: random.Random, items: list[tuple]) -> tuple:
    return rng.choices(items, weights=[item[-1] for item in items])[0]


class HospitalHis:
    """Generates 人民医院 activity day by day into MariaDB, in order, idempotently."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.his = config["hospital_his"]
        self.database = self.his["database"]
        self.seed = config["seed"]
        self.residents = generate_residents(config["seed"], config["residents"], config["area_code"],
                                            config["townships"], config["start_date"])

    # --- set-up -------------------------------------------------------------------------------
    def create_schema(self, reset: bool = False) -> None:
        with mariadb_engine("mysql").begin() as conn:
            for db in (self.database, "sim_truth"):
                if reset:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4"))
        for db, statements in ((self.database, DDL), ("sim_truth", TRUTH_DDL)):
            with mariadb_engine(db).begin() as conn:
                for ddl in statements:
                    conn.execute(sa.text(ddl))

    def last_simulated_day(self) -> date | None:
        with mariadb_engine(self.database).connect() as conn:
            return conn.execute(sa.text("SELECT DATE(MAX(JZSJ)) FROM MZ_JZJL")).scalar()

    # --- generation ---------------------------------------------------------------------------
    def simulate_until(self, end: date, progress: Callable[[date, int], None] | None = None) -> list[date]:
        """Generate every missing day from the start date up to ``end`` (inclusive); return the new days."""
        last = self.last_simulated_day()
        day = self.config["start_date"] if last is None else last + timedelta(days=1)
        done = []
        while day <= end:
            visits = self._simulate_day(day)
            done.append(day)
            if progress:
                progress(day, visits)
            day += timedelta(days=1)
        return done

    def _known_patients(self, conn: sa.Connection) -> dict[int, str]:
        rows = sa.text("SELECT resident_id, local_patient_id FROM sim_truth.patient_truth "
                       "WHERE source_system = :s ORDER BY local_patient_id")
        return {r.resident_id: r.local_patient_id for r in conn.execute(rows, {"s": SOURCE_SYSTEM})}

    def _simulate_day(self, day: date) -> int:
        rng = random.Random(f"{SOURCE_SYSTEM}:{self.seed}:{day.isoformat()}")
        engine = mariadb_engine(self.database)
        with engine.begin() as conn:
            known = self._known_patients(conn)
            next_patient = conn.execute(sa.text("SELECT COUNT(*) FROM GH_BRJBXX")).scalar() + 1
            volume = self.his["weekday_visits"] * (self.his["weekend_factor"] if day.weekday() >= 5 else 1.0)
            n_visits = max(1, int(rng.gauss(volume, volume * 0.08)))
            patients, visits, diagnoses, truth, defects = [], [], [], [], []
            for seq in range(1, n_visits + 1):
                resident = self._pick_resident(rng)
                emergency = rng.random() < self.his["emergency_share"]
                visit_at = self._visit_time(rng, day, emergency)
                brid = known.get(resident.resident_id)
                if brid is None or rng.random() < self.his["dirt"]["re_registration"]:
                    if brid is not None:
                        defects.append((f"{next_patient:08d}", "re_registration", f"also {brid}"))
                    brid = f"{next_patient:08d}"
                    next_patient += 1
                    known[resident.resident_id] = brid
                    patients.append(self._patient_row(rng, resident, brid, visit_at, defects))
                    truth.append({"s": SOURCE_SYSTEM, "l": brid, "r": resident.resident_id})
                jzid = f"MZ{day:%Y%m%d}{seq:05d}"
                dept = EMERGENCY_DEPARTMENT if emergency else _weighted(rng, DEPARTMENTS)[:2]
                modified = visit_at + timedelta(minutes=rng.randrange(1, 30))
                visits.append({"JZID": jzid, "BRID": brid, "JZLX": "急诊" if emergency else "门诊",
                               "KSDM": dept[0], "KSMC": dept[1], "YSXM": rng.choice(DOCTORS),
                               "JZSJ": visit_at, "XGSJ": modified})
                for n in range(1, rng.choice((2, 2, 3))):
                    code, name, _ = _weighted(rng, DIAGNOSES)
                    diagnoses.append({"ZDID": f"{jzid}{n:02d}", "JZID": jzid, "ZDDM": code, "ZDMC": name,
                                      "ZZDBZ": 1 if n == 1 else 0, "XGSJ": modified})
            self._insert(conn, "GH_BRJBXX", patients)
            self._insert(conn, "MZ_JZJL", visits)
            self._insert(conn, "MZ_ZDJL", diagnoses)
            if truth:
                conn.execute(sa.text("INSERT INTO sim_truth.patient_truth VALUES (:s, :l, :r)"), truth)
            if defects:
                conn.execute(sa.text("INSERT INTO sim_truth.defect_log VALUES (:s, 'GH_BRJBXX', :r, :d, :x)"),
                             [{"s": SOURCE_SYSTEM, "r": r, "d": d, "x": x} for r, d, x in defects])
        return n_visits

    def _pick_resident(self, rng: random.Random) -> Resident:
        # Older residents visit hospital more often: weight by a crude age factor.
        while True:
            resident = rng.choice(self.residents)
            age = (self.config["start_date"] - resident.birth_date).days // 365
            if rng.random() < 0.3 + min(age, 80) / 100:
                return resident

    @staticmethod
    def _visit_time(rng: random.Random, day: date, emergency: bool) -> datetime:
        if emergency:
            return datetime.combine(day, time()) + timedelta(seconds=rng.randrange(86_400))
        return datetime.combine(day, time(8)) + timedelta(seconds=rng.randrange(int(9.5 * 3600)))

    def _patient_row(self, rng: random.Random, resident: Resident, brid: str, at: datetime,
                     defects: list[tuple[str, str, str]]) -> dict[str, Any]:
        dirt = self.his["dirt"]
        id_number: str | None = resident.id_number
        if rng.random() < dirt["missing_id_number"]:
            id_number = None
            defects.append((brid, "missing_id_number", ""))
        elif rng.random() < dirt["wrong_check_digit"]:
            wrong = rng.choice([c for c in "0123456789X" if c != resident.id_number[-1]])
            id_number = resident.id_number[:17] + wrong
            defects.append((brid, "wrong_check_digit", f"{resident.id_number[-1]}->{wrong}"))
        sex = {1: "男", 2: "女"}[resident.sex]
        if rng.random() < dirt["unknown_sex_code"]:
            sex = "未知"
            defects.append((brid, "unknown_sex_code", ""))
        return {"BRID": brid, "XM": resident.name, "XB": sex, "CSRQ": resident.birth_date,
                "SFZH": id_number, "LXDH": resident.phone, "JTZZ": resident.address,
                "JDSJ": at.replace(microsecond=0), "XGSJ": at}

    @staticmethod
    def _insert(conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            columns = list(rows[0])
            conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(columns)}) "
                                 f"VALUES ({', '.join(':' + c for c in columns)})"), rows)
