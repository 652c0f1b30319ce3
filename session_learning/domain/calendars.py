"""Trading calendars: when each symbol's market is open, from ``pandas_market_calendars``.

Bars are expected only while the market is open. The calendar says when that is: the weekly
open and close, the daily break, holidays and early closes, and the shift of all of them in UTC
when the exchange's own clock changes to or from summer time. These rules come from a kept
library (``pandas_market_calendars``, which also wraps ``exchange_calendars``), not from code
written here.

Default calendar per symbol (``DEFAULT_SYMBOL_CALENDARS``; any symbol can be given another):

======================  ====================  ==================================================
symbols                 calendar              trading hours (UTC, winter / summer)
======================  ====================  ==================================================
EURUSD GBPUSD USDJPY    ``CMEGlobex_FX``      Sun 23:00/22:00 .. Fri 22:00/21:00, a daily break
AUDUSD USDCAD USDCHF                          of one hour at 22:00/21:00, CME holidays (Christmas,
NZDUSD EURGBP EURJPY                          New Year, Good Friday, ...) and early closes
XAUUSD XAGUSD           ``CMEGlobex_Metals``  as FX, with the metals' own holiday early closes
XPTUSD XPDUSD
BTCUSD ETHUSD ...       ``24/7``              always open
anything else           ``24/5``              Monday 00:00 .. Saturday 00:00 UTC (the fallback)
======================  ====================  ==================================================

Any calendar name ``pandas_market_calendars`` knows can be chosen (``XNYS`` for New York stocks,
``XLON``, ``CMEGlobex_Energy``, ...); ``calendar_names()`` lists them.

A bar of length ``bar`` opening at ``t`` is *expected* when ``[t, t + bar)`` overlaps an open
interval: a 4-hour bar from 20:00 that holds the last two hours before the 22:00 close and
the first hour after the 23:00 reopen is expected, a 15-minute bar at 22:15 in the break is not.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

FALLBACK_CALENDAR = "24/5"
FX_CALENDAR = "CMEGlobex_FX"
METALS_CALENDAR = "CMEGlobex_Metals"
CRYPTO_CALENDAR = "24/7"

DEFAULT_SYMBOL_CALENDARS: dict[str, str] = {
    **dict.fromkeys(
        (
            "EURUSD",
            "GBPUSD",
            "USDJPY",
            "AUDUSD",
            "USDCAD",
            "USDCHF",
            "NZDUSD",
            "EURGBP",
            "EURJPY",
        ),
        FX_CALENDAR,
    ),
    **dict.fromkeys(("XAUUSD", "XAGUSD", "XPTUSD", "XPDUSD"), METALS_CALENDAR),
    **dict.fromkeys(("BTCUSD", "ETHUSD", "SOLUSD", "LTCUSD", "XRPUSD"), CRYPTO_CALENDAR),
}

_NS = np.int64


class UnknownCalendarError(ValueError):
    """A calendar name the calendar library does not know."""


def calendar_names() -> list[str]:
    """Every calendar name that can be configured."""
    import pandas_market_calendars as mcal

    return sorted(mcal.get_calendar_names())


def calendar_name_for(symbol: str, overrides: dict[str, str] | None = None) -> str:
    """The calendar name of ``symbol``: ``overrides`` first (a ``"*"`` entry applies to every
    symbol not listed), then ``DEFAULT_SYMBOL_CALENDARS``, else the 24/5 fallback."""
    overrides = overrides or {}
    if symbol in overrides:
        return overrides[symbol]
    if "*" in overrides:
        return overrides["*"]
    return DEFAULT_SYMBOL_CALENDARS.get(symbol, FALLBACK_CALENDAR)


def calendar_for(symbol: str, overrides: dict[str, str] | None = None) -> TradingCalendar:
    """The trading calendar of ``symbol`` (see ``calendar_name_for``)."""
    return get_calendar(calendar_name_for(symbol, overrides))


def get_calendar(calendar: str | TradingCalendar) -> TradingCalendar:
    """A calendar by name (a ``TradingCalendar`` is returned as it is)."""
    if isinstance(calendar, TradingCalendar):
        return calendar
    if not isinstance(calendar, str):
        raise UnknownCalendarError(f"a calendar is named by a string, not {calendar!r}")
    _library_calendar(calendar)  # fails early, with the list of names
    return TradingCalendar(calendar)


@lru_cache(maxsize=64)
def _library_calendar(name: str):
    import pandas_market_calendars as mcal

    try:
        return mcal.get_calendar(name)
    except (RuntimeError, KeyError, TypeError):
        close = difflib.get_close_matches(name, calendar_names(), n=5, cutoff=0.6)
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UnknownCalendarError(
            f"unknown trading calendar {name!r}{hint}; use a pandas_market_calendars name such "
            f"as {FX_CALENDAR}, {METALS_CALENDAR}, {CRYPTO_CALENDAR}, XNYS or {FALLBACK_CALENDAR}"
        ) from None


@lru_cache(maxsize=512)
def _year_intervals(name: str, year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open intervals ``[open, close)`` (UTC nanoseconds) that intersect ``year``, clipped to
    it, with their session labels (the session's date, as UTC midnight nanoseconds)."""
    calendar = _library_calendar(name)
    with warnings.catch_warnings():
        # The library warns about schedules that reach past its holiday tables; the weekly
        # structure it returns there is still the best knowledge available.
        warnings.simplefilter("ignore")
        schedule = calendar.schedule(
            start_date=f"{year - 1}-12-28", end_date=f"{year + 1}-01-04", tz="UTC"
        )
    labels = pd.DatetimeIndex(schedule.index).as_unit("ns").asi8
    opens = _ns(schedule["market_open"])
    closes = _ns(schedule["market_close"])
    if "break_start" in schedule.columns and "break_end" in schedule.columns:
        starts, ends = _ns(schedule["break_start"]), _ns(schedule["break_end"])
        has_break = (starts > opens) & (ends < closes) & (ends > starts)
        opens = np.concatenate([opens, ends[has_break]])
        closes = np.concatenate([np.where(has_break, starts, closes), closes[has_break]])
        labels = np.concatenate([labels, labels[has_break]])
    order = np.argsort(opens, kind="stable")
    opens, closes, labels = opens[order], closes[order], labels[order]
    first = pd.Timestamp(year=year, month=1, day=1, tz="UTC").value
    last = pd.Timestamp(year=year + 1, month=1, day=1, tz="UTC").value
    keep = (closes > first) & (opens < last) & (closes > opens)
    return (
        np.clip(opens[keep], first, last),
        np.clip(closes[keep], first, last),
        labels[keep],
    )


def _ns(column: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(column).tz_convert("UTC").as_unit("ns").asi8.astype(_NS)


def _utc(value: object) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _utc_ns(value: object) -> int:
    return _utc(value).as_unit("ns").value


def _index(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(ns, dtype="datetime64[ns]")).tz_localize("UTC")


@dataclass(frozen=True)
class TradingCalendar:
    """When one market is open. All times are UTC; the library's name is ``name``."""

    name: str

    def __str__(self) -> str:
        return self.name

    # -- open intervals --------------------------------------------------------------------

    def intervals(self, start: object, end: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open intervals intersecting ``[start, end)`` as ``(opens, closes, session_labels)``
        in UTC nanoseconds, sorted and not overlapping (sessions are cut at year boundaries)."""
        first, last = _utc_ns(start), _utc_ns(end)
        if last <= first:
            empty = np.empty(0, dtype=_NS)
            return empty, empty, empty
        years = range(pd.Timestamp(first).year, pd.Timestamp(last - 1).year + 1)
        parts = [_year_intervals(self.name, year) for year in years]
        opens = np.concatenate([p[0] for p in parts])
        closes = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        keep = (closes > first) & (opens < last)
        return opens[keep], closes[keep], labels[keep]

    def sessions(self, start: object, end: object) -> pd.DataFrame:
        """Trading sessions intersecting ``[start, end)``: one row per session date with its
        ``open`` and ``close`` (UTC), indexed by ``session`` (the exchange's date)."""
        opens, closes, labels = self.intervals(start, end)
        frame = pd.DataFrame({"session": labels, "open": opens, "close": closes})
        frame = frame.groupby("session", sort=True).agg(
            open=("open", "min"), close=("close", "max")
        )
        index = pd.DatetimeIndex(frame.index.to_numpy(dtype="datetime64[ns]"), name="session")
        return pd.DataFrame(
            {"open": _index(frame["open"].to_numpy()), "close": _index(frame["close"].to_numpy())},
            index=index,
        )

    # -- bars ------------------------------------------------------------------------------

    def open_bars(self, times: pd.DatetimeIndex, bar: pd.Timedelta) -> np.ndarray:
        """For each bar opening at ``times``: does ``[t, t + bar)`` overlap an open interval?"""
        if len(times) == 0:
            return np.zeros(0, dtype=bool)
        ns = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
        step = pd.Timedelta(bar).value
        opens, closes, _ = self.intervals(_index([ns.min()])[0], _index([ns.max() + step])[0])
        if not len(opens):
            return np.zeros(len(ns), dtype=bool)
        after = np.searchsorted(closes, ns, side="right")  # first interval closing after t
        return (after < len(opens)) & (opens[np.minimum(after, len(opens) - 1)] < ns + step)

    def expected_bar_times(
        self, first: object, last: object, bar: pd.Timedelta
    ) -> pd.DatetimeIndex:
        """Grid times from ``first`` to ``last`` (both included, ``first`` on the grid) whose
        bar overlaps trading time: the bars a complete source has."""
        start, stop, step = _utc_ns(first), _utc_ns(last), pd.Timedelta(bar).value
        if stop < start:
            return _index(np.empty(0, dtype=_NS))
        # Integer offsets: np.arange on nanosecond epochs goes through floats and can drop
        # the last point.
        grid = _index(start + step * np.arange((stop - start) // step + 1, dtype=_NS))
        return grid[self.open_bars(grid, bar)]

    def bars_before(self, end: object, count: int, bar: pd.Timedelta) -> pd.DatetimeIndex:
        """Open times of the last ``count`` expected bars that close by ``end`` (fewer only
        if the calendar has no earlier trading time, e.g. before its first year)."""
        step = pd.Timedelta(bar)
        stop = _utc(end)
        last = (stop - step).floor(step)  # the newest grid bar closed by ``end``
        span = step * count * 2 + pd.Timedelta(days=14)
        while True:
            first = (last - span).floor(step)
            times = self.expected_bar_times(first, last, step)
            if len(times) >= count or span > pd.Timedelta(days=366 * 60):
                return times[-count:] if count else times[:0]
            span *= 2

    def history_start(self, end: object, count: int, bar: pd.Timedelta) -> pd.Timestamp:
        """Where to start loading to get ``count`` bars that close by ``end``."""
        times = self.bars_before(end, max(count, 1), bar)
        if len(times):
            return times[0]
        return _utc(end) - pd.Timedelta(bar) * count

    def span_for_bars(self, count: int, bar: pd.Timedelta) -> pd.Timedelta:
        """Wall-clock time that holds at least ``count`` bars anywhere in the calendar: the
        bars at the calendar's thinnest trading density, plus two weeks for holidays."""
        return pd.Timedelta(bar) * count / _open_share(self.name) + pd.Timedelta(days=14)

    # -- time ------------------------------------------------------------------------------

    def trading_clock(self, times: pd.DatetimeIndex, since: object) -> np.ndarray:
        """Trading time (nanoseconds) from ``since`` to each of ``times`` (all at or after
        ``since``): differences of it are trading time, computed for many times at once."""
        ns = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
        if not len(ns):
            return np.zeros(0, dtype=_NS)
        opens, closes, _ = self.intervals(since, _index([ns.max() + 1])[0])
        opens = np.maximum(opens, _utc_ns(since))
        before = np.concatenate(([0], np.cumsum(closes - opens)))
        k = np.searchsorted(closes, ns, side="right")  # first interval closing after t
        inside = k < len(opens)
        k_safe = np.minimum(k, max(len(opens) - 1, 0))
        partial = (
            np.clip(ns - opens[k_safe], 0, closes[k_safe] - opens[k_safe])
            if len(opens)
            else np.zeros(len(ns), dtype=_NS)
        )
        return before[k] + np.where(inside, partial, 0)

    def trading_time(self, start: object, end: object) -> pd.Timedelta:
        """Open time between two instants (negative when ``end`` is before ``start``)."""
        first, last = _utc_ns(start), _utc_ns(end)
        if last < first:
            return -self.trading_time(end, start)
        opens, closes, _ = self.intervals(start, end)
        covered = np.minimum(closes, last) - np.maximum(opens, first)
        return pd.Timedelta(int(np.clip(covered, 0, None).sum()), unit="ns")


@lru_cache(maxsize=64)
def _open_share(name: str) -> float:
    """The smallest share of wall-clock time the market is open in any 4-week stretch of a
    reference year (2024), never below 5%."""
    calendar = TradingCalendar(name)
    weeks = pd.date_range("2024-01-01", "2025-01-01", freq="7D", tz="UTC")
    shares = [
        calendar.trading_time(start, start + pd.Timedelta(weeks=4)) / pd.Timedelta(weeks=4)
        for start in weeks[:-4]
    ]
    return max(min(shares), 0.05)
