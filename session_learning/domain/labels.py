"""Long / Short / Flat labels from take-profit and stop-loss barriers (triple-barrier labelling).

A row is a decision bar ``i``: its features use data up to bar ``i``'s close, so a trade decided
there enters at the open of bar ``i + 1``. Its label looks at bars ``i + 1 .. i + max_bars`` and at
nothing else, which is what ``label_horizon_end`` reports for purging.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from session_learning.domain.barriers import TAKE_PROFIT, first_touch_many, ohlc_arrays


def triple_barrier_labels(
    bars: pd.DataFrame,
    atr: pd.Series,
    tp_atr: float,
    sl_atr: float,
    max_bars: int,
) -> pd.Series:
    """The class each decision bar should have predicted: 1 long, -1 short, 0 flat, NaN unknown.

    For decision bar ``i`` the entry is ``open[i+1]``; a long has take profit
    ``entry + tp_atr * atr[i]`` and stop ``entry - sl_atr * atr[i]``, a short the mirror image.
    Both are resolved with the shared first-touch rules over at most ``max_bars`` bars from the
    entry bar. The label is 1 if the long reaches its take profit, -1 if the short does, and 0
    otherwise (timeouts, or both sides stopped out). With ``tp_atr < sl_atr`` both sides can reach
    their take profit; the earlier one wins and a tie in the same bar is 0 (ambiguous).

    NaN where the horizon ``i+1 .. i+max_bars`` is not complete in ``bars`` (the last ``max_bars``
    rows, even if a barrier was already reached: labelling only the quick outcomes would bias the
    newest rows), where ``atr[i]`` is NaN or negative, or where the entry open is missing. NaN rows
    must never be trained on. ``atr`` is aligned to ``bars`` by index.
    """
    if tp_atr <= 0 or sl_atr <= 0:
        raise ValueError(f"tp_atr and sl_atr must be positive, got {tp_atr} and {sl_atr}")
    if max_bars < 1:
        raise ValueError(f"max_bars must be >= 1, got {max_bars}")
    open_, high, low, close = ohlc_arrays(bars)
    atr_values = atr.reindex(bars.index).to_numpy(dtype=np.float64)
    n = len(bars)
    labels = np.full(n, np.nan)

    decision = np.arange(max(n - max_bars, 0))
    entry = open_[decision + 1]
    width = atr_values[decision]
    usable = np.isfinite(entry) & np.isfinite(width) & (width >= 0)
    decision, entry, width = decision[usable], entry[usable], width[usable]

    def resolve(direction: int):  # the two sides differ only in the sign of the barrier offsets
        return first_touch_many(
            high,
            low,
            close,
            open_,
            decision + 1,
            direction,
            entry + direction * tp_atr * width,
            entry - direction * sl_atr * width,
            max_bars,
        )

    long, short = resolve(1), resolve(-1)
    long_wins = long.reason == TAKE_PROFIT
    short_wins = short.reason == TAKE_PROFIT
    both = long_wins & short_wins
    label = np.zeros(len(decision))
    label[long_wins & ~(both & (short.exit_idx <= long.exit_idx))] = 1.0
    label[short_wins & ~(both & (long.exit_idx <= short.exit_idx))] = -1.0
    labels[decision] = label
    return pd.Series(labels, index=bars.index, name="label")


def label_horizon_end(index: pd.DatetimeIndex, max_bars: int) -> pd.Series:
    """Per decision bar ``i``, the open time of the last bar its label looks at (``i + max_bars``).

    That bar's values are known at this time plus one timeframe. A training row whose horizon end
    reaches into a validation window saw validation prices and must be purged. NaT where the
    horizon runs past the data (those rows have NaN labels).
    """
    if max_bars < 1:
        raise ValueError(f"max_bars must be >= 1, got {max_bars}")
    return pd.Series(index, index=index, name="label_horizon_end").shift(-max_bars)
