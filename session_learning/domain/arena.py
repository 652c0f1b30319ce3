"""The arena of one model: a champion that trades, up to K challengers in the shadow, and FLAT.

The rules, each a pure function from an ``Arena`` (immutable) to the next one plus a typed
decision that says why:

- **Members.** The champion is the version that trades, or ``FLAT`` (no position) when there is
  none yet or it was paused. FLAT is always there: it is the baseline every challenger must also
  beat, and a valid champion. Up to ``max_challengers`` (K, default 3) challengers trade in the
  shadow book.
- **Entry** (``admit``). Any trained candidate may enter: the session-learned one, the plain
  periodic one, a recency-weighted one asked for by a demotion, a previous champion. Passing the
  gates is not needed to *enter* (a candidate that adapted to a new regime fails a validation
  window from the old one); it is needed to be *promoted*. A version already in the arena is not
  entered twice.
- **Eviction when full.** A newcomer takes the place of, in order: a challenger that has
  overstayed; else the challenger with the lowest e-value against the champion among those that
  have had ``min_sessions_before_eviction`` sessions to show something and are not ahead
  (e-value below 1, i.e. the bettor has lost money on them). A requested recency-weighted
  challenger and a paused champion may also evict a younger challenger that is not ahead.
  Otherwise the newcomer is refused: the arena protects evidence that is still accumulating.
- **Leaving** (``retire``). A challenger leaves after ``max_challenger_sessions`` sessions
  without promotion (an edge it could not show in that time is too small to matter), or once
  its e-value against the champion falls below ``futility_e_value`` after the minimum stay (at
  1/20 its wealth would have to grow 400-fold to reach a threshold of 20).
- **Demotion** (``demote``). A change alarm on the champion's live R pauses it: FLAT becomes the
  champion at once, the paused version stays as a challenger (``previous_champion``) so it can earn
  its place back, and a recency-weighted challenger is requested. Evidence against the champion
  restarts for every challenger, because the baseline changed.
- **Betting capital** (why churn cannot buy a false promotion). Each reign of a champion starts
  with a betting capital of 1, a share of ``1 / K`` per place. A challenger bets its share
  against the champion; when it leaves (evicted, overstayed, futile) what its share is worth now,
  share times e-value, returns to the pool, and a newcomer takes the pool's cash for its free
  place. The reign's total wealth is then a nonnegative supermartingale while no challenger is
  better than the champion, however many come and go, so no challenger of the reign is promoted
  falsely with probability above alpha (Ville). A challenger's threshold is
  ``1 / (alpha * share)``: ``K / alpha`` for a full share, more for one that inherited a loser's
  place. (A fixed ``K / alpha`` per challenger let a clone through in 10 of 40 simulated
  model-years: hundreds of challengers pass through a year when a new candidate arrives every
  session.)
- **Promotion** (``decide_promotion`` / ``promote``). A challenger replaces the champion only when
  (a) its e-value against the champion *and* against FLAT reached its threshold (an
  intersection-union test needs no correction for asking both), and (b) it passed the seed's
  gates on data it never trained on.
  Among several eligible challengers the one with the highest e-value against the champion wins.
  The replaced champion stays as a challenger. Every decision carries its evidence numbers for the
  judgement record.

Sessions are counted by the arena (``next_session``), so the rules do not depend on a calendar.
The records the rules read and return (settings, members, decisions, betting capital) are in
``domain/arena_types.py``; ``domain/arena_evidence.py`` folds a session's marks into every
challenger's evidence (``record_session``, restarting the comparison with the champion at each new
reign) and summarizes it for the rules above (``challenger_evidence``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from session_learning.domain.arena_types import (
    FLAT,
    PRIORITY_KINDS,
    Admission,
    Arena,
    ArenaSettings,
    CandidateVerdict,
    Challenger,
    ChallengerEvidence,
    ChallengerKind,
    Demotion,
    GateVerdict,
    PromotionDecision,
    Retirement,
    capital_of,
    challenger_threshold,
    idle_capital,
)


def next_session(arena: Arena) -> Arena:
    """The same arena one session later."""
    return replace(arena, session=arena.session + 1)


def sessions_in_arena(arena: Arena, challenger: Challenger) -> int:
    return arena.session - challenger.entered_session


def admit(
    arena: Arena,
    version: str,
    kind: ChallengerKind,
    evidence: Mapping[str, ChallengerEvidence],
    settings: ArenaSettings = ArenaSettings(),
) -> tuple[Arena, Admission]:
    """Enter a candidate as a challenger by the entry and eviction rules (module docstring)."""
    return _admit(arena, version, kind, evidence, settings, cash_from_evidence=True)


def _admit(
    arena: Arena,
    version: str,
    kind: ChallengerKind,
    evidence: Mapping[str, ChallengerEvidence],
    settings: ArenaSettings,
    *,
    cash_from_evidence: bool,
) -> tuple[Arena, Admission]:
    """``admit``. At the start of a reign every e-value is 1, so a leaving challenger's cash is
    its share (``cash_from_evidence=False``) while ``evidence`` still ranks who leaves."""
    Challenger(version, kind, arena.session)  # checks the version and the kind
    if version == arena.champion or arena.challenger(version) is not None:
        return arena, Admission(version, False, None, f"{version} is already in the arena")
    requests = tuple(r for r in arena.requests if r != kind)
    idle = idle_capital(arena, settings)
    if len(arena.challengers) < settings.max_challengers:
        share = idle / (settings.max_challengers - len(arena.challengers))
        newcomer = Challenger(version, kind, arena.session, share)
        entered = replace(
            arena,
            challengers=(*arena.challengers, newcomer),
            requests=requests,
            idle_capital=idle - share,
        )
        return entered, Admission(
            version, True, None, f"{version} ({kind}) entered: a place was free"
        )
    victim, why = _eviction_victim(arena, kind, evidence, settings)
    if victim is None:
        return arena, Admission(version, False, None, f"{version} ({kind}) refused: {why}")
    e_value = _e_vs_champion(evidence, victim.version) if cash_from_evidence else None
    cash = idle + capital_of(victim, settings) * (1.0 if e_value is None else e_value)
    kept = tuple(c for c in arena.challengers if c.version != victim.version)
    newcomer = Challenger(version, kind, arena.session, min(cash, 1.0))
    entered = replace(arena, challengers=(*kept, newcomer), requests=requests, idle_capital=0.0)
    return entered, Admission(
        version,
        True,
        victim.version,
        f"{version} ({kind}) entered in place of {victim.version} with a share of "
        f"{min(cash, 1.0):.3g}: {why}",
    )


def _new_reign(arena: Arena, settings: ArenaSettings) -> Arena:
    """A new champion (or FLAT): every challenger gets a full share again, and the shares of the
    free places are idle."""
    share = settings.share()
    challengers = tuple(replace(c, capital=share) for c in arena.challengers)
    return replace(
        arena, challengers=challengers, idle_capital=max(0.0, 1.0 - share * len(challengers))
    )


def retire(
    arena: Arena,
    evidence: Mapping[str, ChallengerEvidence],
    settings: ArenaSettings = ArenaSettings(),
) -> tuple[Arena, tuple[Retirement, ...]]:
    """Remove challengers that overstayed or whose evidence became futile."""
    leaving: list[Retirement] = []
    for c in arena.challengers:
        age = sessions_in_arena(arena, c)
        if age >= settings.max_challenger_sessions:
            leaving.append(
                Retirement(
                    c.version,
                    f"{c.version} overstayed: no promotion in {age} sessions "
                    f"(at most {settings.max_challenger_sessions})",
                )
            )
            continue
        e_value = _e_vs_champion(evidence, c.version)
        if (
            _judged_long_enough(arena, c, settings)
            and e_value is not None
            and e_value < settings.futility_e_value
        ):
            leaving.append(
                Retirement(
                    c.version,
                    f"{c.version} is futile: e-value {e_value:.3g} against {arena.champion} "
                    f"below {settings.futility_e_value}",
                )
            )
    gone = {r.version for r in leaving}
    kept = tuple(c for c in arena.challengers if c.version not in gone)
    cash = idle_capital(arena, settings)
    for c in arena.challengers:
        if c.version in gone:
            e_value = _e_vs_champion(evidence, c.version)
            cash += capital_of(c, settings) * (1.0 if e_value is None else e_value)
    return replace(arena, challengers=kept, idle_capital=cash), tuple(leaving)


def demote(
    arena: Arena,
    change: Mapping | None = None,
    evidence: Mapping[str, ChallengerEvidence] | None = None,
    settings: ArenaSettings = ArenaSettings(),
) -> tuple[Arena, Demotion]:
    """Pause the champion after a change alarm: FLAT trades, the paused version stays as a
    challenger, a recency-weighted challenger is requested, evidence against the champion
    restarts. ``change`` (e.g. ``ChangeResult.as_dict()``) is carried into the decision."""
    change = dict(change or {})
    if arena.champion == FLAT:
        return arena, Demotion(
            None, arena.requests, False, "FLAT is champion: nothing to pause", change
        )
    paused = arena.champion
    requests = (
        arena.requests
        if "recency_weighted" in arena.requests
        else (
            *arena.requests,
            "recency_weighted",
        )
    )
    flat = replace(
        arena, champion=FLAT, champion_since=arena.session, paused=paused, requests=requests
    )
    flat = _new_reign(flat, settings)
    # Evidence against the old champion no longer applies: eviction ranks by evidence vs FLAT.
    flat, admission = _admit(
        flat,
        paused,
        "previous_champion",
        _against_flat(evidence),
        settings,
        cash_from_evidence=False,
    )
    stays = "stays as a challenger" if admission.admitted else f"leaves ({admission.reason})"
    return flat, Demotion(
        paused,
        flat.requests,
        True,
        f"{paused} paused after a change alarm; FLAT trades, {paused} {stays}, "
        "a recency-weighted challenger is requested",
        change,
    )


def decide_promotion(
    arena: Arena,
    evidence: Mapping[str, ChallengerEvidence],
    gates: Mapping[str, GateVerdict],
    settings: ArenaSettings = ArenaSettings(),
) -> PromotionDecision:
    """Which challenger, if any, replaces the champion (or FLAT) this session, and why."""
    threshold = settings.e_threshold
    verdicts: list[CandidateVerdict] = []
    for c in arena.challengers:
        verdicts.append(
            _verdict(
                arena,
                c,
                evidence.get(c.version),
                gates.get(c.version),
                challenger_threshold(c, settings),
            )
        )
    eligible = [v for v in verdicts if v.eligible]
    winner = max(eligible, key=lambda v: v.e_value_vs_champion) if eligible else None
    if winner is not None:
        summary = (
            f"promote {winner.version} over {arena.champion}: e-value "
            f"{winner.e_value_vs_champion:.3g} vs the champion and {winner.e_value_vs_flat:.3g} "
            f"vs FLAT, both >= its threshold {winner.threshold:.3g}, gates passed on unseen data"
        )
    elif not arena.challengers:
        summary = f"no challenger: {arena.champion} stays"
    else:
        summary = f"no challenger has the evidence and the gates: {arena.champion} stays"
    reasons = (summary, *(f"{v.version}: {'; '.join(v.reasons)}" for v in verdicts))
    return PromotionDecision(
        model=arena.model,
        session=arena.session,
        champion=arena.champion,
        promote=winner is not None,
        winner=None if winner is None else winner.version,
        threshold=threshold,
        reasons=reasons,
        candidates=tuple(verdicts),
    )


def promote(
    arena: Arena,
    decision: PromotionDecision,
    evidence: Mapping[str, ChallengerEvidence] | None = None,
    settings: ArenaSettings = ArenaSettings(),
) -> Arena:
    """Apply a promotion decision: the winner trades, the old champion (unless FLAT) stays as a
    challenger, the demotion's request is answered; evidence against the champion restarts for
    every challenger. Raises ``ValueError`` for a decision that does not promote or was made for
    another arena state."""
    if not decision.promote or decision.winner is None:
        raise ValueError("the decision does not promote anyone")
    if (decision.model, decision.session, decision.champion) != (
        arena.model,
        arena.session,
        arena.champion,
    ):
        raise ValueError(
            f"decision for {decision.model} session {decision.session} against "
            f"{decision.champion} does not match the arena ({arena.model} session "
            f"{arena.session}, champion {arena.champion}); decide again"
        )
    if arena.challenger(decision.winner) is None:
        raise ValueError(f"{decision.winner} is not a challenger in this arena")
    old = arena.champion
    kept = tuple(c for c in arena.challengers if c.version != decision.winner)
    promoted = replace(
        arena,
        champion=decision.winner,
        champion_since=arena.session,
        challengers=kept,
        paused=None,
        requests=tuple(r for r in arena.requests if r != "recency_weighted"),
    )
    promoted = _new_reign(promoted, settings)
    if old != FLAT:
        promoted, _ = _admit(
            promoted,
            old,
            "previous_champion",
            _against_flat(evidence),
            settings,
            cash_from_evidence=False,
        )
    return promoted


def _verdict(
    arena: Arena,
    c: Challenger,
    evidence: ChallengerEvidence | None,
    gate: GateVerdict | None,
    threshold: float,
) -> CandidateVerdict:
    reasons: list[str] = []
    if evidence is None:
        return CandidateVerdict(
            c.version, False, threshold, ("no forward evidence yet",), None, None, {}, None
        )
    vs_champion, vs_flat = evidence.vs_champion, evidence.vs_flat
    if vs_champion.baseline != arena.champion:
        reasons.append(
            f"its evidence is against {vs_champion.baseline}, not the champion {arena.champion}"
        )
    if vs_flat.baseline != FLAT:
        reasons.append(f"its FLAT evidence is against {vs_flat.baseline}")
    for name, ev in (("the champion", vs_champion), ("FLAT", vs_flat)):
        ok = ev.e_value >= threshold
        reasons.append(
            f"e-value {ev.e_value:.3g} vs {name} {'>=' if ok else '<'} {threshold:.3g} "
            f"(mean {ev.mean_r:+.4f} R/bar, {100 * (1 - ev.alpha):.0f}% CS "
            f"[{ev.lower_r:+.4f}, {ev.upper_r:+.4f}], {ev.bars} bars, {ev.trades} trades)"
        )
    if gate is None:
        reasons.append("no gate verdict")
    elif not gate.unseen():
        reasons.append(
            f"gates were judged on data from {gate.evaluated_from}, not after its training "
            f"data ending {gate.trained_until}"
        )
    elif not gate.passed:
        reasons.append(f"failed the gates on its {gate.data} data: {', '.join(gate.failed)}")
    else:
        reasons.append(f"passed the gates on its {gate.data} data")
    eligible = (
        vs_champion.baseline == arena.champion
        and vs_flat.baseline == FLAT
        and vs_champion.e_value >= threshold
        and vs_flat.e_value >= threshold
        and gate is not None
        and gate.unseen()
        and gate.passed
    )
    return CandidateVerdict(
        c.version,
        eligible,
        threshold,
        tuple(reasons),
        vs_champion.e_value,
        vs_flat.e_value,
        {"vs_champion": vs_champion.as_dict(), "vs_flat": vs_flat.as_dict()},
        None if gate is None else gate.as_dict(),
    )


def _against_flat(
    evidence: Mapping[str, ChallengerEvidence] | None,
) -> dict[str, ChallengerEvidence]:
    """Evidence when the champion's comparison restarts: only the FLAT comparison still holds."""
    return {v: ChallengerEvidence(e.vs_flat, e.vs_flat) for v, e in (evidence or {}).items()}


def _e_vs_champion(evidence: Mapping[str, ChallengerEvidence], version: str) -> float | None:
    found = evidence.get(version)
    return None if found is None else found.vs_champion.e_value


def _judged_long_enough(arena: Arena, c: Challenger, settings: ArenaSettings) -> bool:
    """At least the minimum stay in the arena, and against the current champion."""
    judged = arena.session - max(c.entered_session, arena.champion_since)
    return judged >= settings.min_sessions_before_eviction


def _eviction_victim(
    arena: Arena,
    kind: str,
    evidence: Mapping[str, ChallengerEvidence],
    settings: ArenaSettings,
) -> tuple[Challenger | None, str]:
    overstayed = [
        c
        for c in arena.challengers
        if sessions_in_arena(arena, c) >= settings.max_challenger_sessions
    ]
    if overstayed:
        victim = min(overstayed, key=lambda c: c.entered_session)
        return victim, f"{victim.version} overstayed"

    def behind(c: Challenger) -> bool:
        e_value = _e_vs_champion(evidence, c.version)
        return e_value is None or e_value < 1.0

    priority = kind in PRIORITY_KINDS
    pool = [
        c
        for c in arena.challengers
        if behind(c) and (priority or _judged_long_enough(arena, c, settings))
    ]
    if not pool:
        return None, (
            f"the arena is full ({settings.max_challengers}) and every challenger is either "
            f"younger than {settings.min_sessions_before_eviction} sessions or ahead of "
            f"{arena.champion}"
        )

    def rank(c: Challenger) -> tuple[float, int]:
        e_value = _e_vs_champion(evidence, c.version)
        return (1.0 if e_value is None else e_value, c.entered_session)

    victim = min(pool, key=rank)
    e_value = _e_vs_champion(evidence, victim.version)
    shown = "no evidence" if e_value is None else f"e-value {e_value:.3g}"
    return victim, f"{victim.version} had the weakest evidence against {arena.champion} ({shown})"
