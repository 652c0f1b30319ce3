"""Pure trading and learning logic: pandas, numpy and CatBoost only, no Dagster import.

The Dagster assets and the replay call these functions; nothing here receives a Dagster context.
"""
