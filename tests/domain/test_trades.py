"""Data-quality rules: every bad-input kind is quarantined with a clear reason, nothing is lost."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from session_learning.domain.keys import TRADE_COLUMNS, ModelKey
from session_learning.domain.trades import (
    QUARANTINE_COLUMN,
    detect_delimiter,
    export_frames,
    judge_unplaceable,
    parse_mapping,
    quarantine_counts,
    quarantined_trades,
    resolve_columns,
    valid_trades,
    validate_trades,
)
from tests.builders import frame, trade

MODELS = (ModelKey("EURUSD", "30T"), ModelKey("XAUUSD", "5T"))


def check(rows: list[dict]) -> pd.DataFrame:
    out = validate_trades(frame(rows), known_models=MODELS)
    # Nothing is ever dropped: every input row is either valid or quarantined.
    assert len(out) == len(rows)
    assert len(valid_trades(out)) + len(quarantined_trades(out)) == len(rows)
    return out


def test_clean_trades_pass_and_are_typed():
    out = check([trade(win=True), trade(win=False, direction="short")])
    assert quarantined_trades(out).empty
    assert str(out["exit_time"].dt.tz) == "UTC"
    assert list(out["outcome"]) == ["winner", "loser"]


def test_offsets_are_converted_to_utc():
    row = trade(entry_time="2025-01-06T06:30:00+02:00", exit_time="2025-01-06T07:30:00+02:00")
    out = check([row])
    assert out.loc[0, "exit_time"] == pd.Timestamp("2025-01-06T05:30:00Z")


BAD_CASES = {
    "duplicate_conflicting": (
        lambda: [trade(trade_id="D1"), trade(trade_id="D1", win=False), trade()],
        [0, 1],
        "conflicting content",
    ),
    "exit_before_entry": (
        lambda: [
            trade(entry_time="2025-01-06T05:30:00+00:00", exit_time="2025-01-06T05:00:00+00:00"),
            trade(),
        ],
        [0],
        "exit before entry",
    ),
    "tp_exit_short_of_tp": (
        lambda: [{**trade(win=True), "exit_price": 1.1005, "pnl": 0.0005}, trade()],
        [0],
        "did not reach take_profit",
    ),
    "stops_on_wrong_side": (
        lambda: [{**trade(win=True), "stop_loss": 1.2, "take_profit": 1.0}, trade()],
        [0],
        "wrong side of entry",
    ),
    "pnl_contradicts_move": (
        lambda: [{**trade(win=False), "pnl": 0.001}, trade()],
        [0],
        "positive pnl on an adverse price move",
    ),
    "nan_pnl": (lambda: [{**trade(), "pnl": math.nan}, trade()], [0], "missing value: pnl"),
    "nan_text_price": (
        lambda: [{**trade(), "entry_price": "abc"}, trade()],
        [0],
        "not a finite number: entry_price",
    ),
    "unknown_symbol": (lambda: [trade(symbol="XAGUSD"), trade()], [0], "unknown model XAGUSD 30T"),
    "unknown_timeframe": (lambda: [trade(timeframe="7T"), trade()], [0], "unknown timeframe"),
    "naive_timestamp": (
        lambda: [trade(exit_time="2025-01-06T05:30:00"), trade()],
        [0],
        "naive timestamp",
    ),
    "confidence_out_of_range": (lambda: [trade(confidence=1.7), trade()], [0], "outside [0, 1]"),
    "epoch_milliseconds_exit": (
        lambda: [trade(exit_time="1736141400000"), trade()],
        [0],
        "exit_time: epoch number, not an ISO 8601 time ('1736141400000'",
    ),
    "epoch_seconds_exit": (
        lambda: [trade(exit_time="1736141400"), trade()],
        [0],
        "exit_time: epoch number",
    ),
    "year_2300_exit": (
        lambda: [trade(exit_time="2300-01-06T05:30:00+00:00"), trade()],
        [0],
        "exit_time: year 2300 cannot be placed in a session",
    ),
    "decimal_comma_pnl": (
        lambda: [{**trade(), "pnl": "0,0038"}, trade()],
        [0],
        "not a finite number: pnl ('0,0038')",
    ),
    "thousands_separator_price": (
        lambda: [{**trade(), "entry_price": "2,000.00"}, trade()],
        [0],
        "not a finite number: entry_price ('2,000.00')",
    ),
    "percent_confidence": (
        lambda: [{**trade(), "confidence": "62%"}, trade()],
        [0],
        "not a finite number: confidence ('62%')",
    ),
    "null_text_pnl": (
        lambda: [{**trade(), "pnl": "NULL"}, trade()],
        [0],
        "not a finite number: pnl ('NULL')",
    ),
    "invalid_direction": (
        lambda: [{**trade(), "direction": "sideways"}, trade()],
        [0],
        "invalid direction",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_input_is_quarantined_with_its_reason(case):
    build, bad_positions, reason = BAD_CASES[case]
    rows = build()
    out = check(rows)
    bad = quarantined_trades(out)
    assert sorted(bad.index) == bad_positions
    for position in bad_positions:
        assert reason in out.loc[position, QUARANTINE_COLUMN]
    # Every valid trade survives with its values intact.
    good_ids = {r["trade_id"] for i, r in enumerate(rows) if i not in bad_positions}
    assert set(valid_trades(out)["trade_id"]) == good_ids


def test_identical_duplicate_keeps_the_first_copy():
    row = trade(trade_id="SAME")
    out = check([row, dict(row)])
    assert list(valid_trades(out).index) == [0]
    assert "identical copy" in out.loc[1, QUARANTINE_COLUMN]


def test_slippage_within_tolerance_is_accepted():
    row = trade(win=False)
    row["exit_price"] -= 0.0002  # stopped out 2 pips worse than the stop
    row["pnl"] = row["exit_price"] - row["entry_price"]
    assert quarantined_trades(check([row])).empty


def test_timeout_is_judged_by_its_pnl_never_dropped():
    out = check([trade(exit_reason="timeout", win=True), trade(exit_reason="timeout", win=False)])
    assert list(valid_trades(out)["outcome"]) == ["winner", "loser"]


def test_quarantine_counts_group_reasons():
    out = check([trade(symbol="XAGUSD"), {**trade(), "pnl": math.nan}, trade()])
    assert quarantine_counts(out) == {"unknown model XAGUSD 30T": 1, "missing value": 1}


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks required columns: pnl"):
        validate_trades(frame([trade()]).drop(columns=["pnl"]))


def test_export_frames_split_the_valid_trades_by_outcome_and_keep_the_quarantine():
    rows = [
        trade(trade_id="w2", exit_time="2025-01-06T07:00:00+00:00"),
        trade(trade_id="w1", exit_time="2025-01-06T06:00:00+00:00"),
        trade(trade_id="l1", win=False),
        trade(trade_id="x", symbol="XAGUSD"),
    ]
    frames = export_frames(check(rows))
    assert list(frames) == ["winners", "losers", "all_trades", "quarantine"]
    assert list(frames["winners"]["trade_id"]) == ["w1", "w2"]
    assert list(frames["losers"]["trade_id"]) == ["l1"]
    assert list(frames["all_trades"]["trade_id"]) == ["l1", "w1", "w2"]
    assert list(frames["quarantine"]["trade_id"]) == ["x"]
    assert export_frames(check(rows[:3]))["quarantine"].empty


def test_model_version_is_optional():
    out = check([{k: v for k, v in trade().items() if k != "model_version"}])
    assert quarantined_trades(out).empty and out.loc[0, "model_version"] is None


def test_unplaceable_rows_are_all_quarantined_with_the_exit_time_reason():
    rows = frame([{**trade(), "exit_time": None}, trade(exit_time="1736141400")])
    out = judge_unplaceable(rows)
    assert list(out[QUARANTINE_COLUMN].str.contains("exit_time:")) == [True, True]


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("a,b;c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a|b|c", "|"), ("abc", ",")],
)
def test_delimiter_is_detected_from_the_header(header, delimiter):
    assert detect_delimiter(header) == delimiter


def test_columns_resolve_through_mapping_and_case():
    header = ["ID", "Symbol", "TIMEFRAME", *TRADE_COLUMNS[3:11], "Profit", "confidence", "note"]
    resolved = resolve_columns(header, parse_mapping(["ID=trade_id", "Profit=pnl"]))
    assert resolved["ID"] == "trade_id" and resolved["Symbol"] == "symbol"
    assert resolved["Profit"] == "pnl" and "note" not in resolved
    with pytest.raises(ValueError, match="missing required column.*pnl.*--map id=trade_id"):
        resolve_columns([c for c in header if c != "Profit"], {"ID": "trade_id"})
    with pytest.raises(ValueError, match="the file has no column 'Ticket'"):
        resolve_columns(header, {"Ticket": "trade_id"})
    with pytest.raises(ValueError, match="both give journal column 'trade_id'"):
        resolve_columns([*header, "trade_id"], {"ID": "trade_id"})
    with pytest.raises(ValueError, match="expected FILE_COLUMN=JOURNAL_COLUMN"):
        parse_mapping(["id"])
