"""The private hospitals' vendor API (华卓/瑞祥 数据开放接口), served by the simulator.

A vendor's integration API as collectors meet it in the field, not our model: OAuth-like client credentials
give a short-lived bearer token; each resource is read page by page, filtered by ``updated_since`` and
ordered by (updatedAt, id), with an opaque ``nextCursor`` that never skips or repeats a record; deletions
arrive as ``"deleted": true`` tombstones; clients that poll too fast get 429 with Retry-After; a configured
share of requests fails with 500/503 so collectors' retries are exercised. Records are the backend rows of
simulator/systems/private_api.py, keys turned to camelCase, so a column the vendor adds (schema drift)
appears in the JSON on its own.

Run: ``uvicorn simulator.api_server:app --host 127.0.0.1 --port $DRC_SIM_API_PORT`` (default 8090).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import jwt
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from simulator.config import load_simulator_config
from simulator.connections import owner_password, source_pg_engine
from simulator.systems.private_api import DATABASE, TENANT_BY_CODE

BEIJING = timezone(timedelta(hours=8))
ALGORITHM = "HS256"
SYSTEM_NAME = "private_api"


class Resource(StrEnum):
    patients = "patients"
    visits = "visits"
    admissions = "admissions"
    diagnoses = "diagnoses"
    orders = "orders"
    charges = "charges"


def client_secret() -> str:
    """The collector's secret: DRC_SIM_API_CLIENT_SECRET, else derived from DRC_HIS_DB_PASSWORD (no new secret)."""
    explicit = os.environ.get("DRC_SIM_API_CLIENT_SECRET")
    if explicit:
        return explicit
    return hmac.new(owner_password().encode(), b"private_api client secret", hashlib.sha256).hexdigest()[:32]


@dataclass
class ApiSettings:
    """What the vendor configured for our client (config ``systems: private_api: api:``)."""

    client_id: str = "xydrc-collector"
    client_secret: str = ""
    pg_schema: str = "public"
    token_ttl_seconds: int = 1800
    rate_limit_per_second: float = 20.0
    fault_rate: float = 0.0
    signing_key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.signing_key = hmac.new(self.client_secret.encode(), b"token signing", hashlib.sha256).digest()

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> ApiSettings:
        api = section.get("api") or {}
        return cls(
            client_id=api.get("client_id", "xydrc-collector"),
            client_secret=client_secret(),
            pg_schema=section.get("pg_schema", "public"),
            token_ttl_seconds=int(api.get("token_ttl_seconds", 1800)),
            rate_limit_per_second=float(api.get("rate_limit_per_second", 20.0)),
            fault_rate=float(api.get("fault_rate", 0.0)),
        )


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second, bursts up to ``rate``."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def wait_seconds(self, client: str, rate: float) -> float:
        """0 when the request may pass (and is counted), else how long until it would."""
        with self.lock:
            now = time.monotonic()
            tokens, last = self.buckets.get(client, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate)
            if tokens >= 1:
                self.buckets[client] = (tokens - 1, now)
                return 0.0
            self.buckets[client] = (tokens, now)
            return (1 - tokens) / rate


class VendorError(Exception):
    """An error the vendor answers in its envelope: HTTP status plus its own numeric code."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


app = FastAPI(
    title="华卓/瑞祥医院 数据开放接口 (simulated vendor API)",
    version="1.4.2",
    description="Private hospitals' vendor API served by the 荥阳 county simulator; see docs/simulator/private_api.md.",
)
app.state.settings = None
app.state.limiter = RateLimiter()
app.state.faults = random.Random(0)


@app.exception_handler(VendorError)
def _vendor_error(_: Request, exc: VendorError) -> JSONResponse:
    return JSONResponse({"code": exc.code, "msg": exc.msg, "data": None}, exc.status, headers=exc.headers)


@app.exception_handler(RequestValidationError)
def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"code": 40001, "msg": f"参数错误 {problems}", "data": None}, 400)


@app.exception_handler(sa.exc.SQLAlchemyError)
def _backend_down(_: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
    """Backend missing or down (e.g. the county not simulated yet): the vendor's 503, which collectors retry."""
    return JSONResponse(
        {"code": 50302, "msg": f"数据服务暂不可用 ({type(exc).__name__})", "data": None},
        503,
        headers={"Retry-After": "30"},
    )


def configure(settings: ApiSettings) -> None:
    """Replace the settings and forget rate-limit state (tests; a restart does the same in service)."""
    app.state.settings = settings
    app.state.limiter = RateLimiter()


def api_settings() -> ApiSettings:
    if app.state.settings is None:
        configure(ApiSettings.from_config(load_simulator_config().get("systems", {}).get(SYSTEM_NAME) or {}))
    return app.state.settings


Settings = Annotated[ApiSettings, Depends(api_settings)]


def issue_token(settings: ApiSettings, client_id: str, ttl_seconds: int | None = None) -> str:
    now = datetime.now(UTC)
    ttl = settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims = {"sub": client_id, "iat": now, "exp": now + timedelta(seconds=ttl), "scope": " ".join(TENANT_BY_CODE)}
    return jwt.encode(claims, settings.signing_key, algorithm=ALGORITHM)


def require_client(settings: Settings, authorization: Annotated[str | None, Header()] = None) -> str:
    """The calling client; then its rate limit, then the configured fault injection."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise VendorError(
            401, 40101, "未授权: 缺少 Authorization: Bearer <access_token>", {"WWW-Authenticate": "Bearer"}
        )
    try:
        client = jwt.decode(token, settings.signing_key, algorithms=[ALGORITHM])["sub"]
    except jwt.ExpiredSignatureError as exc:
        raise VendorError(
            401, 40102, "access_token 已过期, 请重新获取", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from exc
    except jwt.PyJWTError as exc:
        raise VendorError(
            401, 40103, "access_token 无效", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from exc
    wait = app.state.limiter.wait_seconds(client, settings.rate_limit_per_second)
    if wait:
        raise VendorError(429, 42901, "请求过于频繁, 请稍后重试", {"Retry-After": str(max(1, math.ceil(wait)))})
    if settings.fault_rate and app.state.faults.random() < settings.fault_rate:
        if app.state.faults.random() < 0.5:
            raise VendorError(503, 50301, "服务繁忙, 请稍后重试", {"Retry-After": "1"})
        raise VendorError(500, 50001, "系统内部错误")
    return client


Client = Annotated[str, Depends(require_client)]


class TokenRequest(BaseModel):
    client_id: str
    client_secret: str
    grant_type: str = "client_credentials"


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class Hospital(BaseModel):
    hospitalCode: str  # the vendor's JSON is camelCase
    hospitalName: str


class HospitalsResponse(BaseModel):
    code: int = 0
    msg: str = "success"
    data: list[Hospital]


class Page(BaseModel):
    total: int = Field(description="records matching hospital and updated_since (whatever the page or cursor)")
    page: int
    pageSize: int
    nextCursor: str | None = Field(description="pass as cursor= for the next page; null on the last page")
    list: list[dict[str, Any]]


class PageResponse(BaseModel):
    code: int = 0
    msg: str = "success"
    data: Page


@app.get("/health", tags=["ops"], summary="健康检查 (also checks the backend database)")
def health(settings: Settings) -> JSONResponse:
    try:
        with source_pg_engine(DATABASE).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return JSONResponse({"status": "DOWN"}, 503)
    return JSONResponse({"status": "UP", "schema": settings.pg_schema})


@app.post("/api/v1/auth/token", response_model=TokenResponse, tags=["auth"], summary="获取访问令牌")
def token(credentials: TokenRequest, settings: Settings) -> TokenResponse:
    """Client credentials (JSON body) for a bearer token; wrong credentials -> 401."""
    if credentials.client_id != settings.client_id or not hmac.compare_digest(
        credentials.client_secret.encode(), settings.client_secret.encode()
    ):
        raise VendorError(401, 40104, "client_id 或 client_secret 错误")
    return TokenResponse(
        access_token=issue_token(settings, credentials.client_id), expires_in=settings.token_ttl_seconds
    )


@app.get("/api/v1/hospitals", response_model=HospitalsResponse, tags=["data"], summary="可访问的医院")
def hospitals(_: Client) -> HospitalsResponse:
    return HospitalsResponse(data=[Hospital(hospitalCode=t.code, hospitalName=t.name) for t in TENANT_BY_CODE.values()])


def parse_since(value: str | None) -> datetime | None:
    """ISO 8601, with or without offset (none means Beijing time); a '+' decoded to a space is forgiven."""
    if value is None:
        return None
    text = value.strip()
    if "T" in text and " " in text:
        text = text.replace(" ", "+")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VendorError(400, 40002, f"updated_since 格式错误: {value} (ISO 8601)") from exc
    return parsed.astimezone(BEIJING).replace(tzinfo=None) if parsed.tzinfo else parsed


def encode_cursor(updated_at: datetime, record_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_at.isoformat(timespec='milliseconds')}|{record_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, record_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), record_id
    except (ValueError, binascii.Error) as exc:
        raise VendorError(400, 40003, "cursor 无效") from exc


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _json_value(column: str, value: Any) -> Any:
    """The vendor's formats: audit times ISO 8601 with offset, business times 'YYYY-MM-DD HH:mm:ss',
    money as strings."""
    if isinstance(value, datetime):
        if column in ("created_at", "updated_at"):
            return value.replace(tzinfo=BEIJING).isoformat(timespec="milliseconds")
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def to_record(row: dict[str, Any]) -> dict[str, Any]:
    return {_camel(column): _json_value(column, value) for column, value in row.items()}


@app.get(
    "/api/v1/hospitals/{hospital_code}/{resource}",
    response_model=PageResponse,
    tags=["data"],
    summary="增量读取 (按 updatedAt, id 排序)",
)
def read_resource(
    settings: Settings,
    _: Client,
    hospital_code: Annotated[str, Path(description="医院编码 HZ001 / RX001")],
    resource: Resource,
    updated_since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page; overrides page")] = None,
) -> PageResponse:
    if hospital_code not in TENANT_BY_CODE:
        raise VendorError(404, 40401, f"医院编码不存在: {hospital_code}")
    table = f'"{settings.pg_schema}".{resource.value}'
    where, params = ["hospital_code = :h"], {"h": hospital_code}
    since = parse_since(updated_since)
    if since is not None:
        where.append("updated_at >= :since")
        params["since"] = since
    with source_pg_engine(DATABASE).connect() as conn:
        total = conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {' AND '.join(where)}"), params).scalar()
        offset = (page - 1) * page_size
        if cursor:
            params["cts"], params["cid"] = decode_cursor(cursor)
            where.append("(updated_at, id) > (:cts, :cid)")
            offset = 0
        rows = (
            conn.execute(
                sa.text(
                    f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY updated_at, id "
                    f"LIMIT {page_size + 1} OFFSET {offset}"
                ),
                params,
            )
            .mappings()
            .all()
        )
    more, rows = len(rows) > page_size, rows[:page_size]
    next_cursor = encode_cursor(rows[-1]["updated_at"], rows[-1]["id"]) if more else None
    return PageResponse(
        data=Page(
            total=total, page=page, pageSize=page_size, nextCursor=next_cursor, list=[to_record(dict(r)) for r in rows]
        )
    )
