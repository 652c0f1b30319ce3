"""session_trades_are_clean accounts for every journal row, and empty sessions say n/a."""

from __future__ import annotations

import dagster as dg

from tests.builders import frame, trade

SESSION = "2025-01-06-04:00"
SESSION_ASSETS = ["session_trades", "trade_exports", "session_breakdown", "problem_report"]


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    [event] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def test_a_row_whose_exit_cannot_be_placed_fails_every_session_check(pipeline):
    p = pipeline()
    p.journal.add_trades(
        frame(
            [
                trade(trade_id="good"),
                trade(trade_id="epoch-ms", exit_time="1736141400000"),
                trade(trade_id="epoch-s", exit_time="1736141400"),
                trade(trade_id="year-2300", exit_time="2300-01-06T05:30:00+00:00"),
            ]
        )
    )
    for session in (SESSION, "2025-01-06-08:00"):  # with trades, and without any
        result = p.run(session, assets=["session_trades"])
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "session_trades_are_clean" and not check.passed
        assert "3 journal row(s) belong to no session" in check.description
        assert "epoch-ms" in check.description and "--apply-corrections" in check.description
        meta = _metadata(result, "session_trades")
        assert meta["journal_rows_without_exit_time"] == 3
        shown = meta["rows_in_no_session"]
        assert "epoch number" in shown and "year 2300" in shown


def test_a_session_without_trades_reports_rates_as_na(pipeline):
    p = pipeline()
    p.journal.add_trades(frame([trade(trade_id="elsewhere", exit_time="2025-01-07T05:30:00Z")]))
    result = p.run(SESSION, assets=SESSION_ASSETS)
    assert result.success
    meta = _metadata(result, "problem_report")
    assert meta["trades"] == 0
    assert meta["win_rate"] == "n/a" and meta["profit_factor"] == "n/a"
    assert result.output_for_node("problem_report")["summary"]["win_rate"] is None
    [check] = result.get_asset_check_evaluations()
    assert check.passed


def test_breakdown_shows_na_for_a_profit_factor_of_breakeven_trades(pipeline):
    p = pipeline()
    flat = {**trade(trade_id="flat", exit_reason="timeout"), "exit_price": 1.1, "pnl": 0.0}
    p.journal.add_trades(frame([flat]))
    result = p.run(SESSION, assets=["session_trades", "session_breakdown"])
    assert "n/a" in _metadata(result, "session_breakdown")["breakdown"]
