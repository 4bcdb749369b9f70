-- 科室维度: the member systems' department directories (门诊科室, 病区, 医技), plus the departments seen on encounters
-- that no directory lists (fy_files and private_api send no directory; zyy_his derives its own from registrations
-- and wards), so every encounter's (org_code, department_code) finds its department here.
with directory as (
    select * from {{ ref('stg_ods__department') }}
),

encounter_departments as (
    select
        source_system,
        org_code,
        department_code,
        -- the name on the newest encounter
        (array_agg(department_name order by visit_at desc nulls last))[1] as department_name,
        min(visit_at) as first_seen_at
    from {{ ref('stg_ods__encounter') }}
    where department_code is not null and org_code is not null
    group by source_system, org_code, department_code
),

unlisted as (
    select encounter_departments.*
    from encounter_departments
    left join directory
        on directory.org_code = encounter_departments.org_code
        and directory.department_code = encounter_departments.department_code
    where directory.department_key is null
),

unioned as (
    select
        department_key,
        source_system,
        department_id,
        org_code,
        department_code,
        department_name,
        department_kind,
        coalesce(is_active, true) as is_active,
        source_updated_at,
        false as is_derived_from_encounters
    from directory
    union all
    select
        source_system || '|' || org_code || ':' || department_code,
        source_system,
        department_code,
        org_code,
        department_code,
        department_name,
        null,
        true,
        -- first seen: a stable version time for the snapshot
        first_seen_at,
        true
    from unlisted
),

final as (
    select
        department_key::text as department_key,
        source_system::text as source_system,
        department_id::text as department_id,
        org_code::text as org_code,
        department_code::text as department_code,
        department_name::text as department_name,
        department_kind::text as department_kind,
        coalesce(department_name ~ '全科', false)::boolean as is_general_practice,
        coalesce(department_name ~ '中医|针灸|推拿|骨伤', false)::boolean as is_tcm,
        coalesce(department_name ~ '急诊', false)::boolean as is_emergency,
        is_active::boolean as is_active,
        is_derived_from_encounters::boolean as is_derived_from_encounters,
        source_updated_at::timestamptz as source_updated_at
    from unioned
)

select * from final
