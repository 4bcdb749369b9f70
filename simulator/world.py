"""The county itself: institutions, their staff, and the resident population (households, ethnicity,
chronic disease, twins and namesakes). Deterministic from the seed; people persist in the answer key
database so births, deaths and in-migration carry over between ``simulate --advance`` runs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from core.gb11643 import check_char
from simulator import answer_key
from simulator.connections import source_pg_engine
from simulator.events import Institution, Person, Staff

# Hospitals and which member system records them (codes are this platform's own institution codes).
HOSPITALS = [
    ("410182001", "荥阳市人民医院", "二级甲等", "综合医院", "京城路街道", 600, "rmyy_his"),
    ("410182002", "荥阳市中医院", "二级甲等", "中医医院", "索河街道", 350, "zyy_his"),
    ("410182003", "荥阳市妇幼保健院", "二级", "妇幼保健院", "京城路街道", 200, "fy_files"),
    ("410182004", "郑州华卓医院", "二级", "民营综合医院", "索河街道", 150, "private_api"),
    ("410182005", "郑州瑞祥医院", "二级", "民营综合医院", "豫龙镇", 120, "private_api"),
]
# Township-level units (GB/T 2260 荥阳市) with a rough population weight and their centres.
TOWNSHIPS = {
    "京城路街道": 9,
    "索河街道": 9,
    "乔楼镇": 7,
    "豫龙镇": 9,
    "广武镇": 8,
    "王村镇": 6,
    "汜水镇": 8,
    "高山镇": 5,
    "刘河镇": 4,
    "崔庙镇": 6,
    "贾峪镇": 7,
    "城关乡": 6,
    "高村乡": 5,
    "金寨回族乡": 4,
}
STREETS = {"京城路街道", "索河街道"}
HUI_TOWNSHIPS = {"乔楼镇": 0.25, "金寨回族乡": 0.45}  # share of 回族 residents
EXTRA_CENTRE = ("汜水镇", "汜水镇第二卫生院")  # 13 卫生院 over 12 rural units
VILLAGES_TOTAL = 289
VILLAGE_STEMS = "王李张刘陈杨赵孙马郭高宋韩冯胡朱何吕丁任魏程苏"
VILLAGE_SUFFIXES = ["庄村", "寨村", "沟村", "河村", "岗村", "坡村", "楼村", "湾村", "店村", "营村"]

SURNAMES = {
    "王": 95,
    "李": 80,
    "张": 85,
    "刘": 60,
    "陈": 40,
    "杨": 40,
    "赵": 30,
    "黄": 15,
    "周": 20,
    "吴": 12,
    "徐": 15,
    "孙": 20,
    "胡": 12,
    "朱": 15,
    "高": 20,
    "郭": 25,
    "马": 22,
    "何": 8,
    "宋": 15,
    "韩": 12,
    "冯": 10,
    "邓": 6,
    "曹": 10,
    "彭": 5,
    "曾": 3,
    "肖": 5,
    "田": 10,
    "董": 10,
    "袁": 6,
    "潘": 4,
    "于": 8,
    "蒋": 4,
    "蔡": 5,
    "余": 4,
    "杜": 8,
    "叶": 3,
    "程": 8,
    "苏": 6,
    "魏": 10,
    "吕": 8,
    "丁": 8,
    "任": 8,
    "沈": 3,
    "姚": 6,
    "卢": 5,
    "司马": 1,
    "欧阳": 1,
    "上官": 1,
}
HUI_SURNAMES = {"马": 40, "白": 10, "海": 6, "沙": 6, "丁": 8, "穆": 5, "哈": 4, "纳": 3, "米": 3, "金": 5}
GIVEN_MALE = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帅建国志红德福永成"
GIVEN_FEMALE = "芳娜敏静丽艳娟霞秀英华慧巧美玲桂兰萍雪琳颖洁倩婷晶红梅凤荣"
HUI_GIVEN = "哈穆萨阿里伊布拉海麦"
MIGRANT_AREAS = ["410102", "410105", "410184", "410185", "411302", "412702", "410323", "411123"]
TITLES = {
    "医师": ["主任医师", "副主任医师", "主治医师", "医师"],
    "护士": ["主任护师", "主管护师", "护师", "护士"],
    "药师": ["主任药师", "主管药师", "药师"],
    "技师": ["主管技师", "技师"],
}


def build_institutions() -> list[Institution]:
    """All 309 member institutions: 5 hospitals, 13 卫生院 + 2 社区中心, 289 村卫生室."""
    institutions = [
        Institution(code, name, level, kind, township, "", beds, system)
        for code, name, level, kind, township, beds, system in HOSPITALS
    ]
    centre_of: dict[str, str] = {}
    seq = 1
    for township in TOWNSHIPS:
        if township in STREETS:
            name, kind = township.replace("街道", "社区卫生服务中心"), "社区卫生服务中心"
        else:
            name, kind = f"{township}卫生院", "乡镇卫生院"
        code = f"4101821{seq:02d}"
        centre_of[township] = code
        institutions.append(Institution(code, name, "一级", kind, township, "", 40, "cloud_his"))
        seq += 1
    township, name = EXTRA_CENTRE
    institutions.append(Institution(f"4101821{seq:02d}", name, "一级", "乡镇卫生院", township, "", 30, "cloud_his"))
    rural = [t for t in TOWNSHIPS if t not in STREETS]
    weights = [TOWNSHIPS[t] for t in rural]
    per_township = [round(VILLAGES_TOTAL * w / sum(weights)) for w in weights]
    per_township[0] += VILLAGES_TOTAL - sum(per_township)
    rng = random.Random("villages")
    code = 300
    for township, count in zip(rural, per_township, strict=True):
        names: set[str] = set()
        while len(names) < count:
            names.add(rng.choice(VILLAGE_STEMS) + rng.choice(VILLAGE_SUFFIXES))
        for village in sorted(names):
            institutions.append(
                Institution(
                    f"410182{code:03d}",
                    f"{township}{village}卫生室",
                    "未定级",
                    "村卫生室",
                    township,
                    centre_of[township],
                    0,
                    "cloud_his",
                )
            )
            code += 1
    return institutions


def villages_of(institutions: list[Institution]) -> dict[str, list[str]]:
    """Township -> village names (from the village clinics; streets get residential communities)."""
    result: dict[str, list[str]] = defaultdict(list)
    for inst in institutions:
        if inst.org_type == "村卫生室":
            result[inst.township].append(inst.name[len(inst.township) : -len("卫生室")])
    for street in STREETS:
        result[street] = [f"{n}社区" for n in ("建设路", "中原路", "索河路", "郑上路", "康泰路", "桃李")]
    return result


def build_staff(institutions: list[Institution], seed: int) -> dict[str, list[Staff]]:
    rng = random.Random(f"staff:{seed}")
    staff: dict[str, list[Staff]] = {}
    for inst in institutions:
        sizes = (
            {"医师": max(8, inst.open_beds // 4), "护士": max(10, inst.open_beds // 2), "药师": 6, "技师": 8}
            if inst.open_beds >= 100
            else {"医师": 6, "护士": 6, "药师": 2, "技师": 2}
            if inst.open_beds
            else {"医师": 1}
        )
        members = []
        for role, count in sizes.items():
            for i in range(count):
                name = (
                    rng.choices(list(SURNAMES), list(SURNAMES.values()))[0]
                    + rng.choice(GIVEN_MALE + GIVEN_FEMALE)
                    + rng.choice(GIVEN_MALE + GIVEN_FEMALE)
                )
                members.append(
                    Staff(
                        f"{inst.org_code}{role[0]}{i:03d}",
                        inst.org_code,
                        name,
                        role,
                        rng.choice(TITLES[role]),
                        f"{rng.randrange(10**14, 10**15)}",
                        "",
                    )
                )
        staff[inst.org_code] = members
    return staff


def issue_id_number(rng: random.Random, area: str, birth: date, sex: int, issued: set[str]) -> str:
    while True:
        first17 = f"{area}{birth:%Y%m%d}{rng.randrange(0, 499) * 2 + (1 if sex == 1 else 0):03d}"
        number = first17 + check_char(first17)
        if number not in issued:
            issued.add(number)
            return number


def _given(rng: random.Random, sex: int, hui: bool) -> str:
    pool = GIVEN_MALE if sex == 1 else GIVEN_FEMALE
    if hui and rng.random() < 0.3:
        return rng.choice(HUI_GIVEN) + rng.choice(pool)
    return "".join(rng.choice(pool) for _ in range(rng.choice((1, 2, 2, 2))))


def _chronic(rng: random.Random, age: int) -> tuple[bool, bool]:
    htn = {True: 0.0}.get(age < 18, 0.10 if age < 45 else 0.32 if age < 60 else 0.55)
    dm = {True: 0.0}.get(age < 18, 0.03 if age < 45 else 0.13 if age < 60 else 0.22)
    return rng.random() < htn, rng.random() < dm


def generate_population(
    seed: int,
    count: int,
    institutions: list[Institution],
    reference: date,
    twin_rate: float = 0.01,
    namesake_rate: float = 0.002,
) -> list[Person]:
    """Residents in households, by township and village, with twins and same-name-same-birthday pairs."""
    rng = random.Random(f"population:{seed}")
    villages = villages_of(institutions)
    townships, weights = list(TOWNSHIPS), list(TOWNSHIPS.values())
    issued: set[str] = set()
    people: list[Person] = []
    household = 0
    while len(people) < count:
        household += 1
        township = rng.choices(townships, weights)[0]
        village = rng.choice(villages[township])
        hui = rng.random() < HUI_TOWNSHIPS.get(township, 0.0)
        surnames = HUI_SURNAMES if hui else SURNAMES
        surname = rng.choices(list(surnames), list(surnames.values()))[0]
        address = f"河南省荥阳市{township}{village}{rng.randrange(1, 300)}号"
        phone_base = "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))
        migrant_area = rng.choice(MIGRANT_AREAS) if rng.random() < 0.05 else None
        size = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5))
        parent_age = int(rng.triangular(22, 90, 45))
        for member in range(size):
            age = parent_age if member < 2 else max(0, parent_age - rng.randrange(20, 34))
            if member >= 2 and rng.random() < 0.4:
                age = max(0, min(age + rng.randrange(-3, 4), 99))
            sex = (1 if member == 0 else 2) if member < 2 else rng.choice((1, 2))
            birth = reference - timedelta(days=age * 365 + rng.randrange(365))
            area = migrant_area if (migrant_area and member < 2) else "410182"
            htn, dm = _chronic(rng, age)
            person = Person(
                resident_id=len(people) + 1,
                household_id=household,
                name=(surname if member != 1 else rng.choices(list(surnames), list(surnames.values()))[0])
                + _given(rng, sex, hui),
                sex=sex,
                birth_date=birth,
                ethnicity="回族" if hui else "汉族",
                id_number=issue_id_number(rng, area, birth, sex, issued),
                phone=phone_base
                if member == 0
                else "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9)),
                insurance_no=f"YB410182{len(people) + 1:010d}",
                township=township,
                village=village,
                address=address,
                hypertension=htn,
                diabetes=dm,
            )
            people.append(person)
            if member >= 2 and rng.random() < twin_rate and len(people) < count:
                twin_sex = rng.choice((1, 2))
                twin_name = person.name
                while twin_name == person.name:  # twins share a generation character, never the whole name
                    twin_name = (
                        surname + person.name[len(surname)] + rng.choice(GIVEN_MALE if twin_sex == 1 else GIVEN_FEMALE)
                    )
                twin = Person(
                    **{
                        **asdict(person),
                        "resident_id": len(people) + 1,
                        "sex": twin_sex,
                        "name": twin_name,
                        "id_number": issue_id_number(rng, area, birth, twin_sex, issued),
                        "twin_of": person.resident_id,
                        "insurance_no": f"YB410182{len(people) + 1:010d}",
                    }
                )
                people.append(twin)
    for person in rng.sample(people, int(count * namesake_rate)):
        other = rng.choice(people)
        if other.household_id != person.household_id and other.twin_of is None and person.twin_of is None:
            other.name, other.birth_date, other.namesake_of = person.name, person.birth_date, person.resident_id
            area = other.id_number[:6]
            issued.discard(other.id_number)
            other.id_number = issue_id_number(rng, area, other.birth_date, other.sex, issued)
    return people[:count]


class World:
    """Institutions, staff and people of the simulated county, loaded once per simulator run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.seed: int = config["seed"]
        self.start_date: date = config["start_date"]
        self.institutions = build_institutions()
        self.by_code = {i.org_code: i for i in self.institutions}
        self.staff = build_staff(self.institutions, self.seed)
        self.people: dict[int, Person] = {}
        self.appeared: dict[int, date] = {}  # resident id -> day before which the resident did not exist
        self._issued: set[str] | None = None

    def load_people(self, reset: bool = False) -> None:
        """Load the population from the answer key (once per run); generate and store it on first use."""
        if self.people and not reset:
            return
        answer_key.create_schema(reset=reset)
        with source_pg_engine(answer_key.DATABASE).connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM person ORDER BY resident_id")).mappings().all()
        if rows:
            self.people = {r["resident_id"]: Person(**{k: v for k, v in r.items() if k != "appeared_on"}) for r in rows}
            self.appeared = {r["resident_id"]: r["appeared_on"] for r in rows}
            return
        people = generate_population(self.seed, self.config["residents"], self.institutions, self.start_date)
        self.add_people(people, self.start_date - timedelta(days=1))

    def add_people(self, people: list[Person], day: date) -> None:
        """Store new residents; they take part in activity from the day after ``day``."""
        rows = [{**asdict(p), "appeared_on": day} for p in people]
        with source_pg_engine(answer_key.DATABASE).begin() as conn:
            if rows:
                columns = list(rows[0])
                conn.execute(
                    sa.text(
                        f"INSERT INTO person ({', '.join(columns)}) VALUES "
                        f"({', '.join(':' + c for c in columns)}) ON CONFLICT DO NOTHING"
                    ),
                    rows,
                )
        self.remember_people(people, day)

    def remember_people(self, people: list[Person], day: date) -> None:
        """New residents in memory only (stored already by another process)."""
        self.people.update({p.resident_id: p for p in people})
        self.appeared.update({p.resident_id: day for p in people})
        if self._issued is not None:
            self._issued.update(p.id_number for p in people)

    def issued_id_numbers(self) -> set[str]:
        """Every ID number in use (kept up to date as newborns are added), so new ones never collide."""
        if self._issued is None:
            self._issued = {p.id_number for p in self.people.values()}
        return self._issued

    def doctors(self, org_code: str) -> list[Staff]:
        return [s for s in self.staff[org_code] if s.role == "医师"]
