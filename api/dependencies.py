"""Auth and DB dependencies: every data route needs a bearer token signed with the platform's API key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
import sqlalchemy as sa
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.db import warehouse_engine
from core.settings import get_settings

ISSUER = "xydrc"
ALGORITHM = "HS256"
bearer = HTTPBearer(auto_error=False)


def issue_token(subject: str, hours: int = 12) -> str:
    now = datetime.now(UTC)
    claims = {"sub": subject, "iss": ISSUER, "iat": now, "exp": now + timedelta(hours=hours)}
    return jwt.encode(claims, get_settings().api_signing_key, algorithm=ALGORITHM)


def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The token's subject; 401 with a hint when the token is missing, forged or expired."""
    unauthorized = HTTPException(status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"},
                                 detail="需要有效的访问令牌 (Authorization: Bearer <token>); "
                                        "ask the platform admin for one (./drc api-token --subject <name>)")
    if credentials is None:
        raise unauthorized
    try:
        claims = jwt.decode(credentials.credentials, get_settings().api_signing_key,
                            algorithms=[ALGORITHM], issuer=ISSUER)
    except jwt.PyJWTError as exc:
        raise unauthorized from exc
    return claims["sub"]


def db_connection() -> Iterator[sa.Connection]:
    with warehouse_engine().connect() as conn:
        yield conn
