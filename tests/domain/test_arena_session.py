"""One arena session (``domain/arena_session.py``): session books equal one book over the whole
stay, the state survives JSON, and the rules run in their stated order."""

import json

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.arena import FLAT, ArenaSettings, GateVerdict
from session_learning.domain.arena_judgement import (
    arena_judgement,
    forward_judgement,
    gate_verdict,
    promotion_evidence,
)
from session_learning.domain.arena_session import (
    SHADOW_TRADE_COLUMNS,
    ArenaSessionSettings,
    ArenaState,
    Newcomer,
    mark_session,
    run_arena_session,
)
from session_learning.domain.backtest import BacktestConfig, CostModel
from session_learning.domain.drift import design_detector
from session_learning.domain.features import atr
from session_learning.domain.gates import GATE_NAMES, GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.shadow import shadow_book
from tests.domain.test_arena_flow import random_walk_bars

KEY = ModelKey("EURUSD", "15T")
CONFIG = BacktestConfig(tp_atr=2.0, sl_atr=1.0, max_holding_bars=12)
WIDE = BacktestConfig(tp_atr=3.0, sl_atr=1.5, max_holding_bars=20)
COSTS = CostModel(spread=0.00008)
SESSION = pd.Timedelta(hours=4)


def weekday_bars(seed: int, days: int) -> pd.DataFrame:
    """A random walk with the weekends taken out: sessions without bars happen."""
    bars = random_walk_bars(seed, days)
    return bars[bars.index.day_of_week < 5]


def seer(bars: pd.DataFrame, ahead: int = 4) -> pd.Series:
    """A member that sees the close ``ahead`` bars later (a known-better member for the test)."""
    close = bars["close"].to_numpy()
    future = np.r_[close[ahead:], np.full(ahead, np.nan)]
    return pd.Series(np.where(np.isnan(future), 0, np.sign(future - close)), index=bars.index)


def coin(bars: pd.DataFrame, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = rng.choice([-1, 0, 1], size=len(bars), p=[0.15, 0.7, 0.15])
    return pd.Series(values, index=bars.index)


def gate(at: pd.Timestamp) -> GateVerdict:
    return GateVerdict(True, "validation", at - pd.Timedelta(days=2), at - pd.Timedelta(days=3))


def sessions(bars: pd.DataFrame, first: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    starts = pd.date_range(first, bars.index[-1], freq=SESSION)
    return [(s, s + SESSION) for s in starts]


def walk(state, bars, signals, configs, windows, newcomers_at=None, detectors=None):
    """Run the two steps over ``windows``; returns the outcomes and each session's marks."""
    width = atr(bars)
    outcomes, marked_all = [], []
    for start, end in windows:
        seen = bars[bars.index < end]  # nothing after the session exists yet
        marked = mark_session(state, seen, signals, width, configs, COSTS, start, end, KEY)
        newcomers = (newcomers_at or {}).get(start, ())
        outcome = run_arena_session(state, marked, newcomers)
        outcomes.append(outcome)
        marked_all.append(marked)
        state = outcome.state
    return outcomes, marked_all


def test_session_books_give_exactly_the_marks_and_trades_of_one_book_over_the_whole_stay():
    bars = weekday_bars(seed=3, days=24)
    first = bars.index[0] + pd.Timedelta(days=1)
    windows = sessions(bars, first)
    late = windows[9][0]  # a newcomer offered at the end of session 9 trades from session 10
    signals = {"champ": coin(bars, 1), "early": coin(bars, 2), "late": coin(bars, 3)}
    configs = {"champ": CONFIG, "early": WIDE, "late": CONFIG}
    state = ArenaState.start(KEY.slug, "champ")
    newcomers = {
        windows[0][0]: [Newcomer("early", "periodic", gate(first))],
        late: [Newcomer("late", "session_learned", gate(first))],
    }
    outcomes, marked = walk(state, bars, signals, configs, windows, newcomers)
    assert all(o.promoted is None for o in outcomes)

    width = atr(bars)
    for version, entered in (("champ", windows[0][0]), ("early", windows[1][0])):
        stay = bars[bars.index >= entered]
        whole = shadow_book(stay, signals[version], width, configs[version], COSTS)
        pieces = pd.concat([m.marks[version] for m in marked if version in m.marks])
        assert len(pieces) == len(whole.marks) > 500
        np.testing.assert_allclose(pieces.to_numpy(), whole.marks.to_numpy(), atol=1e-12)
        assert pieces.index.equals(whole.marks.index)
        closed = pd.concat([m.trades[version] for m in marked if version in m.trades])
        assert len(closed) == len(whole.trades) > 10
        np.testing.assert_allclose(
            closed["r_multiple"].to_numpy(), whole.trades["r_multiple"].to_numpy()
        )
        assert (closed["exit_time"].to_numpy() == whole.trades["exit_time"].to_numpy()).all()
        assert closed["shadow"].all() and (closed["model_version"] == version).all()
        assert list(closed.columns) == list(SHADOW_TRADE_COLUMNS)
        assert closed["trade_id"].is_unique
    late_marks = [m.marks["late"] for m in marked if "late" in m.marks]
    assert len(late_marks) == len(windows) - 10  # not marked before it entered
    stay = bars[bars.index >= windows[10][0]]
    whole = shadow_book(stay, signals["late"], width, CONFIG, COSTS)
    np.testing.assert_allclose(pd.concat(late_marks).to_numpy(), whole.marks.to_numpy())
    # Sessions without bars (weekends) do not count.
    with_bars = sum(1 for m in marked if m.bars)
    assert outcomes[-1].state.arena.session == with_bars < len(windows)


def test_a_better_challenger_is_promoted_over_flat_with_its_evidence_and_its_own_detector():
    bars = weekday_bars(seed=5, days=30)
    first = bars.index[0] + pd.Timedelta(days=4)
    windows = sessions(bars, first)
    signals = {"seer": seer(bars), "coin": coin(bars, 9)}
    validation = shadow_book(bars[bars.index < first], signals["seer"], atr(bars), CONFIG, COSTS)
    detector = design_detector(validation.trades["r_multiple"].to_numpy(), trades_per_session=3)
    newcomers = {
        windows[0][0]: [
            Newcomer("coin", "periodic", gate(first)),
            Newcomer("seer", "session_learned", gate(first), detector),
        ]
    }
    outcomes, marked = walk(ArenaState.start(KEY.slug), bars, signals, CONFIG, windows, newcomers)
    promoted = [o for o in outcomes if o.promoted]
    assert [o.promoted for o in promoted] == ["seer"]
    outcome = promoted[0]
    assert outcome.champion_before == FLAT and outcome.champion == "seer"
    assert outcome.state.detector == detector  # a new champion starts its own detector
    record = promotion_evidence(outcome.decision)
    json.dumps(record)  # ready for the judgement record
    assert record["winner"] == "seer" and record["champion"] == FLAT
    assert record["vs_flat"]["e_value"] >= record["threshold"]
    assert record["gates"]["passed"] is True
    # FLAT gave way; the coin-flipper stays a challenger, compared with the seer from now on.
    after = outcomes[-1].state
    assert after.arena.champion == "seer"
    assert after.evidence["coin"].champion == "seer"
    with pytest.raises(ValueError, match="nothing was promoted"):
        promotion_evidence(outcomes[0].decision)

    # The judgement record: the seed's gates from its forward record, the comparison with
    # production replaced by the forward evidence; every declared gate is there and passed.
    until = outcomes.index(outcome) + 1  # its record up to the promotion
    shadow = pd.concat([m.trades["seer"] for m in marked[:until] if "seer" in m.trades])
    window = (windows[1][0], windows[until - 1][1])
    forward = forward_judgement(
        shadow, KEY.timeframe, window, GateThresholds(min_trades={"15T": 20}), 0.01,
        partition=None, judged_at=window[1].isoformat(),
    )  # fmt: skip
    verdict = gate_verdict(forward, "forward", window[0], first)
    assert verdict.passed and verdict.unseen(), verdict
    judged = arena_judgement(
        forward, outcome.decision, baseline_version=None, partition="p", judged_at="2025-03-20"
    )
    assert judged.passed and [g.name for g in judged.gates] == list(GATE_NAMES)
    assert judged.evidence == record
    failing = forward_judgement(
        shadow.iloc[:3], KEY.timeframe, window, GateThresholds(min_trades={"15T": 20}), 0.01,
        partition=None, judged_at=window[1].isoformat(),
    )  # fmt: skip
    assert gate_verdict(failing, "forward", window[0], first).failed == (
        "enough_validation_trades",
    )
    rejected = arena_judgement(
        failing, outcome.decision, baseline_version=None, partition="p", judged_at="2025-03-20"
    )
    assert not rejected.passed


def test_a_losing_champion_is_paused_before_the_evidence_and_stays_a_challenger():
    bars = weekday_bars(seed=4, days=40)
    first = bars.index[0] + pd.Timedelta(days=10)
    flip = first + pd.Timedelta(days=8)
    good = seer(bars)
    champion = good.where(bars.index < flip, -good)  # its edge turns into a loss at the flip
    history = bars.index < first
    validation = shadow_book(bars[history], good[history], atr(bars)[history], CONFIG, COSTS)
    per_session = len(validation.trades) / (history.sum() / 16)
    detector = design_detector(
        validation.trades["r_multiple"].to_numpy(), trades_per_session=per_session
    )
    state = ArenaState.start(KEY.slug, "champ", detector=detector, gate=gate(first))
    windows = sessions(bars, first)
    outcomes, _ = walk(state, bars, {"champ": champion}, CONFIG, windows)
    paused = [o for o in outcomes if o.demotion is not None]
    assert len(paused) == 1
    outcome = paused[0]
    start = windows[outcomes.index(outcome)][0]
    assert start >= flip, "paused before the champion changed"
    assert outcome.change.alarm and outcome.champion == FLAT
    assert outcome.demotion.demoted == "champ"
    state = outcome.state
    assert state.arena.challenger("champ").kind == "previous_champion"
    assert "recency_weighted" in state.arena.requests
    assert state.detector is None  # FLAT needs no detector
    # The paused version's evidence of the same session was recorded against FLAT.
    assert state.evidence["champ"].champion == FLAT
    assert state.evidence["champ"].vs_flat.bars > 0
    # The request is answered by a newcomer of that kind.
    later = windows[outcomes.index(outcome) + 1]
    bars_now = bars[bars.index < later[1]]
    marked = mark_session(
        state, bars_now, {"champ": champion}, atr(bars), CONFIG, COSTS, *later, KEY
    )
    answer = run_arena_session(state, marked, [Newcomer("fresh", "recency_weighted", gate(first))])
    assert answer.admissions[0].admitted
    assert "recency_weighted" not in answer.state.arena.requests


def test_the_state_survives_json_and_the_next_session_is_the_same_from_either():
    bars = weekday_bars(seed=6, days=14)
    first = bars.index[0] + pd.Timedelta(days=3)
    windows = sessions(bars, first)
    signals = {"champ": coin(bars, 4), "a": coin(bars, 5), "b": seer(bars, 2)}
    history = bars.index < first
    validation = shadow_book(bars[history], signals["champ"][history], atr(bars), CONFIG, COSTS)
    detector = design_detector(validation.trades["r_multiple"].to_numpy(), trades_per_session=2)
    state = ArenaState.start(KEY.slug, "champ", detector=detector, gate=gate(first))
    newcomers = {
        windows[0][0]: [Newcomer("a", "periodic", gate(first), detector)],
        windows[1][0]: [Newcomer("b", "session_learned", gate(first))],
    }
    outcomes, _ = walk(state, bars, signals, CONFIG, windows[:8], newcomers)
    state = outcomes[-1].state
    assert state.evidence and state.books and state.gates and state.designs
    text = json.dumps(state.as_dict(), allow_nan=False)
    back = ArenaState.from_dict(json.loads(text))
    assert back.as_dict() == state.as_dict()

    width = atr(bars)
    next_window = windows[8]  # a Friday: it has bars
    seen = bars[bars.index < next_window[1]]
    one = run_arena_session(
        state, mark_session(state, seen, signals, width, CONFIG, COSTS, *next_window, KEY)
    )
    two = run_arena_session(
        back, mark_session(back, seen, signals, width, CONFIG, COSTS, *next_window, KEY)
    )
    assert one.state.as_dict() == two.state.as_dict()
    assert one.decision.as_dict() == two.decision.as_dict()

    with pytest.raises(ValueError, match="schema"):
        ArenaState.from_dict({"schema": 0})
    with pytest.raises(ValueError, match="malformed"):
        ArenaState.from_dict({"schema": 1, "arena": state.arena.as_dict()})


def test_missing_scores_or_bars_are_one_clear_error():
    bars = weekday_bars(seed=2, days=6)
    first = bars.index[0] + pd.Timedelta(days=1)
    windows = sessions(bars, first)
    state = ArenaState.start(KEY.slug, "champ")
    width = atr(bars)
    with pytest.raises(ValueError, match="no champ signals"):
        mark_session(state, bars, {}, width, CONFIG, COSTS, *windows[0], KEY)
    partial = {"champ": coin(bars, 1).iloc[:50]}
    with pytest.raises(ValueError, match="champ signals miss bar"):
        mark_session(state, bars, partial, width, CONFIG, COSTS, *windows[0], KEY)
    with pytest.raises(ValueError, match="no backtest config"):
        mark_session(state, bars, {"champ": coin(bars, 1)}, width, {}, COSTS, *windows[0], KEY)
    outcomes, _ = walk(state, bars, {"champ": coin(bars, 1)}, CONFIG, windows[:3])
    later = outcomes[-1].state
    cut = bars[bars.index >= windows[3][0]]  # the bars no longer reach the resume point
    with pytest.raises(ValueError, match="resumes at bar"):
        mark_session(later, cut, {"champ": coin(bars, 1)}, width, CONFIG, COSTS, *windows[3], KEY)
    marked = mark_session(
        ArenaState.start(KEY.slug), bars, {}, width, CONFIG, COSTS, *windows[0], KEY
    )
    with pytest.raises(ValueError, match="not marked"):
        run_arena_session(later, marked)


def test_settings_reach_the_rules():
    bars = weekday_bars(seed=8, days=8)
    first = bars.index[0] + pd.Timedelta(days=1)
    windows = sessions(bars, first)
    state = ArenaState.start(KEY.slug)
    width = atr(bars)
    signals = {v: coin(bars, i) for i, v in enumerate("abc")}
    marked = mark_session(state, bars, signals, width, CONFIG, COSTS, *windows[0], KEY)
    settings = ArenaSessionSettings(arena=ArenaSettings(max_challengers=2))
    outcome = run_arena_session(
        state, marked, [Newcomer(v, "periodic", gate(first)) for v in "abc"], settings=settings
    )
    assert [a.admitted for a in outcome.admissions] == [True, True, False]
    assert set(outcome.state.books) == {"a", "b"}


def test_evidence_from_an_earlier_reign_ranks_nobody_when_newcomers_arrive():
    from session_learning.domain.arena import Arena, Challenger
    from session_learning.domain.arena_evidence import PairEvidence
    from session_learning.domain.arena_session import admit_newcomers
    from session_learning.domain.evidence import EvidenceSettings, EvidenceState

    losing = EvidenceState(EvidenceSettings()).update(np.full(200, -0.5))
    assert losing.e_value() < 1  # behind: the bettor lost money on it
    old = [Challenger(v, "periodic", 0) for v in ("a", "b", "c")]

    def state(champion_since: int, reign: tuple[str, int]) -> ArenaState:
        arena = Arena("EURUSD_15T", session=20, champion="x", champion_since=champion_since,
                      challengers=tuple(old))  # fmt: skip
        pair = PairEvidence(reign[0], reign[1], losing, losing)
        return ArenaState(arena, evidence={c.version: pair for c in old})

    # Losing against the champion of this reign, judged for 20 sessions: the weakest leaves.
    current, admissions = admit_newcomers(state(0, ("x", 0)), [Newcomer("n", "periodic")])
    assert admissions[0].admitted and admissions[0].evicted in {"a", "b", "c"}
    assert set(current.evidence) == {"a", "b", "c"} - {admissions[0].evicted}
    # The same numbers against the previous champion rank nobody in a reign 1 session old.
    fresh, admissions = admit_newcomers(state(19, ("y", 0)), [Newcomer("n", "periodic")])
    assert not admissions[0].admitted and "younger" in admissions[0].reason
    assert fresh.arena.challengers == tuple(old)
