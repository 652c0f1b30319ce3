"""Fixtures of the fault tests: a deployed home to copy, subprocesses to kill, and control over
the test PostgreSQL cluster (stop it for real, always start it again)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import make_url

from session_learning.definitions import build_definitions
from session_learning.resources.journal import TradeJournal
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.settings import Settings
from tests.assets.conftest import EURUSD, FAST_LEARNING, PERMISSIVE, S1, Pipeline, losers_in
from tests.builders import frame
from tests.conftest import _in_ci

REPO = Path(__file__).resolve().parents[2]


# --- a home whose first session deployed a model -------------------------------------------


def seed_journal(p: Pipeline) -> None:
    """Losers and a winner in each of S1, S2 and S3, so that every one of them learns."""
    p.journal.add_trades(frame(losers_in(8) + losers_in(12) + losers_in(16)))


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory) -> Path:
    """A home (SQLite journal, registry, stored values) after S1 deployed a model; copied by
    each test instead of training again."""
    home = tmp_path_factory.mktemp("deployed") / "home"
    p = Pipeline(home, (EURUSD,), **PERMISSIVE)
    seed_journal(p)
    assert p.run(S1).success
    assert p.registry.production_version(EURUSD) is not None
    return home


@pytest.fixture
def deployed_home(deployed_template: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(deployed_template, home)
    return home


class FaultPipeline(Pipeline):
    """``Pipeline`` for EURUSD 30T with PERMISSIVE gates by default, resources to swap in (a
    market-data source that fails, ...) and optionally the journal on ``journal_url``, which
    the definitions read from SESSION_LEARNING_JOURNAL_URL (set it, e.g. with monkeypatch)."""

    def __init__(
        self,
        home: Path,
        *,
        journal_url: str | None = None,
        resources: dict[str, object] | None = None,
        **learning: object,
    ) -> None:
        self.settings = Settings(
            home=home, models=(EURUSD,), journal_url=journal_url, market_data="synthetic"
        )
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = dict(resources or {})
        self.configure(**learning)

    def configure(self, **learning: object) -> None:
        self.learning = LearningSettingsResource(**{**FAST_LEARNING, **PERMISSIVE, **learning})
        self.defs = build_definitions(
            self.settings, resource_overrides={"learning_settings": self.learning, **self.resources}
        )

    @property
    def journal(self) -> TradeJournal:
        # The resource holds an EnvVar, resolved only inside a run.
        return TradeJournal(self.settings.journal_url or self.settings.default_journal_url)


def pipeline_at(home: Path, **kwargs: object) -> FaultPipeline:
    """A fresh code location and Dagster instance on ``home``."""
    return FaultPipeline(home, **kwargs)


# --- snapshots -----------------------------------------------------------------------------


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (lock files aside: opening them is harmless;
    the arena's state aside: it folds each session whatever the training step does)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock" and p.name != "arena.json" and p.parent.name != "arena"
    }


def failures(result) -> dict[str, str]:
    """Step key -> the error text of every failed step of a run."""
    return {
        e.step_key: e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    }


def succeeded(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}


# --- subprocesses --------------------------------------------------------------------------


def spawn(code: str, **env: str) -> subprocess.Popen:
    """``python -c code`` from the repository root (so ``tests`` imports), output captured."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Wait until ``path`` exists; fail with the child's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before {path}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout:g}s")
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL: no finally blocks, no atexit, no flush; the kernel drops locks and files."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


# --- the test PostgreSQL, stopped and started for real --------------------------------------


class PostgresCluster:
    """The Debian cluster behind the test URL, driven with pg_ctlcluster (needs root)."""

    def __init__(self, version: str, name: str, port: int, url: str = "") -> None:
        self.version, self.name, self.port, self.url = version, name, port, url

    @property
    def password(self) -> str:
        """The password in ``url`` (what must never show up in errors, logs or metadata)."""
        return make_url(self.url).password or ""

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def online(self) -> bool:
        out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
        return any(
            line.split()[:2] == [self.version, self.name] and line.split()[3] == "online"
            for line in out.splitlines()
        )

    def stop(self) -> None:
        # fast: roll back open transactions and drop every connection, like a crash for clients
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        if not self.online():
            self._ctl("start")
        deadline = time.monotonic() + 60
        while subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL {self.version}/{self.name} did not come back")
            time.sleep(0.2)


def _find_cluster(url: str) -> PostgresCluster | str:
    """The cluster serving ``url``, or why it cannot be controlled from here."""
    if os.geteuid() != 0:
        return "stopping PostgreSQL needs root (CI runs as root)"
    if not (shutil.which("pg_ctlcluster") and shutil.which("pg_lsclusters")):
        return "pg_ctlcluster not found (Debian's postgresql-common)"
    port = make_url(url).port or 5432
    name = os.environ.get("SESSION_LEARNING_PG_CLUSTER", "sltest")
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        version, cluster, cluster_port, *_ = line.split()
        if cluster == name and int(cluster_port) == port:
            return PostgresCluster(version, cluster, port, url)
    return f"no cluster {name!r} on port {port} (the URL is not scripts/postgres' cluster)"


@pytest.fixture
def pg_cluster(clean_postgres_url: str) -> Iterator[PostgresCluster]:
    """The test cluster, which the test may stop; started again whatever happens."""
    found = _find_cluster(clean_postgres_url)
    if isinstance(found, str):
        if _in_ci():
            pytest.fail(f"cannot stop/start the test PostgreSQL: {found}", pytrace=False)
        pytest.skip(found)
    try:
        yield found
    finally:
        found.start()


def superuser_sql(cluster: PostgresCluster, sql: str) -> None:
    """Run SQL as the postgres superuser over the local socket (peer auth), as lib.sh does."""
    subprocess.run(
        [
            "su",
            "postgres",
            "-s",
            "/bin/sh",
            "-c",
            f"psql -X -q -v ON_ERROR_STOP=1 -p {cluster.port} -d postgres",
        ],
        input=sql,
        text=True,
        check=True,
        capture_output=True,
        cwd="/",
        timeout=60,
    )


@pytest.fixture
def secret_journal_url(clean_postgres_url: str) -> Iterator[str]:
    """A journal database and role of their own with a random password that appears nowhere
    else (the shared test role's password is also its database's name)."""
    import secrets

    found = _find_cluster(clean_postgres_url)
    if isinstance(found, str):
        if _in_ci():
            pytest.fail(f"cannot create a PostgreSQL role: {found}", pytrace=False)
        pytest.skip(found)
    name, password = "sl_secret_probe", f"Pw{secrets.token_hex(12)}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {name};\n"
    superuser_sql(
        found,
        drop + f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\n"
        f"CREATE DATABASE {name} OWNER {name};\n",
    )
    url = make_url(clean_postgres_url).set(username=name, password=password, database=name)
    text = url.render_as_string(hide_password=False)
    try:
        yield text
    finally:
        TradeJournal(text).engine.dispose()  # the engine is cached per URL
        superuser_sql(found, drop)
