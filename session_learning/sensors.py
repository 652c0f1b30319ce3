"""Sensors: learning on demand when enough trades have closed, run-failure alerts, and late
trades (journaled after their session was learned)."""

import json

import dagster as dg
import pandas as pd

from session_learning.domain.json_encoding import dumps
from session_learning.hooks import PARTITION_TAG, failure_outcome
from session_learning.jobs import LEARNING_JOB
from session_learning.partitions import session_key_at
from session_learning.resources.journal import TradeJournal, TradeJournalResource
from session_learning.resources.outcomes import (
    SESSION,
    Outcome,
    OutcomeStore,
    rerun_command,
    split_step_key,
)

NEW_TRADES_FOR_LEARNING = 10
LATE_TRADE_LOOKBACK = pd.Timedelta(days=7)


def trade_count_tick(
    context: dg.SensorEvaluationContext,
    journal: TradeJournalResource,
    partitions: dg.TimeWindowPartitionsDefinition,
) -> dg.RunRequest | dg.SkipReason:
    """One tick of ``trade_count_sensor``: a learning run of the current session once
    ``NEW_TRADES_FOR_LEARNING`` trades have closed since the cursor's journal row."""
    store = journal.journal()
    newest = store.max_row_id()
    if context.cursor is None:
        # First tick: start counting from now rather than learning from the whole journal.
        context.update_cursor(str(newest))
        return dg.SkipReason(f"started counting at journal row {newest}")
    seen = int(context.cursor)
    new = store.count_trades_after(seen)
    if new < NEW_TRADES_FOR_LEARNING:
        return dg.SkipReason(f"{new} new trade(s); learning needs {NEW_TRADES_FOR_LEARNING}")
    key = session_key_at(partitions, pd.Timestamp.now(tz="UTC").to_pydatetime())
    context.update_cursor(str(newest))
    return dg.RunRequest(
        run_key=f"trades-{newest}",
        partition_key=key,
        tags={"session_learning/trigger": f"{new} new trades"},
    )


def late_trade_tick(
    context: dg.SensorEvaluationContext, journal: TradeJournalResource
) -> dg.SensorResult | dg.SkipReason:
    """One tick of ``late_trade_sensor``: an alert per new late trade and a re-run request of
    each session that has late trades."""
    store = OutcomeStore(journal.journal())
    late = store.late_trades(pd.Timestamp.now(tz="UTC"), LATE_TRADE_LOOKBACK)
    if late.empty:
        return dg.SkipReason(
            f"no late trades in the sessions learned in the last {LATE_TRADE_LOOKBACK.days} days"
        )
    # The cursor keeps, per session with late trades, the newest late row already alerted.
    alerted = json.loads(context.cursor) if context.cursor else {}
    requests, cursor = [], {}
    for session, rows in late.groupby("session", sort=True):
        newest = int(rows["row_id"].max())
        if newest > alerted.get(session, 0):
            store.journal.add_alert("late_trades", f"session {session}", late_report(session, rows))
        cursor[session] = newest
        requests.append(
            dg.RunRequest(
                # A new late trade of the same session asks again; the same one does not.
                run_key=f"late-{session}-{newest}",
                partition_key=session,
                tags={"session_learning/trigger": f"{len(rows)} late trade(s)"},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=dumps(cursor, sort_keys=True))


def build_sensors(partitions: dg.TimeWindowPartitionsDefinition) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="trade_count_sensor",
        job_name=LEARNING_JOB,
        minimum_interval_seconds=300,
        description=f"Requests a learning run of the current session when "
        f"{NEW_TRADES_FOR_LEARNING}+ trades have closed since the last request.",
    )
    def trade_count_sensor(context: dg.SensorEvaluationContext, journal: TradeJournalResource):
        return trade_count_tick(context, journal, partitions)

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        description="Records every failed run in the journal's alerts table, with its cause: a "
        "step whose only failure is a blocking gate is a rejected candidate (gate_rejection, "
        "with the gates' values and thresholds), anything else an error (run_failure, with the "
        "error, its fix and the re-run command). Steps whose own hook recorded them are not "
        "recorded twice.",
    )
    def run_failure_alert_sensor(
        context: dg.RunFailureSensorContext, journal: TradeJournalResource
    ) -> None:
        record_run_failure(
            context.instance,
            context.dagster_run,
            context.get_step_failure_events(),
            context.failure_event.message or "run failed",
            journal.journal(),
        )

    @dg.sensor(
        name="late_trade_sensor",
        job_name=LEARNING_JOB,
        minimum_interval_seconds=600,
        description=f"Finds trades journaled after their session was learned (sessions "
        f"learned in the last {LATE_TRADE_LOOKBACK.days} days), alerts once per new late "
        f"trade and requests a re-run of each such session.",
    )
    def late_trade_sensor(context: dg.SensorEvaluationContext, journal: TradeJournalResource):
        return late_trade_tick(context, journal)

    return [trade_count_sensor, run_failure_alert_sensor, late_trade_sensor]


def error_cause(error) -> tuple[str, str]:
    """``(class name, message)`` of the exception that failed a step, unwrapped from Dagster's
    step-execution error (``error`` is a ``SerializableErrorInfo``)."""
    if error is None:
        return "UnknownError", "the step failed without an error"
    while error.cause is not None and error.cls_name.startswith("DagsterExecution"):
        error = error.cause
    message = error.message.strip()
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == error.cls_name:
        message = rest  # "module.LearningError: text" -> "text"
    return error.cls_name, message


def record_run_failure(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    step_failures: list[dg.DagsterEvent],
    run_message: str,
    journal: TradeJournal,
) -> int:
    """Record the outcome and alert of every failed step of ``run`` not recorded yet by its
    hook (a crashed step, a journal unreachable at that moment), or of the run itself when no
    step failed (a resource or launch error). Returns the number of records written."""
    store = OutcomeStore(journal)
    session = run.tags.get(PARTITION_TAG)
    written = 0
    for event in step_failures:
        cls_name, message = error_cause(
            event.event_specific_data.error if event.event_specific_data else None
        )
        if session is None:  # not a session's learning step (the monitor, the weekly report)
            journal.add_alert(
                "run_failure",
                f"{run.job_name} {event.step_key} (run {run.run_id[:8]})",
                f"{event.step_key} failed with {cls_name}: {message}",
            )
            written += 1
            continue
        if store.has(run.run_id, *split_step_key(event.step_key)):
            continue
        outcome = failure_outcome(instance, run.run_id, session, event.step_key, cls_name, message)
        written += store.record(outcome)
    if not step_failures:
        text = f"{run.job_name} run {run.run_id[:8]} failed before any step finished: {run_message}"
        if session is None:
            journal.add_alert("run_failure", f"{run.job_name} (run {run.run_id[:8]})", text)
            return 1
        fix = f"Fix the cause above, then re-run the session: {rerun_command(session)}"
        written += store.record(
            Outcome(session, SESSION, "run", "error", f"{text}\n{fix}", run.run_id)
        )
    return written


def late_report(session: str, rows: pd.DataFrame) -> str:
    """What an operator reads about a session's late trades: which, when, and the re-run."""
    learned = rows["learned_at"].iloc[0]
    trades = ", ".join(
        f"{r.trade_id} ({r.symbol} {r.timeframe}, exit {r.exit_time}, journaled {r.recorded_at})"
        for r in rows.itertuples()
    )
    return (
        f"session {session} was learned at {learned} (run {rows['learned_by_run'].iloc[0][:8]}) "
        f"without {len(rows)} trade(s) journaled later: {trades}. Re-run the session to learn "
        f"from them: {rerun_command(session)} (or in the UI: Jobs > session_learning_job > "
        f"Materialize all, partition {session})."
    )
