"""Code location of the browser test: the real definitions with the fast learning settings of
the asset tests, so a candidate trains in about a second.

The webserver loads it with ``dagster-webserver -m tests.e2e.ui_app -a defs``; the models, home
and journal come from the same SESSION_LEARNING_* variables as the production code location. The
test seeds the instance in-process through ``build_ui_definitions`` with the same environment,
so the UI shows exactly the assets the runs materialized.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from session_learning.definitions import build_definitions
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.settings import Settings
from tests.assets.conftest import FAST_LEARNING, PERMISSIVE


def build_ui_definitions(
    env: Mapping[str, str] | None = None, **learning: object
) -> dg.Definitions:
    """The code location for ``env`` (default: the process environment) with fast learning,
    permissive gates unless ``learning`` overrides them."""
    settings = Settings.from_env(os.environ if env is None else env)
    resource = LearningSettingsResource(**{**FAST_LEARNING, **PERMISSIVE, **learning})
    return build_definitions(settings, resource_overrides={"learning_settings": resource})


@dg.definitions
def defs() -> dg.Definitions:
    """Read when the code server loads, not at import."""
    return build_ui_definitions()
