"""Run the real asset graph in-process on temporary folders, SQLite and synthetic bars."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from session_learning.definitions import build_definitions
from session_learning.domain.keys import ModelKey
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.settings import Settings
from tests.builders import frame, many

EURUSD = ModelKey("EURUSD", "30T")
# Small windows and few iterations keep each candidate to about a second.
FAST_LEARNING = dict(
    training_bars=1500,
    validation_bars={"30T": 800, "15T": 800},
    iterations=80,
    learning_rate=0.3,
    min_trades={"30T": 20, "15T": 20},
)


class Pipeline:
    """One code location in a temporary home, with an ephemeral Dagster instance."""

    def __init__(self, home: Path, models: tuple[ModelKey, ...], **learning: object) -> None:
        self.settings = Settings(home=home, models=models)
        self.instance = dg.DagsterInstance.ephemeral()
        self.configure(**learning)

    def configure(self, **learning: object) -> None:
        self.learning = LearningSettingsResource(**{**FAST_LEARNING, **learning})
        self.defs = build_definitions(
            self.settings, resource_overrides={"learning_settings": self.learning}
        )

    @property
    def journal(self):
        return self.defs.resources["journal"].journal()

    @property
    def registry(self):
        return self.defs.resources["registry"].registry()

    def run(
        self,
        partition_key: str,
        run_config: dict | None = None,
        assets: list[str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Run the learning job for one partition (only ``assets``, by key, when given)."""
        job = self.defs.resolve_job_def("session_learning_job")
        return job.execute_in_process(
            partition_key=partition_key,
            instance=self.instance,
            raise_on_error=False,
            run_config=run_config,
            asset_selection=[dg.AssetKey.from_user_string(a) for a in assets] if assets else None,
        )

    def monitor(self, now: str, **config: object) -> dg.ExecuteInProcessResult:
        """One tick of the signal monitor as of ``now``."""
        op_config = {"config": {"now": now, **config}}
        job = self.defs.resolve_job_def("signal_monitor_job")
        return job.execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            run_config={"ops": {"resolved_signals": op_config, "live_signals": op_config}},
        )


@pytest.fixture
def pipeline(tmp_path) -> Callable[..., Pipeline]:
    def make(models: tuple[ModelKey, ...] = (EURUSD,), **learning: object) -> Pipeline:
        return Pipeline(tmp_path / "home", models, **learning)

    return make


def window(partition_key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(datetime.strptime(partition_key, "%Y-%m-%d-%H:%M"), tz="UTC")
    return start, start + pd.Timedelta(hours=4)


S1, S2, S3 = "2025-03-04-08:00", "2025-03-04-12:00", "2025-03-04-16:00"
PERMISSIVE = dict(
    min_profit_factor=0.0, max_drawdown_pct=100.0, min_win_rate=0.0, min_trades={"30T": 1}
)


def losers_in(session_hour: int) -> list[dict]:
    """Three losers and a winner of EURUSD 30T entered half an hour into a session."""
    entry = f"2025-03-04T{session_hour:02d}:30:00+00:00"
    exit_ = f"2025-03-04T{session_hour + 1:02d}:30:00+00:00"
    return many(1, 3, entry_time=entry, exit_time=exit_, confidence=0.7)


@pytest.fixture
def deployed(pipeline):
    """A pipeline whose first session deployed a model (no production yet: absolute gates)."""
    p = pipeline(**PERMISSIVE)
    p.journal.add_trades(frame(losers_in(8) + losers_in(12)))
    result = p.run(S1)
    assert result.success
    return p, result
