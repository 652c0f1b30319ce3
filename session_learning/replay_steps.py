"""The replay's arms as steps of a Dagster job, run by the executor the deployment configured:
on Celery workers (``SESSION_LEARNING_EXECUTOR=celery``), or one process per step
(``multiprocess``); with no executor configured the replay keeps its own process pool.

One step per arm: within an arm every model shares each session's analysis (the trigger and the
session-wide problems look at all models), so an arm is the unit that runs alone; its models are
replayed together inside the step. The replay's process writes what the steps need into the
output folder (the configuration as ``ReplayConfig.describe`` gives it, and each model's bars as
Parquet); a step rebuilds its ``ArmTask`` from them, replays the arm and saves it where the
process-pool replay saves it (``ArmRun.save``), and the replay reads the finished arms back
(``read_arm``). The results are the same either way (tested): the arm, its settings and its bars
decide every number, not where it ran.

Workers must see the output folder and the Dagster instance (the instance at DAGSTER_HOME): one
machine, or a shared volume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd

from session_learning.domain.features import DEFAULT_FEATURES
from session_learning.executors import build_executor
from session_learning.replay import (
    ARM_FILE,
    ArmRun,
    ArmTask,
    ReplayConfig,
    ReplayError,
    read_arm,
    run_arm,
)

INPUTS_DIR = "_steps"
CONFIG_FILE = "config.json"
JOB_NAME = "session_learning_replay"
ARM_TAG = "session_learning/replay_arm"


def configured(env: dict[str, str] | None = None) -> bool:
    """Whether the deployment names an executor (SESSION_LEARNING_EXECUTOR) for the replay."""
    return build_executor(env) is not None


def write_inputs(tasks: Sequence[ArmTask], out: Path) -> Path:
    """The configuration and every model's bars, where each arm's step reads them."""
    folder = out / INPUTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    config = tasks[0].config
    (folder / CONFIG_FILE).write_text(json.dumps(config.describe(), indent=1) + "\n")
    for slug, bars in tasks[0].bars.items():
        bars.to_parquet(folder / f"{slug}.parquet")
    return folder


def read_task(out: Path, arm: str) -> ArmTask:
    """The ``ArmTask`` of ``arm`` from the inputs ``write_inputs`` left in ``out``."""
    folder = out / INPUTS_DIR
    config = ReplayConfig.from_description(json.loads((folder / CONFIG_FILE).read_text()))
    # One CatBoost thread, as in the process pool: a model file records its thread count.
    config = replace(config, learning=replace(config.learning, thread_count=1))
    bars = {m.slug: pd.read_parquet(folder / f"{m.slug}.parquet") for m in config.models}
    return ArmTask(arm, config, bars, out / arm)


def _arm_op(out: str, arm: str) -> dg.OpDefinition:
    @dg.op(name=f"replay_{arm}", tags={ARM_TAG: arm})
    def replay_arm(context) -> None:
        """Replay one arm over the range and save it beside its journal and registry."""
        run = run_arm(read_task(Path(out), arm))
        context.log.info(
            f"{arm}: {len(run.trades)} trades, {int(run.candidates['deployed'].sum())} deploys"
        )

    return replay_arm


def replay_job(out: str, arms: str) -> dg.JobDefinition:
    """The job of one replay: a step per arm (``arms`` comma-separated), no dependencies.
    Rebuilt from these arguments wherever a step runs (``build_reconstructable_job``)."""
    ops = [_arm_op(out, arm) for arm in arms.split(",")]

    @dg.job(
        name=JOB_NAME,
        executor_def=build_executor() or dg.multiprocess_executor,
        tags={"session_learning/kind": "replay"},
    )
    def replay():
        for op in ops:
            op()

    return replay


def run_arms_as_steps(tasks: Sequence[ArmTask], out: Path) -> dict[str, ArmRun]:
    """Replay ``tasks`` as steps of one Dagster run on the instance at DAGSTER_HOME (a temporary
    one when unset and the executor does not need a shared one); the finished arms."""
    if not tasks:
        return {}
    if any(t.feature_functions != DEFAULT_FEATURES for t in tasks):
        raise ReplayError(
            "a replay with feature functions of its own runs in the process pool only; "
            "unset SESSION_LEARNING_EXECUTOR"
        )
    out = Path(out).resolve()
    write_inputs(tasks, out)
    job = dg.build_reconstructable_job(
        "session_learning.replay_steps",
        "replay_job",
        reconstructable_args=(str(out), ",".join(t.arm for t in tasks)),
    )
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    elif (os.environ.get("SESSION_LEARNING_EXECUTOR") or "").strip().lower() == "celery":
        raise ReplayError(
            "SESSION_LEARNING_EXECUTOR=celery: set DAGSTER_HOME to the instance the Celery "
            "workers use (they record the arms' steps there)"
        )
    else:
        instance = dg.DagsterInstance.local_temp()
    with instance:
        result = dg.execute_job(job, instance=instance, raise_on_error=False)
    failed = [t.arm for t in tasks if not (t.folder / ARM_FILE).exists()]
    if not result.success or failed:
        raise ReplayError(
            f"the replay run {result.run_id} failed (arms without a result: "
            f"{', '.join(failed) or 'none'}); its steps' errors are in the run's event log"
        )
    return {t.arm: read_arm(t.folder) for t in tasks}
