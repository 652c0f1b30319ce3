"""Tests of the model registry: storage, verification, promotion, rollback, concurrency."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from catboost import CatBoostClassifier

from session_learning.domain.models import ModelKey, UnknownModelError
from session_learning.resources import registry as registry_module
from session_learning.resources.registry import (
    CorruptModelError,
    ModelRegistry,
    ModelRegistryResource,
    ProductionChangedError,
    RegistryError,
    UnknownVersionError,
)

KEY = ModelKey("EURUSD", "30T")
OTHER = ModelKey("XAUUSD", "15T")
SESSION_END = datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
T0 = datetime(2024, 1, 2, 8, 5, tzinfo=UTC)


def _train(seed: int = 0) -> tuple[CatBoostClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    model = CatBoostClassifier(
        iterations=20,
        depth=3,
        random_seed=0,
        thread_count=1,
        allow_writing_files=False,
        verbose=False,
    )
    model.fit(x, y)
    return model, x


@pytest.fixture(scope="module")
def trained() -> tuple[CatBoostClassifier, np.ndarray]:
    return _train()


@pytest.fixture
def model(trained: tuple[CatBoostClassifier, np.ndarray]) -> CatBoostClassifier:
    return trained[0]


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _session(i: int) -> datetime:
    return SESSION_END + timedelta(hours=4 * i)


def _save(reg: ModelRegistry, model: CatBoostClassifier, i: int = 0, key: ModelKey = KEY) -> str:
    card = {"features": ["f0", "f1", "f2", "f3"], "data_window": ["2024-01-01", "2024-01-02"]}
    return reg.save_candidate(key, model, card, _session(i))


def _promote(reg: ModelRegistry, version: str, i: int) -> bool:
    return reg.promote(
        KEY, version, reason=f"gates passed {i}", session=f"s{i}", now=T0 + timedelta(hours=i)
    )


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _model_file(reg: ModelRegistry, version: str, key: ModelKey = KEY) -> Path:
    return reg.root / key.slug / "versions" / version / "model.cbm"


def _assert_consistent(reg: ModelRegistry, entries: list[dict]) -> None:
    for before, after in itertools.pairwise(entries):
        assert before["live_to"] == after["live_from"]
        assert before["version"] != after["version"]
    assert entries[-1]["live_to"] is None
    assert entries[-1]["version"] == reg.production_version(KEY)


# ---- saving and loading ---------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(reg, trained):
    model, x = trained
    version = _save(reg, model)

    loaded, card = reg.load(KEY, version)

    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    path = _model_file(reg, version)
    data = path.read_bytes()
    assert data[:4] == b"CBM1"  # CatBoost's native format, not a pickle
    assert card["version"] == version
    assert card["model_sha256"] == hashlib.sha256(data).hexdigest()
    assert card["model_bytes"] == len(data)
    assert (card["symbol"], card["timeframe"]) == ("EURUSD", "30T")
    assert card["features"] == ["f0", "f1", "f2", "f3"]
    assert datetime.fromisoformat(card["created_at"]).tzinfo is not None
    assert reg.card(KEY, version) == card
    assert reg.versions(KEY) == [version]
    # The caller's model is not altered by saving.
    assert "model_guid" in model.get_metadata()


def test_version_id_is_deterministic_and_resave_is_a_noop(reg):
    first, _ = _train(seed=0)
    retrained, _ = _train(seed=0)  # a fresh fit: CatBoost gives it another GUID and timestamp
    version = _save(reg, first)
    folder = _model_file(reg, version).parent
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}

    again = _save(reg, retrained)

    assert again == version
    assert re.fullmatch(r"20240102T0800-[0-9a-f]{10}", version)
    assert version.endswith(reg.card(KEY, version)["model_sha256"][:10])
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before
    assert reg.versions(KEY) == [version]
    # Another session or another model gives another version.
    assert _save(reg, first, i=1) != version
    assert _save(reg, _train(seed=1)[0]) != version


def test_session_end_in_another_zone_maps_to_the_same_version(reg, model):
    east = SESSION_END.astimezone(timezone(timedelta(hours=3)))
    assert reg.save_candidate(KEY, model, {}, east) == _save(reg, model)


def test_save_rejects_naive_time_reserved_fields_and_unserialisable_card(reg, model):
    with pytest.raises(ValueError, match="timezone-aware"):
        reg.save_candidate(KEY, model, {}, datetime(2024, 1, 2, 8))
    with pytest.raises(RegistryError, match="model_sha256"):
        reg.save_candidate(KEY, model, {"model_sha256": "0" * 64}, SESSION_END)
    with pytest.raises(RegistryError, match="symbol"):
        reg.save_candidate(KEY, model, {"symbol": "GBPUSD"}, SESSION_END)
    with pytest.raises(TypeError, match="JSON"):
        reg.save_candidate(KEY, model, {"bad": object()}, SESSION_END)
    with pytest.raises(RegistryError, match="not trained"):
        reg.save_candidate(KEY, CatBoostClassifier(), {}, SESSION_END)
    assert reg.versions(KEY) == []


def test_card_accepts_numpy_and_datetime_values(reg, model):
    card = {"auc": np.float64(0.61), "rows": np.int64(200), "start": SESSION_END}
    version = reg.save_candidate(KEY, model, card, SESSION_END)
    stored = reg.card(KEY, version)
    assert stored["auc"] == pytest.approx(0.61)
    assert stored["rows"] == 200
    assert stored["start"] == SESSION_END.isoformat()


def test_update_card_adds_fields_but_never_the_checksum(reg, model):
    version = _save(reg, model)
    sha = reg.card(KEY, version)["model_sha256"]

    updated = reg.update_card(KEY, version, validation={"sharpe": 1.2}, gates="passed")

    assert updated["validation"] == {"sharpe": 1.2}
    assert reg.card(KEY, version) == updated
    for field in ("model_sha256", "model_bytes", "version", "symbol"):
        with pytest.raises(RegistryError, match=field):
            reg.update_card(KEY, version, **{field: "x"})
    assert reg.load(KEY, version)[1]["model_sha256"] == sha
    # A re-save keeps the annotated card.
    assert _save(reg, model) == version
    assert reg.card(KEY, version)["gates"] == "passed"


def test_leftover_temp_dir_of_a_killed_save_is_ignored_then_cleaned(reg, model):
    versions_dir = reg.root / KEY.slug / "versions"
    leftover = versions_dir / ".tmp-killed"
    leftover.mkdir(parents=True)
    (leftover / "model.cbm").write_bytes(b"CBM1 half written")
    stale_json = reg.root / KEY.slug / ".tmp-production.json-abc"
    stale_json.write_text("{")

    assert reg.versions(KEY) == []
    assert reg.models() == []

    version = _save(reg, model)

    assert not leftover.exists()
    assert not stale_json.exists()
    assert sorted(p.name for p in versions_dir.iterdir()) == [version]
    reg.load(KEY, version)


def test_versions_are_sorted_and_models_lists_keys_with_versions(reg, model):
    later = _save(reg, model, i=2)
    earlier = _save(reg, model, i=1)
    _save(reg, model, key=OTHER)
    reg.set_health(ModelKey("GBPUSD", "15T"), "degraded", "no versions yet")
    (reg.root / "not_a_model").mkdir()

    assert reg.versions(KEY) == [earlier, later]
    assert reg.models() == [KEY, OTHER]
    assert ModelRegistry(reg.root / "missing").models() == []


# ---- corruption -----------------------------------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "detected_by"),
    [(_flip, "fails its checksum"), (_truncate, "truncated")],
    ids=["flipped", "truncated"],
)
def test_damaged_model_is_refused_and_production_untouched(
    reg, model, monkeypatch, damage, detected_by
):
    good = _save(reg, model, i=0)
    bad = _save(reg, model, i=1)
    assert _promote(reg, good, 0)
    damage(_model_file(reg, bad))
    before = _snapshot(reg.root / KEY.slug)

    def never(*args, **kwargs):
        raise AssertionError("a file that failed verification reached CatBoost")

    # Verification must stop the file before CatBoost parses it.
    monkeypatch.setattr(CatBoostClassifier, "load_model", never)
    with pytest.raises(CorruptModelError, match=detected_by) as caught:
        reg.load(KEY, bad)
    message = str(caught.value)
    assert str(_model_file(reg, bad)) in message
    assert "roll" in message and "retrain" in message
    with pytest.raises(CorruptModelError):
        _promote(reg, bad, 1)

    assert _snapshot(reg.root / KEY.slug) == before
    assert reg.production_version(KEY) == good
    assert [e["version"] for e in reg.history(KEY)] == [good]


def test_corrupt_card_is_refused(reg, model):
    version = _save(reg, model)
    card_path = _model_file(reg, version).with_name("card.json")
    card_path.write_text('{"version": "trunc')

    with pytest.raises(CorruptModelError, match=r"card\.json"):
        reg.load(KEY, version)
    with pytest.raises(CorruptModelError, match=r"card\.json"):
        reg.card(KEY, version)
    with pytest.raises(CorruptModelError):
        _promote(reg, version, 0)
    assert reg.production_version(KEY) is None
    assert not (reg.root / KEY.slug / "history.json").exists()


def test_card_that_lies_about_its_version_or_model_is_refused(reg, model):
    version = _save(reg, model)
    card_path = _model_file(reg, version).with_name("card.json")
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "symbol": "GBPUSD"}))
    with pytest.raises(CorruptModelError, match="belongs to"):
        reg.load(KEY, version)
    card_path.write_text(json.dumps({**card, "model_sha256": "nope"}))
    with pytest.raises(CorruptModelError, match="model_sha256"):
        reg.load(KEY, version)


def test_unparseable_model_with_matching_checksum_is_corrupt(reg, model):
    version = _save(reg, model)
    path = _model_file(reg, version)
    garbage = b"CBM1" + b"\x00" * 64
    path.write_bytes(garbage)
    card_path = path.with_name("card.json")
    card = json.loads(card_path.read_text())
    card.update(model_sha256=hashlib.sha256(garbage).hexdigest(), model_bytes=len(garbage))
    card_path.write_text(json.dumps(card))

    with pytest.raises(CorruptModelError, match="CatBoost cannot read it"):
        reg.load(KEY, version)


def test_missing_model_file_and_unknown_version(reg, model):
    version = _save(reg, model)
    _model_file(reg, version).unlink()
    with pytest.raises(CorruptModelError, match="missing"):
        reg.load(KEY, version)
    with pytest.raises(UnknownVersionError, match="no version"):
        reg.load(KEY, "20990101T0000-0123456789")


def test_resave_repairs_a_corrupt_version(reg, model):
    version = _save(reg, model)
    _flip(_model_file(reg, version))

    assert _save(reg, model) == version

    reg.load(KEY, version)
    assert any(
        p.name.startswith(".corrupt-") for p in _model_file(reg, version).parents[1].iterdir()
    )
    assert reg.versions(KEY) == [version]


# ---- promotion and rollback -----------------------------------------------------------------


def test_promote_switches_pointer_and_records_history(reg, model):
    v1, v2 = _save(reg, model, i=0), _save(reg, model, i=1)
    assert reg.production_version(KEY) is None
    assert reg.production(KEY) is None
    assert reg.history(KEY) == []

    assert _promote(reg, v1, 0)
    assert _promote(reg, v2, 1)

    assert reg.production_version(KEY) == v2
    _, card = reg.production(KEY)
    assert card["version"] == v2
    history = reg.history(KEY)
    assert [(e["version"], e["reason"], e["session"]) for e in history] == [
        (v1, "gates passed 0", "s0"),
        (v2, "gates passed 1", "s1"),
    ]
    assert history[0]["live_from"] == T0.isoformat()
    _assert_consistent(reg, history)


def test_promote_refuses_when_production_changed_since_judging(reg, model):
    v1, v2, v3 = (_save(reg, model, i=i) for i in range(3))
    assert reg.promote(KEY, v1, reason="first", session="s0", expected_live=None)
    # v2 and v3 were both judged against v1; v2 goes live first.
    assert reg.promote(KEY, v2, reason="beat v1", session="s1", expected_live=v1)
    before = {p.name: p.read_bytes() for p in (reg.root / KEY.slug).glob("*.json")}
    with pytest.raises(ProductionChangedError, match=f"judged against production {v1}"):
        reg.promote(KEY, v3, reason="beat v1", session="s2", expected_live=v1)
    assert reg.production_version(KEY) == v2
    assert {p.name: p.read_bytes() for p in (reg.root / KEY.slug).glob("*.json")} == before


def test_promote_twice_is_a_single_deployment(reg, model):
    version = _save(reg, model)
    assert _promote(reg, version, 0) is True
    pointer = (reg.root / KEY.slug / "production.json").read_bytes()

    assert _promote(reg, version, 1) is False

    assert len(reg.history(KEY)) == 1
    assert (reg.root / KEY.slug / "production.json").read_bytes() == pointer


def test_rerun_of_a_session_does_not_put_its_old_model_back(reg, model):
    v1, v2 = _save(reg, model, i=0), _save(reg, model, i=1)
    assert _promote(reg, v1, 0)
    assert _promote(reg, v2, 1)

    assert _promote(reg, v1, 0) is False  # same version, same session: a backfill re-run

    assert reg.production_version(KEY) == v2
    assert len(reg.history(KEY)) == 2


def test_rollback_to_previous_version(reg, model):
    v1, v2 = _save(reg, model, i=0), _save(reg, model, i=1)
    _promote(reg, v1, 0)
    _promote(reg, v2, 1)

    assert reg.rollback(KEY, now=T0 + timedelta(hours=5)) == v1

    assert reg.production_version(KEY) == v1
    history = reg.history(KEY)
    assert [e["version"] for e in history] == [v1, v2, v1]
    assert history[-1]["reason"] == f"rollback from {v2}"
    _assert_consistent(reg, history)


def test_rollback_to_explicit_version(reg, model):
    v1, v2, v3 = (_save(reg, model, i=i) for i in range(3))
    for i, version in enumerate((v1, v2, v3)):
        _promote(reg, version, i)

    assert reg.rollback(KEY, to_version=v1, now=T0 + timedelta(hours=9)) == v1

    assert reg.production_version(KEY) == v1
    assert reg.history(KEY)[-1]["reason"] == f"rollback from {v3}"
    assert reg.rollback(KEY, to_version=v1) == v1  # already live: nothing recorded
    assert len(reg.history(KEY)) == 4


def test_second_rollback_does_not_return_to_the_bad_version(reg, model):
    v1, v2, v3 = (_save(reg, model, i=i) for i in range(3))
    for i, version in enumerate((v1, v2, v3)):
        _promote(reg, version, i)

    assert reg.rollback(KEY, now=T0 + timedelta(hours=5)) == v2
    assert reg.rollback(KEY, now=T0 + timedelta(hours=6)) == v1
    with pytest.raises(RegistryError, match="no earlier deployment"):
        reg.rollback(KEY, now=T0 + timedelta(hours=7))
    _assert_consistent(reg, reg.history(KEY))


def test_rollback_with_nothing_to_roll_back_to(reg, model):
    version = _save(reg, model)
    with pytest.raises(RegistryError, match="no production model"):
        reg.rollback(KEY)
    _promote(reg, version, 0)
    before = _snapshot(reg.root / KEY.slug)

    with pytest.raises(RegistryError, match="no earlier deployment"):
        reg.rollback(KEY)
    with pytest.raises(UnknownVersionError, match="no version"):
        reg.rollback(KEY, to_version="20990101T0000-0123456789")
    with pytest.raises(UnknownVersionError, match="not a version id"):
        reg.rollback(KEY, to_version="../../etc")

    assert _snapshot(reg.root / KEY.slug) == before


def test_rollback_to_corrupt_version_is_refused(reg, model):
    v1, v2 = _save(reg, model, i=0), _save(reg, model, i=1)
    _promote(reg, v1, 0)
    _promote(reg, v2, 1)
    _flip(_model_file(reg, v1))
    before = _snapshot(reg.root / KEY.slug)

    with pytest.raises(CorruptModelError):
        reg.rollback(KEY)

    assert _snapshot(reg.root / KEY.slug) == before


def test_crash_between_history_and_pointer_writes_converges(reg, model, monkeypatch):
    v1, v2, v3 = (_save(reg, model, i=i) for i in range(3))
    _promote(reg, v1, 0)
    real_write = registry_module._write_atomic

    def crash_on_pointer(path: Path, data: bytes) -> None:
        if path.name == "production.json":
            raise KeyboardInterrupt("killed")
        real_write(path, data)

    monkeypatch.setattr(registry_module, "_write_atomic", crash_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        _promote(reg, v2, 1)
    monkeypatch.undo()

    raw = json.loads((reg.root / KEY.slug / "history.json").read_text())["entries"]
    assert [e["version"] for e in raw] == [v1, v2]  # the half-done promotion
    assert reg.production_version(KEY) == v1
    assert [e["version"] for e in reg.history(KEY)] == [v1]
    _assert_consistent(reg, reg.history(KEY))

    assert _promote(reg, v3, 2)

    history = reg.history(KEY)
    assert [e["version"] for e in history] == [v1, v3]
    _assert_consistent(reg, history)
    raw = json.loads((reg.root / KEY.slug / "history.json").read_text())["entries"]
    assert raw == history
    # The session whose promotion crashed can deploy on its re-run.
    assert _promote(reg, v2, 1)


def test_unreadable_pointer_is_reported_and_repaired_by_promote(reg, model):
    v1, v2 = _save(reg, model, i=0), _save(reg, model, i=1)
    _promote(reg, v1, 0)
    (reg.root / KEY.slug / "production.json").write_text("{not json")

    with pytest.raises(CorruptModelError, match=r"production\.json"):
        reg.production(KEY)

    assert _promote(reg, v2, 1)
    assert reg.production_version(KEY) == v2
    _assert_consistent(reg, reg.history(KEY))


def test_pointer_to_a_missing_version_is_corrupt(reg, model):
    version = _save(reg, model)
    _promote(reg, version, 0)
    folder = _model_file(reg, version).parent
    folder.rename(folder.with_name(".gone"))

    with pytest.raises(CorruptModelError, match="not stored"):
        reg.production(KEY)


def _promote_worker(root: str, versions: list[str], worker: int, rounds: int, barrier) -> list:
    reg = ModelRegistry(root)
    barrier.wait()
    won = []
    for i in range(rounds):
        version = versions[(worker + i) % len(versions)]
        session = f"w{worker}-r{i}"
        if reg.promote(KEY, version, reason=f"worker {worker}", session=session):
            won.append(session)
    return won


def _run_worker(queue, *args) -> None:
    queue.put(_promote_worker(*args))


def test_concurrent_promotions_from_several_processes_lose_nothing(reg, model):
    versions = [_save(reg, model, i=i) for i in range(5)]
    workers, rounds = 4, 12
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_run_worker, args=(queue, str(reg.root), versions, w, rounds, barrier))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    won = [session for _ in procs for session in queue.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    history = reg.history(KEY)
    assert len(won) > workers  # the workers really interleaved
    assert sorted(e["session"] for e in history) == sorted(won)  # no deployment lost
    _assert_consistent(reg, history)


# ---- health, path safety, Dagster resource --------------------------------------------------


def test_health_flag(reg, model):
    assert reg.health(KEY)["status"] == "ok"

    reg.set_health(KEY, "degraded", "hit rate below benchmark", now=T0)

    assert reg.health(KEY) == {
        "status": "degraded",
        "reason": "hit rate below benchmark",
        "version": None,
        "updated_at": T0.isoformat(),
    }
    reg.set_health(KEY, "enabled", "operator override", version="v1", now=T0)
    assert reg.health(KEY)["version"] == "v1"
    reg.set_health(KEY, "ok", "recovered")
    assert reg.health(KEY)["status"] == "ok"
    with pytest.raises(ValueError, match="degraded"):
        reg.set_health(KEY, "broken", "")
    (reg.root / KEY.slug / "health.json").write_text("[]")
    with pytest.raises(CorruptModelError, match=r"health\.json"):
        reg.health(KEY)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ModelKey("..", "30T"),
        lambda: ModelKey("../x", "30T"),
        lambda: ModelKey("EURUSD", "../30T"),
        lambda: ModelKey.parse("../x"),
        lambda: ModelKey.parse("EURUSD/../../30T"),
    ],
)
def test_model_key_cannot_escape_the_root(build):
    with pytest.raises(UnknownModelError):
        build()


def test_registry_rejects_tampered_keys_and_version_paths(reg, model):
    version = _save(reg, model)
    tampered = ModelKey("EURUSD", "30T")
    object.__setattr__(tampered, "symbol", "../../outside")
    with pytest.raises(UnknownModelError):
        reg.versions(tampered)
    with pytest.raises(TypeError):
        reg.versions("EURUSD_30T")  # type: ignore[arg-type]
    for bad in ("../../x", f"{version}/../..", "", version.upper()):
        with pytest.raises(UnknownVersionError):
            reg.load(KEY, bad)
    assert not (reg.root.parent / "outside").exists()


def test_dagster_resource_builds_the_registry(tmp_path):
    resource = ModelRegistryResource(root=str(tmp_path))
    assert resource.registry().root == tmp_path
    field = ModelRegistryResource.to_config_schema().as_field().config_type.fields["root"]
    assert "fcntl.flock" in field.description


def test_loaded_file_is_native_catboost_format_only(reg, model):
    version = _save(reg, model)
    assert not any(
        name.endswith((".pkl", ".pickle", ".joblib"))
        for _, _, files in os.walk(reg.root)
        for name in files
    )
    assert reg.load(KEY, version)[0].is_fitted()
