"""The dbt staging layer against what spark_jobs/publish.py publishes to ``ods``; needs no service.

For every entity of the canonical model (config/model/*.yaml, read with spark_jobs.model, lineage columns
included) and every other ods table publish maintains (quarantine, terminology worklist, master patient index):

- its staging model ``dbt/models/staging/stg_ods__<table>.sql`` carries every published column: the column
  is read by the model's select list, under its own name or renamed (``record_count as source_record_count``),
  or used to build a key (``source_system || '|' || organization_id as organization_key``);
- its YAML ``stg_ods__<table>.yml`` documents every column the model outputs, and no column it does not;
- ``dbt/models/staging/__sources.yml`` lists the table, every entity table with a freshness threshold on a
  loaded_at_field the table has.

The select lists are parsed, not matched as text: the CTEs of a staging model (``with source as (select * from
{{ source(...) }}), renamed as (select ... from source), final as (select * from renamed) select * from final``)
are followed from the final select back to the ods table, so a column dropped by a later CTE does not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import yaml

from core.settings import PROJECT_ROOT
from spark_jobs.model import MODEL_DIR, canonical_model, entity_columns
from spark_jobs.publish import CHANGE_LOG, EMPI_TABLES, WORKLIST_COLUMNS
from spark_jobs.standardize import QUARANTINE_COLUMNS

STAGING_DIR = PROJECT_ROOT / "dbt" / "models" / "staging"
SOURCES_FILE = STAGING_DIR / "__sources.yml"
SOURCE_NAME = "ods"

ENTITIES = list(canonical_model()["entities"])
# The ods tables that are not entities of the canonical model: table -> (published columns, where they are declared)
OTHER_TABLES = {
    "quarantine": (list(QUARANTINE_COLUMNS), "spark_jobs/standardize.py QUARANTINE_COLUMNS"),
    "terminology_worklist": (list(WORKLIST_COLUMNS), "spark_jobs/publish.py WORKLIST_COLUMNS"),
    **{
        f"empi_{name}": (list(columns), f"spark_jobs/publish.py EMPI_TABLES['{name}']")
        for name, (_, columns) in EMPI_TABLES.items()
    },
}


# Publish's bookkeeping that dbt reads as a source without a staging model: the change log the incremental marts'
# macros read (dbt/macros/incremental.sql).
BOOKKEEPING = {CHANGE_LOG.split(".")[1]}


def rel(path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


# --- a small parser for the select lists of a staging model ------------------------------------------------------

BASE = "__ods_table__"  # what {{ source('ods', '<table>') }} stands for once the Jinja is stripped
TOKEN = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<op>::|\|\||<=|>=|<>|!=|[-+*/%(),.;=<>\[\]])
  | (?P<space>\s+)
""",
    re.VERBOSE,
)
# Reserved words: never a column unless quoted. (A type is skipped by position: after `::` or cast's `as`.)
KEYWORDS = frozenset(
    """
    all and any as asc both case cast desc distinct else end false from in interval is leading like not null or
    precision then trailing true when where with
""".split()
)


@dataclass(frozen=True)
class Token:
    kind: str  # ident (lower-cased, unquoted or quoted), string, number, op
    value: str
    quoted: bool = False


class SqlError(ValueError):
    pass


def tokenize(sql: str) -> list[Token]:
    sql = re.sub(r"\{\{.*?\}\}", f" {BASE} ", sql, flags=re.DOTALL)  # {{ source(...) }}, {{ ref(...) }}
    if "{%" in sql:
        raise SqlError("Jinja control flow ({% ... %}) is not supported here: keep staging models plain SQL")
    sql = re.sub(r"\{#.*?#\}", " ", sql, flags=re.DOTALL)
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    sql = re.sub(r"--[^\n]*", " ", sql)
    tokens, pos = [], 0
    while pos < len(sql):
        match = TOKEN.match(sql, pos)
        if not match:
            raise SqlError(f"cannot read the SQL at: {sql[pos : pos + 40]!r}")
        pos = match.end()
        kind, text = match.lastgroup, match.group()
        if kind == "space":
            continue
        if kind == "qident":
            tokens.append(Token("ident", text[1:-1].replace('""', '"'), quoted=True))
        elif kind == "ident":
            tokens.append(Token("ident", text.lower()))
        else:
            tokens.append(Token(kind, text))
    return tokens


def is_word(token: Token, word: str) -> bool:
    return token.kind == "ident" and not token.quoted and token.value == word


def closing(tokens: list[Token], start: int) -> int:
    """Index of the ``)`` matching the ``(`` at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].value == "(" and tokens[i].kind == "op":
            depth += 1
        elif tokens[i].value == ")" and tokens[i].kind == "op":
            depth -= 1
            if depth == 0:
                return i
    raise SqlError("unbalanced parentheses")


def split_top_level(tokens: list[Token], separator: str = ",") -> list[list[Token]]:
    parts, depth, current = [], 0, []
    for token in tokens:
        if token.kind == "op" and token.value == "(":
            depth += 1
        elif token.kind == "op" and token.value == ")":
            depth -= 1
        if depth == 0 and token.kind == "op" and token.value == separator:
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    return parts


@dataclass(frozen=True)
class Select:
    items: tuple[tuple[str, frozenset[str]], ...] | None  # (output column, columns it reads); None for select *
    source: str  # the CTE (or BASE) it selects from


def parse_item(tokens: list[Token]) -> tuple[str, frozenset[str]]:
    """(output column, referenced columns) of one select item."""
    text = " ".join(t.value for t in tokens)
    if len(tokens) >= 2 and is_word(tokens[-2], "as") and tokens[-1].kind == "ident":
        name, expression = tokens[-1].value, tokens[:-2]
    elif (
        tokens
        and tokens[-1].kind == "ident"
        and all(t.kind == "ident" or (t.kind == "op" and t.value == ".") for t in tokens)
    ):
        name, expression = tokens[-1].value, tokens  # column or qualifier.column
    else:
        raise SqlError(f"select item `{text}` needs an alias: end it with `as <column>`")
    references = set()
    for i, token in enumerate(expression):
        if token.kind != "ident":
            continue
        after = expression[i + 1] if i + 1 < len(expression) else None
        before = expression[i - 1] if i else None
        if after is not None and after.kind == "op" and after.value in ("(", "."):
            continue  # a function, or a table qualifier
        if before is not None and ((before.kind == "op" and before.value == "::") or is_word(before, "as")):
            continue  # a type: x::date, cast(x as date)
        if not token.quoted and token.value in KEYWORDS:
            continue
        references.add(token.value)
    return name, frozenset(references)


def parse_select(tokens: list[Token]) -> Select:
    if not tokens or not is_word(tokens[0], "select"):
        raise SqlError("expected a select")
    body = tokens[1:]
    if body and is_word(body[0], "distinct"):
        body = body[1:]
    depth, cut = 0, None
    for i, token in enumerate(body):
        depth += token.value == "(" and token.kind == "op"
        depth -= token.value == ")" and token.kind == "op"
        if depth == 0 and is_word(token, "from"):
            cut = i
            break
    if cut is None or cut + 1 >= len(body) or body[cut + 1].kind != "ident":
        raise SqlError("expected `from <cte>` after the select list")
    rest = body[cut + 2 :]
    if (
        any(is_word(t, w) for t in rest for w in ("join", "union", "intersect", "except"))
        or len(split_top_level(rest)) > 1
    ):
        raise SqlError("joins and set operations are not supported in a staging model: select from one CTE")
    items = split_top_level(body[:cut])
    if (
        len(items) == 1
        and items[0]
        and items[0][-1].kind == "op"
        and items[0][-1].value == "*"
        and len(items[0]) in (1, 3)
    ):  # select *, select source.*
        return Select(None, body[cut + 1].value)
    return Select(tuple(parse_item(item) for item in items), body[cut + 1].value)


def parse_model(sql: str) -> tuple[dict[str, Select], Select]:
    """The CTEs (name -> select) and the final select of a staging model."""
    tokens = [t for t in tokenize(sql) if not (t.kind == "op" and t.value == ";")]
    ctes: dict[str, Select] = {}
    i = 0
    if tokens and is_word(tokens[0], "with"):
        i = 1
        while True:
            if not (
                i + 2 < len(tokens)
                and tokens[i].kind == "ident"
                and is_word(tokens[i + 1], "as")
                and tokens[i + 2].value == "("
            ):
                raise SqlError("expected `<name> as (` in the with clause")
            end = closing(tokens, i + 2)
            ctes[tokens[i].value] = parse_select(tokens[i + 3 : end])
            i = end + 1
            if i < len(tokens) and tokens[i].kind == "op" and tokens[i].value == ",":
                i += 1
                continue
            break
    return ctes, parse_select(tokens[i:])


def lineage(sql: str, published: list[str]) -> dict[str, frozenset[str]]:
    """Output column of the model -> the published ods columns it is made from."""
    ctes, final = parse_model(sql)

    def outputs(select: Select, seen: tuple[str, ...]) -> dict[str, frozenset[str]]:
        if select.source == BASE:
            upstream = {c: frozenset([c]) for c in published}
        elif select.source in ctes and select.source not in seen:
            upstream = outputs(ctes[select.source], (*seen, select.source))
        else:
            raise SqlError(f"selects from `{select.source}`, which is neither a CTE nor {{{{ source(...) }}}}")
        if select.items is None:
            return upstream
        return {name: frozenset().union(*(upstream[r] for r in refs if r in upstream)) for name, refs in select.items}

    return outputs(final, ())


# --- the checks ----------------------------------------------------------------------------------------------------


def staging_problems(table: str, published: dict[str, str]) -> list[str]:
    """What is wrong with the staging model of ods.<table>; ``published``: column -> where it is declared."""
    sql_file = STAGING_DIR / f"stg_ods__{table}.sql"
    yml_file = STAGING_DIR / f"stg_ods__{table}.yml"
    model = f"stg_ods__{table}"
    if not sql_file.exists():
        return [f"{table}: no staging model: create {rel(sql_file)} selecting from {{{{ source('ods', '{table}') }}}}"]
    sql = sql_file.read_text(encoding="utf-8")
    if not re.search(r"\{\{\s*source\(\s*['\"]ods['\"]\s*,\s*['\"]" + table + r"['\"]\s*\)\s*\}\}", sql):
        return [f"{table}: {rel(sql_file)} must read {{{{ source('ods', '{table}') }}}}"]
    try:
        outputs = lineage(sql, list(published))
    except SqlError as error:
        return [f"{table}: cannot follow the select lists of {rel(sql_file)}: {error}"]
    carried = frozenset().union(*outputs.values())
    problems = [
        f"{table}: column {column} (declared in {declared_in}) never reaches staging: add it to the "
        f"select list of {rel(sql_file)} and document it in {rel(yml_file)}"
        for column, declared_in in published.items()
        if column not in carried
    ]
    if not yml_file.exists():
        return [*problems, f"{table}: no YAML for {model}: create {rel(yml_file)} documenting its columns"]
    documents = yaml.safe_load(yml_file.read_text(encoding="utf-8")) or {}
    models = [m for m in documents.get("models") or [] if m.get("name") == model]
    if len(models) != 1:
        return [*problems, f"{table}: {rel(yml_file)} must describe model {model} exactly once"]
    documented = {c["name"]: c.get("description") for c in models[0].get("columns") or []}
    problems += [
        f"{table}: output column {column} of {model} is not documented: add it with a description to {rel(yml_file)}"
        for column in outputs
        if column not in documented
    ]
    problems += [
        f"{table}: output column {column} of {model} has no description in {rel(yml_file)}"
        for column in outputs
        if column in documented and not str(documented[column] or "").strip()
    ]
    problems += [
        f"{table}: {rel(yml_file)} documents column {column}, which {rel(sql_file)} does not output: "
        "remove it from the YAML or select it"
        for column in documented
        if column not in outputs
    ]
    return problems


@pytest.mark.parametrize("entity", ENTITIES)
def test_staging_model_carries_every_canonical_column(entity):
    own = {c["name"] for c in canonical_model()["entities"][entity]["columns"]}
    published = {
        c["name"]: rel(MODEL_DIR / (f"{entity}.yaml" if c["name"] in own else "_lineage.yaml"))
        for c in entity_columns(entity)
    }
    problems = staging_problems(entity, published)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("table", list(OTHER_TABLES))
def test_staging_model_carries_every_published_column(table):
    columns, declared_in = OTHER_TABLES[table]
    problems = staging_problems(table, dict.fromkeys(columns, declared_in))
    assert not problems, "\n".join(problems)


def _setting(node: dict, name: str, default=None):
    """A source or source table's setting: in its config block (dbt >= 1.10) or as a top-level property."""
    config = node.get("config") or {}
    if name in config:
        return config[name]
    return node.get(name, default)


def source_tables() -> tuple[dict, dict[str, dict]]:
    sources = [
        s
        for s in (yaml.safe_load(SOURCES_FILE.read_text(encoding="utf-8")) or {}).get("sources") or []
        if s.get("name") == SOURCE_NAME
    ]
    assert len(sources) == 1, f"{rel(SOURCES_FILE)} must define source '{SOURCE_NAME}' exactly once"
    return sources[0], {t["name"]: t for t in sources[0].get("tables") or []}


def effective_freshness(source: dict, table: dict) -> tuple[dict | None, str | None]:
    """(freshness, loaded_at_field) dbt applies to a table, freshness None when it has no threshold.

    As dbt does: ``freshness: null`` on the table switches it off; a table's freshness is merged into the
    source's key by key (a null key does not remove the inherited one).
    """
    inherited = _setting(source, "freshness") or {}
    if "freshness" in (table.get("config") or {}) or "freshness" in table:
        own = _setting(table, "freshness")
        freshness = None if own is None else {**inherited, **{k: v for k, v in own.items() if v is not None}}
    else:
        freshness = inherited
    loaded_at = _setting(table, "loaded_at_field") or _setting(source, "loaded_at_field")
    thresholds = [(freshness or {}).get(k) or {} for k in ("warn_after", "error_after")]
    if not any(t.get("count") and t.get("period") for t in thresholds):
        return None, loaded_at
    return freshness, loaded_at


def test_sources_list_every_entity_with_freshness():
    source, tables = source_tables()
    problems = []
    for entity in ENTITIES:
        if entity not in tables:
            problems.append(
                f"{entity}: ods.{entity} is not a table of source '{SOURCE_NAME}': add it to "
                f"{rel(SOURCES_FILE)} with a freshness threshold"
            )
            continue
        freshness, loaded_at = effective_freshness(source, tables[entity])
        columns = [c["name"] for c in entity_columns(entity)]
        if freshness is None:
            problems.append(
                f"{entity}: ods.{entity} has no freshness threshold (warn_after/error_after): set one "
                f"in {rel(SOURCES_FILE)}"
            )
        elif loaded_at not in columns:
            problems.append(
                f"{entity}: the loaded_at_field of ods.{entity} is {loaded_at!r}, not a column of the "
                f"table ({rel(MODEL_DIR / f'{entity}.yaml')}): fix it in {rel(SOURCES_FILE)}"
            )
    assert not problems, "\n".join(problems)


def test_sources_list_every_other_ods_table():
    source, tables = source_tables()
    problems = []
    for table, (columns, declared_in) in OTHER_TABLES.items():
        if table not in tables:
            problems.append(
                f"{table}: ods.{table} is not a table of source '{SOURCE_NAME}': add it to {rel(SOURCES_FILE)}"
            )
            continue
        freshness, loaded_at = effective_freshness(source, tables[table])
        if freshness is not None and loaded_at not in columns:
            problems.append(
                f"{table}: the freshness of ods.{table} reads loaded_at_field {loaded_at!r}, not one of "
                f"its columns ({declared_in}): name one of {', '.join(columns)} or set freshness: null "
                f"in {rel(SOURCES_FILE)}"
            )
    unknown = sorted(set(tables) - set(ENTITIES) - set(OTHER_TABLES) - BOOKKEEPING)
    problems += [
        f"{t}: {rel(SOURCES_FILE)} lists ods.{t}, which spark_jobs/publish.py does not publish" for t in unknown
    ]
    assert not problems, "\n".join(problems)


def test_parser_follows_renames_and_drops():
    """The select-list parser itself: renamed and key-building columns count, one a later CTE drops does not."""
    sql = """
        with source as (select * from {{ source('ods', 't') }}),
        renamed as (
            select
                source_system || '|' || t_id as t_key,   -- a key
                score as match_score,
                cast(born as date) as birth_date,
                "rows" as row_count,
                coalesce(a, b)::text as a_or_b,
                dropped
            from source
        )
        select t_key, match_score, birth_date, row_count, a_or_b from renamed where match_score in (1, 2)
    """
    outputs = lineage(sql, ["source_system", "t_id", "score", "born", "rows", "a", "b", "dropped", "missing"])
    assert outputs == {
        "t_key": {"source_system", "t_id"},
        "match_score": {"score"},
        "birth_date": {"born"},
        "row_count": {"rows"},
        "a_or_b": {"a", "b"},
    }
    with pytest.raises(SqlError, match="alias"):
        lineage("select a + b from {{ source('ods', 't') }}", ["a", "b"])
