-- 常住人口（月）: residents per month × township × sex × age band — the denominator of every per-capita rate.
-- Source: the 全员人口 register's rows (int_residents__register_linked), not the QYRK_HZ summary: the summary has
-- 5-year groups that cannot give 0–6 / 7–17, and it reconciles with the rows (int_residents__population_reconciliation).
-- Silver keeps one row per person, from the newest monthly file that lists them, so a month's population is rebuilt:
--   a person counts in month M when born by M's last day and listed in a file of month M or later
--   (register_month >= M); months after the newest file carry that file forward (register_month = newest).
-- Age in full years at the month's last day, as the register's own summary counts it.
-- Every township × sex × band × month of the data range has a row (0 where nobody).
with bounds as (
    select * from {{ ref('int_public_health__data_bounds') }}
),

register as (
    select
        township,
        coalesce(sex_code, '0') as sex_code,   -- GB/T 2261.1 0 = 未知的性别: keep the person in the totals
        birth_date,
        residence_status,
        register_month
    from {{ ref('int_residents__register_linked') }}
    where township is not null and birth_date is not null
),

months as (
    select month::date as month
    from bounds, generate_series(bounds.first_month, bounds.last_month, interval '1 month') as month
),

month_basis as (
    select
        months.month,
        (months.month + interval '1 month' - interval '1 day')::date as month_end,
        -- the register file a month is counted from
        least(months.month, bounds.last_register_month) as counted_from_month,
        case
            when months.month = bounds.last_register_month then '月报'
            when months.month < bounds.last_register_month then '回推'
            else '沿用'
        end as register_basis
    from months
    cross join bounds
),

counted as (
    select
        month_basis.month,
        register.township,
        register.sex_code,
        {{ age_band('month_basis.month_end', 'register.birth_date') }} as age_band,
        register.residence_status
    from month_basis
    inner join register
        on register.register_month >= month_basis.counted_from_month
        and register.birth_date <= month_basis.month_end
),

aggregated as (
    select
        month,
        township,
        sex_code,
        age_band,
        count(*) as population,
        count(*) filter (where residence_status = '户籍') as registered_population
    from counted
    group by month, township, sex_code, age_band
),

townships as (
    select distinct township from register
    union
    select distinct township from {{ ref('stg_ods__population_summary') }} where township is not null
),

sexes as (
    select distinct sex_code from register
    union
    select unnest(array['1', '2'])
),

age_bands as (
    select unnest(array['0-6', '7-17', '18-34', '35-64', '65+']) as age_band
),

spine as (
    select month_basis.month, month_basis.register_basis, townships.township, sexes.sex_code, age_bands.age_band
    from month_basis
    cross join townships
    cross join sexes
    cross join age_bands
),

final as (
    select
        spine.month::date as month,
        spine.township::text as township,
        spine.sex_code::text as sex_code,
        spine.age_band::text as age_band,
        coalesce(aggregated.population, 0)::integer as population,
        coalesce(aggregated.registered_population, 0)::integer as registered_population,
        spine.register_basis::text as register_basis
    from spine
    left join aggregated
        on aggregated.month = spine.month
        and aggregated.township = spine.township
        and aggregated.sex_code = spine.sex_code
        and aggregated.age_band = spine.age_band
)

select * from final
