"""Data-quality management: the rule library (config/quality/), its one-pass engine on silver, 稽核条目,
problems and scores in PostgreSQL ``dq``, and GX validation with Data Docs for engineers."""
