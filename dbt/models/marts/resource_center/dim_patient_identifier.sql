-- 患者交叉索引 (IHE PIX): every member system's local patient id and the resident (master id) it belongs to, as
-- the EMPI decided. A table with indexes both ways: the lookup API resolves a local id to its resident and lists a
-- resident's local ids.
with pix as (
    select * from {{ ref('stg_ods__empi_pix') }}
),

final as (
    select
        master_id::text as master_id,
        source_system::text as source_system,
        local_patient_id::text as local_patient_id,
        match_decision::text as match_decision,
        matched_at::timestamptz as matched_at
    from pix
    where master_id is not null
)

select * from final
