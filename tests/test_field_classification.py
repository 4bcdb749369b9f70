"""The field classification (config/access/classification.yaml) covers every column and is what the database enforces.

A new column without a class fails here, before any role can read it; the dashboards' role drc_bi can select
exactly the columns of the classes it sees (never a 身份证号, name, phone or address), and the auditor's role
drc_audit reads the audit trail and nothing else, without being able to change it.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
import yaml

from core.classification import load_policy
from core.db import warehouse_engine
from core.dbt import compile_sql
from core.privacy import ID_NUMBER, MASKING_MACRO, mask_id_number, mask_phone, render_masking_macro
from core.settings import CONFIG_DIR, PROJECT_ROOT, get_settings

POLICY = load_policy()
DBT_SCHEMAS = {"staging": "staging", "intermediate": "intermediate", "marts": "marts"}


def _dbt_columns() -> list[tuple[str, str, str]]:
    """(schema, model, column) of every column documented beside a dbt model."""
    found = []
    for path in (PROJECT_ROOT / "dbt" / "models").rglob("*.yml"):
        schema = DBT_SCHEMAS[path.relative_to(PROJECT_ROOT / "dbt" / "models").parts[0]]
        for model in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("models") or []:
            found += [(schema, model["name"], column["name"]) for column in model.get("columns") or []]
    return found


def _canonical_columns() -> list[tuple[str, str, str]]:
    """(ods, entity, column) of every canonical silver column (config/model), as publish writes them."""
    found = []
    for path in (CONFIG_DIR / "model").glob("[!_]*.yaml"):
        entity = yaml.safe_load(path.read_text(encoding="utf-8"))
        found += [("ods", path.stem, column["name"]) for column in entity["columns"]]
    return found


def test_every_documented_and_canonical_column_has_a_class():
    columns = _dbt_columns() + _canonical_columns()
    assert len(columns) > 1000
    assert POLICY.unclassified(columns) == [], "add these columns to config/access/classification.yaml"


def test_the_identifiers_everyone_knows_are_hidden_from_the_dashboards():
    for column in ("id_number", "name", "phone", "address", "insurance_card_no", "local_patient_id"):
        assert POLICY.class_of("marts", "dim_patient", column) == "direct_identifier"
        assert not POLICY.sees("drc_bi", "marts", "dim_patient", column)
    assert POLICY.sees("drc_bi", "marts", "dim_patient", "master_id"), "the pseudonymous master id stays usable"
    assert POLICY.sees("drc_bi", "marts", "dim_practitioner", "name"), "a doctor's name is staff information"
    assert not POLICY.sees("drc_bi", "marts", "fct_dq_problem", "value"), "a failing value may be an ID number"
    assert not POLICY.sees("drc_bi", "marts", "brand_new_table", "brand_new_column"), "unclassified: no grant"


def _columns(conn: sa.Connection) -> list[tuple[str, str, str]]:
    return conn.execute(
        sa.text(
            "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c "
            "WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema', 'public') "
            "AND c.table_schema NOT LIKE 'pg\\_%' AND c.table_schema NOT LIKE 'scratch%' "
            "AND c.table_name NOT LIKE '%\\_\\_dbt\\_%' AND c.table_name NOT LIKE 'scratch\\_%'"  # tests' own tables
        )
    ).all()


def test_every_warehouse_column_has_a_class(pipeline_done):
    with warehouse_engine().connect() as conn:
        columns = _columns(conn)
    assert {schema for schema, _, _ in columns} >= {"ods", "staging", "marts", "ingest", "ops", "audit"}
    assert POLICY.unclassified(columns) == [], "add these columns to config/access/classification.yaml"


def _assert_refused(conn: sa.Connection, statements: tuple[str, ...]) -> None:
    for sql in statements:
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(sql))
        conn.rollback()


def _engine_as(role: str, password_env: str) -> sa.Engine:
    settings = get_settings()
    url = sa.URL.create(
        "postgresql+psycopg2", role, os.environ[password_env], settings.pg_host, settings.pg_port, "warehouse"
    )
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def test_the_dashboard_role_can_select_exactly_the_columns_of_its_classes(pipeline_done):
    """Checked column by column in PostgreSQL's own privileges, after the pipeline's build."""
    with warehouse_engine().connect() as conn:
        granted = {
            (schema, table, column): allowed
            for schema, table, column, allowed in conn.execute(
                sa.text(
                    "SELECT c.table_schema, c.table_name, c.column_name, "
                    "has_column_privilege('drc_bi', format('%I.%I', c.table_schema, c.table_name), c.column_name, "
                    "'SELECT') FROM information_schema.columns c "
                    "WHERE c.table_schema IN ('marts', 'reference', 'ingest', 'ops', 'staging', 'ods', 'audit')"
                )
            )
        }
    expected = {key: POLICY.sees("drc_bi", *key) for key in granted}
    assert {k for k, v in granted.items() if v != expected[k]} == set()
    readable = {key for key, allowed in granted.items() if allowed}
    assert ("marts", "fct_encounter", "master_id") in readable
    assert not {
        key for key in readable if key[2] in ("id_number", "name", "phone", "address") and key[1] != "dim_practitioner"
    }
    assert not {key for key in readable if key[0] in ("ods", "audit")}


def test_as_the_dashboard_role_an_id_number_cannot_be_selected_but_masked_problems_can(pipeline_done):
    engine = _engine_as("drc_bi", "DRC_BI_DB_PASSWORD")
    try:
        with engine.connect() as conn:
            _assert_refused(
                conn,
                (
                    "SELECT id_number FROM marts.dim_patient",
                    "SELECT name FROM marts.fct_resident_change",
                    "SELECT value FROM marts.fct_dq_problem",
                    "SELECT * FROM marts.dim_patient",
                    "SELECT raw_payload FROM staging.stg_ods__quarantine",
                ),
            )
            assert conn.execute(sa.text("SELECT count(DISTINCT master_id) FROM marts.dim_patient")).scalar() > 100
            masked = conn.execute(sa.text("SELECT business_key_masked, value_masked FROM marts.fct_dq_problem")).all()
    finally:
        engine.dispose()
    assert masked, "the test county has data-quality problems to show"
    # an ID number as the platform defines it (GB 11643 shape with a real birth date; a 15-digit visit number
    # whose "date" is 0200-00 is not one)
    assert not [row for row in masked if any(v and ID_NUMBER.search(v) for v in row)]


MASKING_CASES = {
    "410182199003071234": mask_id_number("410182199003071234"),
    "41018219900307123X": mask_id_number("41018219900307123X"),
    "410182900307123": mask_id_number("410182900307123"),
    "13812345678": mask_phone("13812345678"),
    "身份证号 410182199003071234 与电话 13812345678 不符": "身份证号 410182************ 与电话 138****5678 不符",
    "MZ2027021300012345678": "MZ2027021300012345678",  # a visit number is not an ID number
    "2027-02-13": "2027-02-13",
}


def test_the_dbt_masking_macro_is_generated_from_the_platform_masks():
    assert MASKING_MACRO.read_text(encoding="utf-8") == render_masking_macro(), (
        "dbt/macros/privacy.sql is stale: run ./drc generate"
    )


def test_the_marts_mask_id_and_mobile_numbers_in_text_as_the_api_does(pipeline_done):
    """The dbt macro behind the de-identified problem columns (dbt/macros/privacy.sql) against core.privacy."""
    cases = list(MASKING_CASES)
    sql = compile_sql(
        "select " + ", ".join(f"{{{{ mask_personal_text(\"'{text}'\") }}}} as c{i}" for i, text in enumerate(cases))
    )
    with warehouse_engine().connect() as conn:
        masked = conn.exec_driver_sql(sql).one()  # as dbt runs it: `(?:18` is no bind parameter
    assert dict(zip(cases, masked, strict=True)) == MASKING_CASES


def test_the_auditor_reads_the_audit_trail_only_and_cannot_change_it(pipeline_done):
    engine = _engine_as("drc_audit", "DRC_AUDIT_DB_PASSWORD")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM audit.access_log")).scalar()
            conn.execute(sa.text("SELECT count(*) FROM audit.api_token")).scalar()
            _assert_refused(
                conn,
                (
                    "SELECT count(*) FROM marts.dim_patient",
                    "SELECT count(*) FROM ods.person",
                    "INSERT INTO audit.access_log (subject, method, path, action, result, status_code) "
                    "VALUES ('x', 'GET', '/', 'read', 'ok', 200)",
                    "UPDATE audit.access_log SET detail = 'x'",
                    "DELETE FROM audit.api_token",
                ),
            )
    finally:
        engine.dispose()
