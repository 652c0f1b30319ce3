"""What one arm did and where it is kept: ``ArmTask`` (everything an arm's process needs),
``ArmRun`` (its trades, candidates and the cost of each session), the files ``ArmRun.save``
writes beside the arm's journal and registry, their columns, and ``read_arm``, which reads a
finished arm back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction
from session_learning.domain.keys import TRADE_COLUMNS
from session_learning.replay.config import ARENA_FILE, ARM_FILE, ReplayConfig

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
    arena: pd.DataFrame | None = None  # the arena arm's log (``ARENA_LOG_COLUMNS``)
    promotions: int = 0  # deployments in the arm's registry (promotions and rollbacks)
    unjudged_promotions: int = 0  # of those, versions without a passing judgement record

    def save(self, folder: Path, config: ReplayConfig) -> None:
        """Write the run beside the arm's journal and registry; ``arm.json`` goes last and
        marks the arm complete (``read_arm``, ``run_replay(resume=True)``)."""
        self.trades.sort_values(["exit_time", "trade_id"], kind="stable").to_csv(
            folder / "trades.csv", index=False
        )
        self.candidates.to_csv(folder / "candidates.csv", index=False)
        self.sessions.to_csv(folder / "sessions.csv", index=False)
        if self.arena is not None:
            self.arena.to_csv(folder / ARENA_FILE, index=False)
        done = {
            "arm": self.arm,
            "config": config.describe(),
            "open_at_end": self.open_at_end,
            "quarantined": self.quarantined,
            "initial_cpu_seconds": self.initial_cpu_seconds,
            "promotions": self.promotions,
            "unjudged_promotions": self.unjudged_promotions,
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
        pd.read_csv(
            folder / ARENA_FILE,
            keep_default_na=False,
            na_values={
                c: [""] for c in ("statistic", "threshold", "e_vs_champion", "e_vs_flat", "marks_r")
            },
        )
        if (folder / ARENA_FILE).exists()
        else None,
        done.get("promotions", 0),
        done.get("unjudged_promotions", 0),
    )


def _completed(folder: Path, config: ReplayConfig) -> bool:
    """Whether ``folder`` holds a finished run of this arm under the same configuration."""
    try:
        done = json.loads((folder / ARM_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return done.get("config") == json.loads(json.dumps(config.describe()))
