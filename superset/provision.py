"""Provision Superset from the catalogs: dashboards as code, roles, users and row-level security.

Run with the Superset venv's python, with .env exported (./drc provision-dashboards does both):

    "$(venv_dir superset)/bin/python" superset/provision.py

1. Grants the read-only warehouse role drc_bi the schemas the dashboards read (marts, reference, ingest).
2. Probes every dataset's SQL (config/dashboards/_datasets.yaml) as drc_bi: a mart that lacks a column, or a
   table the role may not read, fails here with the dataset's name, not later as a broken chart.
3. Builds the bundle (superset/bundle.py) and imports it with Superset's own ImportAssetsCommand, in-process
   against the metadata DB (no web server, no login). Objects are matched by uuid and overwritten, so running
   it again is safe and brings Superset back to what the catalogs say.
4. Creates the roles and users of config/access/roles.yaml, dashboard access (DASHBOARD_RBAC) and one
   row-level-security filter per institution user (org_code = its institution).

Passwords are never in files: the warehouse one is passed to the import from DRC_BI_DB_PASSWORD, users' ones are
derived by core.access.password. Nothing secret is printed. Exits 1 with "provision: error: ..." on any failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bundle.py beside this file, and core/ from the repo root (appended: the installed Superset package must win
# over this folder, which shares its name)
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))
REQUIRED_ENV = (
    "DRC_PG_PORT",
    "DRC_PG_PASSWORD",
    "DRC_BI_DB_PASSWORD",
    "DRC_SUPERSET_SECRET_KEY",
    "DRC_SUPERSET_DB_PASSWORD",
    "DRC_SUPERSET_ADMIN_PASSWORD",
)
# The first dashboard (医共体门急诊服务量监测, four charts over fct_daily_outpatient_visits), replaced by the
# catalog-built ones: removed on provisioning so no analyst lands on it.
RETIRED = {
    "dashboards": ["4fbfaf3d-0019-4f9a-8af7-34d9f3e81bef"],
    "charts": [
        "55e978a5-89f9-4783-a574-db710aba283f",
        "f4369d53-9d98-4215-badf-574950cedbcd",
        "9c86be1d-32b0-415f-b125-8ef2d71c5515",
        "35859cc8-3a77-483f-a51e-db27b66fd23c",
    ],
    "datasets": ["50575f0d-b42d-4240-bb4c-d5751b799fef"],
}
DARK_THEME = {
    "algorithm": "dark",
    "token": {
        "colorBgBase": "#07162e",
        "colorPrimary": "#3aa0ff",
        "fontFamily": "'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif",
    },
}
THEME_UUID = "0b7e9b1e-5a55-4d5e-9a54-2c5f1c1b3d01"


def fail(msg: str) -> None:
    print(f"provision: error: {scrub(msg)}", file=sys.stderr)
    sys.exit(1)


def scrub(text: str) -> str:
    """Remove every secret we know of from a message before it is shown."""
    for name in (
        "DRC_PG_PASSWORD",
        "DRC_BI_DB_PASSWORD",
        "DRC_SUPERSET_DB_PASSWORD",
        "DRC_SUPERSET_SECRET_KEY",
        "DRC_SUPERSET_ADMIN_PASSWORD",
    ):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text


def causes(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions it was raised from, outermost first."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) and nxt not in chain:
        chain.append(nxt)
    return chain


def warehouse_url(user: str, password: str):
    from sqlalchemy.engine import URL

    return URL.create(
        "postgresql+psycopg2",
        username=user,
        password=password,
        host="127.0.0.1",
        port=int(os.environ["DRC_PG_PORT"]),
        database="warehouse",
    )


def grant_bi_role() -> None:
    """drc_bi may select the columns the field classification lets it see (config/access/classification.yaml),
    in every relation of its schemas; dbt's post-hooks keep that on every rebuild."""
    from sqlalchemy import create_engine

    from core.classification import apply_grants

    engine = create_engine(warehouse_url("drc", os.environ["DRC_PG_PASSWORD"]))
    try:
        with engine.begin() as conn:
            apply_grants(conn)
    except Exception as exc:
        fail(
            f"cannot grant the warehouse to drc_bi as drc: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0]} (is PostgreSQL up? ./drc setup)"
        )
    finally:
        engine.dispose()


def probe_datasets(datasets) -> dict[str, dict[str, str]]:
    """Each dataset's columns and PostgreSQL types, read by running its SQL as drc_bi (LIMIT 0)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(warehouse_url("drc_bi", os.environ["DRC_BI_DB_PASSWORD"]), future=True)
    types: dict[str, dict[str, str]] = {}
    try:
        with engine.connect() as conn:
            for ds in datasets.values():
                try:
                    conn.execute(text("DROP VIEW IF EXISTS pg_temp.drc_probe"))
                    conn.execute(text(f"CREATE TEMP VIEW drc_probe AS {ds.sql}"))
                    rows = conn.execute(
                        text(
                            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'pg_temp.drc_probe'::regclass AND attnum > 0 AND NOT attisdropped"
                        )
                    )
                    types[ds.name] = {name: re.sub(r"\(.*\)", "", t) for name, t in rows}
                    conn.commit()
                except Exception as exc:
                    conn.rollback()
                    fail(
                        f"dataset {ds.name} (config/dashboards/_datasets.yaml) cannot be read as drc_bi: "
                        f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]} -- has the pipeline built "
                        "the marts (./drc transform)?"
                    )
    except SystemExit:
        raise
    except Exception as exc:
        fail(
            f"cannot connect to the warehouse as drc_bi: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0]} (./drc setup creates the role)"
        )
    finally:
        engine.dispose()
    return types


def contents_for_import(bundle) -> tuple[dict[str, str], dict[str, str]]:
    """The bundle with the warehouse port filled in, and the password for its database file."""
    import yaml
    from sqlalchemy.engine import make_url

    contents = dict(bundle.contents)
    rel = "databases/warehouse.yaml"
    config = yaml.safe_load(contents[rel])
    url = make_url(config["sqlalchemy_uri"]).set(port=int(os.environ["DRC_PG_PORT"]))
    config["sqlalchemy_uri"] = url.render_as_string(hide_password=False)  # still the mask
    contents[rel] = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    return contents, {rel: os.environ["DRC_BI_DB_PASSWORD"]}


def remove_retired(db) -> None:
    from superset.connectors.sqla.models import SqlaTable
    from superset.models.dashboard import Dashboard
    from superset.models.slice import Slice

    for model, key in ((Dashboard, "dashboards"), (Slice, "charts"), (SqlaTable, "datasets")):
        for obj in db.session.query(model).filter(model.uuid.in_(RETIRED[key])).all():
            db.session.delete(obj)
    db.session.commit()


def apply_theme(db, bundle) -> None:
    """Dark dashboards (the large-screen cockpit) get a dark Superset theme."""
    from superset.models.core import Theme
    from superset.models.dashboard import Dashboard

    theme = db.session.query(Theme).filter_by(uuid=THEME_UUID).one_or_none()
    if theme is None:
        theme = Theme(uuid=THEME_UUID, theme_name="大屏深色")
        db.session.add(theme)
    theme.json_data = json.dumps(DARK_THEME, ensure_ascii=False)
    db.session.flush()
    for dash in bundle.dashboards:
        obj = db.session.query(Dashboard).filter_by(uuid=dash["uuid"]).one()
        obj.theme_id = theme.id if dash["theme"] == "dark" else None
    db.session.commit()


def provision_roles(db, security_manager, bundle) -> list[str]:
    """Roles, users, dashboard access and row-level security from config/access/roles.yaml."""
    from superset.connectors.sqla.models import RowLevelSecurityFilter, SqlaTable
    from superset.models.dashboard import Dashboard
    from superset.utils.core import RowLevelSecurityFilterType

    from core.access import load_roles, password

    roles, users = load_roles()
    gamma = security_manager.find_role("Gamma")
    by_slug = {d["slug"]: db.session.query(Dashboard).filter_by(uuid=d["uuid"]).one() for d in bundle.dashboards}
    tables = {name: db.session.query(SqlaTable).filter_by(uuid=ds.uuid).one() for name, ds in bundle.datasets.items()}
    dashboard_roles: dict[str, list] = {slug: [] for slug in by_slug}
    report = []
    for role in roles.values():
        sm_role = security_manager.add_role(role.name)
        slugs = list(by_slug) if role.dashboards is None else list(role.dashboards)
        unknown = set(slugs) - set(by_slug)
        if unknown:
            fail(f"config/access/roles.yaml: role {role.name} names unknown dashboard(s) {', '.join(sorted(unknown))}")
        used = {
            c.spec.get("dataset", "indicator") for d in bundle.dashboards if d["slug"] in slugs for c in d["charts"]
        }
        if role.rows == "own_org":
            keyless = sorted(n for n in used if not bundle.datasets[n].org_column)
            if keyless:
                fail(
                    f"role {role.name} sees only its own institution, but its dashboards read dataset(s) "
                    f"without org_column: {', '.join(keyless)}"
                )
        # Gamma's read-only permissions (no SQL Lab, no editing of others' objects), plus each dataset used
        perms = [p for p in gamma.permissions if p.permission.name != "can_csv"]
        for name in sorted(used):
            perm = security_manager.find_permission_view_menu("datasource_access", tables[name].perm)
            if perm is None:
                fail(f"dataset {name}: Superset has no datasource_access permission for it")
            perms.append(perm)
        if role.sql_lab:  # SQL Lab on the warehouse, which Superset reads as drc_bi (de-identified columns)
            warehouse = next(iter(tables.values())).database
            access = security_manager.find_permission_view_menu("database_access", warehouse.perm)
            sql_lab = security_manager.find_role("sql_lab")
            if access is None or sql_lab is None:
                fail("Superset lacks the sql_lab role or the warehouse's database_access permission (superset init)")
            perms += [p for p in sql_lab.permissions if p not in perms and p.permission.name != "can_csv"] + [access]
        sm_role.permissions = perms
        for slug in slugs:
            dashboard_roles[slug].append(sm_role)
        report.append(f"{role.name}: {len(slugs)} dashboards, rows {role.rows}")
    for slug, dash in by_slug.items():
        dash.roles = dashboard_roles[slug]

    # an own_org user also gets a role of its institution (org_<code>), which carries the RLS filter
    # org_code = '<code>' on every dataset with an org_column
    for user in users:
        base = roles[user.role]
        user_roles = [security_manager.find_role(base.name)]
        if base.rows == "own_org":
            org_role = security_manager.add_role(f"org_{user.org_code}")
            org_role.permissions = []
            user_roles.append(org_role)
            name = f"本机构数据 {user.org_code}"
            rls = db.session.query(RowLevelSecurityFilter).filter_by(name=name).one_or_none()
            if rls is None:
                rls = RowLevelSecurityFilter(name=name)
                db.session.add(rls)
            rls.filter_type = RowLevelSecurityFilterType.REGULAR
            rls.clause = f"org_code = '{user.org_code}'"
            rls.group_key = "org_code"
            rls.description = f"{user.name} 只能查看本机构的行"
            rls.roles = [org_role]
            rls.tables = [tables[n] for n, ds in bundle.datasets.items() if ds.org_column]
        sm_user = security_manager.find_user(username=user.login)
        if sm_user is None:
            sm_user = security_manager.add_user(
                user.login,
                user.name,
                base.zh[:60],
                f"{user.login}@drc.local",
                user_roles,
                password=password(user.login),
            )
            if not sm_user:
                fail(f"Superset refused to create user {user.login}")
        else:
            sm_user.roles = user_roles
            sm_user.first_name = user.name
            sm_user.active = True
            security_manager.reset_password(sm_user.id, password(user.login))
    db.session.commit()
    report.append(f"{len(users)} users")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    missing = [n for n in REQUIRED_ENV if not os.environ.get(n)]
    if missing:
        fail(f"environment not set: {', '.join(missing)} (run through ./drc, which exports .env)")
    os.environ.setdefault("SUPERSET_CONFIG_PATH", str(HERE / "superset_config.py"))

    from bundle import BundleError, build, load_datasets

    grant_bi_role()
    try:
        bundle = build(probe_datasets(load_datasets()))
    except BundleError as exc:
        fail(str(exc))
    contents, passwords = contents_for_import(bundle)

    # Superset logs every blueprint and permission at INFO while it boots; keep the output short.
    logging.basicConfig(level=logging.WARNING)
    # Superset's own importer trips SQLAlchemy "inner flush" warnings; they are harmless noise.
    warnings.filterwarnings("ignore", message=r".*(flush process|inner-flush).*")
    try:
        from superset.app import create_app
    except ImportError as exc:
        fail(f"run this with the Superset venv's python ({exc})")
    try:
        app = create_app()
    except Exception as exc:  # e.g. metadata DB down or not migrated: report the root cause
        root = causes(exc)[-1]
        fail(
            f"Superset could not start with {os.environ['SUPERSET_CONFIG_PATH']}: "
            f"{type(root).__name__}: {str(root).strip()}"
        )
    logging.getLogger().setLevel(logging.WARNING)

    with app.app_context():
        from superset.commands.exceptions import CommandInvalidError
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.utils.core import override_user

        from superset import db, security_manager

        admin = security_manager.find_user(username="admin")
        if admin is None:
            fail("Superset user 'admin' does not exist: run migrate_superset (./drc start) first")
        with override_user(admin):
            remove_retired(db)
            try:
                ImportAssetsCommand(contents, passwords=passwords).run()
            except Exception as exc:  # Superset wraps the real cause in ImportFailedError
                chain = causes(exc)
                invalid = [e for e in chain if isinstance(e, CommandInvalidError)]
                if invalid:
                    fail(f"the generated bundle is invalid: {invalid[0].normalized_messages()}")
                fail(f"import failed: {type(chain[-1]).__name__}: {chain[-1]}")
            apply_theme(db, bundle)
            # datasets may have changed: drop cached chart results (superset_config.py DATA_CACHE_DIR)
            shutil.rmtree(app.config["DATA_CACHE_DIR"], ignore_errors=True)
            report = provision_roles(db, security_manager, bundle)
        charts = sum(len(d["charts"]) for d in bundle.dashboards)
        print(
            f"provision: {len(bundle.dashboards)} dashboards, {charts} charts, {len(bundle.datasets)} datasets; "
            + "; ".join(report)
        )

    port = os.environ.get("DRC_SUPERSET_PORT", "8088")
    for dash in bundle.dashboards:
        print(f"  {dash['title']:<16} http://localhost:{port}/superset/dashboard/{dash['slug']}/")


if __name__ == "__main__":
    main()
