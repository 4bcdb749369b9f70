"""Bulk writes into the simulated PostgreSQL systems: COPY into a scratch table, then one INSERT ... SELECT.

COPY is several times cheaper than multi-row INSERTs for both the client (no SQL literals to build) and the
server (no statement to parse); the INSERT from the scratch table keeps ``ON CONFLICT`` semantics, so a re-run
of a day adds nothing. A county day is ~100k rows, a county year ~50M: this is most of the simulator's time.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return r"\N"
    if value.__class__ is str:
        return value.translate(_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def copy_insert(
    cursor: Any,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    on_conflict: str = "ON CONFLICT DO NOTHING",
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` via COPY; returns the rows the INSERT wrote.

    The scratch table takes the target's column types but none of its constraints or defaults (so columns left
    out get the target's defaults). ``on_conflict`` is the INSERT's conflict clause (the target is aliased ``t``).
    """
    scratch = "copy_" + re.sub(r"\W", "_", table.replace('"', ""))
    names = ", ".join(columns)
    payload = io.StringIO("".join("\t".join(map(copy_text, row)) + "\n" for row in rows))
    cursor.execute(f"CREATE TEMP TABLE {scratch} AS SELECT {names} FROM {table} WITH NO DATA")
    cursor.copy_expert(f"COPY {scratch} ({names}) FROM STDIN", payload)
    cursor.execute(f"INSERT INTO {table} AS t ({names}) SELECT {names} FROM {scratch} {on_conflict}")
    written = cursor.rowcount
    cursor.execute(f"DROP TABLE {scratch}")
    return written
