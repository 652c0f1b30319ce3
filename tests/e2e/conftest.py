"""A real Dagster UI for browser tests: a seeded SQLite instance, `dagster-webserver` on a free
local port, and Debian's chromium driven by Playwright.

The instance is seeded in-process (fast) with the same code location the webserver loads
(``tests.e2e.ui_app``): one session whose candidate passes every gate, one whose candidate fails
``profit_factor_above_threshold``. Nothing here touches the developer's var/ or DAGSTER_HOME.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _in_ci

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Flags that keep a headless chromium quiet and offline in a container (see STACK_NOTES).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The Dagster UI shows a community pop-up over the first page unless this is set.
DISMISS_COMMUNITY_NUX = "window.localStorage.setItem('communityNux', '\"1\"');"
UI_MODELS = "EURUSD:30T"
PASSING_SESSION = "2025-03-04-08:00"
FAILING_SESSION = "2025-03-04-12:00"
STARTUP_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20


def _unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where ./scripts/test installs everything the test needs."""
    if _in_ci():
        pytest.fail(f"{reason} (CI must run the browser tests)", pytrace=False)
    pytest.skip(f"{reason}; run ./scripts/test (as root it installs Debian's chromium)")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing")
    return CHROMIUM


# --- instance and code location ------------------------------------------------------------------


@dataclass(frozen=True)
class SeededUI:
    """Where the UI's instance lives and what was materialized into it."""

    root: Path
    env: dict[str, str]
    passing_run_id: str
    failing_run_id: str


def _scratch_dir() -> Path:
    # SQLite commits fsync; on tmpfs the seeding runs take a third of the time they take on disk.
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="session-learning-ui-", dir=base))


def _ui_env(root: Path) -> dict[str, str]:
    """The environment of the instance and the code location, and nothing inherited that could
    point them elsewhere (a developer's SESSION_LEARNING_* or DAGSTER_HOME)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSION_LEARNING_") and k != "DAGSTER_HOME"
    }
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        SESSION_LEARNING_HOME=str(root / "session_learning"),
        SESSION_LEARNING_MODELS=UI_MODELS,
        PYTHONUNBUFFERED="1",
    )
    return env


def _write_instance_config(dagster_home: Path) -> None:
    dagster_home.mkdir(parents=True)
    # No daemon runs in the test: the default coordinator launches a run from the UI at once
    # (Dagster's default, the queued coordinator, would leave it queued forever).
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n"
        "  enabled: false\n"
        "storage:\n"
        "  sqlite:\n"
        f"    base_dir: {dagster_home / 'storage'}\n"
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )


def _seed(env: dict[str, str]) -> tuple[str, str]:
    """Materialize a passing and a failing session into the instance at env's DAGSTER_HOME."""
    import dagster as dg

    from tests.assets.conftest import EURUSD, losers_in
    from tests.builders import frame
    from tests.e2e.ui_app import build_ui_definitions
    from tests.judgements import deploy_losing_variant

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        with dg.DagsterInstance.get() as instance:
            permissive = build_ui_definitions(env)
            permissive.resources["journal"].journal().add_trades(
                frame(losers_in(8) + losers_in(12))
            )
            job = permissive.resolve_job_def("session_learning_job")
            passing = job.execute_in_process(
                partition_key=PASSING_SESSION, instance=instance, raise_on_error=False
            )
            assert passing.success, "the permissive session should deploy its candidate"
            # The failing session's candidate then beats production: it fails one gate only.
            deploy_losing_variant(permissive.resources["registry"].registry(), EURUSD)
            strict = build_ui_definitions(env, min_profit_factor=1000.0)
            failing = strict.resolve_job_def("session_learning_job").execute_in_process(
                partition_key=FAILING_SESSION, instance=instance, raise_on_error=False
            )
            failed = {
                c.check_name
                for c in failing.get_asset_check_evaluations()
                if not c.passed and c.asset_key.path[-1] == "candidate_model"
            }
            assert not failing.success and failed == {"profit_factor_above_threshold"}
    return passing.run_id, failing.run_id


@pytest.fixture(scope="module")
def seeded_ui(chromium_path) -> Iterator[SeededUI]:
    root = _scratch_dir()
    try:
        env = _ui_env(root)
        _write_instance_config(Path(env["DAGSTER_HOME"]))
        passing, failing = _seed(env)
        yield SeededUI(root, env, passing, failing)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- webserver ------------------------------------------------------------------------------------


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    """POST a query to the webserver's /graphql; its ``data``, or an error with the messages."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.load(response)
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    if fields[0] == "Z":  # a zombie has exited; its parent just has not reaped it yet
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``root``; the start time tells a process
    from a later one that reuses its pid."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def _alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(pid, start) for pid, start in processes if (s := _proc_stat(pid)) and s[1] == start}


def _stop(process: subprocess.Popen) -> set[tuple[int, int]]:
    """SIGTERM the webserver (it stops its code server and exits), then SIGKILL whatever is left
    of it or of its children; returns the children that outlived a clean stop."""
    family = _descendants(process.pid)
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = _alive(family)
    for pid, _ in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return survivors


def _wait_until_loaded(process: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster-webserver exited ({process.returncode}); see {log}")
        try:
            entries = graphql(base_url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        except (OSError, urllib.error.URLError, KeyError) as exc:
            last = str(exc)
        else:
            last = json.dumps(entries)
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [
                    e["locationOrLoadError"]["message"]
                    for e in entries
                    if e["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                if errors:
                    raise AssertionError(f"the code location failed to load: {errors}")
                return
        time.sleep(0.5)
    raise AssertionError(f"webserver not ready in {STARTUP_TIMEOUT_S}s ({last}); see {log}")


@pytest.fixture(scope="module")
def webserver(seeded_ui: SeededUI, tmp_path_factory) -> Iterator[str]:
    """Base URL of `dagster-webserver` serving ``tests.e2e.ui_app`` on the seeded instance."""
    port = _free_port()
    log = tmp_path_factory.mktemp("webserver") / "dagster-webserver.log"
    command = [
        sys.executable,
        "-m",
        "dagster_webserver",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--module-name",
        "tests.e2e.ui_app",
        "--attribute",
        "defs",
        "--working-directory",
        str(REPO),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=seeded_ui.env, stdout=out, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_loaded(process, base_url, log)
        yield base_url
    finally:
        survivors = _stop(process)
        assert not survivors, f"processes outlived the webserver's shutdown: {survivors} ({log})"


# --- browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium_path: Path, webserver: str):
    # After the webserver: the in-process seeding must not run inside Playwright's event loop.
    from playwright.sync_api import expect, sync_playwright

    # The UI loads each view with a few GraphQL queries; on a busy 2-core runner that can take
    # longer than Playwright's 5 s default.
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(browser, webserver: str, request, tmp_path_factory):
    """A fresh browser context on the UI; a failing test leaves a screenshot of the page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=webserver)
    context.add_init_script(DISMISS_COMMUNITY_NUX)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            shot = tmp_path_factory.mktemp("failures") / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}")
        context.close()
