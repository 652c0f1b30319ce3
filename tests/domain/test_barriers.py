import math

import numpy as np
import pytest

from session_learning.domain import barriers
from session_learning.domain.barriers import (
    REASONS,
    Touch,
    first_touch,
    first_touch_many,
)
from tests.builders import random_ohlc


def columns(rows):
    """(high, low, close, open) arrays from rows of (open, high, low, close)."""
    o, h, lo, c = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    return h, lo, c, o


def random_bars(seed, n):
    """(high, low, close, open) arrays of consistent random bars (see tests.builders)."""
    o, h, lo, c = random_ohlc(seed, n).T
    return h, lo, c, o


def reference_touch(high, low, close, open_, start, direction, tp, sl, max_bars):
    """Bar-by-bar statement of the rules, written independently of the module."""
    n = len(close)
    for k in range(start, min(start + max_bars, n)):
        if direction == 1:
            gap_stop, gap_take = open_[k] <= sl, open_[k] >= tp
            stop, take = low[k] <= sl, high[k] >= tp
        else:
            gap_stop, gap_take = open_[k] >= sl, open_[k] <= tp
            stop, take = high[k] >= sl, low[k] <= tp
        if gap_stop:
            return Touch(k, open_[k], "stop_loss")
        if gap_take:
            return Touch(k, tp, "take_profit")
        if stop:
            return Touch(k, sl, "stop_loss")
        if take:
            return Touch(k, tp, "take_profit")
    if start + max_bars <= n:
        return Touch(start + max_bars - 1, close[start + max_bars - 1], "timeout")
    return Touch(-1, math.nan, "open")


def same_touch(a, b):
    return (
        a.exit_idx == b.exit_idx
        and a.reason == b.reason
        and (
            a.exit_price == b.exit_price or (math.isnan(a.exit_price) and math.isnan(b.exit_price))
        )
    )


# A long entered at 100 on bar 1 with take profit 102 and stop 99 (a short: 98 / 101).
QUIET = (100.0, 100.5, 99.5, 100.0)


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ((100.5, 102.5, 100.0, 102.0), Touch(2, 102.0, "take_profit")),
        ((100.5, 101.0, 98.9, 99.2), Touch(2, 99.0, "stop_loss")),
        ((100.5, 102.0, 99.0, 100.0), Touch(2, 99.0, "stop_loss")),  # both touched exactly
        ((100.5, 102.5, 98.5, 101.0), Touch(2, 99.0, "stop_loss")),  # both in one bar
        ((98.0, 98.5, 97.5, 98.2), Touch(2, 98.0, "stop_loss")),  # gap through the stop
        ((103.0, 103.5, 102.5, 103.2), Touch(2, 102.0, "take_profit")),  # gap gain not credited
        ((103.0, 103.5, 98.0, 98.5), Touch(2, 102.0, "take_profit")),  # open decides the bar
    ],
)
def test_long_resolution(bar, expected):
    rows = [QUIET, QUIET, bar, QUIET, QUIET]
    assert first_touch(*columns(rows), 1, 1, 102.0, 99.0, 4) == expected


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ((99.5, 100.0, 97.9, 98.2), Touch(2, 98.0, "take_profit")),
        ((99.5, 101.2, 99.0, 101.0), Touch(2, 101.0, "stop_loss")),
        ((99.5, 101.5, 97.5, 99.0), Touch(2, 101.0, "stop_loss")),
        ((102.0, 102.5, 101.5, 102.2), Touch(2, 102.0, "stop_loss")),
        ((97.0, 97.5, 96.5, 97.2), Touch(2, 98.0, "take_profit")),
        ((97.0, 102.0, 96.5, 101.5), Touch(2, 98.0, "take_profit")),
    ],
)
def test_short_resolution(bar, expected):
    rows = [QUIET, QUIET, bar, QUIET, QUIET]
    assert first_touch(*columns(rows), 1, -1, 98.0, 101.0, 4) == expected


def test_entry_bar_counts():
    rows = [QUIET, (100.0, 102.1, 99.8, 101.0), QUIET]
    assert first_touch(*columns(rows), 1, 1, 102.0, 99.0, 2) == Touch(1, 102.0, "take_profit")


def test_timeout_exits_at_close_of_last_window_bar():
    rows = [QUIET, QUIET, (100.0, 101.0, 99.5, 100.7), (100.7, 101.9, 99.1, 101.3), QUIET]
    # Window = bars 1, 2, 3; bar 4 would stop out but lies beyond the holding window.
    rows[4] = (101.3, 101.5, 98.0, 98.2)
    assert first_touch(*columns(rows), 1, 1, 102.0, 99.0, 3) == Touch(3, 101.3, "timeout")


def test_open_when_data_ends_before_window():
    rows = [QUIET, QUIET, QUIET]
    touch = first_touch(*columns(rows), 1, 1, 102.0, 99.0, 3)
    assert touch.reason == "open" and touch.exit_idx == -1 and math.isnan(touch.exit_price)
    # The window is exactly complete with one more bar: a timeout, not open.
    complete = first_touch(*columns([*rows, QUIET]), 1, 1, 102.0, 99.0, 3)
    assert complete == Touch(3, 100.0, "timeout")


def test_touch_in_incomplete_window_is_resolved():
    rows = [QUIET, QUIET, (100.0, 100.2, 98.0, 98.5)]
    assert first_touch(*columns(rows), 1, 1, 102.0, 99.0, 10) == Touch(2, 99.0, "stop_loss")


def test_start_past_data_is_open():
    touch = first_touch(*columns([QUIET, QUIET]), 2, 1, 102.0, 99.0, 1)
    assert touch.reason == "open" and touch.exit_idx == -1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": 0},
        {"direction": 2},
        {"max_bars": 0},
        {"tp_price": math.nan},
        {"sl_price": math.nan},
        {"start_idx": -1},
    ],
)
def test_invalid_arguments(kwargs):
    args = dict(start_idx=1, direction=1, tp_price=102.0, sl_price=99.0, max_bars=3) | kwargs
    with pytest.raises(ValueError):
        first_touch(*columns([QUIET] * 5), **args)


@pytest.mark.parametrize("seed", range(25))
def test_first_touch_matches_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    high, low, close, open_ = random_bars(seed, 120)
    for _ in range(150):
        start = int(rng.integers(0, 125))
        direction = int(rng.choice([-1, 1]))
        max_bars = int(rng.integers(1, 15))
        entry = open_[min(start, 119)]
        tp = entry + direction * 0.25 * int(rng.integers(1, 12))
        sl = entry - direction * 0.25 * int(rng.integers(0, 8))
        args = (high, low, close, open_, start, direction, tp, sl, max_bars)
        got, want = first_touch(*args), reference_touch(*args)
        assert same_touch(got, want), (args[4:], got, want)


@pytest.mark.parametrize("seed", range(25))
def test_vectorized_matches_first_touch_row_by_row(seed):
    rng = np.random.default_rng(seed)
    n = 200
    high, low, close, open_ = random_bars(seed, n)
    max_bars = int(rng.integers(2, 10))
    starts = np.arange(n + 1)
    direction = rng.choice([-1, 1], size=n + 1)
    entry = np.r_[open_, open_[-1]]
    tp = entry + direction * 0.25 * rng.integers(1, 12, n + 1)
    sl = entry - direction * 0.25 * rng.integers(1, 8, n + 1)
    many = first_touch_many(high, low, close, open_, starts, direction, tp, sl, max_bars)
    names = many.reason_names()
    assert len(many) == n + 1
    for k, start in enumerate(starts):
        one = first_touch(high, low, close, open_, start, direction[k], tp[k], sl[k], max_bars)
        got = Touch(int(many.exit_idx[k]), float(many.exit_price[k]), names[k])
        assert same_touch(got, one), (k, got, one)
    # Every outcome kind occurs, so the comparison exercised each rule.
    assert set(names) == set(REASONS)


def test_vectorized_chunks_agree(monkeypatch):
    high, low, close, open_ = random_bars(7, 300)
    starts = np.arange(300)
    tp, sl = open_ + 2.0, open_ - 1.0
    whole = first_touch_many(high, low, close, open_, starts, 1, tp, sl, 20)
    monkeypatch.setattr(barriers, "_CHUNK_CELLS", 37)  # many small, uneven chunks
    chunked = first_touch_many(high, low, close, open_, starts, 1, tp, sl, 20)
    np.testing.assert_array_equal(whole.exit_idx, chunked.exit_idx)
    np.testing.assert_array_equal(whole.reason, chunked.reason)
    np.testing.assert_array_equal(whole.exit_price, chunked.exit_price)


def test_vectorized_rejects_bad_input():
    high, low, close, open_ = random_bars(0, 10)
    with pytest.raises(ValueError):
        first_touch_many(high, low, close, open_, [0, 11], 1, [1.0, 1.0], [0.0, 0.0], 3)
    with pytest.raises(ValueError):
        first_touch_many(high, low, close, open_, [0], 1, [math.nan], [0.0], 3)
    with pytest.raises(ValueError):
        first_touch_many(high, low, close, open_, [0], 0, [1.0], [0.0], 3)
    empty = first_touch_many(high, low, close, open_, [], 1, [], [], 3)
    assert len(empty) == 0
