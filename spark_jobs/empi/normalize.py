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
from spark_jobs.standardize import FULL_WIDTH, HALF_WIDTH, id_check_char, id_number_is_valid

DOTS = "•・.．"  # written for the middle dot of minority names
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


@cache
def township_stems() -> dict[str, str]:
    """A township as people shorten it (崔庙 for 崔庙镇, 索河 for 索河街道, 金寨(乡) for 金寨回族乡) -> its name."""
    stems = {re.sub("(街道|回族乡|镇|乡)$", "", name): name for name in townships()}
    return {stem: name for stem, name in stems.items() if len(stem) >= 2 and stem != name}


def id18(raw: Column) -> Column:
    """18-character ID: cleaned, upper-cased; a legacy 15-digit number converted (19 inserted, check added)."""
    cleaned = F.upper(F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"\s", ""))
    first17 = F.concat(F.substring(cleaned, 1, 6), F.lit("19"), F.substring(cleaned, 7, 9))
    return F.when(cleaned.rlike("^[0-9]{15}$"), F.concat(first17, id_check_char(first17))).when(
        cleaned.rlike("^[0-9]{17}[0-9X]$"), cleaned
    )


def id_key(raw: Column) -> Column:
    """What ID numbers are compared and blocked on: the first 17 characters of an 18-character number (so a
    wrong check character still agrees), else the cleaned identifier as given (a 17-digit number missing its
    check character, a passport or another system's identifier)."""
    cleaned = F.upper(F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"[\s-]", ""))
    ident = id18(raw)
    return F.when(F.length(ident) == 18, F.substring(ident, 1, 17)).when(
        F.length(cleaned) >= 5, F.substring(cleaned, 1, 17)
    )


def name_words(raw: Column) -> Column:
    """Name as written words: half-width, simplified characters, lower case, one kind of middle dot, single
    spaces (what a name sounds like is read from these: a Latin-script name's words)."""
    source, target = _traditional_to_simplified()
    text = F.translate(F.translate(raw, FULL_WIDTH, HALF_WIDTH), DOTS, "····")
    return F.nullif(F.trim(F.regexp_replace(F.lower(F.translate(text, source, target)), r"\s+", " ")), F.lit(""))


def _fuzzy(syllable: str) -> str:
    for long, short in FUZZY_INITIALS:
        if syllable.startswith(long):
            syllable = short + syllable[len(long) :]
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
    A name without Chinese characters gets the Soundex of each word instead, in sorted order (given name and
    surname come in either order); a name with neither, none."""
    from pypinyin import Style, lazy_pinyin

    if not re.search(r"[\u3400-\u9fff]", name):
        return " ".join(sorted(code for code in map(_soundex, re.split(r"[\s·,]+", name)) if code)) or None
    return " ".join(_fuzzy(s) for s in lazy_pinyin(name, style=Style.NORMAL, errors="ignore")) or None


@pandas_udf(StringType())
def fuzzy_pinyin(names: pd.Series) -> pd.Series:
    """Space-separated fuzzy pinyin of each character (homophones and near-homophones get one key)."""
    return names.map(lambda name: _fuzzy_pinyin_of(name) if name else None)


def phone_key(raw: Column) -> Column:
    """Digits only; a mobile number as its 11 digits (country code and separators dropped)."""
    digits = F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), "[^0-9]", "")
    return F.when(digits.rlike("1[3-9][0-9]{9}$"), F.regexp_extract(digits, "(1[3-9][0-9]{9})$", 1)).when(
        F.length(digits) >= 7, digits
    )


def address_text(raw: Column) -> Column:
    """The address as comparable text (half-width, lower case, no spaces or punctuation, province/city
    prefixes dropped): compared when it cannot be parsed into township, village and house number."""
    text = F.lower(F.translate(raw, FULL_WIDTH, HALF_WIDTH))
    text = F.regexp_replace(text, r"河南省?|郑州市?|荥阳市?|[\s,.，。、#()（）-]", "")
    return F.nullif(F.regexp_replace(text, "办事处", "街道"), F.lit(""))


def address_parts(raw: Column) -> tuple[Column, Column, Column]:
    """(township, village key, house number) of a 荥阳 address; NULL where the address does not say.

    A township is found by its name anywhere, or by its short form at the start of the address (崔庙后贾庄:
    a short form later on may be part of a road's or a village's name, 索河路)."""
    text = F.regexp_replace(F.translate(raw, FULL_WIDTH, HALF_WIDTH), r"\s|河南省?|荥阳市?|郑州市?", "")
    # 京城路办事处, 京城路办 and 京城路街道 are one 街道
    text = F.regexp_replace(text, "办事处|(?<=路|河)办(?!公)", "街道")
    full = "(" + "|".join(re.escape(t) for t in townships()) + ")"
    stems = township_stems()
    short = (
        "^("
        + "|".join(re.escape(t) for t in sorted(stems, key=len, reverse=True))
        + ")(?:回族乡|街道|镇|乡)?(?![路街])"
    )  # 金寨乡 for 金寨回族乡
    named = F.nullif(F.regexp_extract(text, full, 1), F.lit(""))
    shortened = F.nullif(F.regexp_extract(text, short, 1), F.lit(""))
    township = F.coalesce(named, F.create_map(*[F.lit(x) for pair in stems.items() for x in pair])[shortened])
    rest = F.when(named.isNotNull(), F.regexp_replace(text, "^.*?" + full, "")).otherwise(
        F.regexp_replace(text, short, "")
    )
    # the village's first two characters, before 村 / 组 / 第 / a number (贾村10村民组 and 贾村10组 alike)
    village = F.nullif(F.substring(F.regexp_extract(rest, r"^([^0-9#号组村第]+)", 1), 1, 2), F.lit(""))
    number = F.nullif(F.regexp_extract(rest, r"([0-9]+)(号|#)?$", 1), F.lit(""))
    return township, village, number


def normalize_records(people: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Silver person rows (or a batch file's rows) -> one comparable identity per record.

    Input columns: record_id, source_system, name, sex_code, birth_date, id_number, phone, address; ``keep``
    names further input columns passed through unchanged.
    """
    # the ID number is cleaned once and validated once (columns, not expressions repeated in every use)
    ident, valid = F.col("_id18"), F.col("_id_valid")
    township, village, number = address_parts(F.col("address"))
    sex = F.when(F.col("sex_code").isin("1", "2"), F.col("sex_code"))
    id_birth = F.to_date(F.substring(ident, 7, 8), "yyyyMMdd")  # also right when only the check char is wrong
    id_sex = F.when(F.substring(ident, 17, 1).cast("int") % 2 == 1, "1").otherwise("2")
    return (
        people.withColumn("_id18", id18(F.col("id_number")))
        .withColumn("_id_valid", id_number_is_valid(F.col("_id18")))
        .select(
            "record_id",
            "source_system",
            name_words(F.col("name")).alias("_words"),
            F.when(valid, ident).alias("id18"),
            id_key(F.col("id_number")).alias("id17"),
            valid.alias("id_valid"),
            F.coalesce(F.col("birth_date"), id_birth).alias("birth"),
            F.col("birth_date").isNotNull().alias("birth_stated"),  # not taken from the ID number
            F.coalesce(sex, F.when(valid, id_sex)).alias("sex"),
            # the ID and the recorded birth date / sex disagree: one of them is wrong (kept as evidence)
            (valid & F.col("birth_date").isNotNull() & (F.col("birth_date") != id_birth)).alias("id_birth_conflict"),
            phone_key(F.col("phone")).alias("phone_n"),
            township.alias("township"),
            village.alias("village"),
            number.alias("house_no"),
            address_text(F.col("address")).alias("address_n"),
            *keep,
        )
        .withColumn("name_n", F.nullif(F.regexp_replace("_words", " ", ""), F.lit("")))
        .withColumn("pinyin", fuzzy_pinyin(F.col("_words")))
        .drop("_words")
        .withColumn("birth_year", F.year("birth"))
        .withColumn("birth_md", F.date_format("birth", "MMdd"))
    )
