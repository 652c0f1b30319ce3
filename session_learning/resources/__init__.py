"""Dagster resources: the trade journal, market data, the model registry and file stores."""
