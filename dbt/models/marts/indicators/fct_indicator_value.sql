-- 监管指标值（长表）: one row per indicator × period × place, for every scalar indicator of the catalog
-- (config/indicators/, seed indicator_catalog). value = numerator × scale ÷ denominator; a count indicator has no
-- denominator and value = numerator. A zero denominator gives value null (not 0); a place where nothing happened
-- gets numerator 0, so silence is visible.
with catalog as (
    select * from {{ ref('indicator_catalog') }}
    where kind = 'scalar' and supported
),

periods as (
    select * from {{ ref('int_indicator_reported_periods') }}
),

grains as (
    select * from {{ ref('int_indicator_grains') }}
),

measures as (
    select * from {{ ref('int_indicator_measures') }}
),

spine as (
    select
        catalog.indicator_code,
        catalog.indicator_name,
        catalog.family,
        catalog.numerator_measure,
        catalog.denominator_measure,
        catalog.scale,
        catalog.unit,
        periods.period_type,
        periods.period_start,
        periods.period_end,
        periods.period_label,
        periods.previous_period_start,
        grains.grain_type,
        grains.grain_code,
        grains.grain_name
    from catalog
    inner join periods on periods.indicator_code = catalog.indicator_code
    inner join grains on grains.grain_type = any(string_to_array(catalog.grains, '|'))
),

valued as (
    select
        spine.*,
        coalesce(numerator.value, 0) as numerator,
        case when spine.denominator_measure is not null then coalesce(denominator.value, 0) end as denominator
    from spine
    left join measures as numerator
        on numerator.measure_code = spine.numerator_measure
        and numerator.period_type = spine.period_type
        and numerator.period_start = spine.period_start
        and numerator.grain_type = spine.grain_type
        and numerator.grain_code = spine.grain_code
    left join measures as denominator
        on denominator.measure_code = spine.denominator_measure
        and denominator.period_type = spine.period_type
        and denominator.period_start = spine.period_start
        and denominator.grain_type = spine.grain_type
        and denominator.grain_code = spine.grain_code
),

final as (
    select
        indicator_code::text as indicator_code,
        indicator_name::text as indicator_name,
        family::text as family,
        period_type::text as period_type,
        period_start::date as period_start,
        period_end::date as period_end,
        period_label::text as period_label,
        previous_period_start::date as previous_period_start,
        grain_type::text as grain_type,
        grain_code::text as grain_code,
        grain_name::text as grain_name,
        round(numerator, 4)::numeric as numerator,
        round(denominator, 4)::numeric as denominator,
        (case
            when denominator_measure is null then round(numerator, 4)
            else round(numerator * scale / nullif(denominator, 0), 4)
        end)::numeric as value,
        unit::text as unit
    from valued
)

select * from final
