"""The platform collects each database source with its own account, as a hospital grants it: it reads every
configured table and cannot change the member system (no insert, delete or DDL), and only the log-based modes
may replicate."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ingestion.registry import SourceConfig, load_sources

DATABASE_KINDS = ("postgresql", "mariadb", "mysql")
LOG_BASED_MODES = ("pg_logical", "mysql_binlog")
SOURCES = [s for s in load_sources().values() if s.connection.kind in DATABASE_KINDS]


def _qualified(source: SourceConfig, table: str) -> str:
    return f"{source.connection.schema}.{table}" if source.connection.schema else table


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_the_collection_account_reads_and_cannot_write(pipeline_done, source: SourceConfig):
    assert source.connection.user not in ("his", "root", "postgres"), (
        f"{source.name} is collected with the member system's owner account"
    )
    engine = sa.create_engine(source.connection.sqlalchemy_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for table in source.tables:
                conn.execute(sa.text(f"SELECT 1 FROM {_qualified(source, table.name)} LIMIT 1"))
        first = _qualified(source, source.tables[0].name)
        for statement in (
            f"DELETE FROM {first}",
            f"CREATE TABLE {_qualified(source, 'drc_probe')} (x int)",
            f"DROP TABLE {first}",
        ):
            with (
                engine.connect() as conn,
                pytest.raises(sa.exc.DBAPIError, match=r"(?i)denied|permission|must be owner"),
            ):
                conn.execute(sa.text(statement))
                conn.rollback()
        with engine.connect() as conn:
            if source.connection.kind == "postgresql":
                replicates = conn.execute(sa.text("SELECT rolreplication FROM pg_roles WHERE rolname = current_user"))
                assert replicates.scalar() == (source.mode in LOG_BASED_MODES)
            else:
                grants = " ".join(row[0] for row in conn.execute(sa.text("SHOW GRANTS")))
                assert ("REPLICATION SLAVE" in grants) == (source.mode in LOG_BASED_MODES)
                assert "ALL PRIVILEGES" not in grants
    finally:
        engine.dispose()
