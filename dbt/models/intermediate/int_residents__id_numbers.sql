{{ config(materialized='table', indexes=[{'columns': ['id17'], 'unique': True}]) }}
-- A table, not a view: every ID-number lookup joins it on id17 (indexed).
-- 身份证号 → 主索引号: the lookup for records that carry an ID number but no person record of their own (a voided
-- 健康档案 whose person row was withdrawn, a delivery in the 妇幼 files, a mother on a 出生登记).
-- Keyed by the first 17 characters of the 18-digit form, so a 15-digit legacy number or a mistyped check character
-- still finds its resident. The register's link wins (it covers register-only residents too), then the golden record.
with golden as (
    select master_id, id_number, id_number_valid, source_record_count
    from {{ ref('stg_ods__empi_golden') }}
    where id_number is not null
),

register as (
    select master_id, id_number from {{ ref('int_residents__register_linked') }}
),

candidates as (
    select substr(id_number, 1, 17) as id17, master_id, 1 as priority, 0 as source_record_count
    from register
    where length(id_number) = 18
    union all
    select
        {{ id17('id_number') }},
        master_id,
        case when id_number_valid then 2 else 3 end,
        source_record_count
    from golden
),

final as (
    select distinct on (id17)
        id17,
        master_id
    from candidates
    where id17 is not null
    order by id17, priority, source_record_count desc, master_id
)

select * from final
