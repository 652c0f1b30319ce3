"""Model types: the CatBoost implementation of ``Estimator``, and the registry reading a second
type by its file name (a model type is one module implementing the interface)."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier

from session_learning.domain import estimators
from session_learning.domain.estimators import (
    CatBoostEstimator,
    Estimator,
    ModelFormatError,
    as_estimator,
)
from session_learning.domain.keys import ModelKey
from session_learning.resources.registry import CorruptModelError, ModelRegistry
from session_learning.resources.registry import storage as registry_module

PARAMS = {"loss_function": "MultiClass", "iterations": 20, "depth": 3, "random_seed": 0}
PARAMS |= {"verbose": False}
PARAMS |= {"allow_writing_files": False, "thread_count": 1}
CLASSES = (-1, 0, 1)


def _data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = pd.Series(np.sign(x["a"] + 0.5 * rng.normal(size=300)).astype(int))
    return x, y, np.ones(len(x))


def _fitted(seed: int = 0) -> tuple[CatBoostEstimator, pd.DataFrame]:
    x, y, w = _data(seed)
    return CatBoostEstimator.create(PARAMS, CLASSES).fit(x, y, sample_weight=w), x


def test_catboost_round_trip_is_the_same_model_and_the_same_bytes(tmp_path):
    model, x = _fitted()
    assert model.is_fitted() and model.predict_proba(x).shape == (len(x), 3)
    model.save(tmp_path / "a.cbm")
    again, _ = _fitted()  # a fresh fit: CatBoost gives it another GUID and timestamp
    again.save(tmp_path / "b.cbm")
    data = (tmp_path / "a.cbm").read_bytes()
    assert data[:4] == b"CBM1" and data == (tmp_path / "b.cbm").read_bytes()
    loaded = CatBoostEstimator.load(data)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert "model_guid" in model.model.get_metadata()  # saving leaves the caller's model alone


def test_a_pickle_is_not_a_catboost_model_and_runs_no_code():
    with pytest.raises(ModelFormatError):
        CatBoostEstimator.load(pickle.dumps({"not": "a model"}))
    with pytest.raises(ModelFormatError):
        CatBoostEstimator.load(b"")


def test_as_estimator_wraps_a_bare_model_and_refuses_anything_else():
    bare = CatBoostClassifier()
    wrapped = as_estimator(bare)
    assert isinstance(wrapped, CatBoostEstimator) and wrapped.model is bare
    assert as_estimator(wrapped) is wrapped
    with pytest.raises(TypeError, match="expected a CatBoost model, got dict"):
        as_estimator({})


class PriorEstimator(Estimator):
    """A second model type, as small as one can be: the class frequencies, stored as JSON."""

    file_name = "model.prior.json"
    library = "Prior"
    native = type(None)

    def __init__(self, classes: tuple[int, ...], prior: list[float] | None = None) -> None:
        self.classes, self.prior = classes, prior

    @classmethod
    def create(cls, params, classes) -> Self:
        return cls(tuple(classes))

    def fit(self, x, y, sample_weight) -> Self:
        total = float(np.sum(sample_weight))
        self.prior = [float(np.sum(sample_weight[y.to_numpy() == c])) / total for c in self.classes]
        return self

    def predict_proba(self, x) -> np.ndarray:
        return np.tile(self.prior, (len(x), 1))

    def is_fitted(self) -> bool:
        return self.prior is not None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"classes": self.classes, "prior": self.prior}))

    @classmethod
    def load(cls, data: bytes) -> Self:
        try:
            stored = json.loads(data)
            return cls(tuple(stored["classes"]), stored["prior"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFormatError(f"not a prior model: {exc}") from exc


def test_a_new_model_type_is_stored_and_read_back_by_its_file_name(tmp_path, monkeypatch):
    types = (CatBoostEstimator, PriorEstimator)
    monkeypatch.setattr(estimators, "MODEL_TYPES", types)
    monkeypatch.setattr(registry_module, "MODEL_TYPES", types)
    registry, key = ModelRegistry(tmp_path), ModelKey("EURUSD", "30T")
    x, y, w = _data()
    prior = PriorEstimator.create({}, CLASSES).fit(x, y, sample_weight=w)
    cat, _ = _fitted()
    end = datetime(2024, 1, 2, 8, tzinfo=UTC)

    v_prior = registry.save_candidate(key, prior, {"features": ["a", "b", "c"]}, end)
    v_cat = registry.save_candidate(key, cat, {"features": ["a", "b", "c"]}, end)

    folder = tmp_path / key.slug / "versions"
    assert {p.name for p in (folder / v_prior).iterdir()} == {"model.prior.json", "card.json"}
    assert {p.name for p in (folder / v_cat).iterdir()} == {"model.cbm", "card.json"}
    loaded, _ = registry.load(key, v_prior)
    assert isinstance(loaded, PriorEstimator)
    np.testing.assert_array_equal(loaded.predict_proba(x), prior.predict_proba(x))
    assert isinstance(registry.load(key, v_cat)[0], CatBoostEstimator)

    # Bytes that match the card's checksum but are not the type's format: one clear error.
    path = folder / v_prior / "model.prior.json"
    card_path = folder / v_prior / "card.json"
    card = json.loads(card_path.read_text())
    bad = b"[]"
    path.write_bytes(bad)
    card |= {"model_bytes": len(bad), "model_sha256": hashlib.sha256(bad).hexdigest()}
    card["card_sha256"] = registry_module.card_digest(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(CorruptModelError, match="Prior cannot read it"):
        registry.load(key, v_prior)
