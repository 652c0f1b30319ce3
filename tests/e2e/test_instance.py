"""The production Dagster instance, for real: the repo's dagster.yaml (PostgreSQL storage from
DAGSTER_PG_*, queued run coordinator), `dagster-webserver` and `dagster-daemon run` as
subprocesses, a learning run submitted through ``DagsterGraphQLClient`` and dequeued by the
daemon, the trade journal on PostgreSQL too.

The code location is ``tests.e2e.ui_app`` (the real definitions with fast learning settings and
permissive gates), so the session's candidate passes all five gates in a few seconds.

Isolation: everything Dagster and the journal write goes to a schema of its own, created for the
test and dropped afterwards, in both test databases. The servers reach it through ``PGOPTIONS``
(``search_path``), so the instance configuration is the production file, copied unchanged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import _in_ci

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    # dagster-graphql 1.13's client calls gql the old way on every request.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[2]
APP_MODULE = "tests.e2e.ui_app"
LOCATION = "session_learning_instance_test"
JOB = "session_learning_job"
MODELS = "EURUSD:30T"
SESSION = "2025-03-04-08:00"
CANDIDATE = ["EURUSD_30T", "candidate_model"]
GATES = frozenset(
    {
        "profit_factor_above_threshold",
        "max_drawdown_below_threshold",
        "win_rate_above_threshold",
        "enough_validation_trades",
        "candidate_beats_production",
    }
)
DAGSTER_PG_VARS = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
SCHEMA_PREFIX = "e2e_instance_"
# A schema this old was left by a test that was killed before its cleanup ran.
STALE_SCHEMA_S = 3600
STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30

CHECKS_QUERY = """
query CandidateChecks($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks { checks { name blocking } }
      }
    }
  }
}
"""
CHECK_EXECUTIONS_QUERY = """
query GateExecutions($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(
    assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 10
  ) {
    runId
    status
    partition
    evaluation { checkName success partition description }
  }
}
"""
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
  }
}
"""
RUN_CHECK_EVENTS_QUERY = """
query RunCheckEvaluations($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on AssetCheckEvaluationEvent {
          evaluation { assetKey { path } checkName success partition }
        }
      }
    }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
}
"""
INSTANCE_QUERY = """
{ instance { runQueuingSupported runQueueConfig { maxConcurrentRuns } } }
"""
LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def dagster_pg_url(postgres_url: str) -> sa.URL:
    """SQLAlchemy URL of the Dagster database named by DAGSTER_PG_* (set by scripts/postgres)."""
    missing = [name for name in DAGSTER_PG_VARS if not os.environ.get(name)]
    if missing:
        reason = f"{', '.join(missing)} not set (scripts/postgres exports them)"
        if _in_ci():
            pytest.fail(f"{reason}: PostgreSQL tests must run in CI", pytrace=False)
        pytest.skip(reason)
    env = os.environ
    return sa.URL.create(
        "postgresql+psycopg2",
        username=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"],
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        database=env["DAGSTER_PG_DB"],
    )


def _execute(url: str | sa.URL, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # A connection left open by a crashed server would block DROP forever; fail instead.
            conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _stale_schemas(url: str | sa.URL) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :prefix)"),
                {"prefix": SCHEMA_PREFIX},
            ).scalars()
            stale = []
            for name in names:
                created = name.removeprefix(SCHEMA_PREFIX).split("_")[0]
                if created.isdigit() and time.time() - int(created) > STALE_SCHEMA_S:
                    stale.append(name)
            return stale
    finally:
        engine.dispose()


@pytest.fixture
def schema(postgres_url: str, dagster_pg_url: sa.URL):
    """A fresh schema, by the same name, in the journal database and in the Dagster database;
    dropped afterwards. Schemas that killed runs of this test left behind go first."""
    name = f"{SCHEMA_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    urls = (postgres_url, dagster_pg_url)
    for url in urls:
        stale = [f'DROP SCHEMA IF EXISTS "{s}" CASCADE' for s in _stale_schemas(url)]
        _execute(url, *stale, f'DROP SCHEMA IF EXISTS "{name}" CASCADE', f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        # PostgreSQL may be restarting (the reliability tests stop it): retry for a while.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for url in urls:
            while True:
                try:
                    _execute(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                    break
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)


def _seed_journal(journal_url: str) -> None:
    """Three losers and a winner in the tested session (and the next), as the asset tests do."""
    from session_learning.resources.journal import TradeJournal
    from tests.assets.conftest import losers_in
    from tests.builders import frame

    journal = TradeJournal(journal_url)
    try:
        journal.create_schema()
        journal.add_trades(frame(losers_in(8) + losers_in(12)))
    finally:
        journal.engine.dispose()


# --- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time) of a live process; None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _processes() -> dict[int, tuple[int, int, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            found[int(entry.name)] = stat
    return found


def _family(leader: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live process in ``leader``'s process group or below it (a
    child that started a session of its own leaves the group, not the tree)."""
    table = _processes()
    found = {pid for pid, (_, group, _) in table.items() if group == leader}
    todo = [leader, *found]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return {(pid, table[pid][2]) for pid in found}


def _alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(pid, start) for pid, start in processes if (s := _stat(pid)) and s[2] == start}


def _describe(processes: set[tuple[int, int]]) -> list[str]:
    out = []
    for pid, _ in sorted(processes):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{pid}: {cmd[:160]}")
    return out


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Services:
    """`dagster-webserver` and `dagster-daemon run`, each the leader of a new session."""

    def __init__(self, root: Path, env: dict[str, str], workspace: Path) -> None:
        self.root, self.env, self.workspace = root, env, workspace
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logs = {"webserver": root / "webserver.log", "daemon": root / "daemon.log"}
        self.processes: dict[str, subprocess.Popen] = {}

    def _script(self, name: str) -> str:
        # The console scripts next to the interpreter running the tests first, then PATH.
        path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
        assert path, f"{name} not found next to {sys.executable}"
        return path

    def start(self) -> None:
        commands = {
            "webserver": [
                self._script("dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workspace)),
            ],
            "daemon": [self._script("dagster-daemon"), "run", "-w", str(self.workspace)],
        }
        for name, command in commands.items():
            with self.logs[name].open("wb") as out:
                self.processes[name] = subprocess.Popen(
                    command,
                    cwd=self.root,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({process.returncode}):\n{_tail(self.logs[name])}"
                )

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        payload = response.json()
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def wait_until_ready(self) -> None:
        """Until /server_info answers and the webserver has loaded the code location."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                requests.get(f"{self.base_url}/server_info", timeout=5).raise_for_status()
                entries = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            except (requests.RequestException, KeyError) as exc:
                last = str(exc)
            else:
                last = str(entries)
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [
                        e["locationOrLoadError"]["message"]
                        for e in entries
                        if e["locationOrLoadError"]["__typename"] == "PythonError"
                    ]
                    assert not errors, f"the code location failed to load: {errors}"
                    return
            time.sleep(0.5)
        raise AssertionError(
            f"webserver not ready in {STARTUP_TIMEOUT_S}s ({last}):\n"
            f"{_tail(self.logs['webserver'])}"
        )

    def stop(self) -> list[str]:
        """SIGTERM both, wait, SIGKILL the process groups; returns what did not stop cleanly
        (a server that needed SIGKILL, any process of theirs alive after they exited)."""
        problems: list[str] = []
        family: set[tuple[int, int]] = set()
        for process in self.processes.values():
            family |= _family(process.pid)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"{name} ignored SIGTERM for {STOP_TIMEOUT_S}s")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # A run worker or code server may take a moment to exit after its parent.
        while time.monotonic() < deadline:
            for process in self.processes.values():
                family |= _family(process.pid)
            if not _alive(family):
                break
            time.sleep(0.2)
        survivors = _alive(family)
        for process in self.processes.values():
            survivors |= _family(process.pid)
        if survivors:
            problems.append(f"processes outlived the servers: {_describe(survivors)}")
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid, _ in _alive(survivors):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return problems


# --- the test -------------------------------------------------------------------------------------


def _environment(root: Path, schema: str, journal_url: str) -> dict[str, str]:
    """The servers' environment: nothing inherited that could point them at another instance or
    home; DAGSTER_PG_* stay, and every libpq connection starts in the test's schema."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSION_LEARNING_") and k not in {"DAGSTER_HOME", "PGOPTIONS"}
    }
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        SESSION_LEARNING_HOME=str(root / "session_learning"),
        SESSION_LEARNING_MODELS=MODELS,
        SESSION_LEARNING_JOURNAL_URL=journal_url,
        SESSION_LEARNING_MARKET_DATA="synthetic",
        PGOPTIONS=f"-c search_path={schema}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _write_instance(root: Path) -> Path:
    """DAGSTER_HOME with the production dagster.yaml, and a workspace on the test location."""
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    workspace = root / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {APP_MODULE}\n"
        "      attribute: defs\n"
        f"      working_directory: {REPO}\n"
        f"      location_name: {LOCATION}\n"
    )
    return workspace


def _wait_for_run(client, services: Services, run_id: str) -> str:
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClientError

    terminal = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        try:
            status = client.get_run_status(run_id)
        except DagsterGraphQLClientError as exc:
            services.check_running()
            raise AssertionError(
                f"polling run {run_id}: {exc.__cause__ or exc}; webserver log:\n"
                f"{_tail(services.logs['webserver'])}"
            ) from exc
        if status in terminal:
            return status.value
        services.check_running()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run {run_id} still {status.value} after {RUN_TIMEOUT_S}s; daemon log:\n"
                f"{_tail(services.logs['daemon'])}"
            )
        time.sleep(1)


def _run_gate_evaluations(services: Services, run_id: str) -> dict[str, dict]:
    """The candidate's check evaluations among the run's events, by gate."""
    found: dict[str, dict] = {}
    cursor = None
    while True:
        logs = services.graphql(RUN_CHECK_EVENTS_QUERY, {"runId": run_id, "cursor": cursor})
        logs = logs["logsForRun"]
        assert logs["__typename"] == "EventConnection", logs
        for event in logs["events"]:
            evaluation = event.get("evaluation")
            if evaluation and evaluation["assetKey"]["path"] == CANDIDATE:
                assert evaluation["checkName"] not in found, f"evaluated twice: {evaluation}"
                found[evaluation["checkName"]] = evaluation
        if not logs["hasMore"]:
            return found
        cursor = logs["cursor"]


def _gate_executions(services: Services, gate: str, run_id: str, partition: str | None):
    """The gate's executions recorded for ``run_id`` (in ``partition`` when given)."""
    executions = services.graphql(
        CHECK_EXECUTIONS_QUERY,
        {"assetKey": {"path": CANDIDATE}, "checkName": gate, "partition": partition},
    )["assetCheckExecutions"]
    return [e for e in executions if e["runId"] == run_id]


def test_production_instance_runs_a_session_through_the_queue(
    tmp_path: Path, schema: str, postgres_url: str, dagster_pg_url: sa.URL
):
    from dagster import AssetKey, DagsterEventType
    from dagster_graphql import DagsterGraphQLClient

    journal_url = (
        sa.make_url(postgres_url)
        .update_query_dict({"options": f"-c search_path={schema}"})
        .render_as_string(hide_password=False)
    )
    _seed_journal(journal_url)
    workspace = _write_instance(tmp_path)
    services = Services(tmp_path, _environment(tmp_path, schema, journal_url), workspace)
    try:
        services.start()
        services.wait_until_ready()

        instance = services.graphql(INSTANCE_QUERY)["instance"]
        assert instance["runQueuingSupported"], "the production instance queues runs"
        assert instance["runQueueConfig"]["maxConcurrentRuns"] == 4

        # The client has no partition argument: a partition run is a run tagged with its key.
        client = DagsterGraphQLClient("127.0.0.1", port_number=services.port)
        run_id = client.submit_job_execution(JOB, tags={"dagster/partition": SESSION})
        status = _wait_for_run(client, services, run_id)
        assert status == "SUCCESS", (
            f"run {run_id} ended {status}; daemon log:\n{_tail(services.logs['daemon'], 80)}"
        )
        run = services.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert {"key": "dagster/partition", "value": SESSION} in run["tags"], run

        node = services.graphql(CHECKS_QUERY, {"assetKey": {"path": CANDIDATE}})
        node = node["assetNodeOrError"]
        assert node["__typename"] == "AssetNode", node
        checks = node["assetChecksOrError"]["checks"]
        assert {c["name"] for c in checks} == GATES
        assert all(c["blocking"] for c in checks), checks

        # What the session's run evaluated: every gate once, passed.
        evaluations = _run_gate_evaluations(services, run_id)
        assert set(evaluations) == GATES, evaluations
        failed = {gate: e for gate, e in evaluations.items() if e["success"] is not True}
        assert not failed, failed

        # The same results in each gate's history, under the session's partition (the gates
        # are declared with the session partitions; otherwise they would show up there as
        # SKIPPED, their results filed under no partition).
        for gate in sorted(GATES):
            recorded = _gate_executions(services, gate, run_id, partition=SESSION)
            assert len(recorded) == 1, f"{gate}: {recorded}"
            execution = recorded[0]
            assert execution["status"] == "SUCCEEDED", f"{gate}: {execution}"
            assert execution["partition"] == SESSION, f"{gate}: {execution}"
            assert execution["evaluation"]["success"] is True, f"{gate}: {execution}"
            assert execution["evaluation"]["partition"] == SESSION, f"{gate}: {execution}"

        # The run's step hooks recorded the model's outcome and the session's read in the
        # PostgreSQL journal, from the run worker's processes.
        from session_learning.resources.journal import TradeJournal
        from session_learning.resources.outcomes import OutcomeStore

        store = OutcomeStore(TradeJournal(journal_url))
        [outcome] = [o for o in store.history(CANDIDATE[0]) if o.run_id == run_id][:1]
        assert outcome.session == SESSION and outcome.outcome in ("deployed", "not_deployed")
        assert store.has(run_id, "*", "session_trades") is False  # a read, not an outcome
        with sa.create_engine(journal_url).connect() as conn:
            reads = conn.execute(sa.text("SELECT session, run_id FROM session_reads")).all()
        assert [tuple(r) for r in reads] == [(SESSION, run_id)]
    finally:
        problems = services.stop()
    assert not problems, problems

    # The run, its trip through the queue and its gate evaluations are rows in PostgreSQL, in
    # the test's schema.
    engine = sa.create_engine(dagster_pg_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text(
                    f'SELECT pipeline_name, status, "partition" FROM "{schema}".runs '
                    "WHERE run_id = :run_id"
                ),
                {"run_id": run_id},
            ).one_or_none()
            events = dict(
                conn.execute(
                    sa.text(
                        f'SELECT dagster_event_type, count(*) FROM "{schema}".event_logs '
                        "WHERE run_id = :run_id GROUP BY dagster_event_type"
                    ),
                    {"run_id": run_id},
                ).all()
            )
            gate_rows = conn.execute(
                sa.text(
                    'SELECT check_name, execution_status, "partition" '
                    f'FROM "{schema}".asset_check_executions '
                    "WHERE run_id = :run_id AND asset_key = :asset_key"
                ),
                {"run_id": run_id, "asset_key": AssetKey(CANDIDATE).to_string()},
            ).all()
    finally:
        engine.dispose()
    assert stored is not None, f"run {run_id} is not in {schema}.runs"
    assert tuple(stored) == (JOB, "SUCCESS", SESSION)
    # Queued by the webserver, launched by the daemon (the only launcher of queued runs); the
    # events are stored under their legacy names (PIPELINE_ENQUEUED...).
    queued = (DagsterEventType.RUN_ENQUEUED.value, DagsterEventType.RUN_STARTING.value)
    assert [events.get(kind) for kind in queued] == [1, 1], events
    assert sorted(map(tuple, gate_rows)) == [(g, "SUCCEEDED", SESSION) for g in sorted(GATES)]
    assert events.get(DagsterEventType.RUN_SUCCESS.value) == 1, events
