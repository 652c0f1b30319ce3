"""Assembles the code location: assets, checks, jobs, schedules and resources. Nothing else."""

from __future__ import annotations

import dagster as dg

from session_learning.assets.arena import build_arena_assets
from session_learning.assets.live import build_live_assets
from session_learning.assets.models import build_model_assets
from session_learning.assets.performance import build_performance_assets
from session_learning.assets.session import build_session_assets
from session_learning.executors import build_executor
from session_learning.jobs import build_jobs
from session_learning.partitions import build_session_partitions
from session_learning.resources.arena import ArenaSettingsResource
from session_learning.resources.exports import TradeExportsResource
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.learning_settings import (
    LearningSettingsResource,
    ModelWindowsConfig,
)
from session_learning.resources.market_data import (
    FileMarketDataResource,
    MarketDataResource,
    PolygonMarketDataResource,
    SyntheticMarketDataResource,
)
from session_learning.resources.registry import ModelRegistryResource
from session_learning.resources.value_store import ValueStoreIOManager
from session_learning.schedules import build_schedules
from session_learning.sensors import build_sensors
from session_learning.settings import (
    JOURNAL_URL_VAR,
    MARKET_DATA_CHOICES,
    MARKET_DATA_VAR,
    POLYGON_KEY_VAR,
    Settings,
    SettingsError,
)


def build_market_data(settings: Settings) -> MarketDataResource:
    """The market-data source named by ``settings.market_data_source`` (which refuses to
    guess for a deployment on its own journal)."""
    source = settings.market_data_source
    calendars = dict(settings.calendars)
    if source == "synthetic":
        return SyntheticMarketDataResource(seed=settings.synthetic_seed, calendars=calendars)
    gaps = settings.gap_limits()
    if source.startswith("files:") and source.removeprefix("files:").strip():
        return FileMarketDataResource(
            directory=source.removeprefix("files:"), calendars=calendars, **gaps
        )
    if source == "polygon":
        return PolygonMarketDataResource(
            api_key=dg.EnvVar(POLYGON_KEY_VAR),
            calendars=calendars,
            **settings.polygon_fields(),
            **gaps,
        )
    raise SettingsError(
        f"{MARKET_DATA_VAR}={source!r}: use {MARKET_DATA_CHOICES} "
        "(e.g. files:/srv/bars, a folder of <SYMBOL>_<TIMEFRAME>.csv or .parquet files)"
    )


def build_learning_settings(settings: Settings) -> LearningSettingsResource:
    """The learning settings with the windows of the settings file, if any."""
    shared, per_model = settings.learning_windows()
    if settings.spreads:
        shared["spreads"] = {**LearningSettingsResource().spreads, **dict(settings.spreads)}
    return LearningSettingsResource(
        **shared, model_windows={slug: ModelWindowsConfig(**w) for slug, w in per_model.items()}
    )


def build_resources(settings: Settings) -> dict[str, object]:
    """Resources for ``settings``; a journal URL from the environment stays an EnvVar so that
    its password is never shown in the UI."""
    journal_url = (
        dg.EnvVar(JOURNAL_URL_VAR) if settings.journal_url else settings.default_journal_url
    )
    return {
        "journal": TradeJournalResource(url=journal_url),
        "market_data": build_market_data(settings),
        "exports": TradeExportsResource(directory=str(settings.exports_dir)),
        "registry": ModelRegistryResource(root=str(settings.models_dir)),
        "learning_settings": build_learning_settings(settings),
        "arena_settings": ArenaSettingsResource(),
        "io_manager": ValueStoreIOManager(base_dir=str(settings.values_dir)),
    }


def build_definitions(
    settings: Settings,
    resource_overrides: dict[str, object] | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """The whole code location for ``settings`` (tests replace resources through
    ``resource_overrides``). Runs use ``executor``, by default the one named by
    SESSION_LEARNING_EXECUTOR (``executors.build_executor``)."""
    partitions = build_session_partitions(settings.session_hours, settings.start)
    learning = build_session_assets(partitions, settings.models)
    for key in settings.models:
        learning += build_model_assets(partitions, key)
        learning += build_arena_assets(partitions, key)
    live = build_live_assets(settings.models)
    monitoring = build_performance_assets(settings.session_hours)
    return dg.Definitions(
        assets=[*learning, *live, *monitoring],
        jobs=build_jobs(learning, live, monitoring),
        schedules=build_schedules(partitions, settings.session_hours, settings.models),
        sensors=build_sensors(partitions),
        resources={**build_resources(settings), **(resource_overrides or {})},
        executor=executor or build_executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by ``workspace.yaml``; settings come from SESSION_LEARNING_* variables."""
    return build_definitions(Settings.from_env())
