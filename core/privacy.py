"""Personal data in the platform's own words: the maskers every consumer shares, the keyed hash that names an ID
number without showing it, and the redaction of free text (errors, rejection reasons, logs) before it is stored
or printed.

A mainland ID number is area (6) + birth date (8) + sequence (3, odd for men) + check digit (1). Birth date
and sex are shown to clinicians, and the county's area code is public knowledge, so a mask that keeps the last
four characters (the common 4101**********1234 style) gives the whole number back. A masked number therefore
keeps the area code only: what remains unknown is the sequence number — hundreds of candidates even with the
birth date and sex in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from core.settings import PROJECT_ROOT

AREA_DIGITS = 6
HASH_SHOWN = 12  # hex characters of the keyed hash a message shows: enough to find the row, not to reverse it

_DAY = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
# GB 11643 shapes: 18 characters (century 18/19/20, check digit 0-9 or X) and the legacy 15 digits, standing alone
_ALONE_BEFORE, _ALONE_AFTER, _AREA = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])", r"[1-9]\d{5}"
_REST_18 = rf"(?:18|19|20)\d{{2}}{_DAY}\d{{3}}[0-9Xx]"
_REST_15 = rf"\d{{2}}{_DAY}\d{{3}}"
ID_NUMBER = re.compile(rf"{_ALONE_BEFORE}{_AREA}(?:{_REST_18}|{_REST_15}){_ALONE_AFTER}")
MOBILE = re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)")
# The same masking as regular expressions a SQL engine applies (Java syntax, Spark's regexp_replace): the ID
# number's area code and the mobile number's first 3 and last 4 digits stay, as mask_id_number and mask_phone keep.
MASKS_FOR_SQL = [
    (rf"{_ALONE_BEFORE}({_AREA}){_REST_18}{_ALONE_AFTER}", "$1************"),
    (rf"{_ALONE_BEFORE}({_AREA}){_REST_15}{_ALONE_AFTER}", "$1*********"),
    (r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)", "$1****$2"),
]
MASKING_MACRO = PROJECT_ROOT / "dbt" / "macros" / "privacy.sql"  # render_masking_macro(), by `./drc generate`


def render_masking_macro() -> str:
    """The dbt macro that applies MASKS_FOR_SQL in PostgreSQL (same patterns; groups written \\1, not $1)."""
    text = "{{ text }}"
    for pattern, replacement in MASKS_FOR_SQL:
        if any(mark in pattern for mark in ("{{", "{%", "{#", "'")):
            raise ValueError(f"a masking pattern cannot be written into a dbt macro as it is: {pattern}")
        groups = re.sub(r"[$](\d)", r"\\\1", replacement)
        text = f"regexp_replace({text},\n        '{pattern}', '{groups}', 'g')"
    return (
        "{#- GENERATED from core/privacy.py (MASKS_FOR_SQL) by `./drc generate`: edit the masks there, not here.\n"
        "    Free text with ID numbers (18 or 15 characters, GB 11643) and mobile numbers masked as the platform\n"
        "    masks them for display. For values that may hold them (a failing value, a source business key). -#}\n"
        "{% macro mask_personal_text(text) -%}\n"
        f"    {text}\n"
        "{%- endmacro %}\n"
    )


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
        raise RuntimeError("DRC_ID_LOOKUP_KEY is not set: run through ./drc, which loads .env")
    return hmac.new(key.encode(), id_number.strip().upper().encode(), hashlib.sha256).hexdigest()


def _named_id_number(match: re.Match) -> str:
    # The same hash the lookup table stores, so a steward with access finds the resident; without the key (a
    # process not started by ./drc) the masked number, never the clear one.
    try:
        return f"[身份证号 hmac:{id_number_hash(match.group())[:HASH_SHOWN]}]"
    except RuntimeError:
        return f"[身份证号 {mask_id_number(match.group())}]"


def redact_personal(text: str | None) -> str | None:
    """The text with every ID number replaced by its keyed hash and every mobile number masked: for messages the
    platform stores or prints (errors, rejection reasons, logs), which engineers read, not clinicians."""
    if not text:
        return text
    text = ID_NUMBER.sub(_named_id_number, text)
    return MOBILE.sub(lambda m: mask_phone(m.group()), text)
