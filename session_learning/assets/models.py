"""Per-model learning assets, one set per symbol/timeframe (an asset factory):

    <MODEL>/weighted_training_set -> <MODEL>/candidate_model --(blocking gates)--> <MODEL>/deployed_model

A model that the session's plan leaves untouched (and that has a production model) produces no
training set, so its candidate and deployment are skipped for that partition.

``deployed_model`` makes a model's first deployment: its first candidate that passes every
gate. After that the registry refuses any version without the arena's forward evidence in its
judgement, so a later candidate only enters the arena as a challenger (``assets/arena.py``),
whose ``champion_model`` deploys what the arena decides.
"""

from collections.abc import Callable
from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.assets import model_asset
from session_learning.assets.data_checks import (
    check_loaded_bars,
    history_check_result,
    history_check_spec,
    history_not_needed,
)
from session_learning.assets.metadata import (
    candidate_metadata,
    deployment_metadata,
    gate_check_result,
    session_check_spec,
    training_set_metadata,
)
from session_learning.domain.analysis import ProblemReport, RetrainPlan
from session_learning.domain.backtest import BacktestResult
from session_learning.domain.barrier_refit import BarrierTargets
from session_learning.domain.bars import BarDataError
from session_learning.domain.features import (
    check_no_lookahead,
    feature_set,
    feature_sources,
    load_feature_function,
)
from session_learning.domain.fitting import (
    evaluate_production,
    train_candidate,
    validation_predictions,
)
from session_learning.domain.gates import GATES, Judgement, judge
from session_learning.domain.keys import ModelKey
from session_learning.domain.patterns import PatternRules
from session_learning.domain.sessions import history_start, of_model, recent_trades
from session_learning.domain.trades import valid_trades
from session_learning.domain.training import LearningConfig, build_training_set, effective_plan
from session_learning.hooks import outcome_hooks
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.market_data import MarketDataError, MarketDataResource
from session_learning.resources.registry import ModelRegistryResource


class TrainingSetConfig(dg.Config):
    """Run config of a training set (the weekly refresh sets ``force_retrain``)."""

    force_retrain: bool = Field(
        default=False,
        description="Retrain from scratch even when the session's plan leaves the model alone.",
    )
    pattern_lookback_days: int = Field(
        default=28,
        description="Days of journal trades before the candidate's purge searched for loser "
        "patterns (hour of day, volatility), plus the trades decided after its embargo; trades "
        "that touched the purge, validation window or embargo are never used.",
    )


# The least training rows of a recency-weighted challenger (half the window, at least this).
MIN_RECENT_TRAINING_BARS = 500


def arena_requests(store, key: ModelKey) -> tuple[str, ...]:
    """The candidates the model's arena asked the trainer for (after a demotion)."""
    document = store.arena(key)
    if document is None:
        return ()
    return tuple(document["state"]["arena_state"]["arena"].get("requests", ()))


def _training_plan(
    key: ModelKey,
    config: TrainingSetConfig,
    problem_report: dict,
    registry: ModelRegistryResource,
) -> tuple[RetrainPlan, RetrainPlan | None, bool]:
    """``(the session's plan, the plan trained under or None when the model is left alone,
    whether the arena asked for a recency-weighted challenger)``."""
    report = ProblemReport.from_dict(problem_report)
    plan = report.plans.get(key.slug) or RetrainPlan(model=key.slug, retrain=False)
    has_production = registry.registry().production_version(key) is not None
    # After a demotion the arena asks for a recency-weighted challenger: trained this
    # session whatever the plan says, on the newest half of the training window.
    recency = "recency_weighted" in arena_requests(registry.registry(), key)
    return plan, effective_plan(plan, has_production, config.force_retrain or recency), recency


def _learning_config(
    key: ModelKey, learning_settings: LearningSettingsResource, recency: bool
) -> LearningConfig:
    learning = learning_settings.learning_config(key)
    if recency:
        learning = replace(
            learning,
            training_bars=max(MIN_RECENT_TRAINING_BARS, learning.training_bars // 2),
        )
    return learning


def weighted_training_set_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    window: dg.TimeWindow,
    config: TrainingSetConfig,
    problem_report: dict,
    session_trades: pd.DataFrame,
    market_data: MarketDataResource,
    registry: ModelRegistryResource,
    learning_settings: LearningSettingsResource,
    journal: TradeJournalResource,
):
    """The training set of ``key`` for the session ``window`` (nothing when the plan leaves the
    model alone), with the ``history_supports_learning`` result."""
    training_key = dg.AssetKey([key.slug, "weighted_training_set"])
    plan, chosen, recency = _training_plan(key, config, problem_report, registry)
    if chosen is None:
        context.log.info(f"{key}: not retrained this session: {'; '.join(plan.reasons)}")
        yield history_not_needed(training_key)
        return
    plan = chosen
    learning = _learning_config(key, learning_settings, recency)
    end = pd.Timestamp(window.end)
    calendar = market_data.calendar(key)
    start = history_start(key, end, learning.history_bars(key.timeframe), calendar)
    # The history check is recorded before anything can fail, so it explains failures.
    history = {"calendar": calendar, "session_start": pd.Timestamp(window.start)}
    history |= {"session_end": end, "config": learning}
    try:
        bars = market_data.bars(key, start, end)
    except (BarDataError, MarketDataError) as exc:
        yield history_check_result(training_key, check_loaded_bars(key, None, error=exc, **history))
        raise
    yield history_check_result(training_key, check_loaded_bars(key, bars, **history))
    # Loser patterns are searched in the training set, which knows the held-out span:
    # it takes the lookback before that span, so the journal is read as far as the bars go.
    days = int((end - bars.index[0]) / pd.Timedelta(days=1)) + 1 if len(bars) else 1
    journal_trades = of_model(recent_trades(journal.journal(), (key,), end, days), key)
    specs = learning_settings.feature_specs(key.slug)
    for spec in specs:  # a user feature that looks ahead would make every number a lie
        check_no_lookahead(load_feature_function(spec), bars.iloc[-3000:])
    frame, info = build_training_set(
        bars,
        key,
        pd.Timestamp(window.start),
        end,
        valid_trades(session_trades),
        plan,
        learning,
        feature_functions=feature_set(specs),
        pattern_trades=journal_trades,
        pattern_rules=PatternRules(lookback_days=config.pattern_lookback_days),
        targets=BarrierTargets.from_gates(learning_settings.gate_thresholds(), key.timeframe),
    )
    info["feature_functions"] = specs
    info["arena_kind"] = "recency_weighted" if recency else None
    yield dg.Output({"frame": frame, "info": info}, metadata=training_set_metadata(info))


def _arena_card(card: dict, result: BacktestResult, info: dict) -> dict:
    """``card`` with what the arena reads: the trades on held-out bars (its change detector is
    designed from them) and where training stopped before them."""
    card["feature_sources"] = feature_sources(card["feature_functions"])
    card["validation_r"] = [float(r) for r in result.trades["r_multiple"].to_numpy(dtype=float)]
    card["validation_rows"] = int(info["rows"]["validation"])
    card["held_out"] = list(info["held_out"])
    card["arena_kind"] = info.get("arena_kind")
    return card


def _decision(judgement: Judgement, kept: bool, enters_arena: bool) -> str:
    """What happens to a judged candidate, in one line."""
    if not judgement.passed:
        outcome = judgement.summary
    elif enters_arena:
        outcome = "passed every gate: enters the arena as a challenger"
    else:
        outcome = "passed every gate: will be deployed"
    return outcome + (
        f" (judgement of {judgement.judged_at}, kept: this version went live)" if kept else ""
    )


def candidate_model_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    window: dg.TimeWindow,
    weighted_training_set: dict,
    registry: ModelRegistryResource,
    learning_settings: LearningSettingsResource,
):
    """Train, save and judge the session's candidate; its output and one result per gate."""
    frame, info = weighted_training_set["frame"], weighted_training_set["info"]
    costs = learning_settings.costs(key.symbol)
    candidate = train_candidate(frame, info, learning_settings.learning_config(key), costs, key.bar)
    store = registry.registry()
    live = store.production_version(key)
    card = _arena_card(candidate.card(info, context.partition_key, live), candidate.result, info)
    version = store.save_candidate(key, candidate.model, card, window.end)
    # A version that went live keeps the judgement it went live under (a re-run of its
    # partition shows that verdict against the model it replaced, not against itself).
    stored = store.judgement(key, version)
    kept = stored is not None and store.was_live(key, version)
    baseline = stored["baseline_version"] if kept else live
    production = store.load(key, baseline) if baseline is not None else None
    production_result = evaluate_production(production, frame, costs, key.bar)
    if kept:
        judgement = Judgement.from_record(stored)
    else:
        judgement = judge(
            candidate.result,
            production_result,
            key.timeframe,
            candidate.window,
            learning_settings.gate_thresholds(),
            baseline_version=baseline,
            partition=context.partition_key,
            judged_at=pd.Timestamp.now(tz="UTC").isoformat(),
        )
        store.record_judgement(key, version, judgement.to_record())
    # After the first deployment only the arena's forward evidence promotes.
    enters_arena = judgement.passed and baseline is not None and store.arena(key) is not None
    decision = _decision(judgement, kept, enters_arena)
    m = candidate.result.metrics
    yield dg.Output(
        {
            "version": version,
            "passed": judgement.passed,
            "decision": decision,
            "production_version": baseline,
            "judged_at": judgement.judged_at,
            "gates": [g.as_dict() for g in judgement.gates],
            "metrics": m.as_dict(),
        },
        metadata=candidate_metadata(
            key,
            version,
            decision,
            baseline,
            candidate.result,
            production_result,
            validation_predictions(candidate.model, candidate.features, frame),
            judgement.gates,
        ),
    )
    candidate_key = dg.AssetKey([key.slug, "candidate_model"])
    for gate in judgement.gates:
        yield gate_check_result(candidate_key, gate)


def deployed_model_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    candidate_model: dict,
    registry: ModelRegistryResource,
) -> dg.Output[dict]:
    """Deploy the candidate when it may be the model's first deployment; else say why not."""
    store = registry.registry()
    previous = store.production_version(key)
    version = candidate_model["version"]
    refusal = store.promotion_refusal(key, version)
    if refusal is not None:
        summary = f"not deployed: {refusal} Production stays {previous or 'none'}."
        context.log.warning(summary)
        promoted = False
    else:
        judgement = store.judgement(key, version)
        promoted = store.promote(
            key,
            version,
            reason=f"passed every gate against "
            f"{judgement['baseline_version'] or 'no production model'} "
            f"(judged {judgement['judged_at']})",
            session=context.partition_key,
        )
        summary = (
            f"deployed {version} (was {previous or 'none'})"
            if promoted
            else f"{version} was already deployed for this session: no second deployment"
        )
    return dg.Output(
        {
            "version": version,
            "previous": previous,
            "promoted": promoted,
            "passed": refusal is None,
            "summary": summary,
        },
        metadata=deployment_metadata("version", version, previous, promoted, summary),
    )


def build_model_assets(
    partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> list[dg.AssetsDefinition]:
    """The training set, candidate and deployment assets of one model."""
    # Each step records its decision or error (for `status`) through the outcome hooks.
    asset = model_asset(partitions_def, key, outcome_hooks(partitions_def))
    return [
        _weighted_training_set_asset(asset, partitions_def, key),
        _candidate_model_asset(asset, partitions_def, key),
        _deployed_model_asset(asset, partitions_def, key),
    ]


def _weighted_training_set_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    training_key = dg.AssetKey([key.slug, "weighted_training_set"])

    @asset(
        key_prefix=[key.slug],
        name="weighted_training_set",
        kinds={"pandas"},
        output_required=False,
        ins={
            "problem_report": dg.AssetIn(key="problem_report"),
            "session_trades": dg.AssetIn(key="session_trades"),
        },
        check_specs=[history_check_spec(training_key, partitions_def)],
    )
    def weighted_training_set(
        context: dg.AssetExecutionContext,
        config: TrainingSetConfig,
        problem_report: dict,
        session_trades: pd.DataFrame,
        market_data: MarketDataResource,
        registry: ModelRegistryResource,
        learning_settings: LearningSettingsResource,
        journal: TradeJournalResource,
    ):
        """Features and triple-barrier labels up to the session's end, with the session's losers
        boosted on the bars they were decided on, and a purged, embargoed validation window."""
        yield from weighted_training_set_body(
            context,
            key,
            context.partition_time_window,
            config,
            problem_report,
            session_trades,
            market_data,
            registry,
            learning_settings,
            journal,
        )

    return weighted_training_set


def _candidate_model_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    candidate_key = dg.AssetKey([key.slug, "candidate_model"])

    @asset(
        key=candidate_key,
        kinds={"catboost"},
        ins={"weighted_training_set": dg.AssetIn(key=[key.slug, "weighted_training_set"])},
        check_specs=[
            session_check_spec(
                gate.name,
                candidate_key,
                partitions_def,
                blocking=True,
                description=gate.description,
            )
            for gate in GATES
        ],
    )
    def candidate_model(
        context: dg.AssetExecutionContext,
        weighted_training_set: dict,
        registry: ModelRegistryResource,
        learning_settings: LearningSettingsResource,
    ):
        """A CatBoost Long/Short/Flat model trained under the session's plan, stored as .cbm with
        a JSON card, and judged on the held-out window against the gates and production."""
        yield from candidate_model_body(
            context,
            key,
            context.partition_time_window,
            weighted_training_set,
            registry,
            learning_settings,
        )

    return candidate_model


def _deployed_model_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    @asset(
        key_prefix=[key.slug],
        name="deployed_model",
        kinds={"catboost"},
        ins={"candidate_model": dg.AssetIn(key=dg.AssetKey([key.slug, "candidate_model"]))},
        pool=f"deploy_{key.slug}",
    )
    def deployed_model(
        context: dg.AssetExecutionContext, candidate_model: dict, registry: ModelRegistryResource
    ) -> dg.Output[dict]:
        """The model's first deployment: the candidate, promoted atomically, only when its
        judgement record in the registry passed every gate and no version has traded yet;
        afterwards the arena decides (champion_model) and a candidate only enters it.
        Materialized on its own (a re-run, a backfill, the UI), a candidate that cannot go
        live changes nothing and the metadata says why. Earlier versions are kept for
        rollback."""
        return deployed_model_body(context, key, candidate_model, registry)

    return deployed_model
