"""The ``session_learning`` arm: the arena of every model, session by session.

What trades is the arena's champion (a model version, or FLAT: no position). Each session with
bars, per model, in this order:

1. the champion trades the session live (journal), as in every arm;
2. ``arena_session.mark_session``: every member (champion and challengers) scores the session's
   bars with its own model and trading rule, and its shadow book marks every bar in R;
3. a challenger whose validation window failed the seed's gates is judged again on its forward
   record (``arena_judgement.forward_judgement``: its shadow trades since it entered);
4. ``arena_session.run_arena_session``: change detector -> pause, evidence, retirement,
   promotion. A promotion goes through the registry: the judgement record
   (``arena_judgement.arena_judgement``, carrying the forward evidence) is recorded, then
   ``ModelRegistry.promote``; a previous champion coming back is a ``rollback`` to a version
   that went live under a passing record. The promoted champion's change detector is designed
   from its validation and forward trades. A pause makes FLAT trade (the registry keeps the
   paused version as its pointer: the registry has no FLAT; the arm does not trade it);
5. learning: every ``challenger_every`` sessions with bars (1: every session) a new candidate is
   trained (the session-learned plan when the analysis triggers, else the plain plan) and, after a pause, a recency-weighted one (trained on the newest half
   of the training window: a step recency weight); every candidate is stored in the registry
   (not live) and offered to the arena (``arena_session.admit_newcomers``); it is marked from
   the next session on.

Before the range, the first model is trained as in every arm; it becomes champion when it
passes every gate (judged, recorded, promoted), else FLAT is champion and it enters as a
challenger. In the ``clones`` scenario every newcomer is the first model's training redone with
another seed, nothing else.

The arm's log (``ArmRun.arena``, ``arena.csv``): one row per event (``initial``, ``admitted``,
``refused``, ``evicted``, ``retired``, ``demoted``, ``promoted``), one ``session`` row per model
and session (who traded, who is champion after it, the change statistic) and one ``marks`` row
per member and session (its summed marks, R).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from session_learning.domain.arena import FLAT
from session_learning.domain.arena_judgement import arena_judgement, forward_judgement, gate_verdict
from session_learning.domain.arena_session import (
    ArenaSessionSettings,
    ArenaState,
    Newcomer,
    SessionOutcome,
    admit_newcomers,
    mark_session,
    run_arena_session,
)
from session_learning.domain.backtest import BacktestConfig, signals_from_probabilities
from session_learning.domain.drift import ChangeDetector, champion_detector
from session_learning.domain.gates import Judgement
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import PARTITION_FORMAT
from session_learning.domain.training import TradingRule, effective_plan
from session_learning.replay.arms import Trained, _ArmReplay, _empty_trades, _ModelState
from session_learning.replay.config import plain_plan

ARENA_LOG_COLUMNS = (
    "session",
    "model",
    "arena_session",
    "event",
    "version",
    "kind",
    "champion",
    "challengers",
    "statistic",
    "threshold",
    "e_vs_champion",
    "e_vs_flat",
    "marks_r",
    "detail",
)
MIN_RECENT_TRAINING_BARS = 500  # the learning step's least training rows
_SCORE_CHUNK = 512  # bars a member scores at once, ahead of need


@dataclass
class _Member:
    """A model version in the arena: its model and rule, how it was judged, its scores so far
    and its shadow record."""

    version: str
    kind: str
    model: object
    card: dict
    config: BacktestConfig
    rule: TradingRule
    judgement: Judgement
    validation_r: np.ndarray
    validation_sessions: float
    entered: pd.Timestamp
    trained_until: pd.Timestamp
    held_out_from: pd.Timestamp
    scores: np.ndarray  # signal per bar of the model's bars, NaN where not scored yet
    scored_from: int
    scored_to: int
    shadow: list[pd.DataFrame] = field(default_factory=list)
    sessions: int = 0
    forward: Judgement | None = None

    def signals(self, state: _ModelState, stop: int) -> pd.Series:
        """Its signals on the model's bars, scored (with the live scorer's rule) up to ``stop``."""
        if stop > self.scored_to:
            upto = min(len(state.bars), max(stop, self.scored_to + _SCORE_CHUNK))
            rows = state.features.iloc[self.scored_to : upto][self.card["features"]]
            proba = self.model.predict_proba(rows)
            rule = self.rule
            self.scores[self.scored_to : upto] = signals_from_probabilities(
                proba, rule.min_confidence, rule.edge_threshold
            )
            self.scored_to = upto
        return pd.Series(self.scores, index=state.bars.index, copy=False)

    def shadow_trades(self) -> pd.DataFrame:
        return pd.concat(self.shadow, ignore_index=True) if self.shadow else _empty_shadow()


class ArenaArmReplay(_ArmReplay):
    """The arena arm (module docstring)."""

    def __init__(self, task) -> None:
        super().__init__(task)
        self.settings = ArenaSessionSettings(self.config.arena, self.config.evidence)
        self.arenas: dict[str, ArenaState] = {}
        self.members: dict[str, dict[str, _Member]] = {k.slug: {} for k in self.config.models}
        self.rows: dict[str, dict] = {}  # version -> its candidate-log row
        self.log: list[dict] = []
        self.initial_window: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        self.clones = self.config.scenario == "clones"
        self.clone_seed = 0
        self.offers: dict[str, int] = {}  # sessions with bars that could bring a challenger

    # -- the start ---------------------------------------------------------------------------

    def _initial(self, first_start: pd.Timestamp) -> None:
        start, end = first_start - self.config.session_length, first_start
        session = start.strftime(PARTITION_FORMAT)
        plans, _ = self._plans(start, end, None)
        for key in self.config.models:
            state = self.states[key.slug]
            self.initial_window[key.slug] = (start, end)
            arena = ArenaState.start(key.slug)
            plan = effective_plan(plans[key.slug], False)
            trained = None if plan is None else self._train(state, plan, start, end,
                                                            _empty_trades(), session)  # fmt: skip
            if trained is None:
                self.arenas[key.slug] = arena
                self._event(session, key, arena, "initial", FLAT, detail="no first model: FLAT")
                continue
            member = self._member(state, trained, "periodic", session, end)
            if trained.judgement.passed:
                version = member.version
                self.registry.record_judgement(key, version, trained.judgement.to_record())
                self.registry.promote(
                    key, version, reason="first model: passed every gate", session=session, now=end
                )
                state.production = self.registry.production(key)
                trained.record["deployed"] = True
                arena = ArenaState.start(
                    key.slug,
                    version,
                    detector=self._design(member),
                    gate=self._validation_verdict(member),
                )
                self.members[key.slug][version] = member
                detail = "first model passed every gate: champion"
            else:
                arena, admissions = admit_newcomers(
                    arena, [self._newcomer(member)], self.settings.arena
                )
                self.members[key.slug][member.version] = member
                detail = f"first model failed {trained.record['failed_gates']}: FLAT trades"
            self.arenas[key.slug] = arena
            self._event(session, key, arena, "initial", member.version, member.kind, detail=detail)

    # -- every session -----------------------------------------------------------------------

    def _session_end(self, start, end, session_trades, has_bars, last):
        session = start.strftime(PARTITION_FORMAT)
        for key in self.config.models:
            if has_bars[key.slug]:
                self._arena_session(key, start, end, session)
        if last:
            return None
        plans, triggered = self._plans(start, end, session_trades)
        for key in self.config.models:
            if not has_bars[key.slug]:
                continue
            newcomers = self._train_newcomers(key, plans[key.slug], start, end, session_trades)
            arena = self.arenas[key.slug]
            arena, admissions = admit_newcomers(arena, newcomers, self.settings.arena)
            self.arenas[key.slug] = arena
            kinds = {n.version: n.kind for n in newcomers}
            for a in admissions:
                event = "admitted" if a.admitted else "refused"
                self._event(
                    session, key, arena, event, a.version, kinds[a.version], detail=a.reason
                )
                if a.evicted:
                    self._event(session, key, arena, "evicted", a.evicted, detail=a.reason)
            self._forget(key, arena)
        return triggered

    def _arena_session(self, key: ModelKey, start, end, session: str) -> SessionOutcome:
        state, arena = self.states[key.slug], self.arenas[key.slug]
        members = self.members[key.slug]
        stop = int(state.bars.index.searchsorted(end))
        versions = arena.arena.members()
        marked = mark_session(
            arena,
            state.bars.iloc[:stop],
            {v: members[v].signals(state, stop) for v in versions},
            state.atr,
            {v: members[v].config for v in versions},
            state.costs,
            start,
            end,
            key,
        )
        for version in versions:
            member = members[version]
            member.sessions += 1
            if len(marked.trades[version]):
                member.shadow.append(marked.trades[version])
            self._event(session, key, arena, "marks", version, member.kind,
                        marks_r=float(marked.marks[version].sum()))  # fmt: skip
        gates = {}
        for c in arena.arena.challengers:
            member = members[c.version]
            verdict = self._validation_verdict(member)
            if not verdict.passed:
                # Judged again on its forward record, every session, once it has the trades.
                gates[c.version] = self._forward_verdict(key, member, end, session) or verdict
        outcome = run_arena_session(arena, marked, (), gates, self.settings)
        new = outcome.state
        if outcome.demotion is not None:
            state.production = None  # FLAT trades from the next session
            change = outcome.change
            self._event(session, key, new, "demoted", outcome.demotion.demoted,
                        statistic=change.statistic, threshold=change.threshold,
                        detail=outcome.demotion.reason)  # fmt: skip
        for r in outcome.retirements:
            self._event(session, key, new, "retired", r.version, detail=r.reason)
        if outcome.promoted:
            new = self._deploy(key, outcome, session, end)
        change = outcome.change
        best = max((e.vs_champion.e_value for e in outcome.evidence.values()), default=float("nan"))
        self._event(
            session,
            key,
            new,
            "session",
            outcome.champion_before,
            statistic=None if change is None else change.statistic,
            threshold=None if change is None else change.threshold,
            e_vs_champion=best,
            detail=" | ".join(outcome.decision.reasons) if outcome.decision else "",
            marks_r=float(marked.marks[outcome.champion_before].sum())
            if outcome.champion_before != FLAT
            else 0.0,
        )
        self.arenas[key.slug] = new
        self._forget(key, new)
        return outcome

    def _deploy(self, key: ModelKey, outcome: SessionOutcome, session: str, end) -> ArenaState:
        """Deploy the winner through the registry's judgement record; nothing else can."""
        decision = outcome.decision
        winner = decision.winner
        member = self.members[key.slug][winner]
        live = self.registry.production_version(key)
        if self.registry.was_live(key, winner):
            # It went live before under a passing record, which is kept (and cannot be redone).
            self.registry.rollback(key, winner, reason=f"arena: {decision.reasons[0]}", now=end)
            how = "back under its earlier judgement record"
        else:
            verdict = outcome.state.gates.get(winner)
            base = member.forward if verdict is not None and verdict.data == "forward" else None
            base = base or member.judgement
            judgement = arena_judgement(
                base,
                decision,
                baseline_version=live,
                partition=session,
                judged_at=end.isoformat(),
            )
            self.registry.record_judgement(key, winner, judgement.to_record())
            self.registry.promote(key, winner, reason=decision.reasons[0], session=session, now=end)
            how = f"judged on its {verdict.data if verdict else 'validation'} gates and evidence"
        refusal = self.registry.promotion_refusal(key, winner)
        if refusal is not None or self.registry.production_version(key) != winner:
            raise RuntimeError(f"{key}: {winner} went live without a passing judgement: {refusal}")
        state = self.states[key.slug]
        state.production = self.registry.production(key)
        if winner in self.rows:
            self.rows[winner]["deployed"] = True
        verdict = decision.winner_verdict()
        new = replace(outcome.state, detector=self._design(member, forward=True))
        self._event(session, key, new, "promoted", winner, member.kind,
                    e_vs_champion=verdict.e_value_vs_champion,
                    e_vs_flat=verdict.e_value_vs_flat, threshold=verdict.threshold,
                    detail=f"over {decision.champion}, {how}: {decision.reasons[0]}")  # fmt: skip
        return new

    # -- candidates --------------------------------------------------------------------------

    def _train_newcomers(self, key, plan, start, end, session_trades) -> list[Newcomer]:
        state = self.states[key.slug]
        session = start.strftime(PARTITION_FORMAT)
        learning = self.config.learning
        jobs = []  # (kind, plan, start, end, trades, learning)
        if self.clones:
            first_start, first_end = self.initial_window[key.slug]
            self.clone_seed += 1
            seeded = replace(learning, random_seed=learning.random_seed + self.clone_seed)
            first = effective_plan(plain_plan(key, self.config.rules), False)
            jobs.append(("periodic", first, first_start, first_end, _empty_trades(), seeded))
        else:
            chosen = effective_plan(plan, True) if plan.retrain else None
            if chosen is not None:
                jobs.append(("session_learned", chosen, start, end, session_trades, learning))
            else:
                plain = plain_plan(key, self.config.rules)
                jobs.append(("periodic", plain, start, end, session_trades, learning))
            if "recency_weighted" in self.arenas[key.slug].arena.requests:
                recent = replace(
                    learning,
                    training_bars=max(MIN_RECENT_TRAINING_BARS, learning.training_bars // 2),
                )
                plain = plain_plan(key, self.config.rules)
                jobs.append(("recency_weighted", plain, start, end, session_trades, recent))
        self.offers[key.slug] = self.offers.get(key.slug, 0) + 1
        if self.offers[key.slug] % self.config.challenger_every:
            # Not a session for a new challenger; a pause's request is answered anyway.
            jobs = [job for job in jobs if job[0] == "recency_weighted"]
        newcomers = []
        for kind, chosen, at_start, at_end, trades, settings in jobs:
            trained = self._train(
                state, chosen, at_start, at_end, trades, session, settings, judged_at=end
            )
            if trained is None:
                continue
            member = self._member(state, trained, kind, session, end)
            self.members[key.slug][member.version] = member
            newcomers.append(self._newcomer(member))
        return newcomers

    def _member(self, state: _ModelState, trained: Trained, kind: str, session: str, end):
        version = self._save(state, trained, session, end)
        trained.record["version"] = version
        self.rows[version] = trained.record
        model, card = self.registry.load(state.key, version)
        rule = TradingRule.from_dict(card["trading_rule"])
        info = trained.info
        bars_per_session = self.config.session_length / state.key.bar
        held_from = pd.Timestamp(info["held_out"][0])
        scores = np.full(len(state.bars), np.nan)
        first = int(state.bars.index.searchsorted(end))
        return _Member(
            version=version,
            kind=kind,
            model=model,
            card=card,
            config=rule.backtest_config(),
            rule=rule,
            judgement=trained.judgement,
            validation_r=trained.candidate.result.trades["r_multiple"].to_numpy(dtype=float),
            validation_sessions=info["rows"]["validation"] / bars_per_session,
            entered=pd.Timestamp(end),
            trained_until=pd.Timestamp(info["training_window"][1]),
            held_out_from=held_from,
            scores=scores,
            scored_from=first,
            scored_to=first,
        )

    def _validation_verdict(self, member: _Member):
        # The validation window was held out of training (with its purge and embargo); the
        # training rows before it end one bar before the held-out block.
        return gate_verdict(
            member.judgement,
            "validation",
            pd.Timestamp(member.card["validation_window"][0]),
            member.held_out_from - pd.Timedelta(microseconds=1),
        )

    def _newcomer(self, member: _Member) -> Newcomer:
        return Newcomer(
            member.version,
            member.kind,
            self._validation_verdict(member),
            self._design(member),
        )

    def _forward_verdict(self, key: ModelKey, member: _Member, end, session: str):
        """Its gates on its shadow trades since it entered, once it has the minimum of trades."""
        trades = member.shadow_trades()
        least = self.config.gates.min_trades.get(key.timeframe, 100)
        if len(trades) < least:
            return None
        judged = forward_judgement(
            trades,
            key.timeframe,
            (member.entered, pd.Timestamp(end)),
            self.config.gates,
            self.config.learning.risk_per_trade,
            partition=session,
            judged_at=pd.Timestamp(end).isoformat(),
        )
        member.forward = judged
        return gate_verdict(judged, "forward", member.entered, member.trained_until)

    def _design(self, member: _Member, forward: bool = False) -> ChangeDetector:
        """Its change detector from its trades on unseen bars: the validation window's, and
        with ``forward`` its shadow trades too; with fewer than 30 such trades, from its brackets
        (``drift.bracket_detector``)."""
        r = member.validation_r
        sessions = member.validation_sessions
        if forward and member.shadow:
            r = np.concatenate([r, member.shadow_trades()["r_multiple"].to_numpy(dtype=float)])
            sessions += member.sessions
        return champion_detector(
            r,
            sessions=sessions,
            reward_r=member.rule.tp_atr / member.rule.sl_atr,
            false_alarms_per_100_sessions=self.config.false_alarms_per_100_sessions,
            block_trades=self.config.detector_block_trades,
        )

    def _forget(self, key: ModelKey, arena: ArenaState) -> None:
        """Drop the models and scores of versions that left the arena."""
        keep = set(arena.arena.members())
        members = self.members[key.slug]
        for version in [v for v in members if v not in keep]:
            del members[version]

    # -- the log -----------------------------------------------------------------------------

    def _event(self, session, key, arena: ArenaState, event, version, kind="", **values) -> None:
        self.log.append(
            {
                "session": session,
                "model": key.slug,
                "arena_session": arena.arena.session,
                "event": event,
                "version": version,
                "kind": kind,
                "champion": arena.arena.champion,
                "challengers": len(arena.arena.challengers),
                **values,
            }
        )

    def _arena_log(self) -> pd.DataFrame:
        return pd.DataFrame(self.log, columns=list(ARENA_LOG_COLUMNS))


def _empty_shadow() -> pd.DataFrame:
    return pd.DataFrame(columns=["r_multiple", "exit_time", "entry_time"])
