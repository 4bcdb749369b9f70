"""中医 at the 中医医院: which encounters get a 中医诊断 (病名 + 证候, GB/T 15657 codes) and a 中药饮片 prescription.

A clinical decision, so it is made with the day's events (simulator/activity.py) and logged in the answer key:
the 中医院 HIS only writes down what was decided (simulator/systems/zyy_his.py). Its own random stream per
institution and day, so switching it on or off leaves every other draw of the day unchanged.
"""

from __future__ import annotations

import random
from typing import Any

from simulator.events import Charge, Encounter, TcmTreatment

# 中医病名 by ICD-10 category: (disease code, name, syndrome codes the doctors use with it).
TCM_DISEASES = {
    "I10": ("BNX010", "眩晕病", ("ZBMGY", "ZYYXK", "ZTSZZ")),
    "E11": ("BNV060", "消渴病", ("ZQYLX", "ZYXRS")),
    "J06": ("BWF010", "感冒", ("ZWFHS", "ZWFRF")),
    "J20": ("BNF020", "咳嗽病", ("ZWFRF", "ZTRYF")),
    "J18": ("BNF090", "风温肺热病", ("ZTRYF",)),
    "J44": ("BNF050", "肺胀病", ("ZTZZF", "ZTRYF")),
    "K29": ("BNP010", "胃脘痛", ("ZGWBH", "ZPWXH")),
    "K52": ("BNP100", "泄泻病", ("ZDCSR", "ZPWXH")),
    "M54": ("BNS100", "腰痛病", ("ZHSBZ", "ZSQKX", "ZQZXY")),
    "M17": ("BGS010", "膝痹病", ("ZHSBZ", "ZQZXY")),
    "I25": ("BNX020", "胸痹心痛病", ("ZXXYZ", "ZQXXY")),
    "I50": ("BNX040", "心衰病", ("ZQXXY",)),
    "I63": ("BNG080", "中风病", ("ZFTYZ", "ZQXXY")),
    "R51": ("BNG010", "头痛病", ("ZBMGY", "ZWFHS")),
    "N39": ("BNS020", "淋证", ("ZXJSR",)),
    "S72": ("BGG020", "骨折病", ("ZQZXY",)),
    "K35": ("BWC060", "肠痈", ("ZDCSR",)),
    "K80": ("BNP070", "胆胀病", ("ZGDSR",)),
}
# 证候 code -> (name, the usual 方剂, its herbs with grams per 剂).
SYNDROMES = {
    "ZBMGY": ("肝阳上亢证", "天麻钩藤饮", "天麻10 钩藤15 石决明30 栀子10 黄芩10 杜仲12 牛膝15 茯苓15"),
    "ZYYXK": ("阴虚阳亢证", "杞菊地黄汤加减", "枸杞子15 生地黄15 山药15 茯苓12 牛膝12 白芍12"),
    "ZTSZZ": ("痰湿中阻证", "半夏白术天麻汤", "半夏9 白术12 天麻10 茯苓15 陈皮9 甘草6"),
    "ZQYLX": ("气阴两虚证", "生脉散合玉液汤加减", "黄芪30 麦冬15 生地黄15 山药20 葛根15 党参15"),
    "ZYXRS": ("阴虚热盛证", "玉女煎加减", "生地黄20 麦冬15 黄连6 牛膝12 葛根15"),
    "ZWFHS": ("风寒束表证", "荆防败毒散", "荆芥10 防风10 柴胡10 川芎10 桔梗10 茯苓12 甘草6"),
    "ZWFRF": ("风热犯表证", "银翘散", "金银花15 连翘15 桔梗10 荆芥10 甘草6"),
    "ZTRYF": ("痰热壅肺证", "清金化痰汤加减", "黄芩12 栀子10 桔梗10 瓜蒌15 麦冬12 茯苓12 甘草6"),
    "ZTZZF": ("痰浊阻肺证", "二陈汤合三子养亲汤加减", "半夏9 陈皮10 茯苓15 苦杏仁10 甘草6"),
    "ZGWBH": ("肝胃不和证", "柴胡疏肝散", "柴胡10 白芍12 川芎10 陈皮10 木香6 甘草6"),
    "ZPWXH": ("脾胃虚寒证", "黄芪建中汤", "黄芪20 桂枝10 白芍20 甘草6 党参15"),
    "ZDCSR": ("大肠湿热证", "葛根芩连汤", "葛根20 黄芩10 黄连6 木香6 甘草6"),
    "ZHSBZ": ("寒湿痹阻证", "独活寄生汤", "独活10 桑寄生15 杜仲12 牛膝12 当归10 川芎10 白芍12 桂枝6"),
    "ZSQKX": ("肾气亏虚证", "肾气丸加减", "生地黄15 山药15 茯苓12 杜仲12 桑寄生15 枸杞子12"),
    "ZQZXY": ("气滞血瘀证", "桃红四物汤", "桃仁10 红花9 当归12 川芎10 白芍12 生地黄12"),
    "ZXXYZ": ("心血瘀阻证", "血府逐瘀汤", "桃仁10 红花9 当归10 川芎9 生地黄12 牛膝10 柴胡6 桔梗6 甘草6"),
    "ZQXXY": ("气虚血瘀证", "补阳还五汤", "黄芪30 当归10 川芎9 桃仁9 红花6 地龙10 白芍12"),
    "ZFTYZ": ("风痰瘀阻证", "化痰通络汤", "半夏9 白术12 天麻10 丹参15 茯苓15 地龙10"),
    "ZGDSR": ("肝胆湿热证", "龙胆泻肝汤加减", "柴胡10 黄芩10 栀子10 金钱草30 车前子15 甘草6"),
    "ZXJSR": ("下焦湿热证", "八正散加减", "车前子15 栀子10 黄柏10 金钱草20 甘草6"),
}
# 中药饮片 and their price in yuan per gram (the 中医院's vendor numbers them YP50101.. in this order).
_PRICES = (
    "天麻 0.95 钩藤 0.12 石决明 0.04 栀子 0.10 黄芩 0.15 杜仲 0.18 牛膝 0.12 茯苓 0.10 半夏 0.26 "
    "白术 0.16 陈皮 0.06 党参 0.32 黄芪 0.12 当归 0.36 川芎 0.15 丹参 0.10 红花 0.60 桃仁 0.20 甘草 0.06 "
    "麦冬 0.30 生地黄 0.10 葛根 0.06 柴胡 0.30 白芍 0.10 金银花 0.40 连翘 0.20 桔梗 0.08 苦杏仁 0.12 "
    "荆芥 0.10 防风 0.30 独活 0.20 桑寄生 0.08 山药 0.10 枸杞子 0.30 黄连 0.80 瓜蒌 0.10 地龙 0.50 "
    "黄柏 0.12 车前子 0.08 金钱草 0.05 木香 0.15 桂枝 0.06"
).split()
HERB_PRICES = {name: float(price) for name, price in zip(_PRICES[::2], _PRICES[1::2], strict=True)}


class TcmPractice:
    """Rates from config/simulator.yaml ``activity.tcm``: which institution types practise 中医, the share of
    visits and stays with a 中医诊断 (when the western diagnosis has a 中医病名), and of those with 中药饮片."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = config or {}
        self.org_types = set(config.get("org_types", ["中医医院"]))
        self.rate = {
            "outpatient": float(config.get("outpatient", 0.6)),
            "emergency": float(config.get("outpatient", 0.6)),
            "inpatient": float(config.get("inpatient", 0.95)),
        }
        self.herbal_rate = float(config.get("herbal_prescription", 0.4))

    def treat(self, rng: random.Random, encounter: Encounter) -> None:
        """Add the 中医诊断 and, for a share, the 中药饮片 (one charge per herb) to an encounter."""
        if rng.random() >= self.rate[encounter.kind]:
            return
        disease = next(
            (
                TCM_DISEASES[d.icd_code[:3]]
                for d in sorted(encounter.diagnoses, key=lambda d: not d.is_main)
                if d.icd_code[:3] in TCM_DISEASES
            ),
            None,
        )
        if disease is None:
            return
        syndrome = rng.choice(disease[2])
        name, formula, herbs = SYNDROMES[syndrome]
        treatment = TcmTreatment(disease[0], disease[1], syndrome, name)
        if rng.random() < self.herbal_rate:
            doses = 7 if encounter.kind == "inpatient" else rng.choice((3, 5, 7, 7, 7, 10, 14))
            grams = tuple((h.rstrip("0123456789"), int(h[len(h.rstrip("0123456789")) :])) for h in herbs.split())
            treatment = TcmTreatment(disease[0], disease[1], syndrome, name, formula, doses, grams)
            encounter.charges.extend(
                Charge(herb, herb, "中草药", round(g * doses * HERB_PRICES[herb], 2)) for herb, g in grams
            )
        encounter.tcm = treatment
