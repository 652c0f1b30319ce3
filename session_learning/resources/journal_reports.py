"""Performance reports over the journal's ``trades`` table: weekly win rate and per session.

The seed's "Success Metrics" and "Session performance" queries, as SQLAlchemy Core with bound
parameters. Weeks and sessions are found with integer arithmetic on ``exit_time_us`` (UTC
microseconds), not with a database's date functions, so SQLite and PostgreSQL give the same
rows: ``bucket = (exit_time_us - ANCHOR_US) // width_us``, where the anchor is Monday
1900-01-01 00:00 UTC. Every time after the anchor is non-negative relative to it, so the
integer division both databases do (truncating) is a floor.

The reports count journal rows as stored, quarantined rows included: a winner is pnl > 0, a
loser pnl < 0. Rows without a pnl are left out of the counts and reported per bucket
(``without_pnl``); rows without a parsable exit time belong to no week or session
(``count_trades_without_exit_time``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from session_learning.domain.sessions import check_session_hours
from session_learning.resources.journal import TradeJournal, create_tables, trades_table

HOUR_US = 3_600_000_000
WEEK_US = 7 * 24 * HOUR_US
ANCHOR = pd.Timestamp("1900-01-01", tz="UTC")  # a Monday, midnight UTC
ANCHOR_US = ANCHOR.value // 1000

WEEKLY_COLUMNS = ["week_start", "trades", "winners", "losers", "win_rate", "pnl", "without_pnl"]
SESSION_COLUMNS = [
    "session_start",
    "session_end",
    "trades",
    "winners",
    "losers",
    "win_rate",
    "pnl",
    "without_pnl",
]


def _utc_us(moment: datetime) -> int:
    ts = pd.Timestamp(moment)
    if ts.tzinfo is None:
        raise ValueError(f"{moment!r} has no UTC offset; pass timezone-aware times")
    if ts < ANCHOR:
        raise ValueError(f"reports start at {ANCHOR.date()} at the earliest, got {ts}")
    return int(ts.tz_convert("UTC").value // 1000)


def _bucket_counts(
    journal: TradeJournal, start: datetime, end: datetime, width_us: int
) -> pd.DataFrame:
    """Per bucket of ``width_us`` (counted from ANCHOR_US) of the rows that exited in
    ``[start, end)``: bucket, trades (with a pnl), winners, losers, pnl, without_pnl."""
    t = trades_table
    anchor = sa.bindparam("anchor_us", ANCHOR_US, type_=sa.BigInteger)
    width = sa.bindparam("width_us", width_us, type_=sa.BigInteger)
    # Bucketed in a subquery and grouped by its column, so no database has to match the
    # bound-parameter expression in SELECT with the one in GROUP BY.
    rows = (
        sa.select(((t.c.exit_time_us - anchor) // width).label("bucket"), t.c.pnl)
        .where(t.c.exit_time_us.is_not(None))
        .where(t.c.exit_time_us >= sa.bindparam("start_us", _utc_us(start), type_=sa.BigInteger))
        .where(t.c.exit_time_us < sa.bindparam("end_us", _utc_us(end), type_=sa.BigInteger))
        .subquery()
    )

    def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    query = (
        sa.select(
            rows.c.bucket,
            sa.func.count(rows.c.pnl).label("trades"),
            count_where(rows.c.pnl > 0).label("winners"),
            count_where(rows.c.pnl < 0).label("losers"),
            sa.func.coalesce(sa.func.sum(rows.c.pnl), 0.0).label("pnl"),
            (sa.func.count() - sa.func.count(rows.c.pnl)).label("without_pnl"),
        )
        .group_by(rows.c.bucket)
        .order_by(rows.c.bucket)
    )
    with journal.transaction() as conn:
        create_tables(conn)
        result = conn.execute(query).all()
    frame = pd.DataFrame(
        [tuple(r) for r in result],
        columns=["bucket", "trades", "winners", "losers", "pnl", "without_pnl"],
    )
    for column in ("bucket", "trades", "winners", "losers", "without_pnl"):
        frame[column] = frame[column].astype("int64")
    frame["pnl"] = frame["pnl"].astype("float64")
    return frame


def _bucket_start(bucket: pd.Series | range, width_us: int) -> pd.DatetimeIndex:
    micros = ANCHOR_US + pd.Series(bucket, dtype="int64") * width_us
    return pd.DatetimeIndex(pd.to_datetime(micros, unit="us", utc=True))


def _with_win_rate(frame: pd.DataFrame) -> pd.DataFrame:
    trades = frame["trades"].where(frame["trades"] > 0)
    frame["win_rate"] = (frame["winners"] / trades).astype("float64")
    return frame


def weekly_win_rate(journal: TradeJournal, start: datetime, end: datetime) -> pd.DataFrame:
    """Win rate per week (Monday 00:00 UTC to the next Monday) of trades that exited in
    ``[start, end)``; the seed's "weekly win rate trend".

    One row per week overlapping the range, oldest first, weeks without trades included (0
    trades, NaN win rate), so a trend shows its gaps. Columns: ``week_start`` (UTC),
    ``trades`` (rows with a pnl), ``winners`` (pnl > 0), ``losers`` (pnl < 0), ``win_rate``
    (winners / trades), ``pnl``, ``without_pnl`` (rows left out for a missing pnl).
    """
    counts = _bucket_counts(journal, start, end, WEEK_US).set_index("bucket")
    first = (_utc_us(start) - ANCHOR_US) // WEEK_US
    last = (_utc_us(end) - 1 - ANCHOR_US) // WEEK_US
    weeks = range(first, last + 1) if end > start else range(0)
    frame = counts.reindex(weeks, fill_value=0).rename_axis("bucket").reset_index()
    frame["pnl"] = frame["pnl"].astype("float64")
    frame.insert(0, "week_start", _bucket_start(frame["bucket"], WEEK_US))
    return _with_win_rate(frame)[WEEKLY_COLUMNS]


def session_performance(
    journal: TradeJournal, start: datetime, end: datetime, session_hours: int = 4
) -> pd.DataFrame:
    """Per session (``session_hours`` long, aligned to midnight UTC) with at least one trade
    that exited in ``[start, end)``, oldest first; the seed's "session performance" query.

    Columns: ``session_start``, ``session_end`` (UTC), ``trades``, ``winners``, ``losers``,
    ``win_rate``, ``pnl``, ``without_pnl`` (as in ``weekly_win_rate``).
    """
    check_session_hours(session_hours)
    width = session_hours * HOUR_US
    frame = _bucket_counts(journal, start, end, width)
    starts = _bucket_start(frame["bucket"], width)
    frame.insert(0, "session_start", starts)
    frame.insert(1, "session_end", starts + pd.Timedelta(hours=session_hours))
    return _with_win_rate(frame)[SESSION_COLUMNS]


def count_trades_without_exit_time(journal: TradeJournal) -> int:
    """Journal rows whose exit time is missing or unparsable: in no week and no session."""
    query = (
        sa.select(sa.func.count())
        .select_from(trades_table)
        .where(trades_table.c.exit_time_us.is_(None))
    )
    with journal.transaction() as conn:
        create_tables(conn)
        return int(conn.execute(query).scalar())


def week_start(moment: datetime) -> pd.Timestamp:
    """Monday 00:00 UTC of the week that contains ``moment``."""
    bucket = (_utc_us(moment) - ANCHOR_US) // WEEK_US
    return _bucket_start(pd.Series([bucket]), WEEK_US)[0]


def lookback_window(now: datetime, weeks: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, now)`` covering ``now``'s week and the ``weeks - 1`` whole weeks before it."""
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    return week_start(now) - pd.Timedelta(weeks=weeks - 1), pd.Timestamp(now).tz_convert("UTC")


@dataclass(frozen=True)
class WinRateTrend:
    """The newest week with trades, and its win rate against the week ``weeks_back`` before."""

    latest_week: pd.Timestamp | None
    latest_win_rate: float
    earlier_week: pd.Timestamp | None
    earlier_win_rate: float  # NaN when that week had no trades or lies before the report
    change: float  # latest minus earlier, in win-rate units (0.05 = 5 points); NaN if unknown


def win_rate_trend(weekly: pd.DataFrame, weeks_back: int = 4) -> WinRateTrend:
    """Compare the newest week with trades in ``weekly_win_rate`` output with ``weeks_back``
    weeks before it."""
    traded = weekly.loc[weekly["trades"] > 0]
    if traded.empty:
        return WinRateTrend(None, math.nan, None, math.nan, math.nan)
    latest = traded.iloc[-1]
    earlier_week = latest["week_start"] - pd.Timedelta(weeks=weeks_back)
    earlier = weekly.loc[weekly["week_start"] == earlier_week, "win_rate"]
    earlier_rate = float(earlier.iloc[0]) if len(earlier) else math.nan
    latest_rate = float(latest["win_rate"])
    return WinRateTrend(
        latest["week_start"], latest_rate, earlier_week, earlier_rate, latest_rate - earlier_rate
    )
