-- Every encounter with the two reasons it may not count as a visit: cancelled (作废/退费 still present with a
-- status) and duplicate save (重复提交). Rows are flagged, never dropped, so quality reports can count them.
--
-- Duplicate save, one rule for every source (cloud_his already quarantines its own; rmyy_his and private_api pass
-- them through; a new source needs nothing): within one institution, resident (master id, else the source
-- patient record), 就诊类型 100/200 (never inpatient), department and doctor, a record saved within 10 minutes
-- after the previous record of that group and carrying no fee and no prescription row of its own is a second save
-- of the first record of that run.
--
-- only: a condition on encounter_key choosing whole duplicate groups (fct_encounter's incremental build passes
-- the changed encounters and their groups' other members; 'true' for all).
{% macro deduplicate_encounters(only='true') -%}
    with encounters as (
        select * from {{ ref('int_encounters__joined_to_persons') }}
        where {{ only }}
    ),

    fee_encounters as (
        -- any fee row, refunded or not: a charged registration is a real one
        select distinct encounter_key from {{ ref('stg_ods__fee') }}
        where {{ only }}
    ),

    prescription_encounters as (
        select distinct encounter_key from {{ ref('stg_ods__prescription') }}
        where {{ only }}
    ),

    flagged as (
        select
            encounters.*,
            -- the mappings emit 作废 (private_api cancelled, rmyy_his/zyy_his ZT 9); the other spellings keep a new
            -- source's raw status from being counted. Sources that delete a voided visit never reach here.
            coalesce(encounters.status ~* '作废|退费|取消|撤销|cancel|void|delete', false) as is_cancelled,
            (fee_encounters.encounter_key is not null
                or prescription_encounters.encounter_key is not null) as has_own_activity,
            coalesce(encounters.master_id, encounters.person_key) as resident_key
        from encounters
        left join fee_encounters on fee_encounters.encounter_key = encounters.encounter_key
        left join prescription_encounters on prescription_encounters.encounter_key = encounters.encounter_key
    ),

    candidates as (
        -- a cancelled record is not counted anyway and must not make a real later visit look like its copy
        select
            encounter_key,
            org_code,
            resident_key,
            encounter_class_code,
            department_code,
            doctor_name,
            visit_at,
            has_own_activity,
            -- same instant: the record with charges or prescriptions is the original
            row_number() over same_visit as position_in_group,
            lag(visit_at) over same_visit as previous_visit_at
        from flagged
        where encounter_class_code in ('100', '200')
            and not is_cancelled
            and visit_at is not null
        -- PARTITION BY groups NULLs together, so a missing department or doctor compares equal (null-safe)
        window same_visit as (
            partition by org_code, resident_key, encounter_class_code, department_code, doctor_name
            order by visit_at, has_own_activity desc, encounter_key
        )
    ),

    runs as (
        -- a run = consecutive records each within 10 minutes of the one before; a longer gap starts a new run
        select
            *,
            sum(case when previous_visit_at is null or visit_at - previous_visit_at > interval '10 minutes' then 1 else 0 end)
                over (partition by org_code, resident_key, encounter_class_code, department_code, doctor_name
                      order by position_in_group) as run_number
        from candidates
    ),

    duplicates as (
        select
            encounter_key,
            first_value(encounter_key) over (
                partition by org_code, resident_key, encounter_class_code, department_code, doctor_name, run_number
                order by position_in_group
            ) as duplicate_of_encounter_key,
            previous_visit_at is not null
                and visit_at - previous_visit_at <= interval '10 minutes'
                and not has_own_activity as is_duplicate_save
        from runs
    ),

    final as (
        select
            flagged.*,
            coalesce(duplicates.is_duplicate_save, false) as is_duplicate_save,
            case when duplicates.is_duplicate_save then duplicates.duplicate_of_encounter_key end
                as duplicate_of_encounter_key,
            not flagged.is_cancelled and not coalesce(duplicates.is_duplicate_save, false) as is_counted
        from flagged
        left join duplicates on duplicates.encounter_key = flagged.encounter_key
    )

    select * from final
{%- endmacro %}
