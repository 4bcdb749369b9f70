"""The long tail of diagnoses: realistic variety per institution type, and every vendor's form of a tail code
still rolls up to the true WHO category on the platform."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simulator.config import load_simulator_config
from simulator.diagnoses import tail_catalog, tail_samplers
from simulator.systems import cloud_his, fy_files, private_api, rmyy_his, zyy_his
from spark_jobs.codes import icd10_canonical, icd10_is_valid, icd10_rollup

SEED = 20261101


@pytest.fixture(scope="module")
def samplers():
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DRC_SIM_DIAGNOSIS_TAIL", raising=False)  # the tail as configured, whatever the test run sets
        return tail_samplers(SEED, load_simulator_config("test")["activity"]["diagnosis_tail"])


def test_every_tail_code_is_a_valid_clinical_code_of_a_who_category():
    catalog = tail_catalog(SEED, 0.3)
    assert len(catalog) > 10_000
    extensions = [d.code for d in catalog if "x0" in d.code[-4:]]
    assert len(extensions) > 1_000, "国临版 extension codes (x001…) are part of the tail"
    invalid = [d.code for d in catalog if not icd10_is_valid(d.code)]
    assert invalid == []
    assert icd10_rollup("J18.900x001").category == "J18"


def test_a_village_clinic_uses_a_few_dozen_codes_and_the_lead_hospital_thousands(samplers):
    rng = random.Random(1)
    drawn = {
        org_type: Counter(d.code for d in (sampler.draw(rng, 2) for _ in range(20_000)) if d)
        for org_type, (_, sampler) in samplers.items()
    }
    assert len(drawn["村卫生室"]) <= 60
    assert len(drawn["综合医院"]) > 2_000
    assert len(drawn["村卫生室"]) < len(drawn["乡镇卫生院"]) < len(drawn["综合医院"])
    ranked = [count for _, count in drawn["综合医院"].most_common()]
    assert ranked[0] > 20 * ranked[min(len(ranked), 500) - 1], "long-tailed: the top code is far more frequent"


def test_a_code_of_one_sex_is_never_drawn_for_the_other(samplers):
    _, hospital = samplers["综合医院"]
    rng = random.Random(2)
    for_men = [d for d in (hospital.draw(rng, 1) for _ in range(50_000)) if d]
    assert not [d.code for d in for_men if d.sex == 2]
    assert not [d.code for d in for_men if d.code[:3] >= "N70" and d.code[:3] <= "N98"]


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(cloud_his.vendor_icd, id="cloud_his"),
        pytest.param(fy_files.vendor_icd, id="fy_files"),
        pytest.param(private_api.vendor_icd, id="private_api"),
        pytest.param(lambda code: rmyy_his.local_diagnosis(code, "")[0], id="rmyy_his"),
        pytest.param(lambda code: zyy_his.vendor_diagnosis(code, "")[0], id="zyy_his"),
    ],
)
def test_each_vendors_form_of_a_tail_code_rolls_up_to_its_true_category(render):
    codes = [d.code for d in tail_catalog(SEED, 0.3)[::7]]
    wrong = {}
    for truth in codes:
        sent = render(truth)
        rollup = icd10_rollup(icd10_canonical(sent))
        if rollup is None or rollup.category != truth[:3]:
            wrong[truth] = sent
    assert wrong == {}
