{#- The first 17 characters of an ID number's 18-digit form, the key residents are joined on across systems
    (GB 11643: a 15-digit legacy number gets '19' before its birth year; the check character is left out, so a
    mistyped check digit still joins). Null for any other length. -#}
{% macro id17(id_number) -%}
    case
        when length({{ id_number }}) = 18 then substr({{ id_number }}, 1, 17)
        when length({{ id_number }}) = 15 then substr({{ id_number }}, 1, 6) || '19' || substr({{ id_number }}, 7, 9)
    end
{%- endmacro %}
