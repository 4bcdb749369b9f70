-- 门急诊疾病 Top10 / 住院疾病 Top10 (catalog HO24, HO25): primary diagnoses of counted encounters grouped by
-- ICD-10 category (the first three characters, so 国临版 extension codes such as J18.900x001 roll up to J18),
-- and by the WHO block and chapter the category belongs to (reference.icd10_who), ranked per period, place and
-- grouping level. 门急诊 by visit date, 住院 by discharge date (出院者主要诊断). Diagnoses that carry no ICD-10 code
-- (unmapped local text) are left out of the ranking; the terminology worklist lists them. A category the WHO
-- table does not know is ranked as a category only. Encounters are counted per institution, day and category
-- first: the levels and periods multiply those counts, not the county's millions of encounters.
with encounters as (
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

who as (
    select code, display, level, chapter, block from {{ ref('icd10_who') }}
),

grouped as (
    select encounters.org_code, encounters.indicator_code, encounters.event_date, levels.group_level,
        levels.group_code, encounters.cases
    from encounters
    left join who as category on category.level = 'category' and category.code = encounters.icd_category
    cross join lateral (
        values ('category', encounters.icd_category), ('block', category.block), ('chapter', category.chapter)
    ) as levels (group_level, group_code)
    where encounters.icd_category is not null and levels.group_code is not null
),

periods as (
    select * from {{ ref('int_indicator_reported_periods') }}
),

counted as (
    select
        grouped.indicator_code,
        periods.period_type,
        periods.period_start,
        case when grouping(grouped.org_code) = 0 then 'institution' else 'county' end as grain_type,
        coalesce(grouped.org_code, '410182') as grain_code,
        grouped.group_level,
        grouped.group_code,
        sum(grouped.cases) as cases
    from grouped
    {{ period_starts('grouped.event_date') }}
    inner join periods on periods.indicator_code = grouped.indicator_code
        and periods.period_type = starts.period_type and periods.period_start = starts.period_start
        and grouped.event_date <= periods.period_end
    group by grouping sets (
        (grouped.indicator_code, periods.period_type, periods.period_start, grouped.group_level,
         grouped.group_code, grouped.org_code),
        (grouped.indicator_code, periods.period_type, periods.period_start, grouped.group_level,
         grouped.group_code)
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
