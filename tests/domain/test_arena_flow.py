"""The domain pieces together, session by session, on synthetic bars: shadow books -> paired
marks -> evidence -> the arena's decision (the shape the assets and the replay will follow)."""

import numpy as np
import pandas as pd

from session_learning.domain.arena import (
    FLAT,
    Arena,
    ArenaSettings,
    GateVerdict,
    admit,
    decide_promotion,
    demote,
    next_session,
    promote,
)
from session_learning.domain.arena_evidence import challenger_evidence, record_session
from session_learning.domain.backtest import BacktestConfig, CostModel
from session_learning.domain.drift import design_detector
from session_learning.domain.evidence import (
    EvidenceSettings,
    barrier_span_r,
    difference_bound_r,
)
from session_learning.domain.features import atr
from session_learning.domain.shadow import shadow_book
from session_learning.domain.synthetic import generate_bars

CONFIG = BacktestConfig(tp_atr=2.0, sl_atr=1.0, max_holding_bars=12)
COSTS = CostModel(spread=0.00008)
SESSION = pd.Timedelta(hours=4)


def test_a_member_with_a_real_edge_is_promoted_over_flat_and_a_coin_flipper_is_not():
    bars = generate_bars("EURUSD", "15T", "2025-03-03", "2025-04-14")
    width = atr(bars)
    close = bars["close"].to_numpy()
    rng = np.random.default_rng(0)
    # A known-better member for the test: it sees the close 4 bars ahead (no model can), so its
    # edge is real and large. The other flips a coin.
    ahead = np.r_[close[4:], np.full(4, np.nan)]
    signals = {
        "seer": np.where(np.isnan(ahead), 0, np.sign(ahead - close)).astype(int),
        "coin": rng.choice([-1, 0, 1], size=len(bars), p=[0.2, 0.6, 0.2]),
    }
    settings = ArenaSettings(max_challengers=3, alpha=0.05)
    span = barrier_span_r(CONFIG.tp_atr, CONFIG.sl_atr)
    evidence_settings = EvidenceSettings(alpha=0.05, bound_r=difference_bound_r(span))
    arena = Arena(model="EURUSD_15T")
    for version in signals:
        arena, admission = admit(arena, version, "session_learned", {}, settings)
        assert admission.admitted
    gate = GateVerdict(True, "validation", bars.index[0], bars.index[0] - pd.Timedelta(days=1))

    spans = {v: span for v in signals}
    promoted_at, decision, pairs = None, None, {}
    starts = pd.date_range(bars.index[0], bars.index[-1], freq=SESSION)
    for start in starts[:-1]:
        end = start + SESSION
        upto = bars.index < end
        marks, trades = {}, {}
        for version, signal in signals.items():
            # Each session sees only the bars that exist by its end.
            book = shadow_book(bars[upto], signal[upto], width[upto], CONFIG, COSTS)
            marks[version], closed = book.session(start, end)
            trades[version] = len(closed)
        if len(marks["seer"]) == 0:  # the weekend
            continue
        pairs = record_session(arena, marks, trades, spans, pairs, evidence_settings)
        evidence = challenger_evidence(arena, pairs, settings)
        decision = decide_promotion(arena, evidence, {v: gate for v in signals}, settings)
        if decision.promote:
            promoted_at = arena.session
            arena = promote(arena, decision, evidence, settings)
            break
        arena = next_session(arena)

    assert promoted_at is not None and decision.winner == "seer"
    assert arena.champion == "seer"
    print(f"\nthe seer was promoted over FLAT after {promoted_at + 1} sessions")
    record = decision.winner_verdict().evidence["vs_champion"]
    print(f"evidence at promotion: {record}")
    assert record["e_value"] >= 60 and record["trades"] > 0
    assert record["lower_r"] <= record["mean_r"] <= record["upper_r"]
    coin = pairs["coin"].vs_flat.summary(FLAT)
    assert record["lower_r"] > coin.lower_r
    assert coin.e_value < 60 and coin.lower_r <= 0 <= coin.upper_r


def test_a_champion_that_starts_losing_is_paused_fast_and_a_better_challenger_takes_over():
    # A plain random walk: no regimes, so the seer's edge is the same every week and the only
    # change is the one made here.
    bars = random_walk_bars(seed=4, days=45)
    width = atr(bars)
    close = bars["close"].to_numpy()
    ahead = np.r_[close[4:], np.full(4, np.nan)]
    seer = np.where(np.isnan(ahead), 0, np.sign(ahead - close)).astype(int)
    arena_start = bars.index[0] + pd.Timedelta(days=20)
    flip = bars.index[0] + pd.Timedelta(days=30)
    # The champion's edge turns into a loss at the flip; the challenger keeps it. Before the
    # flip they trade alike, so the challenger has nothing to show.
    champion_signal = np.where(bars.index < flip, seer, -seer)
    signals = {"champ": champion_signal, "steady": seer}
    span = barrier_span_r(CONFIG.tp_atr, CONFIG.sl_atr)
    spans = {v: span for v in signals}
    settings = ArenaSettings(max_challengers=3, alpha=0.05)
    evidence_settings = EvidenceSettings(alpha=0.05)
    gate = GateVerdict(True, "validation", arena_start, arena_start - pd.Timedelta(days=1))

    # The detector is designed from the champion's trades before the arena starts (its
    # validation window), at the default budget and shift.
    history = bars.index < arena_start
    validation = shadow_book(bars[history], seer[history], width[history], CONFIG, COSTS)
    per_session = len(validation.trades) / (history.sum() / 16)
    fresh_detector = design_detector(
        validation.trades["r_multiple"].to_numpy(), trades_per_session=per_session
    )
    detector = fresh_detector

    arena = Arena(model="EURUSD_15T", champion="champ")
    arena, _ = admit(arena, "steady", "periodic", {}, settings)
    pairs, events = {}, []
    starts = pd.date_range(arena_start, bars.index[-1], freq=SESSION)
    for start in starts[:-1]:
        end = start + SESSION
        upto = (bars.index >= arena_start) & (bars.index < end)
        marks, trades, closed = {}, {}, {}
        for version, signal in signals.items():
            book = shadow_book(bars[upto], signal[upto], width[upto], CONFIG, COSTS)
            marks[version], closed[version] = book.session(start, end)
            trades[version] = len(closed[version])
        if len(marks["steady"]) == 0:
            continue
        if arena.champion == "champ":
            detector, change = detector.update(closed["champ"]["r_multiple"].to_numpy())
            if change.alarm:
                evidence = challenger_evidence(arena, pairs, settings)
                arena, demotion = demote(arena, change.as_dict(), evidence, settings)
                events.append(("paused", start, demotion.demoted))
        pairs = record_session(arena, marks, trades, spans, pairs, evidence_settings)
        evidence = challenger_evidence(arena, pairs, settings)
        decision = decide_promotion(arena, evidence, {v: gate for v in signals}, settings)
        if decision.promote:
            events.append(("promoted", start, decision.winner))
            arena = promote(arena, decision, evidence, settings)
            detector = fresh_detector  # a new reign, a new detector (both trade like the seer)
        arena = next_session(arena)

    print(f"\nevents: {[(kind, str(when), who) for kind, when, who in events]}")
    assert events, "nothing happened"
    kind, when, who = events[0]
    assert when >= flip, "acted before the champion changed"
    sessions_after_flip = (when - flip) // SESSION + 1
    print(f"{per_session:.1f} champion trades a session; paused in session {sessions_after_flip}")
    # The speed is measured by simulation (test_drift); here the loop must act, and soon.
    assert kind == "paused" and who == "champ" and sessions_after_flip <= 6
    assert arena.champion == "steady"
    assert ("promoted", events[-1][1], "steady") == events[-1]


def random_walk_bars(seed, days):
    """15-minute bars of a Gaussian random walk, every day of the week, UTC."""
    rng = np.random.default_rng(seed)
    n = days * 96
    close = 1.1 + np.cumsum(rng.normal(0, 0.0006, n))
    open_ = np.r_[1.1, close[:-1]]
    high = np.maximum(open_, close) + rng.random(n) * 0.0004
    low = np.minimum(open_, close) - rng.random(n) * 0.0004
    index = pd.date_range("2025-03-03", periods=n, freq="15min", tz="UTC")
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=index)
    return frame.assign(volume=1.0)
