"""Bar validation: every rule fails loudly with where and what to do; repairs are recorded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_learning.domain.bar_gaps import expected_bar_times, find_gaps, trading_time
from session_learning.domain.bars import BarDataError, BarReport, bars_in_window, validate_bars
from session_learning.domain.keys import BAR_COLUMNS, TIMEFRAMES, ModelKey
from session_learning.domain.synthetic import generate_bars

KEY = ModelKey("EURUSD", "30T")
MONDAY = pd.Timestamp("2024-01-08 00:00", tz="UTC")


def bars(times: list[str] | pd.DatetimeIndex, price: float = 1.1, **columns: list) -> pd.DataFrame:
    """Flat, valid bars at ``times``; ``columns`` override single columns."""
    index = pd.DatetimeIndex(times, name="time")
    n = len(index)
    frame = pd.DataFrame(
        {
            "open": np.full(n, price),
            "high": np.full(n, price + 0.001),
            "low": np.full(n, price - 0.001),
            "close": np.full(n, price),
            "volume": np.full(n, 100.0),
        },
        index=index,
    )
    for name, values in columns.items():
        frame[name] = np.asarray(values, dtype=float)
    return frame


def grid(start: pd.Timestamp = MONDAY, n: int = 10, bar: pd.Timedelta = KEY.bar) -> list:
    return list(pd.date_range(start, periods=n, freq=bar))


def error(frame: pd.DataFrame, **kwargs) -> BarDataError:
    with pytest.raises(BarDataError) as info:
        validate_bars(frame, KEY, **kwargs)
    return info.value


def test_clean_bars_pass_unchanged():
    frame = bars(grid())
    report = validate_bars(frame, KEY)
    assert report.bars is frame
    assert report.repairs == () and report.gaps == () and report.warnings == ()
    assert report.input_rows == 10 and report.dropped_duplicates == 0


@pytest.mark.parametrize("timeframe", list(TIMEFRAMES))
def test_synthetic_bars_pass_every_rule(timeframe):
    key = ModelKey("XAUUSD", timeframe)
    frame = generate_bars(key.symbol, timeframe, "2024-01-01", "2024-03-01")
    end = pd.Timestamp("2024-03-01", tz="UTC")
    report = validate_bars(frame, key, now=end, max_staleness=pd.Timedelta(hours=1))
    assert report.gaps == () and report.repairs == () and report.warnings == ()


def test_metadata_is_plain_values():
    frame = bars([t for i, t in enumerate(grid(n=20)) if i not in (3, 4, 10)])
    meta = validate_bars(frame, KEY).to_metadata()
    assert meta["gap_count"] == 2 and meta["missing_bars"] == 3
    assert meta["largest_gap"].startswith("2024-01-08T01:30:00+00:00")
    assert all(isinstance(v, str | int | float) for v in meta.values())


# --- shape ---------------------------------------------------------------------------------


def test_missing_columns():
    err = error(bars(grid()).drop(columns=["volume", "low"]))
    assert err.kind == "columns"
    assert "missing columns low, volume" in str(err) and "EURUSD 30T" in str(err)


def test_non_float_column():
    frame = bars(grid())
    frame["volume"] = frame["volume"].astype(int)
    err = error(frame)
    assert err.kind == "dtype" and "volume is int64" in str(err)


def test_naive_times_are_an_error_even_with_repair():
    err = error(bars(grid()).tz_localize(None), repair=True)
    assert err.kind == "timezone"
    assert "no time zone" in str(err) and "2024-01-08T00:00:00" in str(err)
    assert "tz_localize('UTC')" in str(err)


def test_not_a_datetime_index():
    err = error(bars(grid()).reset_index(drop=True))
    assert err.kind == "index" and "RangeIndex" in str(err)


def test_other_zone_is_converted_only_as_a_repair():
    frame = bars(grid()).tz_convert("Europe/Berlin")
    assert error(frame).kind == "timezone"
    report = validate_bars(frame, KEY, repair=True)
    assert str(report.bars.index.tz) == "UTC"
    assert report.bars.index.equals(bars(grid()).index)
    assert report.repairs == ("converted bar times from Europe/Berlin to UTC",)


# --- duplicates and order -------------------------------------------------------------------


def test_identical_duplicates_are_dropped_and_recorded():
    frame = bars(grid())
    doubled = pd.concat([frame.iloc[:5], frame.iloc[[2, 2]], frame.iloc[5:]])
    err = error(doubled)
    assert err.kind == "duplicates" and "repair=True" in str(err)
    report = validate_bars(doubled, KEY, repair=True)
    pd.testing.assert_frame_equal(report.bars, frame)
    assert report.dropped_duplicates == 2 and report.input_rows == 12
    assert report.repairs == (
        "dropped 2 bars repeating an identical bar (first at 2024-01-08T01:00:00+00:00)",
    )


def test_conflicting_duplicates_are_an_error_even_with_repair():
    frame = bars(grid())
    other = frame.iloc[[3]].assign(close=1.1005)
    err = error(pd.concat([frame, other]), repair=True)
    assert err.kind == "duplicates" and err.count == 1
    assert err.first == pd.Timestamp("2024-01-08 01:30", tz="UTC")
    assert "different values" in str(err) and "2024-01-08T01:30:00+00:00" in str(err)


def test_unsorted_bars_are_sorted_and_recorded():
    frame = bars(grid())
    shuffled = frame.iloc[[0, 1, 4, 2, 3, 5, 6, 7, 8, 9]]
    assert error(shuffled).kind == "order"
    report = validate_bars(shuffled, KEY, repair=True)
    pd.testing.assert_frame_equal(report.bars, frame)
    assert report.repairs == (
        "sorted bars into time order (1 out of order, first at 2024-01-08T01:00:00+00:00)",
    )


# --- grid and values ------------------------------------------------------------------------


def test_off_grid_times():
    times = grid()
    times[4] = times[4] + pd.Timedelta(minutes=7)
    err = error(bars(times))
    assert err.kind == "grid" and err.first == times[4]
    assert "30T grid" in str(err) and "2024-01-08T02:07:00+00:00" in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_prices_name_the_first_bar_and_count(bad):
    closes = np.full(10, 1.1)
    closes[[6, 8]] = bad
    err = error(bars(grid(), close=closes), repair=True)
    assert err.kind == "non_finite" and err.count == 2
    assert "2 bars have NaN or infinite prices (first at 2024-01-08T03:00:00+00:00)" in str(err)
    assert "never filled" in str(err)


def test_nan_volume():
    volume = np.full(10, 5.0)
    volume[1] = np.nan
    assert error(bars(grid(), volume=volume)).kind == "non_finite"


@pytest.mark.parametrize(
    ("column", "value", "kind", "text"),
    [
        ("high", 1.0, "ohlc", "high below low"),
        ("open", 1.2, "ohlc", "open or close outside [low, high]"),
        ("close", 1.05, "ohlc", "open or close outside [low, high]"),
        ("volume", -1.0, "volume", "negative volume"),
    ],
)
def test_inconsistent_values(column, value, kind, text):
    values = bars(grid())[column].to_numpy().copy()
    values[5] = value
    err = error(bars(grid(), **{column: values}))
    assert err.kind == kind and text in str(err)
    assert err.first == grid()[5] and err.count == 1


def test_non_positive_prices():
    frame = bars(grid(), price=0.0005)  # low = -0.0005
    assert error(frame).kind == "non_positive"
    frame = bars(grid()).assign(open=0.0, low=0.0)
    assert error(frame).kind == "non_positive"


def test_zero_volume_is_fine():
    validate_bars(bars(grid(), volume=np.zeros(10)), KEY)


# --- gaps and calendars ---------------------------------------------------------------------


def test_short_gap_is_recorded_not_an_error():
    times = [t for i, t in enumerate(grid(n=48)) if not 10 <= i < 14]
    report = validate_bars(bars(times), KEY)
    (gap,) = report.gaps
    assert gap.start == grid()[0] + 10 * KEY.bar and gap.end == grid()[0] + 14 * KEY.bar
    assert gap.missing_bars == 4 and gap.length == pd.Timedelta(hours=2)
    assert report.largest_gap == gap and report.missing_bars == 4
    assert any("1 gap, 4 missing bars" in w for w in report.warnings)


def test_gap_longer_than_max_gap_is_an_error():
    times = grid(n=48 * 3)
    times = times[:10] + times[10 + 49 :]  # 49 bars = 24.5 h missing
    err = error(bars(times), calendar="24/5")
    assert err.kind == "gap" and err.first == times[9] + KEY.bar
    assert "longer than max_gap 24h" in str(err) and "49 bars" in str(err)
    assert (
        validate_bars(bars(times), KEY, max_gap=pd.Timedelta(hours=25), calendar="24/5")
        .gaps[0]
        .missing_bars
        == 49
    )
    assert validate_bars(bars(times), KEY, max_gap=None, calendar="24/5").missing_bars == 49
    # On EURUSD's own calendar the daily break (22:00-23:00 UTC in winter) is closed: the same
    # hole is 47 missing bars and 23.5 hours of trading time, within max_gap.
    (gap,) = validate_bars(bars([t for t in times if t.hour != 22]), KEY).gaps
    assert gap.missing_bars == 47 and gap.length == pd.Timedelta(hours=23.5)


def test_weekend_is_not_a_gap_under_24_5_but_is_under_24_7():
    friday = pd.Timestamp("2024-01-12 20:00", tz="UTC")
    times = grid(friday, n=8) + grid(pd.Timestamp("2024-01-15", tz="UTC"), n=4)
    times = [t for t in times if t.day_of_week < 5]
    report = validate_bars(bars(times), KEY, calendar="24/5")
    assert report.gaps == ()
    err = error(bars(times), calendar="24/7")
    assert err.kind == "gap" and err.first == pd.Timestamp("2024-01-13", tz="UTC")


def test_gap_across_the_weekend_counts_trading_time_only():
    # Friday 20:00 .. Monday 04:00 missing: 8 trading hours, not 56 wall-clock hours.
    times = [pd.Timestamp("2024-01-12 19:30", tz="UTC"), pd.Timestamp("2024-01-15 04:00", tz="UTC")]
    (gap,) = validate_bars(bars(times), KEY, calendar="24/5").gaps
    assert gap.length == pd.Timedelta(hours=8) and gap.missing_bars == 16
    # CME Globex FX: Friday 20:00-22:00 and Sunday 23:00-Monday 04:00 are open, 7 hours.
    (gap,) = validate_bars(bars(times), KEY).gaps
    assert gap.length == pd.Timedelta(hours=7) and gap.missing_bars == 14


def test_weekend_bars_are_kept_with_a_warning():
    sunday = pd.Timestamp("2024-01-14 22:00", tz="UTC")
    times = grid(sunday, n=8)
    report = validate_bars(bars(times), KEY, calendar="24/5")
    assert len(report.bars) == 8
    assert report.warnings[0].startswith(
        "4 bars open while the 24/5 calendar is closed (first at 2024-01-14T22:00:00+00:00, a Sunday)"
    )
    # CME Globex FX opens on Sunday at 23:00 UTC in winter: only the 22:00 and 22:30 bars are
    # outside it.
    report = validate_bars(bars(times), KEY)
    assert report.warnings[0].startswith("2 bars open while the CMEGlobex_FX calendar is closed")


def test_unknown_calendar():
    with pytest.raises(ValueError, match="unknown trading calendar '24/6'"):
        validate_bars(bars(grid()), KEY, calendar="24/6")


def test_trading_time_and_expected_times():
    friday = pd.Timestamp("2024-01-12 22:00", tz="UTC")
    monday = pd.Timestamp("2024-01-15 02:00", tz="UTC")
    assert trading_time(friday, monday) == pd.Timedelta(hours=4)
    assert trading_time(friday, monday, "24/7") == pd.Timedelta(hours=52)
    assert len(expected_bar_times(friday, monday, pd.Timedelta(hours=1))) == 5
    assert find_gaps(pd.DatetimeIndex([friday]), pd.Timedelta(hours=1)) == ()


# --- staleness ------------------------------------------------------------------------------


def test_stale_data_is_an_error():
    frame = bars(grid(n=10))  # last bar opens 04:30, closes 05:00
    now = pd.Timestamp("2024-01-08 08:00", tz="UTC")
    validate_bars(frame, KEY, now=now, max_staleness=pd.Timedelta(hours=3))
    err = error(frame, now=now, max_staleness=pd.Timedelta(hours=2))
    assert err.kind == "stale"
    assert "newest bar opened at 2024-01-08T04:30:00+00:00" in str(err) and "3h" in str(err)


def test_weekend_does_not_make_data_stale_under_24_5():
    friday_close = grid(pd.Timestamp("2024-01-12 23:30", tz="UTC"), n=1)
    sunday = pd.Timestamp("2024-01-14 23:00", tz="UTC")
    validate_bars(
        bars(friday_close), KEY, now=sunday, max_staleness=pd.Timedelta(hours=1), calendar="24/5"
    )
    err = error(
        bars(friday_close), now=sunday, max_staleness=pd.Timedelta(hours=1), calendar="24/7"
    )
    assert err.kind == "stale"


def test_no_bars_are_stale_and_future_bars_are_an_error():
    empty = bars([]).tz_localize("UTC")
    report = validate_bars(empty, KEY)
    assert report.warnings == ("no bars",)
    now = MONDAY + pd.Timedelta(hours=2)
    assert error(empty, now=now, max_staleness=pd.Timedelta(hours=1)).kind == "stale"
    err = error(bars(grid()), now=now)
    assert err.kind == "future" and err.count == 5 and err.first == now + KEY.bar


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_bars(bars(grid()), KEY, now=pd.Timestamp("2024-01-09"))


def test_bars_in_window_keeps_order_and_duplicates():
    frame = bars(grid()).iloc[[3, 1, 1, 9, 0]]
    window = bars_in_window(frame, KEY, "2024-01-08 00:30", MONDAY + 9 * KEY.bar)
    assert list(window.index) == [grid()[3], grid()[1], grid()[1]]
    with pytest.raises(BarDataError, match="no time zone"):
        bars_in_window(frame.tz_localize(None), KEY, MONDAY, MONDAY)


def test_report_is_frozen():
    report = validate_bars(bars(grid()), KEY)
    with pytest.raises(AttributeError):
        report.repairs = ("x",)  # type: ignore[misc]


# --- property: validate (recording every repair) or refuse, never lose a row silently -------

_STEP = KEY.bar


_BAD_PRICES = (np.nan, np.inf, 0.0, -1.0)


@st.composite
def messy_bars(draw) -> pd.DataFrame:
    """Mostly clean bars with, now and then, each kind of defect: off-grid times, bad values,
    inconsistent OHLC, conflicting and identical duplicates, any order."""
    slots = draw(st.lists(st.integers(0, 120), max_size=14, unique=True))
    if slots and draw(st.integers(0, 4)) == 0:
        slots.append(draw(st.sampled_from(slots)))  # a conflicting bar at a taken time
    rows = []
    for slot in slots:
        stamp = MONDAY + slot * _STEP
        if draw(st.integers(0, 100)) == 0:
            stamp += pd.Timedelta(minutes=draw(st.integers(1, 29)))
        low = draw(st.floats(0.5, 2.0))
        high = low + draw(st.floats(0.0, 0.01))
        row = {
            "time": stamp,
            "open": draw(st.floats(low, high)),
            "high": high,
            "low": low,
            "close": draw(st.floats(low, high)),
            "volume": draw(st.floats(0, 1e6)),
        }
        if draw(st.integers(0, 30)) == 0:
            row[draw(st.sampled_from(BAR_COLUMNS))] = draw(st.sampled_from(_BAD_PRICES))
        if draw(st.integers(0, 40)) == 0:
            row["high"], row["low"] = row["low"] - 0.01, row["high"]
        rows.append(row)
    if rows:
        # Exact repeats of earlier rows, then any order.
        rows += [rows[i] for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=4))]
        order = draw(st.permutations(range(len(rows))))
        rows = [rows[i] for i in order]
    frame = pd.DataFrame(rows, columns=["time", *BAR_COLUMNS]).astype(
        dict.fromkeys(BAR_COLUMNS, float)
    )
    return frame.set_index(pd.DatetimeIndex(frame.pop("time"), name="time", tz="UTC"))


def _rows(frame: pd.DataFrame) -> Counter:
    return Counter(zip(frame.index, *(frame[c] for c in BAR_COLUMNS), strict=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=messy_bars(),
    repair=st.booleans(),
    max_gap_hours=st.one_of(st.none(), st.integers(1, 48)),
)
def test_validates_with_recorded_repairs_or_refuses(frame, repair, max_gap_hours):
    before = frame.copy()
    max_gap = None if max_gap_hours is None else pd.Timedelta(hours=max_gap_hours)
    try:
        report = validate_bars(frame, KEY, repair=repair, max_gap=max_gap)
    except BarDataError as err:
        assert str(err).startswith("EURUSD 30T: ")
        return
    finally:
        pd.testing.assert_frame_equal(frame, before)  # the input is never modified
    assert isinstance(report, BarReport)
    out = report.bars
    assert report.input_rows == len(frame) == len(out) + report.dropped_duplicates
    assert out.index.is_unique and out.index.is_monotonic_increasing
    # The output holds exactly the distinct input rows, unchanged.
    assert set(_rows(out)) == set(_rows(frame)) and max(_rows(out).values(), default=1) == 1
    assert bool(report.dropped_duplicates) == any(r.startswith("dropped") for r in report.repairs)
    deduped = frame.loc[~frame.index.duplicated()]
    assert (not deduped.index.is_monotonic_increasing) == any(
        r.startswith("sorted") for r in report.repairs
    )
    if not repair:
        assert report.repairs == () and out is frame
