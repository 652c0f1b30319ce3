"""The arena's rules: entry, eviction, leaving, demotion and promotion, each with its reason."""

import json

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.arena import (
    FLAT,
    Arena,
    ArenaSettings,
    Challenger,
    ChallengerEvidence,
    GateVerdict,
    admit,
    capital_of,
    challenger_threshold,
    decide_promotion,
    demote,
    idle_capital,
    next_session,
    promote,
    retire,
)
from session_learning.domain.arena_evidence import challenger_evidence, record_session
from session_learning.domain.arena_simulation import clone_arena_years, difference_pool
from session_learning.domain.evidence import Evidence, EvidenceSettings

SETTINGS = ArenaSettings(max_challengers=3, alpha=0.05, max_challenger_sessions=180)
THRESHOLD = 60.0


def evidence(baseline, e_value, bars=640, trades=40, mean=0.05):
    return Evidence(
        baseline=baseline,
        e_value=e_value,
        threshold=THRESHOLD,
        passed=e_value >= THRESHOLD,
        mean_r=mean,
        lower_r=mean - 0.04,
        upper_r=mean + 0.04,
        switching_cost_r=0.005,
        alpha=0.05,
        bound_r=6.0,
        bars=bars,
        trades=trades,
        clipped_bars=0,
    )


def both(champion, vs_champion, vs_flat=None):
    vs_flat = vs_champion if vs_flat is None else vs_flat
    return ChallengerEvidence(evidence(champion, vs_champion), evidence(FLAT, vs_flat))


def gates(passed=True, data="validation", unseen=True, failed=()):
    trained = pd.Timestamp("2026-01-01", tz="UTC")
    start = trained + pd.Timedelta(days=2 if unseen else -5)
    return GateVerdict(passed, data, start, trained, tuple(failed))


def full_arena(session=20, champion="champ"):
    return Arena(
        model="EURUSD_15T",
        session=session,
        champion=champion,
        challengers=(
            Challenger("a", "session_learned", 0),
            Challenger("b", "periodic", 5),
            Challenger("c", "session_learned", 18),
        ),
    )


def test_settings_threshold_is_k_over_alpha():
    assert SETTINGS.e_threshold == pytest.approx(60.0)
    with pytest.raises(ValueError, match="max_challengers"):
        ArenaSettings(max_challengers=0)


def test_a_candidate_enters_while_there_is_room_and_not_twice():
    arena = Arena(model="m", champion="champ")
    arena, admission = admit(arena, "a", "session_learned", {}, SETTINGS)
    assert admission.admitted
    assert arena.challengers == (Challenger("a", "session_learned", 0, capital=1 / 3),)
    same, again = admit(arena, "a", "periodic", {}, SETTINGS)
    assert not again.admitted and same == arena and "already" in again.reason
    _, champion = admit(arena, "champ", "periodic", {}, SETTINGS)
    assert not champion.admitted
    with pytest.raises(ValueError, match="FLAT"):
        admit(arena, FLAT, "periodic", {}, SETTINGS)
    with pytest.raises(ValueError, match="kind"):
        admit(arena, "z", "favourite", {}, SETTINGS)


def test_full_arena_evicts_the_weakest_old_enough_challenger_not_ahead():
    arena = full_arena()
    ev = {"a": both("champ", 0.4), "b": both("champ", 0.2), "c": both("champ", 0.01)}
    # c is the weakest but only 2 sessions old: protected. b is the weakest of the rest.
    arena2, admission = admit(arena, "d", "session_learned", ev, SETTINGS)
    assert admission.admitted and admission.evicted == "b"
    assert [c.version for c in arena2.challengers] == ["a", "c", "d"]
    assert "weakest evidence" in admission.reason


def test_full_arena_refuses_a_newcomer_when_everyone_is_young_or_ahead():
    arena = full_arena()
    ev = {"a": both("champ", 3.0), "b": both("champ", 1.5), "c": both("champ", 0.5)}
    same, admission = admit(arena, "d", "session_learned", ev, SETTINGS)
    assert not admission.admitted and same == arena
    assert "younger than 6 sessions or ahead" in admission.reason


def test_a_requested_recency_challenger_may_evict_a_young_one_not_ahead():
    arena = full_arena()
    arena = Arena(**{**arena.__dict__, "requests": ("recency_weighted",)})
    ev = {"a": both("champ", 3.0), "b": both("champ", 1.5), "c": both("champ", 0.5)}
    arena2, admission = admit(arena, "r", "recency_weighted", ev, SETTINGS)
    assert admission.admitted and admission.evicted == "c"
    assert arena2.requests == ()


def test_an_overstayed_challenger_is_the_first_to_go():
    arena = full_arena(session=185)
    ev = {"a": both("champ", 5.0), "b": both("champ", 0.1), "c": both("champ", 0.5)}
    _, admission = admit(arena, "d", "periodic", ev, SETTINGS)
    assert admission.evicted == "a" and "overstayed" in admission.reason


def test_retire_overstayed_and_futile_challengers():
    arena = full_arena(session=182)
    ev = {"a": both("champ", 10.0), "b": both("champ", 0.01), "c": both("champ", 0.02)}
    arena2, gone = retire(arena, ev, SETTINGS)
    assert {r.version for r in gone} == {"a", "b", "c"}
    reasons = {r.version: r.reason for r in gone}
    assert "overstayed" in reasons["a"] and "futile" in reasons["b"]
    assert arena2.challengers == ()
    # Young challengers and ones judged for less than the minimum stay are kept.
    young = full_arena(session=20)
    kept, gone = retire(young, {"c": both("champ", 0.001)}, SETTINGS)
    assert gone == () and kept.challengers == young.challengers
    recent_champion = Arena(**{**arena.__dict__, "session": 30, "champion_since": 28})
    _, gone = retire(recent_champion, {"a": both("champ", 0.001)}, SETTINGS)
    assert gone == ()


def test_demotion_pauses_the_champion_keeps_it_as_a_challenger_and_asks_for_recency():
    arena = Arena(
        model="m", session=40, champion="champ", challengers=(Challenger("a", "periodic", 3),)
    )
    alarm = {"alarm": True, "statistic": 21.0, "threshold": 19.6}
    paused, demotion = demote(arena, alarm, {"a": both("champ", 2.0, vs_flat=0.5)}, SETTINGS)
    assert paused.champion == FLAT and paused.champion_since == 40 and paused.paused == "champ"
    back = paused.challenger("champ")
    assert (back.kind, back.entered_session) == ("previous_champion", 40)
    assert back.capital == pytest.approx(1 / 3)
    assert paused.requests == ("recency_weighted",)
    assert demotion.demoted == "champ" and demotion.restart_evidence
    assert demotion.change["statistic"] == 21.0
    # FLAT has nothing to pause.
    again, nothing = demote(paused, alarm, {}, SETTINGS)
    assert again == paused and nothing.demoted is None


def test_demotion_of_a_full_arena_evicts_by_evidence_against_flat():
    arena = full_arena(session=40)
    ev = {
        "a": both("champ", 0.1, vs_flat=3.0),
        "b": both("champ", 5.0, vs_flat=0.2),
        "c": both("champ", 0.3, vs_flat=0.9),
    }
    paused, _ = demote(arena, None, ev, SETTINGS)
    assert {c.version for c in paused.challengers} == {"a", "c", "champ"}


def test_promotion_needs_evidence_against_champion_and_flat_and_gates_on_unseen_data():
    arena = full_arena(session=60)
    ev = {
        "a": both("champ", 80.0, vs_flat=70.0),  # eligible
        "b": both("champ", 200.0, vs_flat=10.0),  # beats a losing champion, not FLAT
        "c": both("champ", 90.0, vs_flat=90.0),  # gates judged on training data
    }
    verdicts = {"a": gates(), "b": gates(), "c": gates(unseen=False)}
    decision = decide_promotion(arena, ev, verdicts, SETTINGS)
    assert decision.promote and decision.winner == "a" and decision.threshold == 60.0
    by = {c.version: c for c in decision.candidates}
    assert not by["b"].eligible and any("vs FLAT <" in r for r in by["b"].reasons)
    assert not by["c"].eligible and any("not after its training" in r for r in by["c"].reasons)
    record = decision.winner_verdict()
    assert record.evidence["vs_champion"]["e_value"] == 80.0
    assert record.evidence["vs_champion"]["bars"] == 640
    assert record.evidence["vs_flat"]["lower_r"] == pytest.approx(0.01)
    assert record.gates["passed"] and record.gates["data"] == "validation"
    json.dumps(decision.as_dict())  # storable as it is


def test_highest_e_value_wins_among_eligible_challengers():
    arena = full_arena(session=60)
    ev = {"a": both("champ", 80.0), "b": both("champ", 300.0), "c": both("champ", 61.0)}
    decision = decide_promotion(arena, ev, {v: gates() for v in "abc"}, SETTINGS)
    assert decision.winner == "b"


@pytest.mark.parametrize(
    "ev, gate, why",
    [
        (None, gates(), "no forward evidence"),
        (both("champ", 59.0), gates(), "vs the champion <"),
        (both("old-champ", 500.0), gates(), "not the champion"),
        (both("champ", 500.0), None, "no gate verdict"),
        (both("champ", 500.0), gates(passed=False, failed=["win_rate"]), "failed the gates"),
    ],
)
def test_no_promotion_without_every_condition(ev, gate, why):
    arena = Arena(
        model="m", session=9, champion="champ", challengers=(Challenger("a", "periodic"),)
    )
    decision = decide_promotion(
        arena, {} if ev is None else {"a": ev}, {} if gate is None else {"a": gate}, SETTINGS
    )
    assert not decision.promote and decision.winner is None
    assert any(why in r for r in decision.candidates[0].reasons)
    with pytest.raises(ValueError, match="does not promote"):
        promote(arena, decision, None, SETTINGS)


def test_promoting_from_flat_uses_the_flat_evidence_and_answers_the_request():
    arena = Arena(
        model="m",
        session=50,
        champion=FLAT,
        challengers=(
            Challenger("champ", "previous_champion", 40),
            Challenger("r", "recency_weighted", 41),
        ),
        paused="champ",
        requests=("recency_weighted",),
    )
    ev = {"champ": both(FLAT, 5.0), "r": both(FLAT, 75.0)}
    decision = decide_promotion(arena, ev, {"r": gates(data="forward")}, SETTINGS)
    assert decision.winner == "r"
    after = promote(arena, decision, ev, SETTINGS)
    assert after.champion == "r" and after.champion_since == 50 and after.paused is None
    assert after.requests == ()
    assert [c.version for c in after.challengers] == ["champ"]  # FLAT is never a challenger


def test_the_replaced_champion_stays_as_a_challenger():
    arena = Arena(
        model="m", session=70, champion="champ", challengers=(Challenger("a", "periodic", 1),)
    )
    ev = {"a": both("champ", 100.0)}
    decision = decide_promotion(arena, ev, {"a": gates()}, SETTINGS)
    after = promote(arena, decision, ev, SETTINGS)
    assert after.champion == "a"
    assert [(c.version, c.kind, c.entered_session) for c in after.challengers] == [
        ("champ", "previous_champion", 70)
    ]
    assert after.challengers[0].capital == pytest.approx(1 / 3)


def test_a_stale_decision_cannot_be_applied():
    arena = Arena(
        model="m", session=70, champion="champ", challengers=(Challenger("a", "periodic", 1),)
    )
    decision = decide_promotion(arena, {"a": both("champ", 100.0)}, {"a": gates()}, SETTINGS)
    with pytest.raises(ValueError, match="decide again"):
        promote(next_session(arena), decision, None, SETTINGS)


def test_members_and_storage_round_trip():
    arena = full_arena()
    assert arena.members() == ("champ", "a", "b", "c")
    assert Arena(model="m").members() == ()
    stored = json.loads(json.dumps(arena.as_dict()))
    assert Arena.from_dict(stored) == arena
    assert next_session(arena).session == 21


def session_marks(rng, versions, bars=16):
    index = pd.date_range("2026-02-02 08:00", periods=bars, freq="15min", tz="UTC")
    return {v: pd.Series(rng.normal(0, 0.4, bars).clip(-3, 3), index=index) for v in versions}


def test_evidence_against_the_champion_restarts_with_each_reign_and_against_flat_goes_on():
    rng = np.random.default_rng(3)
    settings = EvidenceSettings(alpha=0.05, switching_cost_r=0.005)
    spans = {"champ": 3.0, "a": 3.0, "b": 2.0}
    arena = Arena(
        model="m",
        session=0,
        champion="champ",
        challengers=(Challenger("a", "periodic"), Challenger("b", "periodic")),
    )
    pairs = {}
    for _ in range(3):
        marks = session_marks(rng, ("champ", "a", "b"))
        pairs = record_session(arena, marks, {"a": 1}, spans, pairs, settings)
        arena = next_session(arena)
    assert pairs["a"].vs_champion.bars == 48 and pairs["a"].vs_flat.bars == 48
    assert pairs["a"].vs_champion.trades == 3
    # Bounds follow the pair: 3 + 3 against the champion, 3 against FLAT, 2 + 3 for b.
    assert pairs["a"].vs_champion.settings.bound_r == 6.0
    assert pairs["a"].vs_flat.settings.bound_r == 3.0
    assert pairs["b"].vs_champion.settings.bound_r == 5.0

    # A demotion: FLAT reigns from now; the champion comparison restarts, FLAT's goes on.
    before = dict(pairs)
    arena, _ = demote(arena, None, challenger_evidence(arena, pairs, SETTINGS), SETTINGS)
    summaries = challenger_evidence(arena, pairs, SETTINGS)
    assert summaries["a"].vs_champion.baseline == "champ (champion from session 0)"
    decision = decide_promotion(arena, summaries, {}, SETTINGS)
    verdict = next(c for c in decision.candidates if c.version == "a")
    assert "not the champion FLAT" in " ".join(verdict.reasons)
    marks = session_marks(rng, ("champ", "a", "b"))
    pairs = record_session(arena, marks, {}, spans, pairs, settings)
    assert pairs["a"].vs_champion.bars == 16 and pairs["a"].vs_flat.bars == 64
    # Against FLAT the difference is the challenger's own marks, clipped at its span.
    assert pairs["a"].vs_champion.total_r == pytest.approx(marks["a"].clip(-3, 3).sum())
    assert pairs["a"].champion == FLAT
    assert "champ" in pairs  # the paused champion is now a challenger with its own evidence

    # The same version champion again later: a new reign, so the old comparison is not reused.
    again = Arena(
        model="m",
        session=9,
        champion="champ",
        champion_since=9,
        challengers=(Challenger("a", "periodic"), Challenger("b", "periodic")),
    )
    assert challenger_evidence(again, before, SETTINGS)["b"].vs_champion.baseline != "champ"
    pairs = record_session(
        again, session_marks(rng, ("champ", "a", "b")), {}, spans, before, settings
    )
    assert pairs["b"].vs_champion.bars == 16 and pairs["b"].vs_flat.bars == 64
    assert challenger_evidence(again, pairs, SETTINGS)["b"].vs_champion.baseline == "champ"


def test_recording_a_session_without_a_members_marks_is_a_clear_error():
    arena = Arena(model="m", champion="champ", challengers=(Challenger("a", "periodic"),))
    marks = session_marks(np.random.default_rng(1), ("a",))
    with pytest.raises(ValueError, match=r"no marks or no barrier span for \['champ'\]"):
        record_session(arena, marks, {}, {"a": 3.0, "champ": 3.0}, {})


def test_a_leavers_cash_goes_to_the_newcomer_and_sets_its_threshold():
    arena = full_arena()  # three full shares of 1/3, nothing idle
    ev = {"a": both("champ", 2.0), "b": both("champ", 0.4), "c": both("champ", 0.5)}
    arena, admission = admit(arena, "d", "session_learned", ev, SETTINGS)
    assert admission.evicted == "b"
    d = arena.challenger("d")
    assert capital_of(d, SETTINGS) == pytest.approx(0.4 / 3)
    assert challenger_threshold(d, SETTINGS) == pytest.approx(1 / (0.05 * 0.4 / 3))  # 150
    # The same e-value promotes a full share but not the newcomer's smaller one.
    ev = {"a": both("champ", 100.0), "c": both("champ", 30.0), "d": both("champ", 100.0)}
    decision = decide_promotion(arena, ev, {v: gates() for v in "acd"}, SETTINGS)
    by = {c.version: c for c in decision.candidates}
    assert by["a"].eligible and by["a"].threshold == pytest.approx(60.0)
    assert not by["d"].eligible and by["d"].threshold == pytest.approx(150.0)
    assert decision.winner == "a"


def test_retiring_returns_cash_to_the_pool_and_a_new_reign_restores_full_shares():
    arena = full_arena(session=182)  # a overstayed
    arena, gone = retire(arena, {"a": both("champ", 3.0)}, SETTINGS)
    assert [r.version for r in gone] == ["a"]
    assert idle_capital(arena, SETTINGS) == pytest.approx(3.0 / 3)  # 1/3 share worth 3x
    # A newcomer in the free place takes the pool's cash (capped at a whole capital).
    arena, _ = admit(arena, "n", "periodic", {}, SETTINGS)
    assert capital_of(arena.challenger("n"), SETTINGS) == pytest.approx(1.0)
    assert idle_capital(arena, SETTINGS) == pytest.approx(0.0)
    # A demotion starts a new reign: full shares for everyone, nothing carried over.
    paused, _ = demote(arena, None, {}, SETTINGS)
    assert all(capital_of(c, SETTINGS) == pytest.approx(1 / 3) for c in paused.challengers)
    assert len(paused.challengers) == 3 and paused.challenger("champ") is not None
    assert Arena.from_dict(json.loads(json.dumps(paused.as_dict()))) == paused


def test_clone_challengers_churning_every_session_are_not_promoted_more_than_alpha_per_reign():
    # Every session a new candidate arrives and, through the real rules, evicts a clone that is
    # behind; hundreds pass through. The recycled betting capital keeps the reign's false
    # promotions at alpha (here: how often, over 24 reigns of 600 sessions, a clone got through).
    rng = np.random.default_rng(61)
    pool = difference_pool(rng, 0.0)
    promotions, entered = clone_arena_years(pool, years=24, sessions_per_year=600, seed=7)
    print(
        f"\nclone reigns with a promotion: {np.mean(promotions > 0):.3f}; entered {entered.mean():.0f}"
    )
    assert entered.mean() > 100
    assert np.mean(promotions > 0) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 24)


def test_moving_capital_is_self_financing():
    # The reign's wealth, idle cash plus every share times its e-value, is what Ville's
    # inequality bounds; entering and leaving must never create any.
    rng = np.random.default_rng(71)
    arena = Arena(model="m", champion="champ")
    e_values: dict[str, float] = {}

    def wealth(a):
        held = sum(capital_of(c, SETTINGS) * e_values.get(c.version, 1.0) for c in a.challengers)
        return idle_capital(a, SETTINGS) + held

    for session in range(300):
        ev = {v: both("champ", e) for v, e in e_values.items()}
        before = wealth(arena)
        arena, admission = admit(arena, f"n{session}", "session_learned", ev, SETTINGS)
        if admission.evicted:
            e_values.pop(admission.evicted)
        newcomer = arena.challenger(f"n{session}")
        if newcomer is not None and capital_of(newcomer, SETTINGS) >= 1.0:
            assert wealth(arena) <= before + 1e-12  # the share is capped at the whole capital
        else:
            assert wealth(arena) == pytest.approx(before, rel=1e-12)
        for c in arena.challengers:  # a session of betting: e-values move
            e_values[c.version] = e_values.get(c.version, 1.0) * float(rng.choice([0.7, 1.3]))
        ev = {v: both("champ", e) for v, e in e_values.items()}
        before = wealth(arena)
        arena, gone = retire(arena, ev, SETTINGS)
        for r in gone:
            e_values.pop(r.version)
        assert wealth(arena) == pytest.approx(before, rel=1e-12)
        arena = next_session(arena)
