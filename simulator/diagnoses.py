"""The long tail of diagnoses: every codable WHO ICD-10 code, written as 国家临床版2.0 codes.

A real county does not diagnose from a list of 29 codes: the lead hospital sends thousands of distinct codes a
year, most of them 国临版 extension codes (``J18.900x001``), while a village clinic uses a few dozen. The common
diagnoses of `clinical.COMMON_DIAGNOSES` stay the head of the distribution; this module adds the tail: the WHO
classification's leaves (subcategories, and categories without subcategories) ranked once per seed, drawn with
Zipf weights, and limited per institution type to the codes such a place uses (its vocabulary).
"""

from __future__ import annotations

import csv
import random
from bisect import bisect_left
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

from core.settings import CONFIG_DIR

WHO_ICD10 = CONFIG_DIR / "terminology" / "code_systems" / "ICD10_WHO.csv"
# Chapters a visit's primary diagnosis is not drawn from: pregnancy and perinatal (drawn by the maternal and
# child services), external causes (a second code beside an injury), codes for special purposes.
EXCLUDED_CHAPTERS = frozenset({"XV", "XVI", "XX", "XXII"})
NAME_LENGTH = 64  # the diagnosis-name columns of the member systems (varchar(64))
# Categories of one sex only (female genital organs and their cancers, male genital organs).
FEMALE_ONLY = (("C51", "C58"), ("D25", "D28"), ("N70", "N98"))
MALE_ONLY = (("C60", "C63"), ("N40", "N51"))


@dataclass(frozen=True, slots=True)
class TailDiagnosis:
    code: str  # 国临版2.0: 'J18.900', 'I10.x00', 'J18.900x001'
    name: str  # the Chinese title where the terminology has one, else WHO's English title (cut to 64)
    sex: int  # 0 both, 1 male only, 2 female only


def _sex_of(category: str) -> int:
    for sex, ranges in ((2, FEMALE_ONLY), (1, MALE_ONLY)):
        if any(low <= category <= high for low, high in ranges):
            return sex
    return 0


def clinical_code(who_code: str) -> str:
    """The 国临版 code of a WHO leaf: subcategory ``J18.9`` -> ``J18.900``; category ``I10`` -> ``I10.x00``."""
    return f"{who_code}00" if "." in who_code else f"{who_code}.x00"


@cache
def tail_catalog(seed: int, extension_share: float) -> tuple[TailDiagnosis, ...]:
    """Every codable WHO leaf outside the excluded chapters as a 国临版 code, plus extension codes
    (``x001``…``x003``) for a share of them, in a fixed random order per seed: the order is the popularity rank."""
    with WHO_ICD10.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # 国临版 extends 4-character codes: WHO's few 5-character ones (B18.00) are left to their 4-character parent
    subcategories = {
        r["code"]: r["parent"] for r in rows if r["level"] == "subcategory" and len(r["code"].partition(".")[2]) == 1
    }
    parents = set(subcategories.values())
    leaves = [
        r
        for r in rows
        if r["chapter"] not in EXCLUDED_CHAPTERS
        and (r["code"] in subcategories or (r["level"] == "category" and r["code"] not in parents))
    ]
    rng = random.Random(f"{seed}:diagnosis-tail")
    catalog: list[TailDiagnosis] = []
    for row in leaves:
        code, sex = clinical_code(row["code"]), _sex_of(row["category"] or row["code"])
        name = row["display"][:NAME_LENGTH]
        catalog.append(TailDiagnosis(code, name, sex))
        if rng.random() < extension_share:
            catalog.extend(TailDiagnosis(f"{code}x{n:03d}", name, sex) for n in range(1, rng.randint(1, 3) + 1))
    rng.shuffle(catalog)
    return tuple(catalog)


class TailSampler:
    """Draws tail diagnoses for one institution type: the first ``vocabulary`` codes of the catalog's rank
    order, with weight 1 / (rank + 1) ** exponent."""

    def __init__(self, catalog: tuple[TailDiagnosis, ...], vocabulary: int, exponent: float) -> None:
        self.codes = catalog[:vocabulary]
        self.cum_weights = list(accumulate(1.0 / (rank + 1) ** exponent for rank in range(len(self.codes))))

    def draw(self, rng: random.Random, sex: int) -> TailDiagnosis | None:
        """One diagnosis, or None when the drawn code does not fit the patient's sex (the caller keeps its
        common diagnosis)."""
        chosen = self.codes[bisect_left(self.cum_weights, rng.random() * self.cum_weights[-1])]
        return chosen if chosen.sex in (0, sex) else None


def tail_samplers(seed: int, config: dict) -> dict[str, tuple[float, TailSampler]]:
    """Per institution type: (share of visits whose diagnosis comes from the tail, its sampler), from the
    simulator config's ``activity.diagnosis_tail``."""
    catalog = tail_catalog(seed, float(config.get("extension_share", 0.3)))
    exponent = float(config.get("zipf_exponent", 1.0))
    return {
        org_type: (float(spec["share"]), TailSampler(catalog, int(spec["vocabulary"]), exponent))
        for org_type, spec in config.get("by_org_type", {}).items()
    }
