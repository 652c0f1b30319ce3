"""Monitoring assets: is learning paying off? Win rate per week and per session, from the journal.

The seed's "Success Metrics" (weekly win rate trend) and "Session performance" queries, as one
unpartitioned asset that a schedule or a person re-materializes.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.assets import OWNERS
from session_learning.assets.metadata import performance_metadata
from session_learning.domain.sessions import DEFAULT_SESSION_HOURS
from session_learning.reports.plots import new_figure, png_bytes
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.journal_reports import (
    count_trades_without_exit_time,
    lookback_window,
    session_performance,
    weekly_win_rate,
    win_rate_trend,
)

GROUP = "monitoring"
TREND_WEEKS = 4


class LearningPerformanceConfig(dg.Config):
    """How far back the performance report looks, and as of when."""

    lookback_weeks: int = Field(
        default=12, ge=1, description="Calendar weeks to report, the current one included."
    )
    now: str | None = Field(
        default=None,
        description="Report as of this ISO-8601 time with a UTC offset instead of the current "
        "time (for tests and looking back).",
    )


def performance_png(weekly: pd.DataFrame, sessions: pd.DataFrame) -> bytes:
    """Two panels: win rate per week (bars, trades on top) and per session (points)."""
    fig = new_figure(6.4, 5.6)
    top, bottom = fig.subplots(2, 1)
    top.set_title("Win rate per week from Monday UTC (numbers: trades)", fontsize=11)
    if not (weekly["trades"] > 0).any():
        top.text(0.5, 0.5, "no trades", ha="center", va="center", transform=top.transAxes)
    else:
        # Every week gets a slot, so a week without trades shows as a gap labelled 0.
        labels = weekly["week_start"].dt.strftime("%m-%d")
        bars = top.bar(labels, 100 * weekly["win_rate"].fillna(0.0), color="#1f77b4")
        top.bar_label(bars, labels=[f"{n}" for n in weekly["trades"]], fontsize=7)
        top.tick_params(axis="x", labelsize=7, rotation=45)
    top.set_ylim(0, 110)
    top.set_ylabel("win rate (%)")
    bottom.set_title("Win rate per session (size: trades)", fontsize=11)
    if sessions.empty:
        bottom.text(0.5, 0.5, "no trades", ha="center", va="center", transform=bottom.transAxes)
    else:
        starts = sessions["session_start"].dt.tz_convert("UTC").dt.tz_localize(None)
        bottom.scatter(
            starts,
            100 * sessions["win_rate"],
            s=12 * sessions["trades"],
            alpha=0.6,
            color="#ff7f0e",
        )
        bottom.tick_params(axis="x", labelsize=7, rotation=30)
    bottom.set_ylim(-5, 105)
    bottom.set_ylabel("win rate (%)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    return png_bytes(fig)


def learning_performance_body(
    config: LearningPerformanceConfig, journal: TradeJournalResource, session_hours: int
) -> dg.MaterializeResult:
    """The weekly and per-session win rates of the lookback, their trend and plot."""
    now = pd.Timestamp(config.now) if config.now else pd.Timestamp.now(tz="UTC")
    start, end = lookback_window(now, config.lookback_weeks)
    trades = journal.journal()
    weekly = weekly_win_rate(trades, start, end)
    sessions = session_performance(trades, start, end, session_hours)
    trend = win_rate_trend(weekly, TREND_WEEKS)
    png = performance_png(weekly, sessions)
    return dg.MaterializeResult(
        metadata=performance_metadata(
            start, end, weekly, sessions, trend, count_trades_without_exit_time(trades), png
        )
    )


def build_performance_assets(
    session_hours: int = DEFAULT_SESSION_HOURS,
) -> list[dg.AssetsDefinition]:
    """The monitoring assets (sessions of ``session_hours``, as the partitions use)."""

    @dg.asset(group_name=GROUP, owners=OWNERS, kinds={"sql"})
    def learning_performance(
        config: LearningPerformanceConfig, journal: TradeJournalResource
    ) -> dg.MaterializeResult:
        """Win rate per week and per session over the last weeks of journaled trades, the
        newest week's win rate and its change over four weeks, with a plot of both.

        Counts journal rows as stored (winners pnl > 0, losers pnl < 0); rows without a pnl
        or an exit time are counted apart."""
        return learning_performance_body(config, journal, session_hours)

    return [learning_performance]
