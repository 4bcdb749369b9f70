-- 签约居民（月末）: residents holding a valid family-doctor contract at each month's end, per township of residence
-- and contracting institution. The month's end is clipped to the data's last day (the running month is counted on
-- the last day we know). Each resident counts once: under the institution of their most recently signed valid
-- contract, so rows add up to township and county totals; a resident is key population when any of their valid
-- contracts is. Resident = master id (the 健康档案编号 when the master id is unknown).
with bounds as (
    select * from {{ ref('int_public_health__data_bounds') }}
),

contracts as (
    select * from {{ ref('fct_family_doctor_contract') }}
    where status_is_valid
),

months as (
    select
        month::date as month,
        least((month + interval '1 month' - interval '1 day')::date, bounds.last_day) as as_of_date
    from bounds, generate_series(bounds.first_month, bounds.last_month, interval '1 month') as month
),

valid_at_month_end as (
    select
        months.month,
        months.as_of_date,
        coalesce(contracts.master_id, contracts.health_record_no) as resident_key,
        contracts.contract_key,
        contracts.signed_date,
        contracts.valid_from,
        contracts.township,
        contracts.org_code,
        contracts.team_name,
        contracts.is_key_population
    from months
    inner join contracts
        on contracts.valid_from <= months.as_of_date
        and (contracts.valid_to is null or contracts.valid_to >= months.as_of_date)
    where coalesce(contracts.master_id, contracts.health_record_no) is not null
),

per_resident as (
    select distinct on (month, resident_key)
        month,
        as_of_date,
        resident_key,
        township,
        org_code,
        team_name,
        bool_or(coalesce(is_key_population, false)) over (partition by month, resident_key) as is_key_population
    from valid_at_month_end
    order by month, resident_key, signed_date desc nulls last, valid_from desc, contract_key desc
),

final as (
    select
        month::date as month,
        max(as_of_date)::date as as_of_date,
        township::text as township,
        org_code::text as org_code,
        count(*)::integer as contracted_residents,
        count(*) filter (where is_key_population)::integer as key_population_residents,
        count(distinct team_name)::integer as teams
    from per_resident
    where township is not null and org_code is not null
    group by month, township, org_code
)

select * from final
