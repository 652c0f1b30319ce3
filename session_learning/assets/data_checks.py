"""Does each model's market history support learning? The ``history_supports_learning``
check on ``<MODEL>/weighted_training_set`` and the ``session-learning check-data`` command.

Both give the verdict of ``domain.history.check_history``: the bars the source has for the
model at a session's end, the bars its windows need, gaps against its trading calendar,
staleness, and one line on whether learning can run and what to change. The check is not
blocking (severity WARN): it explains a failure, it never causes one. It is evaluated on the
bars the training set loads, before anything is trained, and its result is recorded even when
loading or building the training set then fails.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from session_learning.assets.metadata import session_check_spec
from session_learning.domain.bars import BarDataError, validate_bars
from session_learning.domain.calendars import TradingCalendar
from session_learning.domain.history import OK, HistoryCheck, check_history, history_needs
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import LearningConfig
from session_learning.resources.market_data import (
    MarketDataError,
    MarketDataResource,
    ValidatedMarketDataResource,
)

HISTORY_CHECK = "history_supports_learning"
HISTORY_CHECK_DESCRIPTION = (
    "The model's bars cover the windows of its learning step (warm-up, training, validation, "
    "purge and embargo, the session) without long gaps on its trading calendar, and are "
    "recent. Warns, never blocks: the verdict says what to change."
)


def history_check_spec(
    asset: dg.AssetKey, partitions_def: dg.PartitionsDefinition
) -> dg.AssetCheckSpec:
    """The non-blocking history check of one model's training set, per session partition."""
    return session_check_spec(
        HISTORY_CHECK, asset, partitions_def, blocking=False, description=HISTORY_CHECK_DESCRIPTION
    )


def history_check_result(asset: dg.AssetKey, check: HistoryCheck) -> dg.AssetCheckResult:
    """The check's result: passed only when the history is complete (status ok)."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=HISTORY_CHECK,
        passed=check.status == OK,
        severity=dg.AssetCheckSeverity.WARN,
        description=check.verdict,
        metadata=check.to_metadata(),
    )


def history_not_needed(asset: dg.AssetKey) -> dg.AssetCheckResult:
    """The result when the session's plan leaves the model alone: no history is loaded, so
    there is nothing to judge (a check declared on an asset must report in every run)."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=HISTORY_CHECK,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description="not evaluated: the model is not retrained this session, no bars were loaded",
        metadata={"status": "not needed"},
    )


def check_loaded_bars(
    key: ModelKey,
    bars: pd.DataFrame | None,
    *,
    calendar: TradingCalendar,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    config: LearningConfig,
    error: Exception | None = None,
) -> HistoryCheck:
    """The verdict on bars a source already delivered (or the error it raised)."""
    report = None
    if error is None and bars is not None:
        try:
            report = validate_bars(bars, key, calendar=calendar, repair=True, max_gap=None)
        except BarDataError as exc:
            error = exc
    return check_history(
        key,
        report,
        session_start=session_start,
        session_end=session_end,
        config=config,
        calendar=calendar,
        error=error,
    )


def check_model_history(
    market_data: MarketDataResource,
    key: ModelKey,
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    config: LearningConfig,
) -> HistoryCheck:
    """Load what the learning step at ``session_end`` would load, with the source's own
    validation, and judge it. Data problems become the verdict; nothing is raised for them."""
    calendar = market_data.calendar(key)
    needs = history_needs(key, config, session_start, session_end, calendar)
    start = calendar.history_start(session_end, needs.full + 10, key.bar)
    judged = {"calendar": calendar, "session_start": session_start, "session_end": session_end}
    judged |= {"config": config}
    try:
        if isinstance(market_data, ValidatedMarketDataResource):
            report = market_data.load(key, start, session_end, now=session_end)
            return check_history(key, report, **judged)
        bars = market_data.bars(key, start, session_end)
    except (BarDataError, MarketDataError) as exc:
        return check_loaded_bars(key, None, error=exc, **judged)
    return check_loaded_bars(key, bars, **judged)
