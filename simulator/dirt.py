"""Identity dirt: how a registration clerk really records a resident (shared by every member system).

A member system never stores the true `Person`; it stores what its front desk typed: a homophone picked from
the pinyin IME, a look-alike character, the two given-name characters swapped, a traditional-character name
from an old card, an old 15-digit ID, a mistyped check character, a swapped birth day and month, a stale phone
number, a differently written address. `recorded_identity` draws each defect from the caller's rng (so the
same seed gives the same dirt) and reports every defect it applied, for the answer key.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

from core.gb11643 import CHECK_CHARS
from simulator.events import Person

# Same pinyin *with tone* in each group, so a clerk typing the syllable may pick any of them.
HOMOPHONE_GROUPS: dict[str, str] = {
    "wei3": "伟玮炜苇纬",
    "li4": "丽莉俐利力立荔励",
    "jing4": "静靖婧敬竞",
    "jing1": "晶菁精京经",
    "hua2": "华骅铧",
    "jun1": "军君钧均",
    "ming2": "明铭鸣名茗",
    "hong2": "红宏鸿洪弘虹泓",
    "fang1": "芳方",
    "juan1": "娟鹃涓",
    "jie2": "杰洁捷婕",
    "qiang2": "强蔷",
    "lei3": "磊蕾垒",
    "yong3": "勇永涌咏泳",
    "tao1": "涛滔韬",
    "bin1": "斌彬滨宾",
    "chao1": "超钞",
    "peng2": "鹏朋彭蓬",
    "hui1": "辉晖徽挥",
    "ping2": "平萍坪苹",
    "fei1": "飞菲霏非",
    "xin1": "鑫欣新馨昕",
    "bo1": "波播玻",
    "yu3": "宇雨羽禹",
    "hao4": "浩皓昊灏",
    "kai3": "凯楷恺铠",
    "jian4": "健建剑键鉴",
    "jun4": "俊骏峻浚竣",
    "guo2": "国帼",
    "zhi4": "志智治致",
    "de2": "德得",
    "fu2": "福芙符扶",
    "cheng2": "成诚城程承澄",
    "gang1": "刚钢纲",
    "na4": "娜纳",
    "min3": "敏闽",
    "yan4": "艳燕雁彦",
    "xia2": "霞侠峡",
    "xiu4": "秀绣",
    "ying1": "英莺鹰樱瑛",
    "hui4": "慧惠蕙卉",
    "mei3": "美镁",
    "ling2": "玲铃灵凌伶龄",
    "gui4": "桂贵",
    "lan2": "兰蓝岚澜",
    "lin2": "琳林霖淋麟",
    "ying3": "颖影颍",
    "qian4": "倩茜",
    "ting2": "婷亭庭廷",
    "mei2": "梅玫枚眉",
    "feng4": "凤奉",
    "rong2": "荣蓉容融榕",
    "li3": "里理礼",
    "yi1": "伊依",
    "mai4": "麦迈",
    "xue3": "雪鳕",
}
PINYIN: dict[str, str] = {c: syllable for syllable, chars in HOMOPHONE_GROUPS.items() for c in chars}

# Look-alike characters a clerk misreads from a handwritten form or a worn ID card.
TYPOS: dict[str, str] = {
    "王": "玉主",
    "玉": "王",
    "未": "末",
    "末": "未",
    "己": "已",
    "已": "己",
    "日": "曰",
    "土": "士",
    "士": "土",
    "大": "太",
    "太": "大",
    "人": "入",
    "天": "夭",
    "田": "由",
    "由": "田",
    "甲": "申",
    "申": "甲",
    "李": "季",
    "季": "李",
    "张": "涨",
    "刘": "浏",
    "陈": "阵",
    "杨": "扬",
    "扬": "杨",
    "赵": "越",
    "郭": "廓",
    "胡": "湖",
    "徐": "涂",
    "吴": "昊",
    "白": "自",
    "金": "全",
    "米": "来",
    "于": "干千",
    "任": "仕",
    "魏": "巍",
    "伟": "传",
    "勇": "甬",
    "超": "起",
    "明": "朋",
    "平": "乎",
    "鹏": "朋",
    "华": "毕",
    "波": "坡",
    "宇": "字",
    "浩": "诰",
    "凯": "岂",
    "健": "键",
    "俊": "浚",
    "建": "廷",
    "国": "图",
    "福": "幅",
    "永": "水",
    "成": "戍",
    "芳": "劳",
    "娜": "哪",
    "娟": "捐",
    "霞": "暇",
    "秀": "委",
    "英": "荚",
    "慧": "彗",
    "巧": "功",
    "美": "姜",
    "玲": "铃",
    "桂": "柱",
    "雪": "雷",
    "琳": "淋",
    "颖": "颍",
    "洁": "诘",
    "倩": "债",
    "婷": "停",
    "晶": "品",
    "梅": "海",
    "凤": "风",
    "辉": "挥",
    "刚": "冈",
    "军": "车",
    "丽": "俪",
    "静": "睁",
    "红": "江",
    "兰": "三",
}

# Simplified -> traditional where the mapping is one-to-one in names (发/后/钟-like ambiguities left out).
TRADITIONAL: dict[str, str] = dict(
    zip(
        "张刘陈杨赵黄吴孙马韩冯邓蒋叶苏卢吕郑谢罗许邹贺顾龚钱汤陆欧阳纪齐阎乔丰"
        "伟强军杰涛辉鹏华飞凯帅国红刚宁静丽艳兰颖洁凤荣东龙云风鸿铭鸣钧骅韬滨宾晖纬玮炜苇诚钢纲贵岚澜"
        "灵龄铃垒咏颍侠峡绣莺鹰樱镁韦骏铠恺键剑鉴帼萨麦纳轩谊颂庆亚爱宝锋锦义伦卫岭贤涨毕传铧",
        "張劉陳楊趙黃吳孫馬韓馮鄧蔣葉蘇盧呂鄭謝羅許鄒賀顧龔錢湯陸歐陽紀齊閻喬豐"
        "偉強軍傑濤輝鵬華飛凱帥國紅剛寧靜麗艷蘭穎潔鳳榮東龍雲風鴻銘鳴鈞驊韜濱賓暉緯瑋煒葦誠鋼綱貴嵐瀾"
        "靈齡鈴壘詠潁俠峽繡鶯鷹櫻鎂韋駿鎧愷鍵劍鑒幗薩麥納軒誼頌慶亞愛寶鋒錦義倫衛嶺賢漲畢傳鏵",
        strict=True,
    )
)
SIMPLIFIED: dict[str, str] = {t: s for s, t in TRADITIONAL.items()}

COMPOUND_SURNAMES = frozenset(
    {
        "司马",
        "欧阳",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "慕容",
        "夏侯",
        "尉迟",
        "公孙",
        "令狐",
        "宇文",
        "长孙",
        "端木",
        "西门",
        "南宫",
        "司徒",
        "申屠",
        "轩辕",
        "呼延",
    }
)
MIDDLE_DOT = "·"
FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
_ADDRESS = re.compile(r"^(?P<province>河南省)?(?P<city>荥阳市)?(?P<place>.*?)(?P<number>\d+)号$")


@dataclass(frozen=True)
class IdentityDirt:
    """Per-record probabilities (0..1) of each identity defect; defaults are what a county HIS looks like."""

    missing_id_number: float = 0.05
    wrong_check_digit: float = 0.01
    legacy_15_digit: float = 0.01
    name_typo: float = 0.01
    homophone: float = 0.02
    swapped_chars: float = 0.005
    traditional_chars: float = 0.01
    day_month_swap: float = 0.005
    changed_phone: float = 0.05
    address_variant: float = 0.10

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"identity dirt rate {f.name}={value} is not within 0..1")
        if self.missing_id_number + self.legacy_15_digit + self.wrong_check_digit > 1.0:
            raise ValueError("ID number defects are exclusive: their rates must sum to at most 1")

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> IdentityDirt:
        """Rates from a config section; missing keys keep the defaults, keys of other settings are ignored."""
        section = section or {}
        return cls(**{f.name: float(section[f.name]) for f in fields(cls) if section.get(f.name) is not None})


@dataclass(frozen=True)
class RecordedIdentity:
    """A resident as one registration desk recorded them, with the defects that make it differ from the truth."""

    name: str
    sex: int
    birth_date: date | None
    id_number: str | None
    phone: str | None
    address: str | None
    defects: tuple[tuple[str, str], ...]


def split_name(name: str) -> tuple[str, str]:
    """(surname, given name); compound surnames stay whole, '·' names (minorities) have no split surname."""
    if MIDDLE_DOT in name:
        return "", name
    if len(name) > 2 and name[:2] in COMPOUND_SURNAMES:
        return name[:2], name[2:]
    return name[:1], name[1:]


def recorded_identity(rng: random.Random, person: Person, dirt: IdentityDirt) -> RecordedIdentity:
    """Draw the defects of one registration of `person`; each defect independently at its rate.

    The three ID-number defects are mutually exclusive (one uniform draw), so each occurs at exactly its rate.
    A defect that cannot apply to this person (no homophone in the table, a one-character given name, a
    birth day over 12, a 15-digit number for someone born after 1999) is simply not applied and not logged.
    """
    defects: list[tuple[str, str]] = []
    name = _dirty_name(rng, person.name, dirt, defects)
    id_number = _dirty_id_number(rng, person.id_number, dirt, defects)
    birth_date: date | None = person.birth_date
    if (
        rng.random() < dirt.day_month_swap
        and birth_date
        and birth_date.day <= 12
        and birth_date.day != birth_date.month
    ):
        swapped = date(birth_date.year, birth_date.day, birth_date.month)
        defects.append(("day_month_swap", f"{birth_date:%Y-%m-%d}->{swapped:%Y-%m-%d}"))
        birth_date = swapped
    phone: str | None = person.phone
    if rng.random() < dirt.changed_phone:
        new_phone = _other_mobile(rng, phone)
        defects.append(("changed_phone", f"{phone or ''}->{new_phone}"))
        phone = new_phone
    address: str | None = person.address
    if rng.random() < dirt.address_variant and address:
        variant, changes = _address_variant(rng, address)
        if variant != address:
            defects.append(("address_variant", "; ".join(changes)))
            address = variant
    return RecordedIdentity(name, person.sex, birth_date, id_number, phone, address, tuple(defects))


def _dirty_name(rng: random.Random, name: str, dirt: IdentityDirt, defects: list[tuple[str, str]]) -> str:
    surname, given = split_name(name)
    if rng.random() < dirt.homophone:
        spots = [i for i, c in enumerate(given) if c in PINYIN]
        if spots:
            i = rng.choice(spots)
            old = given[i]
            new = rng.choice([c for c in HOMOPHONE_GROUPS[PINYIN[old]] if c != old])
            given = given[:i] + new + given[i + 1 :]
            defects.append(("homophone", f"{old}->{new}"))
    if rng.random() < dirt.name_typo:
        # A compound surname is one unit: a clerk does not mistype half of it.
        editable = [(False, i) for i, c in enumerate(given) if c in TYPOS]
        if len(surname) == 1 and surname in TYPOS:
            editable.append((True, 0))
        if editable:
            in_surname, i = rng.choice(editable)
            old = surname if in_surname else given[i]
            new = rng.choice(TYPOS[old])
            if in_surname:
                surname = new
            else:
                given = given[:i] + new + given[i + 1 :]
            defects.append(("name_typo", f"{old}->{new}"))
    if rng.random() < dirt.swapped_chars and len(given) == 2 and given[0] != given[1] and MIDDLE_DOT not in given:
        defects.append(("swapped_chars", f"{given}->{given[::-1]}"))
        given = given[::-1]
    name = surname + given
    if rng.random() < dirt.traditional_chars:
        traditional = "".join(TRADITIONAL.get(c, c) for c in name)
        if traditional != name:
            defects.append(("traditional_chars", f"{name}->{traditional}"))
            name = traditional
    return name


def _dirty_id_number(
    rng: random.Random, true_id: str | None, dirt: IdentityDirt, defects: list[tuple[str, str]]
) -> str | None:
    if not true_id:
        return true_id
    u = rng.random()
    if u < dirt.missing_id_number:
        defects.append(("missing_id_number", "id_number blank"))
        return None
    u -= dirt.missing_id_number
    if u < dirt.legacy_15_digit:
        # 15-digit numbers (GB 11643-1989) were only issued to people born in the 1900s.
        if len(true_id) == 18 and true_id[6:8] == "19":
            legacy = true_id[:6] + true_id[8:17]
            defects.append(("legacy_15_digit", f"{true_id}->{legacy}"))
            return legacy
        return true_id
    u -= dirt.legacy_15_digit
    if u < dirt.wrong_check_digit and len(true_id) == 18:
        old = true_id[17].upper()
        new = rng.choice([c for c in CHECK_CHARS if c != old])
        defects.append(("wrong_check_digit", f"check {old}->{new}"))
        return true_id[:17] + new
    return true_id


def _other_mobile(rng: random.Random, phone: str | None) -> str:
    while True:
        candidate = "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))
        if candidate != phone:
            return candidate


def _address_variant(rng: random.Random, address: str) -> tuple[str, list[str]]:
    """The same place written differently: 1-3 of the ways clerks shorten or reformat 荥阳 addresses."""
    match = _ADDRESS.match(address)
    if not match:
        # Not the usual 荥阳 pattern: only the format-level variants are safe.
        if address.startswith("河南省"):
            return address[len("河南省") :], ["河南省->(none)"]
        return address.translate(FULL_WIDTH_DIGITS), ["full-width digits"]
    prefix = (match["province"] or "") + (match["city"] or "")
    place, number, suffix = match["place"], match["number"], "号"
    options = ["prefix", "number_style", "full_width"]
    if place.endswith("村"):
        options.append("drop_cun")
    if place.endswith(("村", "庄", "寨", "沟", "岗", "湾", "楼", "营", "店", "河", "坡")):
        options.append("group")
    if "街道" in place:
        options.append("banshichu")
    changes: list[str] = []
    chosen = set(rng.sample(options, min(len(options), rng.choice((1, 1, 2, 2, 3)))))
    for option in (o for o in options if o in chosen):  # fixed order: drop 村 before adding 组
        if option == "prefix" and prefix:
            new_prefix = rng.choice([p for p in ("", "荥阳市") if p != prefix])
            changes.append(f"{prefix}->{new_prefix or '(none)'}")
            prefix = new_prefix
        elif option == "number_style":
            suffix = rng.choice(("#", ""))
            changes.append(f"号->{suffix or '(none)'}")
        elif option == "drop_cun":
            changes.append(f"{place}->{place[:-1]}")
            place = place[:-1]
        elif option == "group":
            group = f"{rng.randrange(1, 13)}组"
            changes.append(f"+{group}")
            place += group
        elif option == "banshichu":
            changes.append("街道->办事处")
            place = place.replace("街道", "办事处", 1)
        elif option == "full_width":
            changes.append("full-width digits")
    variant = prefix + place + number + suffix
    return (variant.translate(FULL_WIDTH_DIGITS) if "full-width digits" in changes else variant), changes
