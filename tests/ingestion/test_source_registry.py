"""Source registry validation: every registered source loads; a malformed YAML names the file and the field."""

from __future__ import annotations

import re

import pytest

from cli.main import main as drc_main
from ingestion.registry import MODES, SourceConfigError, load_source, load_sources

TABLE = "tables: [{name: T, keys: [ID], watermark: TS}]"
BASE = (
    "name: x\norg_code: '410182999'\nmode: jdbc_incremental\n"
    "connection: {kind: mariadb, database: d, user: his, password_env: DRC_HIS_DB_PASSWORD}\n"
)


def test_every_simulated_system_is_registered_with_its_natural_mode():
    sources = load_sources()
    modes = {name: s.mode for name, s in sources.items()}
    assert modes == {
        "rmyy_his": "mysql_binlog",
        "zyy_his": "pg_logical",
        "cloud_his": "pg_logical",
        "public_health": "jdbc_incremental",
        "referral": "jdbc_incremental",
        "fy_files": "file_drop",
        "population_register": "file_drop",
        "yb_settlement": "file_drop",
        "private_api": "http_api",
    }
    assert set(modes.values()) | {"jdbc_snapshot"} == set(MODES)
    assert all(t.keys for s in sources.values() for t in s.tables)


def test_validate_command_accepts_the_registry_and_lists_every_source(capsys):
    assert drc_main(["ingest", "validate"]) == 0
    listed = capsys.readouterr().err  # the CLI reports on stderr
    for name, source in load_sources().items():
        assert f"{name}: {source.mode}" in listed


@pytest.mark.parametrize(
    "body, message",
    [
        (
            BASE.replace("jdbc_incremental", "ftp") + "tables: [{name: T, keys: [ID]}]",
            "bad.yaml: mode 'ftp' is not one of",
        ),
        (BASE + "tables: [{name: T, keys: [ID]}]", "bad.yaml: tables[0]: missing required field 'watermark'"),
        (BASE.replace("org_code: '410182999'\n", "") + TABLE, "bad.yaml: missing required field 'org_code'"),
        (
            BASE.replace("password_env: DRC_HIS_DB_PASSWORD", "password: hunter2") + TABLE,
            "bad.yaml: connection holds a secret in clear text",
        ),
        (
            BASE.replace("kind: mariadb", "kind: files") + TABLE,
            "bad.yaml: connection.kind 'files' cannot be collected by mode 'jdbc_incremental'",
        ),
        (
            BASE + "tables: [{name: T, keys: [ID], watermark: TS}]\nstrategy: {window: '8 to 5'}",
            "bad.yaml: strategy.window '8 to 5' is not 'HH:MM-HH:MM'",
        ),
        (BASE + "tables: [{name: T, keys: ID, watermark: TS}]", "bad.yaml: tables[0]: 'keys' must be a list"),
    ],
)
def test_malformed_source_names_file_and_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(SourceConfigError, match=re.escape(message)):
        load_source(path)
