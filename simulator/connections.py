"""The simulated member systems' own databases, reached as their owner (role ``his``): the vendors' side.

The platform never connects this way: it collects through the source registry (``config/sources``), each
source with the least-privilege account its hospital granted (read and replication only). The simulator plays
the hospital's DBA too: :func:`grant_collector` gives that account read access to a schema it (re)creates.
"""

from __future__ import annotations

import os
from functools import lru_cache

import sqlalchemy as sa

from core.db import track_engine
from core.settings import get_settings
from ingestion.registry import load_source, sources_dir

OWNER = "his"


def owner_password() -> str:
    password = os.environ.get("DRC_HIS_DB_PASSWORD")
    if not password:
        raise RuntimeError("DRC_HIS_DB_PASSWORD is not set: run the simulator through ./drc, which loads .env")
    return password


def source_pg_url(database: str) -> str:
    """A simulated member system's PostgreSQL database, as its owner."""
    settings = get_settings()
    return str(
        sa.URL.create(
            "postgresql+psycopg2", OWNER, owner_password(), settings.pg_host, settings.pg_port, database
        ).render_as_string(hide_password=False)
    )


def mariadb_url(database: str) -> str:
    """The 人民医院's MariaDB database, as its owner."""
    settings = get_settings()
    return str(
        sa.URL.create(
            "mysql+pymysql",
            OWNER,
            owner_password(),
            settings.mariadb_host,
            settings.mariadb_port,
            database,
            query={"charset": "utf8mb4"},
        ).render_as_string(hide_password=False)
    )


@lru_cache(maxsize=8)
def source_pg_engine(database: str) -> sa.Engine:
    # values_plus_batch: executemany becomes multi-row INSERTs (a simulated county day is ~100k rows).
    return track_engine(
        sa.create_engine(
            source_pg_url(database), pool_pre_ping=True, hide_parameters=True, executemany_mode="values_plus_batch"
        )
    )


@lru_cache(maxsize=8)
def mariadb_engine(database: str) -> sa.Engine:
    return track_engine(sa.create_engine(mariadb_url(database), pool_pre_ping=True, hide_parameters=True))


def collector_account(source_system: str) -> str | None:
    """The account the platform collects ``source_system`` with (its registry entry's ``connection.user``), or
    None when no registry entry collects it (a test's scratch copy of a system)."""
    path = sources_dir() / f"{source_system}.yaml"
    return load_source(path).connection.user if path.exists() else None


def grant_collector(conn: sa.Connection, source_system: str, schema: str) -> None:
    """Let the platform's collection account read ``schema`` (its tables now and later), nothing more: what a
    hospital's DBA grants. Run by the schema's owner each time the schema is (re)created."""
    account = collector_account(source_system)
    if account is None:
        return
    quote = conn.dialect.identifier_preparer.quote
    role, schema = quote(account), quote(schema)
    conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
    conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
    conn.execute(sa.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}"))
