"""The replay's configuration: arms, scenarios' names, defaults and ``ReplayConfig``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import pandas as pd

from session_learning.domain.analysis import (
    LearningRules,
    RetrainPlan,
)
from session_learning.domain.arena import ArenaSettings
from session_learning.domain.backtest import CostModel
from session_learning.domain.drift import (
    DEFAULT_BLOCK_TRADES,
    DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
)
from session_learning.domain.evidence import EvidenceSettings
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey, timeframe_delta
from session_learning.domain.sessions import check_session_hours
from session_learning.domain.training import (
    DEFAULT_COSTS,
    LearningConfig,
)

ARMS = ("static", "periodic", "session_learning", "ungated")
ARM_DESCRIPTIONS = {
    "static": "trained once at the start, never retrained",
    "periodic": "retrained on a fixed cadence with a plain plan, deployed when the gates pass",
    "session_learning": "the arena: a new candidate every session enters as a challenger "
    "(plan from the session analysis); promoted on forward evidence, paused on a change alarm",
    "ungated": "plan from the session analysis, every candidate deployed",
}
GATED_ARMS = frozenset({"periodic", "session_learning"})
SCENARIOS = ("flips", "null", "clones")

DEFAULT_FROM = "2025-01-06"
DEFAULT_TO = "2025-04-07"
DEFAULT_SYMBOLS = "EURUSD,GBPUSD,XAUUSD"
DEFAULT_TIMEFRAMES = "30T"
DEFAULT_OUT = "var/replay"
MARKER_FILE = "replay-arm.json"  # marks an arm folder the replay may delete on a re-run
ARM_FILE = "arm.json"  # written when an arm has finished
ARENA_FILE = "arena.csv"  # the arena arm's log


class ReplayError(ValueError):
    """The replay cannot run as asked (range, models, output folder, data)."""


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
    arena: ArenaSettings = field(default_factory=ArenaSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    false_alarms_per_100_sessions: float = DEFAULT_FALSE_ALARMS_PER_100_SESSIONS
    challenger_every: int = 1  # sessions with bars between the arena's new challengers
    detector_block_trades: int = DEFAULT_BLOCK_TRADES  # runs of trades resampled by a detector

    def __post_init__(self) -> None:
        if not self.models:
            raise ReplayError("no models to replay")
        if len(set(self.models)) != len(self.models):
            raise ReplayError("the model list has duplicates")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ReplayError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
        if self.detector_block_trades < 1:
            raise ReplayError(
                f"detector_block_trades must be >= 1, got {self.detector_block_trades}"
            )
        if self.challenger_every < 1:
            raise ReplayError(f"challenger_every must be >= 1, got {self.challenger_every}")
        if self.periodic_every < 1:
            raise ReplayError(f"periodic_every must be >= 1, got {self.periodic_every}")
        try:
            check_session_hours(self.session_hours)
        except ValueError as error:
            raise ReplayError(str(error)) from None
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
            "arena": asdict(self.arena),
            "evidence": asdict(self.evidence),
            "false_alarms_per_100_sessions": self.false_alarms_per_100_sessions,
            "challenger_every": self.challenger_every,
            "detector_block_trades": self.detector_block_trades,
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
            arena=ArenaSettings(**data.get("arena", {})),
            evidence=EvidenceSettings(**data.get("evidence", {})),
            false_alarms_per_100_sessions=data.get(
                "false_alarms_per_100_sessions", DEFAULT_FALSE_ALARMS_PER_100_SESSIONS
            ),
            challenger_every=data.get("challenger_every", 1),
            detector_block_trades=data.get("detector_block_trades", 1),
            scenario=data["scenario"],
            source=data["source"],
        )

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({m.symbol for m in self.models}))


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
