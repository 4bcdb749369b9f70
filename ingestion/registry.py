"""Source registry (采集来源/任务/策略): one YAML file per source under config/sources/, validated on load.

A source names its connection (secrets only by environment-variable reference), its collection mode, the
tables/endpoints/files it delivers with their business keys, a schedule and a strategy (batch size, allowed
time window, rate limit) and the institutions it belongs to. Onboarding a source of a supported kind is a
new YAML file: see docs/onboarding.md.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any

import yaml

from core.settings import CONFIG_DIR, get_settings

DEFAULT_SOURCES_DIR = CONFIG_DIR / "sources"

# mode -> (module implementing ``collect(spark, source) -> list[TableResult]``, connection kinds it accepts)
MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mysql_binlog": ("ingestion.mysql_binlog", ("mariadb", "mysql")),
    "pg_logical": ("ingestion.pg_logical", ("postgresql",)),
    "jdbc_incremental": ("ingestion.jdbc", ("mariadb", "mysql", "postgresql")),
    "jdbc_snapshot": ("ingestion.jdbc", ("mariadb", "mysql", "postgresql")),
    "file_drop": ("ingestion.file_drop", ("files",)),
    "http_api": ("ingestion.http_api", ("http",)),
}
# Table fields each mode needs besides ``name`` and ``keys``.
MODE_TABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "jdbc_incremental": ("watermark",),
    "file_drop": ("pattern",),
    "http_api": ("endpoint",),
}
CONNECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "mariadb": ("database", "user", "password_env"),
    "mysql": ("database", "user", "password_env"),
    "postgresql": ("database", "user", "password_env"),
    "files": ("inbox",),
    "http": ("base_url", "client_id", "secret_env"),
}


class SourceConfigError(ValueError):
    """A source YAML file is malformed; the message names the file and the field."""


def expand_env(text: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the environment (inbox folders, API base URLs, ports)."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise SourceConfigError(f"environment variable {name} (used in {text}) is not set")
        return default

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, text)


def sources_dir() -> Path:
    """Where source YAML files live (``DRC_SOURCES_DIR`` overrides, e.g. for an extra test source)."""
    return Path(os.environ.get("DRC_SOURCES_DIR", DEFAULT_SOURCES_DIR))


@dataclass(frozen=True)
class Connection:
    kind: str
    database: str | None = None
    schema: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password_env: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def secret(self) -> str:
        """The password or client secret, read from the environment variable the YAML names."""
        name = self.password_env or self.options.get("secret_env")
        value = os.environ.get(name or "")
        if not value:
            raise SourceConfigError(f"environment variable {name} (the source's secret) is not set")
        return value

    def address(self) -> tuple[str, int]:
        settings = get_settings()
        if self.kind in ("mariadb", "mysql"):
            default = (settings.mariadb_host, settings.mariadb_port)
        else:
            default = (settings.pg_host, settings.pg_port)
        return self.host or default[0], int(self.port or default[1])

    def sqlalchemy_url(self, database: str | None = None) -> Any:
        import sqlalchemy as sa

        host, port = self.address()
        driver = "mysql+pymysql" if self.kind in ("mariadb", "mysql") else "postgresql+psycopg2"
        query = {"charset": "utf8mb4"} if self.kind in ("mariadb", "mysql") else {}
        return sa.URL.create(
            driver,
            username=self.user,
            password=self.secret(),
            host=host,
            port=port,
            database=database or self.database,
            query=query,
        )

    def jdbc(self) -> tuple[str, dict[str, str]]:
        host, port = self.address()
        if self.kind in ("mariadb", "mysql"):
            # The mysql scheme makes Spark pick its MySQL dialect (backtick quoting); MariaDB's driver allows it.
            url = f"jdbc:mysql://{host}:{port}/{self.database}?permitMysqlScheme"
            driver = "org.mariadb.jdbc.Driver"
        else:
            url, driver = f"jdbc:postgresql://{host}:{port}/{self.database}", "org.postgresql.Driver"
        return url, {"user": self.user or "", "password": self.secret(), "driver": driver}

    def describe(self) -> str:
        """For logs and errors: where, never the secret."""
        if self.kind in ("files", "http"):
            return f"{self.kind} {self.options.get('inbox') or self.options.get('base_url')}"
        host, port = self.address()
        return f"{self.kind}://{self.user}@{host}:{port}/{self.database}"


@dataclass(frozen=True)
class TableConfig:
    name: str
    keys: tuple[str, ...]
    org_column: str | None = None  # multi-tenant sources: the column holding the institution
    business_time: str | None = None  # column whose date is the business day (timeliness)
    business_time_format: str | None = None
    commit_time: str | None = None  # the row's own last-change timestamp, when the source keeps one
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def watermark(self) -> str:
        return self.options["watermark"]


@dataclass(frozen=True)
class Strategy:
    batch_size: int = 50_000
    window: tuple[time, time] | None = None  # allowed collection window, local time; None = any time
    rate_limit_per_second: float | None = None
    parallelism: int = 2
    late_arrival_minutes: int = 60
    retries: int = 3
    retry_backoff_seconds: float = 2.0
    max_delete_share: float = 0.2  # snapshots: deleting more of a table than this needs confirmation
    lock_wait_seconds: float = 10.0  # a run finding another run of the source waits this long, then skips
    alert_slot_wal_mb: float = 1024  # pg_logical: report when the replication slot retains more WAL
    max_slot_wal_mb: float = 5120  # pg_logical: stop holding the slot for failed tables beyond this

    def allows(self, moment: datetime) -> bool:
        if self.window is None:
            return True
        start, end = self.window
        now = moment.time()
        return start <= now < end if start <= end else (now >= start or now < end)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    description: str
    org_code: str
    institutions: tuple[str, ...]
    mode: str
    connection: Connection
    tables: tuple[TableConfig, ...]
    strategy: Strategy = Strategy()
    schedule: str = "@daily"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.connection.kind

    @property
    def database(self) -> str | None:
        return self.connection.database

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name.lower() == name.lower():
                return table
        raise KeyError(f"source {self.name} has no table {name}")

    def collector(self):
        """The mode's ``collect(spark, source)`` function."""
        module = importlib.import_module(MODES[self.mode][0])
        return module.collect_snapshot if self.mode == "jdbc_snapshot" else module.collect


def _require(raw: dict, name: str, where: str):
    if not isinstance(raw, dict) or raw.get(name) in (None, "", [], {}):
        raise SourceConfigError(f"{where}: missing required field '{name}'")
    return raw[name]


def _window(text: str | None, where: str) -> tuple[time, time] | None:
    if not text:
        return None
    try:
        start, end = (time.fromisoformat(part.strip().replace("24:00", "00:00")) for part in text.split("-"))
    except ValueError:
        raise SourceConfigError(f"{where}: strategy.window '{text}' is not 'HH:MM-HH:MM'") from None
    return start, end


def _share(value: Any, where: str) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = -1.0
    if not 0 <= share <= 1:
        raise SourceConfigError(f"{where}: '{value}' is not a share between 0 and 1 (e.g. 0.2 = 20 %)")
    return share


TABLE_FIELDS = {"name", "keys", "org_column", "business_time", "business_time_format", "commit_time"}
SOURCE_FIELDS = {
    "name",
    "description",
    "org_code",
    "institutions",
    "mode",
    "connection",
    "tables",
    "strategy",
    "schedule",
    "options",
    "late_arrival_minutes",
}


def load_source(path: Path) -> SourceConfig:
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SourceConfigError(f"{where}: not valid YAML ({exc})") from None
    unknown = set(raw) - SOURCE_FIELDS
    if unknown:
        raise SourceConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(SOURCE_FIELDS)}")
    mode = _require(raw, "mode", where)
    if mode not in MODES:
        raise SourceConfigError(f"{where}: mode '{mode}' is not one of {sorted(MODES)}")
    raw_conn = _require(raw, "connection", where)
    kind = _require(raw_conn, "kind", f"{where}: connection")
    if kind not in MODES[mode][1]:
        raise SourceConfigError(
            f"{where}: connection.kind '{kind}' cannot be collected by mode '{mode}' "
            f"(use one of {list(MODES[mode][1])})"
        )
    if "password" in raw_conn or "secret" in raw_conn:
        raise SourceConfigError(
            f"{where}: connection holds a secret in clear text; name an environment "
            "variable with password_env/secret_env instead"
        )
    for name in CONNECTION_FIELDS[kind]:
        _require(raw_conn, name, f"{where}: connection")
    known = {"kind", "database", "schema", "host", "port", "user", "password_env"}
    connection = Connection(
        kind=kind,
        database=raw_conn.get("database"),
        schema=raw_conn.get("schema"),
        host=os.environ.get(raw_conn["host_env"]) if raw_conn.get("host_env") else raw_conn.get("host"),
        port=os.environ.get(raw_conn["port_env"]) if raw_conn.get("port_env") else raw_conn.get("port"),
        user=raw_conn.get("user"),
        password_env=raw_conn.get("password_env"),
        options={k: expand_env(v) if isinstance(v, str) else v for k, v in raw_conn.items() if k not in known},
    )

    raw_strategy = raw.get("strategy") or {}
    strategy = Strategy(
        batch_size=int(raw_strategy.get("batch_size", 50_000)),
        window=_window(raw_strategy.get("window"), where),
        rate_limit_per_second=raw_strategy.get("rate_limit_per_second"),
        parallelism=int(raw_strategy.get("parallelism", 2)),
        late_arrival_minutes=int(raw_strategy.get("late_arrival_minutes", raw.get("late_arrival_minutes", 60))),
        retries=int(raw_strategy.get("retries", 3)),
        retry_backoff_seconds=float(raw_strategy.get("retry_backoff_seconds", 2.0)),
        max_delete_share=_share(raw_strategy.get("max_delete_share", 0.2), f"{where}: strategy.max_delete_share"),
        lock_wait_seconds=float(raw_strategy.get("lock_wait_seconds", 10)),
        alert_slot_wal_mb=float(raw_strategy.get("alert_slot_wal_mb", 1024)),
        max_slot_wal_mb=float(raw_strategy.get("max_slot_wal_mb", 5120)),
    )

    tables = []
    for i, table in enumerate(_require(raw, "tables", where)):
        at = f"{where}: tables[{i}]"
        needed = () if table.get("snapshot") else MODE_TABLE_FIELDS.get(mode, ())
        for name in ("name", "keys", *needed):
            _require(table, name, at)
        if not isinstance(table["keys"], list):
            raise SourceConfigError(f"{at}: 'keys' must be a list of column names")
        if "max_delete_share" in table:
            _share(table["max_delete_share"], f"{at}: max_delete_share")
        tables.append(
            TableConfig(
                name=table["name"],
                keys=tuple(table["keys"]),
                org_column=table.get("org_column"),
                business_time=table.get("business_time"),
                business_time_format=table.get("business_time_format"),
                commit_time=table.get("commit_time"),
                options={k: v for k, v in table.items() if k not in TABLE_FIELDS},
            )
        )
    names = [t.name.lower() for t in tables]
    if len(set(names)) != len(names):
        raise SourceConfigError(f"{where}: a table is listed twice")

    org_code = str(_require(raw, "org_code", where))
    return SourceConfig(
        name=_require(raw, "name", where),
        description=raw.get("description", ""),
        org_code=org_code,
        institutions=tuple(str(i) for i in raw.get("institutions") or [org_code]),
        mode=mode,
        connection=connection,
        tables=tuple(tables),
        strategy=strategy,
        schedule=raw.get("schedule", "@daily"),
        options=raw.get("options") or {},
    )


def load_sources(directory: Path | None = None) -> dict[str, SourceConfig]:
    sources: dict[str, SourceConfig] = {}
    for path in sorted((directory or sources_dir()).glob("*.yaml")):
        source = load_source(path)
        if source.name in sources:
            raise SourceConfigError(f"{path.name}: source name '{source.name}' is already used by another file")
        sources[source.name] = source
    return sources
