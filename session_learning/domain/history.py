"""Does a model's market history support its learning step? Answered before any training.

``check_history`` compares the bars a source delivered for one model (validated against the
symbol's trading calendar) with what ``training.build_training_set`` needs at a session's end,
and says in one line whether learning can run and what to change: fetch more history, shorten
the windows, re-download a hole, or use a higher timeframe.

What the learning step needs, in bars closed by the session's end (the same arithmetic as
``build_training_set``; a test holds the two together):

    warm-up + training + purge (one horizon) + validation + embargo (one horizon) + the session

It runs with fewer training rows than configured, down to ``MIN_TRAINING_ROWS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from session_learning.domain.bars import BarReport
from session_learning.domain.calendars import TradingCalendar
from session_learning.domain.keys import TIMEFRAMES, ModelKey
from session_learning.domain.training import LearningConfig

MIN_TRAINING_ROWS = 500  # build_training_set refuses fewer
MIN_VALIDATION_ROWS = 200  # shorter validation windows are not worth suggesting
MAX_MISSING_SHARE = 0.02  # more missing bars than this (of those expected) is worth a warning

OK, WARNING, CANNOT = "ok", "warning", "cannot learn"


@dataclass(frozen=True)
class HistoryNeeds:
    """Bars one learning step needs, by window."""

    warmup: int
    training: int
    validation: int
    horizon: int
    session: int

    @property
    def full(self) -> int:
        """Bars for every window at its configured size."""
        return self.warmup + self.training + 2 * self.horizon + self.validation + self.session

    @property
    def minimum(self) -> int:
        """Bars for the shortest training window the learning step accepts."""
        return self.full - self.training + MIN_TRAINING_ROWS

    def describe(self) -> str:
        return (
            f"warm-up {self.warmup} + training {self.training} + validation {self.validation} "
            f"+ purge and embargo {2 * self.horizon} + session {self.session}"
        )


def history_needs(
    key: ModelKey,
    config: LearningConfig,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    calendar: TradingCalendar,
) -> HistoryNeeds:
    """What ``build_training_set`` needs for ``key`` at the end of the session
    ``[session_start, session_end)``: the session's rows are the bars from ``session_start -
    bar`` that close by ``session_end``."""
    session = len(
        calendar.expected_bar_times(session_start - key.bar, session_end - key.bar, key.bar)
    )
    return HistoryNeeds(
        warmup=config.warmup_bars,
        training=config.training_bars,
        validation=config.validation_for(key.timeframe),
        horizon=config.max_holding_bars,
        session=session,
    )


@dataclass(frozen=True)
class HistoryCheck:
    """The verdict on one model's history at one session's end."""

    key: ModelKey
    calendar: str
    session_end: pd.Timestamp
    status: str  # OK, WARNING or CANNOT
    verdict: str  # one line: can learning run, and what to change
    bars: int = 0
    first_bar: pd.Timestamp | None = None
    last_bar: pd.Timestamp | None = None
    needed: int = 0
    minimum: int = 0
    needs: str = ""
    gaps: int = 0
    missing_bars: int = 0
    largest_gap: str = ""
    staleness: pd.Timedelta | None = None
    notes: tuple[str, ...] = ()

    @property
    def can_learn(self) -> bool:
        return self.status != CANNOT

    def line(self) -> str:
        return f"{self.key.slug:<11} {self.status.upper():<12} {self.verdict}"

    def to_metadata(self) -> dict[str, str | int | float]:
        """Plain values for Dagster metadata."""
        return {
            "status": self.status,
            "verdict": self.verdict,
            "calendar": self.calendar,
            "session_end": self.session_end.isoformat(),
            "bars": self.bars,
            "first_bar": self.first_bar.isoformat() if self.first_bar is not None else "",
            "last_bar": self.last_bar.isoformat() if self.last_bar is not None else "",
            "bars_needed": self.needed,
            "bars_minimum": self.minimum,
            "windows": self.needs,
            "gaps": self.gaps,
            "missing_bars": self.missing_bars,
            "largest_gap": self.largest_gap or "none",
            "staleness_hours": (
                round(self.staleness / pd.Timedelta(hours=1), 2)
                if self.staleness is not None
                else -1.0
            ),
            "notes": "; ".join(self.notes) or "none",
        }


def check_history(
    key: ModelKey,
    report: BarReport | None,
    *,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    config: LearningConfig,
    calendar: TradingCalendar,
    error: Exception | None = None,
    max_staleness: pd.Timedelta = pd.Timedelta(hours=4),
) -> HistoryCheck:
    """The verdict on ``key``'s bars (a validated ``report``, or the ``error`` loading them
    raised) for learning at ``session_end``. Never raises for bad data: it reports it."""
    needs = history_needs(key, config, session_start, session_end, calendar)
    base = {
        "key": key,
        "calendar": calendar.name,
        "session_end": session_end,
        "needed": needs.full,
        "minimum": needs.minimum,
        "needs": needs.describe(),
    }
    if error is not None or report is None:
        reason = " ".join(str(error).split()) if error is not None else "no bars were loaded"
        return HistoryCheck(**base, status=CANNOT, verdict=f"the bars cannot be used: {reason}")

    found, expected = _measure(report, key, session_end, calendar)
    notes = _notes(key, report, found, expected, max_staleness)
    count, first, last = found["bars"], found["first_bar"], found["last_bar"]
    if count == 0:
        verdict = (
            f"no bars close by {session_end:%Y-%m-%d %H:%M}; the windows need {needs.full} "
            f"({needs.describe()}). Fetch history up to the session's end."
        )
        return HistoryCheck(**base, **found, status=CANNOT, verdict=verdict, notes=tuple(notes))
    have = f"{count} bars ({first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC)"
    if count < needs.minimum:
        fixes = _fixes(key, needs, count, first, config, calendar, session_start, session_end)
        verdict = (
            f"{have}; learning needs at least {needs.minimum} ({needs.describe()}, training "
            f"cut to {MIN_TRAINING_ROWS}). Fix: " + "; ".join(fixes) + "."
        )
        if notes:
            verdict += " Also: " + "; ".join(notes) + "."
        return HistoryCheck(**base, **found, status=CANNOT, verdict=verdict, notes=tuple(notes))
    if count < needs.full:
        rows = count - (needs.full - needs.training)
        verdict = (
            f"{have}: learning runs with {rows} training rows instead of training_bars "
            f"{needs.training}. Fetch {needs.full - count} more bars for the full window."
        )
        status = WARNING
    else:
        verdict = f"{have}, the windows need {needs.full}: learning can run."
        status = WARNING if notes else OK
    if notes:
        verdict += " Also: " + "; ".join(notes) + "."
    return HistoryCheck(**base, **found, status=status, verdict=verdict, notes=tuple(notes))


def _measure(
    report: BarReport, key: ModelKey, session_end: pd.Timestamp, calendar: TradingCalendar
) -> tuple[dict, int]:
    """What the bars closed by ``session_end`` hold (the ``HistoryCheck`` fields), and how many
    bars the calendar expects from their first to their last."""
    bars = report.bars
    bars = bars.loc[bars.index + key.bar <= session_end]
    count = len(bars)
    first = bars.index[0] if count else None
    last = bars.index[-1] if count else None
    staleness = (
        max(calendar.trading_time(last + key.bar, session_end), pd.Timedelta(0))
        if last is not None
        else None
    )
    expected = len(calendar.expected_bar_times(first, last, key.bar)) if first is not None else 0
    found = {
        "bars": count,
        "first_bar": first,
        "last_bar": last,
        "gaps": len(report.gaps),
        "missing_bars": report.missing_bars,
        "largest_gap": str(report.largest_gap) if report.largest_gap else "",
        "staleness": staleness,
    }
    return found, expected


def _notes(
    key: ModelKey,
    report: BarReport,
    found: dict,
    expected: int,
    max_staleness: pd.Timedelta,
) -> list[str]:
    """Warnings that do not stop learning: stale bars, many missing bars."""
    notes: list[str] = []
    staleness, last = found["staleness"], found["last_bar"]
    if staleness is not None and staleness > max_staleness:
        notes.append(
            f"the newest bar ({last.isoformat()}) closed {_hours(staleness)} of trading time "
            f"before the session's end: fetch recent bars"
        )
    if expected and report.missing_bars > MAX_MISSING_SHARE * expected:
        share = report.missing_bars / expected
        higher = _higher_timeframe(key)
        notes.append(
            f"{report.missing_bars} bars ({share:.0%}) missing in {len(report.gaps)} "
            f"gap{'s' if len(report.gaps) != 1 else ''}, "
            f"largest {report.largest_gap}: re-download them"
            + (
                f", or use a higher timeframe ({higher}) whose bars the holes do not empty"
                if higher
                else ""
            )
        )
    return notes


def _fixes(
    key: ModelKey,
    needs: HistoryNeeds,
    count: int,
    first: pd.Timestamp,
    config: LearningConfig,
    calendar: TradingCalendar,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
) -> list[str]:
    """What would let learning run on too few bars: more history, shorter windows, a higher
    timeframe."""
    short = needs.full - count
    fetch_from = calendar.history_start(first, short, key.bar)
    fixes = [f"fetch {short} more bars (history from {fetch_from:%Y-%m-%d})"]
    deficit = needs.minimum - count
    if needs.validation - deficit >= MIN_VALIDATION_ROWS:
        fixes.append(
            f"or shorten the windows: training_bars {needs.training} -> {MIN_TRAINING_ROWS} "
            f"and validation_bars[{key.timeframe}] {needs.validation} -> "
            f"{needs.validation - deficit} (fewer validation trades for the gates)"
        )
    higher = _higher_timeframe_that_fits(key, config, calendar, first, session_start, session_end)
    if higher:
        fixes.append(f"or use a higher timeframe: {higher}")
    return fixes


def _higher_timeframe(key: ModelKey) -> str | None:
    names = list(TIMEFRAMES)
    position = names.index(key.timeframe)
    return names[position + 1] if position + 1 < len(names) else None


def _higher_timeframe_that_fits(
    key: ModelKey,
    config: LearningConfig,
    calendar: TradingCalendar,
    first: pd.Timestamp,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
) -> str | None:
    """A higher timeframe whose windows the same stretch of history would fill, if any (the
    windows are counted in bars, so this is rare: only smaller validation windows help)."""
    for timeframe in list(TIMEFRAMES)[list(TIMEFRAMES).index(key.timeframe) + 1 :]:
        other = ModelKey(key.symbol, timeframe)
        needs = history_needs(other, config, session_start, session_end, calendar)
        start = first.floor(other.bar)
        held = len(calendar.expected_bar_times(start, session_end - other.bar, other.bar))
        if held >= needs.minimum:
            return f"{timeframe} ({held} bars in the same history, {needs.minimum} needed)"
    return None


def _hours(span: pd.Timedelta) -> str:
    return f"{span / pd.Timedelta(hours=1):g}h"
