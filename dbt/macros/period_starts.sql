{#- The start of each period (day, month, quarter, year) that contains `day`, as rows (period_type, period_start):
    cross-joined to a fact, they let it find its reporting periods by an equality join, where a range join
    (day between start and end) would loop over every period of the data for every row. -#}
{% macro period_starts(day) -%}
cross join lateral (
        values ('day', ({{ day }})::date),
            ('month', date_trunc('month', ({{ day }})::timestamp)::date),
            ('quarter', date_trunc('quarter', ({{ day }})::timestamp)::date),
            ('year', date_trunc('year', ({{ day }})::timestamp)::date)
    ) as starts (period_type, period_start)
{%- endmacro %}
