{#- Free text with ID numbers and mobile numbers masked as core/privacy.py masks them for display: an ID number
    (18 or 15 characters, GB 11643) keeps its 6-digit area code only, a mobile number its first 3 and last 4
    digits. For values that may hold them (a failing value, a source business key) in a de-identified column. -#}
{% macro mask_personal_text(text) -%}
    regexp_replace(regexp_replace(regexp_replace({{ text }},
        '\m([1-9][0-9]{5})[0-9]{11}[0-9Xx]\M', '\1************', 'g'),
        '\m([1-9][0-9]{5})[0-9]{9}\M', '\1*********', 'g'),
        '\m(1[3-9][0-9])[0-9]{4}([0-9]{4})\M', '\1****\2', 'g')
{%- endmacro %}
