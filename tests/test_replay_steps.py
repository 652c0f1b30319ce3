"""The replay's arms as steps of a Dagster run (``replay_steps``): the same reports, trades and
deployments as the replay's own process pool. Here the steps run on the multiprocess executor
(one process per arm, a temporary instance); tests/e2e/test_celery.py runs them on Celery
workers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from session_learning.executors import EXECUTOR_VAR
from session_learning.replay import ReplayError, SyntheticBars, run_replay
from session_learning.replay_steps import INPUTS_DIR, read_task
from session_learning.reports.replay_report import write_report
from session_learning.resources.registry import ModelRegistry
from tests.domain.test_replay import SMALL

pytestmark = pytest.mark.slow
# Two arms are enough to put a step on each worker; the loop itself is tested elsewhere.
TINY = replace(SMALL, arms=("static", "session_learning"))


def compare_replays(first, second) -> None:
    """Same report files; every arm saved the same trades and candidates, and its registry
    the same deployments."""
    first_paths = write_report(first, first.out)
    second_paths = write_report(second, second.out)
    for name in ("report", "summary", "equity"):
        assert first_paths[name].read_bytes() == second_paths[name].read_bytes(), name
    for arm in first.config.arms:
        for name in ("trades.csv", "candidates.csv"):
            assert (first.out / arm / name).read_bytes() == (second.out / arm / name).read_bytes()
        assert len(second.arms[arm].trades) == len(first.arms[arm].trades)
        for key in first.config.models:
            history = [
                [
                    (e["version"], e["session"])
                    for e in ModelRegistry(r.out / arm / "models").history(key)
                ]
                for r in (first, second)
            ]
            assert history[0] == history[1], (arm, key, history)


def test_arms_as_steps_give_the_process_pools_results(tmp_path, monkeypatch):
    monkeypatch.delenv(EXECUTOR_VAR, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    pool = run_replay(replace(TINY, workers=2), SyntheticBars(7), tmp_path / "pool", progress=False)

    monkeypatch.setenv(EXECUTOR_VAR, "multiprocess")
    steps = run_replay(TINY, SyntheticBars(7), tmp_path / "steps", progress=False)
    compare_replays(pool, steps)
    # Every arm ran from the inputs written for the steps.
    described = json.loads((tmp_path / "steps" / INPUTS_DIR / "config.json").read_text())
    assert described["arms"] == list(TINY.arms)
    task = read_task(tmp_path / "steps", "static")
    assert task.config.learning.thread_count == 1
    assert set(task.bars) == {m.slug for m in TINY.models}


def test_celery_without_an_instance_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(EXECUTOR_VAR, "celery")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ReplayError, match="DAGSTER_HOME"):
        run_replay(TINY, SyntheticBars(7), tmp_path, progress=False)
