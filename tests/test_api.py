"""The running lookup API: bearer token required, demographics returned with personal data masked."""

from __future__ import annotations

import os

import httpx
import jwt
import pytest
import sqlalchemy as sa

from api.dependencies import issue_token
from core.db import warehouse_engine

BASE = f"http://127.0.0.1:{os.environ.get('DRC_API_PORT', '8000')}"


@pytest.fixture(scope="module")
def patient(pipeline_done):
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text("SELECT * FROM marts.dim_patient WHERE id_number_valid "
                                    "AND phone IS NOT NULL ORDER BY master_id LIMIT 1")).one()


def test_without_or_with_forged_token_is_401(patient):
    assert httpx.get(f"{BASE}/patients/{patient.master_id}").status_code == 401
    forged = jwt.encode({"sub": "x", "iss": "xydrc"}, "not-the-key", algorithm="HS256")
    response = httpx.get(f"{BASE}/patients/{patient.master_id}", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_demographics_come_back_masked(patient):
    token = issue_token("test-clinician", hours=1)
    response = httpx.get(f"{BASE}/patients/{patient.master_id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["master_id"] == patient.master_id and body["name"] == patient.name
    assert body["birth_date"] == patient.birth_date.isoformat()
    assert body["id_number"] == patient.id_number[:6] + "********" + patient.id_number[-4:]
    assert body["phone"] == patient.phone[:3] + "****" + patient.phone[-4:]
    assert body["address"].endswith("****") and patient.address.startswith(body["address"][:-4])
    assert patient.id_number not in response.text and patient.phone not in response.text


def test_unknown_master_id_is_404_with_a_hint(pipeline_done):
    token = issue_token("test-clinician", hours=1)
    response = httpx.get(f"{BASE}/patients/M0000000000000000", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert "不存在" in response.json()["detail"]
