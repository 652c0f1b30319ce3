"""Thin Dagster glue: read the partition window, call the domain, return values and metadata."""
