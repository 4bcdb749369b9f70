-- 手术等级分布 (HO26) and 切口愈合等级分布 (HO27): surgeries per period and place by 手术级别, and by 切口类别 ×
-- 愈合等级, with each category's share of the period's surgeries. A surgery the source did not grade counts as 未分级.
with surgeries as (
    select
        org_code,
        surgery_date,
        coalesce(nullif(surgery_level, ''), '未分级') as surgery_level,
        coalesce(nullif(incision_class_code, ''), '未分类') || '/' || coalesce(nullif(healing_grade, ''), '未分级')
            as incision_healing
    from {{ ref('fct_surgery') }}
),

periods as (
    select * from {{ ref('int_indicator_reported_periods') }}
),

categorised as (
    select org_code, surgery_date, 'HO26' as indicator_code, surgery_level as category from surgeries
    union all
    select org_code, surgery_date, 'HO27', incision_healing from surgeries
),

counted as (
    select
        categorised.indicator_code,
        periods.period_type,
        periods.period_start,
        case when grouping(categorised.org_code) = 0 then 'institution' else 'county' end as grain_type,
        coalesce(categorised.org_code, '410182') as grain_code,
        categorised.category,
        count(*) as cases
    from categorised
    {{ period_starts('categorised.surgery_date') }}
    inner join periods on periods.indicator_code = categorised.indicator_code
        and periods.period_type = starts.period_type and periods.period_start = starts.period_start
        and categorised.surgery_date <= periods.period_end
    group by grouping sets (
        (categorised.indicator_code, periods.period_type, periods.period_start, categorised.category,
         categorised.org_code),
        (categorised.indicator_code, periods.period_type, periods.period_start, categorised.category)
    )
),

final as (
    select
        indicator_code::text as indicator_code,
        period_type::text as period_type,
        period_start::date as period_start,
        grain_type::text as grain_type,
        grain_code::text as grain_code,
        category::text as category,
        cases::integer as cases,
        round(100.0 * cases / sum(cases) over (
            partition by indicator_code, period_type, period_start, grain_type, grain_code), 2)::numeric
            as share_percent
    from counted
)

select * from final
