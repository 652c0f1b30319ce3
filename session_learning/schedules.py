"""Schedules: learning after every session, the 30-minute monitor, the weekly full retrain.

All start stopped: turn them on in the UI (Automation) or with
``dagster schedule start -w workspace.yaml <name>``.
"""

import dagster as dg

from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import session_cron
from session_learning.jobs import LEARNING_JOB, MONITOR_JOB, PERFORMANCE_JOB, full_retrain_config
from session_learning.partitions import ended_session_key


def build_schedules(
    partitions: dg.TimeWindowPartitionsDefinition, hours: int, models: tuple[ModelKey, ...]
) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="session_learning_schedule",
        cron_schedule=session_cron(hours),
        job_name=LEARNING_JOB,
        execution_timezone="UTC",
        description="At each session boundary, learn from the session that just ended.",
    )
    def session_learning_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        key = ended_session_key(partitions, context.scheduled_execution_time)
        return dg.RunRequest(run_key=f"session-{key}", partition_key=key)

    @dg.schedule(
        name="signal_monitor_schedule",
        cron_schedule="*/30 * * * *",
        job_name=MONITOR_JOB,
        execution_timezone="UTC",
        description="Every 30 minutes: resolve open signals, check health, emit new signals.",
    )
    def signal_monitor_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        now = context.scheduled_execution_time.isoformat()
        config = {"now": now}
        return dg.RunRequest(
            run_key=f"monitor-{now}",
            run_config={
                "ops": {"resolved_signals": {"config": config}, "live_signals": {"config": config}}
            },
        )

    @dg.schedule(
        name="weekly_refresh_schedule",
        cron_schedule="0 2 * * 0",
        job_name=LEARNING_JOB,
        execution_timezone="UTC",
        description="Sunday 02:00 UTC: reload bars from the provider and retrain every model "
        "from scratch through the same gates.",
    )
    def weekly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        key = ended_session_key(partitions, context.scheduled_execution_time)
        return dg.RunRequest(
            run_key=f"weekly-{key}",
            partition_key=key,
            run_config=full_retrain_config([m.slug for m in models]),
            tags={"session_learning/kind": "weekly_refresh"},
        )

    performance_schedule = dg.ScheduleDefinition(
        name="learning_performance_schedule",
        cron_schedule=f"15 {session_cron(hours).split()[1]} * * *",
        job_name=PERFORMANCE_JOB,
        execution_timezone="UTC",
        description="A quarter past each session boundary: refresh the success metrics.",
    )
    return [
        session_learning_schedule,
        signal_monitor_schedule,
        weekly_refresh_schedule,
        performance_schedule,
    ]
