"""A session (or a group) without the trades a rate needs reports it as n/a, never 0.0."""

from __future__ import annotations

import math

import pandas as pd

from session_learning.domain.analysis import analyze_session, breakdown, session_summary
from session_learning.domain.keys import TRADE_COLUMNS, ModelKey
from session_learning.domain.trades import valid_trades, validate_trades
from tests.builders import frame, trade

EURUSD = ModelKey("EURUSD", "30T")


def _empty() -> pd.DataFrame:
    return valid_trades(validate_trades(pd.DataFrame(columns=list(TRADE_COLUMNS))))


def test_a_session_without_trades_has_no_win_rate_and_no_profit_factor():
    summary = session_summary(_empty())
    assert summary["trades"] == 0
    assert summary["win_rate"] is None and summary["profit_factor"] is None
    report = analyze_session(
        _empty(), (EURUSD,), pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    assert report.to_dict()["summary"]["win_rate"] is None
    assert breakdown(_empty()).empty


def test_only_breakeven_trades_have_no_profit_factor_but_a_win_rate():
    flat = {**trade(exit_reason="timeout"), "exit_price": 1.1, "pnl": 0.0}
    table = breakdown(valid_trades(validate_trades(frame([flat]))))
    model = table.loc[table["direction"] == "all"].iloc[0]
    assert model["win_rate"] == 0.0  # one trade, no winner: a real 0%
    assert model["profit_factor"] is None


def test_losers_only_is_a_real_zero_profit_factor():
    table = breakdown(valid_trades(validate_trades(frame([trade(win=False)]))))
    assert table.iloc[0]["profit_factor"] == 0.0 and not math.isnan(table.iloc[0]["win_rate"])
