"""Hand-built trades for tests: each one consistent with its direction, stops and P&L."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

_ids = itertools.count(1)


def trade(
    *,
    symbol: str = "EURUSD",
    timeframe: str = "30T",
    direction: str = "long",
    win: bool = True,
    confidence: float = 0.45,
    exit_reason: str | None = None,
    exit_time: str = "2025-01-06T05:30:00+00:00",
    entry_time: str = "2025-01-06T04:30:00+00:00",
    entry_price: float = 1.1000,
    risk: float = 0.0010,
    trade_id: str | None = None,
) -> dict:
    """One closed trade that passes every quality rule: TP at 2R, SL at 1R."""
    sign = 1 if direction == "long" else -1
    tp = entry_price + sign * 2 * risk
    sl = entry_price - sign * risk
    exit_reason = exit_reason or ("take_profit" if win else "stop_loss")
    exit_price = tp if exit_reason == "take_profit" else sl
    if exit_reason in ("timeout", "manual"):
        exit_price = entry_price + sign * (0.3 if win else -0.3) * risk
    return {
        "trade_id": trade_id or f"T{next(_ids):05d}",
        "symbol": symbol,
        "timeframe": timeframe,
        "direction": direction,
        "entry_time": entry_time,
        "entry_price": entry_price,
        "exit_time": exit_time,
        "exit_price": exit_price,
        "stop_loss": sl,
        "take_profit": tp,
        "exit_reason": exit_reason,
        "pnl": round(sign * (exit_price - entry_price), 10),
        "confidence": confidence,
        "model_version": "v-test",
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def many(n_win: int, n_loss: int, **kwargs) -> list[dict]:
    """``n_win`` winners and ``n_loss`` losers sharing ``kwargs``."""
    return [trade(win=True, **kwargs) for _ in range(n_win)] + [
        trade(win=False, **kwargs) for _ in range(n_loss)
    ]


def ohlc_frame(rows, start: str = "2025-01-06 00:00", freq: str = "30min") -> pd.DataFrame:
    """Bars from rows of (open, high, low, close), UTC, unit volume."""
    index = pd.date_range(start, periods=len(rows), freq=freq, tz="UTC")
    out = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index, dtype=float)
    return out.assign(volume=1.0)


def random_ohlc(seed: int, n: int) -> np.ndarray:
    """Consistent (open, high, low, close) rows on a 0.25 grid with occasional gaps, so that
    barriers are hit exactly at times and ties are common."""
    rng = np.random.default_rng(seed)
    close = 400 + np.cumsum(rng.integers(-3, 4, n))
    gaps = rng.integers(-5, 6, n) * (rng.random(n) < 0.2)
    open_ = np.r_[400, close[:-1]] + gaps
    high = np.maximum(open_, close) + rng.integers(0, 4, n)
    low = np.minimum(open_, close) - rng.integers(0, 4, n)
    return np.stack([open_, high, low, close], axis=1) * 0.25


def hour_pattern(model: str, hour: int):
    """A flagged hour-of-day loser pattern of ``model`` (8 of 10 trades lost in that hour)."""
    from session_learning.domain.patterns import LoserPattern

    return LoserPattern(
        model=model,
        dimension="hour_of_day",
        bucket=f"{hour:02d}:00-{hour + 1:02d}:00",
        trades=10,
        winners=2,
        losers=8,
        loss_rate=0.8,
        baseline_loss_rate=0.4,
        p_value=0.01,
        message=f"{model} loses 80% of trades entered {hour:02d}:00-{hour + 1:02d}:00 UTC",
        hours=(hour,),
    )
