"""Thin Dagster glue: read the partition window, call the domain, return values and metadata."""

import functools

import dagster as dg

from session_learning.domain.keys import ModelKey

# Who answers for every asset and check of the code location (shown in the Dagster UI).
OWNERS = ["team:trading-ml"]
# Each model's assets (learning and arena) form the group ``model_<SYMBOL>_<TIMEFRAME>``.
GROUP_PREFIX = "model_"


def model_asset(partitions_def: dg.PartitionsDefinition, key: ModelKey, hooks):
    """``dg.asset`` with what every asset of one model shares: the session partitions, the
    model's group and tag, the owners and the outcome hooks."""
    return functools.partial(
        dg.asset,
        partitions_def=partitions_def,
        group_name=f"{GROUP_PREFIX}{key.slug}",
        owners=OWNERS,
        hooks=hooks,
        tags={"session_learning/model": key.slug},
    )
