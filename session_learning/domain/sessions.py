"""Trading sessions without Dagster: the partition key format, the session-length rule, how
much history a model needs before a moment, and a model's slice of the journal's trades.

``session_learning/partitions.py`` builds the Dagster partitions from these; the replay, the
reports and the domain use them directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pandas as pd

from session_learning.domain.calendars import TradingCalendar, calendar_for
from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import valid_trades, validate_trades

# A session's partition key: its start, UTC, like ``2025-01-06-04:00``.
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_SESSION_HOURS = 4
DEFAULT_START = "2025-01-01-00:00"

# Session lengths (hours) that divide a day evenly: every session starts at the same UTC hours
# each day.
SESSION_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)

# Bars loaded beyond what a model needs, so the first needed bar has its predecessors.
HISTORY_MARGIN_BARS = 10


def session_key(moment: object) -> str:
    """The partition key of a session starting at ``moment`` (UTC)."""
    return pd.Timestamp(moment).strftime(PARTITION_FORMAT)


def session_start(key: str) -> pd.Timestamp:
    """The UTC start of the session whose partition key is ``key``."""
    return pd.Timestamp(datetime.strptime(key, PARTITION_FORMAT), tz="UTC")


def check_session_hours(hours: int) -> int:
    """``hours`` when sessions of that length divide a day evenly; otherwise a ``ValueError``
    that names the allowed lengths."""
    if hours not in SESSION_HOURS:
        choices = ", ".join(str(h) for h in SESSION_HOURS)
        raise ValueError(
            f"session length must divide a day evenly, got {hours} hours; "
            f"use one of {choices} hours"
        )
    return hours


def session_cron(hours: int) -> str:
    """The cron schedule of sessions that last ``hours`` (a divisor of 24)."""
    check_session_hours(hours)
    return "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"


def history_start(
    key: ModelKey,
    end: pd.Timestamp,
    bars_needed: int,
    calendar: TradingCalendar | None = None,
) -> pd.Timestamp:
    """How far back from ``end`` to load ``bars_needed`` bars (and ``HISTORY_MARGIN_BARS``
    more) on the symbol's trading calendar: weekends, daily breaks and holidays hold no bars."""
    chosen = calendar_for(key.symbol) if calendar is None else calendar
    return chosen.history_start(end, bars_needed + HISTORY_MARGIN_BARS, key.bar)


def history_span(key: ModelKey, bars_needed: int) -> pd.Timedelta:
    """Wall-clock time holding ``bars_needed`` bars (and ``HISTORY_MARGIN_BARS`` more) anywhere
    on the symbol's trading calendar, holidays included."""
    return calendar_for(key.symbol).span_for_bars(bars_needed + HISTORY_MARGIN_BARS, key.bar)


class ExitedTrades(Protocol):
    """A journal that lists the rows of trades that exited in ``[start, end)``."""

    def trades_exited_between(self, start: datetime, end: datetime) -> pd.DataFrame: ...


def recent_trades(
    journal: ExitedTrades, models: tuple[ModelKey, ...], end: pd.Timestamp, days: int
) -> pd.DataFrame:
    """Valid journal trades that exited in the ``days`` before ``end``."""
    raw = journal.trades_exited_between(end - pd.Timedelta(days=days), end)
    return valid_trades(validate_trades(raw, known_models=models))


def of_model(trades: pd.DataFrame, key: ModelKey) -> pd.DataFrame:
    """The trades of one model (its symbol and timeframe)."""
    return trades.loc[(trades["symbol"] == key.symbol) & (trades["timeframe"] == key.timeframe)]
