"""Thin Dagster glue: read the partition window, call the domain, return values and metadata."""

# Who answers for every asset and check of the code location (shown in the Dagster UI).
OWNERS = ["team:trading-ml"]
