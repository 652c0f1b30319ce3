"""Synthetic bars: valid OHLCV, deterministic, range-consistent, realistic scale, learnable."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier
from hypothesis import given, settings
from hypothesis import strategies as st

from session_learning.domain import synthetic
from session_learning.domain.backtest import (
    BacktestConfig,
    CostModel,
    run_backtest,
    signals_from_probabilities,
)
from session_learning.domain.calendars import calendar_for, get_calendar
from session_learning.domain.features import atr, build_features
from session_learning.domain.keys import BAR_COLUMNS, TIMEFRAMES
from session_learning.domain.labels import triple_barrier_labels
from session_learning.domain.synthetic import (
    EPOCH,
    GENERIC_PROFILE,
    REGIMES,
    generate_bars,
    regime_schedule,
)

YEAR_END = "2025-01-01"


# --- validity ------------------------------------------------------------------------------


@pytest.mark.parametrize("timeframe", list(TIMEFRAMES))
@pytest.mark.parametrize("symbol", ["EURUSD", "GBPUSD", "XAUUSD", "ZZZ1"])
def test_bars_are_valid_ohlcv_on_the_symbols_calendar(symbol, timeframe):
    bars = generate_bars(symbol, timeframe, "2024-01-01", "2024-04-01")
    bar = TIMEFRAMES[timeframe]
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert (bars.dtypes == np.float64).all()
    assert bars.index.name == "time"
    assert str(bars.index.tz) == "UTC"
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert not bars.isna().any().any()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert (bars["volume"] > 0).all()
    assert ((bars.index - bars.index.normalize()) % bar == pd.Timedelta(0)).all()
    # Every bar the symbol's calendar expects is there, and nothing else.
    calendar = calendar_for(symbol)
    expected = calendar.expected_bar_times("2024-01-01", pd.Timestamp("2024-04-01") - bar, bar)
    assert bars.index.equals(expected.rename("time"))
    assert not (bars.index.day_of_week == 5).any()  # Saturday is closed on every one of them
    if symbol == "ZZZ1":  # unknown symbols fall back to 24/5: every weekday bar, Monday to Friday
        weekdays = pd.date_range("2024-01-01", "2024-04-01", freq=bar, inclusive="left", tz="UTC")
        assert bars.index.equals(weekdays[weekdays.day_of_week < 5].rename("time"))
    else:  # CME Globex: New Year's Day is closed and the week opens on Sunday evening
        assert not bars.index[bars.index + bar <= "2024-01-01 23:00"].size
        assert (bars.index.day_of_week == 6).any()


def test_the_week_continues_from_friday_close_to_sunday_open():
    bars = generate_bars("EURUSD", "30T", "2024-01-05 21:00", "2024-01-08 00:00")
    assert list(bars.index.strftime("%a %H:%M")) == [
        "Fri 21:00",
        "Fri 21:30",
        "Sun 23:00",
        "Sun 23:30",
    ]
    assert bars["open"].iloc[2] == bars["close"].iloc[1]
    # On the 24/5 fallback the week runs from Monday 00:00 to Friday 24:00 UTC.
    bars = generate_bars("EURUSD", "30T", "2024-01-05 23:00", "2024-01-08 01:00", calendar="24/5")
    assert list(bars.index.strftime("%a %H:%M")) == [
        "Fri 23:00",
        "Fri 23:30",
        "Mon 00:00",
        "Mon 00:30",
    ]
    assert bars["open"].iloc[2] == bars["close"].iloc[1]


def test_bars_follow_summer_time_the_daily_break_and_the_holidays():
    # CME Globex FX opens on Sunday at 17:00 Chicago time: 23:00 UTC in winter, 22:00 in summer.
    winter = generate_bars("EURUSD", "1H", "2024-03-03", "2024-03-04")
    summer = generate_bars("EURUSD", "1H", "2024-03-10", "2024-03-11")
    assert winter.index[0].hour == 23 and summer.index[0].hour == 22
    # The daily break (16:00-17:00 Chicago) has no bar.
    tuesday = generate_bars("EURUSD", "1H", "2024-03-05", "2024-03-06")
    assert 22 not in set(tuesday.index.hour) and len(tuesday) == 23
    # Christmas Day and New Year's Day are closed; for FX Christmas Eve closes early (12:15
    # Chicago), as the library's CME schedule says.
    gold = generate_bars("XAUUSD", "15T", "2024-12-24", "2025-01-03")
    assert gold.loc["2024-12-24 22:00":"2024-12-25 22:45"].empty
    assert gold.loc["2025-01-01 00:00":"2025-01-01 22:45"].empty
    assert len(gold.loc["2024-12-26"]) == 23 * 4
    euro = generate_bars("EURUSD", "15T", "2024-12-24", "2024-12-27")
    assert euro.loc["2024-12-24 18:15":"2024-12-25 22:45"].empty
    assert euro.loc["2024-12-24"].index[-1] == pd.Timestamp("2024-12-24 18:00", tz="UTC")


def test_any_calendar_can_be_chosen():
    nyse = generate_bars("SPY", "1H", "2024-01-08", "2024-01-13", calendar="XNYS")
    # 14:30-21:00 UTC: the 14:00 bar holds the first half hour, the 20:00 bar the last hour.
    assert sorted(set(nyse.index.hour)) == [14, 15, 16, 17, 18, 19, 20]
    assert len(nyse) == 5 * 7
    crypto = generate_bars("BTCUSD", "4H", "2024-01-06", "2024-01-08")
    assert len(crypto) == 12  # 24/7: the weekend trades
    expected = get_calendar("XNYS").expected_bar_times(
        "2024-01-08", "2024-01-12 23:00", pd.Timedelta(hours=1)
    )
    assert nyse.index.equals(expected.rename("time"))


# --- determinism and range consistency ---------------------------------------------------


def test_same_arguments_give_the_same_bars_even_after_the_cache_is_dropped():
    first = generate_bars("EURUSD", "15T", "2024-02-01", "2024-03-01")
    synthetic._CACHE.clear()
    pd.testing.assert_frame_equal(first, generate_bars("EURUSD", "15T", "2024-02-01", "2024-03-01"))


def test_bars_do_not_depend_on_the_process_hash_seed():
    # Python salts hash() per process; seeds must come from a stable hash instead.
    code = (
        "from session_learning.domain.synthetic import generate_bars;"
        "b = generate_bars('XAUUSD', '30T', '2024-05-01', '2024-05-03');"
        "print(repr(b['close'].to_numpy().tolist()))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    expected = generate_bars("XAUUSD", "30T", "2024-05-01", "2024-05-03")["close"].tolist()
    assert outputs.pop().strip() == repr(expected)


def test_a_short_history_is_the_start_of_a_long_one():
    # Generated from scratch each time: a 26-week path, then a 78-week one.
    synthetic._CACHE.clear()
    short = generate_bars("GBPUSD", "15T", EPOCH, "2024-03-01")
    synthetic._CACHE.clear()
    long = generate_bars("GBPUSD", "15T", EPOCH, "2025-06-01")
    assert len(long) > 5 * len(short)
    pd.testing.assert_frame_equal(short, long.loc[: short.index[-1]])


@pytest.fixture(scope="module")
def long_bars() -> pd.DataFrame:
    return generate_bars("GBPUSD", "30T", EPOCH, "2024-09-01")


@settings(max_examples=60, deadline=None)
@given(
    start_minutes=st.integers(min_value=0, max_value=170 * 24 * 60),
    length_minutes=st.integers(min_value=0, max_value=20 * 24 * 60),
)
def test_a_sub_range_equals_the_slice_of_a_longer_range(long_bars, start_minutes, length_minutes):
    start = EPOCH + pd.Timedelta(minutes=start_minutes)
    end = start + pd.Timedelta(minutes=length_minutes)
    expected = long_bars[(long_bars.index >= start) & (long_bars.index < end)]
    pd.testing.assert_frame_equal(generate_bars("GBPUSD", "30T", start, end), expected)
    schedule = regime_schedule("GBPUSD", "30T", start, end)
    assert schedule.index.equals(expected.index)


def test_time_arguments_may_be_strings_naive_or_in_another_zone():
    utc = generate_bars("EURUSD", "1H", "2024-03-04 08:00", "2024-03-05 08:00")
    as_utc = pd.Timestamp("2024-03-04 08:00", tz="UTC")
    in_tokyo = as_utc.tz_convert("Asia/Tokyo")
    pd.testing.assert_frame_equal(
        utc, generate_bars("EURUSD", "1H", in_tokyo, in_tokyo + pd.Timedelta(days=1))
    )
    assert len(utc) == 23  # a day less the daily break


def test_empty_and_invalid_ranges():
    empty = generate_bars("EURUSD", "30T", "2024-01-06", "2024-01-07 22:00")  # a weekend
    assert empty.empty and list(empty.columns) == list(BAR_COLUMNS)
    assert generate_bars("EURUSD", "30T", "2024-02-01", "2024-01-01").empty
    with pytest.raises(ValueError, match="begin at 2024-01-01"):
        generate_bars("EURUSD", "30T", "2023-12-31", "2024-01-02")
    with pytest.raises(ValueError, match="unknown timeframe"):
        generate_bars("EURUSD", "7T", "2024-01-01", "2024-01-02")


def test_symbols_timeframes_and_seeds_give_different_paths():
    def closes(symbol: str, timeframe: str, seed: int = 7) -> np.ndarray:
        bars = generate_bars(symbol, timeframe, "2024-01-02", "2024-01-03", seed=seed)
        return np.log(bars["close"].to_numpy()[:40]).round(12)

    reference = np.diff(closes("EURUSD", "30T"))
    for other in (("GBPUSD", "30T"), ("EURUSD", "15T"), ("EURUSD", "30T", 8), ("ABC", "30T")):
        assert not np.allclose(np.diff(closes(*other)), reference)


# --- scale ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def year_atr() -> dict[tuple[str, str], pd.Series]:
    return {
        (symbol, timeframe): atr(generate_bars(symbol, timeframe, EPOCH, YEAR_END))
        for symbol in ("EURUSD", "GBPUSD", "XAUUSD", "ZZZ1")
        for timeframe in ("15T", "30T", "4H")
    }


def test_price_levels_and_volatility_look_like_the_real_symbols(year_atr):
    median = {key: float(series.median()) for key, series in year_atr.items()}
    assert 0.0008 <= median["EURUSD", "30T"] <= 0.0012
    assert 2.0 <= median["XAUUSD", "30T"] <= 4.0
    assert median["GBPUSD", "30T"] > median["EURUSD", "30T"] * 1.2  # pricier and more volatile
    for symbol, level in (("EURUSD", 1.08), ("GBPUSD", 1.27), ("XAUUSD", 2000.0)):
        close = generate_bars(symbol, "30T", EPOCH, YEAR_END)["close"]
        assert close.between(level * 0.88, level * 1.12).all(), symbol
    unknown = generate_bars("ZZZ1", "30T", EPOCH, YEAR_END)
    assert unknown["open"].iloc[0] == GENERIC_PROFILE.price
    assert unknown["close"].between(80, 120).all()


def test_volatility_scales_with_the_square_root_of_the_bar_length(year_atr):
    for symbol in ("EURUSD", "XAUUSD", "ZZZ1"):
        ratio = year_atr[symbol, "30T"].median() / year_atr[symbol, "15T"].median()
        assert ratio == pytest.approx(np.sqrt(2), rel=0.15), symbol


# --- regimes -------------------------------------------------------------------------------------


def test_the_regime_schedule_is_shared_by_timeframes_and_switches_on_sessions():
    fine = regime_schedule("EURUSD", "15T", EPOCH, YEAR_END)
    coarse = regime_schedule("EURUSD", "4H", EPOCH, YEAR_END)
    assert list(fine.cat.categories) == list(REGIMES)
    assert fine.name == "regime"
    by_block = fine.groupby(fine.index.floor("4h"), observed=True).agg(["first", "last"])
    assert (by_block["first"] == by_block["last"]).all()  # one regime per 4-hour block
    assert (by_block["first"].loc[coarse.index].to_numpy() == coarse.to_numpy()).all()
    changed = fine.ne(fine.shift()).to_numpy()
    changes = fine.index[changed][1:]
    assert len(changes) > 20
    # Regimes change only where a 4-hour block begins: the first bar of its block, which is
    # 23:00 or 22:00 UTC when the block holds the Sunday open.
    block = pd.Series(fine.index.floor("4h"), index=fine.index)
    assert (block.ne(block.shift()).to_numpy()[changed]).all()
    assert set(fine.unique()) == set(REGIMES)
    # Days to weeks: runs of trend and range last 2..12 trading days, bursts 0.5..3 (counted
    # in the 4-hour blocks in which the market trades, six to a day).
    runs = fine.groupby(fine.ne(fine.shift()).cumsum(), observed=True)
    blocks = block.groupby(fine.ne(fine.shift()).cumsum().to_numpy()).nunique()
    lengths = pd.DataFrame({"regime": runs.first(), "days": blocks.to_numpy() / 6})
    inner = lengths.iloc[1:-1]
    calm = inner[inner["regime"] != "burst"]["days"]
    assert calm.between(2, 12).all()
    assert inner[inner["regime"] == "burst"]["days"].between(0.5, 3).all()
    assert regime_schedule("GBPUSD", "15T", EPOCH, YEAR_END).ne(fine).any()


def test_regimes_are_visible_in_causal_features_and_flip_the_sign_of_the_structure():
    bars = generate_bars("EURUSD", "30T", EPOCH, YEAR_END)
    features = build_features(bars)
    regime = regime_schedule("EURUSD", "30T", EPOCH, YEAR_END)
    future = (bars["close"].shift(-12) - bars["close"]) / atr(bars)
    by_regime = features.assign(regime=regime, future=future).iloc[300:-12]
    groups = by_regime.groupby("regime", observed=True)
    level = groups["natr_14"].median()
    assert level["range"] < level["trend"] < level["burst"]
    efficiency = groups["efficiency_48"].median()
    assert efficiency["trend"] > 1.5 * efficiency["range"]
    # The same stretch above the mean predicts more upside in a trend and a fall in a range.
    trend, calm = (by_regime[by_regime["regime"] == name] for name in ("trend", "range"))
    assert trend["ma_dist_20"].corr(trend["future"]) > 0.15
    assert calm["ma_dist_20"].corr(calm["future"]) < -0.15


# --- learnability ----------------------------------------------------------------------------


def _fit_and_trade(symbol: str, timeframe: str, train_on: str | None = None) -> tuple:
    """Train on 8,000 bars after a 300-bar warm-up, trade the next 3,000 with 2/1 ATR barriers."""
    end = EPOCH + pd.Timedelta(days=400)
    bars = generate_bars(symbol, timeframe, EPOCH, end).iloc[: 300 + 8000 + 3000]
    regime = regime_schedule(symbol, timeframe, EPOCH, end).iloc[: len(bars)]
    features = build_features(bars)
    volatility = atr(bars)
    labels = triple_barrier_labels(bars, volatility, tp_atr=2.0, sl_atr=1.0, max_bars=24)
    train = slice(300, 300 + 8000 - 24)  # purged: no label looks into the test bars
    test = slice(300 + 8000, None)
    rows = labels.iloc[train].notna()
    if train_on is not None:
        rows &= regime.iloc[train] == train_on
    model = CatBoostClassifier(
        loss_function="MultiClass",
        depth=6,
        iterations=200,
        random_seed=0,
        thread_count=2,
        allow_writing_files=False,
        verbose=False,
    )
    model.fit(features.iloc[train][rows], labels.iloc[train][rows].astype(int))
    signals = signals_from_probabilities(model.predict_proba(features.iloc[test]), 0.45, 0.08)
    costs = CostModel(spread=0.1 * float(volatility.iloc[train].median()))
    result = run_backtest(bars.iloc[test], signals, volatility.iloc[test], BacktestConfig(), costs)
    trade_regime = regime.iloc[test].to_numpy()[result.trades["signal_index"].to_numpy()]
    return result, trade_regime


def _profit_factor(r_multiples: np.ndarray) -> float:
    return float(r_multiples[r_multiples > 0].sum() / -r_multiples[r_multiples < 0].sum())


@pytest.mark.slow
@pytest.mark.parametrize(
    "symbol, timeframe, min_trades",
    [("EURUSD", "30T", 100), ("GBPUSD", "15T", 150), ("XAUUSD", "30T", 100)],
)
def test_a_catboost_model_learns_the_structure_out_of_sample(symbol, timeframe, min_trades):
    metrics = _fit_and_trade(symbol, timeframe)[0].metrics
    assert metrics.trades >= min_trades
    assert metrics.profit_factor > 1.4
    assert metrics.win_rate > 0.42
    assert metrics.profit_factor < 4.0  # learnable, not a giveaway


@pytest.mark.slow
def test_a_model_trained_inside_one_regime_fails_after_the_flip():
    result, trade_regime = _fit_and_trade("EURUSD", "30T", train_on="trend")
    r = result.trades["r_multiple"].to_numpy()
    assert _profit_factor(r[trade_regime == "trend"]) > 1.4
    assert _profit_factor(r[trade_regime == "range"]) < 0.9
