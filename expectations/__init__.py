"""Great Expectations suites (YAML under suites/) run on silver; results stored in PostgreSQL ``dq``."""
