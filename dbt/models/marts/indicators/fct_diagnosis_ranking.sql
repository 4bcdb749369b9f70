-- 门急诊疾病 Top10 / 住院疾病 Top10 (catalog HO24, HO25): primary diagnoses of counted encounters grouped by
-- ICD-10 category (the first three characters, so 国临版 extension codes such as J18.900x001 roll up to J18),
-- ranked per period and place. 门急诊 by visit date, 住院 by discharge date (出院者主要诊断). Diagnoses that carry
-- no ICD-10 code (unmapped local text) are left out of the ranking; the terminology worklist lists them.
with encounters as (
    select
        org_code,
        case when encounter_class_code = '300' then 'HO25' else 'HO24' end as indicator_code,
        case when encounter_class_code = '300' then discharge_date else visit_date end as event_date,
        substring(upper(primary_diagnosis_code) from '^[A-Z][0-9]{2}') as icd_category
    from {{ ref('fct_encounter') }}
    where is_counted
        and (encounter_class_code in ('100', '200') or discharge_date is not null)
),

periods as (
    select * from {{ ref('int_indicator_periods') }}
),

counted as (
    select
        encounters.indicator_code,
        periods.period_type,
        periods.period_start,
        case when grouping(encounters.org_code) = 0 then 'institution' else 'county' end as grain_type,
        coalesce(encounters.org_code, '410182') as grain_code,
        encounters.icd_category,
        count(*) as cases
    from encounters
    inner join periods on encounters.event_date between periods.period_start and periods.period_end
    where encounters.icd_category is not null
    group by grouping sets (
        (encounters.indicator_code, periods.period_type, periods.period_start, encounters.icd_category,
         encounters.org_code),
        (encounters.indicator_code, periods.period_type, periods.period_start, encounters.icd_category)
    )
),

ranked as (
    select
        *,
        row_number() over (
            partition by indicator_code, period_type, period_start, grain_type, grain_code
            order by cases desc, icd_category
        ) as rank,
        sum(cases) over (partition by indicator_code, period_type, period_start, grain_type, grain_code)
            as all_cases
    from counted
),

final as (
    select
        indicator_code::text as indicator_code,
        period_type::text as period_type,
        period_start::date as period_start,
        grain_type::text as grain_type,
        grain_code::text as grain_code,
        rank::integer as rank,
        icd_category::text as icd_category,
        cases::integer as cases,
        round(100.0 * cases / all_cases, 2)::numeric as share_percent
    from ranked
    where rank <= 10
)

select * from final
