"""Member systems of the county, each rendering the day's true events into its own vendor format."""
