"""Schedules pick the right partition; the trade-count sensor keeps its cursor; the code
location loads from workspace.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from session_learning.definitions import build_definitions
from session_learning.domain.keys import ModelKey
from session_learning.resources.journal import TradeJournalResource
from session_learning.settings import Settings
from tests.builders import frame, many

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def defs(tmp_path) -> dg.Definitions:
    return build_definitions(Settings(home=tmp_path, models=(ModelKey("EURUSD", "30T"),)))


@pytest.mark.parametrize(
    ("tick", "partition"),
    [
        (datetime(2025, 1, 6, 4, 0, tzinfo=UTC), "2025-01-06-00:00"),
        (datetime(2025, 1, 6, 0, 0, tzinfo=UTC), "2025-01-05-20:00"),
        (datetime(2025, 1, 6, 20, 0, tzinfo=UTC), "2025-01-06-16:00"),
    ],
)
def test_session_schedule_learns_from_the_session_that_just_ended(defs, tick, partition):
    schedule = defs.resolve_schedule_def("session_learning_schedule")
    assert schedule.cron_schedule == "0 */4 * * *"
    request = schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.partition_key == partition
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_weekly_refresh_retrains_every_model_on_sunday(defs):
    schedule = defs.resolve_schedule_def("weekly_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * 0"
    tick = datetime(2025, 1, 12, 2, 0, tzinfo=UTC)  # a Sunday
    request = schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.partition_key == "2025-01-11-20:00"
    config = request.run_config["ops"]["EURUSD_30T__weighted_training_set"]["config"]
    assert config == {"force_retrain": True}


def test_monitor_schedule_runs_every_30_minutes_as_of_its_tick(defs):
    schedule = defs.resolve_schedule_def("signal_monitor_schedule")
    assert schedule.cron_schedule == "*/30 * * * *"
    tick = datetime(2025, 1, 6, 10, 30, tzinfo=UTC)
    request = schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.run_config["ops"]["live_signals"]["config"]["now"] == tick.isoformat()


def test_trade_count_sensor_cursor(tmp_path, defs):
    sensor = defs.resolve_sensor_def("trade_count_sensor")
    journal = TradeJournalResource(url=f"sqlite:///{tmp_path / 'j.sqlite'}")
    journal.journal().add_trades(frame(many(2, 1)))

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"journal": journal})
        return sensor(context), context.cursor

    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason) and cursor == "3"  # starts counting now
    journal.journal().add_trades(frame(many(5, 4)))
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason) and "9 new trade(s)" in result.skip_message
    assert cursor == "3"
    journal.journal().add_trades(frame(many(1, 0)))
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and cursor == "13"
    assert result.run_key == "trades-13"
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason) and cursor == "13"


def test_code_location_loads_from_workspace_yaml(tmp_path):
    env = {**os.environ, "SESSION_LEARNING_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("synthetic", "SyntheticMarketDataResource"),
        ("files:/srv/bars", "FileMarketDataResource"),
        ("polygon", "PolygonMarketDataResource"),
    ],
)
def test_market_data_source_is_chosen_by_setting(tmp_path, source, kind):
    env = {"SESSION_LEARNING_HOME": str(tmp_path), "SESSION_LEARNING_MARKET_DATA": source}
    resource = build_definitions(Settings.from_env(env)).resources["market_data"]
    assert type(resource).__name__ == kind


def test_unknown_market_data_source_is_a_clear_error(tmp_path):
    env = {"SESSION_LEARNING_HOME": str(tmp_path), "SESSION_LEARNING_MARKET_DATA": "ftp://x"}
    with pytest.raises(ValueError, match="use synthetic, files:<folder> or polygon"):
        build_definitions(Settings.from_env(env))


def test_session_length_setting_drives_partitions_and_schedule(tmp_path):
    env = {"SESSION_LEARNING_HOME": str(tmp_path), "SESSION_LEARNING_SESSION_HOURS": "2"}
    defs = build_definitions(Settings.from_env(env))
    job = defs.resolve_job_def("session_learning_job")
    window = job.partitions_def.time_window_for_partition_key("2025-01-06-02:00")
    assert (window.end - window.start).total_seconds() == 2 * 3600
    schedule = defs.resolve_schedule_def("session_learning_schedule")
    assert schedule.cron_schedule == "0 */2 * * *"
    tick = datetime(2025, 1, 6, 4, 0, tzinfo=UTC)
    assert schedule(dg.build_schedule_context(scheduled_execution_time=tick)).partition_key == (
        "2025-01-06-02:00"
    )


def test_a_session_length_that_does_not_divide_a_day_is_refused(tmp_path):
    env = {"SESSION_LEARNING_HOME": str(tmp_path), "SESSION_LEARNING_SESSION_HOURS": "5"}
    with pytest.raises(ValueError, match="divide a day evenly"):
        build_definitions(Settings.from_env(env))


def test_run_failure_sensor_alerts_a_failed_run_outside_the_sessions_with_its_cause(tmp_path):
    """A run that is not a session's learning (the monitor, the weekly report) is an alert with
    its whole cause, not a learning outcome."""

    @dg.asset
    def live_signals() -> None:
        raise RuntimeError("the market-data provider answered 503 " + "x" * 200 + " twice")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([live_signals], instance=instance, raise_on_error=False)
    assert not result.success
    url = f"sqlite:///{tmp_path / 'j.sqlite'}"
    sensor = build_definitions(
        Settings(home=tmp_path, models=(ModelKey("EURUSD", "30T"),))
    ).resolve_sensor_def("run_failure_alert_sensor")
    sensor(
        dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"journal": TradeJournalResource(url=url)},
        ).for_run_failure()
    )
    [alert] = TradeJournalResource(url=url).journal().alerts().itertuples()
    assert alert.kind == "run_failure" and "live_signals" in alert.subject
    assert alert.message.startswith("live_signals failed with RuntimeError: the market-data")
    assert alert.message.endswith(" twice")
