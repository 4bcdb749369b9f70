"""Supervision indicators recomputed from the simulator's true events (sim_truth.event_*), never from the sources.

The pipeline reads member systems; these functions read what really happened, as of the last simulated day
(a visit cancelled by then does not count, a stay not yet discharged has no discharge). Tests compare them with
``marts.fct_indicator_value`` and account for every difference by what the pipeline quarantined or flagged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from core.db import warehouse_engine
from core.indicators import load_catalog
from simulator.connections import source_pg_engine
from simulator.world import HOSPITALS

COUNTY = "410182"
# 基层医疗卫生机构: every institution of the simulated county that is not one of its five hospitals (卫生院,
# 社区卫生服务中心, 村卫生室), from the simulator's world, not from the platform's organisation directory.
_HOSPITALS = ", ".join(f"'{code}'" for code, *_ in HOSPITALS)
_NOT_CANCELLED = (
    "NOT EXISTS (SELECT 1 FROM event_correction c WHERE c.target_uid = e.encounter_uid "
    "AND c.kind = 'cancel' AND c.day <= :last)"
)
_VISITS = (
    f"FROM event_encounter e WHERE kind IN ('outpatient', 'emergency') AND start_at::date <= :last AND {_NOT_CANCELLED}"
)
_DISCHARGES = "FROM event_encounter e WHERE kind = 'inpatient' AND end_at::date <= :last"
_SURGERIES = "FROM event_surgery s JOIN event_encounter e USING (encounter_uid) WHERE s.at::date <= :last"
# a referral counts unless the receiving institution refused it (拒收); the county's activity never withdraws one
_REFERRALS = "SELECT from_org, at::date, 1 FROM event_referral WHERE at::date <= :last AND NOT refused"
_INPATIENT_SETTLEMENTS = (
    "SELECT org_code, settled_at::date, 1 FROM event_settlement WHERE kind = 'inpatient' AND settled_at::date <= :last"
)
# True values per measure (config/indicators/_measures.yaml): SQL over sim_truth returning (org_code, event_date,
# amount) rows, as of :last. Written from the measures' definitions in words (docs/indicators.md), independently
# of the dbt models. Every indicator whose numerator (and denominator, if any) is one of these is proven against
# the truth. Not here: income by fee category (HO20: the true charges are summed per encounter, not per
# category), bed-days in hospital at midnight, stocks (population, records, contracts), staff and beds.
TRUTH_MEASURES = {
    "oe_visits": f"SELECT org_code, start_at::date, 1 {_VISITS}",
    "outpatient_visits": f"SELECT org_code, start_at::date, 1 {_VISITS} AND kind = 'outpatient'",
    "emergency_visits": f"SELECT org_code, start_at::date, 1 {_VISITS} AND kind = 'emergency'",
    # 中医: a 中医诊断 or a 中医 department (诊疗科目 50 中医科: 中医内科, 针灸推拿科, 中医骨伤科 …)
    "tcm_oe_visits": f"SELECT org_code, start_at::date, 1 {_VISITS} AND (tcm_diagnosis OR department_code LIKE '50%')",
    "oe_fees": f"SELECT org_code, start_at::date, total_yuan {_VISITS}",
    "oe_drug_fees": f"SELECT org_code, start_at::date, drug_yuan {_VISITS}",
    "primary_care_oe_visits": f"SELECT org_code, start_at::date, 1 {_VISITS} AND org_code NOT IN ({_HOSPITALS})",
    "admissions": "SELECT org_code, start_at::date, 1 FROM event_encounter e WHERE kind = 'inpatient' "
    "AND start_at::date <= :last",
    "discharges": f"SELECT org_code, end_at::date, 1 {_DISCHARGES}",
    # 同日入出院计 1 床日
    "discharged_bed_days": f"SELECT org_code, end_at::date, greatest(end_at::date - start_at::date, 1) {_DISCHARGES}",
    "inpatient_fees": f"SELECT org_code, end_at::date, total_yuan {_DISCHARGES}",
    "inpatient_drug_fees": f"SELECT org_code, end_at::date, drug_yuan {_DISCHARGES}",
    "discharged_deaths": f"SELECT org_code, end_at::date, 1 {_DISCHARGES} AND discharge_status = '死亡'",
    "surgeries": f"SELECT e.org_code, s.at::date, 1 {_SURGERIES}",
    "clean_incisions": f"SELECT e.org_code, s.at::date, 1 {_SURGERIES} AND s.incision_class = 'I'",
    "clean_incisions_grade_a": f"SELECT e.org_code, s.at::date, 1 {_SURGERIES} AND s.incision_class = 'I' "
    "AND s.healing_grade = '甲'",
    "referrals_out": _REFERRALS,
    "up_referrals": f"{_REFERRALS} AND direction = 'up'",
    "down_referrals": f"{_REFERRALS} AND direction = 'down'",
    "inpatient_settlements": _INPATIENT_SETTLEMENTS,
    "in_county_inpatient_settlements": f"{_INPATIENT_SETTLEMENTS} AND out_of_county_hospital = ''",
}
# What an institution's member system must deliver for the platform to count a measure there: SQL over the
# published silver (ods) giving the institutions whose source delivered at least one such row. Where the truth
# has some of a measure, the mart none over the whole run, and the source delivered nothing it could be counted
# from (a 妇幼 file has no stays, a private hospital's API no incision class), the shortfall is the source's gap.
_OE, _INPATIENT = "('100', '200')", "('300')"  # 就诊类别 codes of the canonical encounter


def _encounters(classes: str, extra: str = "") -> str:
    return f"SELECT DISTINCT org_code FROM ods.encounter WHERE encounter_class_code IN {classes}{extra}"


def _fees(classes: str) -> str:
    return (
        "SELECT DISTINCT f.org_code FROM ods.fee f JOIN ods.encounter e USING (encounter_id) "
        f"WHERE e.encounter_class_code IN {classes}"
    )


_SURGERY = "SELECT DISTINCT org_code FROM ods.surgery WHERE procedure_code IS NOT NULL"
_REFERRED = "SELECT DISTINCT from_organization_code FROM ods.referral"
DELIVERED = {
    **dict.fromkeys(
        ("oe_visits", "outpatient_visits", "emergency_visits", "tcm_oe_visits", "primary_care_oe_visits"),
        _encounters(_OE),
    ),
    **dict.fromkeys(("oe_fees", "oe_drug_fees"), _fees(_OE)),
    "admissions": _encounters(_INPATIENT),
    **dict.fromkeys(("discharges", "discharged_bed_days"), _encounters(_INPATIENT, " AND discharged_at IS NOT NULL")),
    "discharged_deaths": _encounters(_INPATIENT, " AND discharge_outcome_code IS NOT NULL"),
    **dict.fromkeys(("inpatient_fees", "inpatient_drug_fees"), _fees(_INPATIENT)),
    "surgeries": _SURGERY,
    "clean_incisions": f"{_SURGERY} AND incision_class_code IS NOT NULL",
    "clean_incisions_grade_a": f"{_SURGERY} AND incision_class_code IS NOT NULL AND healing_grade_code IS NOT NULL",
    **dict.fromkeys(("referrals_out", "up_referrals", "down_referrals"), _REFERRED),
}
Key = tuple[str, str, date, str, str, str]  # indicator, period type, period start, grain type, grain code, part


def _period_starts(day: date, periods: tuple[str, ...]) -> list[tuple[str, date]]:
    """The start of each period of the given types that contains the day."""
    starts = {
        "day": day,
        "month": day.replace(day=1),
        "quarter": date(day.year, (day.month - 1) // 3 * 3 + 1, 1),
        "year": day.replace(month=1, day=1),
    }
    return [(period, starts[period]) for period in periods]


def proven_indicators() -> dict[str, dict[str, str]]:
    """Supported scalar indicators whose measures all have a truth: code -> {"numerator": m, "denominator": m}."""
    proven = {}
    for code, indicator in load_catalog().indicators.items():
        parts = {"numerator": indicator.numerator, "denominator": indicator.denominator}
        parts = {part: measure for part, measure in parts.items() if measure}
        if indicator.supported and indicator.kind == "scalar" and all(m in TRUTH_MEASURES for m in parts.values()):
            proven[code] = parts
    return proven


def truth_values(last_day: date) -> dict[Key, float]:
    """(indicator, period_type, period_start, grain_type, grain_code, part) -> true value of the numerator or
    denominator, at the institution and county grains of every proven indicator."""
    catalog, proven = load_catalog(), proven_indicators()
    rows: dict[str, list] = {}
    with source_pg_engine("sim_truth").connect() as conn:
        for measure in {m for parts in proven.values() for m in parts.values()}:
            rows[measure] = conn.execute(sa.text(TRUTH_MEASURES[measure]), {"last": last_day}).all()
    values: dict[Key, float] = defaultdict(float)
    for code, parts in proven.items():
        indicator = catalog.indicators[code]
        for part, measure in parts.items():
            by_institution = catalog.measures[measure].attribution == "institution"
            per_institution = by_institution and "institution" in indicator.grains
            for org_code, day, amount in rows[measure]:
                for period_type, start in _period_starts(day, indicator.periods):
                    if per_institution:
                        values[(code, period_type, start, "institution", org_code, part)] += float(amount)
                    if "county" in indicator.grains:
                        values[(code, period_type, start, "county", COUNTY, part)] += float(amount)
    return dict(values)


def mart_values(codes: list[str]) -> dict[Key, float]:
    """The same keys from marts.fct_indicator_value."""
    with warehouse_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT indicator_code, period_type, period_start, grain_type, grain_code, numerator, denominator "
                "FROM marts.fct_indicator_value WHERE indicator_code = ANY(:codes) "
                "AND grain_type IN ('institution', 'county')"
            ),
            {"codes": codes},
        ).all()
    values = {}
    for r in rows:
        values[(r[0], r[1], r[2], r[3], r[4], "numerator")] = float(r[5])
        if r[6] is not None:
            values[(r[0], r[1], r[2], r[3], r[4], "denominator")] = float(r[6])
    return values


@dataclass
class TruthComparison:
    """Each proven indicator's numerators and denominators in the mart against the truth, key by key."""

    last_day: date
    indicators: dict[str, dict] = field(default_factory=dict)  # code -> name, keys, equal, under, over, totals
    differences: list[dict] = field(default_factory=list)  # every key where mart and truth differ
    # "indicator part" -> institutions whose numbers the mart has none of over the whole run, though they happened,
    # and whose source delivered nothing they could be counted from (DELIVERED: a 妇幼 file has no stays); what is
    # short there is a gap of the source, which the quality system reports, not a defect of the pipeline
    not_carried: dict[str, list[str]] = field(default_factory=dict)

    @property
    def over(self) -> list[dict]:
        """Keys where the mart counts more than happened: always a defect (double counting, a wrong filter)."""
        return [d for d in self.differences if d["mart"] > d["truth"]]

    @property
    def unexplained(self) -> list[dict]:
        """Differences other than the shortfall of what an institution's source does not carry."""
        return [d for d in self.differences if not d["not_carried"]]


def compare_with_truth(last_day: date) -> TruthComparison:
    """Compare every proven indicator at every period and at the institution and county grains, to the fen."""
    catalog = load_catalog()
    proven = proven_indicators()
    truth, mart = truth_values(last_day), mart_values(list(proven))
    comparison = TruthComparison(last_day)
    for code in proven:
        comparison.indicators[code] = {
            "name": catalog.indicators[code].zh,
            "keys": 0,
            "equal": 0,
            "under": 0,
            "over": 0,
        }
    not_carried = _not_carried(truth, mart, proven)
    # a county key short by exactly what those institutions did is short for that reason alone
    uncarried_truth: dict[tuple, float] = defaultdict(float)
    for (code, period, start, grain, org, part), value in truth.items():
        if grain == "institution" and (code, part, org) in not_carried:
            uncarried_truth[(code, period, start, part)] += value
    for key in sorted(set(truth) | {k for k, v in mart.items() if v}, key=str):
        true_value, mart_value = round(truth.get(key, 0.0), 2), round(mart.get(key, 0.0), 2)
        summary = comparison.indicators[key[0]]
        summary["keys"] += 1
        verdict = "equal" if true_value == mart_value else "over" if mart_value > true_value else "under"
        summary[verdict] += 1
        if verdict != "equal":
            code, period, start, grain, org, part = key
            uncarried = (
                (code, part, org) in not_carried
                if grain == "institution"
                else round(mart_value + uncarried_truth.get((code, period, start, part), 0.0), 2) == true_value
            )
            summary["not_carried"] = summary.get("not_carried", 0) + uncarried
            comparison.differences.append(
                {"key": [str(k) for k in key], "truth": true_value, "mart": mart_value, "not_carried": uncarried}
            )
        if key[1] == "year" and key[3] == "county":  # the whole run, county-wide
            summary[f"county_{key[5]}_truth"] = summary.get(f"county_{key[5]}_truth", 0) + true_value
            summary[f"county_{key[5]}_mart"] = summary.get(f"county_{key[5]}_mart", 0) + mart_value
    for code, part, org in sorted(not_carried):
        comparison.not_carried.setdefault(f"{code} {part}", []).append(org)
    return comparison


def _not_carried(
    truth: dict[Key, float], mart: dict[Key, float], proven: dict[str, dict[str, str]]
) -> set[tuple[str, str, str]]:
    """(indicator, part, institution) where the truth has some, the mart none at all over every period, and the
    institution's source delivered no row the measure could be counted from (``DELIVERED``)."""
    happened: dict[tuple, float] = defaultdict(float)
    counted: dict[tuple, float] = defaultdict(float)
    for values, totals in ((truth, happened), (mart, counted)):
        for (code, _, _, grain, org, part), value in values.items():
            if grain == "institution":
                totals[(code, part, org)] += abs(value)
    short = {k for k, v in happened.items() if v and not counted.get(k)}
    measures = {proven[code][part] for code, part, _ in short if proven[code][part] in DELIVERED}
    with warehouse_engine().connect() as conn:
        delivered = {m: {r[0] for r in conn.execute(sa.text(DELIVERED[m]))} for m in measures}
    return {(code, part, org) for code, part, org in short if org not in delivered.get(proven[code][part], {org})}


@dataclass
class EncounterAccount:
    """Every true visit of a class, and every counted one, accounted for record by record."""

    true_visits: int = 0
    counted: int = 0
    matched: int = 0
    # true visits not counted, by the reason the pipeline gives (quarantine rule, flag) or the source's state
    missing: dict[str, int] = field(default_factory=dict)
    # counted visits that are not a true visit, or a true visit counted twice: always a defect
    over_counted: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def account_encounters(last_day: date, kinds: tuple[str, ...] = ("outpatient", "emergency")) -> EncounterAccount:
    """Reconcile the mart's counted encounters with the true events through the answer key's local-id map."""
    classes = {"outpatient": "100", "emergency": "200", "inpatient": "300"}
    with source_pg_engine("sim_truth").connect() as conn:
        truth = {
            r.encounter_uid: r.org_code
            for r in conn.execute(
                sa.text(
                    f"SELECT encounter_uid, org_code FROM event_encounter e WHERE kind = ANY(:kinds) "
                    f"AND start_at::date <= :last AND {_NOT_CANCELLED}"
                ),
                {"kinds": list(kinds), "last": last_day},
            )
        }
        local = {
            (r.source_system, r.local_encounter_id): r.encounter_uid
            for r in conn.execute(
                sa.text("SELECT source_system, local_encounter_id, encounter_uid FROM encounter_truth")
            )
        }
        late = {
            (r.source_system, r.record_id)
            for r in conn.execute(
                sa.text(
                    "SELECT source_system, record_id FROM defect_log WHERE defect = 'late_submission' "
                    "AND detail > :cutoff"
                ),
                {"cutoff": f"committed {last_day:%Y-%m-%d} 23:59:59"},
            )
        }
    with warehouse_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT source_system, encounter_id, is_counted, is_duplicate_save, is_cancelled "
                "FROM marts.fct_encounter WHERE encounter_class_code = ANY(:classes) AND visit_date <= :last"
            ),
            {"classes": [classes[k] for k in kinds], "last": last_day},
        ).all()
        quarantined = {
            (r.source_system, r.record_key): r.rule_id
            for r in conn.execute(
                sa.text("SELECT source_system, record_key, rule_id FROM ods.quarantine WHERE entity = 'encounter'")
            )
        }
        published = {
            (r.source_system, r.encounter_id)
            for r in conn.execute(sa.text("SELECT source_system, encounter_id FROM ods.encounter"))
        }
    account = EncounterAccount(true_visits=len(truth))
    seen_uids: dict[str, str] = {}
    flags: dict[str, str] = {}
    for row in rows:
        uid = local.get((row.source_system, row.encounter_id))
        if uid and not row.is_counted:
            flags.setdefault(uid, "duplicate_save" if row.is_duplicate_save else "cancelled")
        if not row.is_counted:
            continue
        account.counted += 1
        if uid is None or uid not in truth:
            reason = "not a true visit (unknown id)" if uid is None else "cancelled or not a visit in truth"
            account.over_counted[reason] = account.over_counted.get(reason, 0) + 1
            account.examples.append(f"{row.source_system}|{row.encounter_id}: {reason}")
        elif uid in seen_uids:
            account.over_counted["counted twice"] = account.over_counted.get("counted twice", 0) + 1
            account.examples.append(f"{row.source_system}|{row.encounter_id} and {seen_uids[uid]}: same visit {uid}")
        else:
            seen_uids[uid] = f"{row.source_system}|{row.encounter_id}"
    account.matched = len(seen_uids)
    by_uid_local = defaultdict(list)
    for key, uid in local.items():
        by_uid_local[uid].append(key)
    for uid in truth:
        if uid in seen_uids:
            continue
        keys = by_uid_local.get(uid, [])
        rules = [quarantined[k] for k in keys if k in quarantined]
        if rules:
            reason = f"quarantined {rules[0]}"
        elif any(k in late for k in keys):
            reason = "late submission (committed after the last collected day)"
        elif uid in flags:
            reason = f"flagged {flags[uid]}"
        elif not keys:
            reason = "never written by a member system"
        elif not any(k in published for k in keys):
            # source → bronze → silver completeness is proven record by record elsewhere (reconciliation tests);
            # here the source has not delivered it as a visit yet (补录 later) or sends it as another record kind
            reason = "not delivered as an encounter by the source by the last day"
        else:
            reason = "unexplained"
            account.examples.append(f"{uid} ({', '.join('|'.join(k) for k in keys)}): true visit not counted")
        account.missing[reason] = account.missing.get(reason, 0) + 1
    return account
