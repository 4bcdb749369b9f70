"""Clinician lookup API (FastAPI): demographics by master id, personal data masked."""
