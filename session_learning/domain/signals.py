"""Live signals: a production model scores the newest closed bar; the monitor resolves open
signals against later bars into closed trades (TP, SL, or expiry at the last bar's close).

Both use the shared first-touch rules, so a live trade is resolved exactly as the backtest and
the labels would resolve it (a bar touching both barriers is a stop loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from session_learning.domain.backtest import CostModel, signals_from_probabilities
from session_learning.domain.barriers import first_touch, ohlc_arrays
from session_learning.domain.estimators import Estimator
from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction, atr, build_features
from session_learning.domain.keys import ModelKey


@dataclass(frozen=True)
class Signal:
    """An open signal as stored in the journal's ``signals`` table."""

    signal_id: str
    symbol: str
    timeframe: str
    direction: str
    bar_time: str  # the decision bar (its open time)
    created_at: str
    entry_time: str  # the next bar's open: when the position is entered
    entry_price: float  # the decision bar's close, the reference the barriers were set from
    take_profit: float
    stop_loss: float
    confidence: float
    edge: float
    expires_at: str
    model_version: str

    def as_row(self) -> dict:
        return asdict(self)


def score_latest_bar(
    model: Estimator,
    card: dict,
    bars: pd.DataFrame,
    key: ModelKey,
    now: pd.Timestamp,
    feature_functions: Sequence[FeatureFunction] = DEFAULT_FEATURES,
) -> Signal | None:
    """The signal of the newest bar closed by ``now``, or None when the rule says no trade.

    Uses the model card's trading rule (confidence, edge, barriers, holding time) and features.
    """
    closed = bars.loc[bars.index + key.bar <= now]
    if len(closed) < 2:
        return None
    features = build_features(closed, feature_functions)[card["features"]]
    proba = model.predict_proba(features.iloc[[-1]])
    rule = card["trading_rule"]
    direction = int(
        signals_from_probabilities(proba, rule["min_confidence"], rule["edge_threshold"])[0]
    )
    if direction == 0:
        return None
    width = float(atr(closed).iloc[-1])
    if not np.isfinite(width) or width <= 0:
        return None
    bar_time = closed.index[-1]
    reference = float(closed["close"].iloc[-1])
    p_short, p_long = float(proba[0, 0]), float(proba[0, 2])
    entry_time = bar_time + key.bar
    return Signal(
        signal_id=f"{key.slug}-{bar_time:%Y%m%dT%H%M}",
        symbol=key.symbol,
        timeframe=key.timeframe,
        direction="long" if direction > 0 else "short",
        bar_time=bar_time.isoformat(),
        created_at=pd.Timestamp(now).isoformat(),
        entry_time=entry_time.isoformat(),
        entry_price=reference,
        take_profit=reference + direction * rule["tp_atr"] * width,
        stop_loss=reference - direction * rule["sl_atr"] * width,
        confidence=max(p_long, p_short),
        edge=abs(p_long - p_short),
        expires_at=(entry_time + rule["max_holding_bars"] * key.bar).isoformat(),
        model_version=card["version"],
    )


def score_bars(
    model: Estimator,
    card: dict,
    bars: pd.DataFrame,
    since: pd.Timestamp,
    feature_functions: Sequence[FeatureFunction] = DEFAULT_FEATURES,
) -> pd.Series:
    """The live scorer on every bar from ``since``: +1 long, -1 short, 0 no trade per bar (by
    the card's features and trading rule, as ``score_latest_bar`` scores the newest one).

    ``bars`` must reach back far enough for the features' lookbacks; a bar's features use only
    bars up to it, so scoring a range gives each bar the signal it had when it closed.
    """
    features = build_features(bars, feature_functions)[card["features"]]
    scored = features.loc[features.index >= since]
    if scored.empty:
        return pd.Series(np.zeros(0, dtype=np.int64), index=scored.index, name="signal")
    rule = card["trading_rule"]
    proba = model.predict_proba(scored)
    signals = signals_from_probabilities(proba, rule["min_confidence"], rule["edge_threshold"])
    return pd.Series(np.asarray(signals, dtype=np.int64), index=scored.index, name="signal")


def resolve_signal(
    signal: dict, bars: pd.DataFrame, key: ModelKey, costs: CostModel
) -> dict | None:
    """The closed trade of an open signal, or None while it is still open.

    Entry at the open of the bar at ``entry_time``, the brackets moved with the fill; exits by the shared first-touch rules over
    the bars up to ``expires_at``; a signal that reaches its expiry without a touch times out at
    the close of its last bar. P&L is net of ``costs``.
    """
    entry_time = pd.Timestamp(signal["entry_time"])
    expires = pd.Timestamp(signal["expires_at"])
    max_bars = max(1, int(round((expires - entry_time) / key.bar)))
    open_, high, low, close = ohlc_arrays(bars)
    start = int(bars.index.searchsorted(entry_time))
    if start >= len(bars):
        return None
    if bars.index[start] >= expires:
        raise ValueError(
            f"signal {signal['signal_id']}: no bar between entry {entry_time} and expiry "
            f"{expires}; the market data has a gap there"
        )
    direction = 1 if signal["direction"] == "long" else -1
    # Brackets keep their distances from the actual fill (the entry bar's open).
    entry = float(open_[start])
    shift = entry - float(signal["entry_price"])
    take_profit, stop_loss = (
        float(signal["take_profit"]) + shift,
        float(signal["stop_loss"]) + shift,
    )
    touch = first_touch(high, low, close, open_, start, direction, take_profit, stop_loss, max_bars)
    if touch.reason == "open":
        return None
    cost = float(costs.round_trip(np.array([entry]), np.array([touch.exit_price]))[0])
    return {
        "trade_id": signal["signal_id"],
        "symbol": signal["symbol"],
        "timeframe": signal["timeframe"],
        "direction": signal["direction"],
        "entry_time": bars.index[start].isoformat(),
        "entry_price": entry,
        "exit_time": (bars.index[touch.exit_idx] + key.bar).isoformat(),
        "exit_price": float(touch.exit_price),
        "stop_loss": stop_loss,
        "take_profit": take_profit,
        "exit_reason": touch.reason,
        "pnl": direction * (float(touch.exit_price) - entry) - cost,
        "confidence": float(signal["confidence"]),
        "model_version": signal["model_version"],
    }
