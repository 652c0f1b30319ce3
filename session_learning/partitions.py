"""The session partitions: one partition per trading session (4 hours, UTC, by default)."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from session_learning.domain.sessions import (
    DEFAULT_SESSION_HOURS,
    DEFAULT_START,
    PARTITION_FORMAT,
    session_cron,
)


def build_session_partitions(
    hours: int = DEFAULT_SESSION_HOURS, start: str = DEFAULT_START
) -> dg.TimeWindowPartitionsDefinition:
    """Time-window partitions of ``hours`` each, UTC, keys like ``2025-01-06-04:00``.

    A partition's window is its session; a trade belongs to the session in which it exited.
    The session in progress is a partition too (``end_offset=1``), so the trade-count sensor
    can ask for learning before the session ends; the schedule runs each session once it has
    ended.
    """
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=session_cron(hours),
        start=start,
        fmt=PARTITION_FORMAT,
        timezone="UTC",
        end_offset=1,
    )


def session_key_at(partitions: dg.TimeWindowPartitionsDefinition, moment: datetime) -> str:
    """The key of the session that contains ``moment``."""
    return partitions.get_partition_key_for_timestamp(moment.timestamp())


def ended_session_key(partitions: dg.TimeWindowPartitionsDefinition, moment: datetime) -> str:
    """The key of the last session that ended at or before ``moment``."""
    current = partitions.time_window_for_partition_key(session_key_at(partitions, moment))
    return session_key_at(partitions, current.start - timedelta(microseconds=1))
