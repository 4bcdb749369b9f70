-- The reporting periods the data covers: every calendar month and year from the first to the last business day
-- with encounters. period_end is clipped to the last day with data, so an as-of count (population, records,
-- contracts) of the current month is taken on the last day we know, not on a future month end.
with bounds as (
    select
        coalesce(min(visit_date), current_date) as first_day,
        coalesce(max(visit_date), current_date) as last_day
    from {{ ref('fct_encounter') }}
    where is_counted
),

months as (
    select
        'month'::text as period_type,
        month_start::date as period_start,
        least((month_start + interval '1 month' - interval '1 day')::date, bounds.last_day) as period_end
    from bounds,
        generate_series(date_trunc('month', bounds.first_day), date_trunc('month', bounds.last_day),
                        interval '1 month') as month_start
),

years as (
    select
        'year'::text as period_type,
        year_start::date as period_start,
        least((year_start + interval '1 year' - interval '1 day')::date, bounds.last_day) as period_end
    from bounds,
        generate_series(date_trunc('year', bounds.first_day), date_trunc('year', bounds.last_day),
                        interval '1 year') as year_start
),

final as (
    select * from months
    union all
    select * from years
)

select * from final
