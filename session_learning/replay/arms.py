"""One arm's walk through the sessions, in its own process: the live model trades, the journal
records, the learning cycle trains and judges, the registry deploys."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from session_learning.domain.analysis import (
    RetrainPlan,
    analyze_session,
)
from session_learning.domain.backtest import CostModel, run_backtest, signals_from_probabilities
from session_learning.domain.barrier_refit import BarrierTargets
from session_learning.domain.features import atr, build_features
from session_learning.domain.fitting import evaluate_production, train_candidate
from session_learning.domain.gates import Judgement, judge
from session_learning.domain.keys import TRADE_COLUMNS, ModelKey
from session_learning.domain.sessions import PARTITION_FORMAT, history_span
from session_learning.domain.trades import QUARANTINE_COLUMN, valid_trades, validate_trades
from session_learning.domain.training import (
    LearningConfig,
    LearningError,
    TradingRule,
    build_training_set,
    effective_plan,
)
from session_learning.replay.arm_run import (
    CANDIDATE_COLUMNS,
    SESSION_COLUMNS,
    TRADE_RECORD_COLUMNS,
    ArmRun,
    ArmTask,
)
from session_learning.replay.config import (
    plain_plan,
)
from session_learning.resources.journal import TradeJournal
from session_learning.resources.registry import ModelRegistry

# --- one arm -------------------------------------------------------------------------------


class PrecomputedFeatures:
    """A feature function returning rows of features computed once over the whole range.

    Valid because every default feature is causal: the value at a bar depends only on earlier
    bars, so computing over a longer range changes nothing but the warm-up.
    """

    def __init__(self, features: pd.DataFrame) -> None:
        self.features = features

    def __call__(self, bars: pd.DataFrame) -> pd.DataFrame:
        index = self.features.index
        first = int(index.searchsorted(bars.index[0])) if len(bars) else 0
        rows = self.features.iloc[first : first + len(bars)]
        if not rows.index.equals(bars.index):
            rows = self.features.reindex(bars.index)
        return rows


@dataclass
class _ModelState:
    key: ModelKey
    bars: pd.DataFrame
    features: pd.DataFrame
    atr: pd.Series
    costs: CostModel
    production: tuple | None = None  # (CatBoostClassifier, card)
    busy_until: int = 0  # first bar row a new position may be decided on


@dataclass
class Trained:
    """A trained and judged candidate (not stored yet); ``record`` is its candidate-log row."""

    candidate: object  # fitting.Candidate
    info: dict
    judgement: Judgement
    record: dict
    learning: LearningConfig


class _ArmReplay:
    """One arm's walk through the sessions (runs inside a worker process)."""

    def __init__(self, task: ArmTask) -> None:
        self.task = task
        self.arm = task.arm
        self.config = task.config
        self.folder = task.folder
        self.journal = TradeJournal(f"sqlite:///{task.folder / 'journal.sqlite'}")
        self.journal.create_schema()
        self.registry = ModelRegistry(task.folder / "models")
        self.states: dict[str, _ModelState] = {}
        for key in self.config.models:
            bars = task.bars[key.slug]
            features = build_features(bars, task.feature_functions)
            self.states[key.slug] = _ModelState(
                key,
                bars,
                features,
                atr(bars, self.config.learning.atr_period),
                self.config.costs[key.symbol],
            )
        self.pending: list[dict] = []
        self.trades: list[dict] = []
        self.candidates: list[dict] = []
        self.timing: list[dict] = []
        self.quarantined = 0
        self.sessions_with_bars = 0

    def run(self, progress: Callable[[int], None]) -> ArmRun:
        sessions = self.config.sessions()
        first_start = sessions[0][0]
        # Initial training at the range's start, from an empty session before it.
        cpu = time.process_time()
        self._initial(first_start)
        initial_cpu = time.process_time() - cpu
        for number, (start, end) in enumerate(sessions):
            wall, cpu = time.perf_counter(), time.process_time()
            trained_before = len(self.candidates)
            has_bars = self._trade(start, end)
            session_trades = self._journal_session(start, end)
            last = number == len(sessions) - 1
            triggered = self._session_end(start, end, session_trades, has_bars, last)
            self.timing.append(
                {
                    "session": start.strftime(PARTITION_FORMAT),
                    "wall_seconds": time.perf_counter() - wall,
                    "cpu_seconds": time.process_time() - cpu,
                    "trainings": len(self.candidates) - trained_before,
                    "trades": len(session_trades),
                    "triggered": triggered,
                }
            )
            progress(1)
        self.journal.engine.dispose()
        run = ArmRun(
            arm=self.arm,
            trades=_frame(self.trades, TRADE_RECORD_COLUMNS),
            candidates=_frame(self.candidates, CANDIDATE_COLUMNS),
            sessions=_frame(self.timing, SESSION_COLUMNS),
            open_at_end=len(self.pending),
            quarantined=self.quarantined,
            initial_cpu_seconds=initial_cpu,
            arena=self._arena_log(),
            **self._audit(),
        )
        # Saved by the worker itself: a finished arm survives its parent being stopped.
        run.save(self.task.folder, self.config)
        return run

    def _initial(self, first_start: pd.Timestamp) -> None:
        """The initial training at the range's start, from an empty session before it."""
        self._learn(first_start - self.config.session_length, first_start, None, initial=True)

    def _session_end(
        self,
        start: pd.Timestamp,
        end: pd.Timestamp,
        session_trades: pd.DataFrame,
        has_bars: Mapping[str, bool],
        last: bool,
    ) -> bool | None:
        """What the arm does at a session's end; returns whether learning triggered."""
        # Nothing to learn from a session without bars or trades; the last session's
        # candidate would never trade.
        if not last and self.arm != "static" and (any(has_bars.values()) or len(session_trades)):
            return self._learn(start, end, session_trades, has_bars=has_bars)
        return None

    def _arena_log(self) -> pd.DataFrame | None:
        return None

    def _audit(self) -> dict[str, int]:
        """Every deployment in the arm's registry, and how many went live without a passing
        judgement record (the registry refuses them; this counts what it let through)."""
        promotions = unjudged = 0
        for key in self.config.models:
            for entry in self.registry.history(key):
                promotions += 1
                if self.registry.promotion_refusal(key, entry["version"]) is not None:
                    unjudged += 1
        return {"promotions": promotions, "unjudged_promotions": unjudged}

    # -- trading ---------------------------------------------------------------------------

    def _trade(self, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, bool]:
        """Let every live model trade the bars opening in ``[start, end)``; returns which
        models had bars in the session."""
        has_bars = {}
        for slug, state in self.states.items():
            index = state.bars.index
            first, stop = int(index.searchsorted(start)), int(index.searchsorted(end))
            has_bars[slug] = stop > first
            if state.production is not None:
                self.pending.extend(_session_trades(state, max(first, state.busy_until), stop))
        return has_bars

    def _journal_session(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Write the trades that exited before ``end`` to the journal; read the session back
        as the ``session_trades`` asset does (validated; quarantined rows left out)."""
        due = [t for t in self.pending if t["exit_time"] < end]
        self.pending = [t for t in self.pending if t["exit_time"] >= end]
        due.sort(key=lambda t: (t["exit_time"], t["trade_id"]))
        if due:
            rows = [
                {
                    **{c: t[c] for c in TRADE_COLUMNS},
                    "entry_time": t["entry_time"].isoformat(),
                    "exit_time": t["exit_time"].isoformat(),
                }
                for t in due
            ]
            self.journal.add_trades(pd.DataFrame(rows, columns=list(TRADE_COLUMNS)))
        session = start.strftime(PARTITION_FORMAT)
        self.trades.extend({**t, "session": session} for t in due)
        raw = self.journal.trades_exited_between(start, end)
        checked = validate_trades(raw, known_models=self.config.models)
        self.quarantined += int((checked[QUARANTINE_COLUMN] != "").sum())
        return valid_trades(checked)

    # -- learning --------------------------------------------------------------------------

    def _plans(
        self, start: pd.Timestamp, end: pd.Timestamp, session_trades: pd.DataFrame | None
    ) -> tuple[dict[str, RetrainPlan], bool]:
        models = self.config.models
        if self.arm == "periodic":
            return {k.slug: plain_plan(k, self.config.rules) for k in models}, True
        trades = session_trades if session_trades is not None else _empty_trades()
        report = analyze_session(trades, models, start, end, self.config.rules)
        return report.plans, report.trigger.triggered

    def _learn(
        self,
        start: pd.Timestamp,
        end: pd.Timestamp,
        session_trades: pd.DataFrame | None,
        *,
        initial: bool = False,
        has_bars: Mapping[str, bool] | None = None,
    ) -> bool:
        """One learning cycle at the end of ``[start, end)``; returns whether it triggered."""
        plans, triggered = self._plans(start, end, session_trades)
        trades = session_trades if session_trades is not None else _empty_trades()
        session = start.strftime(PARTITION_FORMAT)
        periodic_due = True
        if has_bars is not None and any(has_bars.values()):
            self.sessions_with_bars += 1
            periodic_due = self.sessions_with_bars % self.config.periodic_every == 0
        for key in self.config.models:
            state = self.states[key.slug]
            plan = plans[key.slug]
            if (
                has_bars is not None
                and not has_bars[key.slug]
                and not (plan.retrain and self.arm != "periodic")
            ):
                continue  # no new bars and nothing learned: the same data, the same model
            if self.arm == "periodic" and not periodic_due and state.production is not None:
                continue
            chosen = effective_plan(plan, state.production is not None)
            if chosen is None:
                continue
            self._train_and_judge(state, chosen, start, end, trades, session, initial)
        return triggered

    def _train_and_judge(
        self,
        state: _ModelState,
        plan: RetrainPlan,
        start: pd.Timestamp,
        end: pd.Timestamp,
        session_trades: pd.DataFrame,
        session: str,
        initial: bool,
    ) -> None:
        trained = self._train(state, plan, start, end, session_trades, session)
        if trained is None:
            return
        key, record, judgement = state.key, trained.record, trained.judgement
        passed = judgement.passed
        deploy = passed or self.arm == "ungated" or (self.arm == "static" and initial)
        if deploy:
            version = self._save(state, trained, session, end)
            self.registry.record_judgement(key, version, judgement.to_record())
            if passed and self.arm != "ungated":
                self.registry.promote(
                    key, version, reason="passed every gate", session=session, now=end
                )
                state.production = self.registry.production(key)
            else:
                # The ungated arm (and the static arm's first model) trade whatever was trained:
                # a counterfactual the registry does not allow, so the arm holds that model
                # itself and the registry's production pointer never names it.
                state.production = self.registry.load(key, version)
            record.update(deployed=True, version=version)

    def _save(self, state: _ModelState, trained: Trained, session: str, end: pd.Timestamp) -> str:
        """Store a trained candidate in the arm's registry (not live); returns its version."""
        live = state.production[1]["version"] if state.production else None
        card = trained.candidate.card(trained.info, session, live)
        card.update(replay_arm=self.arm)
        return self.registry.save_candidate(state.key, trained.candidate.model, card, end)

    def _train(
        self,
        state: _ModelState,
        plan: RetrainPlan,
        start: pd.Timestamp,
        end: pd.Timestamp,
        session_trades: pd.DataFrame,
        session: str,
        learning: LearningConfig | None = None,
        judged_at: pd.Timestamp | None = None,
    ) -> Trained | None:
        """Train a candidate at the end of ``[start, end)`` and judge it against the live model;
        its row is appended to the candidate log (None when it could not be trained).
        ``learning`` replaces the arm's settings (a recency-weighted or reseeded candidate);
        ``judged_at`` is when it is judged, if later than ``end`` (a clone of an older one)."""
        key = state.key
        learning = learning or self.config.learning
        judged_at = end if judged_at is None else judged_at
        record: dict = {
            "session": session,
            "time": judged_at.isoformat(),
            "model": key.slug,
            "reasons": "; ".join(plan.reasons),
            "deployed": False,
            "passed": False,
            "failed_gates": "",
            "error": "",
        }
        index = state.bars.index
        window = state.bars.iloc[
            int(
                index.searchsorted(end - history_span(key, learning.history_bars(key.timeframe)))
            ) : int(index.searchsorted(end))
        ]
        try:
            frame, info = build_training_set(
                window,
                key,
                start,
                end,
                session_trades,
                plan,
                learning,
                (PrecomputedFeatures(state.features),),
                targets=BarrierTargets.from_gates(self.config.gates, key.timeframe),
            )
            record["reasons"] = "; ".join(info["plan"]["reasons"])  # with the refit verdict
            candidate = train_candidate(frame, info, learning, state.costs, key.bar)
        except LearningError as exc:
            self.candidates.append({**record, "error": str(exc)})
            return None
        production_result = evaluate_production(state.production, frame, state.costs, key.bar)
        live = state.production[1]["version"] if state.production else None
        judgement = judge(
            candidate.result,
            production_result,
            key.timeframe,
            candidate.window,
            self.config.gates,
            baseline_version=live,
            partition=session,
            judged_at=judged_at.isoformat(),
        )
        gates, passed = judgement.gates, judgement.passed
        m = candidate.result.metrics
        record.update(
            boosted_rows=len(info["boosted_rows"]),
            validation_trades=m.trades,
            profit_factor=m.profit_factor,
            win_rate=m.win_rate,
            max_drawdown_pct=m.max_drawdown_pct,
            expectancy_r=m.expectancy_r,
            production_expectancy_r=(
                production_result.metrics.expectancy_r if production_result else None
            ),
            passed=passed,
            failed_gates=",".join(g.name for g in gates if not g.passed),
        )
        self.candidates.append(record)
        return Trained(candidate, info, judgement, record, learning)


def _session_trades(state: _ModelState, first: int, stop: int) -> list[dict]:
    """The trades the live model decides on bar rows ``first .. stop - 1`` (one position at a
    time), resolved with the shared backtest rules; each ends in the future at its exit."""
    if first >= stop:
        return []
    model, card = state.production
    rule = TradingRule.from_dict(card["trading_rule"])
    proba = model.predict_proba(state.features.iloc[first:stop][card["features"]])
    signals = signals_from_probabilities(proba, rule.min_confidence, rule.edge_threshold)
    if not signals.any():
        return []
    # Enough later bars for every trade decided in the session to reach its exit.
    until = min(len(state.bars), stop + rule.max_holding_bars + 1)
    padded = np.zeros(until - first, dtype=np.int8)
    padded[: stop - first] = signals
    result = run_backtest(
        state.bars.iloc[first:until],
        padded,
        state.atr.iloc[first:until],
        rule.backtest_config(),
        state.costs,
        bar_length=state.key.bar,
    )
    trades = result.trades
    if trades.empty:
        return []
    key = state.key
    confidence = proba[trades["signal_index"].to_numpy()][:, [0, 2]].max(axis=1)
    exits = first + trades["signal_index"].to_numpy() + trades["bars_held"].to_numpy()
    state.busy_until = int(exits[-1])  # the exit bar may decide the next position
    return [
        {
            "trade_id": f"{key.slug}-{t.entry_time:%Y%m%dT%H%M}",
            "symbol": key.symbol,
            "timeframe": key.timeframe,
            "direction": t.direction,
            "entry_time": t.entry_time,
            "entry_price": float(t.entry_price),
            "exit_time": t.exit_time,
            "exit_price": float(t.exit_price),
            "stop_loss": float(t.stop_loss),
            "take_profit": float(t.take_profit),
            "exit_reason": t.exit_reason,
            "pnl": float(t.pnl),
            "confidence": round(float(c), 6),
            "model_version": card["version"],
            "r_multiple": float(t.r_multiple),
        }
        for t, c in zip(trades.itertuples(index=False), confidence, strict=True)
    ]


def _empty_trades() -> pd.DataFrame:
    return valid_trades(validate_trades(pd.DataFrame(columns=list(TRADE_COLUMNS))))


def _frame(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def arm_replay(task: ArmTask) -> _ArmReplay:
    """The walk of ``task``'s arm: the arena for ``session_learning``, else the plain loop."""
    if task.arm == "session_learning":
        from session_learning.replay.arena_arm import ArenaArmReplay

        return ArenaArmReplay(task)
    return _ArmReplay(task)


def run_arm(task: ArmTask, progress_queue: object | None = None) -> ArmRun:
    """Replay one arm (the process entry point; spawn-safe: a top-level function)."""

    def progress(n: int) -> None:
        if progress_queue is not None:
            progress_queue.put((task.arm, n))

    return arm_replay(task).run(progress)
