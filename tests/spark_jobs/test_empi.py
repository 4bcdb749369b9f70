"""EMPI matching on hand-made records: what must link, what must never link, and how."""

from __future__ import annotations

import csv
import json
from datetime import date

import pytest
from pyspark.sql import functions as F

from core.gb11643 import check_char
from spark_jobs.empi.batch import BatchFileError, match_file, read_batch
from spark_jobs.empi.identity import match_records
from spark_jobs.empi.match import empi_config, prior_params
from spark_jobs.empi.normalize import normalize_records

SCHEMA = (
    "record_id string, source_system string, name string, sex_code string, birth_date date, "
    "id_number string, phone string, address string"
)
ADDRESS = "河南省荥阳市乔楼镇丁营村169号"
PEOPLE = [
    # one resident, four desks: valid ID; legacy 15-digit ID; wrong check digit + traditional characters;
    # no ID, homophone in the given name, address written differently
    ("his|1", "his", "欧阳娜", "2", date(1980, 5, 6), "410182198005060022", "13803711234", ADDRESS),
    ("zyy|1", "zyy", "欧阳娜", "2", date(1980, 5, 6), "410182800506002", "13803711234", ADDRESS),
    ("cloud|1", "cloud", "歐陽娜", "2", date(1980, 5, 6), "410182198005060023", None, "乔楼镇丁营169#"),
    ("ph|1", "ph", "欧阳纳", "2", date(1980, 5, 6), None, "13803711234", "荥阳市乔楼镇丁营村169号"),
    # twins: same surname, birthday, address and phone, own ID numbers and given names
    ("his|2", "his", "马海军", "1", date(2001, 3, 4), "41018220010304005X", "13912345678", "金寨回族乡马庄村8号"),
    ("his|3", "his", "马海涛", "1", date(2001, 3, 4), "410182200103040076", "13912345678", "金寨回族乡马庄村8号"),
    ("zyy|3", "zyy", "马海涛", "1", date(2001, 3, 4), None, "13912345678", "金寨回族乡马庄村8号"),
    # same name, same birthday, different people (different IDs, villages, phones)
    ("his|4", "his", "王伟", "1", date(1975, 1, 1), "410182197501010011", "13600000001", "广武镇王庄村1号"),
    ("cloud|4", "cloud", "王伟", "1", date(1975, 1, 1), "410182197501010038", "13700000002", "高山镇李沟村2号"),
]


# one resident registered five times with her ID number and three times without it (village clinic, 妇幼 file,
# an old registration): two agree with her on everything; one has a new phone and a one-digit birth-date typo
SUN_ID = "41018219670203004" + check_char("41018219670203004")
SUN = ("孙秀英", "2", date(1967, 2, 3), "13598761234", "河南省荥阳市高村乡刘沟村12号")
RESIDENT_WITH_ID_LESS_RECORDS = [
    *[(f"{src}|S{i}", src, *SUN[:3], SUN_ID, *SUN[3:]) for i, src in enumerate(("his", "zyy", "cloud", "ph", "pr"))],
    ("vc|S1", "vc", *SUN[:3], None, *SUN[3:]),
    ("fy|S1", "fy", *SUN[:3], None, *SUN[3:]),
    ("old|S1", "old", SUN[0], SUN[1], date(1967, 2, 8), None, "13700001111", SUN[4]),
]


@pytest.fixture(scope="module")
def assigned(spark):
    records = normalize_records(spark.createDataFrame(PEOPLE + RESIDENT_WITH_ID_LESS_RECORDS, SCHEMA)).localCheckpoint()
    assignments, _ = match_records(spark, records, None, prior_params())
    rows = assignments.collect()
    return {r.record_id: r for r in rows}, {r.record_id for r in rows if r.decision == "review"}


def test_one_resident_recorded_four_ways_gets_one_master_id(assigned):
    ids, _ = assigned
    assert len({ids[r].master_id for r in ("his|1", "zyy|1", "cloud|1", "ph|1")}) == 1
    assert ids["ph|1"].decision == "link"  # no ID at all: linked on name sound, birth, phone, address


def test_twins_are_never_merged(assigned):
    ids, _review = assigned
    assert ids["his|2"].master_id != ids["his|3"].master_id
    assert ids["zyy|3"].master_id == ids["his|3"].master_id  # the twin without ID joins the right twin
    assert ids["zyy|3"].master_id != ids["his|2"].master_id


def test_same_name_same_birthday_different_people_stay_apart(assigned):
    ids, _ = assigned
    assert ids["his|4"].master_id != ids["cloud|4"].master_id


def test_id_less_records_agreeing_with_a_resident_join_her_not_the_review_queue(assigned):
    """Two records without an ID number that agree with each other are one person, not two competing
    residents: both join the resident whose ID-holding records they agree with."""
    ids, review = assigned
    resident = ids["his|S0"].master_id
    assert {ids[r].master_id for r in ("zyy|S1", "cloud|S2", "ph|S3", "pr|S4")} == {resident}
    assert ids["vc|S1"].master_id == ids["fy|S1"].master_id == resident
    assert ids["vc|S1"].decision == ids["fy|S1"].decision == "link"
    assert not {"vc|S1", "fy|S1"} & review


def test_a_changed_phone_and_a_birth_date_typo_are_linked_or_reviewed_never_silently_new(assigned):
    ids, _ = assigned
    old = ids["old|S1"]
    assert old.decision in ("link", "review")
    if old.decision == "link":
        assert old.master_id == ids["his|S0"].master_id
    else:  # a reviewer gets the resident, her closest record and what agreed
        assert old.candidate == ids["his|S0"].master_id
        assert old.candidate_record is not None
        assert "phone=different" in old.evidence and "birth=near" in old.evidence


def test_master_ids_are_stable_and_reveal_no_id_number(spark, assigned):
    ids, _ = assigned
    records = normalize_records(spark.createDataFrame(PEOPLE + RESIDENT_WITH_ID_LESS_RECORDS, SCHEMA)).localCheckpoint()
    again, _ = match_records(spark, records, None, prior_params())
    assert {r.record_id: r.master_id for r in again.collect()} == {k: v.master_id for k, v in ids.items()}
    assert all(v.master_id.startswith("M") and "410182" not in v.master_id for v in ids.values())


def test_a_new_record_matches_incrementally_against_known_residents(spark, assigned):
    ids, _ = assigned
    known = normalize_records(spark.createDataFrame(PEOPLE, SCHEMA)).join(
        spark.createDataFrame([(k, v.master_id) for k, v in ids.items()], "record_id string, master_id string"),
        "record_id",
    )
    newcomer = spark.createDataFrame(
        [("fy|9", "fy", "欧阳 娜", "女", date(1980, 5, 6), None, "138-0371-1234", ADDRESS)], SCHEMA
    )
    newcomer = normalize_records(newcomer.withColumn("sex_code", F.lit("2")))
    result, _ = match_records(spark, newcomer, known, prior_params())
    assert result.first().master_id == ids["his|1"].master_id


def test_a_batch_file_links_its_records_to_each_other_and_explains_possible_matches(spark, tmp_path):
    """``empi match`` on an empty registry: the file's records of one person share a master id; a possible
    match names its candidate and the comparison levels that decided it."""
    people = tmp_path / "people.csv"
    lines = ["record_id,source,name,sex,birth_date,id_number,phone,address"]
    for record_id, source, name, sex, birth, id_number, phone, address in RESIDENT_WITH_ID_LESS_RECORDS + PEOPLE:
        lines.append(",".join([record_id, source, name, sex, birth.isoformat(), id_number or "", phone or "", address]))
    people.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "matched.csv"
    timings = tmp_path / "timings.json"
    assert match_file(spark, str(people), str(out), timings_path=str(timings)) == len(lines) - 1
    # each stage's own seconds, in order, for benchmarks (no estimate on a file this small: no comparison mark)
    stages = json.loads(timings.read_text(encoding="utf-8"))
    assert list(stages) == ["read and normalised", "scored and decided", "master ids assigned, output written"]
    assert all(seconds >= 0 for seconds in stages.values())

    rows = {r["record_id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["vc|S1"]["master_id"] == rows["fy|S1"]["master_id"] == rows["his|S0"]["master_id"]
    assert {r["decision"] for r in rows.values()} <= {"new", "possible_match"}  # nobody is registered yet
    for r in rows.values():
        if r["decision"] == "possible_match":
            assert r["candidate_master_id"].startswith("M") and r["candidate_record_id"] in rows, r
            assert "name=" in r["evidence"] and "address=" in r["evidence"], r
        else:
            assert not r["candidate_master_id"] and not r["evidence"], r


def test_malformed_batch_files_are_refused_with_the_line_and_rule(spark, tmp_path):
    bad = tmp_path / "people.csv"
    bad.write_text(
        "record_id,source,name,sex,birth_date,id_number,phone,address\n"
        "1,his,张三,男,1980-01-02,,,\n2,his,李四,X,1980-01-02,,,\n3,his,王五,女,02/01/1980,,,\n",
        encoding="utf-8",
    )
    with pytest.raises(BatchFileError, match=r"2 invalid row\(s\).*line 3: sex must be.*line 4: birth_date"):
        read_batch(spark, str(bad))
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("record_id,source,name\n1,his,张三\n".encode("gbk"))
    with pytest.raises(BatchFileError, match="not UTF-8"):
        read_batch(spark, str(gbk))
    missing = tmp_path / "missing.csv"
    missing.write_text("id,name\n1,张三\n", encoding="utf-8")
    with pytest.raises(BatchFileError, match="missing record_id, source"):
        read_batch(spark, str(missing))


@pytest.mark.parametrize("weights", ["configured priors", "estimated on a sample"])
def test_matching_meets_the_quality_goals_on_a_dirty_synthetic_county(spark, monkeypatch, weights):
    """3,000 residents registered like the member systems do, with the simulator's default front-desk dirt;
    weighed by the configured priors, or by m/u a full run estimates (here on a quarter of the records)."""
    import pandas as pd

    from bench.empi import build_records
    from evaluation.empi import pairwise

    records, truth = build_records(3_000, seed=11)
    frame = pd.DataFrame(records)[
        ["record_id", "source_system", "name", "sex_code", "birth_date", "id_number", "phone", "address"]
    ]
    people = normalize_records(spark.createDataFrame(frame, SCHEMA)).localCheckpoint()
    if weights == "configured priors":
        assignments, _ = match_records(spark, people, None, prior_params())
    else:
        monkeypatch.setitem(empi_config(), "estimate_sample_records", len(records) // 4)
        assignments, _ = match_records(spark, people, None, estimate=True)
    rows = assignments.collect()
    quality = pairwise({r.record_id: r.master_id for r in rows}, truth)
    assert quality["true_pairs"] > 2_000
    assert quality["precision"] >= 0.999, quality
    assert quality["recall"] >= 0.98, quality
    assert sum(r.decision == "review" for r in rows) <= 0.02 * len(rows)


def test_u_leaves_out_the_matches_among_random_pairs_of_a_file_full_of_duplicates(spark):
    """300 people with four records each, every record carrying its person's 7-digit identifier (no ID number):
    a random pair is the same person once in 400, so nearly every random pair with one identifier is a match.
    u, the chance of that agreement between *different* people, must not count those, or the strongest evidence
    in such a file (FEBRL's) would weigh little and its duplicates would wait in review."""
    import random

    from spark_jobs.empi.match import candidate_pairs, comparison_levels, estimate_params

    rng = random.Random(3)
    surnames, given = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"
    rows = []
    for person in range(300):
        identifier = str(rng.randrange(10**6, 10**7))
        name = rng.choice(surnames) + rng.choice(given) + rng.choice(given)
        born = date(1940 + rng.randrange(60), 1 + rng.randrange(12), 1 + rng.randrange(28))
        village = f"河南省荥阳市乔楼镇{rng.choice(given)}{rng.choice(surnames)}村{rng.randrange(1, 300)}号"
        for copy in range(4):  # a typo in some names, a birth date missing in some records
            written = name if copy != 3 else name[:-1] + rng.choice(given)
            rows.append(
                (f"p{person}|{copy}", f"s{copy}", written, None, born if copy != 2 else None, identifier, None, village)
            )
    features = normalize_records(spark.createDataFrame(rows, SCHEMA)).localCheckpoint()
    config = empi_config()
    pairs = candidate_pairs(features, features, config["blocking"], config["max_block_size"], same_side=False)
    params = estimate_params(
        features, comparison_levels(pairs, features), random_pair_count=40_000, compared_records=len(rows)
    )
    share_at_random = 3 / (len(rows) - 1)  # of a random pair's records, how often they share the identifier
    assert params["id"]["u"][0] < share_at_random / 10, params["id"]  # uncorrected: about the share itself
    assert params["id"]["m"][0] > 0.9, params["id"]
