"""Source registry validation: a malformed YAML names the file and the field."""

from __future__ import annotations

import pytest

from ingestion.registry import SourceConfigError, load_source, load_sources


def test_registered_sources_load():
    sources = load_sources()
    assert sources["rmyy_his"].org_code == "410182001"
    assert [t.name for t in sources["rmyy_his"].tables] == ["GH_BRJBXX", "MZ_JZJL", "MZ_ZDJL"]


@pytest.mark.parametrize("body, message", [
    ("name: x\norg_code: '1'\nkind: mariadb\nmode: ftp\nconnection: {database: d}\ntables: [{name: T}]",
     "bad.yaml: mode 'ftp' is not one of"),
    ("name: x\norg_code: '1'\nkind: mariadb\nmode: jdbc_incremental\nconnection: {database: d}\n"
     "tables: [{name: T, keys: [ID]}]", "bad.yaml: tables[0]: missing required field 'watermark'"),
    ("name: x\nkind: mariadb\nmode: jdbc_incremental\nconnection: {database: d}\n"
     "tables: [{name: T, keys: [ID], watermark: TS}]", "bad.yaml: missing required field 'org_code'"),
])
def test_malformed_source_names_file_and_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(SourceConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_source(path)
