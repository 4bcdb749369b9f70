-- 居民主索引变更（按日）: the residents whose identity data changed on a day, for the regional EMPI's PIX feed.
-- A resident changed on day D when one of the member-system records linked to it was last updated on D (county
-- time); 新建 when its earliest registration is that day, else 更新. The identity shown is the golden record now.
with records as (
    select master_id, source_system, local_patient_id, source_updated_at, registered_at
    from {{ ref('stg_ods__person') }}
    where master_id is not null and source_updated_at is not null
),

changed as (
    select distinct master_id, source_updated_at::date as change_date
    from records
),

first_seen as (
    select master_id, min(coalesce(registered_at, source_updated_at))::date as first_day
    from records group by 1
),

identifiers as (
    select master_id,
           jsonb_agg(jsonb_build_object('system', source_system, 'id', local_patient_id)
                     order by source_system, local_patient_id)::text as local_identifiers
    from {{ ref('dim_patient_identifier') }}
    group by 1
),

final as (
    select
        changed.change_date::date as change_date,
        changed.master_id::text as master_id,
        (case when first_seen.first_day = changed.change_date then '新建' else '更新' end)::text as change_type,
        golden.name::text as name,
        golden.sex_code::text as sex_code,
        golden.birth_date::date as birth_date,
        golden.id_number::text as id_number,
        golden.id_number_valid::boolean as id_number_valid,
        coalesce(identifiers.local_identifiers, '[]')::text as local_identifiers,
        golden.source_record_count::integer as source_record_count
    from changed
    join {{ ref('dim_patient') }} as golden on golden.master_id = changed.master_id
    join first_seen on first_seen.master_id = changed.master_id
    left join identifiers on identifiers.master_id = changed.master_id
)

select * from final
