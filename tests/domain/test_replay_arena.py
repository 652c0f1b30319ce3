"""The replay's arena arm (``session_learning``): every member marked every session, promotions
only through a passing judgement record carrying the forward evidence, pauses make FLAT trade;
the ``null`` and ``clones`` scenarios and their bar processes."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.arena import FLAT, ArenaSettings
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.replay import (
    ProcessBars,
    ReplayError,
    SyntheticBars,
    add_replay_parser,
    bar_source,
    config_from_args,
    run_replay,
)
from session_learning.reports.replay_report import (
    load_replay,
    render_markdown,
    summarize,
    write_report,
)
from session_learning.resources.registry import ModelRegistry
from tests.domain.test_replay import KEY, SMALL

# Lenient on purpose: alpha 0.95 (an e-value of 2.1 promotes a full share), a detector that alarms
# easily (FLAT then trades, and a challenger with any edge beats it), gates any candidate
# passes, and three weeks of calendar bars (the first model is champion; it takes a pause for a
# challenger to get ahead). The machinery, not the statistics, is under test here.
EAGER = replace(
    SMALL,
    end="2025-03-27T00:00Z",
    arms=("session_learning",),
    arena=ArenaSettings(max_challengers=2, alpha=0.95, min_sessions_before_eviction=12),
    false_alarms_per_100_sessions=0.99,
    detector_block_trades=1,
    gates=GateThresholds(
        min_profit_factor=0.0, max_drawdown_pct=100.0, min_win_rate=0.0, min_trades={"30T": 1}
    ),
)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    out = tmp_path_factory.mktemp("arena")
    return run_replay(EAGER, SyntheticBars(7), out, progress=False)


def test_every_promotion_went_through_a_passing_judgement_record_with_its_evidence(eager):
    run = eager.arms["session_learning"]
    log = run.arena
    promoted = log.loc[log["event"] == "promoted"]
    assert len(promoted) >= 1, "the eager arena should promote"
    registry = ModelRegistry(eager.out / "session_learning" / "models")
    history = registry.history(KEY)
    assert run.unjudged_promotions == 0 and run.promotions == len(history)
    live = {h["version"] for h in history}
    for row in promoted.itertuples(index=False):
        assert row.version in live
        assert registry.promotion_refusal(KEY, row.version) is None
        judgement = registry.judgement(KEY, row.version)
        assert judgement["decision"] == "passed"
        if "earlier judgement" not in row.detail:
            evidence = judgement["evidence"]
            assert evidence["kind"] == "arena" and evidence["winner"] == row.version
            assert evidence["vs_flat"]["e_value"] is None or (
                evidence["vs_flat"]["e_value"] >= evidence["threshold"]
            )
            gate = next(g for g in judgement["gates"] if g["name"] == "candidate_beats_production")
            assert gate["passed"] and gate["message"].startswith("forward evidence")
    # Nothing in the registry went live but the first model and the arena's winners.
    initial = log.loc[log["event"] == "initial", "version"].tolist()
    assert live <= set(promoted["version"]) | set(initial)


def test_what_trades_is_the_champion_of_the_session_and_every_member_is_marked(eager):
    run = eager.arms["session_learning"]
    log = run.arena
    sessions = log.loc[log["event"] == "session"].set_index("session")
    trades = run.trades.copy()
    entered = pd.to_datetime(trades["entry_time"], utc=True) - KEY.bar  # decided on this bar
    trades["decided"] = entered.dt.floor("4h").dt.strftime("%Y-%m-%d-%H:%M")
    assert len(trades)
    for trade in trades.itertuples(index=False):
        assert sessions.loc[trade.decided, "version"] == trade.model_version
    # FLAT never trades; a champion is marked in every session it trades.
    marks = log.loc[log["event"] == "marks"]
    for session, row in sessions.iterrows():
        if row["version"] != FLAT:
            here = marks.loc[marks["session"] == session, "version"]
            assert row["version"] in set(here)
    # Admitted challengers are marked from the next session on, never in the one they entered.
    admitted = log.loc[log["event"] == "admitted"]
    assert len(admitted)
    for row in admitted.itertuples(index=False):
        assert not ((marks["version"] == row.version) & (marks["session"] <= row.session)).any()


def test_the_report_gives_the_arena_numbers(eager):
    summary = summarize(eager)
    arena = summary["arena"]["counts"]
    assert arena["counts"]["promoted"] >= 1
    assert arena["sessions"] == int(
        (eager.arms["session_learning"].arena["event"] == "session").sum()
    )
    text = render_markdown(summary)
    assert "## The arena (`session_learning` arm)" in text
    assert "(0 without)" in text
    # Read back from its files, the same numbers.
    write_report(eager, eager.out)
    assert summarize(load_replay(eager.out))["arena"] == summary["arena"]


def test_clones_are_the_first_training_with_other_seeds(tmp_path):
    config = replace(SMALL, end="2025-03-04T00:00Z", arms=("session_learning",), scenario="clones")
    result = run_replay(config, ProcessBars("stationary", 7), tmp_path, progress=False)
    log = result.arms["session_learning"].arena
    registry = ModelRegistry(tmp_path / "session_learning" / "models")
    versions = log.loc[log["event"].isin(["initial", "admitted", "refused"]), "version"]
    cards = [registry.load(KEY, v)[1] for v in dict.fromkeys(versions)]
    assert len(cards) >= 3
    assert len({tuple(c["training_window"]) for c in cards}) == 1
    assert len({c["params"]["random_seed"] for c in cards}) == len(cards)
    kinds = log.loc[log["event"].isin(["admitted", "refused"]), "kind"]
    assert set(kinds) == {"periodic"}


def test_process_bars_are_deterministic_slices_on_the_weekday_calendar():
    key = ModelKey("EURUSD", "15T")
    start, end = pd.Timestamp("2025-03-03", tz="UTC"), pd.Timestamp("2025-04-28", tz="UTC")
    for process in ("null", "stationary"):
        bars = ProcessBars(process, 3)(key, start, end)
        again = ProcessBars(process, 3)(key, start + pd.Timedelta(days=14), end)
        pd.testing.assert_frame_equal(bars.loc[again.index], again)
        assert (bars.index.day_of_week < 5).all() and bars.index.is_monotonic_increasing
        assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
        assert not bars.equals(ProcessBars(process, 4)(key, start, end))

    # The null walk has no memory; the stationary drift makes 6-hour moves continue.
    def momentum(process: str) -> float:
        year = ProcessBars(process, 3)(key, start, start + pd.Timedelta(days=365))
        close = np.log(year["close"].to_numpy())
        moves = close[24::24] - close[:-24:24]
        return float(np.corrcoef(moves[:-1], moves[1:])[0, 1])

    assert abs(momentum("null")) < 0.1
    assert momentum("stationary") > 0.3
    with pytest.raises(ReplayError, match="unknown bar process"):
        ProcessBars("trend")


def test_scenarios_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers())
    null = config_from_args(parser.parse_args(["replay", "--scenario", "null", "--weeks", "2"]))
    assert null.scenario == "null" and null.source == "null"
    assert null.end - null.start == pd.Timedelta(weeks=2)
    clones = config_from_args(parser.parse_args(["replay", "--scenario", "clones"]))
    assert clones.scenario == "clones" and clones.source == "stationary"
    assert clones.models == (ModelKey("EURUSD", "15T"),)
    assert clones.challenger_every == 1
    daily = config_from_args(
        parser.parse_args(["replay", "--scenario", "flips", "--challenger-every", "6"])
    )
    assert daily.challenger_every == 6 and daily.describe()["challenger_every"] == 6
    with pytest.raises(ReplayError, match="challenger_every"):
        replace(daily, challenger_every=0)
    assert isinstance(bar_source("null", 7), ProcessBars)
    own = config_from_args(
        parser.parse_args(["replay", "--scenario", "null", "--source", "synthetic"])
    )
    assert own.source == "synthetic"
