"""Why a model did or did not learn, through real runs: `session-learning status` states each
model's latest decision or error with its numbers, in-process runs leave alerts with their
cause, the run-failure sensor tells a gate rejection from an error, and a trade journaled after
its session was learned is found and its session re-run."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from session_learning.cli import main
from session_learning.definitions import build_definitions
from session_learning.resources.journal import TradeJournal, TradeJournalResource
from session_learning.resources.outcomes import OutcomeStore
from tests.assets.conftest import EURUSD, PERMISSIVE, S1, S2, S3, losers_in
from tests.builders import frame

REJECTING = {**PERMISSIVE, "min_profit_factor": 1000.0}
TOO_FEW_ROWS = {**PERMISSIVE, "training_bars": 100}  # fewer than the 500 a model needs


@pytest.fixture
def history(pipeline):
    """S1 deployed, S2 rejected by the profit-factor gate, S3 stopped by its training set."""
    p = pipeline(**PERMISSIVE)
    p.journal.add_trades(frame(losers_in(8) + losers_in(12) + losers_in(16)))
    runs = {S1: p.run(S1)}
    p.configure(**REJECTING)
    runs[S2] = p.run(S2)
    p.configure(**TOO_FEW_ROWS)
    runs[S3] = p.run(S3)
    assert runs[S1].success and not runs[S2].success and not runs[S3].success
    return p, runs


def status(p, monkeypatch, capsys) -> str:
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    monkeypatch.setenv("SESSION_LEARNING_MODELS", "EURUSD:30T")
    monkeypatch.delenv("SESSION_LEARNING_JOURNAL_URL", raising=False)
    capsys.readouterr()
    assert main(["status", "--alerts", "5"]) == 0
    return capsys.readouterr().out


def test_status_states_each_sessions_decision_or_error_with_numbers(history, monkeypatch, capsys):
    p, runs = history
    store = OutcomeStore(p.journal)
    by_session = {o.session: o for o in reversed(store.history(EURUSD.slug))}
    assert by_session[S1].outcome == "deployed"
    assert by_session[S1].version == p.registry.production_version(EURUSD)
    rejected = by_session[S2]
    assert rejected.outcome == "rejected" and rejected.step == "candidate_model"
    assert "profit_factor_above_threshold: profit factor" in rejected.message
    assert "vs > 1000.0" in rejected.message
    assert rejected.details["failed_gates"] and rejected.details["passed_gates"]

    out = status(p, monkeypatch, capsys)
    # The newest word on the model: its training set failed, with the numbers and the fix.
    assert f"latest: ERROR in weighted_training_set (session {S3}" in out
    assert "LearningError: EURUSD 30T: only 100 training rows" in out
    assert "re-run the session" in out and '"dagster/partition": "2025-03-04-16:00"' in out
    assert f"production {p.registry.production_version(EURUSD)}" in out

    # A session that leaves the model alone says why, and the last decision stays in sight.
    assert p.run("2025-03-04-20:00").success
    out = status(p, monkeypatch, capsys)
    assert "latest: UNTOUCHED in problem_report (session 2025-03-04-20:00" in out
    assert "need 3 more trades and 1 more loser" in out
    assert f"last decision: ERROR in weighted_training_set (session {S3}" in out
    assert "only 100 training rows" in out


def test_in_process_failures_leave_alerts_that_keep_their_cause(history):
    p, runs = history
    alerts = p.journal.alerts()
    by_kind = {a.kind: a for a in alerts.itertuples()}
    assert set(alerts["kind"]) == {"gate_rejection", "run_failure"} and len(alerts) == 2
    error = by_kind["run_failure"].message
    assert "only 100 training rows before the validation window" in error
    assert error.rstrip().endswith("'")  # nothing cut: the re-run command is whole
    assert len(error) > 160
    assert "profit factor" in by_kind["gate_rejection"].message


def failure_context(p, result, journal_url: str) -> dg.RunFailureSensorContext:
    sensor_name = "run_failure_alert_sensor"
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=p.instance,
        dagster_run=result.dagster_run,
        resources={"journal": TradeJournalResource(url=journal_url)},
    ).for_run_failure()


def test_run_failure_sensor_tells_a_gate_rejection_from_an_error(history, tmp_path):
    p, runs = history
    sensor = p.defs.resolve_sensor_def("run_failure_alert_sensor")
    # A journal the runs' hooks never reached (down at the time): the sensor records the cause.
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    for session in (S2, S3):
        sensor(failure_context(p, runs[session], url))
    alerts = {a.kind: a for a in TradeJournal(url).alerts().itertuples()}
    assert set(alerts) == {"gate_rejection", "run_failure"}
    rejection = alerts["gate_rejection"]
    assert S2 in rejection.subject and "candidate_model" in rejection.subject
    assert "profit_factor_above_threshold: profit factor" in rejection.message
    assert "vs > 1000.0" in rejection.message
    error = alerts["run_failure"]
    assert S3 in error.subject and "weighted_training_set" in error.subject
    assert "LearningError: EURUSD 30T: only 100 training rows" in error.message
    assert "DagsterExecutionStepExecutionError" not in error.message
    latest = OutcomeStore(TradeJournal(url)).latest([EURUSD.slug])[EURUSD.slug]
    assert latest.outcome == "error" and latest.session == S3

    # With the runs' own journal, the hooks recorded every step already: nothing twice.
    before = len(p.journal.alerts())
    for session in (S2, S3):
        sensor(failure_context(p, runs[session], p.settings.default_journal_url))
    assert len(p.journal.alerts()) == before


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def learned(request, pipeline):
    """A pipeline (journal on SQLite or PostgreSQL) whose session S1 was learned and deployed."""
    p = pipeline(**PERMISSIVE)
    if request.param == "postgres":
        url = request.getfixturevalue("clean_postgres_url")
        p.configure = lambda **learning: None
        p.defs = build_definitions(
            p.settings,
            resource_overrides={
                "learning_settings": p.learning,
                "journal": TradeJournalResource(url=url),
            },
        )
    p.journal.create_schema()
    p.journal.add_trades(frame(losers_in(8)))
    assert p.run(S1).success
    return p


def test_a_late_trade_is_reported_with_its_session_and_the_session_is_rerun(learned):
    p = learned
    sensor = p.defs.resolve_sensor_def("late_trade_sensor")
    journal = p.defs.resources["journal"]

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"journal": journal})
        return sensor(context), context

    result, _ = tick(None)
    assert isinstance(result, dg.SkipReason)

    late = losers_in(9)[1:]  # losers of S1 that reach the journal after S1 was learned
    p.journal.add_trades(frame(late))
    result, _ = tick(None)
    [request] = result.run_requests
    assert request.partition_key == S1 and request.run_key.startswith(f"late-{S1}-")
    [alert] = p.journal.alerts().itertuples()
    assert alert.kind == "late_trades" and S1 in alert.subject
    for trade in late:
        assert trade["trade_id"] in alert.message
    assert '"dagster/partition": "2025-03-04-08:00"' in alert.message

    again, _ = tick(result.cursor)  # the same late trades: same run key, no second alert
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    assert len(p.journal.alerts()) == 1

    live = p.registry.production_version(EURUSD)
    rerun = p.run(S1)
    # Deployed, or rejected by a gate against the live model: both are the re-run's decision;
    # anything else (an error in any step) is a failure of the re-run.
    failed = [e for e in rerun.all_events if e.event_type_value == "STEP_FAILURE"]
    assert rerun.success or all(
        e.step_key == "EURUSD_30T__candidate_model"
        and "DagsterAssetCheckFailedError" in str(e.event_specific_data.error)
        for e in failed
    )
    # The re-run is judged against the model live when it runs.
    assert rerun.output_for_node("EURUSD_30T__candidate_model")["production_version"] == live
    result, _ = tick(result.cursor)
    assert isinstance(result, dg.SkipReason)
    store = OutcomeStore(p.journal)
    assert store.late_trades(pd.Timestamp.now(tz="UTC")).empty


def test_a_failure_under_dg_materialize_is_recorded_and_alerted(pipeline):
    """`dg.materialize` builds its own job: the hooks travel with the assets."""
    p = pipeline(**TOO_FEW_ROWS)
    p.journal.add_trades(frame(losers_in(8)))
    assets = [a for a in p.defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.groups("session_analysis", f"model_{EURUSD.slug}"),
        partition_key=S1,
        resources=p.defs.resources,
        instance=p.instance,
        raise_on_error=False,
    )
    assert not result.success
    [alert] = p.journal.alerts().itertuples()
    assert alert.kind == "run_failure" and "weighted_training_set" in alert.subject
    assert "only 100 training rows" in alert.message
    latest = OutcomeStore(p.journal).latest([EURUSD.slug])[EURUSD.slug]
    assert latest.outcome == "error" and latest.run_id == result.run_id
