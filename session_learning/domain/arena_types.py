"""The arena's records: its settings, its members and the typed decisions its rules return.

``Arena`` (immutable) is one model's arena; ``ArenaSettings`` its rules' parameters (K, alpha,
stays); ``Challenger`` a member in the shadow with its share of the reign's betting capital
(``capital_of``, ``idle_capital``, ``challenger_threshold``: the e-value it needs). The rules that
move an arena from one session to the next are in ``domain/arena.py``; the evidence bookkeeping
in ``domain/arena_evidence.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from session_learning.domain.evidence import Evidence

FLAT = "FLAT"

ChallengerKind = Literal["session_learned", "periodic", "recency_weighted", "previous_champion"]
CHALLENGER_KINDS: tuple[str, ...] = (
    "session_learned",
    "periodic",
    "recency_weighted",
    "previous_champion",
)
# Kinds that may evict a young challenger that is not ahead: the arena asked for them.
PRIORITY_KINDS = ("recency_weighted", "previous_champion")


@dataclass(frozen=True)
class ArenaSettings:
    """``max_challengers``: K; ``alpha``: the false-promotion level per champion change, so a
    challenger needs an e-value of ``K / alpha``; ``max_challenger_sessions``: the longest stay
    (180 four-hour sessions, about 30 trading days); ``min_sessions_before_eviction``: sessions a
    challenger is protected from eviction and futility (6, one day); ``futility_e_value``: below
    it a challenger leaves."""

    max_challengers: int = 3
    alpha: float = 0.05
    max_challenger_sessions: int = 180
    min_sessions_before_eviction: int = 6
    futility_e_value: float = 0.05

    def __post_init__(self) -> None:
        if self.max_challengers < 1:
            raise ValueError(f"max_challengers must be >= 1, got {self.max_challengers}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.max_challenger_sessions < 1 or self.min_sessions_before_eviction < 0:
            raise ValueError("max_challenger_sessions must be >= 1, min sessions >= 0")
        if not 0 <= self.futility_e_value < 1:
            raise ValueError(f"futility_e_value must be in [0, 1), got {self.futility_e_value}")

    @property
    def e_threshold(self) -> float:
        """The e-value a challenger with a full share of the betting capital needs against the
        champion and against FLAT."""
        return self.max_challengers / self.alpha

    def share(self) -> float:
        """A full share of a reign's betting capital."""
        return 1.0 / self.max_challengers


@dataclass(frozen=True)
class Challenger:
    """A model version in the shadow: what kind of candidate it is and the session it entered."""

    version: str
    kind: ChallengerKind
    entered_session: int = 0
    capital: float | None = None  # its share of the reign's betting capital; None: a full share

    def __post_init__(self) -> None:
        if self.capital is not None and not 0 <= self.capital <= 1:
            raise ValueError(f"capital must be in [0, 1], got {self.capital}")
        if not self.version or self.version == FLAT:
            raise ValueError(f"a challenger needs a model version other than {FLAT!r}")
        if self.kind not in CHALLENGER_KINDS:
            raise ValueError(f"unknown challenger kind {self.kind!r}; expected {CHALLENGER_KINDS}")


@dataclass(frozen=True)
class Arena:
    """One model's arena. ``champion`` is a version or ``FLAT``; ``champion_since`` the session
    it became champion (evidence against it starts there); ``paused`` the last version a
    demotion paused; ``requests`` the candidates the arena has asked the trainer for."""

    model: str
    session: int = 0
    champion: str = FLAT
    champion_since: int = 0
    challengers: tuple[Challenger, ...] = ()
    paused: str | None = None
    requests: tuple[str, ...] = ()
    idle_capital: float | None = None  # the reign's cash no challenger holds; None: free shares

    def members(self) -> tuple[str, ...]:
        """Every version that must be marked on the session's bars (FLAT needs no marks)."""
        versions = tuple(c.version for c in self.challengers)
        return versions if self.champion == FLAT else (self.champion, *versions)

    def challenger(self, version: str) -> Challenger | None:
        return next((c for c in self.challengers if c.version == version), None)

    def as_dict(self) -> dict:
        """Plain JSON-safe values, for storage."""
        return {
            "model": self.model,
            "session": self.session,
            "champion": self.champion,
            "champion_since": self.champion_since,
            "challengers": [c.__dict__.copy() for c in self.challengers],
            "paused": self.paused,
            "requests": list(self.requests),
            "idle_capital": self.idle_capital,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Arena:
        return cls(
            model=data["model"],
            session=int(data["session"]),
            champion=data["champion"],
            champion_since=int(data["champion_since"]),
            challengers=tuple(Challenger(**c) for c in data["challengers"]),
            paused=data.get("paused"),
            requests=tuple(data.get("requests", ())),
            idle_capital=data.get("idle_capital"),
        )


@dataclass(frozen=True)
class ChallengerEvidence:
    """A challenger's forward evidence against the current champion and against FLAT (the same
    numbers twice while FLAT is champion)."""

    vs_champion: Evidence
    vs_flat: Evidence


@dataclass(frozen=True)
class GateVerdict:
    """The seed's gates (PF, drawdown, win rate, trades) on data the model never trained on.

    ``data``: ``"validation"`` (its purged validation window) or ``"forward"`` (its shadow
    record); ``evaluated_from``: the first bar the gates saw; ``trained_until``: the last bar of its
    training data. ``failed`` names the failed gates.
    """

    passed: bool
    data: Literal["validation", "forward"]
    evaluated_from: pd.Timestamp
    trained_until: pd.Timestamp
    failed: tuple[str, ...] = ()

    def unseen(self) -> bool:
        return pd.Timestamp(self.evaluated_from) > pd.Timestamp(self.trained_until)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "data": self.data,
            "evaluated_from": pd.Timestamp(self.evaluated_from).isoformat(),
            "trained_until": pd.Timestamp(self.trained_until).isoformat(),
            "failed": list(self.failed),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> GateVerdict:
        return cls(
            passed=bool(data["passed"]),
            data=data["data"],
            evaluated_from=pd.Timestamp(data["evaluated_from"]),
            trained_until=pd.Timestamp(data["trained_until"]),
            failed=tuple(data.get("failed", ())),
        )


@dataclass(frozen=True)
class Admission:
    version: str
    admitted: bool
    evicted: str | None
    reason: str


@dataclass(frozen=True)
class Retirement:
    version: str
    reason: str


@dataclass(frozen=True)
class Demotion:
    demoted: str | None
    requests: tuple[str, ...]
    restart_evidence: bool
    reason: str
    change: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateVerdict:
    """Why one challenger may or may not be promoted, with its numbers."""

    version: str
    eligible: bool
    threshold: float
    reasons: tuple[str, ...]
    e_value_vs_champion: float | None
    e_value_vs_flat: float | None
    evidence: dict
    gates: dict | None


@dataclass(frozen=True)
class PromotionDecision:
    """The arena's promotion decision for one session: ``promote`` and the ``winner`` replacing
    ``champion``, the threshold, a reason per challenger and the winner's evidence (e-values,
    confidence sequences, bars, trades) and gate verdict, ready for the judgement record."""

    model: str
    session: int
    champion: str
    promote: bool
    winner: str | None
    threshold: float
    reasons: tuple[str, ...]
    candidates: tuple[CandidateVerdict, ...]

    def winner_verdict(self) -> CandidateVerdict | None:
        return next((c for c in self.candidates if c.version == self.winner), None)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "session": self.session,
            "champion": self.champion,
            "promote": self.promote,
            "winner": self.winner,
            "threshold": self.threshold,
            "reasons": list(self.reasons),
            "candidates": [c.__dict__.copy() for c in self.candidates],
        }


def capital_of(challenger: Challenger, settings: ArenaSettings = ArenaSettings()) -> float:
    """A challenger's share of its reign's betting capital."""
    return settings.share() if challenger.capital is None else challenger.capital


def idle_capital(arena: Arena, settings: ArenaSettings = ArenaSettings()) -> float:
    """The reign's cash no challenger holds (free places' shares and what leavers left)."""
    if arena.idle_capital is not None:
        return arena.idle_capital
    return max(0.0, 1.0 - sum(capital_of(c, settings) for c in arena.challengers))


def challenger_threshold(
    challenger: Challenger, settings: ArenaSettings = ArenaSettings()
) -> float:
    """The e-value this challenger needs: ``1 / (alpha * share)`` (``K / alpha`` for a full
    share; infinite for one whose place came with no cash)."""
    share = capital_of(challenger, settings)
    return math.inf if share <= 0 else 1.0 / (settings.alpha * share)
