{#- Age in completed years (周岁) on a day: the count every age-banded indicator uses. -#}
{% macro completed_years(on_date, birth_date) -%}
    extract(year from age({{ on_date }}, {{ birth_date }}))::integer
{%- endmacro %}

{#- The population library's age bands (0-6 儿童, 7-17, 18-34, 35-64, 65+ 老年人): one definition shared by
    fct_population_month and dim_resident, so a resident falls in the same band in both. -#}
{% macro age_band(on_date, birth_date) -%}
    case
        when {{ birth_date }} is null then null
        when {{ completed_years(on_date, birth_date) }} <= 6 then '0-6'
        when {{ completed_years(on_date, birth_date) }} <= 17 then '7-17'
        when {{ completed_years(on_date, birth_date) }} <= 34 then '18-34'
        when {{ completed_years(on_date, birth_date) }} <= 64 then '35-64'
        else '65+'
    end
{%- endmacro %}
