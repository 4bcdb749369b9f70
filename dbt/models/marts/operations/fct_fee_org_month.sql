-- 医疗收入（月）: fees per institution, month (of the charge), 就诊类型 and 费用类别, from the fee rows of counted
-- encounters. A row flagged is_refunded is left out; zyy_his books a refund as its own negative row, which nets
-- out the original in the sum. Fees of cancelled encounters, duplicate saves and encounters not in silver are
-- not income of a counted visit and are left out.
with fees as (
    select * from {{ ref('stg_ods__fee') }}
    where not coalesce(is_refunded, false)
),

encounters as (
    select encounter_key, org_code, encounter_class_code, visit_date
    from {{ ref('fct_encounter') }}
    where is_counted
),

joined as (
    select
        encounters.org_code,
        -- 收费月份; a row without a charge time falls in the month of its visit
        date_trunc('month', coalesce((fees.charged_at at time zone 'Asia/Shanghai')::date, encounters.visit_date))::date
            as month,
        encounters.encounter_class_code,
        -- an unmapped local category stays visible instead of disappearing from the totals
        coalesce(fees.fee_category_code, 'unmapped') as fee_category_code,
        fees.amount
    from fees
    inner join encounters on encounters.encounter_key = fees.encounter_key
),

final as (
    select
        org_code::text as org_code,
        month::date as month,
        encounter_class_code::text as encounter_class_code,
        fee_category_code::text as fee_category_code,
        -- 药品 = 西药费 13, 中成药费 14, 中草药费 15 (config/terminology/code_systems/fee_category.csv)
        (fee_category_code in ('13', '14', '15'))::boolean as is_drug_category,
        coalesce(sum(amount), 0)::numeric as amount,
        count(*)::integer as fee_rows
    from joined
    group by org_code, month, encounter_class_code, fee_category_code
)

select * from final
