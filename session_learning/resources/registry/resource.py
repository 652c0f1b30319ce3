"""``ModelRegistry``, assembled from its parts, and the Dagster resource that hands it to
assets.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from session_learning.resources.registry.arena_state import ArenaState
from session_learning.resources.registry.deployments import Deployments
from session_learning.resources.registry.judgements import JudgementRecords
from session_learning.resources.registry.upgrade import FormatUpgrade, HealthFlag
from session_learning.resources.registry.versions import VersionStore


class ModelRegistry(
    VersionStore, JudgementRecords, Deployments, ArenaState, FormatUpgrade, HealthFlag
):
    """Versioned model store on a local directory; safe for several processes at once.

    Every path is derived from a validated ``ModelKey`` and a validated version id, so nothing
    can be read or written outside ``root``.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"


class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry as a Dagster resource; assets call ``.registry()`` for the API."""

    root: str = Field(
        description=(
            "Directory holding every model's versions, production pointer and deployment "
            "history. Must be on a local POSIX filesystem: promotions rely on fcntl.flock."
        )
    )

    def registry(self) -> ModelRegistry:
        """A ``ModelRegistry`` rooted at ``root``."""
        return ModelRegistry(self.root)
