"""Provision Superset from the dashboards-as-code bundle in superset/assets/.

Run with the Superset venv's python, with .env exported (./drc does both):

    "$(venv_dir superset)/bin/python" superset/provision.py [--require-table]

It imports every database, dataset, chart and dashboard under superset/assets/ with Superset's own
ImportAssetsCommand (the command behind POST /api/v1/assets/import/), in-process against the
metadata DB: no running web server, no login, no CSRF token needed. Objects are matched by uuid and
overwritten, so running it again is safe and brings Superset back to what the files say.

The warehouse password is never in the files (they carry Superset's mask XXXXXXXXXX); it is passed
to the import from DRC_PG_PASSWORD, as is the port from DRC_PG_PORT. Before importing, it logs in
to the warehouse with them, so a wrong password is reported, not stored. Nothing secret is printed.
Needs: DRC_PG_PORT, DRC_PG_PASSWORD, DRC_SUPERSET_SECRET_KEY, DRC_SUPERSET_DB_PASSWORD (and
DRC_SUPERSET_PORT for the printed URL); SUPERSET_CONFIG_PATH defaults to superset_config.py here.
Prints the dashboard URL last on stdout; exits 1 with "provision: error: ..." on any failure.

Superset imports a dataset whose table does not exist yet (columns come from the YAML); its charts
show an error until dbt builds the table. So provisioning may run before or after the pipeline;
it warns when the mart is missing, or fails with --require-table. If the table exists but lacks a
column the dashboard uses, it always fails (the dbt model and the dashboard disagree).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
DASHBOARD_SLUG = "outpatient-visits"
REQUIRED_ENV = ("DRC_PG_PORT", "DRC_PG_PASSWORD", "DRC_SUPERSET_SECRET_KEY",
                "DRC_SUPERSET_DB_PASSWORD")


def fail(msg: str) -> None:
    print(f"provision: error: {scrub(msg)}", file=sys.stderr)
    sys.exit(1)


def scrub(text: str) -> str:
    """Remove every secret we know of from a message before it is shown."""
    for name in ("DRC_PG_PASSWORD", "DRC_SUPERSET_DB_PASSWORD", "DRC_SUPERSET_SECRET_KEY",
                 "DRC_SUPERSET_ADMIN_PASSWORD"):
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


def read_bundle(assets: Path, pg_port: str) -> tuple[dict[str, str], dict[str, str]]:
    """Bundle contents as ImportAssetsCommand wants them ({relative path: YAML text}), with the
    warehouse port filled in, plus the passwords for the database files."""
    import yaml
    from sqlalchemy.engine import make_url

    contents: dict[str, str] = {}
    passwords: dict[str, str] = {}
    for path in sorted(assets.rglob("*.yaml")):
        rel = path.relative_to(assets).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel.startswith("databases/"):
            config = yaml.safe_load(text)
            url = make_url(config["sqlalchemy_uri"])
            if url.password != "XXXXXXXXXX":
                fail(f"{rel}: sqlalchemy_uri must carry the mask XXXXXXXXXX, not a password")
            config["sqlalchemy_uri"] = url.set(port=int(pg_port)).render_as_string(
                hide_password=False)  # still the mask, never the real password
            text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
            passwords[rel] = os.environ["DRC_PG_PASSWORD"]
        contents[rel] = text
    if "metadata.yaml" not in contents:
        fail(f"{assets}/metadata.yaml is missing")
    return contents, passwords


def check_warehouse(contents: dict[str, str], passwords: dict[str, str]) -> None:
    """Log in to each bundled database with the given password before touching Superset, so a
    wrong password or a stopped PostgreSQL fails here instead of being stored in Superset."""
    import yaml
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    for rel, password in passwords.items():
        config = yaml.safe_load(contents[rel])
        url = make_url(config["sqlalchemy_uri"]).set(password=password)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            fail(f"cannot connect to {config['database_name']} as "
                 f"{url.render_as_string(hide_password=True)}: {type(exc).__name__}: "
                 f"{str(exc).strip().splitlines()[0]}")
        finally:
            engine.dispose()


def check_mart(dataset, require_table: bool) -> None:
    """Compare the dataset's columns with the real table, if it exists yet."""
    from sqlalchemy import inspect

    where = f"{dataset.schema}.{dataset.table_name}"
    try:
        with dataset.database.get_sqla_engine() as engine:
            insp = inspect(engine)
            if not insp.has_table(dataset.table_name, schema=dataset.schema):
                msg = (f"table {where} does not exist yet: the dashboard is imported, its charts "
                       "show data once dbt has built the mart (no need to provision again)")
                if require_table:
                    fail(msg)
                print(f"provision: warning: {msg}", file=sys.stderr)
                return
            actual = {c["name"] for c in insp.get_columns(dataset.table_name,
                                                           schema=dataset.schema)}
    except SystemExit:
        raise
    except Exception as exc:
        fail(f"cannot reach the warehouse to check {where}: {type(exc).__name__}: {exc}")
    missing = sorted({c.column_name for c in dataset.columns} - actual)
    if missing:
        fail(f"{where} lacks column(s) the dashboard uses: {', '.join(missing)}")
    print(f"provision: {where} found with all {len(dataset.columns)} dashboard columns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, default=ASSETS, help="bundle directory")
    parser.add_argument("--require-table", action="store_true",
                        help="fail if the mart table does not exist yet")
    args = parser.parse_args()

    missing = [n for n in REQUIRED_ENV if not os.environ.get(n)]
    if missing:
        fail(f"environment not set: {', '.join(missing)} (run through ./drc, which exports .env)")
    os.environ.setdefault("SUPERSET_CONFIG_PATH", str(HERE / "superset_config.py"))
    contents, passwords = read_bundle(args.assets, os.environ["DRC_PG_PORT"])
    check_warehouse(contents, passwords)

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
        fail(f"Superset could not start with {os.environ['SUPERSET_CONFIG_PATH']}: "
             f"{type(root).__name__}: {str(root).strip()}")
    logging.getLogger().setLevel(logging.WARNING)

    with app.app_context():
        from superset.commands.exceptions import CommandInvalidError
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.connectors.sqla.models import SqlaTable
        from superset.models.dashboard import Dashboard
        from superset.utils.core import override_user

        from superset import db, security_manager

        admin = security_manager.find_user(username="admin")
        if admin is None:
            fail("Superset user 'admin' does not exist: run migrate_superset (./drc start) first")
        with override_user(admin):
            try:
                ImportAssetsCommand(contents, passwords=passwords).run()
            except Exception as exc:  # Superset wraps the real cause in ImportFailedError
                chain = causes(exc)
                invalid = [e for e in chain if isinstance(e, CommandInvalidError)]
                if invalid:
                    fail(f"the bundle in {args.assets} is invalid: "
                         f"{invalid[0].normalized_messages()}")
                fail(f"import failed: {type(chain[-1]).__name__}: {chain[-1]}")

        dashboard = db.session.query(Dashboard).filter_by(slug=DASHBOARD_SLUG).one_or_none()
        if dashboard is None:
            fail(f"import reported success but dashboard '{DASHBOARD_SLUG}' is not there")
        print(f"provision: imported {len(contents) - 1} asset files: dashboard "
              f"'{dashboard.dashboard_title}' with {len(dashboard.slices)} charts")
        for dataset in db.session.query(SqlaTable).filter(
                SqlaTable.id.in_({s.datasource_id for s in dashboard.slices})):
            check_mart(dataset, args.require_table)

    port = os.environ.get("DRC_SUPERSET_PORT", "8088")
    print(f"http://localhost:{port}/superset/dashboard/{DASHBOARD_SLUG}/")


if __name__ == "__main__":
    main()
