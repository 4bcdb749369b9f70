"""Create Superset's admin account, or reset its password, from DRC_SUPERSET_ADMIN_PASSWORD in the environment.

Run by scripts/services.sh with the Superset venv's python after `superset db upgrade`. Superset's own
`fab create-admin --password …` and `fab reset-password --password …` take the password as an argument, where
every user of the machine reads it in `ps`; here it never leaves the environment of this process.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ADMIN = "admin"


def main() -> None:
    password = os.environ.get("DRC_SUPERSET_ADMIN_PASSWORD")
    if not password:
        sys.exit("DRC_SUPERSET_ADMIN_PASSWORD is not set: run this through ./drc start, which exports .env")
    os.environ.setdefault("SUPERSET_CONFIG_PATH", str(Path(__file__).with_name("superset_config.py")))
    logging.basicConfig(level=logging.WARNING)
    from superset.app import create_app

    app = create_app()
    logging.getLogger().setLevel(logging.WARNING)
    with app.app_context():
        from superset import db, security_manager

        user = security_manager.find_user(username=ADMIN)
        if user is None:
            created = security_manager.add_user(
                ADMIN, "管理员", "平台", "admin@xydrc.local", [security_manager.find_role("Admin")], password=password
            )
            if not created:
                sys.exit("Superset refused to create the admin user: see the lines above")
            print("created the Superset admin user")
        else:
            security_manager.reset_password(user.id, password)
            print("reset the Superset admin user's password from .env")
        db.session.commit()


if __name__ == "__main__":
    main()
