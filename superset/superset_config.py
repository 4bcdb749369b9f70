# Superset 6.1 settings for 荥阳医共体数据资源中心.
# Loaded via SUPERSET_CONFIG_PATH (scripts/common.sh); everything secret comes from .env,
# which ./drc exports. Only what differs from Superset's defaults is set here.
import json
import os
import sys
import time
from urllib.parse import quote

# Superset stores naive timestamps and its front end reads them as UTC, so every Superset process
# (gunicorn, CLI, provision.py) must run in UTC even though ./drc exports TZ=Asia/Shanghai for the
# pipeline; otherwise "modified" shows "8 hours later". Mart dates are DATE columns: unaffected.
os.environ["TZ"] = "UTC"
time.tzset()


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        # Superset would otherwise start with its built-in dummy key / SQLite metadata DB.
        sys.exit(f"superset_config.py: environment variable {name} is not set (run through ./drc, which exports .env)")
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

# Superset 6.1.0's zh front-end pack mistranslates strings our dashboards show, e.g. the table
# totals row "Summary" as 星期日 (Sunday), the login button as "Not In" and every "Choose..." as
# 选择数据库. Serve the pack with these fixed; also to the login page (upstream requires a login
# to fetch the pack, so the login page stayed English). The pack is the public upstream file, so
# serving it anonymously is safe.
_ZH_FIXES = {
    "Summary": "汇总",
    "Sign in": "登录",
    "Enter your login and password below:": "请输入用户名和密码：",
    "entries": "条",
    "entries per page": "条/页",
    "%s record": "%s 条记录",
    "Filters and controls": "筛选与控件",
    "Users": "用户",
    "Select all": "全选",
    "Not in": "不属于",
    "not containing": "不包含",
    "Choose...": "请选择…",  # upstream: 选择数据库 ("choose a database") on every list and filter select
}


def FLASK_APP_MUTATOR(app):
    from flask import Response, request

    pack: list[bytes] = []

    @app.before_request
    def _zh_language_pack():
        if request.path.rstrip("/") != "/superset/language_pack/zh":
            return None
        if not pack:
            import superset

            src = os.path.join(os.path.dirname(superset.__file__), "translations", "zh", "LC_MESSAGES", "messages.json")
            with open(src, encoding="utf-8") as f:
                data = json.load(f)
            data["locale_data"]["superset"].update({k: [v] for k, v in _ZH_FIXES.items()})
            pack.append(json.dumps(data, ensure_ascii=False).encode("utf-8"))
        return Response(pack[0], mimetype="application/json")


# No examples: nothing here runs `superset load_examples` (it downloads from GitHub); our
# dashboards are built from config/dashboards/ by superset/bundle.py and provisioned by superset/provision.py.

# Caching: one host, no Redis. gunicorn runs several worker processes (and provision.py is yet
# another), so a per-process SimpleCache would disagree between them; small file-system caches
# under SUPERSET_HOME are shared by all. Filter state / explore form data keep Superset's default
# (the metadata DB, also shared).
_HOME = os.environ.get("SUPERSET_HOME", os.path.expanduser("~/.superset"))
CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": os.path.join(_HOME, "cache"),
    "CACHE_DEFAULT_TIMEOUT": 300,
    "CACHE_THRESHOLD": 2000,
}
# Chart query results: kept a day, because the marts change only when the pipeline runs, and
# `./drc transform` (which rebuilds them) and provisioning empty this folder (DATA_CACHE_DIR), so
# a dashboard never shows marts older than the last run. Datasets over live monitoring views
# (collection) set their own short cache_timeout. Halves the server time of a chart (bench/).
DATA_CACHE_DIR = os.path.join(_HOME, "data_cache")
DATA_CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": DATA_CACHE_DIR,
    "CACHE_DEFAULT_TIMEOUT": 24 * 3600,
    "CACHE_THRESHOLD": 20000,
}

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

# Dashboards are opened by role (config/access/roles.yaml): with DASHBOARD_RBAC a dashboard that lists roles is
# visible to those roles only, and superset/provision.py sets them. Public/guest access stays off (no
# PUBLIC_ROLE_LIKE, no EMBEDDED_SUPERSET). Every chart loads when its dashboard opens, not when
# scrolled into view (no DASHBOARD_VIRTUALIZATION): the cockpit is a wall screen nobody scrolls.
FEATURE_FLAGS = {"DASHBOARD_RBAC": True, "DASHBOARD_VIRTUALIZATION": False}
