"""Simulated residents look like the county's: valid, unique ID numbers whose sex and birth date agree."""

from __future__ import annotations

from datetime import date

from core.gb11643 import is_valid
from simulator.population import generate_residents

TOWNSHIPS = ["乔楼镇", "金寨回族乡"]


def test_residents_have_unique_valid_id_numbers_consistent_with_sex_and_birth():
    residents = generate_residents(1, 20_000, "410182", TOWNSHIPS, date(2026, 11, 1))
    assert len({r.id_number for r in residents}) == len(residents)
    assert all(is_valid(r.id_number) and r.id_number.startswith("410182") for r in residents)
    assert all(r.id_number[6:14] == f"{r.birth_date:%Y%m%d}" for r in residents)
    assert all(int(r.id_number[16]) % 2 == (1 if r.sex == 1 else 0) for r in residents)


def test_same_seed_same_residents_other_seed_other_residents():
    first = generate_residents(5, 500, "410182", TOWNSHIPS, date(2026, 11, 1))
    assert first == generate_residents(5, 500, "410182", TOWNSHIPS, date(2026, 11, 1))
    assert first != generate_residents(6, 500, "410182", TOWNSHIPS, date(2026, 11, 1))
