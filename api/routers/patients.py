"""Patient lookup by master id (IHE PDQ-style demographics query)."""

from __future__ import annotations

import logging
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, status

from api.dependencies import db_connection, require_token
from api.schemas import PatientPublic

log = logging.getLogger("xydrc.api")
router = APIRouter(prefix="/patients", tags=["patients"], dependencies=[Depends(require_token)])


@router.get("/{master_id}", response_model=PatientPublic, summary="按主索引号查询患者基本信息")
def get_patient(master_id: str, conn: Annotated[sa.Connection, Depends(db_connection)],
                subject: Annotated[str, Depends(require_token)]) -> PatientPublic:
    row = conn.execute(sa.text(
        "SELECT master_id, name, sex_code, birth_date, id_number, phone, address, source_record_count "
        "FROM marts.dim_patient WHERE master_id = :master_id"), {"master_id": master_id}).first()
    log.info("patient lookup by %s: %s (%s)", subject, master_id, "found" if row else "not found")
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"主索引号 {master_id} 不存在; check the id")
    return PatientPublic.model_validate(row._asdict())
