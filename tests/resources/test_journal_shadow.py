"""Shadow trades in the journal (SQLite and PostgreSQL): idempotent per member, session and
signal bar, and kept apart from the live trades every session analysis reads."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from session_learning.resources.journal import JournalError, TradeJournal
from tests.builders import frame, trade

SESSION = "2025-03-04-08:00"


def shadow(signal_time: str, *, member: str = "20250304T0800-aaaaaaaaaa", r: float = 2.0):
    entry = pd.Timestamp(signal_time) + pd.Timedelta(minutes=30)
    exit_ = entry + pd.Timedelta(hours=1)
    return {
        "model": "EURUSD_30T",
        "member_version": member,
        "session": SESSION,
        "signal_time": pd.Timestamp(signal_time).isoformat(),
        "direction": "long",
        "entry_time": entry.isoformat(),
        "entry_price": 1.1,
        "exit_time": exit_.isoformat(),
        "exit_price": 1.102,
        "stop_loss": 1.099,
        "take_profit": 1.102,
        "exit_reason": "take_profit" if r > 0 else "stop_loss",
        "pnl": 0.002 if r > 0 else -0.001,
        "r_multiple": r,
        "exit_time_us": int(exit_.value // 1000),
    }


def test_shadow_trades_are_written_once_per_member_session_and_signal(journal: TradeJournal):
    rows = [shadow("2025-03-04T08:00Z"), shadow("2025-03-04T09:00Z", r=-1.0)]
    assert journal.add_shadow_trades(rows) == (2, 0)
    # A re-run of the session writes nothing again; another member's trade on the same bar is
    # its own row.
    other = shadow("2025-03-04T08:00Z", member="20250304T0800-bbbbbbbbbb")
    assert journal.add_shadow_trades([*rows, other]) == (1, 2)
    stored = journal.shadow_trades("EURUSD_30T", session=SESSION)
    assert len(stored) == 3
    mine = journal.shadow_trades("EURUSD_30T", member_version="20250304T0800-aaaaaaaaaa")
    assert list(mine["r_multiple"]) == [2.0, -1.0]
    assert journal.shadow_trades("GBPUSD_30T").empty


def test_two_writers_of_the_same_session_store_each_trade_once(journal: TradeJournal):
    rows = [shadow(f"2025-03-04T{h:02d}:00Z") for h in range(8, 12)]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            journal.add_shadow_trades(rows)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(journal.shadow_trades("EURUSD_30T")) == 4


def test_shadow_trades_never_reach_the_live_trade_queries(journal: TradeJournal):
    journal.add_trades(frame([trade(trade_id="live")]))
    journal.add_shadow_trades([shadow("2025-01-06T04:00Z"), shadow("2025-01-06T05:00Z")])
    live = journal.trades_exited_between(
        pd.Timestamp("2025-01-01T00:00Z"), pd.Timestamp("2026-01-01T00:00Z")
    )
    assert list(live["trade_id"]) == ["live"]
    assert journal.count_trades() == 1
    assert journal.trades_of_version("EURUSD", "30T", "20250304T0800-aaaaaaaaaa").empty


def test_an_incomplete_shadow_trade_writes_nothing(journal: TradeJournal):
    bad = {**shadow("2025-03-04T09:00Z"), "r_multiple": None}
    with pytest.raises(JournalError, match="lacks r_multiple; nothing was written"):
        journal.add_shadow_trades([shadow("2025-03-04T08:00Z"), bad])
    assert journal.shadow_trades("EURUSD_30T").empty
