"""The trade journal on SQLite and on a real PostgreSQL: same schema, same code."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from session_learning.domain.trades import (
    judge_unplaceable,
    quarantined_trades,
    valid_trades,
    validate_trades,
)
from session_learning.resources.journal import (
    JournalUnavailableError,
    TradeImportError,
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
    message = str(info.value)
    assert "\n" not in message and "..." not in message and " ." not in message  # one line


# --- import-trades: nothing written is lost ---------------------------------------------------

SESSION = (pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z"))


def _csv(tmp_path, rows: list[dict], name: str = "trades.csv", **kwargs) -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False, **kwargs)
    return path


def _reasons(raw: pd.DataFrame) -> dict[str, str]:
    checked = validate_trades(raw)
    return dict(zip(checked["trade_id"], checked["quarantine_reason"], strict=True))


@pytest.mark.parametrize(
    ("exit_time", "reason"),
    [
        ("1736141400000", "epoch number"),  # milliseconds
        ("1736141400", "epoch number"),  # seconds
        ("2300-01-06T05:30:00+00:00", "year 2300 cannot be placed"),
    ],
)
def test_an_exit_time_that_cannot_be_placed_is_quarantined_with_its_reason(
    journal, tmp_path, exit_time, reason
):
    path = _csv(tmp_path, [trade(trade_id="ok"), trade(trade_id="bad", exit_time=exit_time)])
    report = journal.import_csv(path)
    assert (report.read, report.written, report.unplaceable_count) == (2, 2, 1)
    assert reason in report.unplaceable[0] and "line 3" in report.unplaceable[0]
    assert journal.count_trades() == 2  # nothing lost
    unplaced = judge_unplaceable(journal.unplaceable_trades())
    assert list(unplaced["trade_id"]) == ["bad"]
    assert reason in unplaced["quarantine_reason"].iloc[0]
    assert journal.unplaceable_trades()["exit_time"].iloc[0] == exit_time  # kept as written


@pytest.mark.parametrize(
    ("column", "text"),
    [("pnl", "0,0038"), ("entry_price", "2,000.00"), ("confidence", "62%"), ("pnl", "NULL")],
)
def test_text_that_is_not_a_number_is_kept_as_written_and_shown(journal, tmp_path, column, text):
    path = _csv(tmp_path, [trade(trade_id="ok"), {**trade(trade_id="bad"), column: text}])
    report = journal.import_csv(path)
    assert (report.written, report.not_numbers_count) == (2, 1)
    assert f"{column} {text!r} is not a number" in report.not_numbers[0]
    raw = journal.trades_exited_between(*SESSION)
    assert len(raw) == 2  # nothing lost
    assert raw.set_index("trade_id").loc["bad", column] == text  # the journal keeps it
    reasons = _reasons(raw)
    assert reasons["ok"] == ""
    assert f"not a finite number: {column} ({text!r})" in reasons["bad"]
    assert "missing value" not in reasons["bad"]


def test_not_a_number_through_add_trades_is_kept_too(journal):
    journal.add_trades(frame([{**trade(trade_id="x"), "pnl": "0,0038"}]))
    assert journal.trades_exited_between(*SESSION)["pnl"].tolist() == ["0,0038"]
    assert journal.trades_of_version("EURUSD", "30T", "v-test")["pnl"].tolist() == ["0,0038"]


def test_a_corrected_trade_is_a_conflict_until_applied_and_the_correction_is_recorded(
    journal, tmp_path
):
    original = trade(trade_id="c1")
    journal.import_csv(_csv(tmp_path, [original, trade(trade_id="c2")]))
    corrected = {**original, "pnl": 0.0015, "exit_price": 1.1015, "exit_reason": "manual"}
    path = _csv(tmp_path, [corrected, trade(trade_id="c2")], name="fixed.csv")
    report = journal.import_csv(path)
    assert (report.conflict_count, report.already_present, report.corrected) == (1, 1, 0)
    conflict = next(c for c in report.conflicts if c.trade_id == "c1")
    assert conflict.line == 2
    assert conflict.changes["pnl"] == (pytest.approx(original["pnl"]), pytest.approx(0.0015))
    assert "already_present" not in conflict.describe(report.path)
    stored = journal.trades_exited_between(*SESSION).set_index("trade_id")
    assert stored.loc["c1", "pnl"] == pytest.approx(original["pnl"])  # left as journaled
    assert journal.corrections().empty

    applied = journal.import_csv(path, apply_corrections=True)
    assert applied.corrected == applied.conflict_count == 1
    stored = journal.trades_exited_between(*SESSION).set_index("trade_id")
    assert stored.loc["c1", "pnl"] == pytest.approx(0.0015)
    assert journal.count_trades() == 2  # corrected in place, not appended
    [record] = journal.corrections().query("trade_id == 'c1'").to_dict("records")
    assert json.loads(record["previous"])["pnl"] == pytest.approx(original["pnl"])
    assert json.loads(record["changes"])["exit_reason"] == ["take_profit", "manual"]
    assert record["source"].endswith("fixed.csv line 2")
    again = journal.import_csv(path)
    assert (again.already_present, again.conflict_count) == (2, 0)


def test_an_unplaceable_exit_time_is_fixed_by_a_recorded_correction(journal, tmp_path):
    bad = trade(trade_id="u", exit_time="1736141400000")
    journal.import_csv(_csv(tmp_path, [bad]))
    assert len(journal.unplaceable_trades()) == 1
    fixed = _csv(tmp_path, [{**bad, "exit_time": "2025-01-06T05:30:00Z"}], name="fixed.csv")
    assert journal.import_csv(fixed, apply_corrections=True).corrected == 1
    assert journal.unplaceable_trades().empty
    assert list(journal.trades_exited_between(*SESSION)["trade_id"]) == ["u"]


def test_same_instant_written_differently_is_not_a_conflict(journal, tmp_path):
    row = trade(trade_id="z")
    journal.import_csv(_csv(tmp_path, [row]))
    other = {**row, "exit_time": "2025-01-06T07:30:00+02:00", "pnl": f"{row['pnl']:.10f}"}
    report = journal.import_csv(_csv(tmp_path, [other], name="again.csv"))
    assert (report.already_present, report.conflict_count) == (1, 0)


def test_streaming_in_chunks_judges_ids_across_chunks(journal, tmp_path):
    rows = [trade(trade_id=f"s{i}") for i in range(7)]
    changed = {**rows[1], "confidence": 0.9}
    path = _csv(tmp_path, [*rows, dict(rows[0]), changed])
    report = journal.import_csv(path, chunk_rows=3)
    assert (report.read, report.written, report.already_present) == (9, 7, 1)
    assert [(c.trade_id, c.line) for c in report.conflicts] == [("s1", 10)]
    assert journal.count_trades() == 7


def test_a_journal_with_foreign_column_names_imports_through_a_mapping(journal, tmp_path):
    foreign = {
        "trade_id": "id",
        "symbol": "Ticker",
        "direction": "Side",
        "entry_time": "Opened",
        "exit_time": "Closed",
        "pnl": "Profit",
    }
    rows = [trade(trade_id="f1"), trade(trade_id="f2", win=False)]
    exported = pd.DataFrame(rows).rename(columns=foreign).assign(Comment="from another system")
    path = tmp_path / "export.csv"
    exported.rename(columns={"timeframe": "TIMEFRAME"}).to_csv(path, index=False)
    with pytest.raises(TradeImportError, match="missing required column.*trade_id.*--map"):
        journal.import_csv(path)
    report = journal.import_csv(path, mapping={v: k for k, v in foreign.items()})
    assert (report.read, report.written) == (2, 2)
    assert report.ignored_columns == ["Comment"]
    checked = validate_trades(journal.trades_exited_between(*SESSION))
    assert list(valid_trades(checked)["trade_id"]) == ["f1", "f2"]
    assert list(valid_trades(checked)["pnl"]) == [r["pnl"] for r in rows]


def test_model_version_is_optional_to_the_import_as_to_the_rules(journal, tmp_path):
    path = tmp_path / "no_version.csv"
    pd.DataFrame([trade(trade_id="m")]).drop(columns=["model_version"]).to_csv(path, index=False)
    assert journal.import_csv(path).written == 1
    checked = validate_trades(journal.trades_exited_between(*SESSION))
    assert list(valid_trades(checked)["trade_id"]) == ["m"]


def test_a_file_that_fails_part_way_writes_nothing(journal, tmp_path):
    path = tmp_path / "broken.csv"
    good = pd.DataFrame([trade(trade_id=f"b{i}") for i in range(5)]).to_csv(index=False)
    path.write_bytes(good.encode() + b"b9,EURUSD \xe9,30T\n")
    with pytest.raises(TradeImportError, match=r"line 7 column 11: byte 0xe9 .*--encoding latin-1"):
        journal.import_csv(path, chunk_rows=2)
    assert journal.count_trades() == 0


def test_rows_without_trade_id_are_recognised_by_their_values_on_reimport(journal, tmp_path):
    anonymous = {**trade(), "trade_id": ""}
    path = _csv(tmp_path, [anonymous, {**anonymous, "exit_time": "2025-01-06T05:45:00+00:00"}])
    assert journal.import_csv(path).written == 2
    again = journal.import_csv(path)
    assert (again.written, again.already_present) == (0, 2)
    assert journal.count_trades() == 2
    reasons = _reasons(journal.trades_exited_between(*SESSION))
    assert all("missing value: trade_id" in r for r in reasons.values())  # quarantined, kept


def _first_run(url: str, trade_id: str, start, errors: list) -> None:
    journal = TradeJournal(url)
    start.wait()
    try:
        journal.add_trades(frame([trade(trade_id=trade_id)]))
    except Exception as exc:  # collected, asserted by the caller
        errors.append(exc)


def test_first_runs_at_once_create_the_tables_once(clean_postgres_url):
    # Eight first runs on an empty PostgreSQL database at the same instant: each writes a
    # trade; every write lands and none fails on the catalog's unique index (creating the same
    # table type twice), round after round.
    import threading

    import sqlalchemy as sa

    for round_ in range(3):
        engine = sa.create_engine(clean_postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        start, errors = threading.Barrier(8), []
        ids = [f"r{round_}-{i}" for i in range(8)]
        threads = [
            threading.Thread(target=_first_run, args=(clean_postgres_url, t, start, errors))
            for t in ids
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stored = TradeJournal(clean_postgres_url).trades_exited_between(
            pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC")
        )["trade_id"]
        assert sorted(stored) == sorted(ids)
