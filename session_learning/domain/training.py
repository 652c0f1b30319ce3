"""One model's weighted training set and its leakage-free split (the fit and the validation
backtest are in ``fitting.py``, a struggling model's barrier refit in ``barrier_refit.py``).

Rows are decision bars: features use bars up to the row's close; labels look at the next
``max_holding_bars`` bars. The validation window sits just before the session, with a purge in
front of it (training rows whose label horizon reaches into it) and an embargo behind it (one
label horizon), so the candidate never trains on a row it is validated on, nor on a label that
saw validation prices, while the session's own rows -- where its losers are -- stay in training.

    [ training (rolling) ][purge][ validation ][embargo][ session rows ... up to session end ]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import BacktestConfig, CostModel
from session_learning.domain.barrier_refit import BarrierTargets, ChosenBarriers, choose_barriers
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
class Split:
    """Row positions of a training set: where validation lies and what was purged."""

    validation_start: pd.Timestamp
    validation_end: pd.Timestamp  # exclusive: first row after the validation window
    session_first_row: pd.Timestamp

    def as_dict(self) -> dict:
        return {k: v.isoformat() for k, v in asdict(self).items()}


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
    atr_values = atr(bars, config.atr_period)
    features = build_features(bars, feature_functions)
    index = bars.index
    session_first = int(index.searchsorted(session_start - bar))
    # The session's losers: find their decision rows first, as they decide where the split is.
    positions, unmatched = _boosted_positions(
        session_trades, key, index, session_first, plan, config
    )
    newest_first = min([session_first, *(p for p, _, _ in positions.values())])
    windows = _windows(key, newest_first, len(bars), session_end, config)
    held_start = index[windows.train_end]
    held_end = index[newest_first] if newest_first < len(index) else session_end
    barriers = choose_barriers(
        bars,
        atr_values,
        np.arange(windows.train_start, windows.train_end),
        plan.refit_barriers,
        config,
        targets or BarrierTargets.from_gates(GateThresholds(), key.timeframe),
        config.validation_for(key.timeframe),
    )
    frame = features.astype("float32")
    frame["label"] = _labels(bars, atr_values, barriers, newest_first, config)
    frame["split"] = _split_column(len(bars), windows)
    weight, matched = _boost_rows(frame, positions)
    patterns, pattern_bars, search, pattern_notes = _loser_patterns(
        plan, bars, key, (held_start, held_end), session_end, pattern_trades, pattern_rules
    )
    if patterns:
        weight *= pattern_weights(patterns, index, bar, pattern_bars)
    _apply_class_weights(weight, frame["label"].to_numpy(), plan)
    frame = _finish(frame, weight, bars, atr_values, windows.train_start)
    applied = replace(
        plan,
        reasons=plan.reasons + tuple(barriers.notes) + tuple(pattern_notes),
        loser_patterns=tuple(p.to_dict() for p in patterns),
    )
    info = _info(key, frame, index, windows, (held_start, held_end), barriers, config)
    info |= {"loser_pattern_search": search, "features": list(features.columns)}
    info |= {"boosted_rows": matched, "unmatched_trades": unmatched, "plan": applied.to_dict()}
    return frame, info


@dataclass(frozen=True)
class _Windows:
    """Row positions of the split: training ``[train_start, train_end)``, the purge, validation
    ``[val_start, val_end)``, the embargo, and the newest training rows from ``newest_first``."""

    train_start: int
    train_end: int
    val_start: int
    val_end: int
    newest_first: int


def _boosted_positions(
    session_trades: pd.DataFrame,
    key: ModelKey,
    index: pd.DatetimeIndex,
    session_first: int,
    plan: RetrainPlan,
    config: LearningConfig,
) -> tuple[dict[str, tuple[int, pd.Timestamp, float]], list[dict]]:
    """The decision rows of the session trades the plan boosts, by trade id (position, time,
    boost), and the boosted trades with no usable row, each with the reason."""
    bar = key.bar
    unmatched, positions = [], {}
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
    return positions, unmatched


def _windows(
    key: ModelKey,
    newest_first: int,
    n_bars: int,
    session_end: pd.Timestamp,
    config: LearningConfig,
) -> _Windows:
    """The split in front of the newest training rows; a ``LearningError`` when fewer than 500
    training rows are left before it."""
    horizon = config.max_holding_bars
    val_end = newest_first - horizon  # embargo: one label horizon before the newest rows
    val_start = val_end - config.validation_for(key.timeframe)
    train_end = val_start - horizon  # purge: labels of earlier rows end before validation
    train_start = max(config.warmup_bars, train_end - config.training_bars)
    if train_end - train_start < 500:
        raise LearningError(
            f"{key}: only {max(train_end - train_start, 0)} training rows before the validation "
            f"window at {session_end:%Y-%m-%d %H:%M}; load more history (need about "
            f"{config.history_bars(key.timeframe)} bars, have {n_bars})"
        )
    return _Windows(train_start, train_end, val_start, val_end, newest_first)


def _labels(
    bars: pd.DataFrame,
    atr_values: pd.Series,
    barriers: ChosenBarriers,
    newest_first: int,
    config: LearningConfig,
) -> pd.Series:
    """Triple-barrier labels of every row."""
    tp_atr, sl_atr, horizon = barriers.tp_atr, barriers.sl_atr, config.max_holding_bars
    labels = triple_barrier_labels(bars, atr_values, tp_atr, sl_atr, horizon)
    if newest_first < len(bars.index):
        # Rows after the embargo: an ATR that starts after it, so no label (and no class
        # weight) of a training row rests on a validation or embargo bar.
        newest = bars.iloc[newest_first:]
        labels.iloc[newest_first:] = triple_barrier_labels(
            newest, atr(newest, config.atr_period), tp_atr, sl_atr, horizon
        ).to_numpy()
    return labels


def _split_column(n_rows: int, windows: _Windows) -> np.ndarray:
    """Each row's part: train, purged, validation, embargo, or unused (warm-up, too old)."""
    split = np.full(n_rows, "unused", dtype=object)
    split[windows.train_start : windows.train_end] = "train"
    split[windows.train_end : windows.val_start] = "purged"
    split[windows.val_start : windows.val_end] = "validation"
    split[windows.val_end : windows.newest_first] = "embargo"
    split[windows.newest_first :] = "train"
    return split


def _boost_rows(
    frame: pd.DataFrame, positions: dict[str, tuple[int, pd.Timestamp, float]]
) -> tuple[np.ndarray, list[dict]]:
    """Row weights (1, the boosted losers' rows raised to their boost) and the boosted rows. A
    boosted row whose label horizon has not completed by the session's end (or whose ATR has not
    started) takes the trade's known lesson in ``frame``: not that direction."""
    weight = np.ones(len(frame))
    matched = []
    for trade_id, (position, row_time, boost) in positions.items():
        if np.isnan(frame["label"].iat[position]):
            frame.iloc[position, frame.columns.get_loc("label")] = 0.0
        weight[position] = max(weight[position], boost)
        matched.append({"trade_id": trade_id, "row": row_time.isoformat(), "boost": boost})
    return weight, matched


def _loser_patterns(
    plan: RetrainPlan,
    bars: pd.DataFrame,
    key: ModelKey,
    held_out: tuple[pd.Timestamp, pd.Timestamp],
    session_end: pd.Timestamp,
    pattern_trades: pd.DataFrame | None,
    rules: PatternRules,
) -> tuple[list[LoserPattern], pd.DataFrame, dict | None, list[str]]:
    """The plan's loser patterns and those found in ``pattern_trades`` outside the held-out
    span; also the bars with that span blanked, the search's record and its notes."""
    held_start, held_end = held_out
    patterns = [LoserPattern.from_dict(p) for p in plan.loser_patterns]
    pattern_bars = held_out_bars(bars, held_start, held_end)
    if pattern_trades is None:
        return patterns, pattern_bars, None, []
    search, found = _search_patterns(
        pattern_trades, pattern_bars, key, held_start, held_end, session_end, rules
    )
    notes = [f"loser pattern: {p.message}" for p in found]
    return patterns + found, pattern_bars, search, notes


def _apply_class_weights(weight: np.ndarray, labels: np.ndarray, plan: RetrainPlan) -> None:
    """Multiply each row's weight (in place) by its class's weight in the plan."""
    class_weight = {c: plan.class_weights[CLASS_NAMES[c]] for c in CLASSES}
    for c, w in class_weight.items():
        weight[labels == c] *= w


def _finish(
    frame: pd.DataFrame,
    weight: np.ndarray,
    bars: pd.DataFrame,
    atr_values: pd.Series,
    first_row: int,
) -> pd.DataFrame:
    """The training set's rows from ``first_row`` with their weights, prices and ATR (to
    backtest the validation window), without the training rows that have no label."""
    frame["weight"] = weight
    for column in ("open", "high", "low", "close"):
        frame[column] = bars[column]
    frame["atr"] = atr_values
    frame = frame.iloc[first_row:]
    return frame.loc[~((frame["split"] == "train") & frame["label"].isna())]


def _info(
    key: ModelKey,
    frame: pd.DataFrame,
    index: pd.DatetimeIndex,
    windows: _Windows,
    held_out: tuple[pd.Timestamp, pd.Timestamp],
    barriers: ChosenBarriers,
    config: LearningConfig,
) -> dict:
    """The record of a training set, its keys in the order it is stored; ``build_training_set``
    fills in the rows it boosted, the loser-pattern search, the features and the plan as
    applied (the ``None`` values here)."""
    held_start, held_end = held_out
    train = frame.loc[frame["split"] == "train", "label"]
    return {
        "model": key.slug,
        "rows": {s: int((frame["split"] == s).sum()) for s in ("train", "validation")},
        "class_balance": {CLASS_NAMES[c]: int((train == c).sum()) for c in CLASSES},
        "boosted_rows": None,
        "unmatched_trades": None,
        "barriers": {
            "tp_atr": barriers.tp_atr,
            "sl_atr": barriers.sl_atr,
            "max_holding_bars": config.max_holding_bars,
        },
        "barrier_refit": barriers.refit,
        "split": Split(index[windows.val_start], index[windows.val_end], held_end).as_dict(),
        "held_out": [held_start.isoformat(), held_end.isoformat()],
        "loser_pattern_search": None,
        "training_window": [index[windows.train_start].isoformat(), index[-1].isoformat()],
        "features": None,
        "plan": None,
    }


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
