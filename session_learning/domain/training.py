"""One model's learning step: weighted training set, leakage-free split, CatBoost fit, evaluation.

Rows are decision bars: features use bars up to the row's close; labels look at the next
``max_holding_bars`` bars. The validation window sits just before the session, with a purge in
front of it (training rows whose label horizon reaches into it) and an embargo behind it (one
label horizon), so the candidate never trains on a row it is validated on, nor on a label that
saw validation prices, while the session's own rows -- where its losers are -- stay in training.

    [ training (rolling) ][purge][ validation ][embargo][ session rows ... up to session end ]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import (
    BacktestConfig,
    BacktestResult,
    CostModel,
    run_backtest,
    signals_from_probabilities,
)
from session_learning.domain.barriers import first_touch_many
from session_learning.domain.estimators import DEFAULT_MODEL_TYPE, Estimator
from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction, atr, build_features
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.labels import triple_barrier_labels
from session_learning.domain.patterns import (
    LoserPattern,
    PatternRules,
    analyze_loser_patterns,
    decision_bar_times,
    held_out_bars,
    pattern_weights,
    trades_outside,
)

CLASSES = (-1, 0, 1)  # short, flat, long: the column order of predict_proba
CLASS_NAMES = {-1: "short", 0: "flat", 1: "long"}

# Validation rows per timeframe: long enough to reach the minimum trade count at a trade every
# ~15 bars (5T 200, 15T 150, 30T 100, 1H 60, 4H 40 trades).
DEFAULT_VALIDATION_BARS = {"5T": 4000, "15T": 3000, "30T": 2000, "1H": 1400, "4H": 900}

DEFAULT_COSTS = {
    "EURUSD": CostModel(spread=0.00008),
    "GBPUSD": CostModel(spread=0.00012),
    "XAUUSD": CostModel(spread=0.25),
}


BARRIER_REFITS = ("judged", "fitted", "off")


class LearningError(ValueError):
    """The data cannot support the learning step (too short, gaps, NaN), with what to do."""


@dataclass(frozen=True)
class LearningConfig:
    """Windows, barriers and CatBoost settings of a learning step."""

    training_bars: int = 6000
    validation_bars: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_VALIDATION_BARS))
    warmup_bars: int = 300  # feature lookbacks (the longest default is 240 bars)
    tp_atr: float = 2.0
    sl_atr: float = 1.0
    max_holding_bars: int = 24
    atr_period: int = 14
    min_confidence: float = 0.45
    # Equity risked per trade for the drawdown gate: 0.5% keeps a run of 8 losses under 4%.
    risk_per_trade: float = 0.005
    iterations: int = 250
    learning_rate: float = 0.08
    random_seed: int = 42
    thread_count: int = 2
    # A session loser decided at most this many bars before the session's first bar moves the
    # validation window back so that its row is trained on (see build_training_set).
    max_loser_age_bars: int = 96
    # How a struggling model's TP/SL is refitted: "judged" (judge_barriers: a fitted geometry
    # is used only when the gates stay as reachable as with the configured one), "fitted" (the
    # median excursions as they come), "off" (the configured geometry).
    barrier_refit: str = "judged"
    # A refitted geometry may ask at most this much more win-rate lift over chance than the
    # configured one.
    refit_lift_tolerance: float = 0.02  # about the sampling error of a chance win rate

    def __post_init__(self) -> None:
        if self.barrier_refit not in BARRIER_REFITS:
            raise ValueError(
                f"barrier_refit must be one of {', '.join(BARRIER_REFITS)}, "
                f"got {self.barrier_refit!r}"
            )

    def validation_for(self, timeframe: str) -> int:
        return int(self.validation_bars.get(timeframe, 2000))

    def history_bars(self, timeframe: str) -> int:
        """Bars to load before the session's end for one learning step."""
        return (
            self.warmup_bars
            + self.training_bars
            + self.validation_for(timeframe)
            + 4 * self.max_holding_bars
            + 200  # the session itself and slack for weekend gaps
        )


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


@dataclass(frozen=True)
class Split:
    """Row positions of a training set: where validation lies and what was purged."""

    validation_start: pd.Timestamp
    validation_end: pd.Timestamp  # exclusive: first row after the validation window
    session_first_row: pd.Timestamp

    def as_dict(self) -> dict:
        return {k: v.isoformat() for k, v in asdict(self).items()}


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


def build_training_set(
    bars: pd.DataFrame,
    key: ModelKey,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    session_trades: pd.DataFrame,
    plan: RetrainPlan,
    config: LearningConfig = LearningConfig(),
    feature_functions: Sequence[FeatureFunction] = DEFAULT_FEATURES,
    *,
    pattern_trades: pd.DataFrame | None = None,
    pattern_rules: PatternRules = PatternRules(),
    targets: BarrierTargets | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Features, labels, weights and split of one model at the end of a session.

    Returns ``(frame, info)``. ``frame`` is indexed by decision bar with the feature columns,
    ``label`` (-1/0/1), ``weight``, ``split`` (train / validation / purged / embargo), and the
    OHLC columns needed to backtest the validation window. ``info`` holds the windows, the
    barriers, the class balance, the boosted rows, every session trade that could not be
    matched to a bar (with the reason), the loser-pattern search and ``plan``: the plan as
    applied (``plan`` plus the patterns found and the barrier verdict).

    The newest block of training rows starts at the session's first decision row, or earlier
    at the decision row of a boosted session loser that entered before the session (at most
    ``config.max_loser_age_bars`` before it): the embargo and validation window sit in front of
    that block, so every loser the plan boosts is trained on and none is validated on.

    Nothing in the weights depends on the held-out bars (purge, validation, embargo) or on a
    trade that touched them: loser patterns are searched in ``pattern_trades`` (journal
    trades, any model) outside that span only, with those bars blanked for the ATR
    percentiles, and the rows after the embargo are labelled with an ATR that starts after it.
    The plan's own ``loser_patterns`` are applied as given. ``targets`` are what the gates need
    (for judging a barrier refit; the default gates when None).
    """
    bar = key.bar
    bars = bars.loc[bars.index + bar <= session_end]  # only bars closed by the session's end
    _require_clean_bars(bars, key)
    n_validation = config.validation_for(key.timeframe)
    horizon = config.max_holding_bars
    atr_values = atr(bars, config.atr_period)
    features = build_features(bars, feature_functions)
    index = bars.index
    session_first = int(index.searchsorted(session_start - bar))

    # The session's losers: find their decision rows first, as they decide where the split is.
    matched, unmatched, positions = [], [], {}
    mine = session_trades.loc[
        (session_trades["symbol"] == key.symbol) & (session_trades["timeframe"] == key.timeframe)
    ]
    for trade in mine.itertuples(index=False):
        boost = plan.trade_boosts.get(str(trade.trade_id))
        if boost is None:
            continue
        row_time = decision_bar_times(pd.DatetimeIndex([trade.entry_time]), bar).iloc[0]
        position = int(index.searchsorted(row_time))
        reason = None
        if position >= len(index) or index[position] != row_time:
            reason = f"no bar at {row_time.isoformat()}"
        elif position < session_first - config.max_loser_age_bars:
            reason = (
                f"decided at {row_time.isoformat()}, {session_first - position} bars before the "
                f"session (more than max_loser_age_bars {config.max_loser_age_bars})"
            )
        if reason:
            unmatched.append({"trade_id": str(trade.trade_id), "reason": reason})
        else:
            positions[str(trade.trade_id)] = (position, row_time, boost)
    newest_first = min([session_first, *(p for p, _, _ in positions.values())])

    val_end = newest_first - horizon  # embargo: one label horizon before the newest rows
    val_start = val_end - n_validation
    train_end = val_start - horizon  # purge: labels of earlier rows end before validation
    train_start = max(config.warmup_bars, train_end - config.training_bars)
    if train_end - train_start < 500:
        raise LearningError(
            f"{key}: only {max(train_end - train_start, 0)} training rows before the validation "
            f"window at {session_end:%Y-%m-%d %H:%M}; load more history (need about "
            f"{config.history_bars(key.timeframe)} bars, have {len(bars)})"
        )
    held_start = index[train_end]
    held_end = index[newest_first] if newest_first < len(index) else session_end

    notes: list[str] = []
    tp_atr, sl_atr = config.tp_atr, config.sl_atr
    refit = None
    if plan.refit_barriers and config.barrier_refit == "fitted":
        tp_atr, sl_atr = fit_barriers(bars, atr_values, np.arange(train_start, train_end), horizon)
        refit = {"tp_atr": tp_atr, "sl_atr": sl_atr, "chosen": "fitted"}
        refit["message"] = f"barrier refit: fitted {tp_atr:.2f}:{sl_atr:.2f} ATR, used as fitted"
        notes.append(refit["message"])
    elif plan.refit_barriers and config.barrier_refit == "off":
        notes.append("barrier refit: off (barrier_refit = 'off'); configured geometry")
    elif plan.refit_barriers:
        refit = judge_barriers(
            bars,
            atr_values,
            np.arange(train_start, train_end),
            config,
            targets or BarrierTargets.from_gates(GateThresholds(), key.timeframe),
            n_validation,
        )
        tp_atr, sl_atr = refit["tp_atr"], refit["sl_atr"]
        notes.append(refit["message"])
    labels = triple_barrier_labels(bars, atr_values, tp_atr, sl_atr, horizon)
    if newest_first < len(index):
        # Rows after the embargo: an ATR that starts after it, so no label (and no class
        # weight) of a training row rests on a validation or embargo bar.
        newest = bars.iloc[newest_first:]
        labels.iloc[newest_first:] = triple_barrier_labels(
            newest, atr(newest, config.atr_period), tp_atr, sl_atr, horizon
        ).to_numpy()

    split = np.full(len(bars), "unused", dtype=object)
    split[train_start:train_end] = "train"
    split[train_end:val_start] = "purged"
    split[val_start:val_end] = "validation"
    split[val_end:newest_first] = "embargo"
    split[newest_first:] = "train"

    weight = np.ones(len(bars))
    frame = features.astype("float32")
    frame["label"] = labels
    frame["split"] = split

    # Boosted rows. A row whose label horizon has not completed by the session's end (or whose
    # ATR has not started) takes the trade's known lesson: not that direction.
    for trade_id, (position, row_time, boost) in positions.items():
        if np.isnan(frame["label"].iat[position]):
            frame.iloc[position, frame.columns.get_loc("label")] = 0.0
        weight[position] = max(weight[position], boost)
        matched.append({"trade_id": trade_id, "row": row_time.isoformat(), "boost": boost})

    patterns = [LoserPattern.from_dict(p) for p in plan.loser_patterns]
    search = None
    pattern_bars = held_out_bars(bars, held_start, held_end)
    if pattern_trades is not None:
        search, found = _search_patterns(
            pattern_trades, pattern_bars, key, held_start, held_end, session_end, pattern_rules
        )
        patterns += found
        notes += [f"loser pattern: {p.message}" for p in found]
    if patterns:
        weight *= pattern_weights(patterns, index, bar, pattern_bars)
    class_weight = {c: plan.class_weights[CLASS_NAMES[c]] for c in CLASSES}
    label_values = frame["label"].to_numpy()
    for c, w in class_weight.items():
        weight[label_values == c] *= w
    frame["weight"] = weight
    for column in ("open", "high", "low", "close"):
        frame[column] = bars[column]
    frame["atr"] = atr_values
    frame = frame.iloc[train_start:]
    frame = frame.loc[~((frame["split"] == "train") & frame["label"].isna())]

    applied = replace(
        plan,
        reasons=plan.reasons + tuple(notes),
        loser_patterns=tuple(p.to_dict() for p in patterns),
    )
    train = frame.loc[frame["split"] == "train", "label"]
    info = {
        "model": key.slug,
        "rows": {s: int((frame["split"] == s).sum()) for s in ("train", "validation")},
        "class_balance": {CLASS_NAMES[c]: int((train == c).sum()) for c in CLASSES},
        "boosted_rows": matched,
        "unmatched_trades": unmatched,
        "barriers": {"tp_atr": tp_atr, "sl_atr": sl_atr, "max_holding_bars": horizon},
        "barrier_refit": refit,
        "split": Split(index[val_start], index[val_end], held_end).as_dict(),
        "held_out": [held_start.isoformat(), held_end.isoformat()],
        "loser_pattern_search": search,
        "training_window": [index[train_start].isoformat(), index[-1].isoformat()],
        "features": [c for c in features.columns],
        "plan": applied.to_dict(),
    }
    return frame, info


def _search_patterns(
    trades: pd.DataFrame,
    bars: pd.DataFrame,
    key: ModelKey,
    held_start: pd.Timestamp,
    held_end: pd.Timestamp,
    session_end: pd.Timestamp,
    rules: PatternRules,
) -> tuple[dict, list[LoserPattern]]:
    """Loser patterns of ``key`` in ``trades`` that never touched ``[held_start, held_end)``:
    those that exited in the ``rules.lookback_days`` before it, and those decided after it (the
    session's), on ``bars`` with that span blanked. Returns what was searched and the patterns
    that select rows."""
    if trades.empty:  # an empty journal may come without columns
        trades = pd.DataFrame(columns=["symbol", "timeframe", "entry_time", "exit_time"])
    mine = trades.loc[(trades["symbol"] == key.symbol) & (trades["timeframe"] == key.timeframe)]
    exits = pd.to_datetime(mine["exit_time"], utc=True)
    mine = mine.loc[
        (exits <= session_end) & (exits >= held_start - pd.Timedelta(days=rules.lookback_days))
    ]
    usable, held = trades_outside(mine, held_start, held_end, key.bar)
    analysis = analyze_loser_patterns(usable, bars, rules)
    found = [p for p in analysis.patterns if p.selects_rows]
    search = {
        "trades_used": len(usable),
        "trades_held_out": len(held),
        "held_out": [held_start.isoformat(), held_end.isoformat()],
        "patterns": [p.to_dict() for p in analysis.patterns],
        "skipped": dict(analysis.skipped),
        "notes": list(analysis.notes),
    }
    return search, found


def _require_clean_bars(bars: pd.DataFrame, key: ModelKey) -> None:
    prices = bars[["open", "high", "low", "close"]]
    if prices.isna().any().any():
        bad = prices.index[prices.isna().any(axis=1)]
        raise LearningError(
            f"{key}: {len(bad)} bar(s) with NaN prices, first at {bad[0].isoformat()}; "
            "repair or re-fetch the market data before learning"
        )
    if not bars.index.is_monotonic_increasing or not bars.index.is_unique:
        raise LearningError(f"{key}: bar times are not strictly increasing")


def catboost_params(plan: RetrainPlan, config: LearningConfig) -> dict:
    """CatBoost parameters of a plan (seeded, quiet, writing no files)."""
    return {
        "loss_function": "MultiClass",
        "iterations": config.iterations,
        "learning_rate": config.learning_rate,
        "depth": plan.depth,
        "l2_leaf_reg": plan.l2_leaf_reg,
        "random_seed": config.random_seed,
        "thread_count": config.thread_count,
        "allow_writing_files": False,
        "verbose": False,
    }


def train_model(
    training_set: pd.DataFrame,
    features: Sequence[str],
    params: dict,
    model_type: type[Estimator] = DEFAULT_MODEL_TYPE,
) -> Estimator:
    """Fit a ``model_type`` (CatBoost) with ``params`` on the ``train`` rows with their
    weights; the class order is short/flat/long."""
    rows = training_set.loc[training_set["split"] == "train"]
    labels = rows["label"].astype(int)
    missing = [c for c in CLASSES if c not in set(labels)]
    if missing:
        raise LearningError(
            f"training rows lack class(es) {[CLASS_NAMES[c] for c in missing]}; "
            "widen the training window or change the barriers"
        )
    model = model_type.create(params, CLASSES)
    return model.fit(rows[list(features)], labels, sample_weight=rows["weight"].to_numpy())


@dataclass(frozen=True)
class TradingRule:
    """How a model's probabilities become trades (stored in its card)."""

    tp_atr: float
    sl_atr: float
    max_holding_bars: int
    min_confidence: float
    edge_threshold: float
    risk_per_trade: float = 0.01

    def backtest_config(self) -> BacktestConfig:
        return BacktestConfig(**asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> TradingRule:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def evaluate(
    model: Estimator,
    features: Sequence[str],
    training_set: pd.DataFrame,
    rule: TradingRule,
    costs: CostModel,
    bar: pd.Timedelta,
) -> BacktestResult:
    """Backtest ``model`` on the validation window of ``training_set`` with costs.

    Signals come only from validation rows; the bars after the window (the embargo) let the
    last trades run to their exits.
    """
    split = training_set["split"]
    first = int(np.flatnonzero(split.to_numpy() == "validation")[0])
    last = int(np.flatnonzero(split.to_numpy() == "validation")[-1])
    stop = min(len(training_set), last + 1 + rule.max_holding_bars + 1)
    window = training_set.iloc[first:stop]
    missing = [f for f in features if f not in window.columns]
    if missing:
        raise LearningError(f"the model needs features this training set lacks: {missing}")
    proba = model.predict_proba(window[list(features)])
    signals = signals_from_probabilities(proba, rule.min_confidence, rule.edge_threshold)
    signals[(window["split"] != "validation").to_numpy()] = 0
    return run_backtest(
        window[["open", "high", "low", "close"]],
        signals,
        window["atr"],
        rule.backtest_config(),
        costs,
        bar_length=bar,
    )


def validation_window(
    training_set: pd.DataFrame, bar: pd.Timedelta
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Start and (exclusive) end of the validation window in time."""
    rows = training_set.index[training_set["split"] == "validation"]
    return rows[0], rows[-1] + bar


def rule_for(plan: RetrainPlan, info: dict, config: LearningConfig) -> TradingRule:
    """The trading rule of a candidate trained under ``plan``."""
    barriers = info["barriers"]
    return TradingRule(
        tp_atr=barriers["tp_atr"],
        sl_atr=barriers["sl_atr"],
        max_holding_bars=barriers["max_holding_bars"],
        min_confidence=config.min_confidence,
        edge_threshold=plan.edge_threshold,
        risk_per_trade=config.risk_per_trade,
    )


def effective_plan(
    plan: RetrainPlan, has_production: bool, force_retrain: bool = False
) -> RetrainPlan | None:
    """The plan a model is trained under this session, or None when it is left alone.

    A model without a production model is always trained (initial training); a forced full
    retrain (the weekly refresh) trains a model the session's plan left alone.
    """
    if plan.retrain and has_production:
        return plan
    if not has_production:
        reasons = ("no production model yet: initial training", *plan.reasons)
    elif force_retrain:
        reasons = ("full retrain (weekly refresh)",)
    else:
        return None
    return RetrainPlan(**{**plan.to_dict(), "retrain": True, "reasons": reasons})


@dataclass(frozen=True)
class Candidate:
    """A trained candidate and its result on the validation window."""

    model: Estimator
    params: dict
    rule: TradingRule
    features: tuple[str, ...]
    result: BacktestResult
    window: tuple[pd.Timestamp, pd.Timestamp]

    def card(self, info: dict, session: str, parent_version: str | None) -> dict:
        """The JSON card stored beside the model (before validation metrics are added)."""
        return {
            "session": session,
            "training_window": info["training_window"],
            "validation_window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "features": list(self.features),
            "feature_functions": list(info.get("feature_functions", [])),
            "params": self.params,
            "plan": info["plan"],
            "trading_rule": asdict(self.rule),
            "parent_version": parent_version,
        }


def train_candidate(
    training_set: pd.DataFrame,
    info: dict,
    config: LearningConfig,
    costs: CostModel,
    bar: pd.Timedelta,
) -> Candidate:
    """Train under the plan recorded in ``info`` and backtest on the validation window."""
    plan = RetrainPlan.from_dict(info["plan"])
    params = catboost_params(plan, config)
    model = train_model(training_set, info["features"], params)
    rule = rule_for(plan, info, config)
    result = evaluate(model, info["features"], training_set, rule, costs, bar)
    return Candidate(
        model, params, rule, tuple(info["features"]), result, validation_window(training_set, bar)
    )


def evaluate_production(
    production: tuple[Estimator, dict] | None,
    training_set: pd.DataFrame,
    costs: CostModel,
    bar: pd.Timedelta,
) -> BacktestResult | None:
    """The production model on the candidate's validation window, trading by its own rule."""
    if production is None:
        return None
    model, card = production
    return evaluate(
        model,
        card["features"],
        training_set,
        TradingRule.from_dict(card["trading_rule"]),
        costs,
        bar,
    )


def validation_predictions(
    model: Estimator, features: Sequence[str], training_set: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (short, flat, long) and labels of the validation rows whose label
    is known, for calibration plots."""
    rows = training_set.loc[(training_set["split"] == "validation") & training_set["label"].notna()]
    return model.predict_proba(rows[list(features)]), rows["label"].to_numpy()
