"""CatBoost as a model type: ``CatBoostClassifier`` stored as ``.cbm`` (its native format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
from catboost import CatBoost, CatBoostClassifier, CatBoostError

from session_learning.domain.estimators.base import Estimator, ModelFormatError

# CatBoost writes a random GUID and the training wall-clock time into every model; they are
# dropped from the saved copy so that identical training yields identical bytes (and version).
_VOLATILE_METADATA = ("model_guid", "train_finish_time")


class CatBoostEstimator(Estimator):
    """A CatBoost classifier (``model``); saved as ``model.cbm``."""

    file_name = "model.cbm"
    library = "CatBoost"
    native = CatBoost

    def __init__(self, model: CatBoost) -> None:
        self.model = model

    @classmethod
    def create(cls, params: Mapping[str, Any], classes: Sequence[int]) -> Self:
        return cls(CatBoostClassifier(**params, class_names=list(classes)))

    def fit(self, x: pd.DataFrame, y: pd.Series, sample_weight: np.ndarray) -> Self:
        self.model.fit(x, y, sample_weight=sample_weight)
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(x)

    def is_fitted(self) -> bool:
        return self.model.is_fitted()

    def save(self, path: Path) -> None:
        clone = self.model.copy()  # the caller's model keeps its metadata
        metadata = clone.get_metadata()
        for name in _VOLATILE_METADATA:
            if name in metadata:
                del metadata[name]
        clone.save_model(str(path), format="cbm")

    @classmethod
    def load(cls, data: bytes) -> Self:
        model = CatBoostClassifier()
        try:
            # The native reader only: a pickle in place of a model is refused, never run.
            model.load_model(blob=data, format="cbm")
        except CatBoostError as exc:
            raise ModelFormatError(str(exc)) from exc
        return cls(model)
