"""GB 11643 citizen ID numbers: the ISO 7064 MOD 11-2 check character, shared by simulator and tests."""

from __future__ import annotations

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"


def check_char(first17: str) -> str:
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"need 17 digits, got {first17!r}")
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def is_valid(id_number: str | None) -> bool:
    """True for an 18-character number whose check character is right (the date is not checked here)."""
    if not id_number or len(id_number) != 18 or not id_number[:17].isdigit():
        return False
    return check_char(id_number[:17]) == id_number[17].upper()
