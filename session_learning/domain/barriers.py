"""First touch of take-profit, stop-loss and time barriers on OHLC bars.

This is the one place that decides how a position opened at a bar's open is resolved. The labels,
the validation backtest, the demo trade generator and the live signal monitor all call it, so a
trade is resolved the same way everywhere.

Rules, for a position entered at the open of bar ``start`` and held for at most ``max_bars`` bars
(bars ``start .. start + max_bars - 1``; the entry bar counts because the position exists from its
open):

- The first bar whose range reaches a barrier ends the trade.
- A bar that reaches both barriers is a stop loss. OHLC bars do not say which price came first, so
  the costly outcome is assumed; the one exception is a bar that *opens* beyond a barrier, because
  the open is known to be the bar's first price.
- A bar that opens beyond the stop (a gap) fills at its open, which is worse than the stop.
- A bar that opens beyond the take profit fills at the take-profit price: a gap gain is never
  credited.
- Without a touch, the trade times out at the close of the last bar of the holding window.
- If the data ends before the window completes and no barrier was reached, the trade is still
  ``"open"`` (unresolved), with ``exit_idx == -1``.

Bars are assumed internally consistent (``low <= open, close <= high``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from session_learning.domain.keys import BAR_COLUMNS

ExitReason = Literal["take_profit", "stop_loss", "timeout", "open"]

# Integer codes of the vectorized routine; ``REASONS[code]`` is the reason's name.
OPEN, TAKE_PROFIT, STOP_LOSS, TIMEOUT = 0, 1, 2, 3
REASONS: tuple[ExitReason, ...] = ("open", "take_profit", "stop_loss", "timeout")

# Upper bound on window cells materialized at once by ``first_touch_many`` (about 16 MB per
# float array), so a long history with a long holding window does not allocate gigabytes.
_CHUNK_CELLS = 1 << 21


@dataclass(frozen=True)
class Touch:
    """How one position ended: the bar it exited in, the fill price and why.

    ``exit_idx`` is a row position in the bar arrays (``-1`` and ``exit_price`` NaN while the trade
    is ``"open"``).
    """

    exit_idx: int
    exit_price: float
    reason: ExitReason


@dataclass(frozen=True)
class Touches:
    """``first_touch`` for many positions at once: one element per start, in the input order.

    ``reason`` holds integer codes; ``REASONS[code]`` (or ``reason_names()``) gives the names.
    """

    exit_idx: np.ndarray
    exit_price: np.ndarray
    reason: np.ndarray

    def reason_names(self) -> np.ndarray:
        """The exit reasons as strings (an object array)."""
        return np.asarray(REASONS, dtype=object)[self.reason]

    def __len__(self) -> int:
        return len(self.exit_idx)


def ohlc_arrays(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(open, high, low, close)`` of ``bars`` as float arrays, after checking the bar contract.

    Raises ``ValueError`` when a price column is missing or the index is not a strictly increasing
    ``DatetimeIndex``.
    """
    missing = [col for col in BAR_COLUMNS[:4] if col not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}; expected {list(BAR_COLUMNS)}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError("bars must be indexed by bar open time (a DatetimeIndex)")
    if not bars.index.is_monotonic_increasing or not bars.index.is_unique:
        raise ValueError("bar open times must be strictly increasing")
    return tuple(bars[col].to_numpy(dtype=np.float64) for col in ("open", "high", "low", "close"))


def first_touch(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    open_: np.ndarray,
    start_idx: int,
    direction: int,
    tp_price: float,
    sl_price: float,
    max_bars: int,
) -> Touch:
    """Resolve one position entered at the open of bar ``start_idx``.

    Scans bars ``start_idx .. start_idx + max_bars - 1`` for the first touch of ``tp_price`` or
    ``sl_price`` (``direction`` +1 long, -1 short). A bar touching both is a stop loss; a bar
    opening beyond the stop fills at its open, one opening beyond the take profit fills at the
    take-profit price. Without a touch the trade times out at the close of the window's last bar,
    or is ``"open"`` (``exit_idx == -1``) when the data ends before the window does.
    """
    _check_direction(direction)
    _check_max_bars(max_bars)
    if np.isnan(tp_price) or np.isnan(sl_price):
        raise ValueError("take-profit and stop-loss prices must not be NaN")
    if start_idx < 0:
        raise ValueError(f"start_idx must be >= 0, got {start_idx}")
    open_, high, low, close = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close))
    n = len(close)
    stop = start_idx + max_bars
    if start_idx < n:
        offset, code, price = _resolve(
            open_,
            high[None, start_idx:stop],
            low[None, start_idx:stop],
            np.array([start_idx]),
            direction > 0,
            np.array([tp_price], dtype=np.float64),
            np.array([sl_price], dtype=np.float64),
        )
        if code[0] != OPEN:
            return Touch(start_idx + int(offset[0]), float(price[0]), REASONS[code[0]])
    if stop <= n:
        return Touch(stop - 1, float(close[stop - 1]), "timeout")
    return Touch(-1, float("nan"), "open")


def first_touch_many(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    open_: np.ndarray,
    starts: np.ndarray,
    direction: int | np.ndarray,
    tp_price: np.ndarray,
    sl_price: np.ndarray,
    max_bars: int,
) -> Touches:
    """``first_touch`` for many positions, vectorized over their holding windows.

    Element ``k`` is the position entered at the open of bar ``starts[k]`` with barriers
    ``tp_price[k]`` / ``sl_price[k]`` and direction ``direction`` (a scalar or one per start).
    Gives exactly what ``first_touch`` gives for each start, with the same rules.
    """
    _check_max_bars(max_bars)
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    starts = np.asarray(starts, dtype=np.int64)
    m = len(starts)
    direction = np.broadcast_to(np.asarray(direction), (m,))
    tp_price = np.asarray(tp_price, dtype=np.float64)
    sl_price = np.asarray(sl_price, dtype=np.float64)
    if tp_price.shape != (m,) or sl_price.shape != (m,):
        raise ValueError("tp_price and sl_price need one value per start")
    if m and (starts.min() < 0 or starts.max() > n):
        raise ValueError(f"starts must lie in [0, {n}]")
    if np.isnan(tp_price).any() or np.isnan(sl_price).any():
        raise ValueError("take-profit and stop-loss prices must not be NaN")
    if m and not np.isin(direction, (-1, 1)).all():
        raise ValueError("direction must be +1 (long) or -1 (short)")

    # NaN padding past the data: comparisons with NaN are False, so padded cells never touch and
    # every start (up to ``n``) gets a full-width window.
    open_, high, low = (
        np.concatenate([np.asarray(a, dtype=np.float64), np.full(max_bars, np.nan)])
        for a in (open_, high, low)
    )
    high_windows = sliding_window_view(high, max_bars)
    low_windows = sliding_window_view(low, max_bars)
    exit_idx = np.full(m, -1, dtype=np.int64)
    exit_price = np.full(m, np.nan)
    reason = np.full(m, OPEN, dtype=np.int8)
    step = max(1, _CHUNK_CELLS // max_bars)
    # Longs and shorts apart, so each compares only the two price series its barriers need.
    for sign in (1, -1):
        group = np.flatnonzero(direction == sign)
        for lo in range(0, len(group), step):
            rows = group[lo : lo + step]
            s = starts[rows]
            offset, code, price = _resolve(
                open_, high_windows[s], low_windows[s], s, sign > 0, tp_price[rows], sl_price[rows]
            )
            exit_idx[rows] = np.where(code != OPEN, s + offset, -1)
            exit_price[rows] = price
            reason[rows] = code

    last = starts + max_bars - 1
    timed_out = (reason == OPEN) & (last < n)
    exit_idx[timed_out] = last[timed_out]
    exit_price[timed_out] = close[last[timed_out]]
    reason[timed_out] = TIMEOUT
    return Touches(exit_idx=exit_idx, exit_price=exit_price, reason=reason)


def _resolve(
    open_: np.ndarray,
    high_w: np.ndarray,
    low_w: np.ndarray,
    starts: np.ndarray,
    is_long: bool,
    tp: np.ndarray,
    sl: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The barrier rules on ``(m, width)`` windows of positions entered at ``starts``.

    Returns the first-touch offset into each window, the reason code and the fill price. Rows
    without a touch get code ``OPEN`` and a NaN price; timeouts are for the callers to decide.
    """
    if is_long:
        stop_hit, take_hit = low_w <= sl[:, None], high_w >= tp[:, None]
    else:
        stop_hit, take_hit = high_w >= sl[:, None], low_w <= tp[:, None]
    hit = stop_hit | take_hit
    offset = hit.argmax(axis=1)
    rows = np.arange(len(tp))
    touched = hit[rows, offset]
    bar_open = open_[starts + offset]
    if is_long:
        gap_stop, gap_take = bar_open <= sl, bar_open >= tp
    else:
        gap_stop, gap_take = bar_open >= sl, bar_open <= tp
    # The open is the one price whose order within the bar is known: a gap decides the bar.
    # Otherwise a bar reaching the stop is a stop, even if it also reached the take profit.
    is_stop = gap_stop | (stop_hit[rows, offset] & ~gap_take)
    price = np.where(gap_stop, bar_open, np.where(is_stop, sl, tp))
    code = np.where(touched, np.where(is_stop, STOP_LOSS, TAKE_PROFIT), OPEN).astype(np.int8)
    return offset, code, np.where(touched, price, np.nan)


def _check_direction(direction: int) -> None:
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 (long) or -1 (short), got {direction!r}")


def _check_max_bars(max_bars: int) -> None:
    if max_bars < 1:
        raise ValueError(f"max_bars must be >= 1, got {max_bars}")
