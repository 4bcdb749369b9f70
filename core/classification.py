"""The field classification (config/access/classification.yaml) and the column privileges it grants.

Each warehouse column has a class (direct identifier, pseudonym, clinical …); each governed database role sees
some classes. PostgreSQL enforces it with column privileges, so a hidden column cannot be read through any SQL
— a dashboard's, SQL Lab's or a hand-written one. The policy is written into ``dbt_meta`` and applied by one SQL
function, ``dbt_meta.grant_classified(relation)``: dbt calls it in every model's post-hook (inside the model's
own transaction, so a rebuilt table is never readable before its grants), and :func:`apply_grants` calls it for
every other relation of the roles' schemas. An unclassified column is granted to no one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import sqlalchemy as sa
import yaml

from core.settings import CONFIG_DIR

POLICY_FILE = CONFIG_DIR / "access" / "classification.yaml"


@dataclass(frozen=True)
class RoleScope:
    name: str
    zh: str
    schemas: tuple[str, ...]
    relations: tuple[str, ...]  # schema.relation
    sees: frozenset[str]


@dataclass(frozen=True)
class Policy:
    classes: dict[str, dict[str, str]]
    roles: dict[str, RoleScope]
    by_name: dict[str, str]  # column name -> class
    overrides: dict[str, str]  # schema.relation.column -> class

    def class_of(self, schema: str, relation: str, column: str) -> str | None:
        return self.overrides.get(f"{schema}.{relation}.{column}") or self.by_name.get(column)

    def unclassified(self, columns: Iterable[tuple[str, str, str]]) -> list[str]:
        """``schema.relation.column`` of the given columns that no class covers."""
        return sorted({".".join(c) for c in columns if self.class_of(*c) is None})

    def governs(self, role: str, schema: str, relation: str) -> bool:
        scope = self.roles[role]
        return schema in scope.schemas or f"{schema}.{relation}" in scope.relations

    def sees(self, role: str, schema: str, relation: str, column: str) -> bool:
        """Whether ``role`` may select the column (False for an unclassified one)."""
        return self.governs(role, schema, relation) and self.class_of(schema, relation, column) in self.roles[role].sees


@cache
def load_policy() -> Policy:
    raw = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
    classes = raw["classes"]
    by_name: dict[str, str] = {}
    for cls, names in raw["columns"].items():
        for name in names:
            if by_name.setdefault(name, cls) != cls:
                raise ValueError(f"{POLICY_FILE}: column {name} is in both {by_name[name]} and {cls}")
    overrides = dict(raw.get("overrides") or {})
    roles = {
        name: RoleScope(
            name,
            r["zh"],
            tuple(r.get("schemas") or ()),
            tuple(r.get("relations") or ()),
            frozenset(r["sees"]),
        )
        for name, r in raw["roles"].items()
    }
    used = set(raw["columns"]) | set(overrides.values()) | {c for r in roles.values() for c in r.sees}
    if unknown := sorted(used - set(classes)):
        raise ValueError(f"{POLICY_FILE}: classes {unknown} are used but not defined under `classes:`")
    return Policy(classes, roles, by_name, overrides)


# The policy as rows, and the function every grant goes through. REVOKE ALL on a table also revokes its column
# privileges, so a column reclassified as hidden loses its grant on the next call.
GRANT_FUNCTION = """
CREATE OR REPLACE FUNCTION dbt_meta.grant_classified(rel regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    sch text;
    tbl text;
    grantee text;
    cols text;
BEGIN
    SELECT n.nspname, c.relname INTO sch, tbl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    FOR grantee IN SELECT DISTINCT role_name FROM dbt_meta.role_scope LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %I', rel, grantee);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        JOIN LATERAL (
            SELECT k.class FROM dbt_meta.column_class k
            WHERE k.column_name = a.attname AND k.relation IN (sch || '.' || tbl, '*')
            ORDER BY k.relation = '*' LIMIT 1
        ) k ON true
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
          AND EXISTS (
              SELECT FROM dbt_meta.role_scope s
              WHERE s.role_name = grantee AND s.class = k.class
                AND (s.scope = sch OR s.scope = sch || '.' || tbl)
          );
        IF cols IS NOT NULL THEN
            EXECUTE format('GRANT SELECT (%s) ON %s TO %I', cols, rel, grantee);
        END IF;
    END LOOP;
END $$;
"""


def install(conn: sa.Connection) -> None:
    """Write the policy into dbt_meta and (re)create the grant function; the roles get USAGE on their schemas.

    Run before every dbt build (core/dbt.py), so a post-hook always applies the policy file as it is now.
    """
    policy = load_policy()
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('xydrc classification'))"))
    conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS dbt_meta"))
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS dbt_meta.column_class "
            "(relation text NOT NULL, column_name text NOT NULL, class text NOT NULL, "
            "PRIMARY KEY (relation, column_name))"
        )
    )
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS dbt_meta.role_scope "
            "(role_name text NOT NULL, scope text NOT NULL, class text NOT NULL, PRIMARY KEY (role_name, scope, class))"
        )
    )
    conn.execute(sa.text("DELETE FROM dbt_meta.column_class"))
    conn.execute(sa.text("DELETE FROM dbt_meta.role_scope"))
    rows = [{"r": "*", "c": name, "k": cls} for name, cls in policy.by_name.items()]
    for key, cls in policy.overrides.items():
        relation, column = key.rsplit(".", 1)
        rows.append({"r": relation, "c": column, "k": cls})
    conn.execute(sa.text("INSERT INTO dbt_meta.column_class VALUES (:r, :c, :k)"), rows)
    scopes = [
        {"role": r.name, "scope": scope, "class": cls}
        for r in policy.roles.values()
        for scope in (*r.schemas, *r.relations)
        for cls in sorted(r.sees)
    ]
    conn.execute(sa.text("INSERT INTO dbt_meta.role_scope VALUES (:role, :scope, :class)"), scopes)
    conn.execute(sa.text(GRANT_FUNCTION))
    for role in policy.roles.values():
        schemas = sorted({*role.schemas, *(r.split(".")[0] for r in role.relations)})
        for schema in schemas:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role.name}"'))
            # earlier set-ups granted whole new tables by default; new relations now wait for their post-hook
            conn.execute(
                sa.text(f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" REVOKE ALL ON TABLES FROM "{role.name}"')
            )


def apply_grants(conn: sa.Connection) -> int:
    """Install the policy and apply it to every governed relation; returns how many."""
    install(conn)
    return grant_governed(conn)


def grant_governed(conn: sa.Connection) -> int:
    """Apply the installed policy to every relation of the governed schemas and relations; returns how many."""
    policy = load_policy()
    relations = conn.execute(
        sa.text(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')"
        )
    ).all()
    governed = [oid for oid, schema, name in relations if any(policy.governs(r, schema, name) for r in policy.roles)]
    for oid in governed:
        conn.execute(sa.text("SELECT dbt_meta.grant_classified(CAST(:oid AS oid))"), {"oid": oid})
    return len(governed)
