"""Every session of two weeks, through Christmas and New Year and through a summer-time
change, on bars that follow the FX and metals calendars: each loads and learns, or fails with
an error that names the problem and the fix. Sunday evening sessions included."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.bars import BarDataError
from session_learning.domain.fitting import train_candidate
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import history_start
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.training import (
    DEFAULT_COSTS,
    LearningConfig,
    LearningError,
    build_training_set,
)
from session_learning.resources.market_data import FileMarketDataResource, write_bars

CONFIG = LearningConfig(
    training_bars=600, validation_bars={"15T": 300, "30T": 300}, iterations=5, thread_count=1
)
SESSION = pd.Timedelta(hours=4)
FORTNIGHTS = {
    # Christmas Eve (early close for FX), Christmas Day and New Year's Day closed.
    "christmas": ("2024-12-22", "2025-01-05"),
    # US summer time began on Sunday 2025-03-09: the Sunday open moves from 23:00 to 22:00 UTC.
    "summer_time": ("2025-03-02", "2025-03-16"),
}
# A whole trading session (Thursday 2 January for FX and metals alike) that the provider lost.
LOST = ("2025-01-01 23:00", "2025-01-02 21:59")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("bars")
    for key in (ModelKey("EURUSD", "15T"), ModelKey("XAUUSD", "30T")):
        bars = generate_bars(key.symbol, key.timeframe, "2024-09-01", "2025-03-17")
        if key.symbol == "XAUUSD":
            bars = bars.drop(bars.loc[LOST[0] : LOST[1]].index)
        write_bars(data, key, bars)
    return data


def sessions(fortnight: str) -> pd.DatetimeIndex:
    start, end = FORTNIGHTS[fortnight]
    return pd.date_range(start, end, freq=SESSION, tz="UTC", inclusive="left")


@pytest.mark.slow
@pytest.mark.parametrize("fortnight", list(FORTNIGHTS))
@pytest.mark.parametrize("model", ["EURUSD:15T", "XAUUSD:30T"])
def test_every_session_of_two_weeks_loads_and_learns(folder, fortnight, model):
    key = ModelKey.parse(model)
    source = FileMarketDataResource(directory=str(folder), max_staleness_hours=72)
    calendar = source.calendar(key)
    assert calendar.name == {"EURUSD": "CMEGlobex_FX", "XAUUSD": "CMEGlobex_Metals"}[key.symbol]
    plan = RetrainPlan(model=key.slug, retrain=True)
    no_trades = pd.DataFrame(columns=["symbol", "timeframe"])
    learned, failed, sunday_evening = 0, [], 0
    for start in sessions(fortnight):
        end = start + SESSION
        try:
            report = source.load(
                key, history_start(key, end, CONFIG.history_bars(key.timeframe), calendar), end,
                now=end,
            )  # fmt: skip
            frame, info = build_training_set(report.bars, key, start, end, no_trades, plan, CONFIG)
            info["plan"] = plan.to_dict()
            candidate = train_candidate(frame, info, CONFIG, DEFAULT_COSTS[key.symbol], key.bar)
        except (BarDataError, LearningError) as exc:
            # Allowed only with a message that names the problem and what to do.
            assert str(exc).startswith(str(key)) and ("Fix" in str(exc) or "load more" in str(exc))
            failed.append((start, str(exc)))
            continue
        assert candidate.result.metrics.trades >= 0
        # The Christmas and New Year closures are never gaps; the lost trading day is one,
        # named, and shorter than max_gap: recorded, not fatal.
        for gap in report.gaps:
            assert gap.sessions == ("2025-01-02",), gap
        learned += 1
        if start.day_of_week == 6 and start.hour >= 16:
            sunday_evening += 1
    assert failed == []
    assert learned == len(sessions(fortnight)) == 84
    assert sunday_evening == 4  # two Sundays, the 16:00 and 20:00 sessions of each


def test_the_lost_session_is_reported_with_its_date(folder):
    key = ModelKey("XAUUSD", "30T")
    report = FileMarketDataResource(directory=str(folder)).load(
        key, "2024-12-30", "2025-01-06", now=pd.Timestamp("2025-01-06", tz="UTC")
    )
    (gap,) = report.gaps
    assert gap.sessions == ("2025-01-02",)
    assert "missing the whole session of 2025-01-02" in report.to_metadata()["largest_gap"]
    # Christmas and New Year's Day are closures, not gaps; Friday 3 January trades again.
    assert gap.start == pd.Timestamp("2025-01-01 23:00", tz="UTC")
    assert gap.end == pd.Timestamp("2025-01-02 23:00", tz="UTC")
