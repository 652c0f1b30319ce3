"""Hand-built trades for tests: each one consistent with its direction, stops and P&L."""

from __future__ import annotations

import itertools

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
