"""Scheduled exports to the municipal/provincial platforms: deterministic files plus a manifest."""
