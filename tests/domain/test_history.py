"""Does a model's history support learning? The verdict before training, held to the real
learning step's arithmetic."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.domain.analysis import RetrainPlan
from session_learning.domain.bars import BarDataError, validate_bars
from session_learning.domain.calendars import get_calendar
from session_learning.domain.history import CANNOT, OK, WARNING, check_history, history_needs
from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.domain.training import LearningConfig, LearningError, build_training_set
from tests.domain.test_calendars import flat_bars

KEY_SYMBOL, KEY_TF = "EURUSD", "30T"
CONFIG = LearningConfig(training_bars=1200, validation_bars={"30T": 600}, iterations=10)
FX = get_calendar("CMEGlobex_FX")
# A Monday-evening session: its rows include the daily break, which holds no bars.
SESSION = (pd.Timestamp("2024-06-03 20:00", tz="UTC"), pd.Timestamp("2024-06-04 00:00", tz="UTC"))


def key() -> ModelKey:
    return ModelKey(KEY_SYMBOL, KEY_TF)


def empty_trades() -> pd.DataFrame:
    return pd.DataFrame(columns=["symbol", "timeframe"])


def last_bars(count: int) -> pd.DataFrame:
    start, end = SESSION
    bars = generate_bars(KEY_SYMBOL, KEY_TF, "2024-01-01", end)
    return bars.iloc[-count:]


def test_the_needs_are_exactly_what_build_training_set_requires():
    start, end = SESSION
    needs = history_needs(key(), CONFIG, start, end, FX)
    assert needs.session == 7  # bars 19:30 .. 23:30 less the 21:00-22:00 summer break
    assert needs.full == 300 + 1200 + 48 + 600 + 7
    assert needs.minimum == needs.full - 1200 + 500
    plan = RetrainPlan(model=key().slug, retrain=True)
    build_training_set(last_bars(needs.minimum), key(), start, end, empty_trades(), plan, CONFIG)
    with pytest.raises(LearningError, match="only 499 training rows"):
        build_training_set(
            last_bars(needs.minimum - 1), key(), start, end, empty_trades(), plan, CONFIG
        )
    _, info = build_training_set(
        last_bars(needs.full), key(), start, end, empty_trades(), plan, CONFIG
    )
    # With the full history the training window starts right after the warm-up.
    assert info["training_window"][0] == last_bars(needs.full).index[300].isoformat()


def verdict(count: int, **kwargs):
    bars = last_bars(count)
    report = validate_bars(bars, key())
    start, end = SESSION
    return check_history(
        key(), report, session_start=start, session_end=end, config=CONFIG, calendar=FX, **kwargs
    )


def test_short_history_cannot_learn_and_says_what_to_fetch():
    needs = history_needs(key(), CONFIG, *SESSION, FX)
    check = verdict(needs.minimum - 100)
    assert check.status == CANNOT and not check.can_learn
    assert f"learning needs at least {needs.minimum}" in check.verdict
    assert (
        f"fetch {needs.full - needs.minimum + 100} more bars (history from 2024-0" in check.verdict
    )
    assert "shorten the windows: training_bars 1200 -> 500 and validation_bars[30T] 600 -> 500" in (
        check.verdict
    )


def test_a_history_between_the_minimum_and_the_full_windows_learns_with_a_warning():
    needs = history_needs(key(), CONFIG, *SESSION, FX)
    check = verdict(needs.full - 200)
    assert check.status == WARNING and check.can_learn
    assert "learning runs with 1000 training rows instead of training_bars 1200" in check.verdict
    full = verdict(needs.full)
    assert full.status == OK and full.verdict.endswith("learning can run.")
    assert full.bars == needs.full and full.staleness == pd.Timedelta(0)


def test_stale_and_holed_history_is_a_warning_with_the_fix():
    needs = history_needs(key(), CONFIG, *SESSION, FX)
    bars = last_bars(needs.full + 400)
    stale = bars.iloc[:-60]  # the newest 60 bars (more than a day) never arrived
    start, end = SESSION
    check = check_history(
        key(),
        validate_bars(stale, key()),
        session_start=start,
        session_end=end,
        config=CONFIG,
        calendar=FX,
    )
    assert check.status == WARNING and "fetch recent bars" in check.verdict
    holed = bars.drop(bars.index[-900:-860].append(bars.index[-1500:-1460]))
    check = check_history(
        key(),
        validate_bars(holed, key()),
        session_start=start,
        session_end=end,
        config=CONFIG,
        calendar=FX,
    )
    assert check.status == WARNING and "80 bars (3%) missing in 2 gaps" in check.verdict
    assert "re-download them, or use a higher timeframe (1H)" in check.verdict


def test_a_loading_error_is_the_verdict():
    start, end = SESSION
    times = FX.expected_bar_times("2024-05-01", "2024-06-03 23:30", key().bar)
    holed = flat_bars(times[(times < "2024-05-14") | (times >= "2024-05-17")])
    with pytest.raises(BarDataError) as info:
        validate_bars(holed, key())
    check = check_history(
        key(), None, session_start=start, session_end=end, config=CONFIG, calendar=FX,
        error=info.value,
    )  # fmt: skip
    assert check.status == CANNOT
    assert "the bars cannot be used: EURUSD 30T: 1 gap longer than max_gap 24h" in check.verdict
    assert "2 sessions open there with no bar at all (2024-05-15, 2024-05-16)" in check.verdict
