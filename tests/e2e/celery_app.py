"""Code location of the Celery test: the real definitions with the fast, permissive learning
settings of the browser test, run by the executor SESSION_LEARNING_EXECUTOR names.

The Celery workers load it too (``build_reconstructable_job`` points them here), with the same
SESSION_LEARNING_* environment, so the run and its workers see the same models, home, journal
and learning settings.

``SESSION_LEARNING_TEST_HOLD_DIR`` lets the test stop a candidate's step in the middle: while
``<dir>/hold-<SYMBOL>`` exists, the step waits just before training, after writing
``<dir>/entered-<SYMBOL>`` with the process id that runs it (so the test can kill that worker
process at a known point). Without the variable nothing waits.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import dagster as dg

from session_learning.definitions import build_definitions
from session_learning.jobs import LEARNING_JOB
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.settings import Settings
from tests.assets.conftest import FAST_LEARNING, PERMISSIVE

HOLD_DIR_VAR = "SESSION_LEARNING_TEST_HOLD_DIR"
HOLD_TIMEOUT_S = 300


class HeldLearningSettings(LearningSettingsResource):
    """The learning settings, with a wait point where a candidate's step asks for its costs
    (right before it trains)."""

    hold_dir: str = ""

    def costs(self, *args, **kwargs):
        if self.hold_dir:
            symbol = str(args[0] if args else next(iter(kwargs.values())))
            folder = Path(self.hold_dir)
            hold = folder / f"hold-{symbol}"
            if hold.exists():
                (folder / f"entered-{symbol}").write_text(f"{os.getpid()} {socket.gethostname()}")
                deadline = time.monotonic() + HOLD_TIMEOUT_S
                while hold.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        return super().costs(*args, **kwargs)


def build_learning_settings(hold_dir: str) -> HeldLearningSettings:
    """Fast learning, permissive absolute gates (for 15- and 30-minute models)."""
    permissive = {**PERMISSIVE, "min_trades": {"30T": 1, "15T": 1}}
    return HeldLearningSettings(**{**FAST_LEARNING, **permissive}, hold_dir=hold_dir)


def build_celery_test_definitions() -> dg.Definitions:
    learning = build_learning_settings(os.environ.get(HOLD_DIR_VAR, ""))
    return build_definitions(
        Settings.from_env(), resource_overrides={"learning_settings": learning}
    )


def learning_job() -> dg.JobDefinition:
    """The learning job, rebuilt the same way in the run's process and in every worker."""
    return build_celery_test_definitions().resolve_job_def(LEARNING_JOB)


@dg.definitions
def defs() -> dg.Definitions:
    return build_celery_test_definitions()


def run(partition: str, selection: list[str] | None = None) -> tuple[str, bool]:
    """Run the learning job for ``partition`` (only the assets in ``selection`` when given) on
    the instance at DAGSTER_HOME with the configured executor; returns (run id, success)."""
    job = dg.build_reconstructable_job("tests.e2e.celery_app", "learning_job")
    keys = [dg.AssetKey.from_user_string(k) for k in selection] if selection else None
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            job,
            instance=instance,
            tags={"dagster/partition": partition},
            raise_on_error=False,
            asset_selection=keys,
        )
    return result.run_id, result.success


if __name__ == "__main__":
    # python -m tests.e2e.celery_app <partition> [asset key ...]: one run in a process of its
    # own; prints {"run_id": ..., "success": ...} as the last line.
    import faulthandler
    import json
    import sys

    faulthandler.dump_traceback_later(120, repeat=True)  # where a stuck run waits
    run_id, success = run(sys.argv[1], sys.argv[2:] or None)
    print(json.dumps({"run_id": run_id, "success": success}))
