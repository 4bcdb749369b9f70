{{ config(materialized='table', indexes=[{'columns': ['encounter_key']}]) }}
-- The encounters fct_encounter rebuilds in this run (an incremental build; macros/incremental.sql): those the
-- publishes since its last build added, changed or deleted; those whose fee, prescription or diagnosis rows
-- changed (fees and prescriptions decide a duplicate save, diagnoses the TCM flag and main diagnosis); those of
-- persons whose record or master id changed; and every other member of a duplicate group any of them is or was
-- in, so the duplicate rule sees whole groups. One row with rebuild_all = true instead when only a whole rebuild
-- can answer (never built, a table reloaded whole, a window older than the change log).
{%- set mart = adapter.get_relation(database=target.database, schema='marts', identifier='fct_encounter') %}
with window_ as {{ change_window('fct_encounter') }},

rebuild as (
    select true as rebuild_all
    from window_
    where window_.rebuild_all
        {%- if execute and mart is none %} or true{% endif %}
        or exists (
            select 1 from ({{ changes_in_window('fct_encounter', ['encounter', 'fee', 'prescription', 'diagnosis', 'person']) }}) as c
            where c.source_system is null
        )
),

{%- if execute and mart is none %}

changed as (
    select null::text as encounter_key where false
)
{%- else %}

changed_persons as (
    {{ changed_keys('fct_encounter', 'person', 'local_patient_id') }}
),

directly as (
    {{ changed_keys('fct_encounter', 'encounter', 'encounter_id') }}
    union
    -- a fee, prescription or diagnosis row added, changed or gone: its encounter, now and as it was
    {{ changed_keys('fct_encounter', 'fee', 'encounter_id') }}
    union
    {{ changed_keys('fct_encounter', 'prescription', 'encounter_id') }}
    union
    {{ changed_keys('fct_encounter', 'diagnosis', 'encounter_id') }}
    union
    -- a person's record or master id changed: the person's encounters
    select encounter.source_system || '|' || encounter.encounter_id
    from {{ source('ods', 'encounter') }} as encounter
    where encounter.source_system || '|' || encounter.local_patient_id in (select changed_key from changed_persons)
    union
    -- a source reloaded whole: its encounters as they were too
    select mart.encounter_key
    from {{ mart }} as mart
    where mart.source_system in (
        select c.source_system
        from ({{ changes_in_window('fct_encounter', ['encounter']) }}) as c
        where c.source_key is null
    )
),

groups as (
    -- the duplicate groups (macros/deduplicate_encounters.sql) of those encounters, now and as they were
    select org_code, coalesce(master_id, person_key) as resident_key, encounter_class_code, department_code, doctor_name
    from {{ ref('int_encounters__joined_to_persons') }}
    where encounter_key in (select changed_key from directly)
    union
    select org_code, coalesce(master_id, person_key), encounter_class_code, department_code, doctor_name
    from {{ mart }}
    where encounter_key in (select changed_key from directly)
),

changed as (
    select changed_key as encounter_key from directly
    union
    select mart.encounter_key
    from {{ mart }} as mart
    inner join groups
        on groups.org_code = mart.org_code
        and groups.resident_key = coalesce(mart.master_id, mart.person_key)
        and groups.encounter_class_code = mart.encounter_class_code
        and groups.department_code is not distinct from mart.department_code
        and groups.doctor_name is not distinct from mart.doctor_name
    where groups.encounter_class_code in ('100', '200')
)
{%- endif %}

select null::text as encounter_key, true as rebuild_all
where exists (select 1 from rebuild)
union all
select encounter_key, false
from changed
where not exists (select 1 from rebuild)
