"""Collection from member systems into bronze Delta (append-only, with the bronze contract columns)."""
