-- 全员人口 明细 vs 汇总: the QYRK_HZ summary (township × sex × 5-year group, age at month end, 常住人口数) against the
-- register rows counted the same way for the summary's month, by the rule fct_population_month uses.
-- The register says the two files agree, so a difference means a late/partial file or a counting-rule problem.
with summary as (
    select
        to_date(register_month || '-01', 'YYYY-MM-DD') as month,
        township,
        sex_code,
        age_group,
        population
    from {{ ref('stg_ods__population_summary') }}
),

summary_months as (
    select distinct month from summary
),

register as (
    select township, coalesce(sex_code, '0') as sex_code, birth_date, register_month
    from {{ ref('int_residents__register_linked') }}
    where township is not null and birth_date is not null
),

register_counts as (
    select
        summary_months.month,
        register.township,
        register.sex_code,
        case
            when ages.age >= 85 then '85岁及以上'
            else (ages.age / 5 * 5)::text || '-' || (ages.age / 5 * 5 + 4)::text || '岁'
        end as age_group,
        count(*) as population
    from summary_months
    inner join register
        on register.register_month >= summary_months.month
        and register.birth_date <= (summary_months.month + interval '1 month' - interval '1 day')::date
    cross join lateral (
        select {{ completed_years("(summary_months.month + interval '1 month' - interval '1 day')::date",
                                  'register.birth_date') }} as age
    ) as ages
    group by 1, 2, 3, 4
),

final as (
    select
        coalesce(summary.month, register_counts.month) as month,
        coalesce(summary.township, register_counts.township) as township,
        coalesce(summary.sex_code, register_counts.sex_code) as sex_code,
        coalesce(summary.age_group, register_counts.age_group) as age_group,
        summary.population as summary_population,
        coalesce(register_counts.population, 0) as register_population,
        coalesce(register_counts.population, 0) - coalesce(summary.population, 0) as difference
    from summary
    full outer join register_counts
        on register_counts.month = summary.month
        and register_counts.township = summary.township
        and register_counts.sex_code = summary.sex_code
        and register_counts.age_group = summary.age_group
)

select * from final
