"""Settings of the learning step shared by every model's assets: windows, barriers, CatBoost,
per-symbol costs and the gate thresholds."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
from pydantic import Field

from session_learning.domain.backtest import CostModel
from session_learning.domain.gates import DEFAULT_MIN_TRADES, GateThresholds
from session_learning.domain.learning import (
    DEFAULT_COSTS,
    DEFAULT_VALIDATION_BARS,
    LearningConfig,
)
from session_learning.domain.models import ModelKey


class ModelWindowsConfig(dg.Config):
    """One model's windows where they differ from the resource-wide ones (None: as those)."""

    training_bars: int | None = Field(default=None, description="Rolling training rows.")
    validation_bars: int | None = Field(default=None, description="Validation rows.")
    warmup_bars: int | None = Field(default=None, description="Bars before the first row.")


class LearningSettingsResource(dg.ConfigurableResource):
    """How candidates are trained and judged. Every number of the gates lives here."""

    training_bars: int = Field(default=6000, description="Rolling training rows before validation.")
    validation_bars: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_VALIDATION_BARS),
        description="Validation rows per timeframe (long enough to reach the minimum trades).",
    )
    warmup_bars: int = Field(
        default=300, description="Bars before the first training row (feature lookbacks)."
    )
    model_windows: dict[str, ModelWindowsConfig] = Field(
        default_factory=dict,
        description="Per-model windows by slug (e.g. XAUUSD_15T), over the ones above; the "
        "settings file named by SESSION_LEARNING_SETTINGS fills them.",
    )
    tp_atr: float = Field(default=2.0, description="Take profit in ATRs (labels and trading).")
    sl_atr: float = Field(default=1.0, description="Stop loss in ATRs (labels and trading).")
    max_holding_bars: int = Field(default=24, description="Bars a trade is held at most.")
    min_confidence: float = Field(default=0.45, description="Probability a signal needs.")
    risk_per_trade: float = Field(
        default=0.005, description="Equity fraction risked per trade (drawdown is measured so)."
    )
    iterations: int = Field(default=250, description="CatBoost iterations.")
    learning_rate: float = Field(default=0.08, description="CatBoost learning rate.")
    random_seed: int = Field(default=42, description="CatBoost seed (training is reproducible).")
    thread_count: int = Field(default=2, description="CatBoost threads.")
    min_profit_factor: float = Field(default=1.4, description="Gate: profit factor above this.")
    max_drawdown_pct: float = Field(default=6.5, description="Gate: max drawdown % below this.")
    min_win_rate: float = Field(default=0.42, description="Gate: win rate above this.")
    min_trades: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_TRADES),
        description="Gate: validation trades at least this many, per timeframe.",
    )
    confidence: float = Field(
        default=0.90, description="Confidence at which a candidate must beat production."
    )
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

    def feature_specs(self, slug: str) -> list[str]:
        """The user feature functions of a model, by name (shared '*' ones first)."""
        return [*self.extra_features.get("*", []), *self.extra_features.get(slug, [])]

    def learning_config(self, key: ModelKey | None = None) -> LearningConfig:
        """The learning settings, with ``key``'s own windows when it has any."""
        config = LearningConfig(
            training_bars=self.training_bars,
            validation_bars=dict(self.validation_bars),
            warmup_bars=self.warmup_bars,
            tp_atr=self.tp_atr,
            sl_atr=self.sl_atr,
            max_holding_bars=self.max_holding_bars,
            min_confidence=self.min_confidence,
            risk_per_trade=self.risk_per_trade,
            iterations=self.iterations,
            learning_rate=self.learning_rate,
            random_seed=self.random_seed,
            thread_count=self.thread_count,
        )
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
        return GateThresholds(
            min_profit_factor=self.min_profit_factor,
            max_drawdown_pct=self.max_drawdown_pct,
            min_win_rate=self.min_win_rate,
            min_trades=dict(self.min_trades),
            confidence=self.confidence,
        )

    def costs(self, symbol: str) -> CostModel:
        """Costs of ``symbol``; a symbol without a configured spread is an error, not free."""
        if symbol not in self.spreads:
            raise ValueError(
                f"no spread configured for {symbol}; set spreads.{symbol} in the "
                "learning_settings resource (a backtest without costs would flatter the model)"
            )
        return CostModel(spread=self.spreads[symbol], commission_rate=self.commission_rate)
