"""Demo journal: trades whose outcomes follow from the bars they span.

A stand-in for a live trading system: at seeded random bars it goes long or short on a noisy
momentum rule, with take profit and stop loss in ATRs, and resolves each trade with the same
first-touch rules as the backtest and the signal monitor. Every trade is therefore consistent
with the bars: TP, SL or timeout, P&L net of the spread.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from session_learning.domain.backtest import CostModel
from session_learning.domain.barriers import first_touch, ohlc_arrays
from session_learning.domain.features import atr
from session_learning.domain.keys import ModelKey


def _rng(seed: int, key: ModelKey) -> np.random.Generator:
    digest = hashlib.sha256(f"demo-trades:{seed}:{key.slug}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def simulate_trades(
    bars: pd.DataFrame,
    key: ModelKey,
    start: pd.Timestamp,
    end: pd.Timestamp,
    costs: CostModel,
    *,
    trade_probability: float = 0.3,
    tp_atr: float = 2.0,
    sl_atr: float = 1.0,
    max_bars: int = 24,
    seed: int = 0,
    model_version: str = "demo-rules-v1",
) -> pd.DataFrame:
    """Trades of ``key`` decided on bars in ``[start, end)`` that also exited before ``end``.

    One position at a time. Confidence is drawn between 0.35 and 0.85; a trade's direction
    follows 12-bar momentum, flipped with probability 0.4 (a mediocre live model).
    """
    open_, high, low, close = ohlc_arrays(bars)
    atr_values = atr(bars).to_numpy()
    momentum = np.sign(close - np.roll(close, 12))
    rng = _rng(seed, key)
    index = bars.index
    first, stop = index.searchsorted(start), index.searchsorted(end)
    rows, i = [], max(first, 12)
    while i < stop - 1:
        if rng.random() >= trade_probability or not np.isfinite(atr_values[i]) or momentum[i] == 0:
            i += 1
            continue
        direction = int(momentum[i] if rng.random() >= 0.4 else -momentum[i])
        entry_idx = i + 1
        entry = open_[entry_idx]
        tp = entry + direction * tp_atr * atr_values[i]
        sl = entry - direction * sl_atr * atr_values[i]
        touch = first_touch(high, low, close, open_, entry_idx, direction, tp, sl, max_bars)
        exit_time = index[touch.exit_idx] + key.bar if touch.exit_idx >= 0 else None
        if touch.reason == "open" or exit_time > end:
            break  # still open when the range ends: not a closed trade yet
        pnl = direction * (touch.exit_price - entry) - float(
            costs.round_trip(np.array([entry]), np.array([touch.exit_price]))[0]
        )
        rows.append(
            {
                "trade_id": f"{key.slug}-{index[entry_idx]:%Y%m%dT%H%M}",
                "symbol": key.symbol,
                "timeframe": key.timeframe,
                "direction": "long" if direction > 0 else "short",
                "entry_time": index[entry_idx].isoformat(),
                "entry_price": float(entry),
                "exit_time": exit_time.isoformat(),
                "exit_price": float(touch.exit_price),
                "stop_loss": float(sl),
                "take_profit": float(tp),
                "exit_reason": touch.reason,
                "pnl": float(pnl),
                "confidence": round(float(rng.uniform(0.35, 0.85)), 3),
                "model_version": model_version,
            }
        )
        i = touch.exit_idx + 1
    return pd.DataFrame(rows)


def malformed_examples(valid: pd.DataFrame) -> pd.DataFrame:
    """Rows a real journal collects: a double-written trade, a time without a UTC offset, and a
    trade whose exit price contradicts its take profit. The quality rules quarantine them."""
    if len(valid) < 3:
        return valid.iloc[0:0]
    dup = valid.iloc[[0]].copy()
    naive = valid.iloc[[1]].copy()
    naive["trade_id"] = naive["trade_id"] + "-naive"
    naive["exit_time"] = pd.Timestamp(naive["exit_time"].iloc[0]).tz_localize(None).isoformat()
    wrong = valid.iloc[[2]].copy()
    wrong["trade_id"] = wrong["trade_id"] + "-badprice"
    wrong["exit_reason"] = "take_profit"
    wrong["exit_price"] = wrong["stop_loss"]
    return pd.concat([dup, naive, wrong], ignore_index=True)
