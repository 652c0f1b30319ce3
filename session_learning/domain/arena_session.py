"""One arena session: mark every member on the session's bars, then apply the arena's rules.

Two steps, because a scheduler runs them apart (the shadow book, then the evidence and the
decision) and the replay runs them back to back:

1. ``mark_session(state, bars, signals, atr, configs, costs, start, end, key)`` -> ``SessionMarks``:
   every member (the champion unless it is FLAT, and each challenger) trades the session's bars
   in its shadow book (``shadow.shadow_book``: the validation backtest's entry, first-touch and
   cost rules). It returns each member's mark-to-market R on every bar of ``[start, end)``, its
   shadow trades that exited in the session (rows ready for the journal, marked ``shadow``) and
   where its book resumes next session. A book resumes at the signal bar of its open position,
   or at the session's last bar when it is flat (``ShadowBook.resume_from``), so a session's book
   covers the session plus one open trade, and its marks are exactly those of one book over the
   member's whole stay (tested).
2. ``run_arena_session(state, marked, ...)`` -> ``SessionOutcome``: the rules, in this order:

   a. **change detector**: the champion's trades closed in the session update its one-sided
      CUSUM (``drift.ChangeDetector``); on an alarm the champion is paused (``arena.demote``):
      FLAT trades from the next session, the paused version stays as a challenger and a
      recency-weighted challenger is requested (``arena.requests``);
   b. **evidence**: the session's marks are paired and folded into every challenger's two
      e-processes, against the champion and against FLAT (``arena_evidence.record_session``);
   c. **retirement**: challengers that overstayed or became futile leave (``arena.retire``);
   d. **promotion**: ``arena.decide_promotion`` on the evidence and each challenger's gate
      verdict; a winner becomes champion (``arena.promote``) with a fresh change detector (the
      one designed for it when it entered). The caller must store the decision's evidence in
      the registry's judgement record (``promotion_evidence``) before it deploys the winner:
      the registry refuses a version without a passing record;
   e. the arena moves to the next session (``arena.next_session``) and the **newcomers** (the
      session's trained candidates) enter as challengers (``arena.admit``); they are marked
      from the next session on.

   A session without bars (a weekend) changes nothing but admits newcomers: the arena counts
   sessions with bars, so a challenger's stay is measured in trading sessions.

``admit_newcomers`` is step e alone, for a caller that trains after the decision (to answer a
demotion's request in the same session).

The judgement record a promotion deploys through is built in ``domain/arena_judgement.py``.

``ArenaState`` is everything carried from one session to the next (JSON round-trip with
``as_dict`` / ``from_dict``, no pickle). Every function here is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from session_learning.domain.arena import (
    FLAT,
    Admission,
    Arena,
    ArenaSettings,
    ChallengerEvidence,
    ChallengerKind,
    Demotion,
    GateVerdict,
    PromotionDecision,
    Retirement,
    admit,
    decide_promotion,
    demote,
    next_session,
    promote,
    retire,
)
from session_learning.domain.arena_evidence import PairEvidence, challenger_evidence, record_session
from session_learning.domain.backtest import (
    BacktestConfig,
    CostModel,
)
from session_learning.domain.drift import ChangeDetector, ChangeResult
from session_learning.domain.evidence import EvidenceSettings, barrier_span_r
from session_learning.domain.keys import TRADE_COLUMNS, ModelKey
from session_learning.domain.shadow import shadow_book

SHADOW_COLUMN = "shadow"
# A shadow trade row: the journal's trade columns, its R multiple and the shadow marker.
SHADOW_TRADE_COLUMNS = (*TRADE_COLUMNS, "r_multiple", SHADOW_COLUMN)
STATE_SCHEMA = 1


@dataclass(frozen=True)
class BookPoint:
    """Where a member's shadow book resumes: ``resume_from`` the first bar its next book must
    start from (None: the member has not traded a bar yet, its book starts at the next session's
    first bar); ``open_position`` the virtual position open at the last marked bar (times as
    ISO text, prices), for display."""

    resume_from: pd.Timestamp | None = None
    open_position: Mapping | None = None

    def as_dict(self) -> dict:
        return {
            "resume_from": None if self.resume_from is None else self.resume_from.isoformat(),
            "open_position": None if self.open_position is None else dict(self.open_position),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BookPoint:
        resume = data.get("resume_from")
        return cls(
            resume_from=None if resume is None else pd.Timestamp(resume),
            open_position=data.get("open_position"),
        )


@dataclass(frozen=True)
class ArenaState:
    """Everything an arena carries from one session to the next.

    ``arena``: members and rules' bookkeeping; ``evidence``: each challenger's running
    e-processes (``arena_evidence.PairEvidence``); ``detector``: the champion's running change
    detector (None while FLAT is champion, or for a champion with too few validation trades to design
    one); ``designs``: each member's fresh detector, designed from its validation trades when it
    entered, which it starts with when promoted; ``gates``: each member's gate verdict on data it
    never trained on; ``books``: each member's shadow-book resume point.
    """

    arena: Arena
    evidence: Mapping[str, PairEvidence] = field(default_factory=dict)
    detector: ChangeDetector | None = None
    designs: Mapping[str, ChangeDetector] = field(default_factory=dict)
    gates: Mapping[str, GateVerdict] = field(default_factory=dict)
    books: Mapping[str, BookPoint] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        model: str,
        champion: str = FLAT,
        *,
        detector: ChangeDetector | None = None,
        gate: GateVerdict | None = None,
    ) -> ArenaState:
        """A new arena with ``champion`` trading (FLAT by default) and no challenger."""
        arena = Arena(model=model, champion=champion)
        if champion == FLAT:
            return cls(arena)
        return cls(
            arena,
            detector=detector,
            designs={} if detector is None else {champion: detector},
            gates={} if gate is None else {champion: gate},
            books={champion: BookPoint()},
        )

    def as_dict(self) -> dict:
        """Plain JSON-safe values (``from_dict`` reads them back exactly)."""
        return {
            "schema": STATE_SCHEMA,
            "arena": self.arena.as_dict(),
            "evidence": {v: p.as_dict() for v, p in sorted(self.evidence.items())},
            "detector": None if self.detector is None else dict(self.detector.__dict__),
            "designs": {v: dict(d.__dict__) for v, d in sorted(self.designs.items())},
            "gates": {v: g.as_dict() for v, g in sorted(self.gates.items())},
            "books": {v: b.as_dict() for v, b in sorted(self.books.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ArenaState:
        """Read ``as_dict``'s values; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping) or data.get("schema") != STATE_SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(
                f"arena state has schema {found!r}, expected {STATE_SCHEMA}; it was written by "
                "another version of session_learning"
            )
        try:
            detector = data["detector"]
            return cls(
                arena=Arena.from_dict(data["arena"]),
                evidence={v: PairEvidence.from_dict(p) for v, p in data["evidence"].items()},
                detector=None if detector is None else ChangeDetector(**detector),
                designs={v: ChangeDetector(**d) for v, d in data["designs"].items()},
                gates={v: GateVerdict.from_dict(g) for v, g in data["gates"].items()},
                books={v: BookPoint.from_dict(b) for v, b in data["books"].items()},
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"arena state is incomplete or malformed: {exc!r}") from None


@dataclass(frozen=True)
class SessionMarks:
    """One session's shadow books: ``marks`` (member -> mark-to-market R on every bar opening in
    ``[start, end)``), ``trades`` (member -> its shadow trades that exited in the session,
    ``SHADOW_TRADE_COLUMNS``), ``books`` (member -> where its book resumes), ``spans`` (member ->
    barrier span in R, the bound of its per-bar move) and ``bars``: the session's bars."""

    start: pd.Timestamp
    end: pd.Timestamp
    bars: int
    marks: Mapping[str, pd.Series]
    trades: Mapping[str, pd.DataFrame]
    books: Mapping[str, BookPoint]
    spans: Mapping[str, float]

    def trade_counts(self) -> dict[str, int]:
        return {v: len(t) for v, t in self.trades.items()}

    def shadow_trades(self) -> pd.DataFrame:
        """Every member's shadow trades of the session, in exit order."""
        frames = [t for t in self.trades.values() if len(t)]
        if not frames:
            return _empty_trade_rows()
        return pd.concat(frames, ignore_index=True).sort_values(
            ["exit_time", "trade_id"], kind="stable", ignore_index=True
        )


@dataclass(frozen=True)
class Newcomer:
    """A trained candidate offered to the arena: its version, kind, the gate verdict on data it
    never trained on and the change detector designed from its validation trades, or from its
    brackets when it had too few (``drift.bracket_detector``). None only for a model stored
    before validation trades were kept: as champion it could not be paused."""

    version: str
    kind: ChallengerKind
    gate: GateVerdict | None = None
    detector: ChangeDetector | None = None


@dataclass(frozen=True)
class ArenaSessionSettings:
    """The arena's rules (``arena``: K, alpha, stays) and the evidence's test (``evidence``:
    switching cost, bets; its alpha is the confidence sequence's)."""

    arena: ArenaSettings = field(default_factory=ArenaSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)


@dataclass(frozen=True)
class SessionOutcome:
    """What one session did to the arena, each step with its reasons.

    ``state``: the arena for the next session; ``session``: the arena's session number that was
    decided; ``change``: the champion's detector after the session (None without one);
    ``demotion``: the pause, or None; ``retirements``; ``decision``: the promotion decision (its
    winner is champion in ``state`` when it promotes); ``admissions``: the newcomers' fates;
    ``evidence``: each challenger's evidence as the decision read it."""

    state: ArenaState
    session: int
    champion_before: str
    change: ChangeResult | None
    demotion: Demotion | None
    retirements: tuple[Retirement, ...]
    decision: PromotionDecision | None
    admissions: tuple[Admission, ...]
    evidence: Mapping[str, ChallengerEvidence]

    @property
    def champion(self) -> str:
        return self.state.arena.champion

    @property
    def promoted(self) -> str | None:
        d = self.decision
        return d.winner if d is not None and d.promote else None


def mark_session(
    state: ArenaState,
    bars: pd.DataFrame,
    signals: Mapping[str, pd.Series],
    atr: pd.Series,
    configs: BacktestConfig | Mapping[str, BacktestConfig],
    costs: CostModel,
    start: pd.Timestamp,
    end: pd.Timestamp,
    key: ModelKey,
) -> SessionMarks:
    """Every member's shadow book on the session ``[start, end)``.

    ``bars`` (indexed by bar open time) must reach back to every member's resume point and cover
    the session; ``signals`` (member -> +1 / -1 / 0 per bar, a Series indexed by bar time, as the
    live scorer gives them) and ``atr`` must cover the same bars; ``configs`` is one
    ``BacktestConfig`` for every member or one per member (its trading rule's brackets). Sessions
    must follow one another: a member's book resumes where the last session left it. Raises
    ``ValueError`` naming the member and what is missing.
    """
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if end <= start:
        raise ValueError(f"session end {end} is not after its start {start}")
    index = bars.index
    in_session = int(((index >= start) & (index < end)).sum())
    marks: dict[str, pd.Series] = {}
    trades: dict[str, pd.DataFrame] = {}
    books: dict[str, BookPoint] = {}
    spans: dict[str, float] = {}
    for version in state.arena.members():
        config = configs.get(version) if isinstance(configs, Mapping) else configs
        if config is None:
            raise ValueError(f"no backtest config (trading rule) for arena member {version}")
        spans[version] = barrier_span_r(config.tp_atr, config.sl_atr)
        point = state.books.get(version, BookPoint())
        if in_session == 0:
            marks[version] = pd.Series(np.zeros(0), index=index[:0], name="mark_r")
            trades[version] = _trade_rows(pd.DataFrame(), key, version)
            books[version] = point
            continue
        first = start if point.resume_from is None else point.resume_from
        if point.resume_from is not None and point.resume_from not in index:
            raise ValueError(
                f"{key} member {version}: its shadow book resumes at bar {point.resume_from}, "
                "which the bars given do not hold; pass the bars from there on (sessions must "
                "be marked in order)"
            )
        window = bars[(index >= first) & (index < end)]
        member_signals = _covering(signals.get(version), window.index, f"{version} signals", key)
        member_atr = _covering(atr, window.index, "ATR", key)
        book = shadow_book(window, member_signals, member_atr, config, costs)
        marks[version], closed = book.session(start, end)
        trades[version] = _trade_rows(closed, key, version)
        position = book.open_position
        books[version] = BookPoint(
            resume_from=book.resume_from(),
            open_position=None
            if position is None
            else {
                "signal_time": window.index[position.signal_index].isoformat(),
                "entry_time": window.index[position.entry_idx].isoformat(),
                "direction": "long" if position.direction > 0 else "short",
                "entry_price": position.entry_price,
                "stop_loss": position.stop_loss,
                "take_profit": position.take_profit,
            },
        )
    return SessionMarks(start, end, in_session, marks, trades, books, spans)


def run_arena_session(
    state: ArenaState,
    marked: SessionMarks,
    newcomers: Sequence[Newcomer] = (),
    gates: Mapping[str, GateVerdict] | None = None,
    settings: ArenaSessionSettings = ArenaSessionSettings(),
) -> SessionOutcome:
    """Apply the arena's rules to one marked session (order in the module docstring).

    ``gates`` adds or replaces members' gate verdicts (e.g. judged on their forward record);
    newcomers bring their own. Raises ``ValueError`` when a member was not marked.
    """
    rules = settings.arena
    arena = state.arena
    books = {**state.books, **marked.books}
    designs = dict(state.designs)
    verdicts = {**state.gates, **(gates or {})}
    detector = state.detector
    champion_before = arena.champion
    missing = [v for v in arena.members() if v not in marked.marks]
    if missing:
        raise ValueError(
            f"{arena.model} session {arena.session}: members {missing} were not marked; "
            "mark_session marks every member of this state"
        )
    pairs: dict[str, PairEvidence] = dict(state.evidence)
    change = demotion = decision = None
    retirements: tuple[Retirement, ...] = ()
    summaries: dict[str, ChallengerEvidence] = challenger_evidence(arena, pairs, rules)
    if marked.bars:
        # a. the change detector on the champion's closed trades
        if arena.champion != FLAT and detector is not None:
            closed = marked.trades.get(arena.champion)
            r = (
                np.empty(0)
                if closed is None or not len(closed)
                else closed["r_multiple"].to_numpy(dtype=np.float64)
            )
            detector, change = detector.update(r)
            if change.alarm:
                arena, demotion = demote(arena, change.as_dict(), summaries, rules)
                detector = None
        # b. evidence
        pairs = record_session(
            arena, marked.marks, marked.trade_counts(), marked.spans, pairs, settings.evidence
        )
        # c. retirement
        summaries = challenger_evidence(arena, pairs, rules)
        arena, retirements = retire(arena, summaries, rules)
        summaries = challenger_evidence(arena, pairs, rules)
        # d. promotion
        decision = decide_promotion(arena, summaries, verdicts, rules)
        if decision.promote:
            arena = promote(arena, decision, summaries, rules)
            detector = designs.get(decision.winner)
        arena = next_session(arena)
    # e. newcomers
    new_state, admissions = admit_newcomers(
        ArenaState(arena, pairs, detector, designs, verdicts, books), newcomers, rules
    )
    return SessionOutcome(
        state=new_state,
        session=state.arena.session,
        champion_before=champion_before,
        change=change,
        demotion=demotion,
        retirements=retirements,
        decision=decision,
        admissions=admissions,
        evidence=summaries,
    )


def admit_newcomers(
    state: ArenaState,
    newcomers: Sequence[Newcomer],
    settings: ArenaSettings = ArenaSettings(),
) -> tuple[ArenaState, tuple[Admission, ...]]:
    """Enter ``newcomers`` as challengers (``arena.admit``), in order; each admitted one is
    marked from the arena's next session on, an evicted one leaves with its evidence and book.

    Eviction ranks challengers by their evidence against the current champion; evidence still
    recorded against an earlier champion (a new reign began this session) ranks nobody, so every
    challenger of a new reign counts as even (e-value 1) and leaves with its full share.
    """
    arena = state.arena
    pairs = dict(state.evidence)
    books, designs, verdicts = dict(state.books), dict(state.designs), dict(state.gates)
    reign = (arena.champion, arena.champion_since)
    current = {v: p for v, p in pairs.items() if (p.champion, p.champion_since) == reign}
    admissions = []
    for newcomer in newcomers:
        ranking = challenger_evidence(arena, current, settings)
        arena, admission = admit(arena, newcomer.version, newcomer.kind, ranking, settings)
        admissions.append(admission)
        if admission.admitted:
            books[newcomer.version] = BookPoint()
            if newcomer.detector is not None:
                designs[newcomer.version] = newcomer.detector
            if newcomer.gate is not None:
                verdicts[newcomer.version] = newcomer.gate
        if admission.evicted is not None:
            for held in (pairs, current, books, designs, verdicts):
                held.pop(admission.evicted, None)
    members = set(arena.members())
    keep = members | ({arena.paused} if arena.paused else set())
    return (
        ArenaState(
            arena=arena,
            evidence={v: p for v, p in pairs.items() if arena.challenger(v) is not None},
            detector=state.detector if arena.champion != FLAT else None,
            designs={v: d for v, d in designs.items() if v in keep},
            gates={v: g for v, g in verdicts.items() if v in keep},
            books={v: b for v, b in books.items() if v in members},
        ),
        tuple(admissions),
    )


def _covering(values: pd.Series | None, index: pd.DatetimeIndex, what: str, key) -> pd.Series:
    if values is None:
        raise ValueError(f"{key}: no {what} were given; score every member on every bar")
    if not isinstance(values, pd.Series):
        raise ValueError(f"{key}: {what} must be a Series indexed by bar time")
    found = values.reindex(index)
    if found.isna().any() and what != "ATR":
        first = found.index[found.isna().to_numpy()][0]
        raise ValueError(f"{key}: {what} miss bar {first}; score every bar from the resume point")
    return found


def _trade_rows(closed: pd.DataFrame, key: ModelKey, version: str) -> pd.DataFrame:
    if not len(closed):
        return _empty_trade_rows()
    rows = pd.DataFrame(
        {
            "trade_id": [
                f"{key.slug}-{version}-shadow-{t:%Y%m%dT%H%M}" for t in closed["entry_time"]
            ],
            "symbol": key.symbol,
            "timeframe": key.timeframe,
            "direction": closed["direction"].to_numpy(),
            "entry_time": closed["entry_time"].to_numpy(),
            "entry_price": closed["entry_price"].to_numpy(dtype=np.float64),
            "exit_time": closed["exit_time"].to_numpy(),
            "exit_price": closed["exit_price"].to_numpy(dtype=np.float64),
            "stop_loss": closed["stop_loss"].to_numpy(dtype=np.float64),
            "take_profit": closed["take_profit"].to_numpy(dtype=np.float64),
            "exit_reason": closed["exit_reason"].to_numpy(),
            "pnl": closed["pnl"].to_numpy(dtype=np.float64),
            "confidence": np.nan,
            "model_version": version,
            "r_multiple": closed["r_multiple"].to_numpy(dtype=np.float64),
            SHADOW_COLUMN: True,
        }
    )
    for column in ("entry_time", "exit_time"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    return rows[list(SHADOW_TRADE_COLUMNS)]


def _empty_trade_rows() -> pd.DataFrame:
    text = ("trade_id", "symbol", "timeframe", "direction", "exit_reason", "model_version")
    types = {c: object if c in text else "float64" for c in SHADOW_TRADE_COLUMNS}
    types.update(entry_time="datetime64[ns, UTC]", exit_time="datetime64[ns, UTC]", shadow=bool)
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in types.items()})
