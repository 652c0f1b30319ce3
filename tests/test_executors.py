"""SESSION_LEARNING_EXECUTOR picks the executor of every job; a bad choice is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_learning.definitions import build_definitions
from session_learning.executors import (
    CELERY_CONFIG_VAR,
    DEFAULT_CELERY_CONFIG,
    EXECUTOR_VAR,
    ExecutorConfigError,
    build_executor,
    celery_config,
)
from session_learning.jobs import LEARNING_JOB
from session_learning.settings import Settings


@pytest.mark.parametrize(
    ("name", "executor"),
    [
        ("multiprocess", "multiprocess"),
        ("in_process", "in_process"),
        ("celery", "celery"),
        ("k8s", "k8s"),
        (" Celery ", "celery"),
    ],
)
def test_each_name_gives_its_executor(name, executor):
    assert build_executor({EXECUTOR_VAR: name}).name == executor


def test_unset_keeps_dagsters_default(tmp_path, monkeypatch):
    monkeypatch.delenv(EXECUTOR_VAR, raising=False)
    assert build_executor({}) is None
    defs = build_definitions(Settings(home=tmp_path))
    assert defs.resolve_job_def(LEARNING_JOB).executor_def.name == "multi_or_in_process_executor"


def test_every_job_runs_on_the_named_executor(tmp_path, monkeypatch):
    monkeypatch.setenv(EXECUTOR_VAR, "celery")
    defs = build_definitions(Settings(home=tmp_path))
    for job in ("session_learning_job", "signal_monitor_job", "learning_performance_job"):
        assert defs.resolve_job_def(job).executor_def.name == "celery"


def test_an_unknown_executor_is_named_with_the_choices():
    with pytest.raises(ExecutorConfigError, match=r"'dask'.*multiprocess, in_process, celery, k8s"):
        build_executor({EXECUTOR_VAR: "dask"})


def test_the_repo_celery_config_names_redis_on_6390():
    config = celery_config(DEFAULT_CELERY_CONFIG)
    assert config["broker"] == "redis://127.0.0.1:6390/0"
    assert config["backend"].startswith("redis://127.0.0.1:6390/")


def test_a_missing_or_brokerless_celery_config_is_one_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ExecutorConfigError, match="does not exist"):
        build_executor({EXECUTOR_VAR: "celery", CELERY_CONFIG_VAR: str(missing)})
    brokerless = tmp_path / "celery.yaml"
    brokerless.write_text("execution:\n  config:\n    backend: redis://127.0.0.1:6390/1\n")
    with pytest.raises(ExecutorConfigError, match="at least a broker"):
        build_executor({EXECUTOR_VAR: "celery", CELERY_CONFIG_VAR: str(brokerless)})
    broken = tmp_path / "broken.yaml"
    broken.write_text("execution: [\n")
    with pytest.raises(ExecutorConfigError, match="not valid YAML"):
        build_executor({EXECUTOR_VAR: "celery", CELERY_CONFIG_VAR: str(broken)})
