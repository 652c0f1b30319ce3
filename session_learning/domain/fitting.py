"""Fitting a candidate on its training set and backtesting it, with costs, on the validation
window; the production model is measured on the same window by its own trading rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import (
    BacktestResult,
    CostModel,
    run_backtest,
    signals_from_probabilities,
)
from session_learning.domain.estimators import DEFAULT_MODEL_TYPE, Estimator
from session_learning.domain.training import (
    CLASS_NAMES,
    CLASSES,
    LearningConfig,
    LearningError,
    TradingRule,
)


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
