"""What an operator sees in the Dagster UI (`dagster-webserver`, Debian's chromium):

- the global asset lineage with the session and per-model groups,
- the candidate's gates as asset checks: a failed ``profit_factor_above_threshold`` for the
  second session next to the gates that passed, and the same gate passed for the first session,
- a session partition materialized from the UI's launch dialog, run to success,
- ``deployed_model`` launched alone for the session whose candidate was rejected, and a backfill
  of it alone (run by ``dagster-daemon``): production unchanged, and each run says why.

Screenshots of each land in docs/screenshots/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _in_ci

if not _in_ci():  # in CI a missing playwright is an error, not a skip
    pytest.importorskip(
        "playwright", reason="playwright is not installed (pip install -e '.[dev]')"
    )

from playwright.sync_api import Page, expect  # noqa: E402

from tests.e2e.conftest import (  # noqa: E402
    FAILING_SESSION,
    PASSING_SESSION,
    SCREENSHOTS,
    graphql,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = "EURUSD_30T"
GROUPS_QUERY = "{ assetNodes { groupName } }"
FAILED_GATE = "profit_factor_above_threshold"
# Gates the second session's candidate passes whatever its numbers: thresholds 100% drawdown,
# 0% win rate and 1 validation trade (tests.assets.conftest.PERMISSIVE).
PASSED_GATES = (
    "max_drawdown_below_threshold",
    "win_rate_above_threshold",
    "enough_validation_trades",
)
RUN_TIMEOUT_S = 90
RUN_QUERY = """
query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
    status tags { key value } assetSelection { path }
} } }
"""


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def check_status(page: Page, check: str) -> str:
    """The status a check's entry in the asset's check list shows ("Failed", "Succeeded"...).
    Long names are middle-truncated on screen; the full name is the entry's title."""
    entry = page.locator(f"span:has(> [title='{check}'])")
    return entry.inner_text().splitlines()[-1].strip()


NODE_BOUNDS_JS = """() => {
    const boxes = Array.from(document.querySelectorAll('svg foreignObject'))
        .map((e) => e.getBoundingClientRect());
    return [Math.min(...boxes.map((b) => b.left)), Math.min(...boxes.map((b) => b.top)),
            Math.max(...boxes.map((b) => b.right)), Math.max(...boxes.map((b) => b.bottom))];
}"""


def center_graph(page: Page) -> None:
    """Drag the lineage canvas so its nodes sit in the middle of the visible area (the UI opens
    it at a readable zoom, but not always centred)."""
    left, top, right, bottom = page.evaluate(NODE_BOUNDS_JS)
    toolbar = page.get_by_label("Search and filter assets").bounding_box()
    size = page.viewport_size
    x0 = (toolbar["x"] + size["width"]) / 2
    y0 = (toolbar["y"] + toolbar["height"] + size["height"]) / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + x0 - (left + right) / 2, y0 + y0 - (top + bottom) / 2, steps=10)
    page.mouse.up()


def test_global_lineage_shows_the_learning_graph(page: Page, webserver: str):
    page.set_viewport_size({"width": 1920, "height": 1100})
    groups = sorted({a["groupName"] for a in graphql(webserver, GROUPS_QUERY)["assetNodes"]})
    assert {"session_analysis", f"model_{MODEL}", "live_trading"} <= set(groups)
    # Every group opened, so the graph shows assets rather than group boxes.
    expanded = ",".join(f"global%40global%3A{group}" for group in groups)
    page.goto(f"/asset-groups?expanded={expanded}")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for asset in ("session_trades", "problem_report", "session_breakdown", "candidate_model"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    # The candidate's node summarizes its gates: the latest session failed one of five.
    expect(page.get_by_text("4 / 5 Passed")).to_be_visible()
    center_graph(page)
    screenshot(page, "01_asset_graph.png")


def test_candidate_checks_show_the_failed_and_the_passed_gates(page: Page, seeded_ui):
    page.goto(f"/assets/{MODEL}/candidate_model")
    page.get_by_role("tab", name="Checks").click()
    expect(page.get_by_text("Checks (5)")).to_be_visible()

    # Latest evaluation of every gate: the second session's candidate.
    expect(page.locator(f"[title='{FAILED_GATE}']").first).to_be_visible()
    assert check_status(page, FAILED_GATE) == "Failed"
    for gate in PASSED_GATES:
        assert check_status(page, gate) == "Succeeded", gate

    page.locator(f"[title='{FAILED_GATE}']").first.click()
    expect(page).to_have_url(re.compile(f"checkDetail={FAILED_GATE}"))
    # The innermost block holding both the heading and the evaluation: the latest execution.
    latest = (
        page.locator("div")
        .filter(has=page.get_by_text("Latest execution", exact=True))
        .filter(has=page.get_by_text("Evaluation result", exact=True))
        .last
    )
    expect(latest.get_by_text("Failed", exact=True)).to_be_visible()
    expect(latest.get_by_text(re.compile(r"profit factor .* vs > 1000"))).to_be_visible()
    screenshot(page, "02_candidate_checks_failed_gate.png")

    # The gate's history: failed in the second session's run, passed in the first's.
    page.get_by_role("tab", name="Execution history").click()
    failed_row = page.get_by_role("row").filter(has_text="Failed").filter(has_text="vs > 1000")
    passed_row = page.get_by_role("row").filter(has_text="Passed").filter(has_text="vs > 0")
    expect(failed_row).to_have_count(1)
    expect(passed_row).to_have_count(1)
    expect(
        failed_row.locator(f"a[href^='/runs/{seeded_ui.failing_run_id}']").first
    ).to_be_attached()
    expect(
        passed_row.locator(f"a[href^='/runs/{seeded_ui.passing_run_id}']").first
    ).to_be_attached()
    screenshot(page, "03_gate_history_by_session.png")

    # Following the failed evaluation lands on the run of the second session.
    failed_row.locator("a[href^='/runs/']").last.click()
    expect(page).to_have_url(re.compile(f"/runs/{seeded_ui.failing_run_id}"))
    expect(page.get_by_text(f"partition: {FAILING_SESSION}")).to_be_visible()
    expect(
        page.get_by_text(re.compile(rf"blocking asset check failed[\s\S]*{FAILED_GATE}")).first
    ).to_be_visible()


def test_session_partition_materializes_from_the_ui(page: Page, webserver: str):
    page.goto("/assets/session_breakdown")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize session_breakdown")).to_be_visible()
    # The dialog may offer only the last 90 days; the seeded sessions can be older than that.
    show_all = dialog.get_by_role("button", name="Show all partitions")
    partitions = dialog.get_by_placeholder(re.compile(r"^ex: "))
    expect(show_all.or_(partitions)).to_be_visible()
    if show_all.is_visible():
        show_all.click()
    partitions.fill(PASSING_SESSION)
    partitions.press("Enter")
    dialog.get_by_role("button", name="Launch 1 run").click()

    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible(timeout=60_000)
    short_id = re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)
    toast.locator("xpath=ancestor::li[1]").get_by_text("View", exact=True).click()
    expect(page).to_have_url(re.compile(f"/runs/{short_id}"))
    run_id = page.url.split("/runs/")[1].split("?")[0]

    expect(page.get_by_text(f"partition: {PASSING_SESSION}")).to_be_visible()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (status := run_status(webserver, run_id)) not in {"SUCCESS", "FAILURE", "CANCELED"}:
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {RUN_TIMEOUT_S}s"
        time.sleep(1)
    assert status == "SUCCESS", f"run {run_id} ended {status}"
    # The page follows the run live: its status turns to Success without a reload.
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=15_000)
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
    run = graphql(webserver, RUN_QUERY, {"runId": run_id})["runOrError"]
    assert {"key": "dagster/partition", "value": PASSING_SESSION} in run["tags"]
    assert run["assetSelection"] == [{"path": ["session_breakdown"]}]
    screenshot(page, "04_run_page.png")


MATERIALIZATION_QUERY = """
query Deployed($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) { ... on Asset {
    assetMaterializations(partitions: [$partition], limit: 1) {
      runId metadataEntries { label ... on TextMetadataEntry { text }
                              ... on BoolMetadataEntry { boolValue } }
    }
  } }
}
"""


def test_deployed_model_of_a_rejected_session_launched_from_the_ui_deploys_nothing(
    page: Page, webserver: str, seeded_ui
):
    """The UI's Materialize on `deployed_model` alone, for the session whose candidate failed a
    gate: the run succeeds, production stays byte-identical, and the materialization says why."""
    from session_learning.settings import Settings

    folder = Settings.from_env(seeded_ui.env).models_dir / MODEL
    production = {p.name: p.read_bytes() for p in folder.glob("*.json")}

    page.goto(f"/assets/{MODEL}/deployed_model")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    expect(
        dialog.get_by_text(f"Launch runs to materialize {MODEL} / deployed_model")
    ).to_be_visible()
    show_all = dialog.get_by_role("button", name="Show all partitions")
    partitions = dialog.get_by_placeholder(re.compile(r"^ex: "))
    expect(show_all.or_(partitions)).to_be_visible()
    if show_all.is_visible():
        show_all.click()
    partitions.fill(FAILING_SESSION)
    partitions.press("Enter")
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible(timeout=60_000)
    toast.locator("xpath=ancestor::li[1]").get_by_text("View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]+"))
    run_id = page.url.split("/runs/")[1].split("?")[0]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (status := run_status(webserver, run_id)) not in {"SUCCESS", "FAILURE", "CANCELED"}:
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {RUN_TIMEOUT_S}s"
        time.sleep(1)
    assert status == "SUCCESS", f"run {run_id} ended {status}"
    run = graphql(webserver, RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["assetSelection"] == [{"path": [MODEL, "deployed_model"]}]
    asset = graphql(
        webserver,
        MATERIALIZATION_QUERY,
        {"path": [MODEL, "deployed_model"], "partition": FAILING_SESSION},
    )["assetOrError"]
    [materialization] = asset["assetMaterializations"]
    assert materialization["runId"] == run_id
    metadata = {
        e["label"]: e.get("text", e.get("boolValue")) for e in materialization["metadataEntries"]
    }
    assert metadata["deployed"] is False
    assert "did not pass its gates" in metadata["summary"]
    assert FAILED_GATE in metadata["summary"]
    assert {p.name: p.read_bytes() for p in folder.glob("*.json")} == production
    expect(page.get_by_text("not deployed").first).to_be_visible()
    screenshot(page, "05_deploy_alone_after_rejection.png")


BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_QUERY = """
query Backfill($id: String!, $tags: [ExecutionTag!]) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status
    tags { key value } } } }
}
"""
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
BACKFILL_TIMEOUT_S = 240


def test_backfill_of_deployed_model_alone_deploys_nothing_new(webserver: str, seeded_ui):
    """A real backfill (the daemon's backfill loop) of `deployed_model` alone over the session
    that deployed its candidate and the one whose candidate was rejected."""
    from session_learning.settings import Settings
    from tests.e2e.conftest import REPO, _stop

    folder = Settings.from_env(seeded_ui.env).models_dir / MODEL
    production = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    daemon_log = seeded_ui.root / "dagster-daemon.log"
    command = [
        str(Path(sys.executable).with_name("dagster-daemon")),
        "run",
        "-m",
        "tests.e2e.ui_app",
        "-a",
        "defs",
        "-d",
        str(REPO),
    ]
    with daemon_log.open("wb") as out:
        daemon = subprocess.Popen(
            command, cwd=REPO, env=seeded_ui.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        launched = graphql(
            webserver,
            BACKFILL_MUTATION,
            {
                "params": {
                    "partitionNames": [PASSING_SESSION, FAILING_SESSION],
                    "assetSelection": [{"path": [MODEL, "deployed_model"]}],
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        tags = [{"key": "dagster/backfill", "value": backfill_id}]
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while True:
            state = graphql(webserver, BACKFILL_QUERY, {"id": backfill_id, "tags": tags})
            status = state["partitionBackfillOrError"]["status"]
            runs = state["runsOrError"]["results"]
            finished = [r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}]
            if status in BACKFILL_DONE and len(finished) == len(runs):
                break
            assert daemon.poll() is None, f"dagster-daemon exited; see {daemon_log}"
            assert time.monotonic() < deadline, (
                f"backfill {backfill_id} still {status} ({runs}); see {daemon_log}"
            )
            time.sleep(2)
    finally:
        survivors = _stop(daemon)
    assert not survivors, f"processes outlived the daemon's shutdown: {survivors}"

    assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, (status, runs)
    by_partition = {
        next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r for r in runs
    }
    assert set(by_partition) == {PASSING_SESSION, FAILING_SESSION}
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    summaries = {}
    for partition, run in by_partition.items():
        asset = graphql(
            webserver,
            MATERIALIZATION_QUERY,
            {"path": [MODEL, "deployed_model"], "partition": partition},
        )["assetOrError"]
        [materialization] = asset["assetMaterializations"]
        assert materialization["runId"] == run["runId"]
        metadata = {
            e["label"]: e.get("text", e.get("boolValue"))
            for e in materialization["metadataEntries"]
        }
        assert metadata["deployed"] is False, metadata
        summaries[partition] = metadata["summary"]
    assert "already deployed for this session" in summaries[PASSING_SESSION]
    assert "did not pass its gates" in summaries[FAILING_SESSION]
    assert {p.name: p.read_bytes() for p in folder.glob("*.json")} == production


def run_status(base_url: str, run_id: str) -> str:
    return graphql(base_url, RUN_QUERY, {"runId": run_id})["runOrError"]["status"]
