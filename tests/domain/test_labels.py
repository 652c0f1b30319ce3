import math

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.barriers import first_touch
from session_learning.domain.labels import label_horizon_end, triple_barrier_labels
from tests.builders import ohlc_frame, random_ohlc


def make_bars(rows, start="2025-01-06 00:00"):
    return ohlc_frame(rows, start)


def random_bars(seed, n):
    rng = np.random.default_rng(seed + 10_000)
    bars = make_bars(random_ohlc(seed, n))
    atr = pd.Series(rng.integers(1, 12, n) * 0.25, dtype=float)
    return bars, atr.set_axis(bars.index)


ROWS = [
    (100.0, 100.5, 99.5, 100.0),
    (100.0, 100.5, 99.5, 100.2),
    (100.2, 102.5, 100.1, 102.3),
    (102.3, 102.6, 101.0, 101.2),
    (101.2, 101.4, 99.0, 99.2),
    (99.2, 99.5, 98.9, 99.0),
    (99.0, 99.3, 98.8, 99.1),
    (99.1, 99.2, 99.0, 99.1),
]


def test_hand_computed_labels():
    bars = make_bars(ROWS)
    atr = pd.Series(1.0, index=bars.index)
    labels = triple_barrier_labels(bars, atr, tp_atr=2.0, sl_atr=1.0, max_bars=3)
    # Row 0: entry 100 (bar 1), long TP 102 reached on bar 2 before its stop 99.
    # Row 1: entry 100.2, long TP 102.2 on bar 2.
    # Row 2: entry 102.3, long stopped at 101.3 on bar 3; short TP 100.3 on bar 4.
    # Row 3: entry 101.2, short TP 99.2 on the entry bar 4, short stop 102.2 never reached.
    # Row 4: entry 99.2, nothing within bars 5..7 on either side: timeout.
    # Rows 5..7: the horizon runs past bar 7.
    expected = [1.0, 1.0, -1.0, -1.0, 0.0, math.nan, math.nan, math.nan]
    pd.testing.assert_series_equal(
        labels, pd.Series(expected, index=bars.index, name="label"), check_exact=True
    )


def test_both_sides_stopped_is_flat():
    rows = [(100.0, 100.2, 99.8, 100.0), (100.0, 101.5, 98.5, 100.0), (100.0,) * 4]
    labels = triple_barrier_labels(
        make_bars(rows),
        pd.Series(1.0, index=make_bars(rows).index),
        tp_atr=2.0,
        sl_atr=1.0,
        max_bars=1,
    )
    assert labels.iloc[0] == 0.0


@pytest.mark.parametrize(
    ("later_bars", "expected"),
    [
        # Long TP 101 on bar 1, short TP 99 later on bar 2: the earlier one wins.
        ([(100.0, 101.2, 99.5, 101.0), (101.0, 101.0, 98.8, 99.0)], 1.0),
        ([(100.0, 100.5, 98.8, 99.0), (99.0, 101.2, 99.0, 101.0)], -1.0),
        # Both take profits inside one bar: ambiguous, so flat.
        ([(100.0, 101.5, 98.5, 100.0), (100.0,) * 4], 0.0),
    ],
)
def test_take_profit_on_both_sides_when_stop_is_wider(later_bars, expected):
    bars = make_bars([(100.0, 100.2, 99.8, 100.0), *later_bars])
    atr = pd.Series(1.0, index=bars.index)
    labels = triple_barrier_labels(bars, atr, tp_atr=1.0, sl_atr=2.0, max_bars=2)
    assert labels.iloc[0] == expected


def test_missing_atr_gives_nan_and_atr_is_aligned_by_index():
    bars = make_bars(ROWS)
    atr = pd.Series(1.0, index=bars.index).drop(bars.index[1])  # row 1 has no ATR
    atr = atr.iloc[::-1]  # order must not matter
    labels = triple_barrier_labels(bars, atr, tp_atr=2.0, sl_atr=1.0, max_bars=3)
    assert math.isnan(labels.iloc[1])
    assert labels.iloc[[0, 2, 3, 4]].tolist() == [1.0, -1.0, -1.0, 0.0]


@pytest.mark.parametrize("seed", range(10))
def test_labels_match_first_touch_row_by_row(seed):
    bars, atr = random_bars(seed, 150)
    tp_atr, sl_atr, max_bars = 1.5, 1.0, 6
    labels = triple_barrier_labels(bars, atr, tp_atr, sl_atr, max_bars)
    o, h, lo, c = (bars[col].to_numpy() for col in ("open", "high", "low", "close"))
    for i in range(len(bars)):
        if i + max_bars >= len(bars):
            assert math.isnan(labels.iloc[i])
            continue
        entry, width = o[i + 1], atr.iloc[i]
        up = first_touch(
            h, lo, c, o, i + 1, 1, entry + tp_atr * width, entry - sl_atr * width, max_bars
        )
        down = first_touch(
            h, lo, c, o, i + 1, -1, entry - tp_atr * width, entry + sl_atr * width, max_bars
        )
        # With tp_atr > sl_atr the two take profits cannot both be reached first.
        assert not (up.reason == down.reason == "take_profit")
        expected = (
            1.0 if up.reason == "take_profit" else -1.0 if down.reason == "take_profit" else 0
        )
        assert labels.iloc[i] == expected, i
    assert set(labels.dropna()) == {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("seed", range(10))
def test_label_depends_only_on_its_horizon(seed):
    """Bars up to the decision bar and after the horizon may change without changing the label."""
    bars, atr = random_bars(seed, 120)
    max_bars = 5
    labels = triple_barrier_labels(bars, atr, 2.0, 1.0, max_bars)
    other, _ = random_bars(seed + 100, 120)  # unrelated prices
    for i in range(0, 120 - max_bars - 1, 7):
        outside = np.r_[0 : i + 1, i + max_bars + 1 : 120]
        changed = bars.copy()
        changed.iloc[outside] = other.iloc[outside]
        relabelled = triple_barrier_labels(changed, atr, 2.0, 1.0, max_bars)
        assert relabelled.iloc[i] == labels.iloc[i], i


def test_label_sees_entry_bar_and_last_horizon_bar():
    base = [(100.0, 100.2, 99.8, 100.0)] * 6
    atr = pd.Series(1.0, index=make_bars(base).index)
    flat = triple_barrier_labels(make_bars(base), atr, 2.0, 1.0, max_bars=3)
    assert flat.iloc[0] == 0.0
    # A take profit on the entry bar (i + 1) and on the last horizon bar (i + 3) both count...
    for k in (1, 3):
        rows = list(base)
        rows[k] = (100.0, 102.5, 99.8, 102.0)
        assert triple_barrier_labels(make_bars(rows), atr, 2.0, 1.0, 3).iloc[0] == 1.0, k
    # ...one bar later (i + 4) does not.
    rows = list(base)
    rows[4] = (100.0, 102.5, 99.8, 102.0)
    assert triple_barrier_labels(make_bars(rows), atr, 2.0, 1.0, 3).iloc[0] == 0.0


def test_label_horizon_end():
    index = pd.date_range("2025-01-06", periods=5, freq="15min", tz="UTC")
    end = label_horizon_end(index, 2)
    assert end.tolist()[:3] == [index[2], index[3], index[4]]
    assert end.iloc[3:].isna().all()
    assert (end.index == index).all()


def test_horizon_end_covers_every_labelled_row():
    bars, atr = random_bars(3, 60)
    labels = triple_barrier_labels(bars, atr, 2.0, 1.0, 4)
    end = label_horizon_end(bars.index, 4)
    assert labels.notna().equals(end.notna())
    labelled = np.flatnonzero(labels.notna())
    assert (end.iloc[labelled].to_numpy() == bars.index[labelled + 4].to_numpy()).all()


@pytest.mark.parametrize("kwargs", [{"tp_atr": 0.0}, {"sl_atr": -1.0}, {"max_bars": 0}])
def test_invalid_parameters(kwargs):
    bars = make_bars(ROWS)
    args = {"tp_atr": 2.0, "sl_atr": 1.0, "max_bars": 3} | kwargs
    with pytest.raises(ValueError):
        triple_barrier_labels(bars, pd.Series(1.0, index=bars.index), **args)
