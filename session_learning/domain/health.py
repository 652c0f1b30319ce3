"""Production health: is the live model still as good as the gates it passed?

A production model whose recent live trades fall below the gates is *degraded*. Judging needs
enough trades: with fewer than ``min_trades`` live trades of the current version the verdict is
``ok`` with the note that there is not enough evidence yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from session_learning.domain.backtest import compute_metrics
from session_learning.domain.gates import GateThresholds


@dataclass(frozen=True)
class HealthRule:
    """How many recent live trades are judged, and against which gates."""

    min_trades: int = 30
    lookback_trades: int = 60
    gates: GateThresholds = GateThresholds()
    risk_per_trade: float = 0.005


@dataclass(frozen=True)
class HealthVerdict:
    status: str  # ok | degraded
    reason: str
    trades: int
    profit_factor: float | None = None
    win_rate: float | None = None
    max_drawdown_pct: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def assess_health(live_trades: pd.DataFrame, rule: HealthRule = HealthRule()) -> HealthVerdict:
    """Judge the newest ``lookback_trades`` valid live trades of one production version.

    R multiples come from each trade's own stop distance, so the profit factor and drawdown are
    measured like the validation backtest's.
    """
    trades = live_trades.sort_values("exit_time", kind="stable").tail(rule.lookback_trades)
    n = len(trades)
    if n < rule.min_trades:
        return HealthVerdict(
            "ok", f"{n} live trades: not enough to judge (needs {rule.min_trades})", n
        )
    risk = (trades["entry_price"] - trades["stop_loss"]).abs().to_numpy(dtype=float)
    r = trades["pnl"].to_numpy(dtype=float) / np.where(risk > 0, risk, np.nan)
    r = np.nan_to_num(r)
    m = compute_metrics(
        r, pd.DatetimeIndex(pd.to_datetime(trades["exit_time"], utc=True)), rule.risk_per_trade
    )
    g = rule.gates
    failures = []
    if m.profit_factor <= g.min_profit_factor:
        failures.append(f"profit factor {m.profit_factor:.2f} <= {g.min_profit_factor}")
    if m.win_rate <= g.min_win_rate:
        failures.append(f"win rate {100 * m.win_rate:.1f}% <= {100 * g.min_win_rate:.0f}%")
    if m.max_drawdown_pct >= g.max_drawdown_pct:
        failures.append(f"max drawdown {m.max_drawdown_pct:.2f}% >= {g.max_drawdown_pct}%")
    status = "degraded" if failures else "ok"
    reason = (
        f"last {n} live trades below the gates: " + ", ".join(failures)
        if failures
        else f"last {n} live trades within the gates"
    )
    pf = m.profit_factor if np.isfinite(m.profit_factor) else None
    return HealthVerdict(status, reason, n, pf, m.win_rate, m.max_drawdown_pct)
