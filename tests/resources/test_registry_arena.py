"""The arena's state, pauses and promotions, enforced by the registry that keeps them."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest

from session_learning.resources.registry import (
    ArenaChangedError,
    ModelRegistry,
    NotJudgedError,
    ProductionChangedError,
    RegistryError,
)
from tests.judgements import arena_evidence, judge_and_promote, judgement
from tests.resources.test_registry import KEY, T0, _promote, _save, _train

S1, S2, S3 = "2024-01-02-08:00", "2024-01-02-12:00", "2024-01-02-16:00"


@pytest.fixture(scope="module")
def model():
    return _train()[0]


@pytest.fixture
def reg(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _deployed(reg: ModelRegistry, model, n: int = 2) -> list[str]:
    versions = [_save(reg, model, i=i) for i in range(n)]
    assert _promote(reg, versions[0], 0)
    # The model has an arena from now on (its first session folded).
    reg.fold_arena_session(KEY, "2024-01-02-04:00", computed_from=None, state={}, record={})
    return versions


def test_without_an_arena_the_gates_alone_still_promote(reg, model):
    """The replay's gates-only arms keep no arena state: their rule is unchanged."""
    live, challenger = (_save(reg, model, i=i) for i in range(2))
    assert _promote(reg, live, 0)
    reg.record_judgement(KEY, challenger, judgement(live))
    assert not reg.arena_governs(KEY) and reg.promotion_refusal(KEY, challenger) is None
    assert reg.promote(KEY, challenger, reason="gates", session="s1")


def test_after_the_first_deployment_only_the_arenas_evidence_promotes(reg, model):
    live, challenger = _deployed(reg, model)
    assert reg.arena_governs(KEY)
    # Passed every gate on its validation window, but no forward evidence: refused.
    reg.record_judgement(KEY, challenger, judgement(live))
    with pytest.raises(NotJudgedError, match="no arena evidence"):
        reg.promote(KEY, challenger, reason="gates", session="s1")
    assert "no arena evidence" in reg.promotion_refusal(KEY, challenger)
    # Arena evidence below its threshold, or naming another winner: refused.
    for evidence, why in (
        (arena_evidence(challenger, champion=live, e_value=3.0), "did not pass"),
        (arena_evidence(live, champion=live), "names"),
    ):
        reg.record_judgement(KEY, challenger, judgement(live, evidence=evidence))
        with pytest.raises(NotJudgedError, match=why):
            reg.promote(KEY, challenger, reason="arena", session="s1")
    assert reg.production_version(KEY) == live and len(reg.history(KEY)) == 1
    # The arena's decision with its evidence: promoted, compare-and-swap on the champion.
    reg.record_judgement(
        KEY, challenger, judgement(live, evidence=arena_evidence(challenger, champion=live))
    )
    assert reg.promotion_refusal(KEY, challenger) is None
    assert reg.promote(KEY, challenger, reason="arena", session="s1")
    assert reg.production_version(KEY) == challenger


def test_pause_stops_trading_in_the_pointer_and_the_history(reg, model):
    live, challenger = _deployed(reg, model)
    change = {"statistic": 7.5, "threshold": 6.0, "trades": 23}
    assert reg.pause(KEY, reason="change alarm", session=S1, evidence=change, now=T0)
    assert not reg.pause(KEY, reason="again", session=S2, now=T0)  # already paused
    assert reg.paused(KEY) == {"since": T0.isoformat(), "reason": "change alarm", "session": S1}
    assert reg.production_version(KEY) == live  # still the version rollback and history know
    history = reg.history(KEY)
    assert [(e["version"], e["kind"]) for e in history] == [(live, "promote"), (live, "pause")]
    assert history[-1]["evidence"] == change and history[0]["live_to"] == T0.isoformat()
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.pause(KEY, reason=" ", session=S2)

    # The arena promotes a challenger over FLAT: trading resumes with it.
    reg.record_judgement(
        KEY, challenger, judgement(live, evidence=arena_evidence(challenger, champion="FLAT"))
    )
    assert reg.promote(KEY, challenger, reason="arena", session="s2", now=T0 + timedelta(hours=4))
    assert reg.paused(KEY) is None and reg.production_version(KEY) == challenger


def test_a_paused_champion_trades_again_only_on_new_forward_evidence(reg, model):
    live, _ = _deployed(reg, model)
    reg.pause(KEY, reason="change alarm", session=S1, now=T0)
    # Its old validation judgement is not a decision of the arena.
    with pytest.raises(RegistryError):
        reg.promote(KEY, live, reason="again", session=S2)
    first = reg.judgement(KEY, live)
    reg.record_judgement(KEY, live, judgement(live, evidence=arena_evidence(live, champion="FLAT")))
    assert reg.promote(KEY, live, reason="won back", session=S2, now=T0 + timedelta(hours=4))
    assert reg.paused(KEY) is None
    assert [e["kind"] for e in reg.history(KEY)] == ["promote", "pause", "promote"]
    # The record it first went live under is kept beside the new one.
    kept = (
        reg.root / KEY.slug / "versions" / live / f"judgement-{first['judgement_sha256'][:16]}.json"
    )
    assert kept.exists()
    # Re-judging a live version without arena evidence is still refused.
    with pytest.raises(RegistryError, match="went live under its judgement"):
        reg.record_judgement(KEY, live, judgement(live))


def test_rollback_ends_a_pause(reg, model):
    first, second = _deployed(reg, model)
    judge_and_promote(reg, KEY, second, session="s1", now=T0 + timedelta(hours=1))
    reg.pause(KEY, reason="change alarm", session=S1, now=T0 + timedelta(hours=2))
    assert reg.rollback(KEY, to_version=second, now=T0 + timedelta(hours=3)) == second
    assert reg.paused(KEY) is None
    assert reg.history(KEY)[-1]["kind"] == "rollback"


def test_arena_state_is_folded_session_by_session_with_compare_and_swap(reg):
    assert reg.arena(KEY) is None
    reg.fold_arena_session(KEY, S1, computed_from=None, state={"n": 1}, record={"r": 1})
    # A second run of the same session, computed from the same base: refused, nothing lost.
    with pytest.raises(ArenaChangedError, match="after session 2024-01-02-08:00, not after none"):
        reg.fold_arena_session(KEY, S1, computed_from=None, state={"n": 99}, record={})
    # A session computed from a state that is not the stored one (skipped S2): refused.
    with pytest.raises(ArenaChangedError, match="in order"):
        reg.fold_arena_session(KEY, S3, computed_from=S2, state={"n": 3}, record={})
    reg.fold_arena_session(KEY, S2, computed_from=S1, state={"n": 2}, record={"r": 2})
    assert reg.arena(KEY)["session"] == S2 and reg.arena(KEY)["state"] == {"n": 2}
    assert reg.arena_session(KEY, S1)["r"] == 1 and reg.arena_session(KEY, S3) is None
    with pytest.raises(RegistryError, match="not a session key"):
        reg.arena_session(KEY, "../../etc/passwd")


def _fold(root: str, session: str, base: str | None, barrier, queue) -> None:
    registry = ModelRegistry(root)
    barrier.wait()
    try:
        registry.fold_arena_session(
            KEY, session, computed_from=base, state={"s": session}, record={}
        )
        queue.put("won")
    except ArenaChangedError:
        queue.put("refused")


def test_two_processes_folding_from_the_same_state_fold_it_once(reg):
    reg.fold_arena_session(KEY, S1, computed_from=None, state={"s": S1}, record={})
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    # Two runs of S2 and two of S3, all computed from the state after S1.
    procs = [
        ctx.Process(target=_fold, args=(str(reg.root), s, S1, barrier, queue))
        for s in (S2, S2, S3, S3)
    ]
    for p in procs:
        p.start()
    outcomes = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["refused", "refused", "refused", "won"]
    assert reg.arena(KEY)["state"]["s"] in (S2, S3)


def test_a_candidate_judged_before_the_first_deployment_is_refused_by_compare_and_swap(reg, model):
    first, second = (_save(reg, model, i=i) for i in range(2))
    reg.fold_arena_session(KEY, S1, computed_from=None, state={}, record={})
    for version in (first, second):
        reg.record_judgement(KEY, version, judgement(None))
    assert reg.promote(KEY, first, reason="first", session="s0")
    # Judged against no production: promote's compare-and-swap says why, not the arena rule.
    assert reg.promotion_refusal(KEY, second) is None
    with pytest.raises(ProductionChangedError, match=f"{first} is live now"):
        reg.promote(KEY, second, reason="second", session="s1")
    # Judged again against the live version, it needs the arena's evidence.
    reg.record_judgement(KEY, second, judgement(first))
    assert "no arena evidence" in reg.promotion_refusal(KEY, second)
