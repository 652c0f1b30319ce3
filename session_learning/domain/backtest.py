"""The validation backtest: model signals -> trades with costs -> the metrics the gates judge.

A signal on decision bar ``i`` (data up to bar ``i``'s close) enters at the open of bar ``i + 1``
with take profit and stop loss placed ``tp_atr`` / ``sl_atr`` ATRs of bar ``i`` from the entry.
Trades are resolved with the shared first-touch rules (``barriers``), one position at a time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from session_learning.domain.barriers import OPEN, Touches, first_touch_many, ohlc_arrays

TRADE_FRAME_COLUMNS = (
    "entry_time",
    "exit_time",
    "direction",
    "entry_price",
    "exit_price",
    "stop_loss",
    "take_profit",
    "exit_reason",
    "pnl",
    "r_multiple",
    "bars_held",
    "signal_index",
)

_YEAR = pd.Timedelta(days=365.25)


@dataclass(frozen=True)
class CostModel:
    """Trading costs: ``spread`` in price units, paid once per round trip, and
    ``commission_rate``, a fraction of notional charged on entry and again on exit."""

    spread: float = 0.0
    commission_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.spread < 0 or self.commission_rate < 0:
            raise ValueError("spread and commission_rate must be >= 0")

    def round_trip(self, entry_price: np.ndarray, exit_price: np.ndarray) -> np.ndarray:
        """The cost of one round trip per unit, in price units."""
        return self.spread + self.commission_rate * (entry_price + exit_price)


@dataclass(frozen=True)
class BacktestConfig:
    """How signals become trades.

    ``tp_atr`` / ``sl_atr``: take-profit and stop distances in ATRs of the decision bar;
    ``max_holding_bars``: bars a trade is held at most (the entry bar counts);
    ``risk_per_trade``: fraction of equity lost at -1R, for the compounding equity curve;
    ``min_confidence`` / ``edge_threshold``: see ``signals_from_probabilities``.
    """

    tp_atr: float = 2.0
    sl_atr: float = 1.0
    max_holding_bars: int = 24
    risk_per_trade: float = 0.01
    min_confidence: float = 0.45
    edge_threshold: float = 0.08

    def __post_init__(self) -> None:
        if self.tp_atr <= 0 or self.sl_atr <= 0:
            raise ValueError("tp_atr and sl_atr must be positive")
        if self.max_holding_bars < 1:
            raise ValueError("max_holding_bars must be >= 1")
        if not 0 < self.risk_per_trade < 1:
            raise ValueError("risk_per_trade must be in (0, 1)")
        if not 0 <= self.min_confidence <= 1 or self.edge_threshold < 0:
            raise ValueError("min_confidence must be in [0, 1] and edge_threshold >= 0")


@dataclass(frozen=True)
class Metrics:
    """What the gates judge, over a list of closed trades.

    ``win_rate``: fraction of trades with positive pnl. ``profit_factor``: sum of winning R over
    the absolute sum of losing R (``inf`` with winners and no losers, 0 with no trades).
    ``max_drawdown_pct``: the largest peak-to-trough fall of the compounding equity curve, in
    percent, the starting equity counting as a peak. ``expectancy_r``: mean R per trade.
    ``sharpe``: per-trade Sharpe ratio annualized by the trade frequency (see ``compute_metrics``).
    ``total_return_pct``: final equity over starting equity, minus one, in percent.
    """

    trades: int
    win_rate: float
    profit_factor: float
    max_drawdown_pct: float
    expectancy_r: float
    sharpe: float
    total_return_pct: float

    def as_dict(self) -> dict[str, int | float | None]:
        """Plain JSON-safe values; an infinite profit factor (no losing trades) becomes ``None``."""
        return {
            key: (value if isinstance(value, int) or math.isfinite(value) else None)
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class BacktestResult:
    """Closed trades (columns ``TRADE_FRAME_COLUMNS``), the equity after each trade indexed by
    its exit time (starting capital 1.0, not itself a point) and the metrics."""

    trades: pd.DataFrame
    equity: pd.Series
    metrics: Metrics


def signals_from_probabilities(
    proba: np.ndarray, min_confidence: float, edge_threshold: float
) -> np.ndarray:
    """Turn class probabilities into directions: +1 long, -1 short, 0 no trade.

    ``proba`` has columns (short, flat, long), the class order -1, 0, 1. The candidate direction
    is whichever of long and short is more probable; it becomes a signal when its probability is at
    least ``min_confidence`` and its *edge*, p(direction) - p(opposite direction), is at least
    ``edge_threshold``. Equal long and short probabilities, or NaN, give 0.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != 3:
        raise ValueError(f"proba must have shape (n, 3) for classes (-1, 0, 1), got {proba.shape}")
    p_short, p_long = proba[:, 0], proba[:, 2]
    direction = np.sign(p_long - p_short)
    p_best = np.maximum(p_long, p_short)
    edge = np.abs(p_long - p_short)
    # NaN probabilities fail both comparisons and stay 0.
    take = (direction != 0) & (p_best >= min_confidence) & (edge >= edge_threshold)
    return np.where(take, direction, 0).astype(np.int8)


def run_backtest(
    bars: pd.DataFrame,
    signals: np.ndarray | pd.Series,
    atr: np.ndarray | pd.Series,
    config: BacktestConfig,
    costs: CostModel,
    *,
    bar_length: pd.Timedelta | None = None,
) -> BacktestResult:
    """Trade ``signals`` (+1 / -1 / 0 per bar of ``bars``) and measure the result.

    A signal on bar ``i`` enters at the open of bar ``i + 1``, take profit and stop
    ``config.tp_atr`` / ``config.sl_atr`` times ``atr[i]`` away, held at most
    ``config.max_holding_bars`` bars. One position at a time: signals while a position is open are
    ignored, and the exit bar's own signal may open the next trade at the following open. Signals
    whose ATR is missing or not positive, or with no next bar to enter on, are skipped. A trade
    still open when the data ends is not counted.

    ``pnl`` is the price move in the trade's favour minus ``costs`` (spread once, commission on
    entry and exit notional); ``r_multiple`` is pnl over the stop distance; ``bars_held`` counts
    the entry and exit bars. ``exit_time`` is the close of the exit bar, when the exit is certain
    (OHLC bars do not say when within the bar it happened). ``bar_length`` defaults to the smallest
    spacing of ``bars.index``. ``signals`` and ``atr`` Series are aligned to ``bars`` by index,
    arrays by position.
    """
    open_, high, low, close = ohlc_arrays(bars)
    signal_values = _signal_values(signals, bars.index)
    atr_values = _aligned(atr, bars.index, "atr")

    decision = np.flatnonzero(signal_values[: max(len(bars) - 1, 0)])
    entry = open_[decision + 1]
    width = atr_values[decision]
    usable = np.isfinite(entry) & np.isfinite(width) & (width > 0)
    decision, entry, width = decision[usable], entry[usable], width[usable]
    direction = signal_values[decision]
    take_profit = entry + direction * config.tp_atr * width
    stop_loss = entry - direction * config.sl_atr * width
    touches = first_touch_many(
        high,
        low,
        close,
        open_,
        decision + 1,
        direction,
        take_profit,
        stop_loss,
        config.max_holding_bars,
    )
    t = _taken(decision, touches)
    trades, r_multiple, exit_time = _trades(
        bars,
        decision[t],
        direction[t],
        (entry[t], stop_loss[t], take_profit[t]),
        touches,
        t,
        costs,
        bar_length,
    )
    equity = pd.Series(
        equity_curve(r_multiple, config.risk_per_trade),
        index=pd.DatetimeIndex(exit_time, name="exit_time"),
        name="equity",
    )
    metrics = compute_metrics(r_multiple, exit_time, config.risk_per_trade)
    return BacktestResult(trades=trades, equity=equity, metrics=metrics)


def _signal_values(signals: np.ndarray | pd.Series, index: pd.DatetimeIndex) -> np.ndarray:
    """``signals`` as integers -1/0/1 per bar (NaN counts as 0); anything else is an error."""
    values = np.nan_to_num(_aligned(signals, index, "signals"))
    if not np.isin(values, (-1, 0, 1)).all():
        raise ValueError("signals must be -1, 0 or 1 (NaN counts as 0)")
    return values.astype(np.int64)


def _taken(decision: np.ndarray, touches: Touches) -> np.ndarray:
    """Positions (in ``decision``) of the signals that are traded, one position at a time."""
    # Every usable signal has its outcome already; the walk only picks which ones are taken:
    # after a trade exits on bar k, the next trade is the first signal on bar k or later.
    next_signal = np.searchsorted(decision, touches.exit_idx, side="left").tolist()
    still_open = (touches.reason == OPEN).tolist()
    taken: list[int] = []
    k = 0
    while k < len(decision) and not still_open[k]:
        taken.append(k)
        k = next_signal[k]
    return np.asarray(taken, dtype=np.int64)


def _trades(
    bars: pd.DataFrame,
    decision: np.ndarray,
    sign: np.ndarray,
    prices: tuple[np.ndarray, np.ndarray, np.ndarray],
    touches: Touches,
    t: np.ndarray,
    costs: CostModel,
    bar_length: pd.Timedelta | None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DatetimeIndex]:
    """The taken trades (signal bars ``decision``, directions ``sign``, entry, stop and take
    profit ``prices``; ``t`` their positions in ``touches``) with costs: the trade frame,
    their R multiples and exit times."""
    entry_price, stop_loss, take_profit = prices
    exit_idx = touches.exit_idx[t]
    exit_price = touches.exit_price[t]
    pnl = sign * (exit_price - entry_price) - costs.round_trip(entry_price, exit_price)
    r_multiple = pnl / np.abs(entry_price - stop_loss)
    exit_time = bars.index[:0]
    if len(t):
        if bar_length is None:
            # Two bars at least exist here: every trade enters on the bar after its signal.
            bar_length = (bars.index[1:] - bars.index[:-1]).min()
        exit_time = bars.index[exit_idx] + bar_length
    trades = pd.DataFrame(
        {
            "entry_time": bars.index[decision + 1],
            "exit_time": exit_time,
            "direction": np.where(sign > 0, "long", "short"),
            "entry_price": entry_price,
            "exit_price": exit_price,
            "stop_loss": stop_loss,
            "take_profit": take_profit,
            "exit_reason": touches.reason_names()[t],
            "pnl": pnl,
            "r_multiple": r_multiple,
            "bars_held": exit_idx - decision,
            "signal_index": decision,
        },
        columns=list(TRADE_FRAME_COLUMNS),
    )
    return trades, r_multiple, exit_time


def equity_curve(r_multiples: np.ndarray, risk_per_trade: float) -> np.ndarray:
    """Equity after each trade, from 1.0, risking ``risk_per_trade`` of equity per 1R:
    ``equity *= 1 + risk_per_trade * R``."""
    return np.cumprod(1.0 + risk_per_trade * np.asarray(r_multiples, dtype=np.float64))


def compute_metrics(
    r_multiples: np.ndarray | pd.Series,
    exit_times: pd.DatetimeIndex | pd.Series | np.ndarray,
    risk_per_trade: float,
) -> Metrics:
    """Metrics of closed trades given their R multiples, in exit order, and their exit times.

    ``sharpe`` is mean(R) / std(R) (sample standard deviation) times sqrt(trades per year), where
    trades per year = trades / (last exit - first exit, in years of 365.25 days). It is 0 when
    undefined: fewer than two trades, no spread of R, or all exits at one time. With no trades every
    metric is 0.
    """
    r = np.asarray(r_multiples, dtype=np.float64)
    count = len(r)
    if count == 0:
        return Metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    gains = float(r[r > 0].sum())
    losses = float(-r[r < 0].sum())
    if losses > 0:
        profit_factor = gains / losses
    else:
        profit_factor = math.inf if gains > 0 else 0.0

    equity = equity_curve(r, risk_per_trade)
    peaks = np.maximum(np.maximum.accumulate(equity), 1.0)
    max_drawdown = float(((peaks - equity) / peaks).max())

    sharpe = 0.0
    times = pd.DatetimeIndex(exit_times)
    span = (times.max() - times.min()) / _YEAR if len(times) else 0.0
    std = float(r.std(ddof=1)) if count > 1 else 0.0
    if count > 1 and std > 0 and span > 0:
        sharpe = float(r.mean() / std * math.sqrt(count / span))

    return Metrics(
        trades=count,
        win_rate=float((r > 0).mean()),
        profit_factor=profit_factor,
        max_drawdown_pct=100.0 * max_drawdown,
        expectancy_r=float(r.mean()),
        sharpe=sharpe,
        total_return_pct=100.0 * float(equity[-1] - 1.0),
    )


def _aligned(values: np.ndarray | pd.Series, index: pd.DatetimeIndex, name: str) -> np.ndarray:
    """A per-bar input as a float array: Series by index, anything else by position."""
    if isinstance(values, pd.Series):
        return values.reindex(index).to_numpy(dtype=np.float64)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (len(index),):
        raise ValueError(f"{name} needs one value per bar ({len(index)}), got shape {array.shape}")
    return array
