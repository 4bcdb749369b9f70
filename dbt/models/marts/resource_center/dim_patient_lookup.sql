-- 患者检索索引: what the lookup API's patient search (IHE PDQ) reads. The ID number is here only as a keyed hash
-- (HMAC-SHA256 of the upper-cased number with the key DRC_ID_LOOKUP_KEY, which ./drc hands to the dbt session
-- as the setting drc.id_lookup_key — never written into SQL or logs), so a search by ID number compares hashes
-- and never needs the clear value. record_township: the township of the resident's health record, the scope of
-- a public-health officer.
with patients as (
    select * from {{ ref('dim_patient') }}
),

record_township as (
    select distinct on (master_id) master_id, township
    from {{ ref('fct_health_record') }}
    where master_id is not null
    order by master_id, is_active desc, filed_date desc nulls last
),

final as (
    select
        p.master_id,
        case when p.id_number is not null
             then encode(public.hmac(upper(p.id_number), current_setting('drc.id_lookup_key'), 'sha256'), 'hex')
        end::text as id_number_hash,
        p.name,
        p.sex_code,
        p.birth_date,
        r.township::text as record_township
    from patients p
    left join record_township r using (master_id)
)

select * from final
