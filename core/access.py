"""Roles and masking policy (config/access/roles.yaml): who may open which dashboard, call which API section,
see which rows and which personal fields.

Superset provisioning creates the roles, users and row-level security from it; `./drc superset-users` lists
the logins; the lookup API (api/) issues tokens only to its users and enforces its sections, patient scope and
masking. A user's password is derived from the secret DRC_SUPERSET_ADMIN_PASSWORD (in the ignored .env)
and the login, so no password is stored in git or in a second secrets file, and each machine has its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import yaml

from core.organizations import organizations
from core.settings import CONFIG_DIR

ROLES_FILE = CONFIG_DIR / "access" / "roles.yaml"
ROW_POLICIES = ("all", "own_org")
PATIENT_SCOPES = ("seen_or_referred", "township", "all", "none")
API_SECTIONS = ("demographics", "identifiers", "clinical", "health_records", "empi", "audit")
MASKED_FIELDS = ("id_number", "phone", "address")
MASKING_LEVELS = ("clear", "masked", "hidden")


@dataclass(frozen=True)
class Role:
    name: str
    zh: str
    dashboards: tuple[str, ...] | None  # None = all dashboards
    rows: str
    sql_lab: bool = False  # may query the warehouse in SQL Lab (as drc_bi: de-identified columns only)


@dataclass(frozen=True)
class User:
    login: str
    name: str
    role: str
    org_code: str | None = None  # the institution an own_org user is limited to


def load_roles() -> tuple[dict[str, Role], list[User]]:
    spec = yaml.safe_load(ROLES_FILE.read_text(encoding="utf-8"))["roles"]
    roles, users = {}, []
    orgs = organizations()
    for name, r in spec.items():
        if r.get("rows") not in ROW_POLICIES:
            raise ValueError(f"{ROLES_FILE}: role {name}: rows must be one of {ROW_POLICIES}")
        dashboards = None if r.get("dashboards") == "all" else tuple(r.get("dashboards") or ())
        roles[name] = Role(name, r["zh"], dashboards, r["rows"], bool(r.get("sql_lab", False)))
        for u in r.get("users") or []:
            if r["rows"] == "own_org" and not u.get("org_code"):
                raise ValueError(f"{ROLES_FILE}: user {u['login']} of own_org role {name} needs an org_code")
            users.append(User(u["login"], u["name"], name, u.get("org_code")))
        types = set(r.get("users_per_org_type") or ())
        unknown = types - {o["org_type"] for o in orgs.values()}
        if unknown:
            raise ValueError(
                f"{ROLES_FILE}: role {name}: no institution of type {', '.join(sorted(unknown))} "
                "in config/organizations.csv"
            )
        users += [
            User(f"org_{code}", o["org_name"], name, code) for code, o in sorted(orgs.items()) if o["org_type"] in types
        ]
    return roles, users


def password(login: str) -> str:
    """The user's password: derived from the machine's Superset admin secret, stable across runs."""
    secret = os.environ.get("DRC_SUPERSET_ADMIN_PASSWORD")
    if not secret:
        raise RuntimeError("DRC_SUPERSET_ADMIN_PASSWORD is not set (run through ./drc, which exports .env)")
    return hmac.new(secret.encode(), f"superset user {login}".encode(), hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class ApiRole:
    name: str
    zh: str
    patients: str  # one of PATIENT_SCOPES
    break_glass: bool  # others' records with a stated reason (logged and flagged)
    sections: frozenset[str]
    masking: dict[str, str]  # field -> clear | masked | hidden
    id_searches_per_hour: int | None = None  # searches by ID number per user and hour; None: no cap


@dataclass(frozen=True)
class ApiUser:
    login: str
    name: str
    role: str
    org_code: str | None = None
    township: str | None = None  # the institution's township (public-health scope)


def _api_role(name: str, r: dict) -> ApiRole:
    where = f"{ROLES_FILE}: api role {name}"
    if r.get("patients") not in PATIENT_SCOPES:
        raise ValueError(f"{where}: patients must be one of {PATIENT_SCOPES}")
    sections = frozenset(r.get("sections") or ())
    if not sections or sections - set(API_SECTIONS):
        raise ValueError(f"{where}: sections must be some of {API_SECTIONS}")
    masking = dict(r.get("masking") or {})
    if set(masking) != set(MASKED_FIELDS) or set(masking.values()) - set(MASKING_LEVELS):
        raise ValueError(f"{where}: masking must give each of {MASKED_FIELDS} one of {MASKING_LEVELS}")
    cap = r.get("id_searches_per_hour")
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ValueError(f"{where}: id_searches_per_hour must be a positive whole number")
    return ApiRole(name, r["zh"], r["patients"], bool(r.get("break_glass")), sections, masking, cap)


def load_api_roles() -> tuple[dict[str, ApiRole], dict[str, ApiUser]]:
    """The API's roles and its users by login: fixed users and one per institution of the listed types."""
    spec = yaml.safe_load(ROLES_FILE.read_text(encoding="utf-8"))["api_roles"]
    orgs = organizations()
    roles, users = {}, {}
    for name, r in spec.items():
        roles[name] = _api_role(name, r)
        for u in r.get("users") or []:
            org = orgs.get(u.get("org_code") or "")
            users[u["login"]] = ApiUser(u["login"], u["name"], name, u.get("org_code"), org and org["township"])
        types = set(r.get("users_per_org_type") or ())
        if types - {o["org_type"] for o in orgs.values()}:
            raise ValueError(f"{ROLES_FILE}: api role {name}: unknown institution type in users_per_org_type")
        for code, o in sorted(orgs.items()):
            if o["org_type"] in types:
                login = f"{r.get('login_prefix', name + '_')}{code}"
                users[login] = ApiUser(login, f"{o['org_name']}·{r['zh']}", name, code, o["township"])
    return roles, users
