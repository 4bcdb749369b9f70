{{ config(materialized='table', indexes=[{'columns': ['encounter_key']}]) }}
-- The encounters the per-encounter marts (fct_encounter and the facts hanging off it, every incremental model that
-- depends on this one) rebuild in this run (macros/incremental.sql): those the publishes since the oldest of
-- their last builds added, changed or deleted; those whose fee, prescription, diagnosis, lab, exam or surgery rows
-- changed (fees and prescriptions decide a duplicate save, diagnoses the TCM flag and main diagnosis); those of
-- persons whose record or master id changed, and the rows of such persons that name no known encounter; every
-- encounter of a source whose table was reloaded whole; and every other member of a duplicate group any of them
-- is or was in, so the duplicate rule sees whole groups. One row with rebuild_all = true instead when only a whole
-- rebuild can answer (a mart never built, a whole table reloaded, a window older than the change log).
{%- set encounter_mart = adapter.get_relation(database=target.database, schema='marts', identifier='fct_encounter') %}
{%- set marts = per_encounter_marts() if execute else ['fct_encounter'] %}
{#- dataset in ods -> its fact mart, whose rows hang off an encounter -#}
{%- set children = {'diagnosis': 'fct_diagnosis', 'prescription': 'fct_prescription', 'lab_result': 'fct_lab_result',
                    'exam_report': 'fct_exam_report', 'surgery': 'fct_surgery'} %}
{%- set datasets = ['encounter', 'fee', 'person'] + children.keys() | list %}
with window_ as {{ change_window(marts) }},

rebuild as (
    select true as rebuild_all
    from window_
    where window_.rebuild_all
        {%- if execute and encounter_mart is none %} or true{% endif %}
        or exists (
            select 1 from ({{ changes_in_window(marts, datasets) }}) as c
            where c.source_system is null
        )
),

{%- if execute and encounter_mart is none %}

changed as (
    select null::text as encounter_key where false
)
{%- else %}

changed_persons as (
    {{ changed_keys(marts, 'person', 'local_patient_id') }}
),

reloaded_sources as (
    -- a source whose table was reloaded whole (source_key NULL): all its encounters, as they are and were
    select distinct c.source_system
    from ({{ changes_in_window(marts, datasets) }}) as c
    where c.source_key is null
),

directly as (
    {%- for dataset in ['encounter', 'fee'] + children.keys() | list %}
    {%- if not loop.first %}
    union
    {%- endif %}
    -- {{ dataset }} rows added, changed or gone: their encounter, now and as it was
    {{ changed_keys(marts, dataset, 'encounter_id') }}
    {%- endfor %}
    union
    -- a person's record or master id changed: the person's encounters
    select encounter.source_system || '|' || encounter.encounter_id
    from {{ source('ods', 'encounter') }} as encounter
    where encounter.source_system || '|' || encounter.local_patient_id in (select changed_key from changed_persons)
    {%- for dataset, mart_name in children.items() %}
    {%- set mart = adapter.get_relation(database=target.database, schema='marts', identifier=mart_name) %}
    union
    -- the person's {{ dataset }} rows of no known encounter (their master id comes from the person)
    select source_system || '|' || encounter_id
    from {{ source('ods', dataset) }}
    where source_system || '|' || local_patient_id in (select changed_key from changed_persons)
    {%- if mart is not none %}
    union
    select encounter_key from {{ mart }} where source_system in (select source_system from reloaded_sources)
    {%- endif %}
    {%- endfor %}
    union
    select source_system || '|' || encounter_id
    from {{ source('ods', 'encounter') }}
    where source_system in (select source_system from reloaded_sources)
    union
    select encounter_key from {{ encounter_mart }} where source_system in (select source_system from reloaded_sources)
),

groups as (
    -- the duplicate groups (macros/deduplicate_encounters.sql) of those encounters, now and as they were
    select org_code, coalesce(master_id, person_key) as resident_key, encounter_class_code, department_code, doctor_name
    from {{ ref('int_encounters__joined_to_persons') }}
    where encounter_key in (select changed_key from directly)
    union
    select org_code, coalesce(master_id, person_key), encounter_class_code, department_code, doctor_name
    from {{ encounter_mart }}
    where encounter_key in (select changed_key from directly)
),

changed as (
    select changed_key as encounter_key from directly where changed_key is not null
    union
    select mart.encounter_key
    from {{ encounter_mart }} as mart
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
