"""vectorbt 1.2 configured to trade exactly like ``session_learning.domain.backtest.run_backtest``.

What has to be configured, and why:

- **Entry at the next open, stops checked on the entry bar.** vectorbt checks stops only from
  the row after the entry row, while ``run_backtest`` enters at the open of bar ``i + 1`` and
  lets bar ``i + 1`` itself hit a barrier. So every bar becomes two rows: an "open tick" row
  (open = high = low = close = the bar's open) followed by the bar itself. A signal on bar ``i``
  enters on bar ``i + 1``'s open-tick row at its close (the bar's open), and stops are first
  checked on the full row of bar ``i + 1``.
- **Barriers in ATRs.** ``sl_stop`` / ``tp_stop`` are fractions of the entry price; they are set
  per entry row to ``sl_atr * atr[i] / entry`` and ``tp_atr * atr[i] / entry``, with
  ``stop_entry_price="fillprice"`` and ``stop_exit_price="stoplimit"`` (fill at the stop).
- **Same-bar priority.** vectorbt tests the stop loss before the take profit, which is
  ``run_backtest``'s "a bar touching both is a stop loss".
- **Time exit.** vectorbt 1.x has no time stop, so a small signal function closes the position
  on the full row of its ``max_holding_bars``-th bar (at that bar's close) when no stop fired.
  It opens a position only when flat, so signals during a trade are ignored, and the row after
  an exit may open the next trade: the exit bar's own signal can trade, as in ``run_backtest``.
- **Costs.** Size 1 unit; ``fixed_fees`` = half the spread per order and ``fees`` = the
  commission rate, so a trade's pnl is ``direction * (exit - entry) - spread -
  commission * (entry + exit)``, ``run_backtest``'s pnl.

Not covered: a bar that *opens* beyond the take profit. vectorbt fills it at the open,
``run_backtest`` at the take-profit price (a gap gain is never credited). The synthetic bars
have no gaps (every bar opens at the previous close), so the benchmark never meets the case;
``matches`` would report it if it did. Gaps through the stop fill at the open in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vectorbt as vbt
from numba import njit

CLOSED = 1  # vectorbt TradeStatus.Closed


@njit(cache=True)
def _signal_func_nb(c, long_entries, short_entries, entry_row, hold_rows):
    """Enter when flat on a flagged row; leave after ``hold_rows`` rows (the time exit)."""
    if c.position_now == 0:
        if long_entries[c.i]:
            entry_row[0] = c.i
            return True, False, False, False
        if short_entries[c.i]:
            entry_row[0] = c.i
            return False, False, True, False
        return False, False, False, False
    if c.i - entry_row[0] >= hold_rows:
        if c.position_now > 0:
            return False, True, False, False
        return False, False, False, True
    return False, False, False, False


def _two_rows_per_bar(at_open: np.ndarray, in_bar: np.ndarray) -> np.ndarray:
    rows = np.empty(2 * len(in_bar))
    rows[0::2] = at_open
    rows[1::2] = in_bar
    return rows


@dataclass(frozen=True)
class Prepared:
    """The two-rows-per-bar inputs of ``Portfolio.from_signals``."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    long_entries: np.ndarray
    short_entries: np.ndarray
    sl_stop: np.ndarray
    tp_stop: np.ndarray
    hold_rows: int
    spread: float
    commission_rate: float


def prepare(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    signals: np.ndarray,
    atr: np.ndarray,
    *,
    tp_atr: float,
    sl_atr: float,
    max_holding_bars: int,
    spread: float,
    commission_rate: float,
) -> Prepared:
    """Map ``run_backtest``'s inputs (per-bar arrays, signals -1/0/+1) onto vectorbt rows."""
    n = len(close)
    decision = np.flatnonzero(signals[: n - 1])
    entry = open_[decision + 1]
    width = atr[decision]
    usable = np.isfinite(entry) & np.isfinite(width) & (width > 0)
    decision, entry, width = decision[usable], entry[usable], width[usable]
    rows = 2 * (decision + 1)  # the open-tick row of the entry bar
    long_entries = np.zeros(2 * n, dtype=bool)
    short_entries = np.zeros(2 * n, dtype=bool)
    long_entries[rows[signals[decision] > 0]] = True
    short_entries[rows[signals[decision] < 0]] = True
    sl_stop = np.full(2 * n, np.nan)
    tp_stop = np.full(2 * n, np.nan)
    sl_stop[rows] = sl_atr * width / entry
    tp_stop[rows] = tp_atr * width / entry
    return Prepared(
        open=_two_rows_per_bar(open_, open_),
        high=_two_rows_per_bar(open_, high),
        low=_two_rows_per_bar(open_, low),
        close=_two_rows_per_bar(open_, close),
        long_entries=long_entries,
        short_entries=short_entries,
        sl_stop=sl_stop,
        tp_stop=tp_stop,
        # Entered on the open-tick row of bar s; the last bar held is s + max - 1, whose full
        # row is 2 * max - 1 rows later.
        hold_rows=2 * max_holding_bars - 1,
        spread=spread,
        commission_rate=commission_rate,
    )


def simulate(p: Prepared):
    """Run ``Portfolio.from_signals`` and return its trade records (a structured array)."""
    portfolio = vbt.Portfolio.from_signals(
        close=p.close,
        open=p.open,
        high=p.high,
        low=p.low,
        signal_func_nb=_signal_func_nb,
        signal_args=(p.long_entries, p.short_entries, np.zeros(1, np.int64), p.hold_rows),
        size=1.0,
        size_type="amount",
        direction="both",
        accumulate=False,
        fees=p.commission_rate,
        fixed_fees=p.spread / 2,
        sl_stop=p.sl_stop,
        tp_stop=p.tp_stop,
        stop_entry_price="fillprice",
        stop_exit_price="stoplimit",
        use_stops=True,
        init_cash=1e12,
    )
    return portfolio.trades.values


def simulate_stops_only(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    long_entries: np.ndarray,
    short_entries: np.ndarray,
    sl_stop: np.ndarray,
    tp_stop: np.ndarray,
    spread: float,
    commission_rate: float,
):
    """vectorbt's cheapest comparable run: one row per bar, plain entry arrays, SL/TP stops and
    no time exit. Its trades differ from ``run_backtest``'s (no time exit, entry bar not
    checked); it is a lower bound on vectorbt's time, not a like-for-like run."""
    portfolio = vbt.Portfolio.from_signals(
        close=close,
        open=open_,
        high=high,
        low=low,
        entries=long_entries,
        short_entries=short_entries,
        price=open_,
        size=1.0,
        size_type="amount",
        accumulate=False,
        fees=commission_rate,
        fixed_fees=spread / 2,
        sl_stop=sl_stop,
        tp_stop=tp_stop,
        stop_entry_price="fillprice",
        stop_exit_price="stoplimit",
        init_cash=1e12,
    )
    return portfolio.trades.values


def closed_trades(records) -> dict[str, np.ndarray]:
    """Closed trades in ``run_backtest``'s terms: bar positions, direction +1/-1, prices, pnl."""
    closed = records[records["status"] == CLOSED]
    return {
        "entry_bar": closed["entry_idx"] // 2,
        "exit_bar": closed["exit_idx"] // 2,
        "direction": np.where(closed["direction"] == 0, 1, -1),
        "entry_price": closed["entry_price"],
        "exit_price": closed["exit_price"],
        "pnl": closed["pnl"],
    }
