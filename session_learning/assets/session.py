"""Session analysis assets: trades of the session, CSV exports, breakdown, problem report."""

import dataclasses
import functools
import typing

import dagster as dg
import pandas as pd
from pydantic import Field, create_model

from session_learning.assets import OWNERS
from session_learning.assets.metadata import (
    breakdown_metadata,
    report_metadata,
    session_check_spec,
    session_trades_metadata,
)
from session_learning.domain.analysis import (
    LearningRules,
    analyze_session,
    breakdown,
)
from session_learning.domain.keys import ModelKey
from session_learning.domain.patterns import find_loser_patterns
from session_learning.domain.sessions import of_model, recent_trades
from session_learning.domain.trades import (
    judge_unplaceable,
    quarantine_counts,
    quarantined_trades,
    valid_trades,
    validate_trades,
)
from session_learning.hooks import outcome_hooks
from session_learning.resources.exports import TradeExportsResource
from session_learning.resources.journal import TradeJournalResource

GROUP = "session_analysis"

_RULE_HELP = {
    "min_trades": "Trigger: learn only when the session has at least this many trades.",
    "min_losers": "Trigger: learn only when the session has at least this many losers.",
    "struggling_win_rate": "A model with a win rate below this is struggling.",
    "struggling_min_trades": "Trades a model needs before it can be called struggling.",
    "warning_win_rate": "Breakdown status 'warning' below this win rate.",
    "overconfidence": "Losers above this confidence that hit the stop are overconfident.",
    "min_overconfident_losers": "Overconfident losers a model needs in the session to be "
    "flagged and treated (more regularization, higher edge, boosts).",
    "overconfident_loser_boost": "Sample weight of an overconfident loser's entry bar.",
    "overconfident_l2_leaf_reg": "CatBoost l2_leaf_reg when the model was overconfident.",
    "overconfident_depth_reduction": "Tree depth reduction when the model was overconfident.",
    "base_edge_threshold": "Edge (p(direction) - p(opposite)) a signal needs by default.",
    "overconfident_edge_threshold": "Edge a signal needs after overconfidence.",
    "bias_min_trades_per_direction": "Trades per direction needed to judge directional bias.",
    "bias_win_rate_gap": "Win-rate gap between directions that counts as bias.",
    "weak_direction_loser_boost": "Sample weight of the weak direction's losers.",
    "flat_class_weight": "Multiplier of the Flat class weight under directional bias.",
    "weak_direction_class_weight": "Multiplier of the weak direction's class weight.",
    "base_loser_boost": "Sample weight of every loser's entry bar in a retrain.",
    "base_l2_leaf_reg": "CatBoost l2_leaf_reg of a plan without overconfidence.",
    "base_depth": "CatBoost tree depth of a plan without overconfidence.",
}

_RULE_TYPES = typing.get_type_hints(LearningRules)

# Every rule threshold is run config, typed and described from LearningRules itself, so a new
# rule field cannot be forgotten here. ``preset`` sets the trigger; explicit fields override it.
ProblemReportConfig = create_model(
    "ProblemReportConfig",
    __base__=dg.Config,
    __doc__="Thresholds of the session analysis (the seed's rules); all optional.",
    preset=(
        str,
        Field(
            default="balanced", description="Trigger preset: aggressive, balanced, conservative."
        ),
    ),
    pattern_lookback_days=(
        int,
        Field(
            default=28,
            description="Days of journal trades searched for loser patterns (time of day, "
            "confidence, holding time; volatility is added with the bars in each training set).",
        ),
    ),
    **{
        f.name: (_RULE_TYPES[f.name] | None, Field(default=None, description=_RULE_HELP[f.name]))
        for f in dataclasses.fields(LearningRules)
    },
)


def rules_from_config(config: dg.Config) -> LearningRules:
    """The LearningRules of a ProblemReportConfig: the preset, then every field that is set."""
    overrides = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(LearningRules)
        if getattr(config, f.name) is not None
    }
    return LearningRules.preset(config.preset, **overrides)


def session_trades_body(
    window: dg.TimeWindow, journal: TradeJournalResource, models: tuple[ModelKey, ...]
):
    """The ``session_trades`` output and its ``session_trades_are_clean`` result."""
    raw = journal.journal().trades_exited_between(window.start, window.end)
    trades = validate_trades(raw, known_models=models)
    bad = quarantined_trades(trades)
    good = valid_trades(trades)
    # Rows no session contains fail every session's check until they are corrected, so a
    # written row can never vanish unreported.
    unplaced = judge_unplaceable(journal.journal().unplaceable_trades(), known_models=models)
    yield dg.Output(trades, metadata=session_trades_metadata(raw, good, bad, unplaced))
    counts = quarantine_counts(trades)
    problems = []
    if not bad.empty:
        problems.append(
            f"{len(bad)} row(s) quarantined: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items()))
        )
    if not unplaced.empty:
        problems.append(
            f"{len(unplaced)} journal row(s) belong to no session, their exit_time cannot be "
            f"placed (trade_id {', '.join(map(str, unplaced['trade_id'].head(5)))}"
            f"{', ...' if len(unplaced) > 5 else ''}): correct them and re-import with "
            "session-learning import-trades --apply-corrections"
        )
    yield dg.AssetCheckResult(
        check_name="session_trades_are_clean",
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or "all journal rows passed the quality rules",
        metadata={
            "quarantined": len(bad),
            "rows_in_no_session": len(unplaced),
            **{f"reason: {k}": v for k, v in counts.items()},
        },
    )


def trade_exports_body(
    window: dg.TimeWindow, session_trades: pd.DataFrame, exports: TradeExportsResource
) -> dg.MaterializeResult:
    """Write the session's CSV files; their paths and the valid rows as metadata."""
    paths = exports.write_session(session_trades, window.end)
    return dg.MaterializeResult(
        metadata={
            **{f"{name}_csv": dg.MetadataValue.path(str(p)) for name, p in paths.items()},
            "rows": len(valid_trades(session_trades)),
        }
    )


def session_breakdown_body(session_trades: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """The breakdown of the session's valid trades, with its failing/warning counts."""
    table = breakdown(valid_trades(session_trades))
    return dg.Output(table, metadata=breakdown_metadata(table))


def problem_report_body(
    window: dg.TimeWindow,
    config: dg.Config,
    session_trades: pd.DataFrame,
    journal: TradeJournalResource,
    models: tuple[ModelKey, ...],
) -> dg.Output[dict]:
    """The session's problem report under ``config`` (a ``ProblemReportConfig``)."""
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    recent = recent_trades(journal.journal(), models, end, config.pattern_lookback_days)
    report = analyze_session(
        valid_trades(session_trades),
        models,
        start,
        end,
        rules_from_config(config),
        patterns={k.slug: find_loser_patterns(of_model(recent, k), None) for k in models},
    )
    return dg.Output(report.to_dict(), metadata=report_metadata(report))


def build_session_assets(
    partitions_def: dg.PartitionsDefinition, models: tuple[ModelKey, ...]
) -> list[dg.AssetsDefinition]:
    """The session-level assets for the configured models."""
    # Every session asset: one partition per session, in the session_analysis group.
    session_asset = functools.partial(
        dg.asset,
        partitions_def=partitions_def,
        group_name=GROUP,
        owners=OWNERS,
        hooks=outcome_hooks(partitions_def),
    )

    @session_asset(
        kinds={"sql", "pandas"},
        check_specs=[
            session_check_spec(
                "session_trades_are_clean",
                "session_trades",
                partitions_def,
                description="Warns when journal rows of the session were quarantined, or when "
                "any journal row has an exit time no session can contain.",
            )
        ],
    )
    def session_trades(context: dg.AssetExecutionContext, journal: TradeJournalResource):
        """Trades that exited in the session, validated.

        Every journal row of the window is kept: rows that break a data-quality rule (duplicate
        id, exit before entry, prices that contradict direction/TP/SL, NaN, unknown model, naive
        timestamps) carry a ``quarantine_reason`` and are left out of the analysis.
        """
        yield from session_trades_body(context.partition_time_window, journal, models)

    @session_asset(kinds={"csv"})
    def trade_exports(
        context: dg.AssetExecutionContext,
        session_trades: pd.DataFrame,
        exports: TradeExportsResource,
    ) -> dg.MaterializeResult:
        """winners_<ts>.csv, losers_<ts>.csv and all_trades_<ts>.csv (ts = session end, UTC).

        Re-running a partition rewrites the same files; quarantined rows go to quarantine_<ts>.csv.
        """
        return trade_exports_body(context.partition_time_window, session_trades, exports)

    @session_asset(kinds={"pandas"})
    def session_breakdown(session_trades: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        """Per symbol/timeframe and per direction: trades, winners, losers, win rate, P&L,
        profit factor and status (ok / warning / failing)."""
        return session_breakdown_body(session_trades)

    @session_asset(kinds={"python"})
    def problem_report(
        context: dg.AssetExecutionContext,
        config: ProblemReportConfig,  # type: ignore[valid-type]
        session_trades: pd.DataFrame,
        journal: TradeJournalResource,
    ) -> dg.Output[dict]:
        """Problems of the session (struggling models, overconfident losers, directional bias,
        loser patterns), whether it triggers learning, and the retraining plan of every model."""
        return problem_report_body(
            context.partition_time_window, config, session_trades, journal, models
        )

    return [session_trades, trade_exports, session_breakdown, problem_report]
