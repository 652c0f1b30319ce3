"""Which Dagster executor runs a run's steps: in the run's process, one process per step, or
Celery workers behind a broker (Redis).

Chosen when the code location loads, from ``SESSION_LEARNING_EXECUTOR``:

| value | executor | steps run |
|---|---|---|
| (unset) | Dagster's default (multiprocess for launched runs) | one process each, on the run's machine |
| ``multiprocess`` | ``dg.multiprocess_executor`` | one process each, on the run's machine |
| ``in_process`` | ``dg.in_process_executor`` | one after another in the run's process |
| ``celery`` | ``dagster_celery.celery_executor`` | as Celery tasks, on ``dagster-celery`` workers |
| ``k8s`` | ``dagster_k8s.k8s_job_executor`` | a Kubernetes job (pod) each; configured by the run launcher |

For Celery, the executor's configuration is read from the same YAML file the workers are
started with (``dagster-celery worker start -y <file>``), named by ``SESSION_LEARNING_CELERY_CONFIG``
(default: ``celery.yaml`` at the repository root), so runs and workers always agree on the
broker. ``dagster-celery`` is the optional ``celery`` extra (``pip install -e .[celery]``),
``dagster-k8s`` the ``k8s`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import yaml

EXECUTOR_VAR = "SESSION_LEARNING_EXECUTOR"
CELERY_CONFIG_VAR = "SESSION_LEARNING_CELERY_CONFIG"
DEFAULT_CELERY_CONFIG = Path(__file__).resolve().parents[1] / "celery.yaml"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")


class ExecutorConfigError(ValueError):
    """The executor named in the environment cannot be built."""


def celery_config(path: Path | str) -> dict:
    """The ``execution: config:`` block of a ``dagster-celery`` worker YAML file."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ExecutorConfigError(
            f"{CELERY_CONFIG_VAR}: {path} does not exist; point it at the YAML file the "
            "Celery workers are started with (dagster-celery worker start -y <file>)"
        ) from exc
    except yaml.YAMLError as exc:
        raise ExecutorConfigError(f"{path} is not valid YAML: {exc}") from exc
    config = document.get("execution", {}).get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or not config.get("broker"):
        raise ExecutorConfigError(
            f"{path}: expected the executor's settings under execution: config: with at least "
            "a broker (e.g. broker: redis://127.0.0.1:6390/0), as dagster-celery reads them"
        )
    return config


def build_executor(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor named by ``SESSION_LEARNING_EXECUTOR`` in ``env`` (default: the process
    environment); None when it is unset (Dagster's default executor)."""
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_VAR) or "").strip().lower()
    if not name:
        return None
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise ExecutorConfigError(
                f"{EXECUTOR_VAR}=celery needs dagster-celery: pip install -e '.[celery]'"
            ) from exc
        config = celery_config(env.get(CELERY_CONFIG_VAR) or DEFAULT_CELERY_CONFIG)
        return celery_executor.configured(config, name="celery")
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ExecutorConfigError(
                f"{EXECUTOR_VAR}=k8s needs dagster-k8s: pip install -e '.[k8s]'"
            ) from exc
        # Image, namespace, env and volumes come from the K8sRunLauncher in dagster.yaml.
        return k8s_job_executor
    raise ExecutorConfigError(f"{EXECUTOR_VAR}={name!r}: use one of {', '.join(EXECUTORS)}")
