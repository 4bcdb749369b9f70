"""The platform's state and secrets are readable by the platform's service users only.

The lake, archive, inbox, quarantine and logs hold what member systems sent (names, 身份证号, diagnoses); any
other local account must not list or read them, while the databases' own users (postgres, mysql) still reach
their data directories inside it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from core.settings import PROJECT_ROOT

STATE = Path(os.environ["DRC_STATE_DIR"])


def _as(user: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *command], capture_output=True, text=True, timeout=30)


def test_no_other_local_user_can_list_or_read_the_platform_state():
    mode = STATE.stat().st_mode
    assert not mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH), f"{STATE} is open to every user: {oct(mode)}"
    listing = _as("nobody", "ls", str(STATE))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    config = STATE / "mariadb.cnf"  # a file every start writes, whatever ran before
    assert config.exists()
    assert _as("nobody", "cat", str(config)).returncode != 0


def test_the_database_service_users_still_reach_their_data():
    assert _as("postgres", "test", "-r", str(STATE / "pg" / "PG_VERSION")).returncode == 0
    assert _as("mysql", "test", "-d", str(STATE / "mariadb" / "mysql")).returncode == 0


def test_the_secrets_file_is_readable_by_its_owner_only():
    mode = (PROJECT_ROOT / ".env").stat().st_mode
    assert not mode & (stat.S_IRWXG | stat.S_IRWXO), f".env is readable beyond its owner: {oct(mode)}"


def _secrets() -> dict[str, str]:
    """Every password, key and secret of .env and those derived from it, as the services received them."""
    names = ("PASSWORD", "SECRET", "_KEY")
    return {n: v for n, v in os.environ.items() if n.startswith("DRC_") and any(k in n for k in names) and len(v) >= 8}


def test_no_running_process_shows_a_secret_on_its_command_line():
    """`ps` shows every process's arguments to every local user: a secret must reach a service by its
    environment, a file or stdin. Checked on everything running now (databases, Airflow, Superset, the API)."""
    secrets = _secrets()
    assert {"DRC_PG_PASSWORD", "DRC_SUPERSET_ADMIN_PASSWORD", "DRC_API_DB_PASSWORD"} <= set(secrets)
    shown = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        program = arguments.split("\0", 1)[0]  # named without its arguments: the report must not repeat the secret
        shown += [
            f"{name} on the command line of pid {cmdline.parent.name} ({program})"
            for name, value in secrets.items()
            if value in arguments
        ]
    assert not shown, shown
