"""荥阳市中医院 HIS on PostgreSQL (``zyy_his``): a second vendor, deliberately unlike the 人民医院 MariaDB HIS.

The vendor writes English-ish abbreviated snake_case tables into schema ``his``; sex as 'M'/'F'/'U'; ICD-10 in
its own variants ('I10.X00', 'J06.9', 'R51'); 中医诊断 (病名 + 证候, GB/T 15657-style codes) beside the western
ones; its own 'YP' drug codes, LIS item codes and fee classes; and, in ``ip_disch`` only, dates as text.
Every table carries ``updated_at timestamptz``, the commit time of the row's last change, which watermark
and log-based collection rely on. A 作废 registration is physically deleted (its diagnoses cascade); money is
never deleted: a 退费 is a negative ``fee_detail`` row pointing at the original.

A row whose commit time falls on a later day than the one being written (a discharge, the report of an
evening lab, nightly bed charges) waits in ``sim.pending`` (simulator bookkeeping in the same database, not
part of the vendor schema) and is released on its day, in the same transaction as that day's rows, so the
source never holds a row from its future. Reference: docs/simulator/zyy_his.md.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from simulator import answer_key
from simulator.answer_key import AnswerKey
from simulator.connections import grant_collector, source_pg_engine
from simulator.dirt import IdentityDirt, recorded_identity
from simulator.events import Charge, Correction, DayActivity, Encounter, Prescription
from simulator.pg_copy import copy_insert
from simulator.systems.base import MemberSystem
from simulator.tcm import HERB_PRICES
from simulator.world import World

TZ = ZoneInfo("Asia/Shanghai")
SCHEMA = "his"

# --- vendor code lists (our truth code -> the vendor's code and wording) ---------------------------------------
SEX = {1: "M", 2: "F"}  # anything else: 'U'
FOREIGN_SEX_CODES = ("1", "2", "0", "9")  # GB/T 2261.1 codes leaking in from an old interface: not 'M'/'F'/'U'
NATION = {"汉族": "01", "回族": "03"}  # GB 3304
VISIT_TYPE = {"outpatient": "1", "emergency": "2"}
OUTCOME = {"治愈": "1", "好转": "2", "未愈": "3", "死亡": "4", "其他": "9"}
INCISION = {"I": "1", "II": "2", "III": "3"}
HEALING = {"甲": "1", "乙": "2", "丙": "3"}
# ICD-10 国家临床版 2.0 -> the vendor's older library: 4-character codes, 'X' upper-case, '.x00' sometimes dropped.
DIAGNOSES = {
    "I10.x00": ("I10.X00", "高血压病"),
    "E11.900": ("E11.9", "2型糖尿病"),
    "J06.900": ("J06.9", "上呼吸道感染"),
    "J20.900": ("J20.9", "急性支气管炎"),
    "J18.900": ("J18.9", "肺炎"),
    "K29.700": ("K29.7", "胃炎"),
    "M54.500": ("M54.5", "腰痛"),
    "I25.100": ("I25.1", "冠状动脉粥样硬化性心脏病"),
    "N39.000": ("N39.0", "尿路感染"),
    "K52.900": ("K52.9", "胃肠炎"),
    "M17.900": ("M17.9", "膝骨关节炎"),
    "L30.900": ("L30.9", "皮炎"),
    "H10.900": ("H10.9", "结膜炎"),
    "K02.900": ("K02.9", "龋齿"),
    "I63.900": ("I63.9", "脑梗死"),
    "R51.x00": ("R51", "头痛"),
    "K35.800": ("K35.8", "急性阑尾炎"),
    "S72.000": ("S72.0", "股骨颈骨折"),
    "J44.100": ("J44.1", "慢性阻塞性肺疾病急性加重"),
    "I50.900": ("I50.9", "心力衰竭"),
    "K80.200": ("K80.2", "胆囊结石"),
    "O80.000": ("O80.0", "单胎顺产"),
}
# The vendor's codes of the 中药饮片: YP50101.. in the order of the price list.
HERBS = {name: (f"YP{50101 + i}", price) for i, (name, price) in enumerate(HERB_PRICES.items())}
# National drug code (our truth) -> the vendor's own drug code and name.
DRUGS = {
    "XC08CAA033A001010100223": ("YP00231", "氨氯地平片"),
    "XC09AAD082A001010100433": ("YP00235", "依那普利片"),
    "XA10BAE064A001010100321": ("YP00412", "二甲双胍片"),
    "ZA01AAL0130010102050": ("YP10087", "连花清瘟胶囊"),
    "XJ01CAA021E001010100987": ("YP00108", "阿莫西林胶囊"),
    "XR05CBA046B001010100765": ("YP00517", "氨溴索片"),
    "XJ01DDT160B002010100543": ("YP00126", "注射用头孢曲松钠"),
    "XA02BCO008E001010100654": ("YP00603", "奥美拉唑肠溶胶囊"),
}
RX_TYPE = {"western": "1", "patent": "2", "herbal": "3"}  # 西药 / 中成药 / 中药饮片
FEE_CLASS = {
    "西药": "01",
    "中成药": "02",
    "中草药": "03",
    "检查": "04",
    "化验": "05",
    "治疗": "06",
    "床位": "07",
    "手术": "08",
    "挂号": "09",
}
# 医疗服务价格项目 code (truth) -> the vendor's charge item code and name.
FEE_ITEMS = {
    "110200001": ("XM0001", "挂号费"),
    "250101001": ("XM2501", "化验费"),
    "210102001": ("XM2101", "影像检查费"),
    "110900001": ("XM1109", "床位费"),
    "120100001": ("XM1201", "护理费"),
}
DAILY_CATEGORIES = ("床位", "治疗")  # inpatient charges the nightly 记账 job posts day by day
# LOINC -> the LIS's item code, abbreviation, name, unit spelling and specimen.
LIS_ITEMS = {
    "6690-2": ("1001", "WBC", "白细胞计数", "10*9/L", "全血"),
    "718-7": ("1003", "HGB", "血红蛋白", "g/L", "全血"),
    "2345-7": ("2001", "GLU", "葡萄糖", "mmol/L", "血清"),
    "2160-0": ("2105", "CREA", "肌酐", "μmol/L", "血清"),
    "1742-6": ("2201", "ALT", "谷丙转氨酶", "U/L", "血清"),
}
MODALITY = {"DR": "DX", "CT": "CT", "超声": "US", "心电图": "ECG"}
# Our department code -> vendor department code/name and its ward (inpatients).
DEPARTMENTS = {
    "5001": ("0201", "中医内科", "B01", "中医内科病区"),
    "5002": ("0305", "针灸推拿科", "B03", "针灸康复病区"),
    "5003": ("0402", "骨伤科", "B04", "骨伤科病区"),
    "0301": ("0701", "儿科", "B07", "儿科病区"),
    "0401": ("0501", "妇产科", "B05", "妇产科病区"),
    "0901": ("0901", "急诊科", "B09", "急诊观察病区"),
}
OPERATIONS = {
    "47.0901": ("47.01", "腹腔镜下阑尾切除术"),
    "79.3501": ("79.35", "股骨骨折切开复位内固定术"),
    "51.2301": ("51.23", "腹腔镜下胆囊切除术"),
}
PAY_CHANNELS = ("WX", "ZFB", "XJ", "YB")  # 微信 / 支付宝 / 现金 / 医保卡 (the column added by schema drift)
DRIFT_COLUMN = ("op_reg", "pay_channel", "varchar(4)")

_TS = "timestamp NOT NULL"
_UPD = "updated_at timestamptz NOT NULL"
# In foreign-key order; rows are inserted in this order. Like many HIS vendors, it declares keys between header and
# detail tables only: orders, results and charges carry pat_id and visit_no without a declared reference.
DDL = {
    "pat_master": f"""pat_id varchar(16) PRIMARY KEY, pat_name varchar(32) NOT NULL, sex varchar(2),
        birth_date date, id_card_type varchar(2) NOT NULL DEFAULT '01', id_card_no varchar(18) NOT NULL DEFAULT '',
        nation_code varchar(2), phone varchar(20), addr varchar(128), ins_card_no varchar(32) NOT NULL DEFAULT '',
        create_time {_TS}, {_UPD}""",
    "op_reg": f"""reg_id varchar(20) PRIMARY KEY, pat_id varchar(16) NOT NULL REFERENCES {SCHEMA}.pat_master,
        visit_type char(1) NOT NULL, dept_code varchar(8), dept_name varchar(32), doc_code varchar(8),
        doc_name varchar(32), reg_time {_TS}, reg_fee numeric(10,2), ins_type char(1), {_UPD}""",
    "op_diag": f"""diag_id varchar(24) PRIMARY KEY,
        reg_id varchar(20) NOT NULL REFERENCES {SCHEMA}.op_reg ON DELETE CASCADE, diag_seq smallint NOT NULL,
        diag_class char(1) NOT NULL, diag_code varchar(16), diag_name varchar(64), syn_code varchar(16),
        syn_name varchar(32), main_flag char(1) NOT NULL, diag_time {_TS}, {_UPD}""",
    "ip_adm": f"""adm_no varchar(16) PRIMARY KEY, pat_id varchar(16) NOT NULL REFERENCES {SCHEMA}.pat_master,
        dept_code varchar(8), dept_name varchar(32), ward_code varchar(8), ward_name varchar(32), bed_no varchar(8),
        adm_time {_TS}, doc_code varchar(8), doc_name varchar(32), adm_diag_code varchar(16),
        adm_diag_name varchar(64), adm_status char(1) NOT NULL, ins_type char(1), {_UPD}""",
    "ip_diag": f"""diag_id varchar(24) PRIMARY KEY, adm_no varchar(16) NOT NULL REFERENCES {SCHEMA}.ip_adm,
        diag_seq smallint NOT NULL, diag_class char(1) NOT NULL, diag_code varchar(16), diag_name varchar(64),
        syn_code varchar(16), syn_name varchar(32), main_flag char(1) NOT NULL, diag_time {_TS}, {_UPD}""",
    "ip_oper": f"""oper_id varchar(24) PRIMARY KEY, adm_no varchar(16) NOT NULL REFERENCES {SCHEMA}.ip_adm,
        oper_code varchar(16), oper_name varchar(64), oper_start {_TS}, oper_end {_TS}, incision_class char(1),
        heal_grade char(1), surgeon_code varchar(8), {_UPD}""",
    "ip_disch": f"""adm_no varchar(16) PRIMARY KEY REFERENCES {SCHEMA}.ip_adm, disch_date varchar(8) NOT NULL,
        disch_time varchar(6) NOT NULL, disch_dept_code varchar(8), outcome_code char(1), main_diag_code varchar(16),
        main_diag_name varchar(64), tcm_dis_code varchar(16), tcm_dis_name varchar(32), tcm_syn_code varchar(16),
        tcm_syn_name varchar(32), los_days integer, total_fee numeric(12,2), doc_code varchar(8), {_UPD}""",
    "rx_order": f"""rx_no varchar(24) PRIMARY KEY, visit_type char(1) NOT NULL, visit_no varchar(20) NOT NULL,
        pat_id varchar(16) NOT NULL, rx_type char(1) NOT NULL, dept_code varchar(8),
        doc_code varchar(8), rx_time {_TS}, herb_doses smallint, usage_note varchar(64), {_UPD}""",
    "rx_item": f"""rx_no varchar(24) NOT NULL REFERENCES {SCHEMA}.rx_order ON DELETE CASCADE,
        item_no smallint NOT NULL, drug_code varchar(12) NOT NULL, drug_name varchar(64), spec varchar(32),
        qty numeric(10,2), unit varchar(8), price numeric(10,4), amount numeric(12,2), {_UPD},
        PRIMARY KEY (rx_no, item_no)""",
    "lis_result": f"""result_id varchar(24) PRIMARY KEY, req_no varchar(22) NOT NULL, visit_type char(1) NOT NULL,
        visit_no varchar(20) NOT NULL, pat_id varchar(16) NOT NULL,
        item_code varchar(8), item_abbr varchar(8), item_name varchar(32), result_value varchar(16),
        unit varchar(16), ref_range varchar(24), abn_flag varchar(1), sample_type varchar(8), sample_time {_TS},
        report_time {_TS}, {_UPD}""",
    "pacs_report": f"""report_id varchar(24) PRIMARY KEY, visit_type char(1) NOT NULL, visit_no varchar(20) NOT NULL,
        pat_id varchar(16) NOT NULL, modality varchar(4), exam_item varchar(32),
        findings text, impression text, exam_time {_TS}, report_time {_TS}, {_UPD}""",
    "fee_detail": f"""fee_id varchar(28) PRIMARY KEY, visit_type char(1) NOT NULL, visit_no varchar(20) NOT NULL,
        pat_id varchar(16) NOT NULL, item_code varchar(16) NOT NULL,
        item_name varchar(64), fee_class char(2) NOT NULL, qty numeric(10,2), price numeric(10,4),
        amount numeric(12,2) NOT NULL, ref_fee_id varchar(28) REFERENCES {SCHEMA}.fee_detail,
        refund_reason varchar(16), fee_time {_TS}, {_UPD}""",
}
PRIMARY_KEYS = {"rx_item": ("rx_no", "item_no")}
VISIT_INDEXED = ("rx_order", "lis_result", "pacs_report", "fee_detail")
# Foreign keys looked up by 作废/退费 and 诊断更正 (and by the cascade): without an index every one scans the table.
PARENT_INDEXED = (("op_diag", "reg_id"), ("ip_diag", "adm_no"), ("ip_oper", "adm_no"), ("fee_detail", "ref_fee_id"))
Defect = tuple[str, str, str, str]  # (table, record id, defect name, detail) for the answer key
PENDING_DDL = """CREATE TABLE IF NOT EXISTS sim.pending (
    tbl text NOT NULL, pk text NOT NULL, due_day date NOT NULL, visit_no text NOT NULL, row jsonb NOT NULL,
    defects jsonb NOT NULL DEFAULT '[]', PRIMARY KEY (tbl, pk))"""


def vendor_diagnosis(code: str, name: str) -> tuple[str, str]:
    """The vendor's code and wording for an ICD-10 code; unlisted codes follow the library's 4-character rule."""
    if code in DIAGNOSES:
        return DIAGNOSES[code]
    head, _, tail = code.partition(".")
    if tail.lower().startswith("x"):
        return code.upper(), name
    return (f"{head}.{tail.rstrip('0') or '0'}" if tail else head), name


def vendor_drug(code: str, name: str) -> tuple[str, str]:
    """The vendor's drug code; a drug missing from the list gets the code its pharmacy would assign (YP9xxxx)."""
    return DRUGS.get(code) or (f"YP9{zlib.crc32(code.encode()) % 10000:04d}", name)


def _stable_code(prefix: str, code: str) -> str:
    """A fixed local code for an item missing from a vendor list, the same on every run."""
    return f"{prefix}{zlib.crc32(code.encode()) % 1000:03d}"


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=TZ)


def _commit(rng: random.Random, at: datetime, low: int = 20, high: int = 600) -> datetime:
    """The commit time of a change made at ``at`` (seconds to minutes later), as the vendor's ``updated_at``."""
    return _aware(at + timedelta(seconds=rng.randrange(low, high)))


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


@dataclass
class RenderedDay:
    """One day rendered in memory: rows committed that day, rows due later, answer-key entries, ids used."""

    day: date
    key: AnswerKey
    drift: bool
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    pending: list[tuple[Any, ...]] = field(default_factory=list)
    patients: dict[tuple[int, str], str] = field(default_factory=dict)  # (resident, org) -> pat_id used today
    visits: dict[str, str] = field(default_factory=dict)  # encounter_uid -> visit number
    next_patient: int = 1

    def add(self, table: str, row: dict[str, Any], visit_no: str, defects: tuple[Defect, ...] = ()) -> None:
        """Keep a row for today, or park it (with its defects) for the day its commit time falls on."""
        due = row["updated_at"].date()
        if due <= self.day:
            self.rows[table].append(row)
            for defect in defects:
                self.key.defect(*defect)
        else:
            pk = "|".join(str(row[c]) for c in PRIMARY_KEYS.get(table, (next(iter(row)),)))
            self.pending.append(
                (
                    table,
                    pk,
                    due,
                    visit_no,
                    json.dumps(row, default=_json_default, ensure_ascii=False),
                    json.dumps(defects, ensure_ascii=False),
                )
            )


class ZyyHis(MemberSystem):
    """Renders the 中医院's encounters into the vendor's PostgreSQL schema, day by day, idempotently."""

    source_system = "zyy_his"

    def __init__(self, world: World, config: dict[str, Any]) -> None:
        super().__init__(world, config)
        self.database: str = config.get("database", "zyy_his")
        self.identity_dirt = IdentityDirt.from_config(config.get("identity_dirt"))
        self.re_registration = float(config.get("re_registration", 0.03))
        self.unknown_code_rate = float(config.get("unknown_local_code", 0.003))
        self.disch_before_adm_rate = float(config.get("discharge_before_admission", 0.004))
        drift = config.get("schema_drift_day", world.start_date + timedelta(days=45))
        self.schema_drift_day = None if drift is None else date.fromisoformat(str(drift))
        # The vendor's 工号: role digit + number (医师 1xxx, 护士 2xxx, 药师 3xxx, 技师 4xxx).
        roles = {"医": "1", "护": "2", "药": "3", "技": "4"}
        self.employees = {
            s.staff_id: (roles[s.staff_id[len(s.org_code)]] + s.staff_id[-3:], s.name)
            for org in self.institutions
            for s in world.staff.get(org, [])
        }
        self._known: dict[tuple[int, str], str] | None = None

    # --- storage -------------------------------------------------------------------------------------------
    def create_schema(self, reset: bool = False) -> None:
        admin = source_pg_engine("postgres").execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": self.database}).scalar():
                conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        with source_pg_engine(self.database).begin() as conn:
            if reset:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
                conn.execute(sa.text("DROP SCHEMA IF EXISTS sim CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS sim"))
            for table, columns in DDL.items():
                conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{table} ({columns})"))
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table}_upd ON {SCHEMA}.{table} (updated_at)"))
            for table in VISIT_INDEXED:
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table}_visit ON {SCHEMA}.{table} (visit_no)"))
            for table, column in PARENT_INDEXED:
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column} ON {SCHEMA}.{table} ({column})"))
            conn.execute(sa.text(PENDING_DDL))
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_pending_due ON sim.pending (due_day)"))
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_pending_visit ON sim.pending (visit_no)"))
            grant_collector(conn, self.source_system, SCHEMA)
        if reset:
            self._known = None

    def write_day(self, activity: DayActivity) -> dict[str, int]:
        day = activity.day
        if self.already_written(day):
            return {}
        rendered = self.render_day(activity, self._known_patients(day))
        counts: dict[str, int] = defaultdict(int)
        with source_pg_engine(self.database).begin() as conn:
            if rendered.drift:
                self._add_drift_column(conn, rendered)
            self._release_pending(conn, rendered, counts)
            with conn.connection.driver_connection.cursor() as cursor:
                for table in DDL:
                    rows = rendered.rows.get(table)
                    if rows:
                        columns = list(rows[0])
                        copy_insert(cursor, f"{SCHEMA}.{table}", columns, [tuple(r[c] for c in columns) for r in rows])
                        counts[table] += len(rows)
                if rendered.pending:
                    copy_insert(
                        cursor, "sim.pending", ["tbl", "pk", "due_day", "visit_no", "row", "defects"], rendered.pending
                    )
            conn.execute(
                sa.text(
                    f"UPDATE {SCHEMA}.ip_adm a SET adm_status = '2', updated_at = d.updated_at FROM "
                    f"{SCHEMA}.ip_disch d "
                    "WHERE d.adm_no = a.adm_no AND a.adm_status = '1'"
                )
            )
            for table, n in self._apply_corrections(conn, activity, rendered).items():
                counts[table] += n
        rendered.key.flush()
        answer_key.mark_day_written(self.source_system, day)
        if self._known is not None:
            self._known.update(rendered.patients)
        return dict(counts)

    def _known_patients(self, day: date) -> dict[tuple[int, str], str]:
        """Local ids issued before ``day`` (ids start with their issue day, so a re-run day re-issues its own)."""
        if self._known is None:
            today = f"{day:%y%m%d}"
            self._known = {
                k: v
                for k, v in answer_key.known_patients(self.source_system).items()
                if k[1] in self.institutions and v[:6] < today
            }
        return self._known

    def _add_drift_column(self, conn: sa.Connection, rendered: RenderedDay) -> None:
        """The vendor's upgrade adds a column; logged on the drift day (and whenever it is actually added)."""
        table, column, kind = DRIFT_COLUMN
        exists = conn.execute(
            sa.text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = :s "
                "AND table_name = :t AND column_name = :c"
            ),
            {"s": SCHEMA, "t": table, "c": column},
        ).scalar()
        if not exists:
            conn.execute(sa.text(f"ALTER TABLE {SCHEMA}.{table} ADD COLUMN {column} {kind}"))
        if not exists or rendered.day == self.schema_drift_day:
            rendered.key.defect(table, column, "schema_drift", f"column {column} {kind} from {rendered.day}")

    def _release_pending(self, conn: sa.Connection, rendered: RenderedDay, counts: dict[str, int]) -> None:
        """Insert the parked rows whose day has come, log their defects, and forget them."""
        due = {"d": rendered.day}
        tables = dict(
            conn.execute(sa.text("SELECT tbl, count(*) FROM sim.pending WHERE due_day <= :d GROUP BY tbl"), due).all()
        )
        for table in DDL:
            if table in tables:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {SCHEMA}.{table} SELECT (jsonb_populate_record(NULL::{SCHEMA}.{table}, row)).* "
                        "FROM sim.pending WHERE tbl = :t AND due_day <= :d ON CONFLICT DO NOTHING"
                    ),
                    {**due, "t": table},
                )
                counts[table] += tables[table]
        for (defects,) in conn.execute(
            sa.text("SELECT defects FROM sim.pending WHERE due_day <= :d AND defects <> '[]'::jsonb ORDER BY tbl, pk"),
            due,
        ):
            for defect in defects:
                rendered.key.defect(*defect)
        conn.execute(sa.text("DELETE FROM sim.pending WHERE due_day <= :d"), due)

    # --- rendering (no database access: same activity + same known ids = same rows) --------------------------
    def render_day(self, activity: DayActivity, known: dict[tuple[int, str], str]) -> RenderedDay:
        day = activity.day
        rendered = RenderedDay(
            day, AnswerKey(self.source_system, day), self.schema_drift_day is not None and day >= self.schema_drift_day
        )
        encounters = sorted(self.own_encounters(activity), key=lambda e: (e.start_at, e.encounter_uid))
        seq = {"O": 0, "I": 0}
        for encounter in encounters:
            rng = self.rng(day, f"encounter:{encounter.encounter_uid}")
            pat_id = self._patient(rendered, encounter, known, rng)
            if encounter.kind == "inpatient":
                seq["I"] += 1
                visit_no = f"ZY{day:%Y%m%d}{seq['I']:04d}"
            else:
                seq["O"] += 1
                visit_no = f"MZ{day:%Y%m%d}{seq['O']:05d}"
            rendered.key.encounter(visit_no, encounter.encounter_uid)
            rendered.visits[encounter.encounter_uid] = visit_no
            self._encounter(rendered, encounter, visit_no, pat_id, rng)
        return rendered

    def _patient(
        self, rendered: RenderedDay, encounter: Encounter, known: dict[tuple[int, str], str], rng: random.Random
    ) -> str:
        """The 病历号 of the encounter's patient: reused when known, else a new pat_master record."""
        ident = (encounter.resident_id, encounter.org_code)
        again = rng.random() < self.re_registration
        if ident in rendered.patients:
            return rendered.patients[ident]
        old = known.get(ident)
        if old is not None and not again:
            rendered.patients[ident] = old  # a second visit the same day keeps the same 病历号
            return old
        pat_id = f"{rendered.day:%y%m%d}{rendered.next_patient:05d}"
        rendered.next_patient += 1
        rendered.patients[ident] = pat_id
        rendered.key.patient(pat_id, encounter.resident_id, encounter.org_code)
        person = self.world.people[encounter.resident_id]
        prng = self.rng(rendered.day, f"patient:{pat_id}")
        identity = recorded_identity(prng, person, self.identity_dirt)
        defects = [("pat_master", pat_id, name, detail) for name, detail in identity.defects]
        if old is not None:
            defects.append(("pat_master", pat_id, "re_registration", f"also {old}"))
        sex = SEX.get(identity.sex, "U")
        if prng.random() < self.unknown_code_rate:
            sex = prng.choice(FOREIGN_SEX_CODES)
            defects.append(("pat_master", pat_id, "unknown_local_code", f"sex={sex}"))
        # Committed before the registration that uses it, and within the day being written.
        created = max(
            encounter.start_at - timedelta(seconds=prng.randrange(120, 300)), datetime.combine(rendered.day, time())
        )
        rendered.add(
            "pat_master",
            {
                "pat_id": pat_id,
                "pat_name": identity.name,
                "sex": sex,
                "birth_date": identity.birth_date,
                "id_card_type": "01",
                "id_card_no": identity.id_number or "",
                "nation_code": NATION.get(person.ethnicity),
                "phone": identity.phone,
                "addr": identity.address,
                "ins_card_no": person.insurance_no if encounter.insured else "",
                "create_time": created,
                "updated_at": _commit(prng, created, 5, 100),
            },
            "",
            tuple(defects),
        )
        return pat_id

    def _encounter(self, rendered: RenderedDay, enc: Encounter, visit_no: str, pat_id: str, rng: random.Random) -> None:
        """Every row of one encounter, each stamped with the commit time of the moment it happened."""
        inpatient = enc.kind == "inpatient"
        vt = "I" if inpatient else "O"
        dept_code, dept_name, ward_code, ward_name = DEPARTMENTS.get(
            enc.department_code, (f"9{enc.department_code}", enc.department_name, "B99", "综合病区")
        )
        doc_code, doc_name = self.employees.get(enc.doctor_id, (enc.doctor_id[-8:], ""))
        insured = "1" if enc.insured else "2"
        pay_channel = "YB" if enc.insured and rng.random() < 0.6 else rng.choice(PAY_CHANNELS[:3])
        diag_time = enc.start_at + timedelta(minutes=rng.randrange(20, 60) if inpatient else rng.randrange(5, 15))
        diagnosis_rows, diagnoses = self._diagnoses(enc, visit_no, diag_time, rng)
        main_code, main_name = diagnoses[0] if diagnoses else ("", "")
        if inpatient:
            rendered.add(
                "ip_adm",
                {
                    "adm_no": visit_no,
                    "pat_id": pat_id,
                    "dept_code": dept_code,
                    "dept_name": dept_name,
                    "ward_code": ward_code,
                    "ward_name": ward_name,
                    "bed_no": f"{enc.bed_no.lstrip('0') or '0'}床" if enc.bed_no else None,
                    "adm_time": enc.start_at,
                    "doc_code": doc_code,
                    "doc_name": doc_name,
                    "adm_diag_code": main_code,
                    "adm_diag_name": main_name,
                    "adm_status": "1",
                    "ins_type": insured,
                    "updated_at": _commit(rng, enc.start_at),
                },
                visit_no,
            )
        else:
            reg: dict[str, Any] = {
                "reg_id": visit_no,
                "pat_id": pat_id,
                "visit_type": VISIT_TYPE[enc.kind],
                "dept_code": dept_code,
                "dept_name": dept_name,
                "doc_code": doc_code,
                "doc_name": doc_name,
                "reg_time": enc.start_at,
                "reg_fee": sum(c.amount_yuan for c in enc.charges if c.category == "挂号"),
                "ins_type": insured,
                "updated_at": _commit(rng, enc.start_at, 5, 120),
            }
            if rendered.drift:
                reg["pay_channel"] = pay_channel
            rendered.add("op_reg", reg, visit_no)
        for table, row, defects in diagnosis_rows:
            rendered.add(table, row, visit_no, defects)
        fees: list[tuple[Charge, str, str, str, float, float, datetime]] = []
        drug_times = self._prescriptions(rendered, enc, visit_no, pat_id, vt, dept_code, doc_code, fees, rng)
        lab_time = self._labs(rendered, enc, visit_no, pat_id, vt, rng)
        exam_time = self._exams(rendered, enc, visit_no, pat_id, vt, rng)
        for n, surgery in enumerate(enc.surgeries, 1):
            oper_code, oper_name = OPERATIONS.get(surgery.procedure_code, (surgery.procedure_code[:5], surgery.name))
            end = surgery.at + timedelta(minutes=rng.randrange(50, 180))
            rendered.add(
                "ip_oper",
                {
                    "oper_id": f"{visit_no}O{n:02d}",
                    "adm_no": visit_no,
                    "oper_code": oper_code,
                    "oper_name": oper_name,
                    "oper_start": surgery.at,
                    "oper_end": end,
                    "incision_class": INCISION.get(surgery.incision_class, "9"),
                    "heal_grade": HEALING.get(surgery.healing_grade, "9"),
                    "surgeon_code": doc_code,
                    "updated_at": _commit(rng, end),
                },
                visit_no,
            )
        times = {"化验": lab_time, "检查": exam_time, "手术": enc.surgeries[0].at if enc.surgeries else None}
        for charge in enc.charges:
            if charge.category != "中草药":  # posted with their 中药饮片 prescription
                self._charge(enc, charge, drug_times, times, fees)
        total = 0.0
        for n, (charge, item_code, item_name, fee_class, qty, price, at) in enumerate(
            sorted(fees, key=lambda f: f[6]), 1
        ):
            total += charge.amount_yuan
            rendered.add(
                "fee_detail",
                {
                    "fee_id": f"{visit_no}F{n:03d}",
                    "visit_type": vt,
                    "visit_no": visit_no,
                    "pat_id": pat_id,
                    "item_code": item_code,
                    "item_name": item_name,
                    "fee_class": fee_class,
                    "qty": qty,
                    "price": price,
                    "amount": charge.amount_yuan,
                    "ref_fee_id": None,
                    "refund_reason": None,
                    "fee_time": at,
                    "updated_at": _commit(rng, at, 5, 90),
                },
                visit_no,
            )
        if inpatient and enc.end_at is not None:
            self._discharge(rendered, enc, visit_no, dept_code, doc_code, diagnoses, round(total, 2), rng)

    def _diagnoses(
        self, enc: Encounter, visit_no: str, at: datetime, rng: random.Random
    ) -> tuple[list[tuple[str, dict[str, Any], tuple[Defect, ...]]], list[tuple[str, str]]]:
        """Western rows in the vendor's codes (a few custom 'ZDY' codes), then a 中医诊断 row for a share.

        Returns the rows (table, row, defects), the vendor (code, name) of each western diagnosis with the main
        one first, and the 中医诊断 if one was made.
        """
        inpatient = enc.kind == "inpatient"
        table, parent = ("ip_diag", "adm_no") if inpatient else ("op_diag", "reg_id")
        updated = _commit(rng, at, 5, 120)
        rows: list[tuple[str, dict[str, Any], tuple[Defect, ...]]] = []
        vendor: list[tuple[tuple[str, str], bool]] = []
        for n, diagnosis in enumerate(enc.diagnoses, 1):
            code, name = vendor_diagnosis(diagnosis.icd_code, diagnosis.name)
            diag_id = f"{visit_no}D{n:02d}"
            defects: tuple[Defect, ...] = ()
            if rng.random() < self.unknown_code_rate:
                custom = f"ZDY{rng.randrange(1, 10000):04d}"  # 自定义诊断: free-typed, outside the library
                defects = ((table, diag_id, "unknown_local_code", f"diag_code={custom} for {diagnosis.icd_code}"),)
                code = custom
            vendor.append(((code, name), diagnosis.is_main))
            rows.append(
                (
                    table,
                    {
                        "diag_id": diag_id,
                        parent: visit_no,
                        "diag_seq": n,
                        "diag_class": "W",
                        "diag_code": code,
                        "diag_name": name,
                        "syn_code": None,
                        "syn_name": None,
                        "main_flag": "1" if diagnosis.is_main else "0",
                        "diag_time": at,
                        "updated_at": updated,
                    },
                    defects,
                )
            )
        tcm = enc.tcm
        if tcm:
            n = len(enc.diagnoses) + 1
            rows.append(
                (
                    table,
                    {
                        "diag_id": f"{visit_no}D{n:02d}",
                        parent: visit_no,
                        "diag_seq": n,
                        "diag_class": "Z",
                        "diag_code": tcm.disease_code,
                        "diag_name": tcm.disease_name,
                        "syn_code": tcm.syndrome_code,
                        "syn_name": tcm.syndrome_name,
                        "main_flag": "0",
                        "diag_time": at,
                        "updated_at": updated,
                    },
                    (),
                )
            )
        return rows, [v for v, _ in sorted(vendor, key=lambda pair: not pair[1])]

    def _prescriptions(
        self,
        rendered: RenderedDay,
        enc: Encounter,
        visit_no: str,
        pat_id: str,
        vt: str,
        dept_code: str,
        doc_code: str,
        fees: list[tuple[Charge, str, str, str, float, float, datetime]],
        rng: random.Random,
    ) -> dict[str, datetime]:
        """One order per kind (西药 / 中成药 / 中药饮片); returns the order time of each drug, for its charge."""
        inpatient = vt == "I"
        at = enc.start_at + (
            timedelta(minutes=rng.randrange(60, 120)) if inpatient else timedelta(minutes=rng.randrange(8, 25))
        )
        groups: dict[str, list[Prescription]] = defaultdict(list)
        for p in enc.prescriptions:
            groups["patent" if p.drug_code.startswith("Z") else "western"].append(p)
        times: dict[str, datetime] = {}
        for kind, items in groups.items():
            rx_no = f"{visit_no}R{RX_TYPE[kind]}"
            updated = _commit(rng, at)
            rendered.add(
                "rx_order",
                self._rx_order(
                    rx_no,
                    visit_no,
                    pat_id,
                    vt,
                    kind,
                    dept_code,
                    doc_code,
                    at,
                    None,
                    "口服" if kind == "patent" else "遵医嘱",
                    updated,
                ),
                visit_no,
            )
            for n, p in enumerate(items, 1):
                code, name = vendor_drug(p.drug_code, p.name)
                rendered.add(
                    "rx_item",
                    {
                        "rx_no": rx_no,
                        "item_no": n,
                        "drug_code": code,
                        "drug_name": name,
                        "spec": p.spec,
                        "qty": p.quantity,
                        "unit": "盒" if "*" in p.spec else "支",
                        "price": p.unit_price,
                        "amount": round(p.quantity * p.unit_price, 2),
                        "updated_at": updated,
                    },
                    visit_no,
                )
                times.setdefault(p.drug_code, at)
        tcm = enc.tcm
        if tcm and tcm.doses:
            # 中药饮片 follow the 中医诊断; each herb is charged like any drug (its charge is the encounter's).
            herb_charges = {c.item_code: c for c in enc.charges if c.category == "中草药"}
            rx_no = f"{visit_no}R{RX_TYPE['herbal']}"
            updated = _commit(rng, at)
            rendered.add(
                "rx_order",
                self._rx_order(
                    rx_no,
                    visit_no,
                    pat_id,
                    vt,
                    "herbal",
                    dept_code,
                    doc_code,
                    at,
                    tcm.doses,
                    f"{tcm.formula} 水煎服，日一剂，早晚分服",
                    updated,
                ),
                visit_no,
            )
            for n, (name, grams) in enumerate(tcm.herbs, 1):
                code, price = HERBS[name]
                charge = herb_charges[name]
                rendered.add(
                    "rx_item",
                    {
                        "rx_no": rx_no,
                        "item_no": n,
                        "drug_code": code,
                        "drug_name": name,
                        "spec": "饮片",
                        "qty": grams,
                        "unit": "g",
                        "price": price,
                        "amount": charge.amount_yuan,
                        "updated_at": updated,
                    },
                    visit_no,
                )
                fees.append((charge, code, name, FEE_CLASS["中草药"], grams * tcm.doses, price, at))
        return times

    @staticmethod
    def _rx_order(
        rx_no: str,
        visit_no: str,
        pat_id: str,
        vt: str,
        kind: str,
        dept_code: str,
        doc_code: str,
        at: datetime,
        doses: int | None,
        usage: str,
        updated: datetime,
    ) -> dict[str, Any]:
        return {
            "rx_no": rx_no,
            "visit_type": vt,
            "visit_no": visit_no,
            "pat_id": pat_id,
            "rx_type": RX_TYPE[kind],
            "dept_code": dept_code,
            "doc_code": doc_code,
            "rx_time": at,
            "herb_doses": doses,
            "usage_note": usage,
            "updated_at": updated,
        }

    def _labs(
        self, rendered: RenderedDay, enc: Encounter, visit_no: str, pat_id: str, vt: str, rng: random.Random
    ) -> datetime | None:
        if not enc.labs:
            return None
        sampled = enc.start_at + (
            timedelta(minutes=rng.randrange(120, 960)) if vt == "I" else timedelta(minutes=rng.randrange(15, 40))
        )
        reported = sampled + timedelta(minutes=rng.randrange(60, 180))
        updated = _commit(rng, reported)
        for n, lab in enumerate(enc.labs, 1):
            code, abbr, name, unit, sample = LIS_ITEMS.get(
                lab.loinc, (_stable_code("9", lab.loinc), "", lab.item_name, lab.unit, "血清")
            )
            low, _, high = lab.reference_range.partition("-")
            flag = ""
            if lab.abnormal:
                flag = "L" if low and lab.value < float(low) else "H"
            rendered.add(
                "lis_result",
                {
                    "result_id": f"{visit_no}L{n:02d}",
                    "req_no": f"JY{visit_no}",
                    "visit_type": vt,
                    "visit_no": visit_no,
                    "pat_id": pat_id,
                    "item_code": code,
                    "item_abbr": abbr,
                    "item_name": name,
                    "result_value": f"{lab.value:g}",
                    "unit": unit,
                    "ref_range": f"{low}--{high}" if high else low,
                    "abn_flag": flag,
                    "sample_type": sample,
                    "sample_time": sampled,
                    "report_time": reported,
                    "updated_at": updated,
                },
                visit_no,
            )
        return sampled

    def _exams(
        self, rendered: RenderedDay, enc: Encounter, visit_no: str, pat_id: str, vt: str, rng: random.Random
    ) -> datetime | None:
        if not enc.exams:
            return None
        examined = enc.start_at + (
            timedelta(minutes=rng.randrange(180, 1560)) if vt == "I" else timedelta(minutes=rng.randrange(20, 90))
        )
        for n, exam in enumerate(enc.exams, 1):
            reported = examined + timedelta(minutes=rng.randrange(30, 120))
            rendered.add(
                "pacs_report",
                {
                    "report_id": f"{visit_no}P{n:02d}",
                    "visit_type": vt,
                    "visit_no": visit_no,
                    "pat_id": pat_id,
                    "modality": MODALITY.get(exam.modality, "OT"),
                    "exam_item": f"{exam.body_part}{exam.modality}",
                    "findings": exam.finding,
                    "impression": exam.conclusion,
                    "exam_time": examined,
                    "report_time": reported,
                    "updated_at": _commit(rng, reported),
                },
                visit_no,
            )
        return examined

    @staticmethod
    def _charge(
        enc: Encounter,
        charge: Charge,
        drug_times: dict[str, datetime],
        times: dict[str, datetime | None],
        fees: list[tuple[Charge, str, str, str, float, float, datetime]],
    ) -> None:
        """One charge as the vendor posts it: drugs with quantity and price, bed/nursing split by night."""
        if charge.category == "药品":
            code, name = vendor_drug(charge.item_code, charge.item_name)
            rx = next((p for p in enc.prescriptions if p.drug_code == charge.item_code), None)
            qty, price = (rx.quantity, rx.unit_price) if rx else (1, charge.amount_yuan)
            fee_class = FEE_CLASS["中成药" if charge.item_code.startswith("Z") else "西药"]
            fees.append((charge, code, name, fee_class, qty, price, drug_times.get(charge.item_code, enc.start_at)))
            return
        if charge.category == "手术":
            oper_code = OPERATIONS[charge.item_code][0] if charge.item_code in OPERATIONS else charge.item_code[:5]
            code, name = "SS" + oper_code.replace(".", ""), charge.item_name
        else:
            code, name = FEE_ITEMS.get(charge.item_code, (_stable_code("XM9", charge.item_code), charge.item_name))
        fee_class = FEE_CLASS.get(charge.category, "99")
        at = times.get(charge.category) or enc.start_at
        if enc.kind == "inpatient" and enc.end_at is not None and charge.category in DAILY_CATEGORIES:
            nights = max(1, (enc.end_at.date() - enc.start_at.date()).days)
            per_night = round(charge.amount_yuan / nights, 2)
            for night in range(nights):
                amount = per_night if night < nights - 1 else round(charge.amount_yuan - per_night * (nights - 1), 2)
                posted = min(datetime.combine(enc.start_at.date() + timedelta(days=night), time(23, 30)), enc.end_at)
                fees.append(
                    (Charge(charge.item_code, name, charge.category, amount), code, name, fee_class, 1, amount, posted)
                )
            return
        fees.append((charge, code, name, fee_class, 1, charge.amount_yuan, at))

    def _discharge(
        self,
        rendered: RenderedDay,
        enc: Encounter,
        visit_no: str,
        dept_code: str,
        doc_code: str,
        diagnoses: list[tuple[str, str]],
        total: float,
        rng: random.Random,
    ) -> None:
        """The ip_disch row, committed at the real discharge (so usually parked for a later day)."""
        assert enc.end_at is not None
        recorded = enc.end_at
        defects: tuple[Defect, ...] = ()
        if rng.random() < self.disch_before_adm_rate:
            recorded = enc.start_at - timedelta(days=rng.randrange(1, 4), minutes=rng.randrange(0, 600))
            defects = (
                (
                    "ip_disch",
                    visit_no,
                    "discharge_before_admission",
                    f"disch {recorded:%Y%m%d %H%M%S} < adm {enc.start_at:%Y%m%d %H%M%S}",
                ),
            )
        main_code, main_name = diagnoses[0] if diagnoses else ("", "")
        rendered.add(
            "ip_disch",
            {
                "adm_no": visit_no,
                "disch_date": f"{recorded:%Y%m%d}",
                "disch_time": f"{recorded:%H%M%S}",
                "disch_dept_code": dept_code,
                "outcome_code": OUTCOME.get(enc.discharge_status, "9"),
                "main_diag_code": main_code,
                "main_diag_name": main_name,
                "tcm_dis_code": enc.tcm.disease_code if enc.tcm else None,
                "tcm_dis_name": enc.tcm.disease_name if enc.tcm else None,
                "tcm_syn_code": enc.tcm.syndrome_code if enc.tcm else None,
                "tcm_syn_name": enc.tcm.syndrome_name if enc.tcm else None,
                "los_days": (recorded.date() - enc.start_at.date()).days,
                "total_fee": total,
                "doc_code": doc_code,
                "updated_at": _commit(rng, enc.end_at, 120, 1800),
            },
            visit_no,
            defects,
        )

    # --- corrections -------------------------------------------------------------------------------------
    def _apply_corrections(self, conn: sa.Connection, activity: DayActivity, rendered: RenderedDay) -> dict[str, int]:
        """Corrections of this system's encounters: a new main diagnosis, or a 作废 with 退费 rows."""
        corrections = sorted(activity.corrections, key=lambda c: (c.at, c.target_uid))
        local = answer_key.local_encounter_ids(self.source_system, [c.target_uid for c in corrections])
        local.update(rendered.visits)
        counts: dict[str, int] = defaultdict(int)
        for correction in corrections:
            visit_no = local.get(correction.target_uid)
            if visit_no is None:
                continue
            if correction.kind == "cancel":
                counts["fee_detail"] += self._cancel(conn, rendered.key, visit_no, correction)
            elif correction.kind == "update":
                self._update(conn, rendered, visit_no, correction)
        return counts

    def _cancel(self, conn: sa.Connection, key: AnswerKey, visit_no: str, correction: Correction) -> int:
        """退费 every posted charge (negative rows), drop what was still to come, then 作废 the visit."""
        at = _aware(correction.at)
        originals = (
            conn.execute(
                sa.text(
                    f"SELECT f.* FROM {SCHEMA}.fee_detail f WHERE f.visit_no = :v AND f.ref_fee_id IS NULL AND NOT "
                    "EXISTS "
                    f"(SELECT 1 FROM {SCHEMA}.fee_detail r WHERE r.ref_fee_id = f.fee_id) ORDER BY f.fee_id"
                ),
                {"v": visit_no},
            )
            .mappings()
            .all()
        )
        refunds = [
            {
                **dict(f),
                "fee_id": f"{f['fee_id']}R",
                "qty": -f["qty"],
                "amount": -f["amount"],
                "ref_fee_id": f["fee_id"],
                "refund_reason": correction.reason,
                "fee_time": correction.at,
                "updated_at": at + timedelta(seconds=n),
            }
            for n, f in enumerate(originals, 1)
        ]
        if refunds:
            columns = list(refunds[0])
            conn.execute(
                sa.text(
                    f"INSERT INTO {SCHEMA}.fee_detail ({', '.join(columns)}) VALUES "
                    f"({', '.join(':' + c for c in columns)}) ON CONFLICT DO NOTHING"
                ),
                refunds,
            )
        conn.execute(sa.text("DELETE FROM sim.pending WHERE visit_no = :v"), {"v": visit_no})
        if visit_no.startswith("MZ"):
            for table in ("rx_order", "lis_result", "pacs_report"):
                conn.execute(sa.text(f"DELETE FROM {SCHEMA}.{table} WHERE visit_no = :v"), {"v": visit_no})
            conn.execute(sa.text(f"DELETE FROM {SCHEMA}.op_reg WHERE reg_id = :v"), {"v": visit_no})
            key.defect("op_reg", visit_no, "correction_cancel", correction.reason)
        else:
            conn.execute(
                sa.text(f"UPDATE {SCHEMA}.ip_adm SET adm_status = '9', updated_at = :at WHERE adm_no = :v"),
                {"v": visit_no, "at": at},
            )
            key.defect("ip_adm", visit_no, "correction_cancel", correction.reason)
        return len(refunds)

    def _update(self, conn: sa.Connection, rendered: RenderedDay, visit_no: str, correction: Correction) -> None:
        """诊断更正: the main western diagnosis is replaced (the truth carries no new value; any other one will do)."""
        table, parent = ("op_diag", "reg_id") if visit_no.startswith("MZ") else ("ip_diag", "adm_no")
        current = conn.execute(
            sa.text(
                f"SELECT diag_id, diag_code, updated_at FROM {SCHEMA}.{table} "
                f"WHERE {parent} = :v AND diag_class = 'W' AND main_flag = '1'"
            ),
            {"v": visit_no},
        ).first()
        if current is None:
            return
        at = _aware(correction.at)
        code = current.diag_code
        if current.updated_at != at:  # not yet applied (a re-run of the day finds it applied)
            choices = sorted(set(DIAGNOSES.values()))
            code, name = self.rng(rendered.day, f"correction:{correction.target_uid}").choice(choices)
            if code == current.diag_code:
                code, name = choices[(choices.index((code, name)) + 1) % len(choices)]
            conn.execute(
                sa.text(
                    f"UPDATE {SCHEMA}.{table} SET diag_code = :c, diag_name = :n, updated_at = :at WHERE diag_id = :d"
                ),
                {"c": code, "n": name, "at": at, "d": current.diag_id},
            )
        rendered.key.defect(
            table, current.diag_id, "correction_update", f"main diagnosis -> {code} ({correction.reason})"
        )
