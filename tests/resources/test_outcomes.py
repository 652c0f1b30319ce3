"""The outcome store beside the journal: one record per run and step, alerts that keep their
cause, and late trades found by the journal rows each session was learned from (SQLite and
PostgreSQL)."""

from __future__ import annotations

import pandas as pd

from session_learning.resources.outcomes import Outcome, OutcomeStore, split_step_key
from tests.builders import frame, many

S1 = "2025-03-04-08:00"
S1_START = pd.Timestamp("2025-03-04T08:00Z")
S1_END = pd.Timestamp("2025-03-04T12:00Z")
LONG_CAUSE = (
    "EURUSD 30T: only 234 training rows before the validation window at 2025-03-04 12:00; "
    "load more history (need about 7496 bars, have 1520)"
)


def in_session(hour: int, n_win: int = 1, n_loss: int = 1) -> list[dict]:
    return many(
        n_win,
        n_loss,
        entry_time=f"2025-03-04T{hour:02d}:10:00+00:00",
        exit_time=f"2025-03-04T{hour:02d}:40:00+00:00",
    )


def test_step_keys_name_the_model_and_the_step():
    assert split_step_key("EURUSD_30T__candidate_model") == ("EURUSD_30T", "candidate_model")
    assert split_step_key("problem_report") == ("*", "problem_report")


def test_an_error_is_recorded_once_per_run_and_step_with_its_whole_cause(journal):
    store = OutcomeStore(journal)
    message = (
        f"EURUSD_30T session {S1}: weighted_training_set failed with LearningError: {LONG_CAUSE}"
    )
    error = Outcome(S1, "EURUSD_30T", "weighted_training_set", "error", message, "run-1")
    assert store.record(error)
    assert not store.record(error)  # the run-failure sensor after the step's own hook
    [alert] = journal.alerts().itertuples()
    assert alert.kind == "run_failure"
    assert alert.message == message and len(alert.message) > 160
    assert "EURUSD_30T" in alert.subject and "run-1" in alert.subject
    assert store.latest(["EURUSD_30T", "GBPUSD_30T"]) == {
        "EURUSD_30T": store.history("EURUSD_30T")[0]
    }


def test_a_rejection_is_a_gate_rejection_alert_and_a_decision_is_none(journal):
    store = OutcomeStore(journal)
    store.record(Outcome(S1, "EURUSD_30T", "candidate_model", "rejected", "PF 1.1 vs > 1.4", "r1"))
    store.record(Outcome(S1, "EURUSD_30T", "deployed_model", "deployed", "deployed v2", "r2"))
    store.record(Outcome(S1, "GBPUSD_30T", "problem_report", "untouched", "no learning", "r2"))
    assert list(journal.alerts()["kind"]) == ["gate_rejection"]
    latest = store.latest(["EURUSD_30T", "GBPUSD_30T", "XAUUSD_30T"])
    assert {k: o.outcome for k, o in latest.items()} == {
        "EURUSD_30T": "deployed",
        "GBPUSD_30T": "untouched",
    }


def test_a_newer_session_level_error_is_every_models_latest_word(journal):
    store = OutcomeStore(journal)
    store.record(Outcome(S1, "EURUSD_30T", "deployed_model", "deployed", "deployed v2", "r1"))
    store.record(Outcome("2025-03-04-12:00", "*", "session_trades", "error", "journal down", "r2"))
    assert store.latest(["EURUSD_30T"])["EURUSD_30T"].message == "journal down"
    # A failed CSV export is an alert, but it stops no model's learning.
    store.record(Outcome("2025-03-04-16:00", "*", "trade_exports", "error", "disk full", "r3"))
    assert store.latest(["EURUSD_30T"])["EURUSD_30T"].message == "journal down"
    assert journal.alerts()["message"].iloc[0] == "disk full"


def test_a_trade_journaled_after_its_session_was_learned_is_late(journal):
    store = OutcomeStore(journal)
    journal.add_trades(frame(in_session(9)))
    read = journal.trades_exited_between(S1_START, S1_END)
    store.record_read(S1, S1_START, S1_END, "run-1", read["row_id"])
    now = pd.Timestamp.now(tz="UTC")
    assert store.late_trades(now).empty

    late = in_session(10, n_win=0, n_loss=1)
    journal.add_trades(frame(late))
    # A trade of a session nobody learned yet is not late: the session's own run will read it.
    journal.add_trades(frame(many(1, 0, exit_time="2025-03-04T13:00:00+00:00")))
    found = store.late_trades(now)
    assert list(found["trade_id"]) == [late[0]["trade_id"]]
    row = found.iloc[0]
    assert row["session"] == S1 and row["learned_by_run"] == "run-1"
    assert row["recorded_at"] > row["learned_at"]

    # Until the session has settled, nothing is late; once re-run (read again), nothing is.
    assert store.late_trades(now, settle=now - S1_END + pd.Timedelta(hours=1)).empty
    assert store.late_trades(now + pd.Timedelta(days=8)).empty  # learned too long ago
    reread = journal.trades_exited_between(S1_START, S1_END)
    store.record_read(S1, S1_START, S1_END, "run-2", reread["row_id"])
    assert store.late_trades(now).empty
