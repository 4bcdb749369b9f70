"""Masking per role: a masked ID number cannot be restored from the birth date, sex or anything else shown."""

from __future__ import annotations

import pytest

from api.privacy import apply_masking, id_number_candidates
from core.access import MASKED_FIELDS, load_api_roles
from core.gb11643 import check_char
from core.privacy import mask_address, mask_id_number, mask_phone

ROLES, USERS = load_api_roles()
# What every patient-facing response shows in clear beside the masked fields (api/schemas.py Demographics).
SHOWN_BESIDE = {"birth_date", "sex_code", "name"}


def _valid_id(body17: str) -> str:
    return body17 + check_char(body17)


@pytest.mark.parametrize(
    "role", [r for r in ROLES.values() if r.masking["id_number"] == "masked"], ids=lambda r: r.name
)
def test_a_masked_id_number_leaves_hundreds_of_candidates_even_with_birth_date_and_sex_shown(role):
    id_number = _valid_id("41018219800101123")
    masked = apply_masking({"id_number": id_number}, role)["id_number"]
    assert masked[6:14] == "*" * 8, "the birth-date digits must never be kept"
    shown = SHOWN_BESIDE | {f for f in MASKED_FIELDS if role.masking[f] == "clear"}
    assert id_number_candidates(masked, shown) >= 100


def test_the_common_last_four_mask_would_give_the_number_back():
    """Why `masked` keeps only the area code: 4101**********1234 plus the birth date shown is the number."""
    leaky = "410182" + "*" * 8 + "1234"
    assert id_number_candidates(leaky, {"birth_date", "sex_code"}) == 1
    assert id_number_candidates(mask_id_number(_valid_id("41018219800101123")), {"birth_date", "sex_code"}) == 500


def test_every_role_says_how_each_personal_field_is_shown_and_users_are_known():
    for role in ROLES.values():
        assert set(role.masking) == set(MASKED_FIELDS)
    assert {u.role for u in USERS.values()} == set(ROLES)
    assert all(
        u.org_code and u.township
        for u in USERS.values()
        if ROLES[u.role].patients != "all" and ROLES[u.role].patients != "none"
    )


def test_masks_keep_only_what_identifies_nobody():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_address("河南省荥阳市广武镇王村3组12号") == "河南省荥阳市广武镇****"
    assert mask_id_number("410182800101123") == "410182*********"
    assert apply_masking({"phone": "13812345678", "address": "x"}, ROLES["auditor"]) == {"phone": None, "address": None}
