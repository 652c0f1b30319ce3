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
    ``"24/5"`` (default, FX and metals as the synthetic source models them): a bar is expected
    whenever its UTC open time falls Monday to Friday; Saturday and Sunday are expected to be
    empty, so the weekend is neither a gap nor staleness. Bars that do open on a weekend (some
    providers start the FX week on Sunday evening UTC) are kept and reported as a warning.
    ``"24/7"`` (crypto): a bar is expected at every grid time.
    Gap and staleness lengths are measured in trading time, so under 24/5 a gap from Friday
    20:00 to Monday 04:00 UTC is 8 hours long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd

from session_learning.domain.models import BAR_COLUMNS, ModelKey

Calendar = Literal["24/5", "24/7"]
CALENDARS: tuple[str, ...] = ("24/5", "24/7")
DEFAULT_MAX_GAP = pd.Timedelta(days=1)  # one trading day

PRICE_COLUMNS = ("open", "high", "low", "close")
_WEEK = pd.Timedelta(days=7)
_TRADING_WEEK = pd.Timedelta(days=5)
_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")
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


@dataclass(frozen=True)
class BarGap:
    """Consecutive expected bars that are missing: ``start`` is the open time of the first
    missing bar, ``end`` the open time of the next bar present, ``length`` the trading time
    the missing bars cover (``missing_bars`` times the bar length)."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing_bars: int
    length: pd.Timedelta

    def __str__(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()} ({self.missing_bars} bars, {_hours(self.length)})"


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
    calendar: Calendar = "24/5",
    max_gap: pd.Timedelta | None = DEFAULT_MAX_GAP,
) -> BarReport:
    """Check ``bars`` of ``key`` against every rule in this module's docstring.

    Returns a ``BarReport`` whose ``bars`` are the input, or with ``repair=True`` a repaired
    copy (zone converted to UTC, identical duplicates dropped, rows sorted), each repair listed.
    Raises ``BarDataError`` naming the rule, the model, the first offending time and a fix.
    ``max_gap=None`` disables the gap limit; staleness is checked only when both ``now`` and
    ``max_staleness`` are given.
    """
    if calendar not in CALENDARS:
        raise ValueError(f"unknown calendar {calendar!r}; use one of {', '.join(CALENDARS)}")
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
    _check_gaps(gaps, key, max_gap)
    _check_freshness(frame.index, key, now, max_staleness, calendar)

    warnings = []
    if frame.empty:
        warnings.append("no bars")
    if calendar == "24/5":
        weekend = frame.index[frame.index.day_of_week >= 5]
        if len(weekend):
            warnings.append(
                f"{len(weekend)} bars open on a weekend (first at {weekend[0].isoformat()}); "
                "kept, but the 24/5 calendar expects none"
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


def trading_time(
    start: pd.Timestamp, end: pd.Timestamp, calendar: Calendar = "24/5"
) -> pd.Timedelta:
    """Trading time between two UTC instants: wall-clock time for 24/7, weekdays only for 24/5
    (negative when ``end`` is before ``start``)."""
    if calendar == "24/7":
        return end - start
    return _trading_clock(end) - _trading_clock(start)


def expected_bar_times(
    first: pd.Timestamp, last: pd.Timestamp, bar: pd.Timedelta, calendar: Calendar = "24/5"
) -> pd.DatetimeIndex:
    """Grid times from ``first`` to ``last`` (both included) at which the calendar expects a bar."""
    times = pd.date_range(first, last, freq=bar)
    if calendar == "24/5":
        times = times[times.day_of_week < 5]
    return times


def find_gaps(
    index: pd.DatetimeIndex, bar: pd.Timedelta, calendar: Calendar = "24/5"
) -> tuple[BarGap, ...]:
    """Runs of expected bars missing between the first and the last bar of a sorted, unique,
    on-grid ``index``."""
    if len(index) < 2:
        return ()
    expected = expected_bar_times(index[0], index[-1], bar, calendar).as_unit(index.unit)
    missing = ~expected.isin(index)
    if not missing.any():
        return ()
    # Start and end positions of each run of consecutive missing expected bars.
    edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)  # first expected bar after the run; present
    return tuple(
        BarGap(
            start=expected[i],
            end=expected[j],
            missing_bars=int(j - i),
            length=int(j - i) * bar,
        )
        for i, j in zip(starts, stops, strict=True)
    )


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
            f"(multiples of {_hours(key.bar)} from midnight UTC)",
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


def _check_gaps(gaps: tuple[BarGap, ...], key: ModelKey, max_gap: pd.Timedelta | None) -> None:
    if max_gap is None:
        return
    long = [gap for gap in gaps if gap.length > max_gap]
    if long:
        largest = max(long, key=lambda gap: gap.length)
        _fail(
            key,
            "gap",
            f"{len(long)} gaps are longer than max_gap {_hours(max_gap)} of trading time, "
            f"largest {largest}",
            "Fill the hole at the source (re-download the range), or raise max_gap if the market "
            "really was closed.",
            first=long[0].start,
            count=len(long),
        )


def _check_freshness(
    index: pd.DatetimeIndex,
    key: ModelKey,
    now: pd.Timestamp | None,
    max_staleness: pd.Timedelta | None,
    calendar: Calendar,
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
            f"no bars at all, so none newer than max_staleness {_hours(max_staleness)} before {now.isoformat()}",
            "Check that the source has data for this model and is still being updated.",
        )
    close = index[-1] + key.bar
    age = max(trading_time(close, now, calendar), pd.Timedelta(0))
    if age > max_staleness:
        _fail(
            key,
            "stale",
            f"the newest bar opened at {index[-1].isoformat()} and closed {_hours(age)} of "
            f"trading time before {now.isoformat()}, more than max_staleness {_hours(max_staleness)}",
            "Check that the source is still being updated (or raise max_staleness).",
        )


# --- helpers ------------------------------------------------------------------------------


def _trading_clock(stamp: pd.Timestamp) -> pd.Timedelta:
    """Weekday time elapsed since Monday 1970-01-05 00:00 UTC (weekends do not tick)."""
    weeks, within = divmod(stamp - _MONDAY, _WEEK)
    return weeks * _TRADING_WEEK + min(within, _TRADING_WEEK)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _hours(span: pd.Timedelta) -> str:
    if abs(span) < pd.Timedelta(hours=1):
        return f"{span / pd.Timedelta(minutes=1):g}min"
    return f"{span / pd.Timedelta(hours=1):g}h"
