"""The learning step: loser boosts land on decision bars, and no training row leaks into
validation (rows, or label horizons)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.backtest import CostModel
from session_learning.domain.barrier_refit import (
    BarrierTargets,
    check_geometry,
    fit_barriers,
    judge_barriers,
)
from session_learning.domain.features import atr
from session_learning.domain.fitting import catboost_params, evaluate, rule_for, train_model
from session_learning.domain.keys import ModelKey
from session_learning.domain.patterns import (
    analyze_loser_patterns,
    atr_percentile,
    volatility_regime,
)
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.training import LearningConfig, LearningError, build_training_set
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


# --- loser patterns, early losers and the held-out span -------------------------------------


def _journal(bars: pd.DataFrame, start: str, end: str, losing_hour: int, prefix: str) -> list[dict]:
    """Trades entered at 03:00, 09:00, 14:00 and 20:00 (UTC) and at every even hour in high
    volatility, on every weekday in ``[start, end)``, each held two hours: entries at
    ``losing_hour`` or in high volatility lose 9 times in 10, the others 3 times in 10."""
    rows = []
    regime = volatility_regime(atr_percentile(bars))
    regime.index = bars.index
    times = bars.index[(bars.index >= start) & (bars.index < end) & (bars.index.minute == 0)]
    decided = regime.reindex(times - KEY.bar).to_numpy()
    chosen = np.isin(times.hour, (3, 9, 14, 20)) | ((decided == "high") & (times.hour % 2 == 0))
    for i, (entry, vol) in enumerate(zip(times[chosen], decided[chosen], strict=True)):
        lose = (i % 10) < (9 if entry.hour == losing_hour or vol == "high" else 3)
        rows.append(
            {
                "trade_id": f"{prefix}{i}",
                "symbol": KEY.symbol,
                "timeframe": KEY.timeframe,
                "direction": "long",
                "entry_time": entry,
                "exit_time": entry + pd.Timedelta(hours=2),
                "pnl": -0.001 if lose else 0.001,
                "confidence": 0.6,
            }
        )
    return rows


def _losing_only_at(rows: list[dict], hour: int) -> list[dict]:
    """Every entry at ``hour`` a loser, every other a winner."""
    return [{**t, "pnl": -0.001 if t["entry_time"].hour == hour else 0.001} for t in rows]


def _flagged_in(rows: list[dict], bars: pd.DataFrame) -> set[str]:
    """The buckets a pattern search of ``rows`` alone flags (those that select rows)."""
    analysis = analyze_loser_patterns(pd.DataFrame(rows), bars)
    return {p.bucket for p in analysis.patterns if p.selects_rows}


def _session_losers(bars: pd.DataFrame) -> pd.DataFrame:
    # L0 entered at 20:00 the evening before its session began: its decision row (19:30) lies
    # where the embargo would be if the split were anchored at the session's start.
    early = _loser(bars, "2025-03-03T20:00Z", "L0")
    early.loc[0, "exit_time"] = pd.Timestamp("2025-03-04T08:30Z")
    return pd.concat([early, _loser(bars, "2025-03-04T09:00Z", "L1")], ignore_index=True)


PLAN = RetrainPlan(
    model=KEY.slug,
    retrain=True,
    trade_boosts={"L0": 3.0, "L1": 2.0},
    class_weights={"short": 1.0, "flat": 1.5, "long": 0.8},
    refit_barriers=True,
)


def _weights(bars, journal_rows, trades=None):
    frame, info = build_training_set(
        bars,
        KEY,
        START,
        END,
        _session_losers(bars) if trades is None else trades,
        PLAN,
        CONFIG,
        pattern_trades=pd.DataFrame(journal_rows),
    )
    return frame.loc[frame["split"] == "train", "weight"], info


@pytest.fixture(scope="module")
def journal_rows(bars):
    # Before the held-out span, entries at 14:00 lose; inside it, entries at 03:00 do.
    _, info = _weights(bars, [])
    held_start, held_end = (pd.Timestamp(t) for t in info["held_out"])
    before = _journal(bars, "2024-12-01", held_start, 14, "B")
    inside = _journal(bars, held_start, held_end, 3, "H")
    return before, inside, held_start, held_end


def test_loser_patterns_come_only_from_trades_outside_the_held_out_span(bars, journal_rows):
    before, inside, held_start, _ = journal_rows
    _, info = _weights(bars, before + inside)
    search = info["loser_pattern_search"]
    # A trade entered before the span but exiting inside it saw a held-out price.
    straddling = [t for t in before if t["exit_time"] >= held_start]
    assert straddling
    assert search["trades_held_out"] == len(inside) + len(straddling)
    lookback = held_start - pd.Timedelta(days=28)
    usable = [t for t in before if lookback <= t["exit_time"] < held_start]
    assert search["trades_used"] == len(usable)
    # The patterns are exactly those of the usable trades searched alone. Which buckets stand
    # out depends on the bars (every even hour of high volatility is traded), so they are
    # derived here; a search that also saw the held-out trades (inside the span, 03:00 entries
    # lose) flags other buckets, so this fails if any leaked in.
    expected = _flagged_in(usable, bars)
    assert expected and _flagged_in(usable + straddling + inside, bars) != expected
    flagged = {p["bucket"] for p in info["plan"]["loser_patterns"]}
    assert flagged == expected
    assert not any(b.startswith("03:00") for b in flagged)
    assert any("loser pattern" in r for r in info["plan"]["reasons"])


def test_no_training_weight_depends_on_a_held_out_trade_or_bar(bars, journal_rows):
    before, inside, _, held_end = journal_rows
    weights, info = _weights(bars, before + inside)
    validation_start = pd.Timestamp(info["split"]["validation_start"])
    assert info["boosted_rows"] and not info["unmatched_trades"]

    # Trades touching the purge, the validation window or the embargo: every outcome flipped,
    # 40 more losers entered at 20:00, a trade decided before the span that exits inside it.
    flipped = [{**t, "pnl": -t["pnl"]} for t in inside]
    extra = [
        {**t, "trade_id": f"X{i}", "pnl": -0.001, "entry_time": t["entry_time"].replace(hour=20)}
        for i, t in enumerate(inside[:40])
    ]
    straddle = {**before[-1], "trade_id": "S", "exit_time": validation_start, "pnl": -0.002}
    # Bars of the validation window and the embargo: ranges three times as wide, closes moved.
    wild = bars.copy()
    held = (wild.index >= validation_start) & (wild.index < held_end)
    spread = (wild["high"] - wild["low"]).to_numpy()
    wild.loc[held, "high"] += 2 * spread[held]
    wild.loc[held, "low"] -= 2 * spread[held]
    wild.loc[held, "close"] = wild.loc[held, "low"] + 0.25 * (
        wild.loc[held, "high"] - wild.loc[held, "low"]
    )

    for journal, market in [
        (before + _losing_only_at(inside, 20), bars),
        (before + flipped, bars),
        (before + inside + extra + [straddle], bars),
        (before, bars),
        (before + inside, wild),
        (before + flipped + extra, wild),
    ]:
        changed, _ = _weights(market, journal)
        assert changed.index.equals(weights.index)
        np.testing.assert_array_equal(changed.to_numpy(), weights.to_numpy())


def test_the_same_changes_outside_the_held_out_span_do_change_the_weights(bars, journal_rows):
    # The counter-test: the check above can fail.
    before, inside, held_start, _ = journal_rows
    weights, _ = _weights(bars, before + inside)
    # Every 20:00 entry a loser and every other a winner, before the span: a new pattern, other
    # rows boosted.
    changed, info = _weights(bars, _losing_only_at(before, 20) + inside)
    assert "20:00-21:00 UTC" in {p["bucket"] for p in info["plan"]["loser_patterns"]}
    assert not np.array_equal(changed.to_numpy(), weights.to_numpy())
    # The same inside the span changes nothing (as above).
    same, info = _weights(bars, before + _losing_only_at(inside, 20))
    assert "20:00-21:00 UTC" not in {p["bucket"] for p in info["plan"]["loser_patterns"]}
    np.testing.assert_array_equal(same.to_numpy(), weights.to_numpy())
    # Wider bars in the training window, before the purge: other labels, other class weights.
    wild = bars.copy()
    train = (wild.index >= held_start - pd.Timedelta(days=10)) & (wild.index < held_start)
    spread = (wild["high"] - wild["low"]).to_numpy()
    wild.loc[train, "high"] += 2 * spread[train]
    wild.loc[train, "low"] -= 2 * spread[train]
    changed, _ = _weights(wild, before + inside)
    assert not np.array_equal(changed.to_numpy(), weights.to_numpy())


def test_a_loser_that_entered_before_its_session_is_trained_on_not_validated_on(bars):
    frame, info = build_training_set(bars, KEY, START, END, _session_losers(bars), PLAN, CONFIG)
    early = pd.Timestamp("2025-03-03T19:30Z")  # decision bar of the 20:00 entry
    assert {r["trade_id"] for r in info["boosted_rows"]} == {"L0", "L1"}
    assert info["unmatched_trades"] == []
    assert frame.loc[early, "split"] == "train"
    class_weight = {-1: 1.0, 0: 1.5, 1: 0.8}[int(frame.loc[early, "label"])]
    assert frame.loc[early, "weight"] == pytest.approx(3.0 * class_weight)
    # The embargo and validation window moved in front of it: no validation row's label horizon
    # reaches the early loser's row, and the window keeps its length.
    validation = frame.index[frame["split"] == "validation"]
    assert len(validation) == 800
    assert validation[-1] + (CONFIG.max_holding_bars + 1) * KEY.bar <= early
    assert info["split"]["session_first_row"] == early.isoformat()
    embargo = frame.index[frame["split"] == "embargo"]
    assert len(embargo) == CONFIG.max_holding_bars and embargo[-1] + KEY.bar == early
    # Anchored at the session's start, that row would have been in the embargo.
    session_first = pd.Timestamp("2025-03-04T07:30Z")
    assert session_first - CONFIG.max_holding_bars * KEY.bar <= early < session_first


def test_a_loser_decided_too_long_before_its_session_is_listed_not_boosted(bars):
    trades = _session_losers(bars)
    config = LearningConfig(
        training_bars=1500, validation_bars={"30T": 800}, iterations=40, max_loser_age_bars=4
    )
    frame, info = build_training_set(bars, KEY, START, END, trades, PLAN, config)
    [unmatched] = info["unmatched_trades"]
    assert unmatched["trade_id"] == "L0" and "max_loser_age_bars 4" in unmatched["reason"]
    assert [r["trade_id"] for r in info["boosted_rows"]] == ["L1"]
    assert info["split"]["session_first_row"] == "2025-03-04T07:30:00+00:00"


# --- the barrier refit, judged against the gates --------------------------------------------


def test_geometry_check_by_hand_on_a_steady_rise():
    # Every bar rises by 1 (open = previous close, high = close, low = open): ATR 1. A long
    # with TP 2 / SL 1 ATR reaches its take profit on its second bar (+2R); a short is stopped
    # on its first (-1R).
    close = 100.0 + np.arange(400)
    bars = pd.DataFrame(
        {"open": close - 1, "high": close, "low": close - 1, "close": close, "volume": 1.0},
        index=pd.date_range("2025-01-06", periods=400, freq="30min", tz="UTC"),
    )
    check = check_geometry(
        bars,
        atr(bars),
        np.arange(50, 300),
        2.0,
        1.0,
        24,
        BarrierTargets(min_win_rate=0.42, min_profit_factor=1.4, min_trades=300),
        600,
    )
    assert check.chance_win_rate == 0.5 and check.payoff == pytest.approx(2.0)
    # At payoff 2 the profit factor passes 1.4 from 1.4 / 3.4 = 41.2% on: the 42% gate binds.
    assert check.needed_win_rate == 0.42 and check.lift == pytest.approx(-0.08)
    assert check.mean_bars_held == 1.5 and check.max_trades == 400.0 and check.reachable
    # A 1:1 geometry needs 1.4 / 2.4 = 58.3% to reach the profit factor.
    even = check_geometry(
        bars, atr(bars), np.arange(50, 300), 1.0, 1.0, 24, BarrierTargets(min_trades=700), 600
    )
    assert even.needed_win_rate == pytest.approx(1.4 / 2.4) and even.mean_bars_held == 1.0
    assert even.max_trades == 600.0 and not even.reachable  # 600 one-bar trades < 700


def test_a_refit_to_the_median_excursions_that_asks_more_of_the_model_is_rejected(bars):
    a = atr(bars)
    rows = np.arange(300, 2000)
    targets = BarrierTargets(min_trades=100)
    refit = judge_barriers(bars, a, rows, LearningConfig(), targets, 800)
    fitted, configured = refit["checks"]["fitted"], refit["checks"]["configured"]
    assert (fitted["tp_atr"], fitted["sl_atr"]) == pytest.approx(fit_barriers(bars, a, rows, 24))
    # The median excursions give a wide take profit: chance wins less often, and the gates
    # then demand more skill than with the configured 2:1.
    assert fitted["tp_atr"] / fitted["sl_atr"] > 2.5
    assert fitted["lift"] > configured["lift"] + 0.02
    assert refit["chosen"] != "fitted" and "fitted" in refit["message"]
    assert "rejected: needs" in refit["message"]
    chosen = refit["checks"][refit["chosen"]]
    assert chosen["lift"] <= configured["lift"] + 0.02 and chosen["reachable"]
    assert (refit["tp_atr"], refit["sl_atr"]) == (chosen["tp_atr"], chosen["sl_atr"])


def test_a_refit_whose_trades_cannot_reach_the_minimum_falls_back_to_the_configured_geometry(
    bars,
):
    refit = judge_barriers(
        bars,
        atr(bars),
        np.arange(300, 2000),
        LearningConfig(refit_lift_tolerance=1.0),  # only the trade count can reject
        BarrierTargets(min_trades=100),
        200,  # a 200-row window holds at most ~200 / bars held trades
    )
    assert refit["chosen"] == "configured" and (refit["tp_atr"], refit["sl_atr"]) == (2.0, 1.0)
    assert refit["message"].count("validation trades < 100") == 2


@pytest.mark.parametrize("mode", ["judged", "fitted", "off"])
def test_barrier_refit_modes(bars, mode):
    config = LearningConfig(
        training_bars=1500, validation_bars={"30T": 800}, iterations=40, barrier_refit=mode
    )
    plan = RetrainPlan(model=KEY.slug, retrain=True, refit_barriers=True)
    empty = pd.DataFrame(columns=["symbol", "timeframe"])
    _, info = build_training_set(bars, KEY, START, END, empty, plan, config)
    barriers = (info["barriers"]["tp_atr"], info["barriers"]["sl_atr"])
    [verdict] = [r for r in info["plan"]["reasons"] if r.startswith("barrier refit")]
    if mode == "off":
        assert barriers == (2.0, 1.0) and info["barrier_refit"] is None
    elif mode == "fitted":
        assert info["barrier_refit"]["chosen"] == "fitted" and barriers[0] / barriers[1] > 2.5
    else:
        assert info["barrier_refit"]["chosen"] != "fitted" and "rejected" in verdict


def test_an_unknown_refit_mode_is_refused():
    with pytest.raises(ValueError, match="barrier_refit must be one of judged, fitted, off"):
        LearningConfig(barrier_refit="always")
