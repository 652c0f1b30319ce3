"""The arena's evidence bookkeeping: one session's marks -> every challenger's two running tests.

``record_session`` pairs each challenger's per-bar marks with the champion's and with FLAT's and
folds them into its two e-processes (``PairEvidence``: against the reigning champion, restarted
at each new reign, and against FLAT, never restarted); ``challenger_evidence`` summarizes them
with each challenger's threshold for the rules in ``domain/arena.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd

from session_learning.domain.arena_types import (
    FLAT,
    Arena,
    ArenaSettings,
    ChallengerEvidence,
    challenger_threshold,
)
from session_learning.domain.evidence import EvidenceSettings, EvidenceState, difference_bound_r
from session_learning.domain.shadow import pair_marks


@dataclass(frozen=True)
class PairEvidence:
    """A challenger's running evidence: against the champion that has reigned since
    ``champion_since`` (it restarts when either changes) and against FLAT (it never restarts)."""

    champion: str
    champion_since: int
    vs_champion: EvidenceState
    vs_flat: EvidenceState

    def as_dict(self) -> dict:
        return {
            "champion": self.champion,
            "champion_since": self.champion_since,
            "vs_champion": self.vs_champion.as_dict(),
            "vs_flat": self.vs_flat.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PairEvidence:
        return cls(
            champion=data["champion"],
            champion_since=int(data["champion_since"]),
            vs_champion=EvidenceState.from_dict(data["vs_champion"]),
            vs_flat=EvidenceState.from_dict(data["vs_flat"]),
        )


def record_session(
    arena: Arena,
    marks: Mapping[str, pd.Series],
    trades: Mapping[str, int],
    spans: Mapping[str, float],
    states: Mapping[str, PairEvidence],
    settings: EvidenceSettings = EvidenceSettings(),
) -> dict[str, PairEvidence]:
    """Fold one session into every challenger's evidence.

    ``marks``: each member's marks on the session's bars (``ShadowBook.session``), the champion's
    included unless it is FLAT; ``trades``: each challenger's closed shadow trades in the session;
    ``spans``: each member's barrier span (``evidence.barrier_span_r``), from which the bound of
    each pair follows; ``settings``: alpha, switching cost and bets (its ``bound_r`` is replaced
    by the pair's). Raises ``ValueError`` when a member has no marks or no span.
    """
    needed = arena.members()
    missing = [v for v in needed if v not in marks or v not in spans]
    if missing:
        raise ValueError(
            f"no marks or no barrier span for {missing} in session {arena.session} of "
            f"{arena.model}; every member must be marked on the session's bars"
        )
    champion_marks = None if arena.champion == FLAT else marks[arena.champion]
    out: dict[str, PairEvidence] = {}
    for c in arena.challengers:
        span = spans[c.version]
        flat_bound = difference_bound_r(span)
        champion_bound = (
            flat_bound
            if arena.champion == FLAT
            else difference_bound_r(span, spans[arena.champion])
        )
        previous = states.get(c.version)
        vs_flat = (
            previous.vs_flat
            if previous is not None
            else EvidenceState(replace(settings, bound_r=flat_bound))
        )
        same_reign = previous is not None and (previous.champion, previous.champion_since) == (
            arena.champion,
            arena.champion_since,
        )
        vs_champion = (
            previous.vs_champion
            if same_reign
            else EvidenceState(replace(settings, bound_r=champion_bound))
        )
        count = int(trades.get(c.version, 0))
        diff, clipped = pair_marks(marks[c.version], None, vs_flat.settings.bound_r)
        vs_flat = vs_flat.update(diff, count, clipped)
        diff, clipped = pair_marks(marks[c.version], champion_marks, vs_champion.settings.bound_r)
        vs_champion = vs_champion.update(diff, count, clipped)
        out[c.version] = PairEvidence(arena.champion, arena.champion_since, vs_champion, vs_flat)
    return out


def challenger_evidence(
    arena: Arena,
    states: Mapping[str, PairEvidence],
    settings: ArenaSettings = ArenaSettings(),
) -> dict[str, ChallengerEvidence]:
    """The evidence summaries ``decide_promotion`` and the eviction rules read. Evidence recorded
    against an earlier champion is reported against that champion, so it cannot promote."""
    out: dict[str, ChallengerEvidence] = {}
    for version, state in states.items():
        challenger = arena.challenger(version)
        if challenger is None:
            continue
        threshold = challenger_threshold(challenger, settings)
        baseline = state.champion
        if (state.champion, state.champion_since) != (arena.champion, arena.champion_since):
            baseline = f"{state.champion} (champion from session {state.champion_since})"
        out[version] = ChallengerEvidence(
            state.vs_champion.summary(baseline, threshold),
            state.vs_flat.summary(FLAT, threshold),
        )
    return out
