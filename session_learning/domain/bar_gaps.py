"""Gaps in OHLCV bars: expected bars, on the symbol's trading calendar, that are missing.

A bar is expected when it overlaps the calendar's trading time, so a closure the calendar knows
is never a gap, and a gap's length is trading time. ``bars.validate_bars`` records the gaps and
refuses one longer than its ``max_gap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from session_learning.domain.calendars import FALLBACK_CALENDAR, TradingCalendar, get_calendar

# A calendar name (see ``session_learning.domain.calendars``) or a ``TradingCalendar``.
Calendar = str | TradingCalendar
SHOWN_SESSIONS = 6  # missing session dates listed per gap


@dataclass(frozen=True)
class BarGap:
    """Consecutive expected bars that are missing: ``start`` is the open time of the first
    missing bar, ``end`` the open time of the next bar present, ``length`` the trading time
    between them on the calendar, ``sessions`` the dates of whole trading sessions that are
    missing (every bar of a session the calendar has open)."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing_bars: int
    length: pd.Timedelta
    sessions: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.start.isoformat()} .. {self.end.isoformat()} ({self.missing_bars} bars, {hours_text(self.length)})"
        if self.sessions:
            shown = ", ".join(self.sessions[:SHOWN_SESSIONS])
            more = (
                f" and {len(self.sessions) - SHOWN_SESSIONS} more"
                if len(self.sessions) > SHOWN_SESSIONS
                else ""
            )
            whole = (
                "the whole session"
                if len(self.sessions) == 1
                else f"{len(self.sessions)} whole sessions"
            )
            text += f", missing {whole} of {shown}{more}"
        return text


def trading_time(
    start: pd.Timestamp, end: pd.Timestamp, calendar: Calendar = FALLBACK_CALENDAR
) -> pd.Timedelta:
    """Trading time between two UTC instants on ``calendar`` (negative when ``end`` is before
    ``start``)."""
    return get_calendar(calendar).trading_time(start, end)


def expected_bar_times(
    first: pd.Timestamp,
    last: pd.Timestamp,
    bar: pd.Timedelta,
    calendar: Calendar = FALLBACK_CALENDAR,
) -> pd.DatetimeIndex:
    """Grid times from ``first`` to ``last`` (both included) at which the calendar expects a bar."""
    return get_calendar(calendar).expected_bar_times(first, last, bar)


def find_gaps(
    index: pd.DatetimeIndex, bar: pd.Timedelta, calendar: Calendar = FALLBACK_CALENDAR
) -> tuple[BarGap, ...]:
    """Runs of expected bars missing between the first and the last bar of a sorted, unique,
    on-grid ``index``.

    A run ends at the next bar present, which always exists: the last bar of ``index`` is
    present, even when the calendar does not expect it (a bar on a closed weekend)."""
    if len(index) < 2:
        return ()
    calendar = get_calendar(calendar)
    present = index.as_unit("ns")
    expected = calendar.expected_bar_times(present[0], present[-1], bar)
    missing = ~expected.isin(present)
    if not missing.any():
        return ()
    # A run is consecutive missing expected bars with no bar present between them (a bar
    # printed while the calendar is closed, say in the daily break, still splits a run).
    where = np.flatnonzero(missing)
    after = present.searchsorted(expected[where])  # the next bar present after each
    new_run = np.ones(len(where), dtype=bool)
    new_run[1:] = (np.diff(where) != 1) | (np.diff(after) != 0)
    run_starts = np.flatnonzero(new_run)
    counts = np.diff(np.append(run_starts, len(where)))
    firsts = expected[where[run_starts]]
    ends = present[after[run_starts]]
    clock = calendar.trading_clock(firsts.append(ends), present[0])
    lengths = clock[len(firsts) :] - clock[: len(firsts)]
    sessions = calendar.sessions(present[0], present[-1] + bar)
    lo = sessions["open"].searchsorted(firsts, side="left")
    hi = sessions["close"].searchsorted(ends, side="right")
    labels = [f"{day:%Y-%m-%d}" for day in sessions.index]
    return tuple(
        BarGap(
            start=firsts[n].as_unit(index.unit),
            end=ends[n].as_unit(index.unit),
            missing_bars=int(counts[n]),
            length=pd.Timedelta(int(lengths[n]), unit="ns"),
            sessions=tuple(labels[lo[n] : hi[n]]),
        )
        for n in range(len(firsts))
    )


def hours_text(span: pd.Timedelta) -> str:
    """``span`` for a message: minutes under an hour, else hours (``90min``, ``2.5h``)."""
    if abs(span) < pd.Timedelta(hours=1):
        return f"{span / pd.Timedelta(minutes=1):g}min"
    return f"{span / pd.Timedelta(hours=1):g}h"
