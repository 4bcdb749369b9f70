"""Identity dirt: deterministic, at the configured rates, and every defect is the kind a real desk produces."""

from __future__ import annotations

import math
import random
import re
from dataclasses import fields, replace
from datetime import date

import pytest

from core.gb11643 import check_char, is_valid
from simulator.dirt import (
    COMPOUND_SURNAMES,
    HOMOPHONE_GROUPS,
    PINYIN,
    SIMPLIFIED,
    TRADITIONAL,
    TYPOS,
    IdentityDirt,
    RecordedIdentity,
    recorded_identity,
    split_name,
)
from simulator.events import Person
from simulator.world import World

ZERO = IdentityDirt(**{f.name: 0.0 for f in fields(IdentityDirt)})


def _person(name: str = "张伟华", birth: date = date(1975, 3, 8), resident_id: int = 1) -> Person:
    first17 = f"410182{birth:%Y%m%d}123"
    return Person(
        resident_id=resident_id,
        household_id=1,
        name=name,
        sex=1,
        birth_date=birth,
        ethnicity="汉族",
        id_number=first17 + check_char(first17),
        phone="13812345678",
        insurance_no="YB4101820000000001",
        township="乔楼镇",
        village="王庄村",
        address="河南省荥阳市乔楼镇王庄村12号",
    )


def _only(**rates: float) -> IdentityDirt:
    return replace(ZERO, **rates)


def _names(record: RecordedIdentity) -> list[str]:
    return [name for name, _ in record.defects]


def test_from_config_keeps_defaults_and_ignores_other_keys() -> None:
    dirt = IdentityDirt.from_config({"homophone": 0.2, "re_registration": 0.01})
    assert dirt.homophone == 0.2
    assert dirt.missing_id_number == IdentityDirt().missing_id_number
    assert IdentityDirt.from_config(None) == IdentityDirt()
    with pytest.raises(ValueError):
        IdentityDirt(homophone=1.5)


def test_zero_rates_record_the_person_exactly(small_world: World) -> None:
    rng = random.Random(1)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, ZERO)
        assert record == RecordedIdentity(
            person.name, person.sex, person.birth_date, person.id_number, person.phone, person.address, ()
        )


def test_same_seed_same_dirt(small_world: World) -> None:
    dirt = IdentityDirt(**{f.name: 0.3 for f in fields(IdentityDirt)})
    people = list(small_world.people.values())
    first = [recorded_identity(random.Random(7), p, dirt) for p in people]
    again = [recorded_identity(random.Random(7), p, dirt) for p in people]
    assert first == again
    assert first != [recorded_identity(random.Random(8), p, dirt) for p in people]


def test_observed_rates_match_configured_rates() -> None:
    """A person to whom every defect applies: each defect's frequency is binomial at its rate (±4σ)."""
    dirt = IdentityDirt()
    person, rng, n = _person(), random.Random(2026), 20_000
    counts = dict.fromkeys((f.name for f in fields(IdentityDirt)), 0)
    for _ in range(n):
        for name in set(_names(recorded_identity(rng, person, dirt))):
            counts[name] += 1
    for name, count in counts.items():
        p = getattr(dirt, name)
        assert abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (name, count, n * p)


def test_wrong_check_digit_never_validates(small_world: World) -> None:
    rng = random.Random(3)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(wrong_check_digit=1.0))
        assert _names(record) == ["wrong_check_digit"]
        assert record.id_number is not None and not is_valid(record.id_number)
        assert record.id_number[:17] == person.id_number[:17]
        assert record.defects[0][1] == f"check {person.id_number[17]}->{record.id_number[17]}"


def test_legacy_15_digit_converts_back(small_world: World) -> None:
    rng = random.Random(4)
    seen = 0
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(legacy_15_digit=1.0))
        if person.birth_date.year >= 2000:
            assert record.id_number == person.id_number and record.defects == ()
            continue
        seen += 1
        assert _names(record) == ["legacy_15_digit"]
        assert record.id_number is not None and len(record.id_number) == 15 and record.id_number.isdigit()
        assert record.id_number[:6] + "19" + record.id_number[6:] == person.id_number[:17]
    assert seen > 100


def test_missing_id_number_is_none() -> None:
    record = recorded_identity(random.Random(5), _person(), _only(missing_id_number=1.0))
    assert record.id_number is None and _names(record) == ["missing_id_number"]


def test_homophone_tables_are_consistent() -> None:
    chars = "".join(HOMOPHONE_GROUPS.values())
    assert len(chars) == len(set(chars)) >= 150, "a character has one pinyin"
    assert all(len(group) >= 2 for group in HOMOPHONE_GROUPS.values())
    assert all(source not in targets for source, targets in TYPOS.items())
    assert len(set(TRADITIONAL.values())) == len(TRADITIONAL) >= 100, "traditional mapping reverses"
    assert all(s != t for s, t in TRADITIONAL.items())


def test_homophones_keep_pinyin_and_stay_in_the_given_name(small_world: World) -> None:
    rng = random.Random(6)
    applied = 0
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(homophone=1.0))
        surname, given = split_name(person.name)
        if not any(c in PINYIN for c in given):
            assert record.name == person.name and record.defects == ()
            continue
        applied += 1
        ((name, detail),) = record.defects
        old, new = detail.split("->")
        assert name == "homophone" and old != new and PINYIN[old] == PINYIN[new]
        assert record.name.startswith(surname) and len(record.name) == len(person.name)
        diff = [(a, b) for a, b in zip(person.name, record.name, strict=True) if a != b]
        assert diff == [(old, new)]
    assert applied > 300


def test_name_typos_are_look_alikes(small_world: World) -> None:
    rng = random.Random(9)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(name_typo=1.0))
        for _, detail in record.defects:
            old, new = detail.split("->")
            assert new in TYPOS[old]
            diff = [(a, b) for a, b in zip(person.name, record.name, strict=True) if a != b]
            assert diff == [(old, new)]


def test_swapped_chars_only_for_two_char_given_names(small_world: World) -> None:
    rng = random.Random(10)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(swapped_chars=1.0))
        surname, given = split_name(person.name)
        if len(given) == 2 and given[0] != given[1]:
            assert record.name == surname + given[::-1] and _names(record) == ["swapped_chars"]
        else:
            assert record.name == person.name and record.defects == ()


def test_traditional_names_map_back(small_world: World) -> None:
    rng = random.Random(11)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(traditional_chars=1.0))
        assert "".join(SIMPLIFIED.get(c, c) for c in record.name) == person.name
        assert (record.name != person.name) == (_names(record) == ["traditional_chars"])
    assert recorded_identity(rng, _person("欧阳丽华"), _only(traditional_chars=1.0)).name == "歐陽麗華"


@pytest.mark.parametrize("name", ["欧阳丽华", "司马伟", "上官静红", "诸葛军"])
def test_compound_surnames_are_never_split(name: str) -> None:
    surname = split_name(name)[0]
    assert surname == name[:2] and surname in COMPOUND_SURNAMES
    everything = IdentityDirt(homophone=1.0, name_typo=1.0, swapped_chars=1.0, traditional_chars=0.5)
    rng = random.Random(12)
    for _ in range(200):
        record = recorded_identity(rng, _person(name), everything)
        assert "".join(SIMPLIFIED.get(c, c) for c in record.name[:2]) == surname
        assert len(record.name) == len(name)


def test_minority_names_keep_the_middle_dot() -> None:
    name = "阿卜杜拉·买买提"
    assert split_name(name) == ("", name)
    rng = random.Random(13)
    for _ in range(200):
        record = recorded_identity(rng, _person(name), IdentityDirt(homophone=1.0, name_typo=1.0, swapped_chars=1.0))
        assert record.name.index("·") == name.index("·") and len(record.name) == len(name)
        assert "swapped_chars" not in _names(record)


def test_day_month_swap_only_when_ambiguous() -> None:
    dirt = _only(day_month_swap=1.0)
    record = recorded_identity(random.Random(14), _person(birth=date(1975, 3, 8)), dirt)
    assert record.birth_date == date(1975, 8, 3) and record.defects == (("day_month_swap", "1975-03-08->1975-08-03"),)
    for birth in (date(1975, 3, 13), date(1975, 4, 4), date(1975, 12, 31)):
        record = recorded_identity(random.Random(14), _person(birth=birth), dirt)
        assert record.birth_date == birth and record.defects == ()


def test_changed_phone_is_another_mobile() -> None:
    rng = random.Random(15)
    for _ in range(500):
        record = recorded_identity(rng, _person(), _only(changed_phone=1.0))
        assert record.phone is not None and re.fullmatch(r"1[3578]\d{9}", record.phone)
        assert record.phone != "13812345678" and _names(record) == ["changed_phone"]


def _canonical_address(address: str) -> str:
    text = address.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    text = re.sub(r"^(河南省)?(荥阳市)?", "", text)
    text = re.sub(r"\d+组", "", text).replace("办事处", "街道").replace("村", "")
    return text.rstrip("号#")


def test_address_variants_name_the_same_place(small_world: World) -> None:
    rng = random.Random(16)
    for person in small_world.people.values():
        record = recorded_identity(rng, person, _only(address_variant=1.0))
        assert record.address != person.address and _names(record) == ["address_variant"]
        assert _canonical_address(record.address or "") == _canonical_address(person.address)
