"""The county's institution register (config/organizations.csv), read once for every layer."""

from __future__ import annotations

import csv
from functools import cache

from core.settings import CONFIG_DIR

ORGANIZATIONS_FILE = CONFIG_DIR / "organizations.csv"


@cache
def organizations() -> dict[str, dict[str, str]]:
    """org_code -> the register's row (org_name, org_level, org_type, township, parent_org_code, open_beds)."""
    with ORGANIZATIONS_FILE.open(encoding="utf-8") as f:
        return {row["org_code"]: row for row in csv.DictReader(f)}
