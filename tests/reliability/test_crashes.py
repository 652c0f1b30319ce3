"""Processes killed with SIGKILL (training, promotion) and two processes promoting at once:
production stays one consistent, loadable version and the next run converges."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from catboost import CatBoostClassifier

from session_learning.domain.keys import ModelKey
from session_learning.resources.registry import ModelRegistry
from tests.assets.conftest import EURUSD, S1, S2, S3
from tests.judgements import (
    LOSING_VARIANT_SESSION,
    deploy_losing_variant,
    judge,
    judge_and_promote,
)
from tests.reliability.conftest import (
    kill,
    pipeline_at,
    spawn,
    succeeded,
    tree,
    wait_for,
)

pytestmark = pytest.mark.slow


def _deployments(registry: ModelRegistry, session: str) -> list[dict]:
    return [e for e in registry.history(EURUSD) if e["session"] == session]


def _assert_consistent(registry: ModelRegistry, key: ModelKey = EURUSD) -> list[dict]:
    """The deployment invariant of the registry, on the raw file as well as through the API."""
    entries = registry.history(key)
    raw = json.loads((registry.root / key.slug / "history.json").read_text())["entries"]
    for before, after in itertools.pairwise(entries):
        assert before["live_to"] == after["live_from"]
    assert entries[-1]["live_to"] is None
    assert entries[-1]["version"] == registry.production_version(key)
    model, card = registry.production(key)  # loads, checksum verified
    assert model.is_fitted() and card["version"] == entries[-1]["version"]
    return raw


# --- killed while the candidate trains ------------------------------------------------------


def test_sigkill_while_training_leaves_production_byte_identical_and_rerun_converges(
    deployed_home,
):
    p = pipeline_at(deployed_home)
    deploy_losing_variant(p.registry, EURUSD)  # so that the S2 candidate beats production
    registry_before = tree(p.settings.models_dir)
    live = p.registry.production_version(EURUSD)
    # Thousands of iterations keep the candidate training for many seconds: the kill lands in
    # CatBoost's fit, after the training set was stored.
    child = spawn(
        "from tests.reliability.child import run_learning; "
        f"run_learning({str(deployed_home)!r}, {S2!r}, iterations=20000)"
    )
    values = p.settings.values_dir / "EURUSD_30T"
    wait_for(values / "weighted_training_set" / "2025-03-04-1200.json", child)
    time.sleep(0.5)
    kill(child)

    # Killed before the candidate was saved: the registry did not change by a single byte.
    assert not (values / "candidate_model" / "2025-03-04-1200.json").exists()
    assert tree(p.settings.models_dir) == registry_before
    assert p.registry.production_version(EURUSD) == live

    rerun = p.run(S2)
    assert rerun.success, rerun
    # The re-run trains and judges the candidate; after the first deployment only the arena
    # promotes, so it decides and production stays (deployed_model says why).
    assert {"EURUSD_30T__candidate_model", "EURUSD_30T__deployed_model"} <= succeeded(rerun)
    assert (values / "candidate_model" / "2025-03-04-1200.json").exists()
    assert p.registry.production_version(EURUSD) == live
    assert [e["session"] for e in p.registry.history(EURUSD)] == [S1, LOSING_VARIANT_SESSION]
    _assert_consistent(p.registry)
    again = p.run(S2)  # and a second re-run changes nothing either
    assert again.success and len(p.registry.history(EURUSD)) == 2


# --- killed in the middle of a promotion ----------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> CatBoostClassifier:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    model = CatBoostClassifier(iterations=15, depth=3, verbose=False, allow_writing_files=False)
    return model.fit(x, (x[:, 0] > 0).astype(int))


@pytest.fixture
def registry_with_two_deployments(tmp_path, small_model) -> tuple[ModelRegistry, list[str]]:
    """v0 then v1 deployed (so a rollback has somewhere to go); v2 and v3 saved, not live."""
    registry = ModelRegistry(tmp_path / "models")
    start = datetime(2025, 3, 4, tzinfo=UTC)
    versions = [
        registry.save_candidate(EURUSD, small_model, {"n": i}, start + timedelta(hours=4 * i))
        for i in range(4)
    ]
    for i in (0, 1):
        judge_and_promote(registry, EURUSD, versions[i], reason="gates passed", session=f"s{i}")
    judge(registry, EURUSD, versions[2])  # judged against v1, the promotion that dies
    return registry, versions


# (file renamed, before/after the rename) -> what is live once the process is dead
KILL_POINTS = {
    ("history.json", "before"): "old",  # history not switched yet: nothing happened
    ("production.json", "before"): "old",  # history written, pointer not: the crash case
    ("production.json", "after"): "new",  # both written, folder not yet fsynced
}


@pytest.mark.parametrize(("target", "when"), list(KILL_POINTS))
def test_sigkill_inside_a_promotion_leaves_one_consistent_version(
    registry_with_two_deployments, small_model, target, when, tmp_path
):
    registry, (v0, v1, v2, v3) = registry_with_two_deployments
    child = spawn(
        "from tests.reliability.child import promote_and_die; "
        f"promote_and_die({str(registry.root)!r}, {v2!r}, 's2', {target!r}, {when!r})"
    )
    assert child.wait(60) == -signal.SIGKILL, child.stdout.read()

    live = {"old": v1, "new": v2}[KILL_POINTS[target, when]]
    assert registry.production_version(EURUSD) == live
    raw = _assert_consistent(registry)
    if (target, when) == ("production.json", "before"):
        # The half-done promotion is on disk but hidden from readers.
        assert [e["version"] for e in raw] == [v0, v1, v2]
        assert [e["version"] for e in registry.history(EURUSD)] == [v0, v1]
    # The unfinished temporary file is invisible to readers.
    leftovers = list((registry.root / EURUSD.slug).glob(".tmp-*"))
    assert len(leftovers) == (1 if when == "before" else 0)

    # The next writer, a promotion or a rollback, repairs history: the raw file then equals
    # what readers see, and the invariant holds.
    shutil.copytree(registry.root, tmp_path / "copy")
    promoted, rolled = registry, ModelRegistry(tmp_path / "copy")
    judge(promoted, EURUSD, v3)
    assert promoted.promote(EURUSD, v3, reason="next session", session="s3")
    back_to = rolled.rollback(EURUSD)
    assert back_to == (v0 if live == v1 else v1)
    before = [v0, v1, *([v2] if live == v2 else [])]
    for reg, last in ((promoted, v3), (rolled, back_to)):
        raw = _assert_consistent(reg)
        assert [e["version"] for e in raw] == [*before, last]
        assert raw == reg.history(EURUSD)
        # The next save sweeps the temporary file the killed writer left.
        reg.save_candidate(EURUSD, small_model, {}, datetime(2025, 4, 1, tzinfo=UTC))
        assert not list((reg.root / EURUSD.slug).glob(".tmp-*"))


# --- two partitions promoting the same model at once ------------------------------------------


def test_two_partitions_promoting_at_once_lose_no_update(deployed_home, tmp_path):
    p = pipeline_at(deployed_home)
    deploy_losing_variant(p.registry, EURUSD)  # so that both candidates beat production
    # Both candidates are trained and gated here; the two racing runs are the deployments.
    upstream = ["session_trades", "problem_report", "EURUSD_30T/weighted_training_set"]
    for session in (S2, S3):
        prepared = p.run(session, assets=[*upstream, "EURUSD_30T/candidate_model"])
        assert prepared.success
    assert [e["session"] for e in p.registry.history(EURUSD)] == [S1, LOSING_VARIANT_SESSION]
    # The race is the registry's compare-and-swap: without the model's arena state the gates
    # alone may promote (as in the replay's gates-only arms); with it, neither candidate could.
    model_dir = p.settings.models_dir / EURUSD.slug
    (model_dir / "arena.json").unlink()
    shutil.rmtree(model_dir / "arena")

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    children = [
        spawn(
            "from tests.reliability.child import run_learning_promoting_together; "
            f"run_learning_promoting_together({str(deployed_home)!r}, {session!r}, "
            f"{str(barrier)!r}, 2, assets=['EURUSD_30T/deployed_model'])"
        )
        for session in (S2, S3)
    ]
    outputs = [child.communicate(timeout=150)[0] for child in children]
    codes = [child.returncode for child in children]
    assert len(list(barrier.glob("*.ready"))) == 2  # both waited, then promoted together

    # Both candidates were judged against the live variant. Exactly one deployment wins; the
    # other is refused because production changed since it was judged (compare-and-swap), and
    # says so.
    assert sorted(codes) == [0, 1], outputs
    refused = outputs[codes.index(1)]
    assert "ProductionChangedError" in refused and "Nothing was changed" in refused
    history = p.registry.history(EURUSD)
    assert [e["session"] for e in history[:2]] == [S1, LOSING_VARIANT_SESSION]
    assert len(history) == 3 and history[2]["session"] == (S2, S3)[codes.index(0)]
    _assert_consistent(p.registry)
    assert history[1]["live_to"] == history[2]["live_from"] is not None
