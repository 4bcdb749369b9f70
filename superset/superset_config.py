# Superset 6.1 settings for 荥阳医共体数据资源中心.
# Loaded via SUPERSET_CONFIG_PATH (scripts/common.sh); everything secret comes from .env,
# which ./drc exports. Only what differs from Superset's defaults is set here.
import os
import sys
from urllib.parse import quote


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        # Superset would otherwise start with its built-in dummy key / SQLite metadata DB.
        sys.exit(f"superset_config.py: environment variable {name} is not set "
                 f"(run through ./drc, which exports .env)")
    return value


SECRET_KEY = _env("DRC_SUPERSET_SECRET_KEY")

# Metadata DB: role/database `superset` on the platform's PostgreSQL (created by start_postgres).
SQLALCHEMY_DATABASE_URI = (
    f"postgresql+psycopg2://superset:{quote(_env('DRC_SUPERSET_DB_PASSWORD'), safe='')}"
    f"@127.0.0.1:{_env('DRC_PG_PORT')}/superset"
)

# Chinese UI by default; English stays selectable (Superset's default LANGUAGES is empty,
# which hides the language picker).
BABEL_DEFAULT_LOCALE = "zh"
LANGUAGES = {
    "zh": {"flag": "cn", "name": "简体中文"},
    "en": {"flag": "us", "name": "English"},
}
APP_NAME = "荥阳医共体数据资源中心"

# No examples: nothing here runs `superset load_examples` (it downloads from GitHub); our
# dashboards are provisioned from superset/assets by superset/provision.py.

# Caching: one host, no Redis. gunicorn runs several worker processes (and provision.py is yet
# another), so a per-process SimpleCache would disagree between them; a small file-system cache
# under SUPERSET_HOME is shared by all. Chart query results are NOT cached (NullCache): the
# warehouse is local and a dashboard must show the mart as it is right after a pipeline run.
# Filter state / explore form data keep Superset's default (the metadata DB, also shared).
CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": os.path.join(os.environ.get("SUPERSET_HOME", os.path.expanduser("~/.superset")),
                              "cache"),
    "CACHE_DEFAULT_TIMEOUT": 300,
    "CACHE_THRESHOLD": 2000,
}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}

# CSRF stays on (Superset's default exempt list already covers chart data). Provisioning uses
# Superset's import command in-process, so no API endpoint needs exempting.
WTF_CSRF_ENABLED = True

# Served on http://127.0.0.1 / localhost without TLS: cookies must not be marked Secure and
# Talisman must not redirect to https (both are also Superset's defaults; pinned here on purpose).
SESSION_COOKIE_SECURE = False
SESSION_COOKIE_SAMESITE = "Lax"
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],  # no external telemetry pixels (offline site)
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
