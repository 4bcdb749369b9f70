-- The periods each indicator of the catalog is reported for: its `periods` (config/indicators/) × the periods the
-- data covers. One home for that choice: the long fact, the rankings and the distributions all read it.
with catalog as (
    select indicator_code, string_to_array(periods, '|') as period_types from {{ ref('indicator_catalog') }}
),

periods as (
    select * from {{ ref('int_indicator_periods') }}
),

final as (
    select
        catalog.indicator_code::text as indicator_code,
        periods.period_type,
        periods.period_start,
        periods.period_end,
        periods.period_label,
        periods.previous_period_start
    from catalog
    inner join periods on periods.period_type = any(catalog.period_types)
)

select * from final
