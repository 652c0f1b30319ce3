"""Validation of OHLCV bars, shared by every market-data source.

Every source (synthetic, files, Polygon) hands its bars to ``validate_bars`` before anything
trains on them. The rules, in the order they are checked:

1. Shape: the columns ``open, high, low, close, volume`` exist and have a float dtype; the index
   is a ``DatetimeIndex`` in UTC without ``NaT``. A naive index is an error (its zone is
   unknown); another zone is converted to UTC only as a recorded repair.
2. Duplicated timestamps: identical rows are dropped as a recorded repair; rows that share a
   timestamp but differ are an error (there is no way to tell which one is right).
3. Order: timestamps out of order are sorted as a recorded repair.
4. Grid: every bar opens on the timeframe's grid, a multiple of the bar length from midnight UTC.
5. Values: no NaN or infinite values, ``low <= open, close <= high``, prices above zero, volume
   not negative. Bad values are errors and are never filled in.
6. Gaps: bars missing inside trading time (see *Calendars*) are recorded in the report; a gap
   longer than ``max_gap`` of trading time is an error.
7. Staleness (when ``now`` and ``max_staleness`` are given): the newest bar closed more than
   ``max_staleness`` of trading time before ``now``, or a bar opens after ``now``.

Repairs (2, 3 and the zone conversion in 1) happen only with ``repair=True``; without it they
are errors too. Every repair is listed in ``BarReport.repairs``, and the only rows ever removed
are identical duplicates: ``input_rows == len(report.bars) + dropped_duplicates``.

Calendars
    Each symbol trades on a calendar (``session_learning.domain.calendars``): FX on
    ``CMEGlobex_FX``, metals on ``CMEGlobex_Metals``, crypto ``24/7``, an equity on its exchange,
    anything unknown on the ``24/5`` fallback (Monday 00:00 to Saturday 00:00 UTC). A bar is
    expected when it overlaps the calendar's trading time, so a closure the calendar knows (the
    weekend, the daily break, Christmas, New Year) is never a gap, and gaps and staleness are
    measured in trading time: on ``CMEGlobex_FX`` in winter a gap from Friday 20:00 to Sunday
    23:00 UTC is 2 hours long. A gap that swallows whole sessions the calendar has open names
    their dates. Bars that open while the calendar is closed (some providers print bars in the
    daily break or on holidays) are kept and reported as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from session_learning.domain.bar_gaps import (
    SHOWN_SESSIONS,
    BarGap,
    Calendar,
    find_gaps,
    hours_text,
)
from session_learning.domain.calendars import TradingCalendar, calendar_for, get_calendar
from session_learning.domain.keys import BAR_COLUMNS, ModelKey

DEFAULT_MAX_GAP = pd.Timedelta(days=1)  # one trading day

PRICE_COLUMNS = ("open", "high", "low", "close")
_SHOWN_GAPS = 5  # gaps listed in metadata and messages


class BarDataError(ValueError):
    """Bars that break a validation rule. ``kind`` names the rule (``"duplicates"``,
    ``"non_finite"``, ``"gap"``, ...), ``first`` the first offending bar time, if any."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        key: ModelKey | None = None,
        first: pd.Timestamp | None = None,
        count: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.key = key
        self.first = first
        self.count = count


@dataclass(frozen=True, eq=False)
class BarReport:
    """The result of ``validate_bars``: the bars to use and what was found on the way."""

    key: ModelKey
    bars: pd.DataFrame
    input_rows: int
    repairs: tuple[str, ...] = ()
    dropped_duplicates: int = 0
    gaps: tuple[BarGap, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def missing_bars(self) -> int:
        return sum(gap.missing_bars for gap in self.gaps)

    @property
    def largest_gap(self) -> BarGap | None:
        return max(self.gaps, key=lambda gap: gap.length, default=None)

    def to_metadata(self) -> dict[str, Any]:
        """Plain values (text and numbers) that Dagster accepts as asset metadata."""
        index = self.bars.index
        largest = self.largest_gap
        return {
            "bars": len(self.bars),
            "first_bar": index[0].isoformat() if len(index) else "",
            "last_bar": index[-1].isoformat() if len(index) else "",
            "input_rows": self.input_rows,
            "dropped_duplicates": self.dropped_duplicates,
            "repairs": "; ".join(self.repairs) or "none",
            "gap_count": len(self.gaps),
            "missing_bars": self.missing_bars,
            "largest_gap": str(largest) if largest else "none",
            "first_gaps": "; ".join(str(gap) for gap in self.gaps[:_SHOWN_GAPS]) or "none",
            "warnings": "; ".join(self.warnings) or "none",
        }


def validate_bars(
    bars: pd.DataFrame,
    key: ModelKey,
    *,
    now: pd.Timestamp | None = None,
    max_staleness: pd.Timedelta | None = None,
    repair: bool = False,
    calendar: Calendar | None = None,
    max_gap: pd.Timedelta | None = DEFAULT_MAX_GAP,
) -> BarReport:
    """Check ``bars`` of ``key`` against every rule in this module's docstring.

    Returns a ``BarReport`` whose ``bars`` are the input, or with ``repair=True`` a repaired
    copy (zone converted to UTC, identical duplicates dropped, rows sorted), each repair listed.
    Raises ``BarDataError`` naming the rule, the model, the first offending time and a fix.
    ``calendar`` defaults to the symbol's (``calendars.calendar_for``); ``max_gap=None``
    disables the gap limit; staleness is checked only when both ``now`` and ``max_staleness``
    are given.
    """
    calendar = calendar_for(key.symbol) if calendar is None else get_calendar(calendar)
    if now is not None:
        now = pd.Timestamp(now)
        if now.tz is None:
            raise ValueError(f"now must be timezone-aware (UTC); got naive {now}")
        now = now.tz_convert("UTC")

    frame, repairs = _check_shape(bars, key, repair)
    input_rows = len(frame)
    frame, dropped, more = _check_duplicates(frame, key, repair)
    repairs += more
    frame, more = _check_order(frame, key, repair)
    repairs += more
    _check_grid(frame.index, key)
    _check_values(frame, key)
    gaps = find_gaps(frame.index, key.bar, calendar)
    _check_gaps(gaps, key, max_gap, calendar)
    _check_freshness(frame.index, key, now, max_staleness, calendar)

    warnings = []
    if frame.empty:
        warnings.append("no bars")
    closed = frame.index[~calendar.open_bars(frame.index, key.bar)]
    if len(closed):
        warnings.append(
            f"{_count(len(closed), 'bar')} open while the {calendar} calendar is closed (first at "
            f"{closed[0].isoformat()}, a {closed[0]:%A}); kept, but the calendar expects none"
        )
    if gaps:
        largest = max(gaps, key=lambda gap: gap.length)
        warnings.append(
            f"{_count(len(gaps), 'gap')}, {_count(sum(g.missing_bars for g in gaps), 'missing bar')}; "
            f"largest {largest}"
        )
    return BarReport(
        key=key,
        bars=frame,
        input_rows=input_rows,
        repairs=tuple(repairs),
        dropped_duplicates=dropped,
        gaps=gaps,
        warnings=tuple(warnings),
    )


def bars_in_window(bars: pd.DataFrame, key: ModelKey, start: object, end: object) -> pd.DataFrame:
    """The rows of ``bars`` whose open time is in ``[start, end)``, in their original order
    (duplicates and disorder are left for ``validate_bars`` to repair or report).

    ``start``/``end`` are anything ``pd.Timestamp`` accepts; naive means UTC. The index must be a
    timezone-aware ``DatetimeIndex``; anything else raises ``BarDataError``.
    """
    _check_index(bars.index, key)
    start_utc, end_utc = to_utc(start, "start"), to_utc(end, "end")
    mask = (bars.index >= start_utc) & (bars.index < end_utc)
    return bars.loc[mask]


def to_utc(value: object, what: str) -> pd.Timestamp:
    """``value`` as a UTC timestamp; a naive value is read as UTC (request bounds, not bars)."""
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        raise ValueError(f"{what} is not a time: {value!r}")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


# --- the rules ----------------------------------------------------------------------------


def _fail(
    key: ModelKey,
    kind: str,
    problem: str,
    fix: str,
    *,
    first: pd.Timestamp | None = None,
    count: int | None = None,
) -> NoReturn:
    where = f" (first at {first.isoformat()})" if first is not None else ""
    raise BarDataError(
        f"{key}: {problem}{where}. {fix}", kind=kind, key=key, first=first, count=count
    )


def _check_index(index: pd.Index, key: ModelKey) -> None:
    if not isinstance(index, pd.DatetimeIndex):
        _fail(
            key,
            "index",
            f"bars are indexed by {type(index).__name__}, not by time",
            "Index the bars by their UTC open time (a DatetimeIndex).",
        )
    if index.tz is None:
        _fail(
            key,
            "timezone",
            "bar times have no time zone",
            "Bars are in UTC: attach the zone the source used, e.g. "
            "index.tz_localize('UTC'), or write times with an offset (2024-01-02T10:30:00+00:00).",
            first=index[0] if len(index) else None,
            count=len(index),
        )
    if index.hasnans:
        _fail(
            key,
            "index",
            f"{int(index.isna().sum())} bar times are missing (NaT)",
            "Every bar needs its open time; fix or remove those rows at the source.",
            count=int(index.isna().sum()),
        )


def _check_shape(bars: object, key: ModelKey, repair: bool) -> tuple[pd.DataFrame, list[str]]:
    if not isinstance(bars, pd.DataFrame):
        raise BarDataError(
            f"{key}: expected a DataFrame of bars, got {type(bars).__name__}.",
            kind="columns",
            key=key,
        )
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        _fail(
            key,
            "columns",
            f"missing columns {', '.join(missing)} (have {', '.join(map(str, bars.columns)) or 'none'})",
            f"Bars need the columns {', '.join(BAR_COLUMNS)}.",
        )
    doubled = sorted({c for c in bars.columns[bars.columns.duplicated()] if c in BAR_COLUMNS})
    if doubled:
        _fail(key, "columns", f"columns {', '.join(doubled)} appear twice", "Keep one of each.")
    wrong = {c: str(bars[c].dtype) for c in BAR_COLUMNS if not pd.api.types.is_float_dtype(bars[c])}
    if wrong:
        listed = ", ".join(f"{c} is {d}" for c, d in wrong.items())
        _fail(
            key,
            "dtype",
            f"columns must be floats: {listed}",
            "Convert them at the source (numbers only; text such as 'n/a' is not a price).",
        )
    _check_index(bars.index, key)
    repairs = []
    if str(bars.index.tz) != "UTC":
        if not repair:
            _fail(
                key,
                "timezone",
                f"bar times are in {bars.index.tz}, not UTC",
                "Convert them with index.tz_convert('UTC'), or validate with repair=True.",
            )
        repairs.append(f"converted bar times from {bars.index.tz} to UTC")
        bars = bars.tz_convert("UTC")
    return bars, repairs


def _check_duplicates(
    frame: pd.DataFrame, key: ModelKey, repair: bool
) -> tuple[pd.DataFrame, int, list[str]]:
    shared = frame.index.duplicated(keep=False)
    if not shared.any():
        return frame, 0, []
    # Compare whole rows, time included, so that identical repeats can go and conflicts cannot.
    rows = frame.reset_index(drop=True)
    rows.insert(0, "\0time", frame.index)
    distinct = rows.drop_duplicates()
    conflicting = distinct.loc[distinct["\0time"].duplicated(keep=False), "\0time"]
    if len(conflicting):
        times = pd.DatetimeIndex(conflicting.unique()).sort_values()
        _fail(
            key,
            "duplicates",
            f"{len(times)} bar times appear more than once with different values",
            "Keep one bar per time at the source; there is no way to tell which one is right.",
            first=times[0],
            count=len(times),
        )
    repeat = rows.duplicated(keep="first").to_numpy()
    dropped = int(repeat.sum())
    first = frame.index[shared].min()
    if not repair:
        _fail(
            key,
            "duplicates",
            f"{dropped} bars repeat an identical bar",
            "Remove the repeats at the source, or validate with repair=True to drop them.",
            first=first,
            count=dropped,
        )
    return (
        frame.loc[~repeat],
        dropped,
        [
            f"dropped {_count(dropped, 'bar')} repeating an identical bar (first at {first.isoformat()})"
        ],
    )


def _check_order(
    frame: pd.DataFrame, key: ModelKey, repair: bool
) -> tuple[pd.DataFrame, list[str]]:
    if frame.index.is_monotonic_increasing:
        return frame, []
    steps_back = np.flatnonzero(np.diff(frame.index.asi8) < 0) + 1
    first = frame.index[steps_back[0]]
    if not repair:
        _fail(
            key,
            "order",
            f"{len(steps_back)} bars come before the bar above them",
            "Sort the bars by time, or validate with repair=True to sort them.",
            first=first,
            count=len(steps_back),
        )
    return (
        frame.sort_index(kind="stable"),
        [
            f"sorted bars into time order ({len(steps_back)} out of order, first at {first.isoformat()})"
        ],
    )


def _check_grid(index: pd.DatetimeIndex, key: ModelKey) -> None:
    if index.empty:
        return
    step = key.bar // pd.Timedelta(1, unit=index.unit)  # bar length in the index's unit
    off = index[index.asi8 % step != 0]
    if len(off):
        _fail(
            key,
            "grid",
            f"{len(off)} bars do not open on the {key.timeframe} grid "
            f"(multiples of {hours_text(key.bar)} from midnight UTC)",
            "Bar times must be open times in UTC; check the timeframe, the zone and the "
            "provider's bar alignment, or resample the bars.",
            first=off[0],
            count=len(off),
        )


def _check_values(frame: pd.DataFrame, key: ModelKey) -> None:
    values = {c: frame[c].to_numpy(dtype=float, na_value=np.nan) for c in BAR_COLUMNS}
    index = frame.index

    def rule(bad: np.ndarray, kind: str, problem: str, fix: str) -> None:
        if bad.any():
            count = int(bad.sum())
            _fail(key, kind, f"{count} {problem}", fix, first=index[bad][0], count=count)

    prices = np.column_stack([values[c] for c in PRICE_COLUMNS])
    rule(
        ~np.isfinite(prices).all(axis=1),
        "non_finite",
        "bars have NaN or infinite prices",
        "Fix or remove those bars at the source; prices are never filled in.",
    )
    rule(
        ~np.isfinite(values["volume"]),
        "non_finite",
        "bars have a NaN or infinite volume",
        "Fix those bars at the source (use 0 if the provider has no volume).",
    )
    high, low = values["high"], values["low"]
    rule(high < low, "ohlc", "bars have high below low", "Fix the bars at the source.")
    outside = (values["open"] < low) | (values["open"] > high)
    outside |= (values["close"] < low) | (values["close"] > high)
    rule(
        outside,
        "ohlc",
        "bars have open or close outside [low, high]",
        "Fix the bars at the source (columns swapped or mixed sources?).",
    )
    rule(
        (prices <= 0).any(axis=1),
        "non_positive",
        "bars have a price at or below zero",
        "Fix the bars at the source; prices must be positive.",
    )
    rule(
        values["volume"] < 0, "volume", "bars have a negative volume", "Fix the bars at the source."
    )


def _check_gaps(
    gaps: tuple[BarGap, ...],
    key: ModelKey,
    max_gap: pd.Timedelta | None,
    calendar: TradingCalendar,
) -> None:
    if max_gap is None:
        return
    long = [gap for gap in gaps if gap.length > max_gap]
    if long:
        largest = max(long, key=lambda gap: gap.length)
        sessions = [day for gap in long for day in gap.sessions]
        missing = (
            f"; the calendar {calendar} has {_count(len(sessions), 'session')} open there with "
            f"no bar at all ({', '.join(sessions[:SHOWN_SESSIONS])}"
            f"{', ...' if len(sessions) > SHOWN_SESSIONS else ''})"
            if sessions
            else ""
        )
        _fail(
            key,
            "gap",
            f"{_count(len(long), 'gap')} longer than max_gap {hours_text(max_gap)} of trading time "
            f"on the {calendar} calendar, largest {largest}{missing}",
            "Fill the hole at the source (re-download the range); if the market really was "
            "closed, choose a calendar that knows the closure (market data 'calendars') or "
            "raise max_gap.",
            first=long[0].start,
            count=len(long),
        )


def _check_freshness(
    index: pd.DatetimeIndex,
    key: ModelKey,
    now: pd.Timestamp | None,
    max_staleness: pd.Timedelta | None,
    calendar: TradingCalendar,
) -> None:
    if now is None:
        return
    future = index[index > now]
    if len(future):
        _fail(
            key,
            "future",
            f"{len(future)} bars open after now ({now.isoformat()})",
            "Bar times must be UTC open times; bars labelled in local time look like this.",
            first=future[0],
            count=len(future),
        )
    if max_staleness is None:
        return
    if index.empty:
        _fail(
            key,
            "stale",
            f"no bars at all, so none newer than max_staleness {hours_text(max_staleness)} before {now.isoformat()}",
            "Check that the source has data for this model and is still being updated.",
        )
    close = index[-1] + key.bar
    age = max(calendar.trading_time(close, now), pd.Timedelta(0))
    if age > max_staleness:
        _fail(
            key,
            "stale",
            f"the newest bar opened at {index[-1].isoformat()} and closed {hours_text(age)} of "
            f"trading time ({calendar} calendar) before {now.isoformat()}, more than "
            f"max_staleness {hours_text(max_staleness)}",
            "Check that the source is still being updated (or raise max_staleness).",
        )


# --- helpers ------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
