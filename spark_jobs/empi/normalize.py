"""Identity normalisation for matching: ID numbers, names, phones and addresses as comparable keys.

Pure Column expressions (and one vectorised pinyin UDF) applied to silver person records. What a front desk
gets wrong is what these undo: legacy 15-digit IDs (converted to 18), full-width characters, traditional
characters (OpenCC's character table), homophones (pinyin with the fuzzy initials/finals of 中原官话 ears),
spaces and dots in minority names, phone formatting, and the many ways one 荥阳 address is written.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

from spark_jobs.model import ORGANIZATIONS_FILE
from spark_jobs.standardize import FULL_WIDTH, HALF_WIDTH, ID_WEIGHTS, id_number_is_valid

COMPOUND_SURNAMES = ("司马", "欧阳", "上官", "诸葛", "东方", "皇甫", "慕容", "夏侯", "尉迟", "公孙", "令狐", "宇文",
                     "长孙", "端木", "西门", "南宫", "司徒", "申屠", "轩辕", "呼延")
DOTS = "•・.．"                       # written for the middle dot of minority names
# Fuzzy pinyin: sounds a clerk (or a patient's accent) confuses are folded onto one spelling.
FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("f", "h"), ("r", "l"))
FUZZY_FINALS = (("iang", "ian"), ("uang", "uan"), ("ang", "an"), ("eng", "en"), ("ing", "in"))


@cache
def _traditional_to_simplified() -> tuple[str, str]:
    """OpenCC's one-to-one character conversions as two equal-length strings for ``translate``."""
    table = resources.files("opencc").joinpath("dictionary/TSCharacters.txt").read_text(encoding="utf-8")
    source, target = [], []
    for line in table.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and len(parts[0]) == 1 and len(parts[1].split(" ")[0]) == 1:
            source.append(parts[0])
            target.append(parts[1].split(" ")[0])
    return "".join(source), "".join(target)


@cache
def townships() -> tuple[str, ...]:
    """The county's township-level names (from the institution register), longest first."""
    import csv

    with ORGANIZATIONS_FILE.open(encoding="utf-8") as f:
        names = {row["township"] for row in csv.DictReader(f) if row["township"]}
    return tuple(sorted(names, key=len, reverse=True))


def _check_char(first17: Column) -> Column:
    weighted = sum(F.substring(first17, i + 1, 1).cast("int") * w for i, w in enumerate(ID_WEIGHTS))
    return F.substring(F.lit("10X98765432"), (weighted % 11 + 1).cast("int"), 1)


def id18(raw: Column) -> Column:
    """18-character ID: cleaned, upper-cased; a legacy 15-digit number converted (19 inserted, check added)."""
    cleaned = F.upper(F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"\s", ""))
    first17 = F.concat(F.substring(cleaned, 1, 6), F.lit("19"), F.substring(cleaned, 7, 9))
    return (F.when(cleaned.rlike("^[0-9]{15}$"), F.concat(first17, _check_char(first17)))
             .when(cleaned.rlike("^[0-9]{17}[0-9X]$"), cleaned))


def id_key(raw: Column) -> Column:
    """What ID numbers are compared and blocked on: the first 17 characters of an 18-character number (so a
    wrong check character still agrees), else the cleaned identifier as given (a 17-digit number missing its
    check character, a passport or another system's identifier)."""
    cleaned = F.upper(F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"[\s-]", ""))
    ident = id18(raw)
    return (F.when(F.length(ident) == 18, F.substring(ident, 1, 17))
             .when(F.length(cleaned) >= 5, F.substring(cleaned, 1, 17)))


def name_key(raw: Column) -> Column:
    """Name as comparable text: half-width, simplified characters, no spaces, one kind of middle dot."""
    source, target = _traditional_to_simplified()
    text = F.translate(F.translate(raw, FULL_WIDTH, HALF_WIDTH), DOTS, "····")
    return F.nullif(F.translate(F.regexp_replace(text, r"\s", ""), source, target), F.lit(""))


def surname(name: Column) -> Column:
    """Compound surnames whole; a minority name's part before '·'; otherwise the first character."""
    compound = F.substring(name, 1, 2).isin(*COMPOUND_SURNAMES)
    return (F.when(name.contains("·"), F.substring_index(name, "·", 1))
             .when(compound & (F.length(name) > 2), F.substring(name, 1, 2))
             .otherwise(F.substring(name, 1, 1)))


def _fuzzy(syllable: str) -> str:
    for long, short in FUZZY_INITIALS:
        if syllable.startswith(long):
            syllable = short + syllable[len(long):]
            break
    for long, short in FUZZY_FINALS:
        if syllable.endswith(long):
            return syllable[: -len(long)] + short
    return syllable


_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")


def _soundex(word: str) -> str:
    """American Soundex of a Latin-script word (names of foreign residents, other-country data sets)."""
    letters = [c for c in word.lower() if "a" <= c <= "z"]
    if not letters:
        return ""
    codes = [c.translate(_SOUNDEX) if c in "bfpvcgjkqsxzdtlmnr" else ("" if c in "hw" else "0") for c in letters]
    out, last = [letters[0].upper()], codes[0]
    for code in codes[1:]:
        if code and code != "0" and code != last:
            out.append(code)
        if code != "":
            last = code
    return ("".join(out) + "000")[:4]


@lru_cache(maxsize=300_000)
def _fuzzy_pinyin_of(name: str) -> str | None:
    """Cached per worker: a county's names repeat (surnames by the hundred thousand), pypinyin is slow.
    A name without Chinese characters gets the Soundex of each word instead; a name with neither, none."""
    from pypinyin import Style, lazy_pinyin

    if not re.search(r"[\u3400-\u9fff]", name):
        return " ".join(code for code in map(_soundex, re.split(r"[\s·]+", name)) if code) or None
    return " ".join(_fuzzy(s) for s in lazy_pinyin(name, style=Style.NORMAL, errors="ignore")) or None


@pandas_udf(StringType())
def fuzzy_pinyin(names: pd.Series) -> pd.Series:
    """Space-separated fuzzy pinyin of each character (homophones and near-homophones get one key)."""
    return names.map(lambda name: _fuzzy_pinyin_of(name) if name else None)


def phone_key(raw: Column) -> Column:
    """Digits only; a mobile number as its 11 digits (country code and separators dropped)."""
    digits = F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), "[^0-9]", "")
    return (F.when(digits.rlike("1[3-9][0-9]{9}$"), F.regexp_extract(digits, "(1[3-9][0-9]{9})$", 1))
             .when(F.length(digits) >= 7, digits))


def address_text(raw: Column) -> Column:
    """The address as comparable text (half-width, lower case, no spaces or punctuation, province/city
    prefixes dropped): compared when it cannot be parsed into township, village and house number."""
    text = F.lower(F.translate(raw, FULL_WIDTH, HALF_WIDTH))
    text = F.regexp_replace(text, r"河南省|郑州市|荥阳市|[\s,.，。、#()（）-]", "")
    return F.nullif(F.regexp_replace(text, "办事处", "街道"), F.lit(""))


def address_parts(raw: Column) -> tuple[Column, Column, Column]:
    """(township, village key, house number) of a 荥阳 address; NULL where the address does not say."""
    text = F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"\s|河南省|荥阳市|郑州市", "")
    text = F.regexp_replace(text, "办事处", "街道")
    pattern = "(" + "|".join(re.escape(t) for t in townships()) + ")"
    township = F.nullif(F.regexp_extract(text, pattern, 1), F.lit(""))
    rest = F.regexp_replace(text, "^.*?" + pattern, "")
    village = F.nullif(F.substring(F.regexp_replace(rest, r"[0-9#号组村]", ""), 1, 2), F.lit(""))
    number = F.nullif(F.regexp_extract(rest, r"([0-9]+)(号|#)?$", 1), F.lit(""))
    return township, village, number


def normalize_records(people: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Silver person rows (or a batch file's rows) -> one comparable identity per record.

    Input columns: record_id, source_system, name, sex_code, birth_date, id_number, phone, address; ``keep``
    names further input columns passed through unchanged.
    """
    ident = id18(F.col("id_number"))
    valid = id_number_is_valid(ident)
    name = name_key(F.col("name"))
    township, village, number = address_parts(F.col("address"))
    sex = F.when(F.col("sex_code").isin("1", "2"), F.col("sex_code"))
    id_birth = F.to_date(F.substring(ident, 7, 8), "yyyyMMdd")    # also right when only the check char is wrong
    id_sex = F.when(F.substring(ident, 17, 1).cast("int") % 2 == 1, "1").otherwise("2")
    return (people.select(
        "record_id", "source_system",
        name.alias("name_n"),
        F.when(valid, ident).alias("id18"),
        id_key(F.col("id_number")).alias("id17"),
        valid.alias("id_valid"),
        F.coalesce(F.col("birth_date"), id_birth).alias("birth"),
        F.coalesce(sex, F.when(valid, id_sex)).alias("sex"),
        # the ID and the recorded birth date / sex disagree: one of them is wrong (kept as evidence)
        (valid & F.col("birth_date").isNotNull() & (F.col("birth_date") != id_birth)).alias("id_birth_conflict"),
        phone_key(F.col("phone")).alias("phone_n"),
        township.alias("township"), village.alias("village"), number.alias("house_no"),
        address_text(F.col("address")).alias("address_n"), *keep)
        .withColumn("surname", surname(F.col("name_n")))
        .withColumn("pinyin", fuzzy_pinyin(F.col("name_n")))
        .withColumn("surname_py", fuzzy_pinyin(F.col("surname")))
        .withColumn("birth_year", F.year("birth")))
