"""Settings read once from the environment (``./drc`` exports ``.env``); every layer imports them from here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "config"


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run commands through ./drc, which loads .env")
    return value


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    lake_root: str
    spark_master: str
    pg_host: str
    pg_port: int
    pg_password: str
    mariadb_host: str
    mariadb_port: int
    api_signing_key: str
    empi_salt: str

    @property
    def warehouse_url(self) -> str:
        """SQLAlchemy URL of the PostgreSQL warehouse (ods, staging, marts, dq, ingest schemas)."""
        return f"postgresql+psycopg2://drc:{self.pg_password}@{self.pg_host}:{self.pg_port}/warehouse"

    @property
    def warehouse_jdbc(self) -> tuple[str, dict[str, str]]:
        url = f"jdbc:postgresql://{self.pg_host}:{self.pg_port}/warehouse"
        return url, {"user": "drc", "password": self.pg_password, "driver": "org.postgresql.Driver"}

    @property
    def exports_dir(self) -> Path:
        return self.state_dir / "exports"

    def lake_path(self, layer: str, *parts: str) -> str:
        return "/".join([self.lake_root.rstrip("/"), layer, *parts])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    state_dir = Path(_required("DRC_STATE_DIR"))
    return Settings(
        state_dir=state_dir,
        lake_root=os.environ.get("DRC_LAKE_ROOT", str(state_dir / "lake")),
        spark_master=os.environ.get("SPARK_MASTER", "local[2]"),
        pg_host=os.environ.get("DRC_PG_HOST", "127.0.0.1"),
        pg_port=int(_required("DRC_PG_PORT")),
        pg_password=_required("DRC_PG_PASSWORD"),
        mariadb_host=os.environ.get("DRC_MARIADB_HOST", "127.0.0.1"),
        mariadb_port=int(_required("DRC_MARIADB_PORT")),
        api_signing_key=_required("DRC_API_SIGNING_KEY"),
        empi_salt=_required("DRC_EMPI_SALT"),
    )
