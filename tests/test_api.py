"""The running clinical lookup API: search to summary per role, refusals with reasons, break-glass, masking,
tokens, the append-only audit trail, FHIR R4 validated with fhir.resources, offline docs, EMPI stewardship and a
schemathesis fuzz run with no server error."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
import sqlalchemy as sa
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from api.fhir import ID_NUMBER_SYSTEM
from api.security import ALGORITHM, AUDIENCE, ISSUER, REVOCATION_RECHECK_SECONDS, issue_token, revoke_token
from core.access import load_api_roles
from core.db import api_engine, warehouse_engine
from core.privacy import mask_id_number
from core.settings import get_settings

BASE = f"http://127.0.0.1:{os.environ.get('DRC_API_PORT', '8000')}"
client = httpx.Client(base_url=BASE, timeout=60)


def token(login: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(login, hours=1, issued_by='pytest')[0]}"}


def audit_rows(**where) -> list[sa.Row]:
    clause = " AND ".join(f"{k} = :{k}" for k in where)
    with warehouse_engine().connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM audit.access_log WHERE {clause} ORDER BY event_id"), where).all()


def assert_refused(response, reason_en: str) -> None:
    """403 with the reason in Chinese and English, so the user knows what they may not do."""
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert reason_en in detail and "无权" in detail, detail


@pytest.fixture(scope="module")
def county(pipeline_done):
    """A hospital, a resident seen there (valid ID and phone), and a resident never seen or referred there."""
    with warehouse_engine().connect() as conn:
        org = conn.execute(
            sa.text(
                "SELECT e.org_code FROM marts.fct_encounter e JOIN marts.dim_organization o USING (org_code) "
                "WHERE e.master_id IS NOT NULL AND o.org_type <> '村卫生室' "
                "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
            )
        ).scalar_one()
        seen = conn.execute(
            sa.text(
                "SELECT p.* FROM marts.dim_patient p WHERE p.id_number_valid AND p.phone IS NOT NULL "
                "AND EXISTS (SELECT 1 FROM marts.fct_encounter e WHERE e.master_id = p.master_id "
                "            AND e.org_code = :org) "
                "AND EXISTS (SELECT 1 FROM marts.fct_lab_result l WHERE l.master_id = p.master_id) "
                "ORDER BY p.master_id LIMIT 1"
            ),
            {"org": org},
        ).one()
        unseen = conn.execute(
            sa.text(
                "SELECT p.* FROM marts.dim_patient p WHERE NOT EXISTS (SELECT 1 FROM marts.fct_encounter e "
                "WHERE e.master_id = p.master_id AND e.org_code = :org) AND NOT EXISTS (SELECT 1 FROM "
                "marts.fct_referral r WHERE r.master_id = p.master_id AND r.to_org_code = :org) "
                "AND EXISTS (SELECT 1 FROM marts.fct_encounter e WHERE e.master_id = p.master_id) "
                "ORDER BY p.master_id LIMIT 1"
            ),
            {"org": org},
        ).one()
        township, resident = conn.execute(
            sa.text(
                "SELECT l.record_township, l.master_id FROM marts.dim_patient_lookup l "
                "JOIN marts.dim_organization o ON o.township = l.record_township "
                "AND o.org_type IN ('乡镇卫生院', '社区卫生服务中心') "
                "WHERE EXISTS (SELECT 1 FROM marts.fct_public_health_service s WHERE s.master_id = l.master_id) "
                "ORDER BY l.master_id LIMIT 1"
            )
        ).one()
        ph_org = conn.execute(
            sa.text(
                "SELECT org_code FROM marts.dim_organization WHERE township = :t "
                "AND org_type IN ('乡镇卫生院', '社区卫生服务中心') ORDER BY org_code LIMIT 1"
            ),
            {"t": township},
        ).scalar_one()
        outsider = conn.execute(
            sa.text(
                "SELECT master_id FROM marts.dim_patient_lookup WHERE record_township IS DISTINCT FROM :t "
                "ORDER BY master_id LIMIT 1"
            ),
            {"t": township},
        ).scalar_one()
    return {
        "org": org,
        "seen": seen,
        "unseen": unseen,
        "ph_login": f"gw_{ph_org}",
        "ph_resident": resident,
        "ph_outsider": outsider,
        "doctor": f"doc_{org}",
    }


# --- tokens -----------------------------------------------------------------------------------------------
def test_tokens_are_bounded_audienced_revocable_and_only_for_known_users(county):
    url = f"/patients/{county['seen'].master_id}"
    assert client.get(url).status_code == 401
    key = get_settings().api_signing_key
    now = datetime.now(UTC)
    good = {
        "sub": county["doctor"],
        "role": "clinician",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + timedelta(hours=1),
        "jti": "never-issued",
    }
    for claims, what in [
        ({**good, "jti": "x"}, "not registered"),
        ({k: v for k, v in good.items() if k != "exp"}, "no exp"),
        ({**good, "aud": "airflow"}, "other audience"),
        ({**good, "exp": now - timedelta(minutes=1)}, "expired"),
    ]:
        forged = jwt.encode(claims, key, algorithm=ALGORITHM)
        response = client.get(url, headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, what
        assert "Bearer" in response.headers["www-authenticate"]
    other_key = jwt.encode(good, "not-the-key", algorithm=ALGORITHM)
    assert client.get(url, headers={"Authorization": f"Bearer {other_key}"}).status_code == 401
    with pytest.raises(ValueError, match="no API user"):
        issue_token("someone-free-text")
    with pytest.raises(ValueError, match="at most 12 hours"):
        issue_token(county["doctor"], hours=48)
    issued, token_id = issue_token(county["doctor"], hours=1)
    assert jwt.decode(issued, key, algorithms=[ALGORITHM], audience=AUDIENCE)["org"] == county["org"]
    headers = {"Authorization": f"Bearer {issued}"}
    assert client.get(url, headers=headers).status_code == 200
    # the signing key's holder minting a registered token id with a longer life is refused at use too
    long_lived = jwt.encode({**good, "jti": token_id, "exp": now + timedelta(hours=48)}, key, algorithm=ALGORITHM)
    response = client.get(url, headers={"Authorization": f"Bearer {long_lived}"})
    assert response.status_code == 401 and "有效期" in response.json()["detail"]
    assert revoke_token(token_id, "pytest", "test of revocation")
    time.sleep(REVOCATION_RECHECK_SECONDS + 0.5)
    response = client.get(url, headers=headers)
    assert response.status_code == 401 and "吊销" in response.json()["detail"]
    assert audit_rows(subject=county["doctor"], result="unauthenticated")


# --- clinician ----------------------------------------------------------------------------------------------
def test_clinician_walks_from_search_to_summary_with_personal_data_masked(county):
    seen, headers = county["seen"], token(county["doctor"])
    found = client.get("/patients", params={"id_number": seen.id_number}, headers=headers)
    assert found.status_code == 200, found.text
    hit = next(h for h in found.json()["items"] if h["master_id"] == seen.master_id)
    assert hit["access"] == "in_scope"
    by_name = client.get(
        "/patients", params={"name": seen.name, "birth_date": seen.birth_date.isoformat()}, headers=headers
    ).json()
    assert seen.master_id in {h["master_id"] for h in by_name["items"]}
    summary = client.get(f"/patients/{seen.master_id}", headers=headers)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    demo = body["demographics"]
    assert demo["birth_date"] == seen.birth_date.isoformat() and demo["name"] == seen.name
    assert demo["id_number"] == mask_id_number(seen.id_number) == seen.id_number[:6] + "*" * 12
    assert demo["phone"] == seen.phone[:3] + "****" + seen.phone[-4:]
    for text in (found.text, by_name and str(by_name), summary.text):
        assert seen.id_number not in text and seen.phone not in text
    assert seen.id_number[6:14] not in (demo["id_number"] or "")
    assert body["identifiers"] and body["recent_encounters"]
    assert body["sections"]["encounters"]["total"] >= 1
    with warehouse_engine().connect() as conn:
        visits = conn.execute(
            sa.text("SELECT count(*) FROM marts.fct_encounter WHERE master_id = :m"), {"m": seen.master_id}
        ).scalar_one()
        local = conn.execute(
            sa.text(
                "SELECT source_system, local_patient_id FROM marts.dim_patient_identifier WHERE master_id = :m LIMIT 1"
            ),
            {"m": seen.master_id},
        ).one()
    assert body["sections"]["encounters"]["total"] == visits
    page = client.get(f"/patients/{seen.master_id}/encounters", params={"limit": 1}, headers=headers).json()
    assert page["total"] == visits and len(page["items"]) == 1
    pix = client.get(
        "/patients", params={"source_system": local.source_system, "local_id": local.local_patient_id}, headers=headers
    ).json()
    assert [h["master_id"] for h in pix["items"]] == [seen.master_id]
    labs = client.get(f"/patients/{seen.master_id}/lab-results", headers=headers).json()
    code = next(i["item_code"] for i in labs["items"] if i["item_code"])
    trend = client.get(f"/patients/{seen.master_id}/lab-results/trend", params={"code": code}, headers=headers)
    assert trend.status_code == 200 and trend.json()["points"]
    times = [p["reported_at"] for p in trend.json()["points"]]
    assert times == sorted(times)
    rows = audit_rows(subject=county["doctor"], master_id=seen.master_id, result="allowed")
    assert rows and not any(r.break_glass for r in rows)
    assert all(seen.id_number not in str(r.query) for r in audit_rows(subject=county["doctor"]))
    searches = [
        r
        for r in audit_rows(subject=county["doctor"], action="search_patients")
        if seen.master_id in (r.returned_master_ids or [])
    ]
    assert len(searches) >= 3, "each search that listed the resident names them in the audit trail"


def test_a_masked_id_number_cannot_be_recovered_by_searching_its_candidates(county):
    """Masked number + birth date + sex leave a few hundred candidates: searches by ID number are capped per user
    and hour, and the cap's refusal says what to do instead."""
    roles, users = load_api_roles()
    cap = roles["clinician"].id_searches_per_hour
    login = next(u.login for u in users.values() if u.role == "clinician" and u.login != county["doctor"])
    headers, seen = token(login), county["seen"]
    for n in range(cap):  # candidates sharing the shown area code, birth date and sex digit
        candidate = f"{seen.id_number[:14]}{n:03d}X"
        assert client.get("/patients", params={"id_number": candidate}, headers=headers).status_code == 200
    refused = client.get(
        "/fhir/Patient", params={"identifier": f"{ID_NUMBER_SYSTEM}|{seen.id_number}"}, headers=headers
    )
    assert refused.status_code == 429 and "姓名" in refused.text, refused.text
    assert client.get("/patients", params={"id_number": seen.id_number}, headers=headers).status_code == 429
    assert (
        client.get(
            "/patients", params={"name": seen.name, "birth_date": seen.birth_date.isoformat()}, headers=headers
        ).status_code
        == 200
    ), "other searches go on"
    assert len(audit_rows(subject=login, status_code=429)) == 2


def test_clinician_needs_a_stated_reason_for_residents_of_other_institutions(county):
    unseen, headers = county["unseen"].master_id, token(county["doctor"])
    refused = client.get(f"/patients/{unseen}/encounters", headers=headers)
    assert refused.status_code == 403
    assert "reason" in refused.json()["detail"] and "紧急调阅" in refused.json()["detail"]
    assert audit_rows(subject=county["doctor"], master_id=unseen, result="refused")
    allowed = client.get(f"/patients/{unseen}/encounters", params={"reason": "急诊抢救需查看既往史"}, headers=headers)
    assert allowed.status_code == 200 and allowed.json()["total"] >= 1
    flagged = audit_rows(subject=county["doctor"], master_id=unseen, result="allowed")
    assert flagged and flagged[-1].break_glass and flagged[-1].purpose == "急诊抢救需查看既往史"


# --- other roles --------------------------------------------------------------------------------------------
def test_public_health_officer_reads_health_records_of_their_township_only(county):
    headers = token(county["ph_login"])
    resident = county["ph_resident"]
    services = client.get(f"/patients/{resident}/followups", headers=headers)
    assert services.status_code == 200 and services.json()["total"] >= 1
    clinical = client.get(f"/patients/{resident}/encounters", headers=headers)
    assert clinical.status_code == 403 and "诊疗数据" in clinical.json()["detail"]
    outside = client.get(
        f"/patients/{county['ph_outsider']}/followups", headers=headers, params={"reason": "想看看这位居民"}
    )
    assert outside.status_code == 403 and "township" in outside.json()["detail"]


def test_steward_sees_identifiers_but_no_clinical_data_and_auditor_only_the_audit_trail(county):
    seen = county["seen"]
    steward = token("empi_steward")
    summary = client.get(f"/patients/{seen.master_id}", headers=steward).json()
    assert summary["demographics"]["id_number"] == seen.id_number  # linking needs the number itself
    assert summary["identifiers"] and summary.get("recent_encounters") is None
    assert_refused(client.get(f"/patients/{seen.master_id}/encounters", headers=steward), "may not read")
    assert client.get("/empi/review-queue", headers=steward).status_code == 200
    assert_refused(client.get("/audit/events", headers=steward), "may not read audit")
    auditor = token("auditor")
    assert_refused(client.get(f"/patients/{seen.master_id}", headers=auditor), "may not read")
    assert_refused(client.get("/patients", params={"id_number": seen.id_number}, headers=auditor), "may not read")
    events = client.get("/audit/events", params={"break_glass": "true"}, headers=auditor)
    assert events.status_code == 200 and events.json()["total"] >= 1
    assert all(e["break_glass"] for e in events.json()["items"])
    assert_refused(client.get("/audit/events", headers=token(county["doctor"])), "may not read audit")


def test_the_audit_trail_is_append_only_and_the_api_role_reads_only_what_it_serves(county):
    with api_engine().connect() as conn:
        for statement, error in [
            ("UPDATE audit.access_log SET result = 'allowed'", "permission denied"),
            ("DELETE FROM audit.access_log", "permission denied"),
            ("SELECT count(*) FROM ods.person", "permission denied"),
            ("SELECT count(*) FROM staging.stg_ods__person", "permission denied"),
        ]:
            with pytest.raises(sa.exc.ProgrammingError, match=error):
                conn.execute(sa.text(statement))
            conn.rollback()
    with warehouse_engine().connect() as conn:  # even the owner cannot rewrite history
        for statement in (
            "UPDATE audit.access_log SET result = 'allowed'",
            "DELETE FROM audit.access_log",
            "TRUNCATE audit.access_log",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text(statement))
            conn.rollback()


# --- FHIR ---------------------------------------------------------------------------------------------------
def _resources(bundle: dict) -> list[dict]:
    """The bundle's resources, each validated against its own FHIR model (required elements, types, no extras)."""
    Bundle.model_validate(bundle)
    found = [e["resource"] for e in bundle.get("entry", [])]
    for resource in found:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return found


def test_fhir_searches_return_valid_r4_bundles(county):
    seen, headers = county["seen"], token(county["doctor"])
    assert client.get("/fhir/metadata").status_code == 200
    CapabilityStatement.model_validate(client.get("/fhir/metadata").json())
    found = client.get("/fhir/Patient", params={"identifier": f"urn:xydrc:master-id|{seen.master_id}"}, headers=headers)
    assert found.status_code == 200 and found.headers["content-type"].startswith("application/fhir+json")
    patient = _resources(found.json())[0]
    assert patient["id"] == seen.master_id and seen.id_number not in found.text
    by_name = client.get(
        "/fhir/Patient", params={"name": seen.name, "birthdate": seen.birth_date.isoformat()}, headers=headers
    ).json()
    assert seen.master_id in {r["id"] for r in _resources(by_name)}
    everything = client.get(f"/fhir/Patient/{seen.master_id}/$everything", headers=headers)
    kinds = {r["resourceType"] for r in _resources(everything.json())}
    assert {"Patient", "Encounter", "Observation"} <= kinds
    for resource_type in ("Encounter", "Condition", "Observation", "MedicationRequest", "ServiceRequest"):
        response = client.get(
            f"/fhir/{resource_type}", params={"patient": f"Patient/{seen.master_id}", "_count": 2}, headers=headers
        )
        assert response.status_code == 200, (resource_type, response.text)
        bundle = response.json()
        assert all(r["resourceType"] == resource_type for r in _resources(bundle))
        if bundle["total"] > 2:
            next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
            assert len(_resources(httpx.get(next_url, headers=headers).json())) >= 1
    dated = client.get(
        "/fhir/Encounter", params={"patient": seen.master_id, "date": "ge2100-01-01"}, headers=headers
    ).json()
    assert dated["total"] == 0
    refused = client.get("/fhir/Encounter", params={"patient": county["unseen"].master_id}, headers=headers)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"


# --- docs, stewardship, fuzz --------------------------------------------------------------------------------
def test_docs_pages_render_from_assets_the_api_serves_itself(county, browser):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
    browser.get(f"{BASE}/docs")
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    browser.get(f"{BASE}/redoc")
    WebDriverWait(browser, 60).until(
        lambda d: "search_patients" in d.page_source or len(d.find_elements(By.CSS_SELECTOR, "[data-section-id]")) >= 10
    )


PIX_MASTER = sa.text("SELECT master_id FROM ods.empi_pix WHERE record_id = :r")


@pytest.mark.runs_last(order=1)  # republishes the EMPI tables: after the tests that read them
def test_steward_decision_is_applied_by_the_empi_and_logged_in_its_event_log(county):
    """'Not the same person' for a record and a resident it is not in: recorded, applied, nothing else moves."""
    with warehouse_engine().connect() as conn:
        record, other = conn.execute(
            sa.text(
                "SELECT a.source_system || '|' || a.local_patient_id, b.master_id FROM marts.dim_patient_identifier a "
                "JOIN marts.dim_patient_identifier b ON b.master_id <> a.master_id ORDER BY 1, 2 LIMIT 1"
            )
        ).one()
        before = conn.execute(PIX_MASTER, {"r": record}).scalar_one()
    headers = token("empi_steward")
    assert (
        client.post(
            "/empi/merges", json={"survivor": "M-nobody", "merged": other, "reason": "测试不存在"}, headers=headers
        ).status_code
        == 404
    )
    queued = client.post(
        "/empi/review-decisions",
        headers=headers,
        json={
            "record_id": record,
            "candidate_master_id": other,
            "same_person": False,
            "reason": "核对后确认不是同一人",
        },
    )
    assert queued.status_code == 202, queued.text
    request_id = queued.json()["request_id"]
    deadline = time.monotonic() + 600
    while (state := client.get(f"/empi/requests/{request_id}", headers=headers).json())["status"] != "done":
        assert state["status"] != "failed" and time.monotonic() < deadline, state
        time.sleep(5)
    with warehouse_engine().connect() as conn:
        event = conn.execute(
            sa.text("SELECT actor, action, reason FROM ods.empi_events WHERE event_id = :e"), {"e": state["event_id"]}
        ).one()
        after = conn.execute(PIX_MASTER, {"r": record}).scalar_one()
    assert tuple(event) == ("api:empi_steward", "separate", "核对后确认不是同一人")
    assert after == before != other


def test_fuzzing_the_openapi_schema_finds_no_server_error(county, tmp_path):
    for login, budget in ((county["doctor"], "60"), ("auditor", "30")):
        result = subprocess.run(
            [
                os.path.join(os.path.dirname(os.sys.executable), "schemathesis"),
                "run",
                f"{BASE}/openapi.json",
                "--header",
                f"Authorization: {token(login)['Authorization']}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "10",
                "--max-time",
                budget,
                "--seed",
                "19",
                "--suppress-health-check",
                "all",
                "--generation-allow-x00",
                "false",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-4000:]
