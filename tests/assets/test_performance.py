"""The learning_performance asset, materialized on a temporary SQLite journal."""

from __future__ import annotations

import base64
import math

import dagster as dg
import pandas as pd
import pytest

from session_learning.assets.performance import build_performance_assets
from session_learning.resources.journal import TradeJournal, TradeJournalResource
from tests.builders import frame, many

PNG_PREFIX = "![weekly win rate](data:image/png;base64,"


def week(monday: str, n_win: int, n_loss: int) -> list[dict]:
    """Trades that exited on Tuesday 10:30 UTC of the week starting ``monday``."""
    exit_ = pd.Timestamp(monday, tz="UTC") + pd.Timedelta(days=1, hours=10, minutes=30)
    entry = exit_ - pd.Timedelta(hours=1)
    return many(n_win, n_loss, entry_time=entry.isoformat(), exit_time=exit_.isoformat())


@pytest.fixture
def journal_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'journal.sqlite'}"


def materialize(journal_url: str, **config) -> dict:
    result = dg.materialize(
        build_performance_assets(),
        resources={"journal": TradeJournalResource(url=journal_url)},
        run_config={"ops": {"learning_performance": {"config": config}}},
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("learning_performance")
    return event.metadata


def test_weekly_trend_sessions_and_plot(journal_url):
    # Weeks of 02-03 .. 03-03: 40%, (none), 50%, 60%, 75% (the newest, two sessions).
    rows = week("2025-02-03", 2, 3) + week("2025-02-17", 2, 2) + week("2025-02-24", 3, 2)
    rows += week("2025-03-03", 2, 1)
    rows += many(
        1, 0, entry_time="2025-03-05T14:00:00+00:00", exit_time="2025-03-05T15:00:00+00:00"
    )
    TradeJournal(journal_url).add_trades(frame(rows))

    metadata = materialize(journal_url, now="2025-03-06T12:00:00+00:00", lookback_weeks=5)

    assert metadata["window"].value == "2025-02-03 00:00 .. 2025-03-06 12:00 UTC"
    assert metadata["trades"].value == 18
    assert metadata["latest_week"].value == "2025-03-03"
    assert metadata["latest_weekly_win_rate"].value == pytest.approx(0.75)
    assert metadata["win_rate_change_vs_4_weeks_ago"].value == pytest.approx(0.75 - 0.4)
    weekly = metadata["weekly"].value
    assert weekly.splitlines()[2].startswith("| 2025-03-03 | 4 | 3 | 1 | 0.75 |")
    assert "| 2025-02-10 | 0 | 0 | 0 | – |" in weekly
    sessions = metadata["sessions"].value
    assert "| 2025-03-05 12:00 | 16:00 | 1 | 1 | 0 | 1 |" in sessions
    assert "| 2025-03-04 08:00 | 12:00 | 3 | 2 | 1 | 0.6667 |" in sessions
    plot = metadata["plot"].value
    assert plot.startswith(PNG_PREFIX) and plot.endswith(")")
    assert base64.b64decode(plot[len(PNG_PREFIX) : -1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_an_empty_journal_reports_no_trades(journal_url):
    metadata = materialize(journal_url, now="2025-03-06T12:00:00+00:00")

    assert metadata["trades"].value == 0
    assert metadata["latest_week"].value == "none"
    assert math.isnan(metadata["latest_weekly_win_rate"].value)
    assert metadata["plot"].value.startswith(PNG_PREFIX)


def test_the_asset_is_described_for_the_ui():
    (asset,) = build_performance_assets()
    key = dg.AssetKey("learning_performance")
    spec = next(iter(asset.specs))
    assert asset.group_names_by_key[key] == "monitoring"
    assert spec.kinds == {"sql"} and spec.owners == ["team:trading-ml"]
    assert "win rate per week" in (spec.description or "").lower()
