"""Trading calendars and gap detection against them: closures the calendar knows are never
gaps, missing open sessions are, and no window of bars makes gap detection crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas_market_calendars as mcal
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_learning.domain.bar_gaps import find_gaps
from session_learning.domain.bars import BarDataError, validate_bars
from session_learning.domain.calendars import (
    DEFAULT_SYMBOL_CALENDARS,
    UnknownCalendarError,
    calendar_for,
    calendar_name_for,
    get_calendar,
)
from session_learning.domain.keys import TIMEFRAMES, ModelKey

FX = "CMEGlobex_FX"
METALS = "CMEGlobex_Metals"


def flat_bars(times) -> pd.DataFrame:
    index = pd.DatetimeIndex(times, name="time")
    values = np.ones(len(index))
    return pd.DataFrame(
        {"open": values, "high": values * 1.001, "low": values * 0.999, "close": values,
         "volume": values * 100},
        index=index,
    )  # fmt: skip


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --- the weekend crash ---------------------------------------------------------------------

# Eight Friday bars 20:00-21:45 UTC and one Sunday 23:00 bar: before calendars, find_gaps
# raised IndexError (the run of missing weekday bars reached past the last expected bar).
WEEKEND = pd.DatetimeIndex(
    [*pd.date_range("2024-01-12 20:00", periods=8, freq="15min", tz="UTC"), utc("2024-01-14 23:00")]
)


@pytest.mark.parametrize("calendar", ["24/5", "24/7", FX, METALS])
def test_the_sunday_evening_bar_after_a_friday_close_never_crashes(calendar):
    gaps = find_gaps(WEEKEND, pd.Timedelta(minutes=15), calendar)
    for gap in gaps:
        assert gap.end == WEEKEND[-1]  # the run ends at the Sunday bar, which is present


def test_the_sunday_evening_bar_is_the_market_reopening_on_cme_globex():
    for symbol in ("EURUSD", "XAUUSD"):
        report = validate_bars(flat_bars(WEEKEND), ModelKey(symbol, "15T"))
        assert report.gaps == () and report.warnings == ()


def test_on_the_24_5_fallback_the_same_bars_are_a_short_gap_and_a_weekend_warning():
    report = validate_bars(flat_bars(WEEKEND), ModelKey("EURUSD", "15T"), calendar="24/5")
    (gap,) = report.gaps
    assert (gap.start, gap.end, gap.missing_bars) == (utc("2024-01-12 22:00"), WEEKEND[-1], 8)
    assert gap.length == pd.Timedelta(hours=2)
    assert "1 bar open while the 24/5 calendar is closed" in report.warnings[0]


# --- closures are not gaps; missing sessions are, with their dates -------------------------


def calendar_bars(calendar: str, start: str, end: str, bar: pd.Timedelta) -> pd.DataFrame:
    times = get_calendar(calendar).expected_bar_times(start, pd.Timestamp(end) - bar, bar)
    return flat_bars(times)


@pytest.mark.parametrize("symbol", ["EURUSD", "GBPUSD", "XAUUSD", "XAGUSD"])
def test_christmas_and_new_year_are_not_gaps(symbol):
    key = ModelKey(symbol, "15T")
    frame = calendar_bars(calendar_name_for(symbol), "2023-12-18", "2024-01-08", key.bar)
    report = validate_bars(frame, key)  # the default max_gap of 24 hours
    assert report.gaps == () and report.warnings == ()
    # Christmas Day, New Year's Day and the weekends really are empty.
    assert frame.loc["2023-12-25 00:00":"2023-12-25 22:45"].empty
    assert frame.loc["2024-01-01 00:00":"2024-01-01 22:45"].empty


def test_the_24_5_fallback_fails_over_christmas_and_says_how_to_fix_it():
    key = ModelKey("EURUSD", "15T")
    frame = calendar_bars(FX, "2023-12-18", "2024-01-08", key.bar)
    with pytest.raises(BarDataError) as info:
        validate_bars(frame, key, calendar="24/5")
    message = str(info.value)
    assert info.value.kind == "gap" and "2023-12-22T22:00:00+00:00" in message
    assert "choose a calendar that knows the closure" in message


def test_missing_open_sessions_are_a_gap_named_by_their_dates():
    key = ModelKey("EURUSD", "30T")
    frame = calendar_bars(FX, "2023-12-18", "2024-01-08", key.bar)
    # The sessions of 27 and 28 December (Tuesday 23:00 .. Thursday 22:00 UTC) are lost.
    holed = frame.drop(frame.loc["2023-12-26 23:00":"2023-12-28 21:30"].index)
    with pytest.raises(BarDataError) as info:
        validate_bars(holed, key)
    message = str(info.value)
    assert "missing 2 whole sessions of 2023-12-27, 2023-12-28" in message
    assert "the calendar CMEGlobex_FX has 2 sessions open there with no bar at all" in message
    assert info.value.first == utc("2023-12-26 23:00")
    (gap,) = validate_bars(holed, key, max_gap=None).gaps
    assert gap.sessions == ("2023-12-27", "2023-12-28")
    assert gap.length == pd.Timedelta(hours=46) and gap.missing_bars == 92


def test_summer_time_moves_the_sunday_open_and_the_daily_break_in_utc():
    fx = get_calendar(FX)
    hour = pd.Timedelta(hours=1)
    # US summer time began on 2024-03-10: the Sunday open is 23:00 UTC before, 22:00 after.
    before = fx.expected_bar_times("2024-03-03 18:00", "2024-03-04 00:00", hour)
    after = fx.expected_bar_times("2024-03-10 18:00", "2024-03-11 00:00", hour)
    assert list(before.hour) == [23, 0] and list(after.hour) == [22, 23, 0]
    # The daily break is 22:00-23:00 UTC in winter and 21:00-22:00 in summer.
    winter = fx.expected_bar_times("2024-03-05 00:00", "2024-03-05 23:00", hour)
    summer = fx.expected_bar_times("2024-03-12 00:00", "2024-03-12 23:00", hour)
    assert 22 not in set(winter.hour) and 21 not in set(summer.hour)
    frame = calendar_bars(FX, "2024-03-01", "2024-03-16", pd.Timedelta(minutes=15))
    assert validate_bars(frame, ModelKey("EURUSD", "15T")).gaps == ()


def test_an_equity_exchange_and_crypto():
    hour = pd.Timedelta(hours=1)
    nyse = get_calendar("XNYS")
    # 14:30-21:00 UTC in winter; Martin Luther King Day (2024-01-15) is closed.
    times = nyse.expected_bar_times("2024-01-12", "2024-01-16 23:00", hour)
    assert times[times.day == 15].empty and list(times[times.day == 16].hour) == list(range(14, 21))
    assert nyse.trading_time(utc("2024-01-12 21:00"), utc("2024-01-16 14:30")) == pd.Timedelta(0)
    crypto = calendar_for("BTCUSD")
    assert crypto.name == "24/7"
    assert crypto.trading_time(utc("2024-01-13"), utc("2024-01-14")) == pd.Timedelta(days=1)


def test_calendars_are_chosen_per_symbol_with_overrides_and_a_fallback():
    assert DEFAULT_SYMBOL_CALENDARS["EURUSD"] == FX and DEFAULT_SYMBOL_CALENDARS["XAUUSD"] == METALS
    assert calendar_name_for("ZZZ1") == "24/5"
    assert calendar_name_for("SPY", {"SPY": "XNYS"}) == "XNYS"
    assert calendar_name_for("EURUSD", {"*": "24/7"}) == "24/7"
    assert calendar_name_for("EURUSD", {"*": "24/7", "EURUSD": FX}) == FX
    with pytest.raises(UnknownCalendarError, match="CMEGlobex_FX"):
        get_calendar("CMEGlobex_Fx")


def test_history_starts_where_enough_bars_close_before_the_end():
    fx = get_calendar(FX)
    bar = pd.Timedelta(minutes=15)
    end = utc("2024-01-03 00:00")
    start = fx.history_start(end, 9596, bar)
    assert len(fx.expected_bar_times(start, end - bar, bar)) == 9596
    # The span that holds those bars anywhere on the calendar is at least as long.
    assert fx.span_for_bars(9596, bar) >= end - start


# --- property: gap detection over random windows of real calendars ------------------------

CALENDARS = ["24/5", "24/7", FX, METALS, "XNYS"]


def _library_open(calendar: str, times: pd.DatetimeIndex, bar: pd.Timedelta) -> np.ndarray:
    """Independent oracle: does each bar overlap a session of the library's own schedule?"""
    schedule = mcal.get_calendar(calendar).schedule(
        start_date=(times.min() - pd.Timedelta(days=3)).date(),
        end_date=(times.max() + pd.Timedelta(days=3)).date(),
        tz="UTC",
    )
    opens = schedule["market_open"].to_numpy()
    closes = schedule["market_close"].to_numpy()
    return np.array(
        [bool(((opens < t + bar) & (closes > t)).any()) for t in times.to_numpy()], dtype=bool
    )


@st.composite
def calendar_windows(draw):
    """Bars of a real calendar in a random window (any start, end, weekday; holidays
    included), with random runs removed and, now and then, bars where the market is closed."""
    calendar = draw(st.sampled_from(CALENDARS))
    timeframe = draw(st.sampled_from(list(TIMEFRAMES)))
    bar = TIMEFRAMES[timeframe]
    start = utc("2023-11-20") + draw(st.integers(0, 500 * 24 * 4)) * pd.Timedelta(minutes=15)
    start = start.floor(bar)
    end = start + draw(st.integers(1, 20 * 24 * 4)) * pd.Timedelta(minutes=15)
    times = get_calendar(calendar).expected_bar_times(start, end, bar)
    keep = np.ones(len(times), dtype=bool)
    for _ in range(draw(st.integers(0, 4))):
        if len(times):
            first = draw(st.integers(0, len(times) - 1))
            keep[first : first + draw(st.integers(1, 400))] = False
    kept = times[keep]
    if draw(st.booleans()):  # bars printed while the market is closed (a Saturday, a break)
        grid = pd.date_range(start, end, freq=bar, tz="UTC")
        closed = grid[~get_calendar(calendar).open_bars(grid, bar)]
        if len(closed):
            picks = draw(st.lists(st.integers(0, len(closed) - 1), max_size=3, unique=True))
            kept = kept.append(closed[picks]).sort_values()
    return calendar, timeframe, kept


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=calendar_windows(), max_gap_hours=st.one_of(st.none(), st.integers(1, 60)))
def test_gap_detection_on_random_calendar_windows(window, max_gap_hours):
    calendar, timeframe, times = window
    key = ModelKey("EURUSD", timeframe)
    bar = key.bar
    frame = flat_bars(times)
    max_gap = None if max_gap_hours is None else pd.Timedelta(hours=max_gap_hours)
    try:
        report = validate_bars(frame, key, calendar=calendar, max_gap=max_gap)
    except BarDataError as err:
        assert err.kind == "gap" and str(err).startswith("EURUSD ") and "max_gap" in str(err)
        return
    present = set(times)
    reported = []
    for gap in report.gaps:
        assert gap.start < gap.end and gap.end in present and gap.missing_bars > 0
        assert max_gap is None or gap.length <= max_gap
        holes = pd.date_range(gap.start, gap.end - bar, freq=bar, tz="UTC")
        is_open = _library_open(calendar, holes, bar)
        missing = holes[is_open]
        # Every reported missing bar is a real hole: the market was open and no bar is there.
        assert len(missing) == gap.missing_bars
        assert not present.intersection(missing)
        # Between the gap's first missing bar and its end, no bar is present at all.
        assert not present.intersection(holes)
        assert missing[0] == gap.start
        reported.extend(missing)
    # And every hole inside the window is reported.
    if len(times) >= 2:
        grid = pd.date_range(times[0], times[-1], freq=bar, tz="UTC")
        holes = set(grid[_library_open(calendar, grid, bar)]) - present
        assert holes == set(reported)
