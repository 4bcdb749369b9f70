"""Masking of personal fields per role (config/access/roles.yaml `masking`), and the check that a masked ID number
cannot be restored from what is shown beside it.

A mainland ID number is area (6) + birth date (8) + sequence (3, odd for men) + check digit (1). Birth date
and sex are shown to clinicians, and the county's area code is public knowledge, so a mask that keeps the last
four characters (the common 4101**********1234 style) gives the whole number back. `masked` therefore keeps
the area code only: what remains unknown is the sequence number — hundreds of candidates even with the birth
date and sex in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Any

from core.access import ApiRole

AREA_DIGITS = 6


def mask_id_number(value: str | None) -> str | None:
    """Keep the area code (6 characters) of a full-length number; hide everything else."""
    if not value:
        return value
    keep = AREA_DIGITS if len(value) >= 15 else 0
    return value[:keep] + "*" * (len(value) - keep)


def mask_phone(value: str | None) -> str | None:
    """138****1234: enough to tell two numbers apart on the phone with the resident, not to call them."""
    if not value:
        return value
    return value[:3] + "****" + value[-4:] if len(value) >= 11 else "*" * len(value)


def mask_address(value: str | None) -> str | None:
    """Keep the administrative part up to the township (乡/镇/街道); hide village, street and house number."""
    if not value:
        return value
    match = re.match(r"^(.*?(?:街道|镇|乡))", value)
    return (match.group(1) if match else value[:6]) + "****"


def id_number_hash(id_number: str) -> str:
    """The keyed hash marts.dim_patient_lookup stores (HMAC-SHA256, key DRC_ID_LOOKUP_KEY): an ID-number search
    compares hashes, so the clear number never reaches SQL, logs or the audit trail."""
    key = os.environ.get("DRC_ID_LOOKUP_KEY")
    if not key:
        raise RuntimeError("DRC_ID_LOOKUP_KEY is not set: start the API through ./drc, which loads .env")
    return hmac.new(key.encode(), id_number.strip().upper().encode(), hashlib.sha256).hexdigest()


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
