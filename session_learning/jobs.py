"""Jobs: the learning cycle of one session, and the signal monitor."""

import dagster as dg

LEARNING_JOB = "session_learning_job"
MONITOR_JOB = "signal_monitor_job"
PERFORMANCE_JOB = "learning_performance_job"
# The training-set assets' node names end with this; the weekly refresh configures them all.
TRAINING_SET = "weighted_training_set"


def build_jobs(
    learning_assets: list[dg.AssetsDefinition],
    live_assets: list[dg.AssetsDefinition],
    monitoring_assets: list[dg.AssetsDefinition],
) -> list:
    return [
        dg.define_asset_job(
            LEARNING_JOB,
            selection=dg.AssetSelection.assets(*learning_assets),
            description="One learning cycle for one session partition: analyse the session's "
            "trades, retrain the models its plan names, gate and deploy.",
            tags={"session_learning/kind": "learning"},
        ),
        dg.define_asset_job(
            MONITOR_JOB,
            selection=dg.AssetSelection.assets(*live_assets),
            description="Resolve open signals into trades, judge production health, emit signals.",
            tags={"session_learning/kind": "monitor"},
        ),
        dg.define_asset_job(
            PERFORMANCE_JOB,
            selection=dg.AssetSelection.assets(*monitoring_assets),
            description="Weekly win-rate trend and per-session performance from the journal.",
        ),
    ]


def full_retrain_config(model_slugs: list[str]) -> dict:
    """Run config that retrains every model from scratch (the weekly refresh)."""
    return {
        "ops": {
            f"{slug}__{TRAINING_SET}": {"config": {"force_retrain": True}} for slug in model_slugs
        }
    }
