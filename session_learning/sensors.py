"""Sensors: learning on demand when enough trades have closed, and run-failure alerts."""

import dagster as dg
import pandas as pd

from session_learning.jobs import LEARNING_JOB
from session_learning.partitions import session_key_at
from session_learning.resources.journal import TradeJournalResource

NEW_TRADES_FOR_LEARNING = 10


def build_sensors(partitions: dg.TimeWindowPartitionsDefinition) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="trade_count_sensor",
        job_name=LEARNING_JOB,
        minimum_interval_seconds=300,
        description=f"Requests a learning run of the current session when "
        f"{NEW_TRADES_FOR_LEARNING}+ trades have closed since the last request.",
    )
    def trade_count_sensor(context: dg.SensorEvaluationContext, journal: TradeJournalResource):
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

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        description="Records every failed run in the journal's alerts table; a run whose only "
        "failures are blocking gates is recorded as a rejected candidate, not an error.",
    )
    def run_failure_alert_sensor(
        context: dg.RunFailureSensorContext, journal: TradeJournalResource
    ) -> None:
        failures = context.get_step_failure_events()
        names = {
            e.event_specific_data.error.cls_name
            for e in failures
            if e.event_specific_data and e.event_specific_data.error
        }
        kind = "gate_rejection" if names == {"DagsterAssetCheckFailedError"} else "run_failure"
        steps = ", ".join(sorted(e.step_key for e in failures)) or "-"
        message = context.failure_event.message or "run failed"
        journal.journal().add_alert(
            kind,
            f"{context.dagster_run.job_name} {context.dagster_run.run_id[:8]}",
            f"{steps}: {message}",
        )

    return [trade_count_sensor, run_failure_alert_sensor]
