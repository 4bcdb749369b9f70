"""The clinical lookup API: routers, offline docs pages, and errors every client can read (never a stack trace)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routers import audit, empi, fhir, patients

log = logging.getLogger("xydrc.api")
ASSETS_DIR = Path(os.environ.get("DRC_API_ASSETS_DIR", Path.home() / ".cache" / "xydrc" / "api-assets"))
FHIR_PREFIX = "/fhir"

DESCRIPTION = """
荥阳医共体数据资源中心的临床调阅接口：患者检索（主索引 PDQ/PIX）、跨机构就诊记录、HL7 FHIR R4、主索引管理与审计。
Clinical lookup API of the Xingyang county medical community's data resource center: patient search (PDQ/PIX),
the record across member institutions, HL7 FHIR R4, EMPI stewardship and the audit trail.

* 认证 Auth: `Authorization: Bearer <token>`，令牌由平台管理员签发 (`./drc api-token --user <login>`)，最长 12 小时。
* 权限 Access: 临床医生仅可调阅在本机构就诊或转诊至本机构的居民，其他居民须在 `reason` 参数说明理由
  （紧急调阅，记录并标记）；公卫人员限本乡镇健康档案；主索引管理员处理待审匹配；审计员查询审计日志。每次调阅都写入不可修改的审计日志。
* 脱敏 Masking: 身份证号、电话、住址按角色脱敏（config/access/roles.yaml）。
"""

app = FastAPI(
    title="荥阳医共体数据资源中心 · 临床调阅接口 (Clinical lookup API)",
    version="1.0.0",
    description=DESCRIPTION,
    docs_url=None,
    redoc_url=None,
    openapi_tags=[
        {"name": "患者 patients", "description": "检索与调阅 Search and record (PDQ/PIX)"},
        {"name": "FHIR R4", "description": "HL7 FHIR R4 资源 resources"},
        {"name": "主索引 EMPI", "description": "主索引管理 EMPI stewardship"},
        {"name": "审计 audit", "description": "审计日志 Audit trail"},
        {"name": "ops", "description": "运行状态 Health"},
    ],
)
app.include_router(patients.router)
app.include_router(fhir.router, prefix=FHIR_PREFIX)
app.include_router(empi.router)
app.include_router(audit.router)
if ASSETS_DIR.is_dir():
    app.mount("/static/docs", StaticFiles(directory=ASSETS_DIR), name="docs-assets")


@app.get("/health", tags=["ops"], summary="健康检查 Health")
def health() -> dict[str, str]:
    return {"status": "ok"}


def _assets_missing() -> HTMLResponse | None:
    if (ASSETS_DIR / "swagger-ui-bundle.js").is_file() and (ASSETS_DIR / "redoc.standalone.js").is_file():
        return None
    return HTMLResponse(
        f"<p>接口文档资源缺失，请运行 ./drc setup / API docs assets missing in {ASSETS_DIR}: run ./drc setup</p>",
        status_code=503,
    )


@app.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return _assets_missing() or get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} · Swagger UI",
        swagger_js_url="/static/docs/swagger-ui-bundle.js",
        swagger_css_url="/static/docs/swagger-ui.css",
        swagger_favicon_url="/static/docs/favicon-32x32.png",
    )


@app.get("/redoc", include_in_schema=False)
def redoc() -> HTMLResponse:
    return _assets_missing() or get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} · ReDoc",
        redoc_js_url="/static/docs/redoc.standalone.js",
        redoc_favicon_url="/static/docs/favicon-32x32.png",
        with_google_fonts=False,
    )


def _error(
    request: Request, status_code: int, message: str, extra: dict | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """FHIR clients get an OperationOutcome, everyone else {"detail": "中文 / English"}."""
    if request.url.path.startswith(FHIR_PREFIX):
        return fhir.outcome_response(status_code, message, headers)
    return JSONResponse({"detail": message, **(extra or {})}, status_code=status_code, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "没有这个地址，请查看 /docs / no such path: see /docs"
    elif exc.status_code == 405:
        message = "不支持该请求方法 / method not allowed on this path"
    return _error(request, exc.status_code, message, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad parameter; the offending value is not echoed (it may be an ID number)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return _error(request, 422, f"请求参数不合法 / invalid request: {where}", {"errors": errors})


@app.exception_handler(Exception)
async def server_error(request: Request, exc: Exception) -> JSONResponse:
    reference = uuid.uuid4().hex[:12]
    log.error(
        "request %s %s failed (reference %s): %s", request.method, request.url.path, reference, type(exc).__name__
    )
    return _error(
        request, 500, f"服务器内部错误，请联系平台管理员并提供编号 {reference} / internal error, reference {reference}"
    )
