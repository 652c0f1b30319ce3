"""The interface every model type implements: fit, class probabilities, save, safe load."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd


class ModelFormatError(ValueError):
    """Bytes that are not a model of the type asked to read them."""


class Estimator(ABC):
    """A classifier of the classes short/flat/long, stored in its library's native format.

    An implementation wraps one library's model (``native``); it is chosen for a stored model
    by its ``file_name`` in the registry's version folder.
    """

    #: The model file of a registry version, e.g. ``model.cbm``.
    file_name: ClassVar[str]
    #: The library's name, for errors ("CatBoost cannot read it").
    library: ClassVar[str]
    #: The library's model class: ``cls(model)`` wraps a bare one (see ``as_estimator``).
    native: ClassVar[type]

    @classmethod
    @abstractmethod
    def create(cls, params: Mapping[str, Any], classes: Sequence[int]) -> Self:
        """An untrained model with the library's ``params``; ``classes`` in column order."""

    @abstractmethod
    def fit(self, x: pd.DataFrame, y: pd.Series, sample_weight: np.ndarray) -> Self:
        """Train on the rows ``x`` with labels ``y`` and weights; returns ``self``."""

    @abstractmethod
    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        """Class probabilities of the rows ``x``, one column per class in ``create``'s order."""

    @abstractmethod
    def is_fitted(self) -> bool:
        """True once the model is trained."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the model to ``path`` in the library's native format (never pickle): the same
        training gives the same bytes (no ids or timestamps)."""

    @classmethod
    @abstractmethod
    def load(cls, data: bytes) -> Self:
        """The model in ``data`` (bytes ``save`` wrote), read without running any code;
        ``ModelFormatError`` if they are not such a model."""
