"""SQLAlchemy engines, created once per process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import sqlalchemy as sa

from core.settings import get_settings

_ENGINES: list[sa.Engine] = []


def track_engine(engine: sa.Engine) -> sa.Engine:
    """Remember an engine so a forked child can drop its pooled connections."""
    _ENGINES.append(engine)
    return engine


def forget_connections_after_fork() -> None:
    """In a forked child: never reuse the parent's pooled connections (they belong to the parent)."""
    for engine in _ENGINES:
        engine.dispose(close=False)


@lru_cache(maxsize=1)
def warehouse_engine() -> sa.Engine:
    """The pipeline's engine. A list of parameter rows goes in pages (psycopg2's execute_batch / VALUES lists), not
    one round trip per row: a quality run stores ~60,000 audit and score rows of a small county."""
    return track_engine(
        sa.create_engine(
            get_settings().warehouse_url,
            pool_pre_ping=True,
            hide_parameters=True,
            executemany_mode="values_plus_batch",
            executemany_batch_page_size=1000,
        )
    )


API_CONNECTIONS_PER_WORKER = 40


@lru_cache(maxsize=1)
def api_engine() -> sa.Engine:
    """The lookup API's own warehouse role (drc_api): reads what the API serves, appends audit rows."""
    settings = get_settings()
    password = os.environ.get("DRC_API_DB_PASSWORD")
    if not password:
        raise RuntimeError("DRC_API_DB_PASSWORD is not set: start the API through ./drc, which loads .env")
    url = sa.URL.create("postgresql+psycopg2", "drc_api", password, settings.pg_host, settings.pg_port, "warehouse")
    # As many pooled connections as requests a worker serves at once (anyio's 40 threads): a connection opened
    # beyond the pool would be closed on return and reopened for a later request (a PostgreSQL fork and login,
    # then cold catalog caches: a first query plans in ~5 ms instead of ~0.2 ms).
    return track_engine(
        sa.create_engine(
            url, pool_size=API_CONNECTIONS_PER_WORKER, max_overflow=0, pool_recycle=1800, hide_parameters=True
        )
    )


def ensure_schemas(*schemas: str) -> None:
    with warehouse_engine().begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def apply_ddl(schema: str, statements: Sequence[str]) -> None:
    """Create a platform schema's tables and views, once, even when parallel tasks start together: the
    statements run under a transaction-scoped advisory lock named after the schema."""
    with warehouse_engine().begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"xydrc ddl {schema}"})
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))  # under the lock: two creators race
        for statement in statements:
            conn.execute(sa.text(statement))
