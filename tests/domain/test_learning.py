"""The learning step: loser boosts land on decision bars, and no training row leaks into
validation (rows, or label horizons)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import CostModel
from session_learning.domain.learning import (
    LearningConfig,
    LearningError,
    build_training_set,
    catboost_params,
    evaluate,
    rule_for,
    train_model,
)
from session_learning.domain.models import ModelKey
from session_learning.domain.synthetic import generate_bars
from tests.builders import hour_pattern

KEY = ModelKey("EURUSD", "30T")
START, END = pd.Timestamp("2025-03-04T08:00Z"), pd.Timestamp("2025-03-04T12:00Z")
CONFIG = LearningConfig(training_bars=1500, validation_bars={"30T": 800}, iterations=40)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars("EURUSD", "30T", "2024-09-01", END)


def _loser(bars: pd.DataFrame, entry: str, trade_id: str = "L1") -> pd.DataFrame:
    entry_time = pd.Timestamp(entry)
    price = float(bars.loc[entry_time, "open"])
    return pd.DataFrame(
        [
            {
                "trade_id": trade_id,
                "symbol": "EURUSD",
                "timeframe": "30T",
                "direction": "long",
                "entry_time": entry_time,
                "exit_time": entry_time + pd.Timedelta(hours=1),
                "pnl": -0.001,
                "entry_price": price,
            }
        ]
    )


def test_loser_boost_lands_on_its_decision_bar(bars):
    trades = _loser(bars, "2025-03-04T09:00Z")
    plan = RetrainPlan(
        model=KEY.slug,
        retrain=True,
        trade_boosts={"L1": 5.0},
        class_weights={"short": 1.0, "flat": 1.5, "long": 0.8},
    )
    frame, info = build_training_set(bars, KEY, START, END, trades, plan, CONFIG)
    decision = pd.Timestamp("2025-03-04T08:30Z")  # the bar that closed at the 09:00 entry
    row = frame.loc[decision]
    class_weight = {-1: 1.0, 0: 1.5, 1: 0.8}[int(row["label"])]
    assert row["weight"] == pytest.approx(5.0 * class_weight)
    assert row["split"] == "train"
    assert info["boosted_rows"] == [{"trade_id": "L1", "row": decision.isoformat(), "boost": 5.0}]
    # Every other training row carries its class weight only.
    others = frame.loc[(frame["split"] == "train") & (frame.index != decision)]
    expected = others["label"].map({-1: 1.0, 0: 1.5, 1: 0.8})
    np.testing.assert_allclose(others["weight"], expected)


def test_unmatched_trade_is_reported_with_its_reason(bars):
    trades = _loser(bars, "2025-03-04T09:00Z")
    trades.loc[0, "entry_time"] = pd.Timestamp("2025-03-01T10:00Z")  # a Saturday: no bar
    plan = RetrainPlan(model=KEY.slug, retrain=True, trade_boosts={"L1": 3.0})
    _, info = build_training_set(bars, KEY, START, END, trades, plan, CONFIG)
    assert info["boosted_rows"] == []
    [unmatched] = info["unmatched_trades"]
    assert unmatched["trade_id"] == "L1" and "no bar at" in unmatched["reason"]


def test_no_training_row_or_label_horizon_overlaps_validation(bars):
    trades = _loser(bars, "2025-03-04T09:00Z")
    plan = RetrainPlan(model=KEY.slug, retrain=True, trade_boosts={"L1": 3.0})
    frame, info = build_training_set(bars, KEY, START, END, trades, plan, CONFIG)
    bar, horizon = KEY.bar, CONFIG.max_holding_bars
    validation = frame.index[frame["split"] == "validation"]
    v_start, v_end = validation[0], validation[-1] + bar
    train = frame.index[frame["split"] == "train"]
    assert len(validation) == 800
    assert info["split"]["validation_end"] == v_end.isoformat()
    before, after = train[train < v_start], train[train >= v_end]
    # A label at row t looks at bars up to t + horizon bars (known one bar later): every
    # training row before the window has its whole label horizon before the window.
    assert len(before) == 1500
    assert (before + horizon * bar + bar <= v_start).all()
    # After the window comes an embargo of one label horizon, then the session's rows. Rows of
    # the session whose label horizon is not complete are left out, except the boosted loser,
    # which carries its trade's known lesson.
    assert list(after) == [pd.Timestamp("2025-03-04T08:30Z")]
    assert (after >= v_end + horizon * bar).all()
    assert frame.loc[after[0], "label"] in (-1.0, 0.0)  # the long lost: never labelled long


def test_bars_after_session_end_are_not_used(bars):
    plan = RetrainPlan(model=KEY.slug, retrain=True)
    empty = pd.DataFrame(columns=["symbol", "timeframe"])
    frame, _ = build_training_set(bars, KEY, START, END, empty, plan, CONFIG)
    future = generate_bars("EURUSD", "30T", "2024-09-01", END + pd.Timedelta(days=3))
    frame2, _ = build_training_set(future, KEY, START, END, empty, plan, CONFIG)
    pd.testing.assert_frame_equal(frame, frame2)


def test_nan_bars_are_a_clear_error(bars):
    broken = bars.copy()
    broken.iloc[-50, broken.columns.get_loc("close")] = np.nan
    plan = RetrainPlan(model=KEY.slug, retrain=True)
    with pytest.raises(LearningError, match="NaN prices"):
        build_training_set(
            broken, KEY, START, END, pd.DataFrame(columns=["symbol", "timeframe"]), plan, CONFIG
        )


def test_too_little_history_is_a_clear_error(bars):
    plan = RetrainPlan(model=KEY.slug, retrain=True)
    with pytest.raises(LearningError, match="load more history"):
        build_training_set(
            bars.iloc[-1500:],
            KEY,
            START,
            END,
            pd.DataFrame(columns=["symbol", "timeframe"]),
            plan,
            CONFIG,
        )


def test_training_is_reproducible_and_evaluation_uses_validation_only(bars):
    plan = RetrainPlan(model=KEY.slug, retrain=True)
    frame, info = build_training_set(
        bars, KEY, START, END, pd.DataFrame(columns=["symbol", "timeframe"]), plan, CONFIG
    )
    params = catboost_params(plan, CONFIG)
    a = train_model(frame, info["features"], params)
    b = train_model(frame, info["features"], params)
    rows = frame[info["features"]].iloc[:200]
    np.testing.assert_array_equal(a.predict_proba(rows), b.predict_proba(rows))
    result = evaluate(
        a, info["features"], frame, rule_for(plan, info, CONFIG), CostModel(0.00008), KEY.bar
    )
    validation = frame.index[frame["split"] == "validation"]
    assert result.trades["entry_time"].min() > validation[0]
    assert result.trades["entry_time"].max() <= validation[-1] + KEY.bar


def test_loser_pattern_hours_weigh_more_in_training(bars):
    pattern = hour_pattern(KEY.slug, 14)
    plan = RetrainPlan(model=KEY.slug, retrain=True, loser_patterns=(pattern.to_dict(),))
    empty = pd.DataFrame(columns=["symbol", "timeframe"])
    frame, _ = build_training_set(bars, KEY, START, END, empty, plan, CONFIG)
    train = frame.loc[frame["split"] == "train"]
    # A row decided at t enters at t + 30 min: rows decided 13:30 and 14:00 enter in the 14:00 hour.
    entry_hour = (train.index + KEY.bar).hour
    np.testing.assert_allclose(train.loc[entry_hour == 14, "weight"], 1.5)
    np.testing.assert_allclose(train.loc[entry_hour != 14, "weight"], 1.0)
