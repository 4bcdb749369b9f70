"""Spark jobs: bronze -> silver standardisation, master patient index, publishing to the warehouse."""
