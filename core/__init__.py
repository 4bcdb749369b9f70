"""Shared plumbing of the data resource center: settings, Spark session, DB connections, CLI."""
