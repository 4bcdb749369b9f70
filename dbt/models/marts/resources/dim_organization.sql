-- 机构维度: every institution of the county's registry (config/organizations.csv, seed `organizations`), whether or
-- not it sent data, so rates and rankings built on it show 0 for a silent institution instead of leaving it out.
-- The registry, not ods.organization, is the spine: the member systems' directories (cloud_his tenants, the
-- referral platform, the 医保 定点 catalogue, 公卫) each cover only part of the county, lack the 卫健委, open beds
-- and mostly level and parent, and spell names differently. They only add how many of them list the institution
-- and whether one of them has switched it off.
with registry as (
    select * from {{ ref('organizations') }}
),

source_directories as (
    select
        organization_code as org_code,
        count(distinct source_system) as listed_in_sources,
        bool_and(coalesce(is_active, true)) as is_active_in_sources
    from {{ ref('stg_ods__organization') }}
    where organization_code is not null
    group by organization_code
),

final as (
    select
        registry.org_code::text as org_code,
        registry.org_name::text as org_name,
        registry.org_type::text as org_type,
        nullif(registry.org_level, '')::text as org_level,
        -- 医共体层级: the three tiers of the county's service network (县级医院 / 乡级 / 村级), what the dashboards
        -- filter by; org_level (等级评审) leaves village clinics 未定级 and is not a tier
        (case
            when registry.org_type in ('综合医院', '中医医院', '妇幼保健院', '民营综合医院') then '县级医院'
            when registry.org_type in ('乡镇卫生院', '社区卫生服务中心') then '乡级（卫生院/社区）'
            when registry.org_type = '村卫生室' then '村级（村卫生室）'
            else '行政部门'
        end)::text as org_tier,
        nullif(registry.township, '')::text as township,
        nullif(registry.parent_org_code, '')::text as parent_org_code,
        coalesce(registry.open_beds, 0)::integer as open_beds,
        -- 基层医疗卫生机构: 乡镇卫生院, 社区卫生服务中心 and 村卫生室
        (registry.org_type in ('乡镇卫生院', '社区卫生服务中心', '村卫生室'))::boolean as is_primary_care,
        -- the county's five hospitals: 综合医院, 中医医院, 妇幼保健院 and the two 民营综合医院
        (registry.org_type in ('综合医院', '中医医院', '妇幼保健院', '民营综合医院'))::boolean as is_hospital,
        (registry.org_type <> '卫生健康行政部门')::boolean as is_medical_institution,
        coalesce(source_directories.listed_in_sources, 0)::integer as listed_in_sources,
        coalesce(source_directories.is_active_in_sources, true)::boolean as is_active
    from registry
    left join source_directories on source_directories.org_code = registry.org_code
)

select * from final
