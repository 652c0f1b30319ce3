"""Loser patterns: each dimension on hand-built trades, the flag rule, and the row weights."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.patterns import (
    LoserPattern,
    PatternRules,
    analyze_loser_patterns,
    atr_percentile,
    binomial_tail,
    find_loser_patterns,
    pattern_weights,
)
from tests.builders import trade

BAR = pd.Timedelta(minutes=30)
DAY0 = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday


def at(entry: pd.Timestamp, *, win: bool, held_bars: float = 2, **kwargs) -> dict:
    """One EURUSD 30T trade entered at ``entry`` and held ``held_bars`` bars."""
    return trade(
        win=win,
        entry_time=entry.isoformat(),
        exit_time=(entry + held_bars * BAR).isoformat(),
        **kwargs,
    )


def in_hour(hour: int, n_win: int, n_loss: int, **kwargs) -> list[dict]:
    """Trades entered at ``hour``:10 UTC, one per day."""
    outcomes = [True] * n_win + [False] * n_loss
    return [
        at(DAY0 + pd.Timedelta(days=day, hours=hour, minutes=10), win=w, **kwargs)
        for day, w in enumerate(outcomes)
    ]


def spread(n_win: int, n_loss: int, skip_hour: int = 14, **kwargs) -> list[dict]:
    """Trades entered round-robin over every hour but ``skip_hour`` (at most a few per hour)."""
    hours = [h for h in range(24) if h != skip_hour]
    outcomes = [True, False] * min(n_win, n_loss) + [True] * (n_win - min(n_win, n_loss))
    outcomes += [False] * (n_loss - min(n_win, n_loss))
    return [
        at(
            DAY0 + pd.Timedelta(days=10 + i // len(hours), hours=hours[i % len(hours)]),
            win=w,
            **kwargs,
        )
        for i, w in enumerate(outcomes)
    ]


def flagged(patterns: list[LoserPattern]) -> list[tuple[str, str]]:
    return [(p.dimension, p.bucket) for p in patterns]


# --- the four dimensions -------------------------------------------------------------------


def test_an_hour_that_loses_far_more_often_is_a_pattern():
    trades = pd.DataFrame(in_hour(14, 1, 9) + spread(24, 6))
    patterns = find_loser_patterns(trades, None)

    assert flagged(patterns) == [("hour_of_day", "14:00-15:00 UTC")]
    (p,) = patterns
    assert (p.model, p.trades, p.winners, p.losers) == ("EURUSD_30T", 10, 1, 9)
    assert p.loss_rate == pytest.approx(0.9)
    assert p.baseline_loss_rate == pytest.approx(15 / 40)
    assert p.p_value == pytest.approx(binomial_tail(9, 10, 15 / 40))
    assert p.hours == (14,)
    assert "EURUSD 30T: entries 14:00-15:00 UTC lost 9/10 (90%) vs 38% overall" in p.message


def test_hour_blocks_group_several_hours():
    trades = pd.DataFrame(in_hour(13, 0, 5) + in_hour(15, 1, 4) + spread(24, 6))
    rules = PatternRules(hour_block=4)

    patterns = find_loser_patterns(trades, None, rules)

    assert [p.bucket for p in patterns if p.dimension == "hour_of_day"] == ["12:00-16:00 UTC"]
    assert patterns[0].hours == (12, 13, 14, 15)


def test_overconfident_trades_are_a_confidence_pattern():
    trades = pd.DataFrame(spread(1, 9, confidence=0.85) + spread(24, 6, confidence=0.45))

    patterns = find_loser_patterns(trades, None)

    assert flagged(patterns) == [("confidence", ">=0.7")]
    assert patterns[0].losers == 9
    assert not patterns[0].selects_rows


def test_trades_held_long_are_a_holding_pattern():
    trades = pd.DataFrame(spread(1, 9, held_bars=20) + spread(24, 6, held_bars=1))

    patterns = find_loser_patterns(trades, None)

    assert flagged(patterns) == [("bars_held", "long (>=12 bars)")]


def cyclic_bars(n: int = 400, cycle: int = 20) -> pd.DataFrame:
    """30T bars whose range grows through each ``cycle``: with ATR period 1 and a window of
    ``cycle`` bars, the bar at position j of a cycle has ATR percentile (j + 1) / cycle."""
    index = pd.date_range(DAY0, periods=n, freq=BAR)
    spans = 0.001 * (1 + np.arange(n) % cycle)
    return pd.DataFrame(
        {"open": 1.1, "high": 1.1 + spans / 2, "low": 1.1 - spans / 2, "close": 1.1, "volume": 1.0},
        index=index,
    )


VOL_RULES = PatternRules(volatility_window=20, atr_period=1)


def decided_on(bars: pd.DataFrame, positions: list[int], wins: list[bool]) -> list[dict]:
    """Trades decided on bars at ``positions`` (so entered at the next bar's open)."""
    return [at(bars.index[i] + BAR, win=w) for i, w in zip(positions, wins, strict=True)]


def test_losers_in_high_volatility_are_a_volatility_pattern():
    bars = cyclic_bars()
    cycles = range(2, 12)
    high = [20 * c + 19 for c in cycles]  # percentile 1.0
    mid = [20 * c + 10 for c in cycles]  # 0.55
    low = [20 * c for c in cycles]  # 0.05
    outcomes = [False] * 8 + [True] * 2
    wins = [True] * 8 + [False] * 2
    trades = pd.DataFrame(
        decided_on(bars, high, outcomes) + decided_on(bars, mid, wins) + decided_on(bars, low, wins)
    )
    percentile = atr_percentile(bars, 20, 1)
    assert percentile.iloc[high].eq(1.0).all() and percentile.iloc[low].eq(0.05).all()

    analysis = analyze_loser_patterns(trades, bars, VOL_RULES)

    assert flagged(list(analysis.patterns)) == [("volatility", "high")]
    (p,) = analysis.patterns
    assert (p.trades, p.losers, p.atr_percentile) == (10, 8, (2 / 3, 1.0))
    assert (p.volatility_window, p.atr_period) == (20, 1)
    vol = analysis.buckets.loc[analysis.buckets["dimension"] == "volatility"]
    assert dict(zip(vol["bucket"], vol["losers"], strict=True)) == {"low": 2, "mid": 2, "high": 8}
    assert analysis.skipped == {} and analysis.notes == ()


def test_without_bars_the_volatility_dimension_is_skipped_with_a_reason():
    bars = cyclic_bars()
    trades = pd.DataFrame(decided_on(bars, [20 * c + 19 for c in range(2, 12)], [False] * 10))

    analysis = analyze_loser_patterns(trades, None, VOL_RULES)

    assert "volatility" not in set(analysis.buckets["dimension"])
    assert "no bars" in analysis.skipped["volatility"]


def test_trades_before_the_volatility_window_fills_are_left_out_and_noted():
    bars = cyclic_bars()
    trades = pd.DataFrame(decided_on(bars, [5, 10, 300], [False, True, False]))
    trades.loc[len(trades)] = at(bars.index[-1] + 10 * BAR, win=True)  # no decision bar

    analysis = analyze_loser_patterns(trades, bars, VOL_RULES)

    vol = analysis.buckets.loc[analysis.buckets["dimension"] == "volatility"]
    assert vol["trades"].sum() == 1
    assert any("2 trade(s) decided before 20 ATR values" in n for n in analysis.notes)
    assert any("1 trade(s) without their decision bar" in n for n in analysis.notes)


# --- the flag rule -------------------------------------------------------------------------


def verdict(analysis, dimension: str, bucket: str) -> str:
    rows = analysis.buckets
    row = rows.loc[(rows["dimension"] == dimension) & (rows["bucket"] == bucket)].iloc[0]
    assert not row["flagged"]
    return row["verdict"]


def test_not_enough_trades_in_the_bucket_no_flag():
    # Seven trades, all losers, against a 20% baseline: striking, but below min_trades.
    analysis = analyze_loser_patterns(pd.DataFrame(in_hour(14, 0, 7) + spread(33, 2)))

    assert analysis.patterns == ()
    assert verdict(analysis, "hour_of_day", "14:00-15:00 UTC") == "7 trades < 8"


def test_not_enough_losers_in_the_bucket_no_flag():
    analysis = analyze_loser_patterns(pd.DataFrame(in_hour(14, 4, 4) + spread(40, 0)))

    assert analysis.patterns == ()
    assert verdict(analysis, "hour_of_day", "14:00-15:00 UTC") == "4 losers < 5"


def test_not_significant_no_flag():
    # 6 of 8 lost (75%) against a 50% baseline: 25 points above, but P[X >= 6] = 37/256.
    analysis = analyze_loser_patterns(pd.DataFrame(in_hour(14, 2, 6) + spread(18, 14)))

    assert analysis.baseline_loss_rate == pytest.approx(0.5)
    assert analysis.patterns == ()
    row = verdict(analysis, "hour_of_day", "14:00-15:00 UTC")
    assert row == "not significant (p = 0.145 >= 0.1)"


def test_significant_but_too_small_an_excess_no_flag():
    # 30 of 60 lost (50%) against 33%: p < 0.01, but only 17 points above the model.
    analysis = analyze_loser_patterns(pd.DataFrame(in_hour(14, 30, 30) + spread(104, 36)))

    row = analysis.buckets.loc[analysis.buckets["bucket"] == "14:00-15:00 UTC"].iloc[0]
    assert row["p_value"] < 0.01
    assert analysis.patterns == ()
    assert row["verdict"].startswith("loss rate only +17 pts")


def test_an_excess_of_exactly_min_excess_counts():
    # 15 of 20 lost (75%) against 55% overall: exactly 0.20 above.
    trades = pd.DataFrame(in_hour(14, 5, 15) + spread(31, 29))
    rules = PatternRules(max_p_value=0.5)

    analysis = analyze_loser_patterns(trades, None, rules)

    assert analysis.baseline_loss_rate == pytest.approx(0.55)
    assert flagged(list(analysis.patterns)) == [("hour_of_day", "14:00-15:00 UTC")]


def test_trades_of_two_models_are_refused():
    trades = pd.DataFrame(in_hour(14, 1, 1) + in_hour(15, 1, 1, symbol="GBPUSD"))
    with pytest.raises(ValueError, match="per model"):
        find_loser_patterns(trades, None)


def test_no_trades_no_patterns():
    assert find_loser_patterns(pd.DataFrame(), None) == []


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="divide 24"):
        PatternRules(hour_block=5)
    with pytest.raises(ValueError, match="increasing"):
        PatternRules(confidence_edges=(0.7, 0.5))


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (6, 8, 0.5, 37 / 256),
        (0, 8, 0.5, 1.0),
        (9, 8, 0.5, 0.0),
        (3, 3, 0.2, 0.008),
        (1, 5, 0.0, 0.0),
        (5, 5, 1.0, 1.0),
    ],
)
def test_binomial_tail_exact_values(k, n, p, expected):
    assert binomial_tail(k, n, p) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(("k", "n", "p"), [(9, 10, 0.375), (30, 60, 0.33), (700, 2000, 0.3)])
def test_binomial_tail_matches_scipy(k, n, p):
    stats = pytest.importorskip("scipy.stats")
    assert binomial_tail(k, n, p) == pytest.approx(
        stats.binomtest(k, n, p, alternative="greater").pvalue, rel=1e-9
    )


# --- weights -------------------------------------------------------------------------------


def test_rows_entering_in_a_flagged_hour_are_weighted():
    (pattern,) = find_loser_patterns(pd.DataFrame(in_hour(14, 1, 9) + spread(24, 6)), None)
    times = pd.date_range(DAY0, periods=96, freq=BAR)  # two days of decision bars

    weights = pattern_weights([pattern], times, BAR)

    # Decided at 13:30 or 14:00 -> entered at 14:00 or 14:30.
    expected = np.where(np.isin((times + BAR).hour, [14]), 1.5, 1.0)
    np.testing.assert_array_equal(weights, expected)
    assert weights.sum() == 96 + 4 * 0.5


def test_rows_in_a_flagged_volatility_regime_are_weighted():
    bars = cyclic_bars()
    pattern = LoserPattern(
        "EURUSD_30T", "volatility", "high", 10, 2, 8, 0.8, 0.4, 0.01, "",
        atr_percentile=(2 / 3, 1.0), volatility_window=20, atr_period=1,
    )  # fmt: skip

    weights = pattern_weights([pattern], bars.index, BAR, bars, boost=2.0)

    position = np.arange(len(bars)) % 20
    warm = np.arange(len(bars)) < 19
    np.testing.assert_array_equal(weights, np.where(~warm & (position >= 13), 2.0, 1.0))


def test_confidence_and_holding_patterns_select_no_rows():
    trades = pd.DataFrame(spread(1, 9, confidence=0.85) + spread(24, 6, confidence=0.45))
    patterns = find_loser_patterns(trades, None)
    times = pd.date_range(DAY0, periods=48, freq=BAR)

    assert len(patterns) == 1
    np.testing.assert_array_equal(pattern_weights(patterns, times, BAR), np.ones(48))


def test_volatility_weights_need_bars():
    pattern = LoserPattern(
        "EURUSD_30T", "volatility", "high", 10, 2, 8, 0.8, 0.4, 0.01, "", atr_percentile=(0.6, 1.0)
    )
    with pytest.raises(ValueError, match="needs the model's bars"):
        pattern_weights([pattern], pd.date_range(DAY0, periods=4, freq=BAR), BAR)


def test_patterns_round_trip_through_a_dict():
    (pattern,) = find_loser_patterns(pd.DataFrame(in_hour(14, 1, 9) + spread(24, 6)), None)
    data = pattern.to_dict()

    assert data["hours"] == [14] and math.isfinite(data["p_value"])
    assert LoserPattern.from_dict(data) == pattern
