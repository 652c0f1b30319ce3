"""One model's learning step: weighted training set, leakage-free split, CatBoost fit, evaluation.

Rows are decision bars: features use bars up to the row's close; labels look at the next
``max_holding_bars`` bars. The validation window sits just before the session, with a purge in
front of it (training rows whose label horizon reaches into it) and an embargo behind it (one
label horizon), so the candidate never trains on a row it is validated on, nor on a label that
saw validation prices, while the session's own rows -- where its losers are -- stay in training.

    [ training (rolling) ][purge][ validation ][embargo][ session rows ... up to session end ]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import (
    BacktestConfig,
    BacktestResult,
    CostModel,
    run_backtest,
    signals_from_probabilities,
)
from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction, atr, build_features
from session_learning.domain.labels import triple_barrier_labels
from session_learning.domain.models import ModelKey
from session_learning.domain.patterns import LoserPattern, decision_bar_times, pattern_weights

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
) -> tuple[pd.DataFrame, dict]:
    """Features, labels, weights and split of one model at the end of a session.

    Returns ``(frame, info)``. ``frame`` is indexed by decision bar with the feature columns,
    ``label`` (-1/0/1), ``weight``, ``split`` (train / validation / purged / embargo), and the
    OHLC columns needed to backtest the validation window. ``info`` holds the windows, the
    barriers, the class balance, the boosted rows and every session trade that could not be
    matched to a bar, with the reason.
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
    val_end = session_first - horizon  # embargo: one label horizon before the session rows
    val_start = val_end - n_validation
    train_end = val_start - horizon  # purge: labels of earlier rows end before validation
    train_start = max(config.warmup_bars, train_end - config.training_bars)
    if train_end - train_start < 500:
        raise LearningError(
            f"{key}: only {max(train_end - train_start, 0)} training rows before the validation "
            f"window at {session_end:%Y-%m-%d %H:%M}; load more history (need about "
            f"{config.history_bars(key.timeframe)} bars, have {len(bars)})"
        )

    tp_atr, sl_atr = config.tp_atr, config.sl_atr
    if plan.refit_barriers:
        tp_atr, sl_atr = fit_barriers(bars, atr_values, np.arange(train_start, train_end), horizon)
    labels = triple_barrier_labels(bars, atr_values, tp_atr, sl_atr, horizon)

    split = np.full(len(bars), "unused", dtype=object)
    split[train_start:train_end] = "train"
    split[train_end:val_start] = "purged"
    split[val_start:val_end] = "validation"
    split[val_end:session_first] = "embargo"
    split[session_first:] = "train"

    weight = np.ones(len(bars))
    frame = features.astype("float32")
    frame["label"] = labels
    frame["split"] = split

    # The session's losers: their decision rows carry the plan's boost. A row whose label horizon
    # has not completed by the session's end takes the trade's known lesson: not that direction.
    matched, unmatched = [], []
    mine = session_trades.loc[
        (session_trades["symbol"] == key.symbol) & (session_trades["timeframe"] == key.timeframe)
    ]
    for trade in mine.itertuples(index=False):
        boost = plan.trade_boosts.get(str(trade.trade_id))
        if boost is None:
            continue
        row_time = decision_bar_times(pd.DatetimeIndex([trade.entry_time]), bar).iloc[0]
        position = index.searchsorted(row_time)
        if position >= len(index) or index[position] != row_time:
            unmatched.append(
                {"trade_id": str(trade.trade_id), "reason": f"no bar at {row_time.isoformat()}"}
            )
            continue
        if split[position] != "train":
            unmatched.append(
                {
                    "trade_id": str(trade.trade_id),
                    "reason": f"decision bar {row_time.isoformat()} is in the {split[position]} "
                    "window",
                }
            )
            continue
        if np.isnan(frame["label"].iat[position]):
            frame.iloc[position, frame.columns.get_loc("label")] = 0.0
        weight[position] = max(weight[position], boost)
        matched.append(
            {"trade_id": str(trade.trade_id), "row": row_time.isoformat(), "boost": boost}
        )

    if plan.loser_patterns:
        patterns = [LoserPattern.from_dict(p) for p in plan.loser_patterns]
        weight *= pattern_weights(patterns, index, bar, bars)
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

    train = frame.loc[frame["split"] == "train", "label"]
    info = {
        "model": key.slug,
        "rows": {s: int((frame["split"] == s).sum()) for s in ("train", "validation")},
        "class_balance": {CLASS_NAMES[c]: int((train == c).sum()) for c in CLASSES},
        "boosted_rows": matched,
        "unmatched_trades": unmatched,
        "barriers": {"tp_atr": tp_atr, "sl_atr": sl_atr, "max_holding_bars": horizon},
        "split": Split(index[val_start], index[val_end], index[session_first]).as_dict()
        if session_first < len(index)
        else Split(index[val_start], index[val_end], session_end).as_dict(),
        "training_window": [index[train_start].isoformat(), index[-1].isoformat()],
        "features": [c for c in features.columns],
    }
    return frame, info


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
    training_set: pd.DataFrame, features: Sequence[str], params: dict
) -> CatBoostClassifier:
    """Fit CatBoost on the ``train`` rows with their weights; the class order is short/flat/long."""
    rows = training_set.loc[training_set["split"] == "train"]
    labels = rows["label"].astype(int)
    missing = [c for c in CLASSES if c not in set(labels)]
    if missing:
        raise LearningError(
            f"training rows lack class(es) {[CLASS_NAMES[c] for c in missing]}; "
            "widen the training window or change the barriers"
        )
    model = CatBoostClassifier(**params, class_names=list(CLASSES))
    model.fit(rows[list(features)], labels, sample_weight=rows["weight"].to_numpy())
    return model


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
    model: CatBoostClassifier,
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

    model: CatBoostClassifier
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
    production: tuple[CatBoostClassifier, dict] | None,
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
    model: CatBoostClassifier, features: Sequence[str], training_set: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (short, flat, long) and labels of the validation rows whose label
    is known, for calibration plots."""
    rows = training_set.loc[(training_set["split"] == "validation") & training_set["label"].notna()]
    return model.predict_proba(rows[list(features)]), rows["label"].to_numpy()
