"""The per-session trade CSVs: file names, the split by outcome, re-runs and the quarantine."""

from __future__ import annotations

import pandas as pd

from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import export_stamp, valid_trades, validate_trades
from session_learning.resources.exports import TradeExportsResource
from tests.builders import frame, trade

MODELS = (ModelKey("EURUSD", "30T"), ModelKey("XAUUSD", "5T"))


def check(rows: list[dict]) -> pd.DataFrame:
    out = validate_trades(frame(rows), known_models=MODELS)
    assert len(out) == len(rows)
    return out


def test_exports_are_idempotent_and_split_by_outcome(tmp_path):
    exports = TradeExportsResource(directory=str(tmp_path))
    rows = [trade(win=True), trade(win=False), trade(win=False), trade(symbol="XAGUSD")]
    out = check(rows)
    end = pd.Timestamp("2025-01-06T08:00:00Z")
    first = exports.write_session(out, end)
    assert export_stamp(end) == "20250106_080000"
    assert {p.name for p in first.values()} == {
        "winners_20250106_080000.csv",
        "losers_20250106_080000.csv",
        "all_trades_20250106_080000.csv",
        "quarantine_20250106_080000.csv",
    }
    assert len(pd.read_csv(first["winners"])) == 1
    assert len(pd.read_csv(first["losers"])) == 2
    assert len(pd.read_csv(first["all_trades"])) == 3
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    exports.write_session(out, end)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before == after  # a re-run rewrites the same files, nothing duplicated
    # Once the bad row is gone the stale quarantine file goes too.
    exports.write_session(check(rows[:3]), end)
    assert not (tmp_path / "quarantine_20250106_080000.csv").exists()


def test_exported_times_are_utc_iso_and_rows_keep_the_journal_order(tmp_path):
    rows = [
        trade(trade_id="b", exit_time="2025-01-06T07:00:00+00:00"),
        trade(trade_id="a", exit_time="2025-01-06T07:00:00+00:00", win=False),
        trade(trade_id="c", exit_time="2025-01-06T06:00:00+00:00"),
    ]
    paths = TradeExportsResource(directory=str(tmp_path / "new")).write_session(
        check(rows), pd.Timestamp("2025-01-06T08:00:00Z")
    )
    written = pd.read_csv(paths["all_trades"], dtype=str)
    assert list(written["trade_id"]) == ["c", "a", "b"]
    assert written.loc[0, "exit_time"] == "2025-01-06T06:00:00+0000"
    assert len(valid_trades(check(rows))) == len(written)
    assert not list((tmp_path / "new").glob(".*"))  # no temporary file left
