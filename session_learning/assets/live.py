"""Live trading assets, materialized by the 30-minute signal monitor:

resolved_signals: open signals -> closed trades in the journal (TP, SL, expiry)
live_signals:     production health, then a new signal per healthy production model
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.assets import OWNERS
from session_learning.assets.metadata import markdown_table
from session_learning.domain.features import FeatureError, card_feature_set
from session_learning.domain.health import HealthRule, assess_health
from session_learning.domain.keys import ModelKey
from session_learning.domain.signals import resolve_signal, score_latest_bar
from session_learning.domain.trades import valid_trades, validate_trades
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.market_data import MarketDataResource
from session_learning.resources.registry import ModelRegistryResource, RegistryError

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


def build_live_assets(models: tuple[ModelKey, ...]) -> list[dg.AssetsDefinition]:
    """The monitor's assets for the configured models."""
    by_slug = {m.slug: m for m in models}

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
        return dg.MaterializeResult(
            metadata={
                "resolved": len(rows),
                "still_open": len(signals) - len(rows),
                "trades": markdown_table(pd.DataFrame(rows)),
                "as_of": now.isoformat(),
            }
        )

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
            model, card = production
            version = card["version"]
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
            health = "enabled by operator" if overridden else verdict.status
            if not overridden and verdict.status != record["status"]:
                reg.set_health(key, verdict.status, verdict.reason, version=version)
                if verdict.status == "degraded":
                    store.add_alert("degraded", key.slug, f"{version}: {verdict.reason}")
            signal_note = "-"
            paused = reg.paused(key)
            if paused is not None:
                # The arena demoted the champion: FLAT trades, whatever its health says.
                signal_note = f"paused by the arena: {paused['reason']}"
            elif verdict.status == "degraded" and not overridden and config.pause_degraded:
                signal_note = "paused: degraded"
            else:
                history = learning_settings.learning_config(key).warmup_bars + 50
                start = market_data.calendar(key).history_start(now, history + 10, key.bar)
                bars = market_data.bars(key, start, now)
                signal = score_latest_bar(model, card, bars, key, now, functions)
                if signal is None:
                    signal_note = "no signal"
                elif store.add_signal(signal.as_row()):
                    signal_note = f"{signal.direction} @ {signal.entry_price:.5g}"
                else:
                    signal_note = "already signalled this bar"
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
        table = pd.DataFrame(rows)
        return dg.MaterializeResult(
            metadata={
                "models": markdown_table(table),
                "signals_emitted": int(table["signal"].str.contains("@").sum()) if rows else 0,
                "degraded": int((table["health"] == "degraded").sum()) if rows else 0,
                "as_of": now.isoformat(),
            }
        )

    return [resolved_signals, live_signals]
