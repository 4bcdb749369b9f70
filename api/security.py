"""Tokens and the caller: who is asking, in which role, for which institution; every request's audit row.

Tokens are issued only to the API users of config/access/roles.yaml (`./drc api-token --user <login>`), carry
role and institution, expire within MAX_TOKEN_HOURS, name this API as audience, and have a token id that is
registered in ``audit.api_token`` and can be revoked there (`./drc api-token --revoke <id>`). They are signed
with the API's own key (DRC_API_SIGNING_KEY; Airflow has its own).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated

import jwt
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.audit import AuditEntry
from core.access import ApiRole, ApiUser, load_api_roles
from core.db import api_engine, warehouse_engine
from core.settings import get_settings

ISSUER = "xydrc"
AUDIENCE = "xydrc-clinical-api"
ALGORITHM = "HS256"
MAX_TOKEN_HOURS = 12
REQUIRED_CLAIMS = ["exp", "iat", "aud", "iss", "sub", "jti", "role"]
REVOKED_SQL = sa.text("SELECT revoked_at IS NOT NULL FROM audit.api_token WHERE token_id = :id")
REVOCATION_RECHECK_SECONDS = 2.0  # a revoked token stops working within this long, in every worker
_token_checked: dict[str, float] = {}
bearer = HTTPBearer(auto_error=False, description="./drc api-token --user <login> 签发的访问令牌")


class ApiError(HTTPException):
    """A refusal users can act on: the reason in Chinese and English."""

    def __init__(self, status_code: int, zh: str, en: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail=f"{zh} / {en}", headers=headers)


@cache
def api_roles() -> tuple[dict[str, ApiRole], dict[str, ApiUser]]:
    return load_api_roles()


@dataclass(frozen=True)
class Principal:
    user: ApiUser
    role: ApiRole
    token_id: str

    @property
    def login(self) -> str:
        return self.user.login


def issue_token(login: str, hours: float = 8, issued_by: str = "cli") -> tuple[str, str]:
    """(token, token id) for a known API user; registered so it can be revoked."""
    _, users = api_roles()
    user = users.get(login)
    if user is None:
        raise ValueError(
            f"no API user '{login}' in config/access/roles.yaml (api_roles); list them with ./drc api-token --list"
        )
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise ValueError(f"a token lives at most {MAX_TOKEN_HOURS} hours (asked for {hours})")
    now = datetime.now(UTC).replace(microsecond=0)
    token_id = uuid.uuid4().hex
    expires = now + timedelta(hours=hours)
    claims = {
        "sub": user.login,
        "name": user.name,
        "role": user.role,
        "org": user.org_code,
        "township": user.township,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": expires,
        "jti": token_id,
    }
    with warehouse_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO audit.api_token (token_id, login, role, org_code, issued_at, expires_at, issued_by) "
                "VALUES (:id, :login, :role, :org, :iat, :exp, :by)"
            ),
            {
                "id": token_id,
                "login": user.login,
                "role": user.role,
                "org": user.org_code,
                "iat": now,
                "exp": expires,
                "by": issued_by,
            },
        )
    return jwt.encode(claims, get_settings().api_signing_key, algorithm=ALGORITHM), token_id


def revoke_token(token_id: str, revoked_by: str, reason: str) -> bool:
    with warehouse_engine().begin() as conn:
        return (
            conn.execute(
                sa.text(
                    "UPDATE audit.api_token SET revoked_at = now(), revoked_by = :by, revoke_reason = :reason "
                    "WHERE token_id = :id AND revoked_at IS NULL"
                ),
                {"id": token_id, "by": revoked_by, "reason": reason},
            ).rowcount
            == 1
        )


def _unauthorized(zh: str, en: str) -> ApiError:
    return ApiError(status.HTTP_401_UNAUTHORIZED, zh, en, headers={"WWW-Authenticate": "Bearer"})


def db_connection() -> Iterator[sa.Connection]:
    """One connection per request: the token check, every read and the audit row share it (no request ever
    waits for a second connection from the pool while holding one)."""
    with api_engine().connect() as conn:
        yield conn


Db = Annotated[sa.Connection, Depends(db_connection)]


def _refuse_login(conn: sa.Connection, request: Request, subject: str, reason: str) -> None:
    AuditEntry(
        subject=subject,
        method=request.method,
        path=request.url.path,
        action="authenticate",
        client=request.client.host if request.client else None,
        detail=reason,
    ).write(conn, "unauthenticated", 401)


def current_principal(
    request: Request, conn: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, from a valid, unexpired, unrevoked token of a known user; 401 with what to do otherwise."""
    if credentials is None:
        _refuse_login(conn, request, "(none)", "no token")
        raise _unauthorized(
            "需要访问令牌（Authorization: Bearer <token>），请向平台管理员申请",
            "a bearer token is required; ask the platform admin (./drc api-token --user <login>)",
        )
    try:
        claims = jwt.decode(
            credentials.credentials,
            get_settings().api_signing_key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        _refuse_login(conn, request, "(expired)", "expired token")
        raise _unauthorized("访问令牌已过期，请重新申请", "the token has expired; ask for a new one") from exc
    except jwt.PyJWTError as exc:
        _refuse_login(conn, request, "(invalid)", f"invalid token: {type(exc).__name__}")
        raise _unauthorized("访问令牌无效", "the token is invalid (forged, malformed or for another service)") from exc
    if claims["exp"] - claims["iat"] > MAX_TOKEN_HOURS * 3600:  # a key holder cannot mint a longer-lived one
        _refuse_login(conn, request, str(claims["sub"]), "token lifetime above the limit")
        raise _unauthorized(
            f"访问令牌有效期超过 {MAX_TOKEN_HOURS} 小时，不予接受，请重新申请",
            f"the token lives longer than {MAX_TOKEN_HOURS} h; ask for a new one",
        )
    roles, users = api_roles()
    user = users.get(claims["sub"])
    if user is None or user.role != claims["role"] or user.role not in roles:
        _refuse_login(conn, request, str(claims["sub"]), "unknown user or role")
        raise _unauthorized("令牌对应的用户或角色已不存在", "the token's user or role no longer exists")
    if time.monotonic() - _token_checked.get(claims["jti"], -1e9) > REVOCATION_RECHECK_SECONDS:
        revoked = conn.execute(REVOKED_SQL, {"id": claims["jti"]}).scalar()
        if revoked is False:
            if len(_token_checked) > 10_000:
                _token_checked.clear()
            _token_checked[claims["jti"]] = time.monotonic()
        else:
            _token_checked.pop(claims["jti"], None)
    else:
        revoked = False
    if revoked is None or revoked:
        _refuse_login(conn, request, user.login, "revoked token" if revoked else "token not issued here")
        raise _unauthorized("访问令牌已被吊销", "the token has been revoked")
    return Principal(user, roles[user.role], claims["jti"])


def audited(
    request: Request, conn: Db, principal: Annotated[Principal, Depends(current_principal)]
) -> Iterator[AuditEntry]:
    """The request's audit row: written whatever the outcome, after the route has said what it served."""
    route = request.scope.get("route")
    entry = AuditEntry(
        subject=principal.login,
        role=principal.user.role,
        org_code=principal.user.org_code,
        token_id=principal.token_id,
        method=request.method,
        path=request.url.path,
        action=getattr(route, "name", request.url.path),
        client=request.client.host if request.client else None,
    )
    try:
        yield entry
    except HTTPException as exc:
        result = {403: "refused", 429: "refused", 404: "not_found"}.get(exc.status_code, "rejected")
        entry.detail = entry.detail or str(exc.detail)
        entry.write(conn, result, exc.status_code)
        raise
    except RequestValidationError:
        entry.write(conn, "invalid", 422)
        raise
    except Exception:
        entry.write(conn, "error", 500)
        raise
    entry.write(conn, "allowed", 200)


Caller = Annotated[Principal, Depends(current_principal)]
# scope="function": the row is committed before the response leaves (a request-scoped exit would run after it
# was sent — a reader could see data whose audit row does not exist yet, or never will if the worker dies).
Audit = Annotated[AuditEntry, Depends(audited, scope="function")]
