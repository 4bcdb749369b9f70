"""Residents of the county: names, sex, birth dates, GB 11643 ID numbers, phones and addresses.

Pure and seeded: the same seed and size give the same residents, so every source system and the
answer key agree on who exists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from core.gb11643 import check_char

# Most frequent surnames in Henan, with rough weights (per mille); a compound surname for realism.
SURNAMES = {
    "王": 95, "李": 80, "张": 85, "刘": 60, "陈": 40, "杨": 40, "赵": 30, "黄": 15, "周": 20, "吴": 12,
    "徐": 15, "孙": 20, "胡": 12, "朱": 15, "高": 20, "郭": 25, "马": 22, "何": 8, "宋": 15, "韩": 12,
    "冯": 10, "邓": 6, "曹": 10, "彭": 5, "曾": 3, "肖": 5, "田": 10, "董": 10, "袁": 6, "潘": 4,
    "于": 8, "蒋": 4, "蔡": 5, "余": 4, "杜": 8, "叶": 3, "程": 8, "苏": 6, "魏": 10, "吕": 8,
    "丁": 8, "任": 8, "沈": 3, "姚": 6, "卢": 5, "司马": 1, "欧阳": 1,
}
GIVEN_MALE = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帅建国志红"
GIVEN_FEMALE = "芳娜敏静丽艳娟霞秀英华慧巧美娟玲桂兰萍雪琳颖洁倩婷晶红梅"
VILLAGES = ["东村", "西村", "南街村", "北岗村", "王庄村", "李寨村", "张河村", "刘沟村", "新庄村", "后寨村"]


@dataclass(frozen=True)
class Resident:
    resident_id: int
    name: str
    sex: int  # GB/T 2261.1: 1 male, 2 female
    birth_date: date
    id_number: str
    phone: str
    township: str
    address: str


def _birth_date(rng: random.Random, reference: date) -> date:
    # A rough county age pyramid: fewer children than adults, a long elderly tail.
    age = min(int(rng.triangular(0, 95, 45)), 99)
    return reference - timedelta(days=age * 365 + rng.randrange(365))


def make_id_number(rng: random.Random, area_code: str, birth: date, sex: int) -> str:
    sequence = rng.randrange(0, 499) * 2 + (1 if sex == 1 else 0)  # odd = male, even = female
    first17 = f"{area_code}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_char(first17)


def generate_residents(seed: int, count: int, area_code: str, townships: list[str],
                       reference: date) -> list[Resident]:
    rng = random.Random(f"population:{seed}")
    surnames, weights = zip(*SURNAMES.items(), strict=True)
    residents, issued = [], set()
    for resident_id in range(1, count + 1):
        sex = rng.choice((1, 2))
        given_pool = GIVEN_MALE if sex == 1 else GIVEN_FEMALE
        given = "".join(rng.choice(given_pool) for _ in range(rng.choice((1, 2, 2))))
        birth = _birth_date(rng, reference)
        township = rng.choice(townships)
        id_number = make_id_number(rng, area_code, birth, sex)
        while id_number in issued:  # an ID number belongs to one person only
            id_number = make_id_number(rng, area_code, birth, sex)
        issued.add(id_number)
        residents.append(Resident(
            resident_id=resident_id,
            name=rng.choices(surnames, weights)[0] + given,
            sex=sex,
            birth_date=birth,
            id_number=id_number,
            phone="1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9)),
            township=township,
            address=f"河南省荥阳市{township}{rng.choice(VILLAGES)}{rng.randrange(1, 200)}号",
        ))
    return residents
