"""Deployment settings read from environment variables when the code location loads.

Everything that shapes the asset graph (the models, the session length) has to be known when
the definitions are built, and so does everything a deployment must decide on purpose (where
the bars come from, each model's windows): those are read here, once, and passed to the
resources. The README's *Configuration* table lists every variable:

| variable | default | meaning |
|---|---|---|
| SESSION_LEARNING_HOME | ./var | folder for the SQLite journal, exports, models, stored values |
| SESSION_LEARNING_JOURNAL_URL | sqlite:///$HOME/journal.sqlite | trade journal (SQLAlchemy URL) |
| SESSION_LEARNING_MODELS | EURUSD:30T,EURUSD:15T,GBPUSD:30T,GBPUSD:15T,XAUUSD:30T,XAUUSD:15T | models |
| SESSION_LEARNING_SESSION_HOURS | 4 | session length (partitions and schedule) |
| SESSION_LEARNING_START | 2025-01-01-00:00 | first partition |
| SESSION_LEARNING_MARKET_DATA | synthetic with the demo journal, else required | synthetic, files:/path/to/folder, or polygon |
| SESSION_LEARNING_SYNTHETIC_SEED | 7 | seed of the synthetic market data |
| POLYGON_API_KEY | - | Polygon key (with SESSION_LEARNING_MARKET_DATA=polygon) |
| SESSION_LEARNING_POLYGON_BASE_URL | https://api.polygon.io | Polygon API root |
| SESSION_LEARNING_POLYGON_PAGE_SIZE | 50000 | Polygon base aggregates per page |
| SESSION_LEARNING_CALENDARS | (per symbol) | trading calendar overrides, e.g. SPY:XNYS,USDJPY:24/5 (*:NAME for all) |
| SESSION_LEARNING_SETTINGS | - | YAML file of per-model windows and gap limits (below) |

The settings file sets ``training_bars``, ``validation_bars``, ``warmup_bars`` and
``max_gap_hours`` (null: no limit) in four layers, the more specific winning: ``defaults``,
``timeframes`` (``15T: {...}``), ``symbols`` (``XAUUSD: {...}``), ``models``
(``XAUUSD_15T: {...}``). A layer that names a timeframe, symbol or model the deployment does not
have, an unknown field or a value of the wrong kind stops the code location from loading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from session_learning.domain.bars import DEFAULT_MAX_GAP
from session_learning.domain.keys import DEFAULT_MODELS, TIMEFRAMES, ModelKey, parse_models
from session_learning.domain.sessions import DEFAULT_SESSION_HOURS, DEFAULT_START
from session_learning.domain.training import LearningConfig

JOURNAL_URL_VAR = "SESSION_LEARNING_JOURNAL_URL"
MARKET_DATA_VAR = "SESSION_LEARNING_MARKET_DATA"
SETTINGS_FILE_VAR = "SESSION_LEARNING_SETTINGS"
POLYGON_KEY_VAR = "POLYGON_API_KEY"
MARKET_DATA_CHOICES = "synthetic, files:<folder> or polygon"
LAYERS = ("defaults", "timeframes", "symbols", "models")


class SettingsError(ValueError):
    """A setting that cannot be used as given; the message names it and the fix."""


@dataclass(frozen=True)
class ModelSettings:
    """The settings a deployment most often has to change for one model: its windows (in bars)
    and the longest gap its bars may have (in trading hours; None: no limit)."""

    training_bars: int
    validation_bars: int
    warmup_bars: int
    max_gap_hours: float | None

    @classmethod
    def code_defaults(cls, timeframe: str) -> ModelSettings:
        learning = LearningConfig()
        return cls(
            training_bars=learning.training_bars,
            validation_bars=learning.validation_for(timeframe),
            warmup_bars=learning.warmup_bars,
            max_gap_hours=None
            if DEFAULT_MAX_GAP is None
            else DEFAULT_MAX_GAP / pd.Timedelta(hours=1),
        )

    def history_bars(self, timeframe: str) -> int:
        """Bars one learning step loads, as ``LearningConfig.history_bars`` counts them."""
        learning = LearningConfig(
            training_bars=self.training_bars,
            validation_bars={timeframe: self.validation_bars},
            warmup_bars=self.warmup_bars,
        )
        return learning.history_bars(timeframe)


SETTING_NAMES = tuple(f.name for f in fields(ModelSettings))


@dataclass(frozen=True)
class ModelSettingsFile:
    """The layers of a settings file: ``layer -> name -> {setting: value}`` (``defaults`` under
    the name ``"*"``), already checked against the deployment's models."""

    path: Path | None = None
    layers: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, models: tuple[ModelKey, ...]) -> ModelSettingsFile:
        where = f"{SETTINGS_FILE_VAR}={path}"
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SettingsError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{where}: not valid YAML ({exc})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected a mapping with {', '.join(LAYERS)}")
        unknown = [str(k) for k in data if k not in LAYERS]
        if unknown:
            raise SettingsError(
                f"{where}: unknown section(s) {', '.join(unknown)}; use {', '.join(LAYERS)}"
            )
        known = {
            "timeframes": sorted({m.timeframe for m in models}, key=list(TIMEFRAMES).index),
            "symbols": sorted({m.symbol for m in models}),
            "models": [m.slug for m in models],
        }
        layers: dict[str, dict[str, dict[str, Any]]] = {}
        for layer in LAYERS:
            section = data.get(layer) or {}
            if layer == "defaults":
                section = {"*": section}
            elif not isinstance(section, dict):
                raise SettingsError(f"{where}: {layer} must map names to settings")
            checked = {}
            for name, values in section.items():
                name = str(name)
                if layer != "defaults" and name not in known[layer]:
                    raise SettingsError(
                        f"{where}: {layer}.{name} is not one of this deployment's {layer} "
                        f"({', '.join(known[layer])}; SESSION_LEARNING_MODELS sets them)"
                    )
                label = layer if layer == "defaults" else f"{layer}.{name}"
                checked[name] = _checked_values(values, f"{where}: {label}")
            layers[layer] = checked
        return cls(path=path, layers=layers)

    def overrides(self, key: ModelKey, *, include_defaults: bool = True) -> dict[str, Any]:
        """The settings the file gives ``key``, the more specific layer winning."""
        names = {"defaults": "*", "timeframes": key.timeframe, "symbols": key.symbol}
        names["models"] = key.slug
        values: dict[str, Any] = {}
        for layer in LAYERS:
            if layer == "defaults" and not include_defaults:
                continue
            values.update(self.layers.get(layer, {}).get(names[layer], {}))
        return values

    def origin(self, key: ModelKey, setting: str) -> str:
        """Which layer decides ``setting`` for ``key``: 'model', 'symbol XAUUSD', ... or
        'default' (file defaults or the code's)."""
        for layer, name, label in (
            ("models", key.slug, "model"),
            ("symbols", key.symbol, f"symbol {key.symbol}"),
            ("timeframes", key.timeframe, f"timeframe {key.timeframe}"),
        ):
            if setting in self.layers.get(layer, {}).get(name, {}):
                return label
        return "default"


def _checked_values(values: object, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise SettingsError(f"{where} must be a mapping of {', '.join(SETTING_NAMES)}")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name not in SETTING_NAMES:
            raise SettingsError(
                f"{where}.{name} is not a setting of the file; use {', '.join(SETTING_NAMES)} "
                "(everything else is learning_settings resource config)"
            )
        if name == "max_gap_hours":
            ok = value is None or (
                isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            )
            if not ok:
                raise SettingsError(
                    f"{where}.max_gap_hours is {value!r}; give hours above 0, or null for no limit"
                )
            checked[name] = None if value is None else float(value)
            continue
        lowest = 0 if name == "warmup_bars" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise SettingsError(f"{where}.{name} is {value!r}; give a whole number >= {lowest}")
        checked[name] = value
    return checked


@dataclass(frozen=True)
class Settings:
    """What the code location is built from."""

    home: Path
    models: tuple[ModelKey, ...] = DEFAULT_MODELS
    session_hours: int = DEFAULT_SESSION_HOURS
    start: str = DEFAULT_START
    journal_url: str | None = None  # None: the SQLite file under home
    synthetic_seed: int = 7
    # synthetic | files:<folder> | polygon; None: not chosen, which only the demo journal allows.
    market_data: str | None = None
    polygon_base_url: str | None = None  # None: the resource's default
    polygon_page_size: int | None = None
    model_settings: ModelSettingsFile = field(default_factory=ModelSettingsFile)
    calendars: tuple[tuple[str, str], ...] = ()  # (symbol or "*", calendar name) overrides
    spreads: tuple[tuple[str, float], ...] = ()  # (symbol, round-trip spread) beyond the defaults

    @property
    def default_journal_url(self) -> str:
        return f"sqlite:///{self.home / 'journal.sqlite'}"

    @property
    def exports_dir(self) -> Path:
        return self.home / "live_trades"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def values_dir(self) -> Path:
        return self.home / "values"

    @property
    def market_data_source(self) -> str:
        """The market-data source. Synthetic bars only when chosen or with the embedded demo
        journal: a deployment on its own journal must say where its bars come from."""
        if self.market_data:
            return self.market_data
        if self.journal_url is None:
            return "synthetic"
        raise SettingsError(
            f"{MARKET_DATA_VAR} is not set, and the trade journal is {JOURNAL_URL_VAR}, not the "
            "demo journal: refusing to train, gate and signal on synthetic bars. Set "
            f"{MARKET_DATA_VAR}=files:/path/to/bars (one <SYMBOL>_<TIMEFRAME>.csv or .parquet "
            f"per model) or {MARKET_DATA_VAR}=polygon (key in {POLYGON_KEY_VAR}); "
            f"{MARKET_DATA_VAR}=synthetic only to try the pipeline on made-up bars."
        )

    def model(self, key: ModelKey) -> ModelSettings:
        """The effective settings of ``key``: the code's defaults under the settings file's
        layers."""
        return replace(
            ModelSettings.code_defaults(key.timeframe), **self.model_settings.overrides(key)
        )

    def timeframe_defaults(self, timeframe: str) -> ModelSettings:
        """What a model of ``timeframe`` gets unless its symbol or model layer says otherwise."""
        values = dict(self.model_settings.layers.get("defaults", {}).get("*", {}))
        values.update(self.model_settings.layers.get("timeframes", {}).get(timeframe, {}))
        return replace(ModelSettings.code_defaults(timeframe), **values)

    def learning_windows(self) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
        """The windows of the settings file for the ``learning_settings`` resource: the
        file's defaults (resource-wide fields) and each model's own, by slug."""
        defaults = self.model_settings.layers.get("defaults", {}).get("*", {})
        shared: dict[str, Any] = {
            name: defaults[name] for name in ("training_bars", "warmup_bars") if name in defaults
        }
        if "validation_bars" in defaults:
            shared["validation_bars"] = dict.fromkeys(TIMEFRAMES, defaults["validation_bars"])
        per_model = {}
        for key in self.models:
            own = self.model_settings.overrides(key, include_defaults=False)
            own.pop("max_gap_hours", None)
            if own:
                per_model[key.slug] = own
        return shared, per_model

    def polygon_fields(self) -> dict[str, Any]:
        """Polygon's address and page size where the environment sets them."""
        values = {"base_url": self.polygon_base_url, "page_size": self.polygon_page_size}
        return {name: value for name, value in values.items() if value is not None}

    def gap_limits(self) -> dict[str, Any]:
        """The gap limits of the settings file as market-data resource fields."""
        fields_: dict[str, Any] = {}
        defaults = self.model_settings.layers.get("defaults", {}).get("*", {})
        if "max_gap_hours" in defaults:
            fields_["max_gap_hours"] = defaults["max_gap_hours"]
        per_model = {}
        for key in self.models:
            own = self.model_settings.overrides(key, include_defaults=False)
            if "max_gap_hours" in own:
                per_model[key.slug] = own["max_gap_hours"]
        if per_model:
            fields_["model_max_gap_hours"] = per_model
        return fields_

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("SESSION_LEARNING_HOME", "var")).resolve()
        text = env.get("SESSION_LEARNING_MODELS")
        models = parse_models(text) if text else DEFAULT_MODELS
        page_size = env.get("SESSION_LEARNING_POLYGON_PAGE_SIZE") or None
        settings_file = env.get(SETTINGS_FILE_VAR) or None
        spreads = parse_spreads(env.get(SPREADS_VAR, ""))
        _require_spreads(models, dict(spreads))
        return cls(
            home=home,
            models=models,
            session_hours=int(env.get("SESSION_LEARNING_SESSION_HOURS", DEFAULT_SESSION_HOURS)),
            start=env.get("SESSION_LEARNING_START", DEFAULT_START),
            journal_url=env.get(JOURNAL_URL_VAR) or None,
            synthetic_seed=int(env.get("SESSION_LEARNING_SYNTHETIC_SEED", "7")),
            market_data=env.get(MARKET_DATA_VAR) or None,
            polygon_base_url=env.get("SESSION_LEARNING_POLYGON_BASE_URL") or None,
            polygon_page_size=_int(page_size, "SESSION_LEARNING_POLYGON_PAGE_SIZE"),
            calendars=parse_calendars(env.get("SESSION_LEARNING_CALENDARS", "")),
            spreads=spreads,
            model_settings=(
                ModelSettingsFile.read(Path(settings_file), models)
                if settings_file
                else ModelSettingsFile()
            ),
        )


def settings_report(settings: Settings) -> list[str]:
    """Lines for ``session-learning status``: the market-data source and the effective
    settings per timeframe, then each model whose symbol or model layer changes them."""
    path = settings.model_settings.path
    origin = f"{SETTINGS_FILE_VAR}={path}" if path else f"code defaults ({SETTINGS_FILE_VAR} unset)"
    lines = [f"settings: {origin}"]
    try:
        lines.append(f"  market data: {settings.market_data_source}")
    except SettingsError as exc:
        lines.append(f"  market data: NOT CHOSEN: {exc}")
    timeframes = sorted({m.timeframe for m in settings.models}, key=list(TIMEFRAMES).index)
    for timeframe in timeframes:
        shared = settings.timeframe_defaults(timeframe)
        lines.append(f"  {timeframe} models: {_describe(shared, timeframe)}")
        for key in (m for m in settings.models if m.timeframe == timeframe):
            own = settings.model(key)
            if own != shared:
                changed = [
                    f"{name} ({settings.model_settings.origin(key, name)})"
                    for name in SETTING_NAMES
                    if getattr(own, name) != getattr(shared, name)
                ]
                lines.append(
                    f"    {key.slug}: {_describe(own, timeframe)}; own: {', '.join(changed)}"
                )
    return lines


def _describe(values: ModelSettings, timeframe: str) -> str:
    gap = "none" if values.max_gap_hours is None else f"{values.max_gap_hours:g}h"
    return (
        f"training {values.training_bars}, validation {values.validation_bars}, warm-up "
        f"{values.warmup_bars} bars, max gap {gap}; a learning step loads "
        f"{values.history_bars(timeframe)} bars"
    )


def _int(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a whole number") from None


SPREADS_VAR = "SESSION_LEARNING_SPREADS"


def parse_spreads(text: str) -> tuple[tuple[str, float], ...]:
    """``FOOBAR:0.0002,EURUSD:0.0001`` as ``(symbol, round-trip spread in price units)``."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        symbol, sep, value = part.partition(":")
        try:
            spread = float(value) if sep and symbol.strip() else -1.0
        except ValueError:
            spread = -1.0
        if not spread >= 0:
            raise SettingsError(
                f"{SPREADS_VAR} entry {part!r}: expected SYMBOL:SPREAD (round-trip, in price "
                "units, >= 0), e.g. FOOBAR:0.0002"
            )
        pairs.append((symbol.strip().upper(), spread))
    return tuple(pairs)


def _require_spreads(models: tuple[ModelKey, ...], spreads: dict[str, float]) -> None:
    """Refuse a model whose symbol has no spread: a backtest without costs flatters it."""
    from session_learning.domain.training import DEFAULT_COSTS

    missing = sorted({m.symbol for m in models} - set(DEFAULT_COSTS) - set(spreads))
    if missing:
        raise SettingsError(
            f"no spread configured for {', '.join(missing)} (SESSION_LEARNING_MODELS); set "
            f"{SPREADS_VAR}={','.join(f'{s}:<round-trip spread in price units>' for s in missing)}"
        )


def parse_calendars(text: str) -> tuple[tuple[str, str], ...]:
    """``SPY:XNYS,USDJPY:24/5`` as ``(symbol, calendar)`` pairs; each calendar must exist."""
    from session_learning.domain.calendars import get_calendar

    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        symbol, sep, name = part.partition(":")
        if not sep or not symbol.strip() or not name.strip():
            raise ValueError(
                f"SESSION_LEARNING_CALENDARS entry {part!r}: expected SYMBOL:CALENDAR, "
                "e.g. SPY:XNYS or *:24/5"
            )
        pairs.append((symbol.strip().upper(), get_calendar(name.strip()).name))
    return tuple(pairs)
