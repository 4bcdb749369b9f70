-- Every encounter flagged cancelled or duplicate save: the rules are in macros/deduplicate_encounters.sql (one home,
-- shared with fct_encounter's incremental build).
{{ deduplicate_encounters() }}
