"""The replay: the live loop session by session, through the journal, the learning domain
functions and the registry; deterministic reports; the known-answer flips scenario."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pandas as pd
import pytest

from session_learning.domain.analysis import LearningRules
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import QUARANTINE_COLUMN, validate_trades
from session_learning.domain.training import LearningConfig
from session_learning.replay import (
    ARMS,
    ArmRun,
    ReplayConfig,
    ReplayError,
    ReplayResult,
    SyntheticBars,
    add_replay_parser,
    config_from_args,
    flips_scenario,
    plain_plan,
    run_replay,
    session_regimes,
)
from session_learning.reports.replay_report import (
    load_replay,
    render_markdown,
    summarize,
    write_report,
)
from session_learning.reports.replay_summary import flip_blocks
from session_learning.resources.journal import TradeJournal
from session_learning.resources.registry import ModelRegistry

KEY = ModelKey("EURUSD", "30T")
# Small windows and few iterations: the loop, not the model, is under test.
SMALL = ReplayConfig(
    models=(KEY,),
    start="2025-03-03T00:00Z",
    end="2025-03-04T12:00Z",
    learning=LearningConfig(
        training_bars=800, validation_bars={"30T": 500}, iterations=15, learning_rate=0.3
    ),
    gates=GateThresholds(min_trades={"30T": 15}),
    rules=LearningRules.preset("aggressive"),
    workers=1,
)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> tuple[ReplayResult, dict]:
    out = tmp_path_factory.mktemp("replay")
    result = run_replay(SMALL, SyntheticBars(7), out, progress=False)
    return result, write_report(result, out)


def test_two_replays_write_identical_reports(replayed, tmp_path):
    first, first_paths = replayed
    # The second one runs the arms in spawned worker processes: same files.
    second = run_replay(replace(SMALL, workers=2), SyntheticBars(7), tmp_path, progress=False)
    second_paths = write_report(second, tmp_path)
    assert second.workers == 2
    for name in ("report", "summary", "equity"):
        assert first_paths[name].read_bytes() == second_paths[name].read_bytes(), name
    for arm in ARMS:
        pd.testing.assert_frame_equal(first.arms[arm].trades, second.arms[arm].trades)


def test_every_trade_is_in_its_arms_journal_and_passes_the_quality_rules(replayed):
    result, _ = replayed
    for arm, run in result.arms.items():
        journal = TradeJournal(f"sqlite:///{result.out / arm / 'journal.sqlite'}")
        rows = journal.trades_exited_between(SMALL.start, SMALL.end)
        journal.engine.dispose()
        checked = validate_trades(rows, known_models=SMALL.models)
        assert (checked[QUARANTINE_COLUMN] == "").all(), arm
        assert sorted(checked["trade_id"]) == sorted(run.trades["trade_id"]), arm
        # A trade is journaled in the session in which it exited.
        sessions = pd.to_datetime(run.trades["session"], format="%Y-%m-%d-%H:%M", utc=True)
        exits = pd.to_datetime(run.trades["exit_time"], utc=True)
        assert ((exits >= sessions) & (exits < sessions + pd.Timedelta(hours=4))).all()


def test_positions_never_overlap_and_every_trade_comes_from_a_model_already_live(replayed):
    result, _ = replayed
    for arm, run in result.arms.items():
        if run.trades.empty:
            continue
        trades = run.trades.sort_values("entry_time")
        assert (
            trades["entry_time"].iloc[1:].to_numpy()
            >= trades["exit_time"].iloc[:-1].to_numpy() - KEY.bar
        ).all()
        # Deployments take effect at their session's end; the registry's history shows the
        # promoted ones (the ungated arm's models never pass through promote).
        deployed = run.candidates.loc[run.candidates["deployed"]]
        live_from = dict(zip(deployed["version"], pd.to_datetime(deployed["time"]), strict=True))
        history = ModelRegistry(result.out / arm / "models").history(KEY)
        if arm == "session_learning":
            # The arena promotes a challenger when its forward evidence is in, after training.
            live_from = {}
            for h in history:
                live_from.setdefault(h["version"], pd.Timestamp(h["live_from"]))
        assert {h["version"]: pd.Timestamp(h["live_from"]) for h in history}.items() <= (
            live_from.items()
        ), arm
        for trade in trades.itertuples(index=False):
            # Decided on the bar before the entry, after the version went live: no look-ahead.
            assert live_from[trade.model_version] <= trade.entry_time - KEY.bar, arm


def test_no_arm_promotes_a_version_without_a_passing_judgement(replayed):
    result, _ = replayed
    promoted = 0
    for arm in result.arms:
        registry = ModelRegistry(result.out / arm / "models")
        previous = None
        for entry in registry.history(KEY):
            judgement = registry.judgement(KEY, entry["version"])
            assert judgement["decision"] == "passed", (arm, entry)
            if entry.get("kind") != "rollback":  # the arena brings a paused version back
                assert judgement["baseline_version"] == previous, (arm, entry)
            previous = entry["version"]
            promoted += 1
    assert promoted  # some arm deployed something


def test_arms_follow_their_deployment_rules(replayed):
    result, _ = replayed
    static = result.arms["static"].candidates
    assert len(static) == 1 and static["deployed"].all()  # trained once, never again
    ungated = result.arms["ungated"].candidates
    assert ungated.loc[ungated["error"] == "", "deployed"].all()
    for arm in ("periodic", "session_learning"):
        cands = result.arms[arm].candidates
        if arm == "periodic":  # the arena deploys on forward evidence (test_replay_arena.py)
            assert (cands["deployed"] == cands["passed"]).all(), arm
        failed = cands.loc[~cands["passed"] & (cands["error"] == "")]
        assert (failed["failed_gates"] != "").all()
    periodic = result.arms["periodic"]
    # The periodic arm retrains on every session with new bars (the last one never trades).
    with_bars = periodic.sessions.iloc[:-1]
    assert (with_bars["trainings"] == 1).all()
    assert result.arms["session_learning"].candidates["reasons"].str.contains("loser").any()


def test_periodic_plan_learns_nothing_from_the_session():
    plan = plain_plan(KEY, LearningRules())
    assert plan.retrain and not plan.trade_boosts and not plan.refit_barriers
    assert plan.class_weights == {"short": 1.0, "flat": 1.0, "long": 1.0}
    assert (plan.l2_leaf_reg, plan.depth, plan.edge_threshold) == (3.0, 6, 0.08)


def test_report_states_verdicts_and_that_the_replay_is_too_short(replayed):
    result, paths = replayed
    report = paths["report"].read_text()
    summary = json.loads(paths["summary"].read_text())
    assert "too short to conclude" in report
    assert summary["resolution"]["too_short"]
    for arm in ARMS:
        stats = summary["arms"][arm]
        assert stats["trades"] == len(result.arms[arm].trades)
        low, high = stats["expectancy_ci"]
        if stats["trades"]:
            assert low <= stats["expectancy_r"] <= high
    assert {c["verdict"] for c in summary["comparisons"]} <= {
        "no measurable difference",
        "identical trades",
        "session_learning higher",
        "static higher",
        "periodic higher",
        "ungated higher",
    }


def _run(arm: str, r: list[float]) -> ArmRun:
    times = pd.date_range("2025-01-06T01:00Z", periods=len(r), freq="2h")
    trades = pd.DataFrame(
        {
            "trade_id": [f"{arm}-{i}" for i in range(len(r))],
            "symbol": "EURUSD",
            "timeframe": "30T",
            "entry_time": times - pd.Timedelta(hours=1),
            "exit_time": times,
            "r_multiple": r,
        }
    )
    empty = pd.DataFrame(columns=["model", "error", "passed", "failed_gates", "deployed"])
    sessions = pd.DataFrame(columns=["wall_seconds", "cpu_seconds", "trainings"])
    return ArmRun(arm, trades, empty, sessions, 0, 0)


@pytest.mark.parametrize(
    ("better", "worse", "verdict"),
    [
        ([2.0, -1.0] * 150, [-1.0, 0.5] * 150, "session_learning higher"),
        ([2.0, -1.0] * 150, [-1.0, 2.0, 2.0, -1.0] * 75, "no measurable difference"),
    ],
)
def test_a_difference_inside_the_interval_is_no_measurable_difference(better, worse, verdict):
    config = replace(SMALL, start="2025-01-06T00:00Z", end="2025-02-06T00:00Z")
    result = ReplayResult(
        config,
        {"session_learning": _run("session_learning", better), "static": _run("static", worse)},
        None,
        None,
        0.0,
        1,
    )
    [comparison] = summarize(result)["comparisons"]
    assert comparison["verdict"] == verdict


def test_flip_blocks_count_sessions_since_the_last_change_of_structure():
    starts = pd.date_range("2025-01-06T00:00Z", periods=7, freq="4h")
    regimes = pd.DataFrame(
        {
            "session": [s.strftime("%Y-%m-%d-%H:%M") for s in starts],
            "start": starts,
            "symbol": "EURUSD",
            "regime": ["trend", "trend", "burst", "trend", "range", "burst", "trend"],
        }
    )
    blocks = flip_blocks(regimes)
    # trend -> burst -> trend is no flip; range and the trend after it are.
    assert blocks["structure"].tolist() == [
        "trend",
        "trend",
        "trend",
        "trend",
        "range",
        "range",
        "trend",
    ]
    assert blocks["session_number"].tolist()[4:] == [0, 1, 0]
    assert blocks["flip"].isna().tolist() == [True] * 4 + [False] * 3


def test_cli_arguments_become_a_config(tmp_path):
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "replay",
            "--from",
            "2025-02-03",
            "--to",
            "2025-02-10",
            "--symbols",
            "EURUSD,XAUUSD",
            "--timeframes",
            "30T,15T",
            "--arms",
            "static,session_learning",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--iterations",
            "20",
        ]
    )
    config = config_from_args(args)
    assert [m.slug for m in config.models] == [
        "EURUSD_30T",
        "EURUSD_15T",
        "XAUUSD_30T",
        "XAUUSD_15T",
    ]
    assert config.arms == ("static", "session_learning")
    assert (config.seed, config.learning.iterations) == (3, 20)
    assert len(config.sessions()) == 7 * 6
    assert args.func.__name__ == "cmd_replay"
    defaults = config_from_args(parser.parse_args(["replay"]))
    assert defaults.arms == ARMS and len(defaults.models) == 3


def test_a_bad_request_says_what_is_wrong():
    with pytest.raises(ReplayError, match="unknown arm"):
        replace(SMALL, arms=("static", "weekly"))
    with pytest.raises(ReplayError, match="no costs configured for USDCHF"):
        replace(SMALL, models=(ModelKey("USDCHF", "30T"),))
    with pytest.raises(ReplayError, match="empty"):
        replace(SMALL, end=SMALL.start)


def test_a_finished_replay_renders_the_same_report_from_its_files(replayed):
    result, paths = replayed
    again = load_replay(result.out)
    assert render_markdown(summarize(again)) == paths["report"].read_text()


def test_flips_scenario_static_model_does_not_recover_from_a_flip(tmp_path):
    """The known answer, as far as the synthetic generator shows it.

    The scenario starts where the structure flips from trend to range after the static
    model's training and validation windows (seed 13; the bars follow EURUSD's CME Globex
    calendar). That model keeps winning in trends and keeps losing in ranges, also after the
    lag by which a retrained model could have seen the new structure. Over 4 weeks the loss
    is beyond noise for seed 13, not for seeds 5, 7 and 11; whether a learning arm recovers
    is not asserted (docs/replay/README.md).
    """
    seed = 13
    config = replace(flips_scenario(seed, weeks=4), arms=("static",), workers=1)
    regimes = session_regimes(config, SyntheticBars(seed)).set_index("start")["regime"]
    before = regimes.loc[regimes.index < config.start].tail(60)
    assert regimes.loc[config.start] == "range" and (before == "trend").mean() >= 0.75

    result = run_replay(config, SyntheticBars(seed), tmp_path, progress=False)
    summary = summarize(result)
    phases = {(p["structure"], p["phase"]): p for p in summary["flips"]["phases"]}
    unknown = phases[("range", "after the lag")]
    assert unknown["trades"] >= 30
    assert unknown["ci"][1] < 0  # losing beyond noise, weeks after the flip
    by_regime = {row["regime"]: row for row in summary["by_regime"]}
    assert by_regime["trend"]["expectancy_r"] > 0 > by_regime["range"]["expectancy_r"]


def test_a_stopped_replay_resumes_with_the_arms_it_finished(tmp_path):
    config = replace(SMALL, arms=("static", "ungated"))
    first = run_replay(config, SyntheticBars(7), tmp_path, progress=False)
    (tmp_path / "ungated" / "arm.json").unlink()  # as if stopped before ungated finished
    static_journal = (tmp_path / "static" / "journal.sqlite").stat().st_mtime_ns
    again = run_replay(config, SyntheticBars(7), tmp_path, progress=False, resume=True)
    assert (tmp_path / "static" / "journal.sqlite").stat().st_mtime_ns == static_journal
    assert summarize(again) == summarize(first)
