"""Model types: what the learning step trains, the registry stores and the signals score.

A model type is one module here implementing ``Estimator`` (fit, predict_proba, save, load
without running code), listed in ``MODEL_TYPES``. The registry stores a version's model in its
type's ``file_name`` and reads it back with that type.
"""

from __future__ import annotations

from session_learning.domain.estimators.base import Estimator, ModelFormatError
from session_learning.domain.estimators.catboost_model import CatBoostEstimator

__all__ = [
    "DEFAULT_MODEL_TYPE",
    "MODEL_TYPES",
    "CatBoostEstimator",
    "Estimator",
    "ModelFormatError",
    "as_estimator",
]

#: Every model type the registry can read, by ``file_name``; the first is the default.
MODEL_TYPES: tuple[type[Estimator], ...] = (CatBoostEstimator,)
DEFAULT_MODEL_TYPE: type[Estimator] = MODEL_TYPES[0]


def as_estimator(model: object) -> Estimator:
    """``model`` as an ``Estimator``: itself, or a bare library model wrapped by its type."""
    if isinstance(model, Estimator):
        return model
    for model_type in MODEL_TYPES:
        if isinstance(model, model_type.native):
            return model_type(model)  # type: ignore[call-arg]
    libraries = " or ".join(t.library for t in MODEL_TYPES)
    raise TypeError(f"expected a {libraries} model, got {type(model).__name__}")
