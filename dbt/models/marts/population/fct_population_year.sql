-- 常住人口（年）: the population of each year's latest month in the data range (year end, or the current month for
-- the running year), per township × sex × age band — the denominator of the yearly rates.
with months as (
    select * from {{ ref('fct_population_month') }}
),

year_month as (
    select
        extract(year from month)::integer as year,
        max(month) as as_of_month
    from months
    group by 1
),

final as (
    select
        year_month.year::integer as year,
        make_date(year_month.year, 1, 1)::date as year_start,
        months.township::text as township,
        months.sex_code::text as sex_code,
        months.age_band::text as age_band,
        months.population::integer as population,
        months.registered_population::integer as registered_population,
        year_month.as_of_month::date as as_of_month,
        months.register_basis::text as register_basis
    from year_month
    inner join months on months.month = year_month.as_of_month
)

select * from final
