"""Masking of personal fields per role (config/access/roles.yaml `masking`), and the check that a masked ID number
cannot be restored from what is shown beside it (the maskers themselves are shared: core/privacy.py)."""

from __future__ import annotations

from typing import Any

from core.access import ApiRole
from core.privacy import AREA_DIGITS, mask_address, mask_id_number, mask_phone

MASKERS = {"id_number": mask_id_number, "phone": mask_phone, "address": mask_address}


def apply_masking(row: dict[str, Any], role: ApiRole) -> dict[str, Any]:
    """The row with each personal field clear, masked or removed (None) as the role's policy says."""
    out = dict(row)
    for field, level in role.masking.items():
        if field in out:
            out[field] = out[field] if level == "clear" else MASKERS[field](out[field]) if level == "masked" else None
    return out


def id_number_candidates(masked: str, shown: set[str]) -> int:
    """How many valid ID numbers fit a masked one, given which other fields are shown in clear.

    Assumes the worst: the area code is known (county residents), the birth date and sex are known when shown,
    and a shown check digit narrows the rest by its 11 values. The check digit itself adds no candidates."""
    if len(masked) != 18:
        return 10 ** masked.count("*")
    candidates = 1
    for position, char in enumerate(masked[:17]):
        if char != "*" or position < AREA_DIGITS:
            continue
        if position < 14:
            candidates *= 1 if "birth_date" in shown else 10
        elif position == 16:
            candidates *= 5 if "sex_code" in shown else 10
        else:
            candidates *= 10
    if masked[17] != "*" and candidates > 1:
        candidates = max(1, candidates // 11)
    return candidates
