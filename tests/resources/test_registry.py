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

from session_learning.domain.keys import ModelKey, UnknownModelError
from session_learning.resources import registry as registry_module
from session_learning.resources.registry import (
    CorruptModelError,
    LegacyRegistryError,
    ModelRegistry,
    ModelRegistryResource,
    NeverLiveError,
    NotJudgedError,
    ProductionChangedError,
    RegistryError,
    UnknownVersionError,
    card_digest,
)
from session_learning.resources.registry import deployments as deployments_module
from tests.judgements import arena_evidence, judge, judge_and_promote, judgement

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
    return judge_and_promote(
        reg, KEY, version, reason=f"gates passed {i}", session=f"s{i}", now=T0 + timedelta(hours=i)
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


def test_update_card_adds_annotations_but_never_changes_a_sealed_field(reg, model):
    version = _save(reg, model)
    card = reg.card(KEY, version)
    assert card["card_sha256"] == card_digest(card)

    updated = reg.update_card(KEY, version, review={"by": "desk"}, note="looks fine")

    assert updated["annotations"] == {"review": {"by": "desk"}, "note": "looks fine"}
    assert reg.card(KEY, version) == updated
    assert updated["card_sha256"] == card["card_sha256"]  # annotations are outside the seal
    # Anything that was saved with the version (and so decides how it trades) is sealed.
    for field in ("features", "data_window"):
        with pytest.raises(RegistryError, match=rf"\['{field}'\] were sealed.*new version"):
            reg.update_card(KEY, version, **{field: ["x"]})
    for field in ("model_sha256", "model_bytes", "version", "symbol", "card_sha256"):
        with pytest.raises(RegistryError, match=field):
            reg.update_card(KEY, version, **{field: "x"})
    assert reg.card(KEY, version)["features"] == card["features"]
    reg.load(KEY, version)
    # A re-save keeps the annotated card.
    assert _save(reg, model) == version
    assert reg.card(KEY, version)["annotations"]["note"] == "looks fine"


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
    card_path.write_text(json.dumps({**card, "card_sha256": card_digest(card)}))

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
    assert _promote(reg, v1, 0)
    # v2 and v3 were both judged against v1; v2 goes live first.
    judge(reg, KEY, v2)
    judge(reg, KEY, v3)
    assert reg.promote(KEY, v2, reason="beat v1", session="s1")
    before = _snapshot(reg.root / KEY.slug)
    with pytest.raises(ProductionChangedError, match=f"judged against production {v1}") as err:
        reg.promote(KEY, v3, reason="beat v1", session="s2")
    assert f"{v2} is live now" in str(err.value) and "candidate_model" in str(err.value)
    assert reg.production_version(KEY) == v2
    assert _snapshot(reg.root / KEY.slug) == before
    # Judged again against the model it would replace, it may go live.
    judge(reg, KEY, v3)
    assert reg.promote(KEY, v3, reason="beat v2", session="s2")
    assert [e["version"] for e in reg.history(KEY)] == [v1, v2, v3]


def test_promote_refuses_a_version_that_was_never_judged(reg, model):
    live, never = _save(reg, model, i=0), _save(reg, model, i=1)
    assert _promote(reg, live, 0)
    before = _snapshot(reg.root / KEY.slug)
    with pytest.raises(NotJudgedError) as err:
        reg.promote(KEY, never, reason="manual", session="s1")
    message = str(err.value)
    assert never in message and "no judgement record" in message
    assert "EURUSD_30T/candidate_model" in message and "Nothing was changed" in message
    assert reg.promotion_refusal(KEY, never) in message
    assert _snapshot(reg.root / KEY.slug) == before


@pytest.mark.parametrize(
    ("record", "named"),
    [
        (
            lambda live: judgement(live, failed=("profit_factor_above_threshold",)),
            "failed profit_factor_above_threshold",
        ),
        (
            lambda live: judgement(live, gates=("profit_factor_above_threshold",)),
            "never judged on max_drawdown_below_threshold, win_rate_above_threshold",
        ),
        (
            lambda live: {**judgement(live), "decision": "rejected", "reasons": ["evidence"]},
            "was rejected: evidence",
        ),
    ],
    ids=["failed-gate", "missing-gates", "rejected-decision"],
)
def test_promote_refuses_a_failed_or_incomplete_judgement(reg, model, record, named):
    live, bad = _save(reg, model, i=0), _save(reg, model, i=1)
    assert _promote(reg, live, 0)
    reg.record_judgement(KEY, bad, record(live))
    before = _snapshot(reg.root / KEY.slug)
    with pytest.raises(NotJudgedError, match="did not pass its gates") as err:
        reg.promote(KEY, bad, reason="rejected: but deploy it", session="s1")
    assert bad in str(err.value) and named in str(err.value)
    assert f"against {live}" in str(err.value)
    assert _snapshot(reg.root / KEY.slug) == before
    assert reg.production_version(KEY) == live


def test_judgement_records_are_validated_and_sealed(reg, model):
    version = _save(reg, model)
    with pytest.raises(RegistryError, match="says passed but gates"):
        failed = judgement(None, failed=("win_rate_above_threshold",))
        reg.record_judgement(KEY, version, {**failed, "decision": "passed"})
    with pytest.raises(RegistryError, match="set by the registry"):
        reg.record_judgement(KEY, version, {**judgement(None), "card_sha256": "0" * 64})
    with pytest.raises(RegistryError, match="lacks"):
        reg.record_judgement(KEY, version, {"gates": [], "decision": "passed"})
    with pytest.raises(RegistryError, match="evidence"):
        reg.record_judgement(KEY, version, {**judgement(None), "evidence": [1, 2]})
    assert reg.judgement(KEY, version) is None

    evidence = {"e_value": 21.5, "sessions": 9}
    record = reg.record_judgement(KEY, version, {**judgement(None), "evidence": evidence})
    card = reg.card(KEY, version)
    assert record["model_sha256"] == card["model_sha256"]
    assert record["card_sha256"] == card["card_sha256"]
    assert reg.judgement(KEY, version) == record and record["evidence"] == evidence
    # The version's checksum covers the judgement: judged again, the checksum changes.
    before = reg.checksum(KEY, version)
    reg.record_judgement(KEY, version, judgement(None, judged_at="2024-01-03T08:00:00+00:00"))
    assert reg.checksum(KEY, version) != before

    # Once live, the judgement it went live under is kept.
    assert reg.promote(KEY, version, reason="passed", session="s0")
    with pytest.raises(RegistryError, match="went live under its judgement"):
        reg.record_judgement(KEY, version, judgement(None))


def test_a_judgement_edited_by_hand_is_refused(reg, model):
    live, bad = _save(reg, model, i=0), _save(reg, model, i=1)
    assert _promote(reg, live, 0)
    reg.record_judgement(KEY, bad, judgement(live, failed=("enough_validation_trades",)))
    path = _model_file(reg, bad).with_name("judgement.json")
    record = json.loads(path.read_text())
    for gate in record["gates"]:
        gate["passed"] = True
    path.write_text(json.dumps({**record, "decision": "passed"}))
    with pytest.raises(CorruptModelError, match="edited after it was recorded"):
        reg.promote(KEY, bad, reason="looks passed now", session="s1")
    with pytest.raises(CorruptModelError, match="edited after it was recorded"):
        reg.load(KEY, bad)
    assert reg.production_version(KEY) == live


def _edit_card(reg: ModelRegistry, version: str, reseal: bool, **fields) -> None:
    path = _model_file(reg, version).with_name("card.json")
    card = {**json.loads(path.read_text()), **fields}
    if reseal:
        card["card_sha256"] = card_digest(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("reseal", "detected_by"),
    [(False, "changed after the version was saved"), (True, "judged another card")],
    ids=["card-edited", "card-edited-and-resealed"],
)
def test_a_card_changed_after_judgement_refuses_to_load_promote_or_serve(
    reg, model, reseal, detected_by
):
    live, judged = _save(reg, model, i=0), _save(reg, model, i=1)
    assert _promote(reg, live, 0)
    judge(reg, KEY, judged)
    for version in (live, judged):
        _edit_card(reg, version, reseal, trading_rule={"min_confidence": 0.0})
    before = _snapshot(reg.root / KEY.slug)

    for call in (
        lambda: reg.load(KEY, judged),
        lambda: reg.promote(KEY, judged, reason="passed", session="s1"),
        lambda: reg.production(KEY),  # the live scorer's entry point
    ):
        with pytest.raises(CorruptModelError, match=detected_by) as err:
            call()
        assert "roll" in str(err.value)
    assert _snapshot(reg.root / KEY.slug) == before


def test_a_live_version_whose_files_were_all_replaced_consistently_is_refused(reg, model):
    """Even a card and judgement rewritten with fresh seals do not pass for what went live."""
    version = _save(reg, model)
    assert _promote(reg, version, 0)
    _edit_card(reg, version, True, features=["f0"])
    path = _model_file(reg, version).with_name("judgement.json")
    record = json.loads(path.read_text())
    record["card_sha256"] = reg.card(KEY, version)["card_sha256"]
    record["judgement_sha256"] = registry_module.judgement_digest(record)
    path.write_text(json.dumps(record))
    reg.load(KEY, version)  # self-consistent on its own ...
    with pytest.raises(CorruptModelError, match="changed after it was promoted"):
        reg.production(KEY)  # ... but not the version that went live


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


def test_rollback_to_a_version_that_was_never_live_needs_force_and_a_reason(reg, model):
    v1, v2, never = (_save(reg, model, i=i) for i in range(3))
    _promote(reg, v1, 0)
    _promote(reg, v2, 1)
    reg.record_judgement(KEY, never, judgement(v2, failed=("win_rate_above_threshold",)))
    before = _snapshot(reg.root / KEY.slug)

    with pytest.raises(NeverLiveError, match="was never live") as err:
        reg.rollback(KEY, to_version=never)
    assert never in str(err.value) and v1 in str(err.value)  # names where it may go instead
    assert "--force --reason" in str(err.value) and "Nothing was changed" in str(err.value)
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.rollback(KEY, to_version=never, force=True)
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.rollback(KEY, to_version=never, force=True, reason="  ")
    assert _snapshot(reg.root / KEY.slug) == before

    now = T0 + timedelta(hours=5)
    assert reg.rollback(KEY, to_version=never, force=True, reason="desk review #12", now=now)
    last = reg.history(KEY)[-1]
    assert last["version"] == never and last["kind"] == "rollback" and last["forced"] is True
    assert last["reason"] == f"rollback from {v2} (forced: desk review #12)"
    assert reg.production(KEY)[1]["version"] == never
    # Once live, even by force, history proves it: a later plain rollback may return to it.
    assert reg.rollback(KEY, to_version=v1, now=now + timedelta(hours=1)) == v1
    assert reg.rollback(KEY, to_version=never, now=now + timedelta(hours=2)) == never
    assert reg.history(KEY)[-1]["forced"] is False


def test_rollback_refuses_a_version_changed_since_it_was_live(reg, model):
    v1, v2, forced = (_save(reg, model, i=i) for i in range(3))
    _promote(reg, v1, 0)
    _promote(reg, v2, 1)
    reg.update_card(KEY, v1, note="annotations are outside the checksum")
    assert reg.rollback(KEY, now=T0 + timedelta(hours=3)) == v1  # still the version that was live
    assert reg.rollback(KEY, to_version=v2, now=T0 + timedelta(hours=4)) == v2

    _edit_card(reg, v1, True, features=["f0"])  # resealed: its judgement no longer matches
    with pytest.raises(CorruptModelError, match="judged another card"):
        reg.rollback(KEY, to_version=v1)
    # A version forced live without a judgement, judged later: history recorded the checksum
    # it had when it was live, and it no longer has it.
    reg.rollback(KEY, to_version=forced, force=True, reason="test", now=T0 + timedelta(hours=5))
    reg.rollback(KEY, to_version=v2, now=T0 + timedelta(hours=6))
    reg.record_judgement(KEY, forced, judgement(v2))
    with pytest.raises(NeverLiveError, match="changed since it was live"):
        reg.rollback(KEY, to_version=forced)
    assert reg.production_version(KEY) == v2


def test_crash_between_history_and_pointer_writes_converges(reg, model, monkeypatch):
    v1, v2, v3 = (_save(reg, model, i=i) for i in range(3))
    _promote(reg, v1, 0)
    real_write = deployments_module._write_atomic

    def crash_on_pointer(path: Path, data: bytes) -> None:
        if path.name == "production.json":
            raise KeyboardInterrupt("killed")
        real_write(path, data)

    monkeypatch.setattr(deployments_module, "_write_atomic", crash_on_pointer)
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
    reg.record_judgement(KEY, v2, judgement(v1, evidence=arena_evidence(v2, champion=v1)))
    (reg.root / KEY.slug / "production.json").write_text("{not json")

    with pytest.raises(CorruptModelError, match=r"production\.json"):
        reg.production(KEY)

    assert reg.promote(KEY, v2, reason="beat v1", session="s1")
    assert reg.production_version(KEY) == v2
    _assert_consistent(reg, reg.history(KEY))
    assert reg.production(KEY)[1]["version"] == v2


def test_pointer_to_a_missing_version_is_corrupt(reg, model):
    version = _save(reg, model)
    _promote(reg, version, 0)
    folder = _model_file(reg, version).parent
    folder.rename(folder.with_name(".gone"))

    with pytest.raises(CorruptModelError, match="not stored"):
        reg.production(KEY)


def _promote_worker(root: str, versions: list[str], worker: int, barrier) -> list:
    """Judge each of this worker's versions against what is live, then promote it; a
    promotion that lost the race to another worker is refused (compare-and-swap)."""
    reg = ModelRegistry(root)
    barrier.wait()
    won, refused = [], 0
    for i, version in enumerate(versions):
        session = f"w{worker}-r{i}"
        judge(reg, KEY, version)
        try:
            if reg.promote(KEY, version, reason=f"worker {worker}", session=session):
                won.append(session)
        except ProductionChangedError:
            refused += 1
    return [won, refused]


def _run_worker(queue, *args) -> None:
    queue.put(_promote_worker(*args))


def test_concurrent_promotions_from_several_processes_lose_nothing(reg, model):
    workers, rounds = 4, 10
    versions = [_save(reg, model, i=i) for i in range(workers * rounds)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_run_worker,
            args=(queue, str(reg.root), versions[w::workers], w, barrier),
        )
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    won = [session for sessions, _ in results for session in sessions]
    refused = sum(count for _, count in results)

    history = reg.history(KEY)
    assert len(won) > workers  # the workers really interleaved
    assert len(won) + refused == workers * rounds  # every attempt either won or was refused
    assert sorted(e["session"] for e in history) == sorted(won)  # no deployment lost
    _assert_consistent(reg, history)
    # Compare-and-swap: every deployment replaced exactly the version it was judged against.
    for before, after in itertools.pairwise([None, *history]):
        baseline = reg.judgement(KEY, after["version"])["baseline_version"]
        assert baseline == (before["version"] if before else None)


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


# ---- registries written by the previous format ----------------------------------------------


def _to_previous_format(reg: ModelRegistry, passed: dict[str, bool]) -> None:
    """Rewrite a registry as the previous code left it: no card or version checksums, the gate
    results in the card, no judgement records."""
    folder = reg.root / KEY.slug
    for version, ok in passed.items():
        path = folder / "versions" / version / "card.json"
        card = json.loads(path.read_text())
        del card["card_sha256"]
        card["gates"] = judgement(None, failed=() if ok else ("win_rate_above_threshold",))["gates"]
        card.update(passed_gates=ok, validation_metrics={"trades": 120}, session="s-old")
        path.write_text(json.dumps(card))
        (path.parent / "judgement.json").unlink(missing_ok=True)
    pointer = json.loads((folder / "production.json").read_text())
    del pointer["checksum"]
    (folder / "production.json").write_text(json.dumps(pointer))
    history = json.loads((folder / "history.json").read_text())
    for entry in history["entries"]:
        for field in ("checksum", "judged_at", "forced"):
            entry.pop(field, None)
    (folder / "history.json").write_text(json.dumps(history))


def test_a_registry_of_the_previous_format_is_refused_until_upgraded(reg, model):
    live, passed, rejected = (_save(reg, model, i=i) for i in range(3))
    _promote(reg, live, 0)
    _to_previous_format(reg, {live: True, passed: True, rejected: False})
    before = _snapshot(reg.root / KEY.slug)

    for call in (
        lambda: reg.production(KEY),
        lambda: reg.load(KEY, passed),
        lambda: reg.promote(KEY, passed, reason="old", session="s1"),
    ):
        with pytest.raises(LegacyRegistryError, match="session-learning upgrade-registry"):
            call()
    assert _snapshot(reg.root / KEY.slug) == before

    done = reg.upgrade(now=T0)
    assert f"{KEY.slug} {passed}: judgement recorded from its card (passed)" in done
    assert f"{KEY.slug} {rejected}: judgement recorded from its card (rejected)" in done
    assert f"{KEY.slug}: production pointer to {live} sealed" in done
    assert reg.upgrade(now=T0) == []  # a second run changes nothing

    assert reg.production(KEY)[1]["version"] == live
    assert reg.card(KEY, passed)["validation_metrics"] == {"trades": 120}  # kept, now sealed
    old = reg.judgement(KEY, rejected)
    assert old["decision"] == "rejected" and old["partition"] == "s-old"
    with pytest.raises(NotJudgedError, match="failed win_rate_above_threshold"):
        reg.promote(KEY, rejected, reason="old", session="s2")
    # The upgraded judgements name no baseline (the old cards had no parent version), so the
    # passed candidate was judged against no production model: not against the live one.
    with pytest.raises(ProductionChangedError, match=f"{live} is live now"):
        reg.promote(KEY, passed, reason="old", session="s1")
    assert reg.history(KEY)[-1]["checksum"] == reg.checksum(KEY, live)


def test_upgrade_command_reports_what_it_sealed(tmp_path, model, monkeypatch, capsys):
    from session_learning.cli import main

    reg = ModelRegistry(tmp_path / "home" / "models")
    version = _save(reg, model)
    _promote(reg, version, 0)
    _to_previous_format(reg, {version: True})
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSION_LEARNING_MODELS", "EURUSD:30T")
    assert main(["status"]) == 2  # one clear line, not a traceback
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run `session-learning upgrade-registry`" in err
    assert main(["upgrade-registry"]) == 0
    out = capsys.readouterr().out
    assert f"{version}: card sealed" in out and "upgraded" in out
    assert reg.production(KEY)[1]["version"] == version
