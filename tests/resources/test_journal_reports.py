"""Weekly and per-session performance from the journal: the same numbers on SQLite and
PostgreSQL, computed by hand below."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from session_learning.resources.journal import TradeJournal
from session_learning.resources.journal_reports import (
    count_trades_without_exit_time,
    session_performance,
    weekly_win_rate,
)
from tests.builders import frame, trade

WIN, LOSS = 0.002, -0.001  # the builder's long trades: TP at 2R, SL at 1R, risk 0.001


def exited(exit_time: str | None, win: bool | None, trade_id: str) -> dict:
    """A trade that exited at ``exit_time`` an hour after entry; ``win=None`` stores no pnl."""
    entry = (pd.Timestamp(exit_time) - pd.Timedelta(hours=1)).isoformat() if exit_time else None
    row = trade(trade_id=trade_id, win=bool(win), entry_time=entry, exit_time=exit_time)
    if win is None:
        row["pnl"] = None
    return row


TRADES = [
    exited("2025-01-06T05:30:00+00:00", True, "A"),  # week 01-06, session 01-06 04:00
    exited("2025-01-06T07:59:59+00:00", False, "B"),  # same session: last second
    exited("2025-01-06T08:00:00+00:00", True, "C"),  # next session: its first instant
    exited("2025-01-12T23:59:59.999999+00:00", False, "D"),  # last microsecond of the week
    exited("2025-01-13T01:30:00+02:00", True, "E"),  # = 01-12 23:30 UTC: still week 01-06
    exited("2025-01-13T00:00:00+00:00", True, "F"),  # Monday 00:00: week 01-13
    exited("2025-01-14T10:00:00+00:00", True, "G"),
    exited("2025-01-14T11:00:00+00:00", False, "H"),
    exited("2025-01-14T11:30:00+00:00", None, "I"),  # no pnl: left out, counted
    exited("2025-01-28T12:00:00+00:00", False, "J"),  # week 01-27 (01-20 has no trade)
    exited(None, True, "K"),  # no exit time: in no week
    exited("2025-01-05T23:59:00+00:00", True, "L"),  # before the range
    exited("2025-02-03T00:00:00+00:00", False, "M"),  # at the range's end: excluded
]
START, END = pd.Timestamp("2025-01-06T00:00Z"), pd.Timestamp("2025-02-03T00:00Z")


def test_weekly_win_rate_by_hand(journal):
    journal.add_trades(frame(TRADES))

    weekly = weekly_win_rate(journal, START, END)

    assert list(weekly["week_start"]) == list(
        pd.date_range("2025-01-06", periods=4, freq="7D", tz="UTC")
    )
    assert list(weekly["trades"]) == [5, 3, 0, 1]
    assert list(weekly["winners"]) == [3, 2, 0, 0]
    assert list(weekly["losers"]) == [2, 1, 0, 1]
    assert list(weekly["without_pnl"]) == [0, 1, 0, 0]
    rates = list(weekly["win_rate"])
    assert rates[0] == pytest.approx(0.6) and rates[1] == pytest.approx(2 / 3)
    assert math.isnan(rates[2]) and rates[3] == 0.0
    assert list(weekly["pnl"]) == pytest.approx([3 * WIN + 2 * LOSS, 2 * WIN + LOSS, 0.0, LOSS])
    assert count_trades_without_exit_time(journal) == 1


def test_a_range_starting_mid_week_keeps_the_calendar_week(journal):
    journal.add_trades(frame(TRADES))

    weekly = weekly_win_rate(
        journal, pd.Timestamp("2025-01-06T08:00Z"), pd.Timestamp("2025-01-13T00:00:01Z")
    )

    assert list(weekly["week_start"].dt.strftime("%Y-%m-%d")) == ["2025-01-06", "2025-01-13"]
    assert list(weekly["trades"]) == [3, 1]  # C, D, E | F
    assert list(weekly["winners"]) == [2, 1]


def test_session_performance_by_hand(journal):
    journal.add_trades(frame(TRADES))

    sessions = session_performance(journal, START, END)

    starts = [
        "2025-01-06 04:00",
        "2025-01-06 08:00",
        "2025-01-12 20:00",
        "2025-01-13 00:00",
        "2025-01-14 08:00",
        "2025-01-28 12:00",
    ]
    assert list(sessions["session_start"].dt.strftime("%Y-%m-%d %H:%M")) == starts
    assert (sessions["session_end"] - sessions["session_start"]).eq(pd.Timedelta(hours=4)).all()
    assert list(sessions["trades"]) == [2, 1, 2, 1, 2, 1]
    assert list(sessions["winners"]) == [1, 1, 1, 1, 1, 0]
    assert list(sessions["losers"]) == [1, 0, 1, 0, 1, 1]
    assert list(sessions["win_rate"]) == pytest.approx([0.5, 1.0, 0.5, 1.0, 0.5, 0.0])
    assert list(sessions["without_pnl"]) == [0, 0, 0, 0, 1, 0]
    assert sessions["pnl"].iloc[0] == pytest.approx(WIN + LOSS)


def test_longer_sessions_are_aligned_to_midnight(journal):
    journal.add_trades(frame(TRADES[:5]))

    sessions = session_performance(journal, START, END, session_hours=12)

    assert list(sessions["session_start"].dt.strftime("%m-%d %H:%M")) == [
        "01-06 00:00",
        "01-12 12:00",
    ]
    assert list(sessions["trades"]) == [3, 2]


def test_an_empty_journal_gives_empty_weeks(journal):
    weekly = weekly_win_rate(journal, START, START + pd.Timedelta(days=14))
    assert list(weekly["trades"]) == [0, 0]
    assert session_performance(journal, START, END).empty


def test_bad_arguments_are_refused(tmp_path):
    journal = TradeJournal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    with pytest.raises(ValueError, match="divide a day"):
        session_performance(journal, START, END, session_hours=5)
    with pytest.raises(ValueError, match="UTC offset"):
        weekly_win_rate(journal, pd.Timestamp("2025-01-06"), END)
