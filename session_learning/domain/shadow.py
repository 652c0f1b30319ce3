"""The shadow book: an arena member's virtual trades and its mark-to-market R on every bar.

Every arena member scores every bar as the live scorer would; its signals become virtual trades
by the validation backtest's rules (``backtest.run_backtest``: entry at the next open, brackets in
ATRs, one position at a time, costs) resolved by the shared first-touch rules (``barriers``), so a
shadow trade is the trade the member would have made live. Nothing is resolved here a second time.

What this module adds is the mark to market, the per-bar series the forward evidence pairs. A
position entered at the open of bar ``e`` and closed on bar ``x`` contributes, in R of that
position (its stop distance):

- on bar ``e``: the move from the entry price to the bar's close, minus the entry costs (the
  spread and the entry commission);
- on each bar in between: the close-to-close move;
- on bar ``x``: the move from the previous close to the fill, minus the exit commission.

These increments add up exactly to the trade's ``r_multiple``. A position still open at the last
bar is marked at that bar's close (its entry costs paid, the exit commission not yet). Bars
without a position mark 0, as does FLAT on every bar. A bar's mark depends only on prices up to
its close: extending the bars never changes an earlier mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from session_learning.domain.backtest import BacktestConfig, CostModel, _aligned, run_backtest
from session_learning.domain.barriers import first_touch, ohlc_arrays
from session_learning.domain.evidence import paired_differences


@dataclass(frozen=True)
class OpenPosition:
    """The virtual position still open at the last bar (entered at the open of ``entry_idx``)."""

    signal_index: int
    entry_idx: int
    direction: int
    entry_price: float
    stop_loss: float
    take_profit: float


@dataclass(frozen=True)
class ShadowBook:
    """A member's closed virtual trades (``backtest.TRADE_FRAME_COLUMNS``), the position open at
    the last bar (or None) and ``marks``: mark-to-market R on every bar, indexed by bar open time.
    """

    trades: pd.DataFrame
    open_position: OpenPosition | None
    marks: pd.Series

    def resume_from(self) -> pd.Timestamp | None:
        """The first bar a later book must start from to continue this one exactly.

        The backtest's walk keeps no memory once flat, so a book over the bars from here on gives
        the same trades and marks as this book extended, for every bar after this book's last:
        the signal bar of the open position, or the last bar (its signal may enter at the next
        open). None for an empty book. This keeps a session's book to the session's bars plus
        one open trade, instead of the member's whole history.
        """
        if len(self.marks) == 0:
            return None
        if self.open_position is not None:
            return self.marks.index[self.open_position.signal_index]
        return self.marks.index[-1]

    def session(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Series, pd.DataFrame]:
        """The marks of the bars opening in ``[start, end)`` and the trades whose exit bar does."""
        index = self.marks.index
        inside = (index >= start) & (index < end)
        exit_bar = self.trades["signal_index"].to_numpy() + self.trades["bars_held"].to_numpy()
        exit_open = index[exit_bar] if len(exit_bar) else index[:0]
        closed = (exit_open >= start) & (exit_open < end)
        return self.marks[inside], self.trades[np.asarray(closed)]


def shadow_book(
    bars: pd.DataFrame,
    signals: np.ndarray | pd.Series,
    atr: np.ndarray | pd.Series,
    config: BacktestConfig,
    costs: CostModel,
) -> ShadowBook:
    """The shadow book of one member over ``bars``, from its ``signals`` (+1 / -1 / 0 per bar).

    ``bars`` start where the member's book starts (its entry into the arena): no position is
    carried in. Signals and ATR follow ``run_backtest``'s conventions.
    """
    result = run_backtest(bars, signals, atr, config, costs)
    open_, high, low, close = ohlc_arrays(bars)
    n = len(bars)
    trades = result.trades
    marks = np.zeros(n)

    if len(trades):
        sign = np.where(trades["direction"].to_numpy() == "long", 1.0, -1.0)
        entry_price = trades["entry_price"].to_numpy(dtype=np.float64)
        exit_price = trades["exit_price"].to_numpy(dtype=np.float64)
        risk = np.abs(entry_price - trades["stop_loss"].to_numpy(dtype=np.float64))
        entry_idx = trades["signal_index"].to_numpy() + 1
        exit_idx = trades["signal_index"].to_numpy() + trades["bars_held"].to_numpy()
        entry_cost = costs.spread + costs.commission_rate * entry_price
        exit_cost = costs.commission_rate * exit_price
        _add_marks(
            marks, close, entry_idx, exit_idx, sign, entry_price, exit_price, risk, entry_cost
        )
        np.subtract.at(marks, exit_idx, exit_cost / risk)

    position = _open_position(bars, signals, atr, config, trades, open_, high, low, close)
    if position is not None:
        risk = abs(position.entry_price - position.stop_loss)
        _add_marks(
            marks,
            close,
            np.array([position.entry_idx]),
            np.array([n - 1]),
            np.array([float(position.direction)]),
            np.array([position.entry_price]),
            np.array([close[n - 1]]),
            np.array([risk]),
            np.array([costs.spread + costs.commission_rate * position.entry_price]),
        )
    return ShadowBook(
        trades=trades,
        open_position=position,
        marks=pd.Series(marks, index=bars.index, name="mark_r"),
    )


def flat_marks(index: pd.DatetimeIndex) -> pd.Series:
    """FLAT's marks: 0 R on every bar."""
    return pd.Series(0.0, index=index, name="mark_r")


def pair_marks(
    challenger: pd.Series, baseline: pd.Series | None, bound_r: float
) -> tuple[np.ndarray, int]:
    """Challenger minus baseline marks on the same bars, clipped (``evidence.paired_differences``).

    ``baseline`` None is FLAT. Raises ``ValueError`` when the two do not cover the same bars.
    """
    if baseline is not None and not challenger.index.equals(baseline.index):
        raise ValueError(
            f"challenger marks cover {len(challenger)} bars and the baseline's {len(baseline)} "
            "different ones; both members must be marked on the same session bars"
        )
    return paired_differences(
        challenger.to_numpy(dtype=np.float64),
        None if baseline is None else baseline.to_numpy(dtype=np.float64),
        bound_r,
    )


def _add_marks(
    marks: np.ndarray,
    close: np.ndarray,
    entry_idx: np.ndarray,
    last_idx: np.ndarray,
    sign: np.ndarray,
    entry_price: np.ndarray,
    last_price: np.ndarray,
    risk: np.ndarray,
    entry_cost: np.ndarray,
) -> None:
    """Add the moves of positions held from ``entry_idx`` to ``last_idx`` (their last price
    ``last_price``) to ``marks``, in R, with the entry costs on the entry bar."""
    lengths = last_idx - entry_idx + 1
    owner = np.repeat(np.arange(len(entry_idx)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    bar = entry_idx[owner] + np.arange(lengths.sum()) - starts
    first = bar == entry_idx[owner]
    last = bar == last_idx[owner]
    reference = np.where(first, entry_price[owner], close[np.maximum(bar - 1, 0)])
    price = np.where(last, last_price[owner], close[bar])
    move = sign[owner] * (price - reference) / risk[owner]
    move = move - np.where(first, entry_cost[owner] / risk[owner], 0.0)
    np.add.at(marks, bar, move)


def _open_position(
    bars: pd.DataFrame,
    signals: np.ndarray | pd.Series,
    atr: np.ndarray | pd.Series,
    config: BacktestConfig,
    trades: pd.DataFrame,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
) -> OpenPosition | None:
    """The position the backtest's walk left open at the last bar, if any.

    ``run_backtest`` stops at the first trade the data does not resolve; that trade is the first
    usable signal at or after the last exit bar (the backtest's own rule for the next trade).
    """
    n = len(bars)
    signal_values = np.nan_to_num(_aligned(signals, bars.index, "signals")).astype(np.int64)
    atr_values = _aligned(atr, bars.index, "atr")
    after = 0
    if len(trades):
        after = int(trades["signal_index"].iloc[-1] + trades["bars_held"].iloc[-1])
    for i in range(after, n - 1):
        width = atr_values[i]
        if signal_values[i] == 0 or not (np.isfinite(width) and width > 0):
            continue
        if not np.isfinite(open_[i + 1]):
            continue
        direction = int(signal_values[i])
        entry = float(open_[i + 1])
        position = OpenPosition(
            signal_index=i,
            entry_idx=i + 1,
            direction=direction,
            entry_price=entry,
            stop_loss=entry - direction * config.sl_atr * width,
            take_profit=entry + direction * config.tp_atr * width,
        )
        touch = first_touch(
            high,
            low,
            close,
            open_,
            i + 1,
            direction,
            position.take_profit,
            position.stop_loss,
            config.max_holding_bars,
        )
        if touch.reason != "open":
            raise RuntimeError(
                f"signal at bar {i} resolves ({touch.reason}) but the backtest left it out; "
                "the shadow book and the backtest disagree"
            )
        return position
    return None
