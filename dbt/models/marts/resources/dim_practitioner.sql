-- 卫生技术人员维度: the member systems' staff directories, plus, for an institution that sends no staff directory at
-- all (fy_files, private_api, a village clinic without platform users), the doctors seen receiving patients there.
--
-- is_physician: role 医师, or a physician title (…医师, 医士, 乡村医生) when the role is missing.
-- has_prescribing_right (处方权): an active physician who holds a practising licence number (执业证书编码) or is seen
-- as 接诊医生 at the institution (sources without licence numbers only know their doctors from registrations);
-- an assistant physician (title 医士/…助理…) prescribes on their own only in primary care (乡镇卫生院, 社区, 村卫生室).
-- is_general_practitioner (全科医生): a physician whose department is 全科; without a department, one who mostly
-- receives patients in 全科 departments, or who works at an institution whose departments are all 全科 (村卫生室).
with directory as (
    select * from {{ ref('stg_ods__practitioner') }}
),

institutions as (
    select org_code, is_primary_care from {{ ref('dim_organization') }}
),

departments as (
    select org_code, department_code, department_name, is_general_practice from {{ ref('dim_department') }}
),

all_general_practice as (
    select org_code, bool_and(is_general_practice) as only_general_practice
    from departments
    group by org_code
),

encounter_doctors as (
    select
        min(encounters.source_system) as source_system,
        encounters.org_code,
        encounters.doctor_name,
        count(*) as visits,
        count(*) filter (where departments.is_general_practice) as general_practice_visits,
        min(encounters.visit_at) as first_seen_at
    from {{ ref('stg_ods__encounter') }} as encounters
    left join departments
        on departments.org_code = encounters.org_code
        and departments.department_code = encounters.department_code
    where encounters.doctor_name is not null and encounters.org_code is not null
    group by encounters.org_code, encounters.doctor_name
),

undirected as (
    -- doctors of institutions with no staff directory at all
    select encounter_doctors.*
    from encounter_doctors
    where not exists (select 1 from directory where directory.org_code = encounter_doctors.org_code)
),

unioned as (
    select
        practitioner_key,
        source_system,
        practitioner_id,
        org_code,
        name,
        role,
        title,
        licence_no,
        department_code,
        is_active,
        source_updated_at,
        false as is_derived_from_encounters
    from directory
    union all
    select
        source_system || '|' || org_code || ':' || doctor_name,
        source_system,
        null,
        org_code,
        doctor_name,
        '医师',
        null,
        null,
        null,
        true,
        -- first seen: a stable version time for the snapshot
        first_seen_at,
        true
    from undirected
),

classified as (
    select
        unioned.*,
        departments.department_name,
        coalesce(unioned.role = '医师', unioned.title ~ '医师|医士|乡村医生', false) as physician,
        coalesce(unioned.title ~ '医士|助理', false) as assistant_physician,
        coalesce(unioned.is_active, true) as active,
        encounter_doctors.visits is not null as receives_patients,
        coalesce(
            departments.is_general_practice,
            encounter_doctors.general_practice_visits * 2 > encounter_doctors.visits,
            false
        ) or coalesce(all_general_practice.only_general_practice, false) as works_in_general_practice,
        coalesce(institutions.is_primary_care, false) as at_primary_care
    from unioned
    left join departments
        on departments.org_code = unioned.org_code
        and departments.department_code = unioned.department_code
    left join encounter_doctors
        on encounter_doctors.org_code = unioned.org_code
        and encounter_doctors.doctor_name = unioned.name
    left join all_general_practice on all_general_practice.org_code = unioned.org_code
    left join institutions on institutions.org_code = unioned.org_code
),

final as (
    select
        practitioner_key::text as practitioner_key,
        source_system::text as source_system,
        practitioner_id::text as practitioner_id,
        org_code::text as org_code,
        name::text as name,
        role::text as role,
        title::text as title,
        department_code::text as department_code,
        department_name::text as department_name,
        (licence_no is not null and trim(licence_no) <> '')::boolean as has_licence,
        physician::boolean as is_physician,
        (physician and active
            and ((licence_no is not null and trim(licence_no) <> '') or receives_patients)
            and (not assistant_physician or at_primary_care))::boolean as has_prescribing_right,
        (physician and works_in_general_practice)::boolean as is_general_practitioner,
        active::boolean as is_active,
        is_derived_from_encounters::boolean as is_derived_from_encounters,
        source_updated_at::timestamptz as source_updated_at
    from classified
)

select * from final
