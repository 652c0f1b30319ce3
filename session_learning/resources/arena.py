"""Settings of each model's arena: its size, the test's level, the stays, the switching cost and
the change detector's false-alarm budget (README, *The arena*)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from session_learning.domain.arena import ArenaSettings
from session_learning.domain.arena_session import ArenaSessionSettings
from session_learning.domain.drift import (
    DEFAULT_BLOCK_TRADES,
    DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
    DEFAULT_SHIFT_R,
)
from session_learning.domain.evidence import EvidenceSettings


class ArenaSettingsResource(dg.ConfigurableResource):
    """How challengers enter, stay, leave and are promoted, and when a champion is paused."""

    max_challengers: int = Field(
        default=3, description="K: challengers in the shadow beside the champion and FLAT."
    )
    alpha: float = Field(
        default=0.05,
        description="False-promotion level per champion's reign: a challenger with a full "
        "share of the betting capital needs an e-value of K / alpha against the champion and "
        "against FLAT (60 by default).",
    )
    switching_cost_r: float = Field(
        default=0.005,
        description="Margin in R per bar a challenger must beat the champion by (about the "
        "spread and slippage of closing one position and opening another).",
    )
    max_challenger_sessions: int = Field(
        default=180, description="Longest stay of a challenger without promotion, in sessions."
    )
    min_sessions_before_eviction: int = Field(
        default=6,
        description="Sessions a challenger is protected from eviction and futility.",
    )
    futility_e_value: float = Field(
        default=0.05,
        description="A challenger whose e-value against the champion falls below this leaves.",
    )
    false_alarms_per_100_sessions: float = Field(
        default=DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
        description="The change detector's false-alarm budget: the probability of pausing a "
        "champion that performs as validated within 100 sessions.",
    )
    shift_r: float = Field(
        default=DEFAULT_SHIFT_R,
        description="The fall of the champion's mean R per trade the detector is tuned to see.",
    )
    detector_block_trades: int = Field(
        default=DEFAULT_BLOCK_TRADES,
        description="The detector's threshold is calibrated by resampling runs of this many "
        "consecutive validation trades (a model's trades are correlated; 1: one by one).",
    )

    def session_settings(self) -> ArenaSessionSettings:
        """The domain's settings (raises ``ValueError`` naming a value out of range)."""
        return ArenaSessionSettings(
            arena=ArenaSettings(
                max_challengers=self.max_challengers,
                alpha=self.alpha,
                max_challenger_sessions=self.max_challenger_sessions,
                min_sessions_before_eviction=self.min_sessions_before_eviction,
                futility_e_value=self.futility_e_value,
            ),
            evidence=EvidenceSettings(alpha=self.alpha, switching_cost_r=self.switching_cost_r),
        )
