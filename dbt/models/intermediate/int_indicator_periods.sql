-- The reporting periods the data covers: every day, calendar month, quarter and year from the first to the last
-- business day with encounters. period_end is clipped to the last day with data, so an as-of count (population,
-- records, contracts) of the current period is taken on the last day we know, not on a future period end. Which
-- indicator is reported for which period type is the catalog's choice (config/indicators/, `periods`). Each period
-- carries its Chinese label and the start of the period before it (上期), so no consumer restates a period's length.
with bounds as (
    select
        coalesce(min(visit_date), current_date) as first_day,
        coalesce(max(visit_date), current_date) as last_day
    from {{ ref('fct_encounter') }}
    where is_counted
),

kinds as (
    select * from (values
        ('day', interval '1 day'),
        ('month', interval '1 month'),
        ('quarter', interval '3 months'),
        ('year', interval '1 year')
    ) as kinds (period_type, length)
),

final as (
    select
        kinds.period_type::text as period_type,
        period_start::date as period_start,
        least((period_start + kinds.length - interval '1 day')::date, bounds.last_day) as period_end,
        (case kinds.period_type
            when 'day' then to_char(period_start, 'YYYY"年"MM"月"DD"日"')
            when 'month' then to_char(period_start, 'YYYY"年"MM"月"')
            when 'quarter' then to_char(period_start, 'YYYY"年第"Q"季度"')
            else to_char(period_start, 'YYYY"年"')
        end)::text as period_label,
        (period_start - kinds.length)::date as previous_period_start
    from bounds
    cross join kinds
    cross join lateral generate_series(date_trunc(kinds.period_type, bounds.first_day),
                                       date_trunc(kinds.period_type, bounds.last_day),
                                       kinds.length) as period_start
)

select * from final
