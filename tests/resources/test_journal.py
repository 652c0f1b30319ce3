"""The trade journal on SQLite and on a real PostgreSQL: same schema, same code."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.domain.trades import quarantined_trades, valid_trades, validate_trades
from session_learning.resources.journal import (
    JournalUnavailableError,
    TradeJournal,
    redact_url,
)
from tests.builders import frame, trade


def test_window_query_uses_exit_time_half_open(journal):
    rows = [
        trade(
            trade_id="before",
            exit_time="2025-01-06T03:59:59+00:00",
            entry_time="2025-01-06T03:00:00+00:00",
        ),
        trade(
            trade_id="start",
            exit_time="2025-01-06T04:00:00+00:00",
            entry_time="2025-01-06T03:00:00+00:00",
        ),
        trade(
            trade_id="offset",
            exit_time="2025-01-06T09:30:00+02:00",
            entry_time="2025-01-06T09:00:00+02:00",
        ),
        trade(
            trade_id="end",
            exit_time="2025-01-06T08:00:00+00:00",
            entry_time="2025-01-06T07:00:00+00:00",
        ),
    ]
    assert journal.add_trades(frame(rows)) == 4
    got = journal.trades_exited_between(
        pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    # A trade belongs to the session in which it exited; 09:30+02:00 is 07:30 UTC.
    assert list(got["trade_id"]) == ["start", "offset"]


def test_round_trip_keeps_values_for_the_quality_rules(journal):
    good = trade(trade_id="g")
    naive = trade(trade_id="n", exit_time="2025-01-06T05:00:00")
    nan_pnl = {**trade(trade_id="p"), "pnl": float("nan")}
    journal.add_trades(frame([good, naive, nan_pnl]))
    raw = journal.trades_exited_between(
        pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    assert len(raw) == 3  # the naive row is placed in its session so the rules can flag it
    checked = validate_trades(raw)
    assert list(valid_trades(checked)["trade_id"]) == ["g"]
    reasons = dict(
        zip(
            quarantined_trades(checked)["trade_id"],
            quarantined_trades(checked)["quarantine_reason"],
            strict=True,
        )
    )
    assert "naive timestamp" in reasons["n"]
    assert "missing value: pnl" in reasons["p"]
    row = valid_trades(checked).iloc[0]
    assert row["take_profit"] == pytest.approx(good["take_profit"])
    assert row["exit_time"] == pd.Timestamp(good["exit_time"])


def test_rows_without_exit_time_are_reported_not_lost(journal):
    journal.add_trades(frame([{**trade(trade_id="x"), "exit_time": None}, trade(trade_id="ok")]))
    assert list(journal.unplaceable_trades()["trade_id"]) == ["x"]
    assert journal.count_trades() == 2


def test_import_csv_is_idempotent(journal, tmp_path):
    path = tmp_path / "trades.csv"
    frame([trade(trade_id="a"), trade(trade_id="b", win=False)]).to_csv(path, index=False)
    first, second = journal.import_csv(path), journal.import_csv(path)
    assert (first.read, first.written, first.already_present) == (2, 2, 0)
    assert (second.read, second.written, second.already_present) == (2, 0, 2)
    assert second.conflict_count == 0
    assert journal.count_trades() == 2


def test_hostile_symbol_is_stored_as_data(journal):
    hostile = "EURUSD'); DROP TABLE trades; --"
    journal.add_trades(frame([trade(trade_id="h", symbol=hostile)]))
    raw = journal.trades_exited_between(
        pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    assert list(raw["symbol"]) == [hostile]
    assert journal.count_trades() == 1


def test_unreachable_database_is_a_clear_error():
    url = "postgresql+psycopg2://user:s3cret@127.0.0.1:1/none"
    with pytest.raises(JournalUnavailableError, match="unreachable") as info:
        TradeJournal(url).count_trades()
    assert "s3cret" not in str(info.value)
    assert "***" in redact_url(url)
