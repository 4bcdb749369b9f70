-- Every place an indicator is reported for: each member institution, institution type, township and the
-- county. The spine of fct_indicator_value: a place where nothing happened still gets its row (0), so an
-- institution that stopped reporting is visible instead of absent.
with institutions as (
    select * from {{ ref('dim_organization') }}
    where org_type <> '卫生健康行政部门'
),

population_townships as (
    select distinct township from {{ ref('fct_population_month') }}
    where township is not null
),

final as (
    select 'institution'::text as grain_type, org_code::text as grain_code, org_name::text as grain_name
    from institutions
    union all
    select distinct 'institution_type', org_type, org_type
    from institutions
    union all
    select 'township', township, township
    from (select township from institutions union select township from population_townships) as townships
    where township is not null
    union all
    select 'county', '410182', '荥阳市'
)

select * from final
