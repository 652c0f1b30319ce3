"""Live trading assets, materialized by the 30-minute signal monitor:

resolved_signals: open signals -> closed trades in the journal (TP, SL, expiry)
live_signals:     production health, then a new signal per healthy production model
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.assets import OWNERS
from session_learning.assets.metadata import (
    live_signals_metadata,
    markdown_table,
    resolved_signals_metadata,
)
from session_learning.domain.features import FeatureError, card_feature_set
from session_learning.domain.health import HealthRule, HealthVerdict, assess_health
from session_learning.domain.keys import ModelKey
from session_learning.domain.signals import resolve_signal, score_latest_bar
from session_learning.domain.trades import valid_trades, validate_trades
from session_learning.resources.journal import TradeJournal, TradeJournalResource
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.market_data import MarketDataResource
from session_learning.resources.registry import (
    ModelRegistry,
    ModelRegistryResource,
    RegistryError,
)

GROUP = "live_trading"


class MonitorConfig(dg.Config):
    """When the monitor runs; empty means now (a replay or a test sets it)."""

    now: str | None = Field(default=None, description="ISO-8601 time to act as of (UTC).")
    pause_degraded: bool = Field(
        default=True,
        description="A degraded production model stops emitting signals until replaced or "
        "re-enabled by an operator (session-learning enable SYMBOL TIMEFRAME).",
    )
    health_min_trades: int = Field(default=30, description="Live trades needed to judge health.")
    health_lookback_trades: int = Field(default=60, description="Newest live trades judged.")


def _now(config: MonitorConfig) -> pd.Timestamp:
    now = pd.Timestamp(config.now) if config.now else pd.Timestamp.now(tz="UTC")
    if now.tzinfo is None:
        raise ValueError(f"monitor time {config.now!r} needs a UTC offset")
    return now.tz_convert("UTC")


def resolved_signals_body(
    config: MonitorConfig,
    journal: TradeJournalResource,
    market_data: MarketDataResource,
    learning_settings: LearningSettingsResource,
    models: tuple[ModelKey, ...],
) -> dg.MaterializeResult:
    """Resolve every open signal against the bars up to the monitor's time; fails, after
    resolving the rest, when one cannot be resolved."""
    by_slug = {m.slug: m for m in models}
    now = _now(config)
    store = journal.journal()
    signals = store.open_signals()
    rows, errors = [], []
    for (symbol, timeframe), group in signals.groupby(["symbol", "timeframe"], sort=True):
        key = by_slug.get(f"{symbol}_{timeframe}")
        if key is None:
            errors.append(f"{symbol} {timeframe}: open signals for a model not configured")
            continue
        start = pd.Timestamp(group["entry_time"].min()) - key.bar
        bars = market_data.bars(key, start, now)
        bars = bars.loc[bars.index + key.bar <= now]
        for signal in group.to_dict("records"):
            try:
                trade = resolve_signal(signal, bars, key, learning_settings.costs(symbol))
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if trade is not None and store.close_signal(signal["signal_id"], trade):
                rows.append({k: trade[k] for k in ("trade_id", "exit_reason", "pnl")})
    if errors:
        raise dg.Failure(
            description=f"{len(errors)} signal(s) could not be resolved; the rest were.",
            metadata={"errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in errors))},
        )
    return dg.MaterializeResult(metadata=resolved_signals_metadata(rows, len(signals), now))


def _judge_health(
    key: ModelKey, version: str, reg: ModelRegistry, store: TradeJournal, rule: HealthRule
) -> tuple[HealthVerdict, bool]:
    """``(verdict, overridden)`` of the production ``version`` on its live trades; a changed
    status is recorded in the registry, a new degradation also as an alert."""
    record = reg.health(key)
    trades = valid_trades(
        validate_trades(store.trades_of_version(key.symbol, key.timeframe, version))
    )
    verdict = assess_health(trades, rule)
    overridden = record["status"] == "enabled" and record.get("version") == version
    if overridden:
        # The override lifts only the pause it was given for: trades closed after it
        # are judged on their own, and a new degradation pauses the version again.
        since = pd.Timestamp(record["updated_at"])
        later = trades[pd.to_datetime(trades["exit_time"], utc=True) > since]
        later_verdict = assess_health(later, rule)
        if later_verdict.status == "degraded":
            overridden, verdict = False, later_verdict
    if not overridden and verdict.status != record["status"]:
        reg.set_health(key, verdict.status, verdict.reason, version=version)
        if verdict.status == "degraded":
            store.add_alert("degraded", key.slug, f"{version}: {verdict.reason}")
    return verdict, overridden


def _emit_signal(
    key: ModelKey,
    production: tuple,
    functions: tuple,
    now: pd.Timestamp,
    store: TradeJournal,
    market_data: MarketDataResource,
    learning_settings: LearningSettingsResource,
) -> str:
    """Score the newest closed bar and journal its signal (once per bar); what happened."""
    model, card = production
    history = learning_settings.learning_config(key).warmup_bars + 50
    start = market_data.calendar(key).history_start(now, history + 10, key.bar)
    bars = market_data.bars(key, start, now)
    signal = score_latest_bar(model, card, bars, key, now, functions)
    if signal is None:
        return "no signal"
    if store.add_signal(signal.as_row()):
        return f"{signal.direction} @ {signal.entry_price:.5g}"
    return "already signalled this bar"


def live_signals_body(
    config: MonitorConfig,
    journal: TradeJournalResource,
    market_data: MarketDataResource,
    registry: ModelRegistryResource,
    learning_settings: LearningSettingsResource,
    models: tuple[ModelKey, ...],
) -> dg.MaterializeResult:
    """Judge each production model's health, then let each one that may signal score the
    newest closed bar; fails, after the others, when a production model cannot be loaded."""
    now = _now(config)
    store, reg = journal.journal(), registry.registry()
    rule = HealthRule(
        min_trades=config.health_min_trades,
        lookback_trades=config.health_lookback_trades,
        gates=learning_settings.gate_thresholds(),
        risk_per_trade=learning_settings.risk_per_trade,
    )
    rows, errors = [], []
    for key in models:
        try:
            production = reg.production(key)
            # The user feature functions the card names, refused if their code changed
            # since the model was judged.
            functions = card_feature_set(production[1]) if production else ()
        except (RegistryError, FeatureError) as exc:
            errors.append(f"{key}: {exc}")
            continue
        if production is None:
            rows.append({"model": key.slug, "version": "none", "health": "-", "signal": "-"})
            continue
        version = production[1]["version"]
        verdict, overridden = _judge_health(key, version, reg, store, rule)
        health = "enabled by operator" if overridden else verdict.status
        paused = reg.paused(key)
        if paused is not None:
            # The arena demoted the champion: FLAT trades, whatever its health says.
            signal_note = f"paused by the arena: {paused['reason']}"
        elif verdict.status == "degraded" and not overridden and config.pause_degraded:
            signal_note = "paused: degraded"
        else:
            signal_note = _emit_signal(
                key, production, functions, now, store, market_data, learning_settings
            )
        rows.append(
            {
                "model": key.slug,
                "version": version,
                "health": health,
                "why": verdict.reason,
                "signal": signal_note,
            }
        )
    if errors:
        raise dg.Failure(
            description="production model(s) could not be loaded: " + "; ".join(errors),
            metadata={"models": markdown_table(pd.DataFrame(rows))},
        )
    return dg.MaterializeResult(metadata=live_signals_metadata(rows, now))


def build_live_assets(models: tuple[ModelKey, ...]) -> list[dg.AssetsDefinition]:
    """The monitor's assets for the configured models."""

    @dg.asset(group_name=GROUP, owners=OWNERS, kinds={"sql"})
    def resolved_signals(
        context: dg.AssetExecutionContext,
        config: MonitorConfig,
        journal: TradeJournalResource,
        market_data: MarketDataResource,
        learning_settings: LearningSettingsResource,
    ) -> dg.MaterializeResult:
        """Open signals resolved against the bars since they were issued: take profit, stop
        loss (a bar touching both is a stop loss), or expiry at the last bar's close. Each
        becomes a closed trade in the journal, exactly once."""
        return resolved_signals_body(config, journal, market_data, learning_settings, models)

    @dg.asset(group_name=GROUP, owners=OWNERS, kinds={"catboost", "sql"}, deps=[resolved_signals])
    def live_signals(
        context: dg.AssetExecutionContext,
        config: MonitorConfig,
        journal: TradeJournalResource,
        market_data: MarketDataResource,
        registry: ModelRegistryResource,
        learning_settings: LearningSettingsResource,
    ) -> dg.MaterializeResult:
        """Production health per model, then a signal from each healthy production model on the
        newest closed bar (never two for the same bar and model). A model whose recent live
        trades fall below the gates is marked degraded and, by default, stops signalling; a
        model the arena paused (its champion demoted to FLAT) signals nothing."""
        return live_signals_body(config, journal, market_data, registry, learning_settings, models)

    return [resolved_signals, live_signals]
