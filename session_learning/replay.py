"""Replay: the whole learning loop over a historical range, to measure whether learning helps.

For every model (symbol x timeframe) the replay walks the range session by session (4 hours,
UTC), as production would:

1. the live model of each arm trades the session's bars: its probabilities become signals by
   the trading rule in its card (confidence, edge), entered at the next bar's open and resolved
   with the shared first-touch rules and costs (``backtest.run_backtest``), one position per
   model at a time; every closed trade is written to the arm's SQLite trade journal (the live
   ``TradeJournal``) in the session in which it exited;
2. at the session's end the arm's learning cycle reads the session's trades back from its
   journal and runs the same domain functions as the Dagster assets: ``validate_trades``,
   ``analyze_session``, ``effective_plan``, ``build_training_set``, ``train_candidate``,
   ``evaluate_production``, ``judge``, stores the judgement with the version and deploys
   through ``ModelRegistry.promote`` (one registry per arm). A candidate that did not pass
   cannot be promoted: the ``ungated`` arm and the static arm's first model, which trade it
   anyway, hold that model in the arm itself, outside the registry's production pointer.

Arms (``ARMS``):

- ``static``: trained once at the start and never retrained (its initial model is deployed
  whatever the gates say: it is the do-nothing baseline; its gate results are recorded);
- ``periodic``: retrained every session that has new bars, with a plain plan (no boosts,
  default class weights and parameters, no problem rules), deployed when the gates pass;
- ``session_learning``: the product: the plan comes from ``analyze_session``, the gates
  (including beating production beyond noise) decide;
- ``ungated``: session learning with every candidate deployed.

Every arm starts the same way: at the range's start, a model without production is trained
through ``effective_plan`` (initial training). Arms are independent (own journal, own
registry), so they run in parallel processes; within an arm all models share each session's
analysis, as in production (the trigger and the session-wide problems look at all models).

Simplifications, stated in the report: a deployment takes effect at the session's end (the
bars of a session are scored by the model that was live when the session began); only
deployed candidates are stored in the registry (rejected ones are recorded in the replay's own
candidate log); features are computed once per model over the whole range (they are causal,
so a value at a bar only depends on earlier bars; only the warm-up of the exponential averages
differs from a window computed live).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from session_learning.domain import synthetic
from session_learning.domain.analysis import (
    TRIGGER_PRESETS,
    LearningRules,
    RetrainPlan,
    analyze_session,
)
from session_learning.domain.backtest import CostModel, run_backtest, signals_from_probabilities
from session_learning.domain.calendars import calendar_for
from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction, atr, build_features
from session_learning.domain.gates import GateThresholds, judge
from session_learning.domain.learning import (
    BARRIER_REFITS,
    DEFAULT_COSTS,
    BarrierTargets,
    LearningConfig,
    LearningError,
    TradingRule,
    build_training_set,
    effective_plan,
    evaluate_production,
    train_candidate,
)
from session_learning.domain.models import TRADE_COLUMNS, ModelKey, timeframe_delta
from session_learning.domain.trades import QUARANTINE_COLUMN, valid_trades, validate_trades
from session_learning.partitions import PARTITION_FORMAT
from session_learning.resources.journal import TradeJournal
from session_learning.resources.registry import ModelRegistry

ARMS = ("static", "periodic", "session_learning", "ungated")
ARM_DESCRIPTIONS = {
    "static": "trained once at the start, never retrained",
    "periodic": "retrained on a fixed cadence with a plain plan, deployed when the gates pass",
    "session_learning": "plan from the session analysis, deployed when the gates pass",
    "ungated": "plan from the session analysis, every candidate deployed",
}
GATED_ARMS = frozenset({"periodic", "session_learning"})
SCENARIOS = ("flips",)

DEFAULT_FROM = "2025-01-06"
DEFAULT_TO = "2025-04-07"
DEFAULT_SYMBOLS = "EURUSD,GBPUSD,XAUUSD"
DEFAULT_TIMEFRAMES = "30T"
DEFAULT_OUT = "var/replay"
MARKER_FILE = "replay-arm.json"  # marks an arm folder the replay may delete on a re-run
ARM_FILE = "arm.json"  # written when an arm has finished
REGIME_LOOKBACK = pd.Timedelta(days=30)  # regimes known before the range: a flip at its start

BarSource = Callable[[ModelKey, pd.Timestamp, pd.Timestamp], pd.DataFrame]
"""``bars(key, start, end)``: OHLCV bars of ``key`` opening in ``[start, end)``, UTC index."""


class ReplayError(ValueError):
    """The replay cannot run as asked (range, models, output folder, data)."""


# --- bar sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticBars:
    """The deterministic synthetic source as a ``bars(key, start, end)`` callable.

    Requests before the generator's epoch are cut to it. ``regimes`` gives the known answer:
    the regime of every bar.
    """

    seed: int = 7

    def __call__(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return synthetic.generate_bars(
            key.symbol, key.timeframe, max(pd.Timestamp(start), synthetic.EPOCH), end, self.seed
        )

    def regimes(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        return synthetic.regime_schedule(
            key.symbol, key.timeframe, max(pd.Timestamp(start), synthetic.EPOCH), end, self.seed
        )


def describe_bars(source: object) -> str:
    """What a bar source is, in the report's words: ``synthetic bars (seed 7)``, ``bar files
    in /srv/bars``, ``Polygon.io aggregates``; a market-data resource's bound ``bars`` method
    is described by its resource."""
    owner = getattr(source, "__self__", source)
    owner = getattr(owner, "resource", owner)  # ValidatedBars wraps a market-data resource
    name = type(owner).__name__
    if isinstance(owner, SyntheticBars) or name.startswith("Synthetic"):
        return f"synthetic bars (seed {owner.seed})"
    if getattr(owner, "directory", None) is not None:
        return f"bar files in {owner.directory}"
    if name.startswith("Polygon"):
        url = getattr(owner, "base_url", None)
        return "Polygon.io aggregates" + (f" from {url}" if url else "")
    return f"bars from {getattr(source, '__qualname__', name)}"


class ValidatedBars:
    """A files folder or Polygon as a ``bars(key, start, end)`` callable, validated as the
    assets validate them (same resource, same rules); repairs and warnings go to stderr."""

    def __init__(self, resource: object) -> None:
        self.resource = resource

    def __call__(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        from session_learning.resources.market_data import MarketDataError

        try:
            report = self.resource.load(key, start, end)
        except MarketDataError as exc:
            raise ReplayError(str(exc)) from None
        for note in [*(f"repaired: {r}" for r in report.repairs), *report.warnings]:
            print(f"{key} bars {note}", file=sys.stderr)
        return report.bars


def bar_source(source: str, seed: int) -> BarSource:
    """The bars ``--source`` names: ``synthetic``, ``files:DIR`` or ``polygon``. Files and
    Polygon read the deployment's settings: gap limits from SESSION_LEARNING_SETTINGS, the key
    from POLYGON_API_KEY, address and page size from SESSION_LEARNING_POLYGON_*."""
    if source == "synthetic":
        return SyntheticBars(seed)
    from session_learning.resources.market_data import (
        FileMarketDataResource,
        PolygonMarketDataResource,
    )
    from session_learning.settings import POLYGON_KEY_VAR, Settings

    settings = Settings.from_env()
    folder = source.removeprefix("files:").strip() if source.startswith("files:") else ""
    if folder:
        if not Path(folder).is_dir():
            raise ReplayError(f"--source {source}: {folder} is not a folder of bar files")
        return ValidatedBars(FileMarketDataResource(directory=folder, **settings.gap_limits()))
    if source == "polygon":
        key = os.environ.get(POLYGON_KEY_VAR, "")
        if not key:
            raise ReplayError(f"--source polygon needs the key in {POLYGON_KEY_VAR}")
        resource = PolygonMarketDataResource(
            api_key=key, **settings.polygon_fields(), **settings.gap_limits()
        )
        return ValidatedBars(resource)
    raise ReplayError(f"--source {source!r}: use synthetic, files:DIR or polygon")


# --- configuration -------------------------------------------------------------------------


def _utc(value: object, what: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        raise ReplayError(f"{what} is not a time: {value!r}")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and with which settings; every number the product uses is here.

    ``start`` / ``end`` are rounded outwards to session boundaries. ``workers`` 0 means one
    process per arm, at most one per CPU. ``seed`` is the seed of the synthetic bars (and of
    the report's bootstrap), recorded in the report.
    """

    models: tuple[ModelKey, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    arms: tuple[str, ...] = ARMS
    seed: int = 7
    session_hours: int = 4
    learning: LearningConfig = field(default_factory=LearningConfig)
    gates: GateThresholds = field(default_factory=GateThresholds)
    rules: LearningRules = field(default_factory=LearningRules)
    costs: Mapping[str, CostModel] = field(default_factory=lambda: dict(DEFAULT_COSTS))
    workers: int = 0
    scenario: str | None = None
    source: str = "synthetic"
    periodic_every: int = 1  # sessions with bars between the periodic arm's retrains

    def __post_init__(self) -> None:
        if not self.models:
            raise ReplayError("no models to replay")
        if len(set(self.models)) != len(self.models):
            raise ReplayError("the model list has duplicates")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ReplayError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
        if self.periodic_every < 1:
            raise ReplayError(f"periodic_every must be >= 1, got {self.periodic_every}")
        if self.session_hours not in (1, 2, 3, 4, 6, 8, 12, 24):
            raise ReplayError(f"session length must divide a day, got {self.session_hours} hours")
        hours = pd.Timedelta(hours=self.session_hours)
        for key in self.models:
            if hours % timeframe_delta(key.timeframe):
                raise ReplayError(f"{key}: a {key.timeframe} bar does not divide the session")
            if key.symbol not in self.costs:
                raise ReplayError(
                    f"no costs configured for {key.symbol}; a replay without costs would "
                    "flatter every arm (known: " + ", ".join(sorted(self.costs)) + ")"
                )
        start = _utc(self.start, "start").floor(hours)
        end = _utc(self.end, "end").ceil(hours)
        if end <= start:
            raise ReplayError(f"the range is empty: {start} .. {end}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def session_length(self) -> pd.Timedelta:
        return pd.Timedelta(hours=self.session_hours)

    def sessions(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The ``[start, end)`` windows of every session in the range, oldest first."""
        starts = pd.date_range(self.start, self.end, freq=self.session_length, inclusive="left")
        return [(s, s + self.session_length) for s in starts]

    def describe(self) -> dict:
        """The configuration as plain JSON-able values (shown in the report)."""
        return {
            "models": [m.slug for m in self.models],
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "sessions": len(self.sessions()),
            "session_hours": self.session_hours,
            "arms": list(self.arms),
            "periodic_every": self.periodic_every,
            "seed": self.seed,
            "source": self.source,
            "scenario": self.scenario,
            # The thread count is how the work was spread, not a setting of the result.
            "learning": {k: v for k, v in asdict(self.learning).items() if k != "thread_count"},
            "gates": asdict(self.gates),
            "rules": asdict(self.rules),
            "costs": {s: asdict(c) for s, c in sorted(self.costs.items()) if s in self.symbols},
        }

    @classmethod
    def from_description(cls, data: Mapping) -> ReplayConfig:
        """The configuration ``describe`` wrote (with the default thread count)."""
        return cls(
            models=tuple(ModelKey.parse(m) for m in data["models"]),
            start=data["start"],
            end=data["end"],
            arms=tuple(data["arms"]),
            seed=data["seed"],
            session_hours=data["session_hours"],
            learning=LearningConfig(**data["learning"]),
            gates=GateThresholds(**data["gates"]),
            rules=LearningRules(**data["rules"]),
            costs={s: CostModel(**c) for s, c in data["costs"].items()},
            periodic_every=data["periodic_every"],
            scenario=data["scenario"],
            source=data["source"],
        )

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({m.symbol for m in self.models}))


def history_span(key: ModelKey, bars_needed: int) -> pd.Timedelta:
    """Wall-clock time holding ``bars_needed`` bars (and 10 more) anywhere on the symbol's
    trading calendar, holidays included."""
    return calendar_for(key.symbol).span_for_bars(bars_needed + 10, key.bar)


def plain_plan(key: ModelKey, rules: LearningRules) -> RetrainPlan:
    """The periodic arm's plan: retrain with the defaults, nothing learned from the session."""
    return RetrainPlan(
        model=key.slug,
        retrain=True,
        reasons=("periodic retrain: plain plan",),
        l2_leaf_reg=rules.base_l2_leaf_reg,
        depth=rules.base_depth,
        edge_threshold=rules.base_edge_threshold,
    )


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


@dataclass(frozen=True)
class ArmTask:
    """Everything one arm's process needs (picklable: sent to a spawned worker)."""

    arm: str
    config: ReplayConfig
    bars: dict[str, pd.DataFrame]  # ModelKey.slug -> bars covering history and range
    folder: Path
    feature_functions: tuple[FeatureFunction, ...] = DEFAULT_FEATURES


@dataclass
class ArmRun:
    """What one arm did: its trades, its candidates and the cost of each session."""

    arm: str
    trades: pd.DataFrame
    candidates: pd.DataFrame
    sessions: pd.DataFrame
    open_at_end: int
    quarantined: int
    initial_cpu_seconds: float = 0.0  # the initial training at the range's start

    def save(self, folder: Path, config: ReplayConfig) -> None:
        """Write the run beside the arm's journal and registry; ``arm.json`` goes last and
        marks the arm complete (``read_arm``, ``run_replay(resume=True)``)."""
        self.trades.sort_values(["exit_time", "trade_id"], kind="stable").to_csv(
            folder / "trades.csv", index=False
        )
        self.candidates.to_csv(folder / "candidates.csv", index=False)
        self.sessions.to_csv(folder / "sessions.csv", index=False)
        done = {
            "arm": self.arm,
            "config": config.describe(),
            "open_at_end": self.open_at_end,
            "quarantined": self.quarantined,
            "initial_cpu_seconds": self.initial_cpu_seconds,
        }
        (folder / ARM_FILE).write_text(json.dumps(done, indent=2) + "\n")


def read_arm(folder: Path) -> ArmRun:
    """A completed arm read back from its folder."""
    done = json.loads((folder / ARM_FILE).read_text())
    trades = pd.read_csv(folder / "trades.csv", dtype={"trade_id": str, "model_version": str})
    for column in ("entry_time", "exit_time"):
        trades[column] = pd.to_datetime(trades[column], utc=True)
    candidates = pd.read_csv(
        folder / "candidates.csv",
        dtype={c: str for c in CANDIDATE_TEXT_COLUMNS},
        keep_default_na=False,
        na_values={c: [""] for c in CANDIDATE_COLUMNS if c not in CANDIDATE_TEXT_COLUMNS},
    )
    return ArmRun(
        done["arm"],
        trades,
        candidates,
        pd.read_csv(folder / "sessions.csv"),
        done["open_at_end"],
        done["quarantined"],
        done["initial_cpu_seconds"],
    )


def _completed(folder: Path, config: ReplayConfig) -> bool:
    """Whether ``folder`` holds a finished run of this arm under the same configuration."""
    try:
        done = json.loads((folder / ARM_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return done.get("config") == json.loads(json.dumps(config.describe()))


TRADE_RECORD_COLUMNS = (*TRADE_COLUMNS, "r_multiple", "session")
CANDIDATE_COLUMNS = (
    "session",
    "time",
    "model",
    "reasons",
    "boosted_rows",
    "error",
    "validation_trades",
    "profit_factor",
    "win_rate",
    "max_drawdown_pct",
    "expectancy_r",
    "production_expectancy_r",
    "passed",
    "failed_gates",
    "deployed",
    "version",
)
CANDIDATE_TEXT_COLUMNS = ("session", "time", "model", "reasons", "error", "failed_gates", "version")
SESSION_COLUMNS = ("session", "wall_seconds", "cpu_seconds", "trainings", "trades", "triggered")


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
        self._learn(first_start - self.config.session_length, first_start, None, initial=True)
        initial_cpu = time.process_time() - cpu
        for number, (start, end) in enumerate(sessions):
            wall, cpu = time.perf_counter(), time.process_time()
            trained_before = len(self.candidates)
            has_bars = self._trade(start, end)
            session_trades = self._journal_session(start, end)
            triggered = None
            last = number == len(sessions) - 1
            # Nothing to learn from a session without bars or trades; the last session's
            # candidate would never trade.
            if (
                not last
                and self.arm != "static"
                and (any(has_bars.values()) or len(session_trades))
            ):
                triggered = self._learn(start, end, session_trades, has_bars=has_bars)
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
        )
        # Saved by the worker itself: a finished arm survives its parent being stopped.
        run.save(self.task.folder, self.config)
        return run

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
        key, learning = state.key, self.config.learning
        record: dict = {
            "session": session,
            "time": end.isoformat(),
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
            return
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
            judged_at=end.isoformat(),
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
        deploy = passed or self.arm == "ungated" or (self.arm == "static" and initial)
        if deploy:
            card = candidate.card(info, session, live)
            card.update(replay_arm=self.arm)
            version = self.registry.save_candidate(key, candidate.model, card, end)
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
        self.candidates.append(record)


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


def run_arm(task: ArmTask, progress_queue: object | None = None) -> ArmRun:
    """Replay one arm (the process entry point; spawn-safe: a top-level function)."""

    def progress(n: int) -> None:
        if progress_queue is not None:
            progress_queue.put((task.arm, n))

    return _ArmReplay(task).run(progress)


# --- the whole replay ----------------------------------------------------------------------


@dataclass
class ReplayResult:
    """The arms' runs, the known regimes (synthetic source) and where everything was written."""

    config: ReplayConfig
    arms: dict[str, ArmRun]
    regimes: pd.DataFrame | None  # session, symbol, regime (synthetic source only)
    out: Path
    wall_seconds: float
    workers: int
    bars: str = ""  # what the bars were (``describe_bars``), named by the report


def load_bars(config: ReplayConfig, bars: BarSource) -> dict[str, pd.DataFrame]:
    """Each model's bars from the history its first learning step needs to the range's end."""
    loaded = {}
    for key in config.models:
        needed = config.learning.history_bars(key.timeframe) + config.learning.warmup_bars
        frame = bars(key, config.start - history_span(key, needed), config.end)
        if frame.empty:
            raise ReplayError(f"{key}: the source returned no bars for the range")
        # The first learning step needs warm-up, 500 training rows, validation and the purge
        # and embargo before the range; with less, every arm would fail on it.
        learning = config.learning
        least = (
            learning.warmup_bars + 500 + learning.validation_for(key.timeframe)
            + 2 * learning.max_holding_bars
        )  # fmt: skip
        before = int((frame.index < config.start).sum())
        if before < least:
            raise ReplayError(
                f"{key}: the source has {before} bars before the range's start "
                f"{config.start:%Y-%m-%d %H:%M} UTC (first bar {frame.index[0]:%Y-%m-%d %H:%M}); "
                f"the first learning step needs at least {least} and uses up to {needed}. "
                "Start the replay later (--from), or give the source more history."
            )
        loaded[key.slug] = frame
    return loaded


def session_regimes(config: ReplayConfig, source: object) -> pd.DataFrame | None:
    """The regime of every session per symbol, when the source knows it (synthetic bars),
    from ``REGIME_LOOKBACK`` before the range so that a flip at its start is known."""
    regimes = getattr(source, "regimes", None)
    if regimes is None:
        return None
    rows = []
    for symbol in config.symbols:
        key = next(m for m in config.models if m.symbol == symbol)
        series = regimes(key, config.start - REGIME_LOOKBACK, config.end)
        by_session = series.groupby(series.index.floor(config.session_length), observed=True)
        for start, values in by_session:
            rows.append(
                {
                    "session": start.strftime(PARTITION_FORMAT),
                    "start": start,
                    "symbol": symbol,
                    "regime": str(values.iloc[0]),
                }
            )
    return pd.DataFrame(rows, columns=["session", "start", "symbol", "regime"])


def _prepare_folder(out: Path, arm: str) -> Path:
    folder = out / arm
    if folder.exists():
        if not (folder / MARKER_FILE).exists():
            raise ReplayError(
                f"{folder} exists and was not written by a replay; choose another --out"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER_FILE).write_text(json.dumps({"arm": arm}) + "\n")
    return folder


def _worker_count(config: ReplayConfig) -> int:
    cpus = os.cpu_count() or 1
    if config.workers > 0:
        return min(config.workers, len(config.arms))
    return max(1, min(cpus, len(config.arms)))


class _Progress:
    """A progress bar on stderr: tqdm when installed, else a plain line."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(total=total, unit="session", file=sys.stderr, desc="replay")

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif self.done == self.total or self.done % max(1, self.total // 100) == 0:
            print(f"\rreplay {self.done}/{self.total} sessions", end="", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def run_replay(
    config: ReplayConfig,
    bars: BarSource,
    out: Path | str,
    *,
    progress: bool = True,
    resume: bool = False,
    feature_functions: tuple[FeatureFunction, ...] = DEFAULT_FEATURES,
) -> ReplayResult:
    """Replay every arm of ``config`` over its range and write each arm's journal, registry
    and results under ``out/<arm>/``. Returns the runs; ``write_report`` turns them into the
    report. With ``resume``, an arm that already finished under the same configuration is
    read back instead of replayed (a long replay stopped half-way keeps its finished arms).

    With more than one worker each arm runs in its own spawned process. CatBoost trains on
    one thread: the arms are the parallelism, and a model file records its thread count, so
    version ids would otherwise depend on the machine.
    """
    out = Path(out)
    began = time.perf_counter()
    workers = _worker_count(config)
    config = replace(config, learning=replace(config.learning, thread_count=1))
    runs: dict[str, ArmRun] = {}
    if resume:
        runs = {a: read_arm(out / a) for a in config.arms if _completed(out / a, config)}
    loaded = load_bars(config, bars)
    regimes = session_regimes(config, bars)
    tasks = [
        ArmTask(arm, config, loaded, _prepare_folder(out, arm), feature_functions)
        for arm in config.arms
        if arm not in runs
    ]
    bar = _Progress(len(tasks) * len(config.sessions()), progress)
    try:
        from session_learning import replay_steps

        if tasks and replay_steps.configured():
            # SESSION_LEARNING_EXECUTOR names an executor: each arm is a step (Celery workers).
            runs.update(replay_steps.run_arms_as_steps(tasks, out))
            bar.update(len(tasks) * len(config.sessions()))
        elif workers == 1 or len(tasks) < 2:
            for task in tasks:
                runs[task.arm] = _ArmReplay(task).run(bar.update)
        else:
            runs.update(_run_parallel(tasks, min(workers, len(tasks)), bar))
    finally:
        bar.close()
    return ReplayResult(
        config=config,
        arms={arm: runs[arm] for arm in config.arms},
        regimes=regimes,
        out=out,
        wall_seconds=time.perf_counter() - began,
        workers=workers,
        bars=describe_bars(bars),
    )


def _run_parallel(tasks: list[ArmTask], workers: int, bar: _Progress) -> dict[str, ArmRun]:
    context = multiprocessing.get_context("spawn")
    # The costliest arms first, so the cheap static arm fills a gap at the end.
    order = {"periodic": 0, "session_learning": 1, "ungated": 2, "static": 3}
    tasks = sorted(tasks, key=lambda t: order[t.arm])
    with (
        context.Manager() as manager,
        concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool,
    ):
        queue = manager.Queue()
        futures = {pool.submit(run_arm, task, queue): task.arm for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5)
            while not queue.empty():
                bar.update(queue.get()[1])
            for future in done:
                future.result()  # re-raise a worker's error at once
        while not queue.empty():
            bar.update(queue.get()[1])
        return {futures[f]: f.result() for f in futures}


# --- the known-answer scenario -------------------------------------------------------------


FLIPS_MODEL = ModelKey("EURUSD", "15T")
FLIPS_SEARCH_FROM = pd.Timestamp("2025-01-06", tz="UTC")
FLIPS_WEEKS = 13
FLIPS_PURITY = 0.75  # share of one structure in the static model's first windows


def flips_scenario(seed: int = 7, weeks: int = FLIPS_WEEKS) -> ReplayConfig:
    """One model on synthetic bars with short windows, so that a model trained at the start
    knows only the structure it was trained in.

    The synthetic structure flips sign between trend (moves continue) and range (moves snap
    back) at times ``synthetic.regime_schedule`` knows. With the product's windows (months of
    training) a model learns both rules; here the training window (800 bars, about 8 trading
    days) is about one regime long, the validation window 400 bars, and the gates' minimum
    trades scaled to it. The range starts at the first flip (from 2025-01-06 on) whose
    preceding training and validation windows hold one structure for at least 75% of their
    sessions, so the static arm's model knows one structure and meets the other right away;
    it runs ``weeks`` weeks from there.
    """
    learning = LearningConfig(
        training_bars=800, validation_bars={"15T": 400}, warmup_bars=300, iterations=60
    )
    start = first_clean_flip(FLIPS_MODEL, learning, seed, FLIPS_SEARCH_FROM)
    return ReplayConfig(
        models=(FLIPS_MODEL,),
        start=start,
        end=start + pd.Timedelta(weeks=weeks),
        seed=seed,
        learning=learning,
        gates=GateThresholds(min_trades={"15T": 20}),
        scenario="flips",
    )


def first_clean_flip(
    key: ModelKey, learning: LearningConfig, seed: int, after: pd.Timestamp
) -> pd.Timestamp:
    """The first session at or after ``after`` where the synthetic structure flips (trend to
    range or back) and the sessions a model trained there learns from (training, purge,
    validation, embargo) hold the old structure for at least ``FLIPS_PURITY`` of them."""
    session = pd.Timedelta(hours=4)
    bars = (
        learning.training_bars
        + learning.validation_for(key.timeframe)
        + 2 * learning.max_holding_bars
    )
    lookback = -(-bars * key.bar // session)  # sessions with bars
    regimes = SyntheticBars(seed).regimes(
        ModelKey(key.symbol, "4H"), after - pd.Timedelta(days=60), after + pd.Timedelta(days=365)
    )
    codes = regimes.astype(str).to_numpy()
    for i in range(lookback, len(codes)):
        if regimes.index[i] < after or codes[i] == "burst" or codes[i] == codes[i - 1]:
            continue
        before = codes[i - lookback : i]
        other = "range" if codes[i] == "trend" else "trend"
        if (before == other).mean() >= FLIPS_PURITY:
            return regimes.index[i]
    raise ReplayError(f"no clean flip of {key.symbol} within a year after {after:%Y-%m-%d}")


# --- command line ----------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """The ``ReplayConfig`` of parsed ``replay`` arguments (a scenario gives the defaults)."""
    base = flips_scenario(args.seed) if args.scenario == "flips" else None
    if base is not None and not (args.symbols or args.timeframes):
        models = base.models
    else:
        symbols = _csv(args.symbols or DEFAULT_SYMBOLS)
        timeframes = _csv(args.timeframes or DEFAULT_TIMEFRAMES)
        models = tuple(ModelKey(s.upper(), t.upper()) for s in symbols for t in timeframes)
    learning = base.learning if base is not None else LearningConfig()
    if args.iterations is not None:
        learning = replace(learning, iterations=args.iterations)
    if args.training_bars is not None:
        learning = replace(learning, training_bars=args.training_bars)
    if args.barrier_refit is not None:
        learning = replace(learning, barrier_refit=args.barrier_refit)
    rules = LearningRules.preset(args.preset)
    return ReplayConfig(
        models=models,
        start=args.from_ or (base.start if base is not None else DEFAULT_FROM),
        end=args.to or (base.end if base is not None else DEFAULT_TO),
        arms=tuple(_csv(args.arms)),
        seed=args.seed,
        learning=learning,
        gates=base.gates if base is not None else GateThresholds(),
        rules=rules,
        workers=args.workers,
        periodic_every=args.periodic_every,
        scenario=args.scenario,
        source=args.source,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay the learning loop over a historical range: static vs periodic vs session learning
    vs session learning without gates; writes a Markdown report and equity curves."""
    from session_learning.reports.replay_report import write_report

    config = config_from_args(args)
    source = bar_source(config.source, config.seed)
    sessions = len(config.sessions())
    print(
        f"replaying {', '.join(m.slug for m in config.models)}: {sessions} sessions "
        f"{config.start:%Y-%m-%d %H:%M} .. {config.end:%Y-%m-%d %H:%M} UTC, "
        f"arms {', '.join(config.arms)} ({config.source} bars, seed {config.seed})",
        file=sys.stderr,
    )
    result = run_replay(config, source, args.out, progress=not args.no_progress, resume=args.resume)
    paths = write_report(result, Path(args.out))
    summary = json.loads(paths["summary"].read_text())
    for arm, stats in summary["arms"].items():
        low, high = stats["expectancy_ci"]
        print(
            f"{arm:<17} {stats['trades']:>5} trades  expectancy {stats['expectancy_r']:+.3f}R "
            f"[{low:+.3f}, {high:+.3f}]  deploys {stats['deploys']}"
        )
    print(f"runtime {result.wall_seconds:.0f}s with {result.workers} worker(s)")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def add_replay_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``replay`` subcommand on a ``session-learning`` parser."""
    parser = subparsers.add_parser(
        "replay", help=cmd_replay.__doc__, description=cmd_replay.__doc__
    )
    parser.add_argument(
        "--from", dest="from_", default=None, help=f"range start, UTC (default {DEFAULT_FROM})"
    )
    parser.add_argument("--to", default=None, help=f"range end, UTC (default {DEFAULT_TO})")
    parser.add_argument(
        "--symbols", default=None, help=f"comma-separated symbols (default {DEFAULT_SYMBOLS})"
    )
    parser.add_argument(
        "--timeframes",
        default=None,
        help=f"comma-separated timeframes, crossed with the symbols (default {DEFAULT_TIMEFRAMES})",
    )
    parser.add_argument(
        "--arms", default=",".join(ARMS), help=f"comma-separated arms (default {','.join(ARMS)})"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic bars")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--source",
        default="synthetic",
        help="where bars come from: synthetic (default), files:DIR (one <SYMBOL>_<TIMEFRAME>.csv "
        "or .parquet per model) or polygon (key in POLYGON_API_KEY); validated as in the assets",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help="a known-answer scenario: 'flips' replays one model with short windows across "
        "the synthetic regime flips",
    )
    parser.add_argument(
        "--preset",
        choices=tuple(TRIGGER_PRESETS),
        default="balanced",
        help="learning trigger preset (default balanced: 3 trades and 1 loser)",
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="CatBoost iterations (default 250)"
    )
    parser.add_argument(
        "--training-bars", type=int, default=None, help="rolling training rows (default 6000)"
    )
    parser.add_argument(
        "--barrier-refit",
        choices=BARRIER_REFITS,
        default=None,
        help="TP/SL refit of struggling models: judged against the gates (default), fitted "
        "(median excursions as they come) or off",
    )
    parser.add_argument(
        "--periodic-every",
        type=int,
        default=1,
        help="the periodic arm retrains every N sessions with bars (default 1; 30 is weekly)",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="processes (default: one per arm, at most CPUs)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep arms a stopped replay already finished (same settings) instead of redoing them",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=cmd_replay)
    return parser
