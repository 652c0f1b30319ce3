"""The session assets materialized through Dagster on SQLite with hand-built trades."""

from __future__ import annotations

import math

import dagster as dg
import pandas as pd

from tests.builders import frame, many, trade

SESSION = "2025-01-06-04:00"
SESSION_ASSETS = ["session_trades", "trade_exports", "session_breakdown", "problem_report"]


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    [event] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def test_session_partition_end_to_end(pipeline):
    p = pipeline()
    good = many(2, 3, direction="long") + many(3, 0, direction="short")
    bad = [
        trade(trade_id="naive", exit_time="2025-01-06T05:00:00"),
        {**trade(trade_id="nan"), "pnl": math.nan},
        trade(trade_id="alien", symbol="XAGUSD"),
    ]
    outside = [trade(exit_time="2025-01-06T08:00:00+00:00", entry_time="2025-01-06T07:00:00+00:00")]
    p.journal.add_trades(frame(good + bad + outside))

    result = p.run(SESSION, assets=SESSION_ASSETS)
    assert result.success

    meta = _metadata(result, "session_trades")
    assert (meta["journal_rows"], meta["valid_trades"], meta["quarantined"]) == (11, 8, 3)
    assert (meta["winners"], meta["losers"]) == (5, 3)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "session_trades_are_clean" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "naive timestamp" in meta["quarantined_rows"]

    exports = p.settings.exports_dir
    names = sorted(x.name for x in exports.iterdir())
    assert names == [
        "all_trades_20250106_080000.csv",
        "losers_20250106_080000.csv",
        "quarantine_20250106_080000.csv",
        "winners_20250106_080000.csv",
    ]
    assert len(pd.read_csv(exports / "losers_20250106_080000.csv")) == 3

    report = result.output_for_node("problem_report")
    assert report["trigger"]["triggered"]
    assert report["plans"]["EURUSD_30T"]["retrain"]
    assert set(report["plans"]["EURUSD_30T"]["trade_boosts"]) == {
        r["trade_id"] for r in good if r["pnl"] < 0
    }
    breakdown = result.output_for_node("session_breakdown")
    longs = breakdown.loc[(breakdown["symbol"] == "EURUSD") & (breakdown["direction"] == "long")]
    assert longs.iloc[0]["win_rate"] == 0.4

    # Re-running the partition rewrites the same exports, nothing duplicated.
    before = {x.name: x.read_bytes() for x in exports.iterdir()}
    assert p.run(SESSION, assets=SESSION_ASSETS).success
    assert {x.name: x.read_bytes() for x in exports.iterdir()} == before


def test_trigger_config_is_run_config(pipeline):
    p = pipeline()
    p.journal.add_trades(frame(many(3, 1)))
    config = {"ops": {"problem_report": {"config": {"preset": "conservative"}}}}
    result = p.run(SESSION, run_config=config, assets=SESSION_ASSETS)
    report = result.output_for_node("problem_report")
    assert not report["trigger"]["triggered"]
    assert "need 1 more trade and 1 more loser" in report["trigger"]["message"]
    config["ops"]["problem_report"]["config"]["min_losers"] = 1
    result = p.run(SESSION, run_config=config, assets=SESSION_ASSETS)
    assert "need 1 more trade (" in result.output_for_node("problem_report")["trigger"]["message"]


def test_empty_session_materializes_and_says_so(pipeline):
    p = pipeline()
    result = p.run(SESSION, assets=SESSION_ASSETS)
    assert result.success
    assert _metadata(result, "session_trades")["valid_trades"] == 0
    report = result.output_for_node("problem_report")
    assert report["trigger"]["message"].startswith("no learning: 0 trades")
