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
    challenger_evidence,
    decide_promotion,
    next_session,
    promote,
    record_session,
)
from session_learning.domain.backtest import BacktestConfig, CostModel
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
