"""The lookup API app: routers only; auth lives in dependencies, shapes and masking in schemas."""

from __future__ import annotations

from fastapi import FastAPI

from api.routers import patients

app = FastAPI(title="荥阳医共体数据资源中心 · 患者查询接口", version="0.1.0")
app.include_router(patients.router)


@app.get("/health", tags=["ops"], summary="健康检查")
def health() -> dict[str, str]:
    return {"status": "ok"}
