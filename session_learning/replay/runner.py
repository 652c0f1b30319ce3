"""The whole replay: every arm over the range, in parallel processes or as executor steps."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from session_learning.domain.features import DEFAULT_FEATURES, FeatureFunction
from session_learning.replay.arm_run import ArmRun, ArmTask, _completed, read_arm
from session_learning.replay.arms import arm_replay, run_arm
from session_learning.replay.bars import BarSource, describe_bars, load_bars, session_regimes
from session_learning.replay.config import MARKER_FILE, ReplayConfig, ReplayError

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
                runs[task.arm] = arm_replay(task).run(bar.update)
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
