-- 门急诊疾病 Top10 / 住院疾病 Top10 (catalog HO24, HO25): primary diagnoses of counted encounters grouped by
-- ICD-10 category (the first three characters, so 国临版 extension codes such as J18.900x001 roll up to J18),
-- and by the WHO block and chapter the category belongs to (reference.icd10_who), ranked per period, place and
-- grouping level. 门急诊 by visit date, 住院 by discharge date (出院者主要诊断). Diagnoses that carry no ICD-10 code
-- (unmapped local text) are left out of the ranking; the terminology worklist lists them. A category the WHO
-- table does not know is ranked as a category only. Encounters are counted per institution, day and category
-- first, then per month: a month, quarter or year sums its months (a count adds up), so the levels and periods
-- multiply a few hundred thousand monthly counts, not the county's millions of encounters.
with daily as (
    select
        org_code,
        case when encounter_class_code = '300' then 'HO25' else 'HO24' end as indicator_code,
        case when encounter_class_code = '300' then discharge_date else visit_date end as event_date,
        substring(upper(primary_diagnosis_code) from '^[A-Z][0-9]{2}') as icd_category,
        count(*) as cases
    from {{ ref('fct_encounter') }}
    where is_counted
        and (encounter_class_code in ('100', '200') or discharge_date is not null)
    group by 1, 2, 3, 4
),

periods as (
    select * from {{ ref('int_indicator_reported_periods') }}
),

monthly as (
    -- a period's end is clipped to the last day with data: an event after it is in no period
    select org_code, indicator_code, date_trunc('month', event_date)::date as event_month, icd_category,
        sum(cases) as cases
    from daily
    where icd_category is not null and event_date <= (select max(period_end) from periods)
    group by 1, 2, 3, 4
),

placed as (
    -- each count in the reported periods it falls in: a day by itself, a month, quarter or year by its months
    select daily.org_code, daily.indicator_code, periods.period_type, periods.period_start, daily.icd_category,
        daily.cases
    from daily
    inner join periods on periods.indicator_code = daily.indicator_code and periods.period_type = 'day'
        and periods.period_start = daily.event_date and daily.event_date <= periods.period_end
    where daily.icd_category is not null
    union all
    select monthly.org_code, monthly.indicator_code, periods.period_type, periods.period_start,
        monthly.icd_category, monthly.cases
    from monthly
    {{ period_starts('monthly.event_month', ['month', 'quarter', 'year']) }}
    inner join periods on periods.indicator_code = monthly.indicator_code
        and periods.period_type = starts.period_type and periods.period_start = starts.period_start
),

who as (
    select code, display, level, chapter, block from {{ ref('icd10_who') }}
),

grouped as (
    select placed.org_code, placed.indicator_code, placed.period_type, placed.period_start, levels.group_level,
        levels.group_code, placed.cases
    from placed
    left join who as category on category.level = 'category' and category.code = placed.icd_category
    cross join lateral (
        values ('category', placed.icd_category), ('block', category.block), ('chapter', category.chapter)
    ) as levels (group_level, group_code)
    where levels.group_code is not null
),

counted as (
    select
        indicator_code,
        period_type,
        period_start,
        case when grouping(org_code) = 0 then 'institution' else 'county' end as grain_type,
        coalesce(org_code, '410182') as grain_code,
        group_level,
        group_code,
        sum(cases) as cases
    from grouped
    group by grouping sets (
        (indicator_code, period_type, period_start, group_level, group_code, org_code),
        (indicator_code, period_type, period_start, group_level, group_code)
    )
),

ranked as (
    select
        *,
        row_number() over (
            partition by indicator_code, period_type, period_start, grain_type, grain_code, group_level
            order by cases desc, group_code
        ) as rank,
        sum(cases) over (
            partition by indicator_code, period_type, period_start, grain_type, grain_code, group_level
        ) as all_cases
    from counted
),

final as (
    select
        ranked.indicator_code::text as indicator_code,
        ranked.period_type::text as period_type,
        ranked.period_start::date as period_start,
        ranked.grain_type::text as grain_type,
        ranked.grain_code::text as grain_code,
        ranked.group_level::text as group_level,
        ranked.rank::integer as rank,
        ranked.group_code::text as group_code,
        who.display::text as group_name,
        ranked.cases::integer as cases,
        round(100.0 * ranked.cases / ranked.all_cases, 2)::numeric as share_percent
    from ranked
    left join who on who.level = ranked.group_level and who.code = ranked.group_code
    where ranked.rank <= 10
)

select * from final
