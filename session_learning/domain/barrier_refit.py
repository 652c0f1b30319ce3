"""Which TP/SL a struggling model is retrained with: geometries fitted to the training rows'
excursions, each measured by trades entered at random, and judged against what the gates need.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from session_learning.domain.barriers import first_touch_many
from session_learning.domain.gates import GateThresholds

if TYPE_CHECKING:
    from session_learning.domain.training import LearningConfig


@dataclass(frozen=True)
class BarrierTargets:
    """What the gates need of a barrier geometry: the win rate and profit factor a candidate
    must beat, and the trades its validation window must hold."""

    min_win_rate: float = 0.42
    min_profit_factor: float = 1.4
    min_trades: int = 100

    @classmethod
    def from_gates(cls, gates: GateThresholds, timeframe: str) -> BarrierTargets:
        """From a ``GateThresholds`` (the gates the candidate will be judged by)."""
        return cls(
            float(gates.min_win_rate),
            float(gates.min_profit_factor),
            int(gates.min_trades.get(timeframe, 0)),
        )


@dataclass(frozen=True)
class GeometryCheck:
    """A TP/SL geometry measured on training rows by trades entered at random (both directions
    on every row): what a model without skill would get, and what the gates ask on top."""

    tp_atr: float
    sl_atr: float
    chance_win_rate: float  # share of those trades with pnl > 0 (timeouts count by sign)
    payoff: float  # mean win / mean loss, in R
    needed_win_rate: float  # to pass both the win-rate and the profit-factor gate at this payoff
    lift: float  # needed_win_rate - chance_win_rate: the skill the gates demand
    mean_bars_held: float
    max_trades: float  # validation rows / mean bars held: at most this many trades fit
    reachable: bool  # max_trades >= the gates' minimum

    def as_dict(self) -> dict:
        return asdict(self)


def check_geometry(
    bars: pd.DataFrame,
    atr_values: pd.Series,
    rows: np.ndarray,
    tp_atr: float,
    sl_atr: float,
    max_bars: int,
    targets: BarrierTargets,
    validation_rows: int,
) -> GeometryCheck:
    """Measure a geometry on ``rows`` (positions whose horizon lies inside ``bars``).

    Needed win rate at payoff ``b``: profit factor ``w b / (1 - w)`` passes ``min_profit_factor``
    from ``w = PF / (PF + b)`` on, so the gates need ``max(min_win_rate, PF / (PF + b))``. Costs
    are left out (they lower every geometry's chance win rate, tight stops the most).
    """
    open_, high, low, close = (
        bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close")
    )
    a = atr_values.to_numpy(dtype=float)
    rows = rows[(rows + max_bars < len(bars)) & np.isfinite(a[rows]) & (a[rows] > 0)]
    entry, width = open_[rows + 1], a[rows]
    pnl, held = [], []
    for direction in (1, -1):
        touches = first_touch_many(
            high,
            low,
            close,
            open_,
            rows + 1,
            direction,
            entry + direction * tp_atr * width,
            entry - direction * sl_atr * width,
            max_bars,
        )
        pnl.append(direction * (touches.exit_price - entry) / (sl_atr * width))
        held.append(touches.exit_idx - rows)
    r, bars_held = np.concatenate(pnl), np.concatenate(held)
    wins, losses = r[r > 0], r[r < 0]
    chance = float(len(wins) / len(r)) if len(r) else math.nan
    payoff = float(wins.mean() / -losses.mean()) if len(wins) and len(losses) else math.nan
    pf = targets.min_profit_factor
    needed = max(targets.min_win_rate, pf / (pf + payoff)) if payoff > 0 else 1.0
    mean_held = float(bars_held.mean()) if len(bars_held) else math.nan
    max_trades = validation_rows / mean_held if mean_held > 0 else 0.0
    return GeometryCheck(
        tp_atr=float(tp_atr),
        sl_atr=float(sl_atr),
        chance_win_rate=chance,
        payoff=payoff,
        needed_win_rate=float(needed),
        lift=float(needed - chance),
        mean_bars_held=mean_held,
        max_trades=float(max_trades),
        reachable=bool(max_trades >= targets.min_trades),
    )


def judge_barriers(
    bars: pd.DataFrame,
    atr_values: pd.Series,
    rows: np.ndarray,
    config: LearningConfig,
    targets: BarrierTargets,
    validation_rows: int,
) -> dict:
    """The TP/SL a struggling model is retrained with, judged against what the gates need.

    Tried in order, on the training rows (never validation):

    1. the geometry fitted to the median excursions (``fit_barriers``);
    2. its stop with the configured payoff ratio (``tp_atr / sl_atr``): the stop follows the
       volatility, the ratio stays where the gates are reachable;
    3. the configured geometry.

    The first that asks no more win-rate lift over chance than the configured geometry does
    (plus ``config.refit_lift_tolerance``) and whose chance trades are short enough for the
    validation window to hold the gates' minimum number of trades is used; the configured one is
    the fallback. Returns the chosen ``tp_atr``/``sl_atr``, every check and a one-line verdict.
    """
    horizon = config.max_holding_bars

    def check(tp: float, sl: float) -> GeometryCheck:
        return check_geometry(bars, atr_values, rows, tp, sl, horizon, targets, validation_rows)

    configured = check(config.tp_atr, config.sl_atr)
    fitted_tp, fitted_sl = fit_barriers(bars, atr_values, rows, horizon)
    ratio = config.tp_atr / config.sl_atr
    tries = [("fitted", check(fitted_tp, fitted_sl))]
    tries.append(("fitted stop, configured ratio", check(fitted_sl * ratio, fitted_sl)))
    limit = configured.lift + config.refit_lift_tolerance
    verdicts = []
    chosen_name, chosen = "configured", configured
    for name, geometry in tries:
        why = []
        if not geometry.lift <= limit + 1e-12:
            why.append(
                f"needs {100 * geometry.lift:.1f} pts of win rate over chance "
                f"(configured {100 * configured.lift:.1f})"
            )
        if not geometry.reachable:
            why.append(
                f"at most {geometry.max_trades:.0f} validation trades < {targets.min_trades}"
            )
        verdicts.append(
            f"{name} {geometry.tp_atr:.2f}:{geometry.sl_atr:.2f} ATR "
            + ("rejected: " + "; ".join(why) if why else "accepted")
        )
        if not why:
            chosen_name, chosen = name, geometry
            break
    message = (
        f"barrier refit: {'; '.join(verdicts)}; "
        f"using {chosen_name} {chosen.tp_atr:.2f}:{chosen.sl_atr:.2f} ATR"
    )
    return {
        "tp_atr": chosen.tp_atr,
        "sl_atr": chosen.sl_atr,
        "chosen": chosen_name,
        "message": message,
        "checks": {"configured": configured.as_dict(), **{n: g.as_dict() for n, g in tries}},
    }


def fit_barriers(
    bars: pd.DataFrame, atr_values: pd.Series, rows: np.ndarray, max_bars: int
) -> tuple[float, float]:
    """TP/SL multiples fitted to the volatility of ``rows`` (positions with complete horizons).

    The median favourable and adverse excursions over the holding window, in ATRs, clipped to
    sensible ranges: the take profit reaches what the market typically offers, the stop sits
    where it typically reaches against you.
    """
    high = bars["high"].to_numpy()
    low = bars["low"].to_numpy()
    open_ = bars["open"].to_numpy()
    a = atr_values.to_numpy()
    rows = rows[(rows + max_bars < len(bars)) & np.isfinite(a[rows]) & (a[rows] > 0)]
    if len(rows) < 50:
        return 2.0, 1.0
    windows_high = np.lib.stride_tricks.sliding_window_view(high, max_bars)[rows + 1]
    windows_low = np.lib.stride_tricks.sliding_window_view(low, max_bars)[rows + 1]
    entry = open_[rows + 1]
    up = (windows_high.max(axis=1) - entry) / a[rows]
    down = (entry - windows_low.min(axis=1)) / a[rows]
    excursion = np.median(np.maximum(up, down))
    adverse = np.median(np.minimum(up, down))
    return float(np.clip(excursion, 1.0, 4.0)), float(np.clip(adverse, 0.5, 2.0))


@dataclass(frozen=True)
class ChosenBarriers:
    """The TP/SL a training set's labels use, the refit's record (None without one) and the
    notes that explain it."""

    tp_atr: float
    sl_atr: float
    refit: dict | None
    notes: tuple[str, ...]


def choose_barriers(
    bars: pd.DataFrame,
    atr_values: pd.Series,
    training_rows: np.ndarray,
    refit_asked: bool,
    config: LearningConfig,
    targets: BarrierTargets,
    validation_rows: int,
) -> ChosenBarriers:
    """The configured TP/SL, or, when the plan asks for a refit, the refitted one as
    ``config.barrier_refit`` says: ``fitted`` as fitted, ``judged`` by ``judge_barriers``,
    ``off`` the configured one. Measured on ``training_rows`` only."""
    horizon = config.max_holding_bars
    if refit_asked and config.barrier_refit == "fitted":
        tp_atr, sl_atr = fit_barriers(bars, atr_values, training_rows, horizon)
        refit = {"tp_atr": tp_atr, "sl_atr": sl_atr, "chosen": "fitted"}
        refit["message"] = f"barrier refit: fitted {tp_atr:.2f}:{sl_atr:.2f} ATR, used as fitted"
        return ChosenBarriers(tp_atr, sl_atr, refit, (refit["message"],))
    if refit_asked and config.barrier_refit == "off":
        note = "barrier refit: off (barrier_refit = 'off'); configured geometry"
        return ChosenBarriers(config.tp_atr, config.sl_atr, None, (note,))
    if refit_asked:
        refit = judge_barriers(bars, atr_values, training_rows, config, targets, validation_rows)
        return ChosenBarriers(refit["tp_atr"], refit["sl_atr"], refit, (refit["message"],))
    return ChosenBarriers(config.tp_atr, config.sl_atr, None, ())
