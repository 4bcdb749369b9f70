{#- GENERATED from core/privacy.py (MASKS_FOR_SQL) by `./drc generate`: edit the masks there, not here.
    Free text with ID numbers (18 or 15 characters, GB 11643) and mobile numbers masked as the platform
    masks them for display. For values that may hold them (a failing value, a source business key). -#}
{% macro mask_personal_text(text) -%}
    regexp_replace(regexp_replace(regexp_replace({{ text }},
        '(?<![0-9A-Za-z])([1-9]\d{5})(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx](?![0-9A-Za-z])', '\1************', 'g'),
        '(?<![0-9A-Za-z])([1-9]\d{5})\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![0-9A-Za-z])', '\1*********', 'g'),
        '(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)', '\1****\2', 'g')
{%- endmacro %}
