"""A second, independently designed error model: 荥阳 person records as eight member systems hold them.

    python -m bench.error_model --residents 30000 --seed 7 --out /tmp/em   # records.parquet, truth.parquet

Why a second model: the EMPI was tuned on the simulator's records (``simulator/dirt.py``); a model written
separately, from the error categories the record-linkage literature and Chinese registration practice describe,
tells whether the matcher holds up on errors it was not shaped around. Nothing here imports the simulator.

Residents: households (couples with different surnames, children with the father's surname, elderly parents,
twins with related given names, unrelated people sharing name and birthday), surnames at Henan-like
frequencies with the rare compound ones, given names by birth era, 荥阳 township / village / street addresses
(townships from config/organizations.csv), valid GB 11643 ID numbers (410182…, a few married-in spouses from
neighbouring counties), phone numbers that change over the years, households sharing a phone, moves.

Records: each resident is registered at the systems a person of that age, sex and place uses (public-health
archive, 云HIS clinics, village clinic, 妇幼, two county hospitals, a private hospital, chronic-disease
follow-up), sometimes twice in one system (lost card, new registration), each registration in a year of the
system's life, so phone and address are the ones of that year. Errors per record, at rates that depend on the
system (handwritten village and 妇幼 files worse than hospital front desks):
 * ID number: absent (village clinics, 妇幼, children before 户口), legacy 15-digit (old registrations), wrong
   check character, one digit mistyped, adjacent digits swapped, lower-case x, full-width digits, spaces;
 * name: homophones (同音字, by the IME's candidate list), look-alike characters, traditional characters, a
   character dropped, spaces / full-width spaces inside, dialect surname confusions (黄/王);
 * birth date: missing, one digit wrong, day or month or year wrong, day and month swapped, 1 January for
   an old person whose day was not known;
 * sex: missing, coded 1/2, 男/女, M/F or 9 (未说明) by system; rarely wrong;
 * phone: an earlier number, a household member's number, missing, one digit wrong, +86 / dashes / spaces;
 * address: province / city prefixes or none, abbreviated township (乔楼 for 乔楼镇, 办事处 for 街道), 组 and
   house number dropped, a village written by sound, the address before a move, missing.
The truth (record_id -> resident id) is returned apart from the records.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from core.gb11643 import check_char, is_valid

REFERENCE = date(2026, 6, 30)
ORGANIZATIONS = Path(__file__).resolve().parents[1] / "config" / "organizations.csv"
BATCH_COLUMNS = ("record_id", "source", "name", "sex", "birth_date", "id_number", "phone", "address")

# Henan-like surname shares (per mille, rounded; the big five a little above the national figures),
# compound surnames rare as they are.
SURNAMES = {
    "王": 90,
    "李": 80,
    "张": 85,
    "刘": 65,
    "陈": 40,
    "杨": 35,
    "赵": 28,
    "郭": 25,
    "孙": 20,
    "马": 20,
    "黄": 15,
    "周": 18,
    "吴": 12,
    "徐": 13,
    "朱": 15,
    "高": 18,
    "胡": 12,
    "何": 7,
    "宋": 14,
    "韩": 12,
    "冯": 10,
    "郑": 12,
    "曹": 10,
    "田": 10,
    "董": 10,
    "程": 10,
    "魏": 10,
    "吕": 8,
    "丁": 8,
    "任": 8,
    "杜": 8,
    "范": 7,
    "贾": 7,
    "付": 6,
    "崔": 6,
    "袁": 6,
    "许": 6,
    "苏": 5,
    "薛": 5,
    "常": 5,
    "姚": 5,
    "史": 5,
    "牛": 5,
    "侯": 5,
    "秦": 4,
    "翟": 3,
    "娄": 2,
    "楚": 1,
    "白": 4,
    "申": 3,
    "闫": 5,
    "邓": 4,
    "肖": 4,
    "蒋": 3,
    "汪": 2,
    "余": 2,
    "于": 4,
    "石": 4,
    "姜": 4,
    "谢": 5,
    "梁": 6,
    "罗": 5,
    "叶": 2,
    "唐": 4,
    "卢": 4,
    "彭": 3,
    "潘": 3,
    "武": 4,
    "蔡": 3,
    "孔": 3,
    "毛": 2,
    "郝": 4,
    "邵": 2,
    "段": 3,
    "雷": 2,
    "钱": 1,
    "苗": 2,
    "左": 1,
    "席": 1,
    "欧阳": 0.4,
    "司马": 0.4,
    "上官": 0.3,
    "诸葛": 0.2,
    "东方": 0.2,
    "皇甫": 0.3,
    "令狐": 0.2,
    "司徒": 0.2,
    "尉迟": 0.1,
    "慕容": 0.1,
    "端木": 0.1,
    "公孙": 0.1,
}
HUI_SURNAMES = {"马": 40, "白": 10, "海": 6, "沙": 6, "穆": 5, "米": 3, "金": 5, "丁": 6, "哈": 3}
HUI_TOWNSHIP = "金寨回族乡"

# Given names by birth era: whole names people of that era were given, and characters names were made of.
ERAS = ((1900, 1959), (1960, 1979), (1980, 1999), (2000, 2100))
WHOLE = {
    (1, 0): "建国 国庆 建华 国强 志刚 振华 保国 德胜 福山 长海 金河 树林 玉成 文明 学军 卫东 新民 铁柱 有才 春生",
    (2, 0): "秀英 桂兰 玉兰 凤英 淑珍 秀兰 桂英 玉梅 春花 翠英 素芳 爱莲 金凤 秀珍 月娥 巧云 玉珍 素琴 改英 爱琴",
    (1, 1): "建军 红军 卫国 建设 海军 向东 志强 永刚 红伟 建伟 国伟 红星 新华 建民 军峰 保军 宏伟 振东 书林 战胜",
    (2, 1): "红霞 红梅 丽娟 淑华 玉霞 艳红 海燕 丽华 春梅 晓燕 彩霞 秀云 爱华 素霞 红玲 艳玲 雪梅 玉芳 桂芳 秋菊",
    (1, 2): "俊杰 志强 晓东 海涛 鹏飞 振宇 冬冬 晓磊 亚伟 文博 浩楠 永康 明辉 晓峰 少华 帅帅 晓龙 建波 亚飞 志鹏",
    (2, 2): "晶晶 丹丹 婷婷 晓丽 亚楠 梦瑶 佳佳 雪莹 晓静 亚男 梦雪 晓娜 丽娜 艳丽 倩倩 露露 慧敏 思琪 文静 雅琳",
    (1, 3): "浩然 子豪 宇轩 梓轩 一鸣 俊熙 子墨 浩宇 博文 泽宇 嘉豪 皓轩 宇航 天佑 家乐 奕辰 沐阳 梓睿 宸 锦程",
    (2, 3): "欣怡 梓涵 子涵 雨桐 诗涵 一诺 可欣 梦瑶 思彤 若汐 佳怡 语桐 依诺 欣悦 雨欣 紫涵 梓萱 馨怡 芷若 沐晴",
}
CHARS = {
    (1, 0): "国庆华强刚振宝胜长树林成文明学军卫东新民柱才福德山海金河玉生春",
    (2, 0): "秀英桂兰玉凤淑珍梅春花翠素芳爱莲金月娥巧云琴改荣枝香",
    (1, 1): "建军红卫国设海向东志强永刚伟星新华民峰保宏振书林胜勇明涛",
    (2, 1): "红霞梅丽娟淑华玉艳燕晓彩秀云爱素玲雪芳桂秋菊静萍敏",
    (1, 2): "伟磊鹏超杰涛斌浩鑫亮帅飞辉俊宇峰龙波康明东博楠",
    (2, 2): "静丽娜敏婷芳艳倩雪璐佳晶丹琳莹楠梦瑶琪慧露雅",
    (1, 3): "浩然子豪宇轩梓一鸣熙墨博文泽睿嘉皓航天佑家乐辰阳铭",
    (2, 3): "欣怡梓涵雨桐诗一诺可梦瑶思彤若汐佳语依悦紫萱馨芷晴",
}
SINGLE_SHARE = (0.10, 0.25, 0.40, 0.08)  # share of one-character given names by era

# 同音字: characters an IME offers for the same syllable (tone aside); a clerk picks the wrong one.
HOMOPHONES = (
    "伟玮炜韦维",
    "丽莉俐立利",
    "静晶敬婧菁",
    "娜那纳",
    "军君均钧",
    "俊骏峻",
    "敏民闵",
    "杰洁捷婕",
    "磊蕾雷",
    "涛韬桃陶",
    "斌彬滨宾",
    "辉慧惠晖卉",
    "鹏朋蓬",
    "华桦花",
    "飞菲非霏",
    "鑫欣新心馨",
    "宇玉雨语羽钰",
    "浩昊皓豪灏",
    "凯恺楷",
    "建健剑坚",
    "红宏鸿洪虹",
    "梅美玫媚",
    "英瑛莹颖盈",
    "玲琳林霖凌铃",
    "萍平苹屏",
    "霞侠",
    "燕艳彦雁",
    "秀绣",
    "兰岚蓝",
    "倩茜",
    "婷亭庭廷",
    "超朝",
    "明鸣铭",
    "刚钢纲",
    "勇永涌咏",
    "峰锋丰风枫",
    "志智治致",
    "文雯闻",
    "子紫梓姿",
    "涵晗含寒",
    "轩萱宣",
    "怡仪宜依艺",
    "思斯丝",
    "佳家嘉加",
    "雅亚娅",
    "晨辰臣琛",
    "博波柏",
    "瑞锐睿",
    "泽择",
    "然冉",
    "彤桐同童",
    "瑶遥尧",
    "悦月越跃",
    "汐希溪曦熙",
    "国帼",
    "庆青清",
    "珍真贞",
    "芳方",
    "娟鹃涓",
    "丹单",
    "楠南男",
    "梦孟",
    "亮靓",
    "冬东",
    "晓小筱",
    "春纯",
    "琪奇其琦",
    "露路璐",
    "龙隆",
    "康抗",
    "航杭",
    "乐勒",
    "阳杨洋扬",
    "程成诚",
    "菊局",
    "香湘祥",
    # surnames
    "张章",
    "徐许",
    "付傅符",
    "肖萧",
    "于余俞",
    "吴武伍",
    "姜江蒋",
    "史石施师",
    "袁元原苑",
    "冯封",
    "韩寒",
    "刘柳",
    "闫严颜阎",
    "娄楼",
    "郝好",
    "席习",
    "申沈",
)
# Dialect confusions of 中原官话 ears: not homophones in Putonghua, said alike in parts of Henan.
DIALECT = ("黄王", "胡福", "陈程", "郑正")
# 形近字: look-alike characters (handwriting read back, or a stroke-count IME).
LOOKALIKE = (
    "己已",
    "侯候",
    "未末",
    "干千",
    "王玉",
    "土士",
    "日曰",
    "大太",
    "人入",
    "冶治",
    "拔拨",
    "杨扬",
    "晴睛",
    "柱住",
    "娟绢",
    "琳淋",
    "婷停",
    "霞暇",
    "丽厉",
    "红江",
    "梅海",
    "明朋",
    "刚钢",
    "斌赋",
)
# simplified -> traditional for the characters names here use (OpenCC's table is what the EMPI reads;
# this is written by hand so the benchmark does not share the matcher's table).
TRADITIONAL = dict(
    zip(
        "张刘陈杨赵孙马吴韩冯郑吕贾许苏娄闫邓蒋谢罗叶卢钱欧阳诸东孙迟范"
        "国庆华强刚宝胜长树学军卫东铁兰凤爱莲云红伟设涛丽艳静晓鹏杰帅飞辉莹梦轩鸣泽铭乐诗诺瑶语悦龙"
        "丰义贤凯宏鸿钧骏韬滨晖蕾硕颖馨萱",
        "張劉陳楊趙孫馬吳韓馮鄭呂賈許蘇婁閆鄧蔣謝羅葉盧錢歐陽諸東孫遲範"
        "國慶華強剛寶勝長樹學軍衛東鐵蘭鳳愛蓮雲紅偉設濤麗艷靜曉鵬傑帥飛輝瑩夢軒鳴澤銘樂詩諾瑤語悅龍"
        "豐義賢凱宏鴻鈞駿韜濱暉蕾碩穎馨萱",
        strict=True,
    )
)

# Villages: made here from common 豫 village-name parts (not the simulator's list).
VILLAGE_HEADS = ("", "前", "后", "东", "西", "南", "北", "大", "小", "上", "下")
VILLAGE_STEMS = (
    "楚",
    "油坊",
    "柏朵",
    "槐树",
    "枣树",
    "石",
    "杏",
    "柿",
    "桥",
    "孤柏",
    "白杨",
    "黄",
    "任",
    "周",
    "唐",
    "翟",
    "贾",
    "薛",
    "苗",
    "常",
    "秦",
    "段",
    "娄",
    "付",
    "申",
    "牛",
    "郝",
    "关",
    "庙",
    "窑",
)
VILLAGE_TAILS = ("村", "庄", "寨", "沟", "洼", "岭", "窑", "坡", "店", "庙", "营", "湾", "河")
ROADS = (
    "索河路",
    "京城路",
    "万山路",
    "演武路",
    "桃李路",
    "康泰路",
    "织锦路",
    "广武路",
    "塔山路",
    "郑上路",
    "中原路",
    "飞龙路",
    "汜河路",
    "商隐路",
    "荥泽大道",
    "繁荣路",
    "建设路",
    "站前路",
)
ESTATES = (
    "锦绣花园",
    "阳光小区",
    "康泰家园",
    "幸福里",
    "金域华府",
    "书香苑",
    "盛世名门",
    "和谐家园",
    "建业新城",
    "棉纺厂家属院",
    "教师公寓",
    "天安小区",
)
STREET_TOWNSHIPS = ("京城路街道", "索河街道")
NEIGHBOUR_AREAS = ("410181", "410184", "410122", "410183", "410185")  # 巩义 新郑 中牟 新密 登封: married in
MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "175",
    "176",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "199",
)


@dataclass(frozen=True)
class System:
    """A member system: who is registered there, since when, how often its records carry the ID number,
    how it writes sex, and how careless its registration is (a multiplier on every error rate)."""

    name: str
    since: int
    id_share: float
    sex_forms: tuple[str, ...]  # raw forms for male / female written as "1|2" or "男|女" or "M|F"
    sex_missing: float
    care: float
    duplicate: float  # chance of a second registration of the same person
    id_legacy: float  # chance an old (pre-2013) registration keeps a 15-digit number
    address_full: float  # chance the address carries a province/city prefix


SYSTEMS = (
    System("public_health", 2010, 0.97, ("1|2",), 0.01, 0.8, 0.03, 0.25, 0.5),
    System("cloud_his", 2018, 0.93, ("男|女", "1|2"), 0.03, 1.0, 0.04, 0.0, 0.3),
    System("village_clinic", 2012, 0.58, ("男|女",), 0.12, 1.6, 0.06, 0.30, 0.05),
    System("fy_files", 2008, 0.66, ("男|女",), 0.35, 1.4, 0.05, 0.30, 0.2),
    System("rmyy_his", 2006, 0.95, ("1|2",), 0.02, 0.7, 0.03, 0.30, 0.7),
    System("zyy_his", 2009, 0.92, ("男|女",), 0.03, 0.9, 0.03, 0.30, 0.6),
    System("private_his", 2015, 0.86, ("M|F", "男|女"), 0.05, 1.2, 0.04, 0.0, 0.4),
    System("chronic_followup", 2011, 0.93, ("1|2",), 0.06, 1.0, 0.02, 0.20, 0.3),
)
SYSTEM = {s.name: s for s in SYSTEMS}


@dataclass
class Resident:
    resident_id: int
    household: int
    name: str
    sex: int
    birth: date
    id18: str
    legacy_card: bool  # had a 15-digit first-generation card
    phones: list[tuple[int, str]] = field(default_factory=list)  # (from year, number)
    addresses: list[tuple[int, tuple[str, str, str, str]]] = field(default_factory=list)
    household_phones: list[str] = field(default_factory=list)
    rural: bool = True
    chronic: bool = False
    guardian_id: str | None = None  # a parent's ID number (children)
    twin: bool = False


def townships() -> list[str]:
    """The county's township-level units, read from the institution register."""
    with ORGANIZATIONS.open(encoding="utf-8") as f:
        return sorted({row["township"] for row in csv.DictReader(f) if row["township"]})


class Population:
    """Residents in households; deterministic from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.issued: set[str] = set()
        self.phones: set[str] = set()
        towns = townships()
        self.villages = {t: self._villages(t) for t in towns if t not in STREET_TOWNSHIPS}
        self.towns = towns
        self.town_weights = [12 if t in STREET_TOWNSHIPS else 6 + rng.randrange(4) for t in towns]
        self.people: list[Resident] = []

    def _villages(self, township: str) -> list[str]:
        names: set[str] = set()
        while len(names) < 14 + self.rng.randrange(12):
            names.add(self.rng.choice(VILLAGE_HEADS) + self.rng.choice(VILLAGE_STEMS) + self.rng.choice(VILLAGE_TAILS))
        return sorted(names)

    def id_number(self, area: str, birth: date, sex: int) -> str:
        while True:
            seq = self.rng.randrange(0, 1000)
            if seq % 2 != sex % 2:  # odd sequence for men, even for women
                seq = (seq + 1) % 1000
            first17 = f"{area}{birth:%Y%m%d}{seq:03d}"
            number = first17 + check_char(first17)
            if number not in self.issued:
                self.issued.add(number)
                return number

    def phone(self) -> str:
        while True:
            number = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"
            if number not in self.phones:
                self.phones.add(number)
                return number

    def surname(self, hui: bool) -> str:
        table = HUI_SURNAMES if hui else SURNAMES
        return self.rng.choices(list(table), list(table.values()))[0]

    def given(self, sex: int, birth: date, avoid: str = "") -> str:
        era = next(i for i, (lo, hi) in enumerate(ERAS) if lo <= birth.year <= hi)
        rng = self.rng
        while True:
            if rng.random() < 0.45:
                name = rng.choice(WHOLE[(sex, era)].split())
            else:
                chars = CHARS[(sex, era)]
                name = rng.choice(chars) if rng.random() < SINGLE_SHARE[era] else rng.choice(chars) + rng.choice(chars)
            if name != avoid and (len(name) == 1 or name[0] != name[1] or rng.random() < 0.3):
                return name

    def address(self, township: str) -> tuple[str, str, str, str]:
        """(township, place, group / building, house) of one dwelling."""
        rng = self.rng
        if township in STREET_TOWNSHIPS:
            return (
                township,
                rng.choice(ROADS),
                rng.choice(ESTATES),
                f"{rng.randrange(1, 25)}号楼{rng.randrange(1, 5)}单元{rng.randrange(1, 19)}0{rng.randrange(1, 5)}",
            )
        return (township, rng.choice(self.villages[township]), f"{rng.randrange(1, 12)}组", str(rng.randrange(1, 260)))

    def birth(self, low: int, high: int) -> date:
        age_days = self.rng.randrange(low * 365, high * 365 + 365)
        return REFERENCE - timedelta(days=age_days)

    def add(
        self, household: int, name: str, sex: int, birth: date, home: tuple[str, str, str, str], area: str = "410182"
    ) -> Resident:
        legacy = birth.year < 1996 and self.rng.random() < 0.85
        person = Resident(
            len(self.people) + 1,
            household,
            name,
            sex,
            birth,
            self.id_number(area, birth, sex),
            legacy,
            rural=home[0] not in STREET_TOWNSHIPS,
        )
        person.addresses.append((1900, home))
        self.people.append(person)
        return person

    def household(self, number: int) -> None:
        rng = self.rng
        township = rng.choices(self.towns, self.town_weights)[0]
        home = self.address(township)
        hui = (township == HUI_TOWNSHIP and rng.random() < 0.45) or (township == "乔楼镇" and rng.random() < 0.2)
        head_age = int(rng.triangular(20, 92, 42))
        family_name = self.surname(hui)
        members: list[Resident] = []
        husband_birth = self.birth(head_age, head_age)
        husband = self.add(number, family_name + self.given(1, husband_birth), 1, husband_birth, home)
        members.append(husband)
        if rng.random() < 0.85:  # a wife, with her own surname; some married in from a neighbouring county
            wife_age = max(18, head_age - rng.randrange(-1, 6))
            wife_birth = self.birth(wife_age, wife_age)
            area = rng.choice(NEIGHBOUR_AREAS) if rng.random() < 0.06 else "410182"
            wife = self.add(number, self.surname(hui) + self.given(2, wife_birth), 2, wife_birth, home, area)
            members.append(wife)
            mother_age = (REFERENCE - wife_birth).days // 365
            children = rng.choices((0, 1, 2, 3), (0.15, 0.4, 0.35, 0.1))[0] if mother_age >= 20 else 0
            for _ in range(children):
                age = mother_age - rng.randrange(20, 36)
                if age < 0:
                    continue
                sex = rng.choice((1, 2))
                birth = self.birth(age, age)
                if age >= 22 and rng.random() < 0.6:  # grown children mostly live elsewhere in the county
                    continue
                child = self.add(number, family_name + self.given(sex, birth), sex, birth, home)
                child.guardian_id = rng.choice((husband, wife)).id18
                members.append(child)
                if rng.random() < 0.015:  # twins: same birthday, related given names
                    self._twin(number, child, family_name, home, members)
        if head_age < 60 and rng.random() < 0.2:  # a widowed parent living with them
            parent_birth = self.birth(head_age + 22, min(head_age + 40, 99))
            sex = rng.choice((1, 2))
            surname = family_name if sex == 1 else self.surname(hui)
            members.append(self.add(number, surname + self.given(sex, parent_birth), sex, parent_birth, home))
        self._contact(members, home)

    def _twin(
        self, number: int, first: Resident, family: str, home: tuple[str, str, str, str], members: list[Resident]
    ) -> None:
        rng = self.rng
        sex = first.sex if rng.random() < 0.65 else 3 - first.sex
        given = first.name[len(family) :]
        if len(given) == 2 and rng.random() < 0.7:
            other = given[0] + self.given(sex, first.birth)[-1]
            other = other if other != given else given[0] + rng.choice(CHARS[(sex, 3)])
        else:
            other = self.given(sex, first.birth, avoid=given)
        twin = self.add(number, family + other, sex, first.birth, home)
        twin.guardian_id = first.guardian_id
        twin.twin = first.twin = True
        members.append(twin)

    def _contact(self, members: list[Resident], home: tuple[str, str, str, str]) -> None:
        """Phones (changing over the years; children and many old people give a parent's / child's number),
        moves, chronic disease."""
        rng = self.rng
        adults = [m for m in members if (REFERENCE - m.birth).days >= 16 * 365]
        for m in adults:
            age = (REFERENCE - m.birth).days // 365
            if age >= 75 and rng.random() < 0.5:
                continue
            year = 2005
            m.phones.append((year, self.phone()))
            while rng.random() < 0.45:  # a new number some year
                year = rng.randrange(year + 1, 2027) if year < 2025 else 2026
                m.phones.append((year, self.phone()))
                if year >= 2026:
                    break
        own = [m.phones[-1][1] for m in adults if m.phones]
        for m in members:
            m.household_phones = own
            if not m.phones and own:
                m.phones.append((2005, rng.choice(own)))
            age = (REFERENCE - m.birth).days // 365
            m.chronic = age >= 35 and rng.random() < min(0.55, 0.01 * (age - 25))
        if rng.random() < 0.12:  # the household moved some year
            moved = rng.randrange(2008, 2026)
            township = rng.choices(self.towns, self.town_weights)[0]
            new_home = self.address(township)
            for m in members:
                m.addresses.append((moved, new_home))
                m.rural = township not in STREET_TOWNSHIPS

    def namesake(self, number: int) -> None:
        """An unrelated resident with the name and birthday of someone already generated (another village)."""
        rng = self.rng
        model = rng.choice(self.people)
        while (REFERENCE - model.birth).days < 18 * 365:
            model = rng.choice(self.people)
        township = rng.choices(self.towns, self.town_weights)[0]
        person = self.add(number, model.name, model.sex, model.birth, self.address(township))
        self._contact([person], person.addresses[0][1])


def generate_residents(count: int, seed: int, namesake_rate: float = 0.003) -> list[Resident]:
    """``count`` residents in households, twins and same-name-same-birthday pairs included."""
    population = Population(random.Random(f"error-model-residents:{seed}"))
    number = 0
    while len(population.people) < count:
        number += 1
        if population.people and population.rng.random() < namesake_rate * 2.5:
            population.namesake(number)
        else:
            population.household(number)
    return population.people[:count]


# ----------------------------------------------------------------------------------------------------------
# Registration: which systems hold a resident, and what each one wrote down.


def _systems_of(rng: random.Random, p: Resident) -> list[str]:
    age = (REFERENCE - p.birth).days // 365
    chance = {
        "public_health": 0.72 if age >= 3 else 0.5,
        "cloud_his": 0.44,
        "village_clinic": (0.40 if age >= 50 else 0.22) if p.rural else 0.03,
        "fy_files": 0.85 if age < 7 else (0.45 if p.sex == 2 and 18 <= age <= 45 else 0.0),
        "rmyy_his": 0.22,
        "zyy_his": 0.10 if age >= 30 else 0.04,
        "private_his": 0.06,
        "chronic_followup": 0.75 if p.chronic else 0.0,
    }
    held = [s for s, c in chance.items() if rng.random() < c]
    return held or [rng.choice(("cloud_his", "public_health"))]


def _at(history: list, year: int):
    """The value in force in ``year`` of a (from year, value) history."""
    value = history[0][1]
    for since, v in history:
        if since <= year:
            value = v
    return value


def _swap_char(rng: random.Random, name: str, table: tuple[str, ...], surname_only: bool = False) -> str:
    positions = [i for i, c in enumerate(name) if any(c in g for g in table)]
    if surname_only:
        positions = [i for i in positions if i == 0]
    if not positions:
        return name
    i = rng.choice(positions)
    group = "".join(g for g in table if name[i] in g)
    return name[:i] + rng.choice([c for c in group if c != name[i]]) + name[i + 1 :]


def _write_name(rng: random.Random, p: Resident, care: float) -> str:
    name = p.name
    if rng.random() < 0.035 * care:
        name = _swap_char(rng, name, HOMOPHONES)
    if rng.random() < 0.006 * care:
        name = _swap_char(rng, name, DIALECT, surname_only=True)
    if rng.random() < 0.01 * care:
        name = _swap_char(rng, name, LOOKALIKE)
    if len(name) >= 3 and rng.random() < 0.004 * care:
        i = rng.randrange(1, len(name))
        name = name[:i] + name[i + 1 :]
    if rng.random() < 0.012 * care:
        name = "".join(TRADITIONAL.get(c, c) for c in name)
    if rng.random() < 0.012 * care:
        sep = rng.choice((" ", "\u3000", "  "))
        name = name[0] + sep + name[1:] if rng.random() < 0.7 else sep.join(name)
    return name


def _valid_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _write_birth(rng: random.Random, p: Resident, care: float) -> date | None:
    b = p.birth
    age = (REFERENCE - b).days // 365
    r = rng.random()
    rates = [
        ("missing", 0.02),
        ("digit", 0.012),
        ("day", 0.008),
        ("month", 0.005),
        ("year", 0.008),
        ("swap", 0.006),
        ("jan1", 0.04 if age >= 70 else 0.0),
    ]
    kind, edge = None, 0.0
    for k, rate in rates:
        edge += rate * care
        if r < edge:
            kind = k
            break
    if kind is None:
        return b
    if kind == "missing":
        return None
    if kind == "jan1":
        return date(b.year, 1, 1)
    for _ in range(20):
        if kind == "digit":
            text = list(f"{b:%Y%m%d}")
            i = rng.randrange(2, 8)
            text[i] = rng.choice([c for c in "0123456789" if c != text[i]])
            s = "".join(text)
            new = _valid_date(int(s[:4]), int(s[4:6]), int(s[6:]))
        elif kind == "day":
            new = _valid_date(b.year, b.month, b.day + rng.choice((-2, -1, 1, 2, 10, -10)))
        elif kind == "month":
            new = _valid_date(b.year, b.month + rng.choice((-1, 1)), b.day)
        elif kind == "year":
            new = _valid_date(b.year + rng.choice((-1, 1, -10, 10)), b.month, b.day)
        else:
            new = _valid_date(b.year, b.day, b.month) if b.day <= 12 and b.day != b.month else None
        if new and new != b and new <= REFERENCE:
            return new
    return b


def _write_id(
    rng: random.Random, p: Resident, system: System, year: int, care: float, guardian_rate: float
) -> str | None:
    age_then = year - p.birth.year
    share = system.id_share * (0.35 if age_then < 1 else 0.8 if age_then < 7 else 1.0)
    if rng.random() >= share:
        return None
    number = p.id18
    if p.guardian_id and age_then < 14 and rng.random() < guardian_rate:
        number = p.guardian_id  # a child registered under a parent's number
    if p.legacy_card and year < 2013 and rng.random() < system.id_legacy:
        return number[:6] + number[8:17]
    r = rng.random()
    if r < 0.012 * care:
        number = number[:17] + rng.choice([c for c in "0123456789X" if c != number[17]])
    elif r < 0.022 * care:
        i = rng.randrange(0, 17)
        number = number[:i] + rng.choice([c for c in "0123456789" if c != number[i]]) + number[i + 1 :]
    elif r < 0.027 * care:
        i = rng.randrange(6, 16)
        number = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
    r = rng.random()
    if number.endswith("X") and r < 0.3:
        number = number[:-1] + "x"
    elif r < 0.006 * care:
        number = number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    elif r < 0.012 * care:
        number = f"{number[:6]} {number[6:14]} {number[14:]}"
    return number


def _write_phone(rng: random.Random, p: Resident, year: int, care: float) -> str | None:
    if not p.phones or rng.random() < 0.07 * care:
        return None
    number = _at(p.phones, year)
    if p.household_phones and rng.random() < 0.05:
        number = rng.choice(p.household_phones)  # whoever brought them gave their own number
    if rng.random() < 0.01 * care:
        i = rng.randrange(3, 11)
        number = number[:i] + rng.choice([c for c in "0123456789" if c != number[i]]) + number[i + 1 :]
    r = rng.random()
    if r < 0.04:
        return "+86 " + number
    if r < 0.08:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    if r < 0.11:
        return f"{number[:3]} {number[3:7]} {number[7:]}"
    return number


def _abbreviate(township: str, rng: random.Random) -> str:
    if township.endswith("街道"):
        return rng.choice((township[:-2] + "办事处", township[:-2] + "办", township[:-2]))
    if township.endswith("回族乡"):
        return rng.choice((township[:-3] + "乡", township[:-3]))
    return township[:-1]


def _write_address(rng: random.Random, p: Resident, system: System, year: int, care: float) -> str | None:
    if rng.random() < 0.04 * care:
        return None
    township, place, group, house = _at(p.addresses, year)
    r = rng.random()
    prefix = (
        ""
        if r >= system.address_full
        else rng.choice(("河南省郑州市荥阳市", "河南省荥阳市", "郑州市荥阳市", "河南荥阳", "荥阳市"))
    )
    if not prefix and rng.random() < 0.3:
        prefix = "荥阳市"
    town = _abbreviate(township, rng) if rng.random() < 0.3 * care else township
    if rng.random() < 0.01 * care:
        place = _swap_char(rng, place, HOMOPHONES)
    if township in STREET_TOWNSHIPS:
        if rng.random() < 0.15 * care:
            return f"{prefix}{town}{place}{group}"
        road_no = 10 + (sum(map(ord, place + group)) % 300)
        return f"{prefix}{town}{place}{road_no}号{group}{house}"
    village = place if place.endswith(("村", "庄", "寨")) or rng.random() < 0.4 else place + "村"
    if rng.random() < 0.25 * care:
        return f"{prefix}{town}{village}"
    group_text = rng.choice((group, group.replace("组", "村民组"), "第" + group, group))
    if rng.random() < 0.2 * care:
        group_text = ""
    return f"{prefix}{town}{village}{group_text}{house}{rng.choice(('号', '号', '#', ''))}"


def _write_sex(rng: random.Random, p: Resident, system: System, care: float) -> str:
    if rng.random() < system.sex_missing:
        return rng.choice(("", "", "9")) if system.sex_forms[0] == "1|2" else ""
    sex = p.sex if rng.random() >= 0.002 * care else 3 - p.sex
    form = rng.choice(system.sex_forms).split("|")
    return form[sex - 1]


def register(people: list[Resident], seed: int, guardian_rate: float = 0.0) -> tuple[list[dict], dict[str, int]]:
    """(records as the systems hold them, record_id -> resident id). Sex is raw (1/2, 男/女, M/F, 9, empty)."""
    rng = random.Random(f"error-model-records:{seed}")
    raw: list[tuple[dict, int]] = []
    for p in people:
        for name in _systems_of(rng, p):
            system = SYSTEM[name]
            copies = 2 if rng.random() < system.duplicate else 1
            for _ in range(copies):
                first = max(system.since, p.birth.year)
                year = rng.randrange(first, REFERENCE.year + 1)
                care = system.care * rng.uniform(0.6, 1.4)  # this clerk, this day
                birth = _write_birth(rng, p, care)
                raw.append(
                    (
                        {
                            "source": name,
                            "name": _write_name(rng, p, care),
                            "sex": _write_sex(rng, p, system, care),
                            "birth_date": birth.isoformat() if birth else "",
                            "id_number": _write_id(rng, p, system, year, care, guardian_rate) or "",
                            "phone": _write_phone(rng, p, year, care) or "",
                            "address": _write_address(rng, p, system, year, care) or "",
                            "registered": year,
                        },
                        p.resident_id,
                    )
                )
    rng.shuffle(raw)  # record ids say nothing about who is who
    counters: Counter[str] = Counter()
    records, truth = [], {}
    for row, resident in raw:
        counters[row["source"]] += 1
        record_id = f"{row['source']}|{row['source'][:2].upper()}{counters[row['source']]:07d}"
        records.append({"record_id": record_id, **row})
        truth[record_id] = resident
    return records, truth


SEX_TO_BATCH = {"1": "1", "2": "2", "男": "男", "女": "女", "M": "1", "F": "2", "9": "9", "": ""}


def to_batch(records: list[dict]) -> list[dict]:
    """Rows in the ``./drc empi match`` input format (sex mapped to 0/1/2/9 or 男/女, which the reader accepts)."""
    return [{c: (SEX_TO_BATCH[r["sex"]] if c == "sex" else r[c]) for c in BATCH_COLUMNS} for r in records]


def build(residents: int, seed: int, guardian_rate: float = 0.0) -> tuple[list[dict], dict[str, int], dict]:
    """(batch rows, truth, facts about the set) for ``residents`` residents."""
    people = generate_residents(residents, seed)
    records, truth = register(people, seed, guardian_rate)
    return to_batch(records), truth, describe(people, records, truth)


def _id_valid_after_conversion(raw: str) -> bool:
    cleaned = raw.translate(str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789XX")).replace(" ", "").upper()
    if len(cleaned) == 15 and cleaned.isdigit():
        first17 = cleaned[:6] + "19" + cleaned[6:]
        return len(check_char(first17)) == 1  # a converted legacy number is always well-formed
    return is_valid(cleaned)


def describe(people: list[Resident], records: list[dict], truth: dict[str, int]) -> dict:
    """Facts to report beside the scores: size, ID coverage, twins and namesakes, records per system."""
    by_key = Counter((p.name, p.birth) for p in people)
    twins = Counter((p.household, p.birth) for p in people if p.twin)
    per_resident = Counter(truth.values())
    n = len(records)
    return {
        "residents": len(people),
        "records": n,
        "residents_with_records": len(per_resident),
        "records_per_resident": round(n / max(len(per_resident), 1), 3),
        "valid_id_share": round(sum(_id_valid_after_conversion(r["id_number"]) for r in records) / n, 4),
        "valid_18_digit_id_share": round(sum(is_valid(r["id_number"]) for r in records) / n, 4),
        "no_id_share": round(sum(not r["id_number"] for r in records) / n, 4),
        "legacy_15_digit": sum(len(r["id_number"]) == 15 for r in records),
        "twin_pairs": sum(c * (c - 1) // 2 for c in twins.values() if c > 1),
        "same_name_same_birthday_pairs": sum(c * (c - 1) // 2 for c in by_key.values() if c > 1),
        "compound_surname_residents": sum(p.name[:2] in SURNAMES for p in people),
        "true_pairs": sum(c * (c - 1) // 2 for c in per_resident.values()),
        "by_system": dict(sorted(Counter(r["source"] for r in records).items())),
        "errors": _error_shares(people, records, truth),
    }


def _error_shares(people: list[Resident], records: list[dict], truth: dict[str, int]) -> dict[str, float]:
    """How often each field differs from the resident's true value (what the matcher has to absorb)."""
    who = {p.resident_id: p for p in people}
    n = max(len(records), 1)
    counts: Counter[str] = Counter()
    for r in records:
        p = who[truth[r["record_id"]]]
        counts["name_written_differently"] += r["name"] != p.name
        counts["birth_date_missing"] += not r["birth_date"]
        counts["birth_date_wrong"] += bool(r["birth_date"]) and r["birth_date"] != p.birth.isoformat()
        counts["sex_missing_or_unknown"] += r["sex"] in ("", "9")
        counts["phone_missing"] += not r["phone"]
        counts["phone_not_latest_own"] += bool(r["phone"]) and not r["phone"].endswith(p.phones[-1][1][-8:])
        counts["address_missing"] += not r["address"]
        counts["id_missing"] += not r["id_number"]
        counts["id_legacy_15"] += len(r["id_number"]) == 15
        counts["id_present_invalid"] += bool(r["id_number"]) and not _id_valid_after_conversion(r["id_number"])
    return {k: round(v / n, 4) for k, v in sorted(counts.items())}


def write(rows: list[dict], truth: dict[str, int], folder: Path) -> Path:
    """records.parquet (the batch file, every column text) and truth.parquet beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.string()) for c in BATCH_COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "records.parquet")
    pq.write_table(
        pa.table({"record_id": list(truth), "resident_id": [str(v) for v in truth.values()]}), folder / "truth.parquet"
    )
    return folder / "records.parquet"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--guardian-id-rate",
        type=float,
        default=0.0,
        help="share of a child's ID-bearing records that carry a parent's number (default off)",
    )
    parser.add_argument("--out", default="/tmp/xydrc-error-model")
    args = parser.parse_args(argv)
    rows, truth, facts = build(args.residents, args.seed, args.guardian_id_rate)
    path = write(rows, truth, Path(args.out))
    print(f"  {facts['residents']:,} residents → {facts['records']:,} records → {path}")
    for key, value in facts.items():
        print(f"  {key}: {value}")
    return facts


if __name__ == "__main__":
    main()
