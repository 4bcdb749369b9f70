{{ config(materialized='table', indexes=[{'columns': ['master_id']}, {'columns': ['id_number']}]) }}
-- A table, not a view: a county's register (650,000 people) against the golden records is too heavy to recompute in
-- every model and test that reads it.
-- 全员人口登记 → 主索引号: each person of the 全员人口 register with the master id they are counted under.
-- The register is not fed to the EMPI (no silver.person records with source_system population_register), so its
-- people are linked to the EMPI golden records here, most certain rule first:
--   1 id_number    the same 公民身份号码
--   2 id17         the same first 17 characters: a 15-digit legacy number (area + '19' + the rest) or a mistyped
--                  check character on the golden record (two valid numbers never share 17 characters)
--   3 demographics golden record without a usable ID number: same name, birth date and sex, unique on both sides
-- A register person without an EMPI record gets a provisional key 'P' + 16 hex of SHA-256 of the ID number.
-- Each register person gets at most one master id and each master id at most one register person.
with register_rows as (
    select * from {{ ref('stg_ods__population_register') }}
    where id_number is not null
),

golden as (
    select
        master_id,
        name,
        sex_code,
        birth_date,
        source_record_count,
        {{ id17('id_number') }} as id17,
        id_number
    from {{ ref('stg_ods__empi_golden') }}
),

-- silver keeps one row per ID number (its newest monthly file); guard against a second source all the same
register as (
    select distinct on (id_number)
        id_number,
        name,
        sex_code,
        -- the register's birth date; the ID number's digits 7–14 if it is missing
        coalesce(birth_date, to_date(substring(id_number from 7 for 8), 'YYYYMMDD')) as birth_date,
        township,
        village,
        household_no,
        residence_status,
        to_date(register_month || '-01', 'YYYY-MM-DD') as register_month
    from register_rows
    order by id_number, register_month desc nulls last, source_updated_at desc nulls last
),

latest_file as (
    select max(register_month) as latest_register_month from register
),

id_candidates as (
    select
        register.id_number,
        golden.master_id,
        case when golden.id_number = register.id_number then 1 else 2 end as match_rank,
        golden.source_record_count
    from register
    inner join golden on golden.id17 = substr(register.id_number, 1, 17)
),

golden_without_id_match as (
    select golden.*
    from golden
    where not exists (select 1 from id_candidates where id_candidates.master_id = golden.master_id)
      and golden.name is not null and golden.birth_date is not null and golden.sex_code is not null
),

demographic_candidates as (
    select
        register.id_number,
        golden.master_id,
        3 as match_rank,
        golden.source_record_count,
        count(*) over (partition by register.id_number) as golden_per_register,
        count(*) over (partition by golden.master_id) as register_per_golden
    from register
    inner join golden_without_id_match as golden
        on golden.name = register.name
        and golden.birth_date = register.birth_date
        and golden.sex_code = register.sex_code
    where not exists (select 1 from id_candidates where id_candidates.id_number = register.id_number)
),

candidates as (
    select id_number, master_id, match_rank, source_record_count from id_candidates
    union all
    select id_number, master_id, match_rank, source_record_count from demographic_candidates
    where golden_per_register = 1 and register_per_golden = 1
),

-- best candidate per register person, then keep a master id only for its best register person
best_per_person as (
    select distinct on (id_number) *
    from candidates
    order by id_number, match_rank, source_record_count desc, master_id
),

linked as (
    select distinct on (master_id) *
    from best_per_person
    order by master_id, match_rank, id_number
),

final as (
    select
        register.id_number,
        coalesce(
            linked.master_id,
            'P' || substr(encode(sha256(convert_to('population_register|' || register.id_number, 'UTF8')), 'hex'), 1, 16)
        ) as master_id,
        case linked.match_rank
            when 1 then 'id_number'
            when 2 then 'id17'
            when 3 then 'demographics'
            else 'register_only'
        end as link_method,
        register.sex_code,
        register.birth_date,
        register.township,
        register.village,
        register.household_no,
        register.residence_status,
        register.register_month,
        latest_file.latest_register_month,
        -- listed in the newest monthly file = living here now; an older row = left the register since (died or
        -- moved away: the file does not say which)
        (register.register_month = latest_file.latest_register_month) as is_listed_in_latest_file
    from register
    cross join latest_file
    left join linked on linked.id_number = register.id_number
)

select * from final
