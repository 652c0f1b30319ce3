"""Session helpers without Dagster: partition keys, session lengths, history spans, model filters."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.domain.calendars import calendar_for
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import (
    PARTITION_FORMAT,
    SESSION_HOURS,
    check_session_hours,
    history_span,
    history_start,
    of_model,
    recent_trades,
    session_cron,
    session_key,
    session_start,
)
from session_learning.resources.journal import TradeJournal
from tests.builders import frame, trade

EURUSD = ModelKey("EURUSD", "30T")
XAUUSD = ModelKey("XAUUSD", "5T")
END = pd.Timestamp("2025-01-10 00:00", tz="UTC")


@pytest.mark.parametrize("key", ["2025-01-06-04:00", "2025-03-30-00:00", "2024-02-29-20:00"])
def test_partition_key_round_trips(key):
    start = session_start(key)
    assert str(start.tz) == "UTC"
    assert session_key(start) == key
    assert start.strftime(PARTITION_FORMAT) == key


def test_session_key_reads_the_start_in_utc():
    assert session_start("2025-01-06-04:00") == pd.Timestamp("2025-01-06 04:00", tz="UTC")
    assert session_key(pd.Timestamp("2025-07-01 12:00", tz="UTC")) == "2025-07-01-12:00"


@pytest.mark.parametrize("hours", SESSION_HOURS)
def test_every_divisor_of_a_day_is_a_session_length(hours):
    assert check_session_hours(hours) == hours
    assert 24 % hours == 0
    expected = "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    assert session_cron(hours) == expected


@pytest.mark.parametrize("hours", [0, 5, 7, 9, 16, 25, 48, -4])
def test_a_session_length_that_does_not_divide_a_day_is_refused(hours):
    with pytest.raises(ValueError, match="divide a day evenly") as error:
        check_session_hours(hours)
    message = str(error.value)
    assert f"got {hours} hours" in message
    assert "1, 2, 3, 4, 6, 8, 12, 24" in message
    with pytest.raises(ValueError, match="divide a day evenly"):
        session_cron(hours)


def test_history_start_holds_the_needed_bars_and_the_margin_across_a_weekend():
    # Monday 02:00: the FX week opened Sunday evening, so 200 half-hour bars reach into the
    # previous week, far beyond a wall-clock 100 hours.
    end = pd.Timestamp("2025-01-06 02:00", tz="UTC")
    calendar = calendar_for(EURUSD.symbol)
    start = history_start(EURUSD, end, 200, calendar)
    bars = calendar.expected_bar_times(start, end - EURUSD.bar, EURUSD.bar)
    assert len(bars) == 210
    assert end - start > pd.Timedelta(hours=105 + 48)
    assert history_start(EURUSD, end, 200) == start


def test_history_span_holds_the_needed_bars_anywhere_in_the_year():
    calendar = calendar_for(EURUSD.symbol)
    span = history_span(EURUSD, 500)
    for end in pd.date_range("2025-01-01", "2025-12-31", freq="13D", tz="UTC"):
        bars = calendar.expected_bar_times(end - span, end - EURUSD.bar, EURUSD.bar)
        assert len(bars) >= 510, end


def test_of_model_keeps_one_symbol_and_timeframe():
    rows = frame(
        [
            trade(symbol="EURUSD", timeframe="30T", trade_id="a"),
            trade(symbol="EURUSD", timeframe="5T", trade_id="b"),
            trade(symbol="XAUUSD", timeframe="5T", trade_id="c", entry_price=2000.0, risk=2.0),
            trade(symbol="EURUSD", timeframe="30T", trade_id="d", win=False),
        ]
    )
    assert list(of_model(rows, EURUSD)["trade_id"]) == ["a", "d"]
    assert list(of_model(rows, XAUUSD)["trade_id"]) == ["c"]
    assert of_model(rows, ModelKey("GBPUSD", "30T")).empty


def test_recent_trades_reads_the_window_before_the_end_and_drops_bad_rows(tmp_path):
    journal = TradeJournal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    day = pd.Timedelta(days=1)

    def at(moment: pd.Timestamp, trade_id: str, **kwargs) -> dict:
        entry = (moment - pd.Timedelta(hours=1)).isoformat()
        return trade(trade_id=trade_id, entry_time=entry, exit_time=moment.isoformat(), **kwargs)

    journal.add_trades(
        frame(
            [
                at(END - 3 * day, "too-old"),
                at(END - 2 * day + pd.Timedelta(minutes=30), "inside"),
                at(END - pd.Timedelta(minutes=30), "last"),
                at(END, "at-the-end"),  # the window is [end - days, end)
                at(
                    END - day,
                    "other-model",
                    symbol="XAUUSD",
                    timeframe="5T",
                    entry_price=2000.0,
                    risk=2.0,
                ),
                at(END - day, "unknown-model", symbol="GBPUSD"),
                at(END - day, "bad-confidence", confidence=1.7),
            ]
        )
    )
    recent = recent_trades(journal, (EURUSD, XAUUSD), END, 2)
    assert sorted(recent["trade_id"]) == ["inside", "last", "other-model"]
    assert sorted(of_model(recent, EURUSD)["trade_id"]) == ["inside", "last"]
    assert str(recent["exit_time"].dt.tz) == "UTC"
