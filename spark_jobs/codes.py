"""Standard codes as sources write them: canonical forms, ICD-10 国临版 extension codes and their WHO roll-up.

Every function comes twice, as a pure Python function (tests, the terminology CLI, checks of a new mapping)
and as a Spark column expression that computes the same thing (standardisation, indicators); the tests check
that both agree.

- ``normalize_code``: the generic local dialect of any code: full-width characters, surrounding blanks
  (also the ideographic space, no-break space and zero-width characters) and lower case. A concept map is looked
  up with its keys and the value normalised alike, so ``ｊ１８．９`` finds the entry written ``J18.9``.
- ``icd10_canonical``: an ICD-10 code in its canonical form, or None when the text cannot be one: besides the
  generic dialect, a missing dot (``J189`` → ``J18.9``, ``J18900X001`` → ``J18.900x001``), blanks inside,
  an ideographic full stop, and trailing dagger/asterisk marks; the 国临版 ``x`` is lower case
  (``I10.X00`` → ``I10.x00``).
- ``icd10_rollup``: (category, subcategory, chapter, block) of a WHO code or of a 国家临床版2.0 extension
  code (``J18.900x001`` → J18, J18.9, X, J09-J18; ``I10.x00`` → I10, None, IX, I10-I15), from the WHO
  classification (config/terminology/code_systems/ICD10_WHO.csv); None when the code is neither. An
  extension names a WHO subcategory (``J18.9`` + ``00`` [+ ``x001``]) or, with ``x`` as the fourth
  character, a WHO category that has no subcategories (``I10.x00``; ``J18.x00`` is not valid).
- ``icd10_is_valid``: whether a code belongs to the ICD-10 value set: a WHO category or subcategory, a code
  of the 国临版 list we have, or a 国临版-shaped extension of a WHO code (while the 国临版 list is a subset;
  once the official list is loaded, extension codes must be on it).

The Spark twins stay small whatever the size of the classification: a value set is one prefix-tree regular
expression (``trie_regex``) rather than thousands of literals, and a value used several times is computed
once (``bind``).
"""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple

from pyspark.sql import Column
from pyspark.sql import functions as F

from spark_jobs.model import code_system_entry, code_system_rows, code_system_stamp

# --- the generic dialect ----------------------------------------------------------------------------------
FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"  # ！…～ and the ideographic space
HALF_WIDTH = "".join(chr(c) for c in range(0x21, 0x7F)) + " "
_TO_HALF_WIDTH = str.maketrans(FULL_WIDTH, HALF_WIDTH)
BLANKS = " \t\n\r\f\v\u00a0\u2007\u202f\u200b\u200c\u200d\u2060\ufeff"  # what copy-paste leaves around codes
_BLANK_CLASS = "[" + "".join(f"\\u{ord(c):04x}" for c in BLANKS) + "]"
_EDGE_BLANKS = f"^{_BLANK_CLASS}+|{_BLANK_CLASS}+$"


def normalize_code(text: object) -> str | None:
    """Full-width → half-width, blanks around removed, upper case; None for nothing."""
    if text is None:
        return None
    value = re.sub(_EDGE_BLANKS, "", str(text).translate(_TO_HALF_WIDTH)).upper()
    return value or None


def normalize_code_col(column: Column) -> Column:
    """:func:`normalize_code` as a Spark column."""
    value = F.upper(F.regexp_replace(F.translate(column.cast("string"), FULL_WIDTH, HALF_WIDTH), _EDGE_BLANKS, ""))
    return F.nullif(value, F.lit(""))


# --- ICD-10 canonical form --------------------------------------------------------------------------------
# Each step is one regular-expression replacement, the same in Python and in Spark (each Spark step refers to
# the previous one once, so the expression stays small however often it is used).
_MARKS = "[\u2020\u2021*+]+$"  # † ‡ * + after a dagger/asterisk code
_ADD_DOT = (r"^([A-Z][0-9]{2})([0-9X])", r"\1.\2", "$1.$2")  # J189 → J18.9 (Python, Java replacement)
ICD10_SHAPE = r"^([A-Z][0-9]{2}(\.([0-9]{1,2}|[0-9X][0-9]{2}(X[0-9]{3})?))?)$"  # upper case, before the x is lowered
_LOWER_X = r"(?<=.)X"  # the 国临版 'x' (not the letter of chapter XX: X59.9)
ICD10_EXTENSION = r"^([A-Z][0-9]{2})\.([0-9x])([0-9]{2})(x[0-9]{3})?$"  # 国家临床版2.0: J18.900x001, I10.x00


def icd10_canonical(text: object) -> str | None:
    """The canonical ICD-10 form of a code as a source wrote it, or None when it cannot be an ICD-10 code."""
    value = normalize_code(text)
    if value is None:
        return None
    value = re.sub(_BLANK_CLASS, "", value).replace("\u3002", ".")
    value = re.sub(r"\.+$", "", re.sub(_MARKS, "", value))
    value = re.sub(_ADD_DOT[0], _ADD_DOT[1], value)
    match = re.match(ICD10_SHAPE, value)
    return re.sub(_LOWER_X, "x", match[1]) if match else None


def icd10_canonical_col(column: Column) -> Column:
    """:func:`icd10_canonical` as a Spark column."""
    value = F.regexp_replace(normalize_code_col(column), _BLANK_CLASS, "")
    value = F.regexp_replace(F.regexp_replace(F.translate(value, "\u3002", "."), _MARKS, ""), r"\.+$", "")
    value = F.regexp_extract(F.regexp_replace(value, _ADD_DOT[0], _ADD_DOT[2]), ICD10_SHAPE, 1)
    return F.regexp_replace(F.nullif(value, F.lit("")), _LOWER_X, "x")


# --- the WHO classification -------------------------------------------------------------------------------
ICD10 = "ICD-10"  # the label of the model's diagnosis columns (国家临床版2.0, based on the WHO codes)
ICD10_WHO = "ICD-10 WHO"  # the whole WHO classification, generated from the registry package


class Icd10Rollup(NamedTuple):
    category: str  # J18
    subcategory: str | None  # J18.9; None for a category without a fourth character (I10, I10.x00)
    chapter: str  # X (roman numeral, as WHO numbers the chapters)
    block: str  # J09-J18 (the innermost block)


class _Who(NamedTuple):
    codes: frozenset[str]  # categories and subcategories
    categories: dict[str, tuple[str, str]]  # category -> (chapter, block)
    subcategories: frozenset[str]  # 4-character subcategories
    leaves: frozenset[str]  # categories without subcategories (I10, R51): the 国临版 'x'
    extensions: frozenset[str] | None  # the 国临版 list when complete (official file loaded), else None
    listed: frozenset[str]  # every code of the 国临版 list we have (subset or complete)


def _who() -> _Who:
    return _who_tables(*_stamps())


@cache
def _who_tables(*stamps: object) -> _Who:  # keyed by the files' stamps: a loader's rewrite is seen
    rows = code_system_rows(ICD10_WHO)
    categories = {r["code"]: (r["chapter"], r["block"]) for r in rows if r["level"] == "category"}
    codes = frozenset(r["code"] for r in rows if r["level"] in ("category", "subcategory"))
    listed = frozenset(r["code"] for r in code_system_rows(ICD10))
    complete = code_system_entry(ICD10).get("content") == "complete"
    subcategories = frozenset(c for c in codes if len(c) == 5)
    leaves = frozenset(categories) - {c[:3] for c in subcategories}
    return _Who(codes, categories, subcategories, leaves, listed if complete else None, listed)


def icd10_rollup(code: object) -> Icd10Rollup | None:
    """(category, subcategory, chapter, block) of a WHO code or a 国临版 extension of one; None otherwise.

    The code is canonicalised first (``j18900X001`` rolls up like ``J18.900x001``). A 5-character WHO
    subcategory (``B18.00``) rolls up to its 4-character subcategory.
    """
    canonical = icd10_canonical(code)
    if canonical is None:
        return None
    who = _who()
    category = canonical[:3]
    extension = re.match(ICD10_EXTENSION, canonical)
    if extension:
        subcategory = None if extension[2] == "x" else canonical[:5]
        if (subcategory not in who.subcategories) if subcategory else (category not in who.leaves):
            return None
    elif canonical in who.codes:
        subcategory = canonical[:5] if len(canonical) > 3 else None
    else:
        return None
    return Icd10Rollup(category, subcategory, *who.categories[category])


def icd10_is_valid(code: object) -> bool:
    """Whether the code (canonicalised) is in the ICD-10 value set (see the module's docstring)."""
    canonical = icd10_canonical(code)
    if canonical is None:
        return False
    who = _who()
    if canonical in who.codes or canonical in who.listed:
        return True
    if who.extensions is not None:
        return False
    return bool(re.match(ICD10_EXTENSION, canonical)) and icd10_rollup(canonical) is not None


def trie_regex(codes: set[str] | frozenset[str]) -> str:
    """A regular expression (no anchors) matching exactly these strings, shaped as their prefix tree.

    One short literal pattern instead of thousands of literals in the plan; the tree keeps matching cheap
    (a code is compared along one branch, not against every code).
    """
    tree: dict = {}
    for code in codes:
        node = tree
        for char in code:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict) -> str:
        children = [(char, emit(child)) for char, child in sorted(node.items()) if char]
        if not children:
            return ""
        singles = [re.escape(char) for char, rest in children if rest == ""]
        parts = [re.escape(char) + rest for char, rest in children if rest != ""]
        if singles:
            parts.append(singles[0] if len(singles) == 1 else "[" + "".join(singles) + "]")
        body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        if "" in node:  # a code ends here, longer ones go on
            atom = len(parts) > 1 or re.fullmatch(r"\\?.|\[[^\]]*\]", body)
            body = (body if atom else f"(?:{body})") + "?"
        return body

    return emit(tree)


@cache
def _patterns(*stamps: object) -> tuple[str, str, str]:
    """(rolls up, valid, 'chapter|block' of every category slot) for the Spark expressions."""
    who = _who_tables(*stamps)
    extension = (
        f"(?:{trie_regex(who.subcategories)})[0-9]{{2}}(?:x[0-9]{{3}})?"
        f"|(?:{trie_regex(who.leaves)})\\.x[0-9]{{2}}(?:x[0-9]{{3}})?"
    )
    rolls_up = f"^(?:{trie_regex(who.codes)}|{extension})$"
    listed = trie_regex(who.codes | who.listed)
    valid = f"^(?:{listed})$" if who.extensions is not None else f"^(?:{listed}|{extension})$"
    # category → 'chapter|block' by position: (letter - 'A') * 100 + the two digits (J18 → 918)
    slots = [""] * 2600
    for category, (chapter, block) in who.categories.items():
        slots[(ord(category[0]) - 65) * 100 + int(category[1:3])] = f"{chapter}|{block}"
    return rolls_up, valid, ",".join(slots)


def _stamps() -> tuple[object, ...]:
    return code_system_stamp(ICD10_WHO), code_system_stamp(ICD10)


def bind(value: Column, body) -> Column:
    """``body(v)`` with ``v`` the value computed once: a column used several times in an expression is
    otherwise computed again at each use (its whole chain of regular expressions)."""
    return F.transform(F.array(value), body)[0]


def _rollup_of_canonical(canonical: Column) -> Column:
    rolls_up, _, chapter_block = _patterns(*_stamps())
    category = F.substring(canonical, 1, 3)
    slot = (F.ascii(category) - 65) * 100 + F.substring(canonical, 2, 2).cast("int") + 1
    located = F.split(F.element_at(F.split(F.lit(chapter_block), ","), slot), "[|]")
    rollup = F.struct(
        category.alias("category"),
        F.nullif(F.regexp_extract(canonical, r"^([A-Z][0-9]{2}\.[0-9])", 1), F.lit("")).alias("subcategory"),
        located[0].alias("chapter"),
        located[1].alias("block"),
    )
    return F.when(F.coalesce(canonical.rlike(rolls_up), F.lit(False)), rollup)


def icd10_rollup_col(column: Column) -> Column:
    """:func:`icd10_rollup` as a Spark column: struct<category, subcategory, chapter, block>, NULL if invalid."""
    return bind(icd10_canonical_col(column), _rollup_of_canonical)


def icd10_valid_col(canonical: Column) -> Column:
    """:func:`icd10_is_valid` of an already canonical code column (see :func:`icd10_canonical_col`)."""
    return F.coalesce(canonical.rlike(_patterns(*_stamps())[1]), F.lit(False))


# --- the rules a code system declares in _index.yaml --------------------------------------------------------
CANONICAL = {"icd10": icd10_canonical}
CANONICAL_COL = {"icd10": icd10_canonical_col}
VALID_COL = {"icd10": icd10_valid_col}


def code_rules(label: str | None) -> str | None:
    """The code rules (``rules:`` in _index.yaml, e.g. ``icd10``) of a code system, if it has any."""
    return code_system_entry(label).get("rules") if label else None


def in_code_system(label: str, code: str) -> bool:
    """Whether ``code`` is a code of the code system (for ICD-10: :func:`icd10_is_valid`, exact form)."""
    from spark_jobs.model import code_system

    if code_rules(label) == "icd10":
        return icd10_canonical(code) == code and icd10_is_valid(code)
    codes = code_system(label)
    return not codes or code in codes
