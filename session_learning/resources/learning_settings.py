"""Settings of the learning step shared by every model's assets: windows, barriers, CatBoost,
per-symbol costs and the gate thresholds."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from session_learning.domain.backtest import CostModel
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import DEFAULT_COSTS, LearningConfig


class ModelWindowsConfig(dg.Config):
    """One model's windows where they differ from the resource-wide ones (None: as those)."""

    training_bars: int | None = Field(default=None, description="Rolling training rows.")
    validation_bars: int | None = Field(default=None, description="Validation rows.")
    warmup_bars: int | None = Field(default=None, description="Bars before the first row.")


def _default_of(source: type, name: str, description: str) -> Any:
    """A resource field whose default is the one ``source`` (a dataclass) declares for
    ``name``: the number lives once, in the domain."""
    declared = {f.name: f for f in fields(source)}[name]
    if declared.default_factory is not MISSING:
        return Field(default_factory=declared.default_factory, description=description)
    return Field(default=declared.default, description=description)


def _learning(name: str, description: str) -> Any:
    return _default_of(LearningConfig, name, description)


def _gate(name: str, description: str) -> Any:
    return _default_of(GateThresholds, name, description)


class LearningSettingsResource(dg.ConfigurableResource):
    """How candidates are trained and judged. Every number of the gates lives here.

    The window, barrier, CatBoost and gate fields are the ``LearningConfig`` and
    ``GateThresholds`` fields of the same name, with their domain defaults (``_learning``,
    ``_gate``); domain settings not declared here (``atr_period``, the bootstrap's) keep their
    defaults.
    """

    training_bars: int = _learning("training_bars", "Rolling training rows before validation.")
    validation_bars: dict[str, int] = _learning(
        "validation_bars",
        "Validation rows per timeframe (long enough to reach the minimum trades).",
    )
    warmup_bars: int = _learning(
        "warmup_bars", "Bars before the first training row (feature lookbacks)."
    )
    model_windows: dict[str, ModelWindowsConfig] = Field(
        default_factory=dict,
        description="Per-model windows by slug (e.g. XAUUSD_15T), over the ones above; the "
        "settings file named by SESSION_LEARNING_SETTINGS fills them.",
    )
    tp_atr: float = _learning("tp_atr", "Take profit in ATRs (labels and trading).")
    sl_atr: float = _learning("sl_atr", "Stop loss in ATRs (labels and trading).")
    max_holding_bars: int = _learning("max_holding_bars", "Bars a trade is held at most.")
    min_confidence: float = _learning("min_confidence", "Probability a signal needs.")
    risk_per_trade: float = _learning(
        "risk_per_trade", "Equity fraction risked per trade (drawdown is measured so)."
    )
    iterations: int = _learning("iterations", "CatBoost iterations.")
    learning_rate: float = _learning("learning_rate", "CatBoost learning rate.")
    random_seed: int = _learning("random_seed", "CatBoost seed (training is reproducible).")
    thread_count: int = _learning("thread_count", "CatBoost threads.")
    max_loser_age_bars: int = _learning(
        "max_loser_age_bars",
        "A session loser decided at most this many bars before the session's first bar moves "
        "the validation window back so that it is trained on; an older one is listed as "
        "unmatched.",
    )
    barrier_refit: str = _learning(
        "barrier_refit",
        "How a struggling model's TP/SL is refitted: 'judged' (a fitted geometry only when the "
        "gates stay as reachable as with the configured one), 'fitted' (the median excursions) "
        "or 'off' (the configured geometry).",
    )
    refit_lift_tolerance: float = _learning(
        "refit_lift_tolerance",
        "With barrier_refit 'judged': how much more win-rate lift over chance a refitted "
        "geometry may ask than the configured one.",
    )
    min_profit_factor: float = _gate("min_profit_factor", "Gate: profit factor above this.")
    max_drawdown_pct: float = _gate("max_drawdown_pct", "Gate: max drawdown % below this.")
    min_win_rate: float = _gate("min_win_rate", "Gate: win rate above this.")
    min_trades: dict[str, int] = _gate(
        "min_trades", "Gate: validation trades at least this many, per timeframe."
    )
    confidence: float = _gate("confidence", "Confidence at which a candidate must beat production.")
    spreads: dict[str, float] = Field(
        default_factory=lambda: {s: c.spread for s, c in DEFAULT_COSTS.items()},
        description="Round-trip spread per symbol, in price units.",
    )
    commission_rate: float = Field(
        default=0.0, description="Commission per side as a fraction of notional."
    )
    extra_features: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Your own feature functions, by model slug (e.g. EURUSD_30T) or '*' for "
        "every model: lists of 'package.module:function'. Each is checked for look-ahead on "
        "real bars before it is trained on.",
    )

    @field_validator("barrier_refit")
    @classmethod
    def _known_barrier_refit(cls, value: str) -> str:
        LearningConfig(barrier_refit=value)  # the domain's one error for an unknown mode
        return value

    def feature_specs(self, slug: str) -> list[str]:
        """The user feature functions of a model, by name (shared '*' ones first)."""
        return [*self.extra_features.get("*", []), *self.extra_features.get(slug, [])]

    def learning_config(self, key: ModelKey | None = None) -> LearningConfig:
        """The learning settings, with ``key``'s own windows when it has any."""
        config = LearningConfig(**self._fields_of(LearningConfig))
        windows = self.model_windows.get(key.slug) if key is not None else None
        if windows is None:
            return config
        validation = dict(config.validation_bars)
        if windows.validation_bars is not None:
            validation[key.timeframe] = windows.validation_bars
        return replace(
            config,
            training_bars=(
                config.training_bars if windows.training_bars is None else windows.training_bars
            ),
            validation_bars=validation,
            warmup_bars=config.warmup_bars if windows.warmup_bars is None else windows.warmup_bars,
        )

    def gate_thresholds(self) -> GateThresholds:
        return GateThresholds(**self._fields_of(GateThresholds))

    def _fields_of(self, target: type) -> dict[str, Any]:
        """This resource's values of the fields ``target`` (a dataclass) shares with it
        (dicts copied, so the domain object never aliases the resource's config)."""
        shared = [f.name for f in fields(target) if f.name in type(self).model_fields]
        return {
            name: dict(value) if isinstance(value, dict) else value
            for name, value in ((name, getattr(self, name)) for name in shared)
        }

    def costs(self, symbol: str) -> CostModel:
        """Costs of ``symbol``; a symbol without a configured spread is an error, not free."""
        if symbol not in self.spreads:
            raise ValueError(
                f"no spread configured for {symbol}; set spreads.{symbol} in the "
                "learning_settings resource (a backtest without costs would flatter the model)"
            )
        return CostModel(spread=self.spreads[symbol], commission_rate=self.commission_rate)
