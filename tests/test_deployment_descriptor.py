"""docker-compose.yml describes the same services the native set-up starts (it cannot run here)."""

from __future__ import annotations

import re

import yaml

from core.settings import PROJECT_ROOT


def _native_services() -> set[str]:
    script = (PROJECT_ROOT / "scripts" / "services.sh").read_text(encoding="utf-8")
    spawned = set(re.findall(r"^\s*spawn ([a-z-]+) ", script, flags=re.M))
    return spawned | {"postgres", "mariadb"}


def test_compose_file_parses_and_names_every_native_service():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    native = _native_services()
    assert native >= {"postgres", "mariadb", "airflow-api-server", "airflow-scheduler", "superset", "api"}
    assert native <= set(services), f"missing in docker-compose.yml: {sorted(native - set(services))}"
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service {name} has neither image nor build"
    assert "wal_level=logical" in " ".join(map(str, services["postgres"].get("command", [])))
    assert "binlog_format=ROW" in " ".join(map(str, services["mariadb"].get("command", [])))


def test_databases_stay_on_the_compose_network_with_their_own_superuser_passwords():
    text = (PROJECT_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    services = yaml.safe_load(text)["services"]
    for name in ("postgres", "mariadb"):
        assert "ports" not in services[name], f"{name} is published beyond the compose network"
        assert "env_file" not in services[name], f"{name} gets every secret in .env"
    superusers = {
        "postgres": services["postgres"]["environment"]["POSTGRES_PASSWORD"],
        "mariadb": services["mariadb"]["environment"]["MARIADB_ROOT_PASSWORD"],
    }
    for name, variable in superusers.items():
        assert text.count(variable) == 1, f"{name}'s superuser password {variable} is used elsewhere too"
    assert "env_file" not in services["superset"], "Superset gets only its own secrets"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).count(":") >= 2, f"{name} publishes {port} on every interface"
