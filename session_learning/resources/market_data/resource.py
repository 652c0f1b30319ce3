"""The market-data resource interface, its errors, the synthetic source, and
``ValidatedMarketDataResource``: the base of every source outside this process, whose bars are
cut to the window and validated (with repairs) before anyone uses them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.domain import synthetic
from session_learning.domain.bars import (
    BarReport,
    bars_in_window,
    to_utc,
    validate_bars,
)
from session_learning.domain.calendars import TradingCalendar, calendar_for
from session_learning.domain.keys import ModelKey


class MarketDataError(RuntimeError):
    """A source could not deliver bars: missing file, rejected request, malformed response."""


class MarketDataUnavailableError(MarketDataError):
    """The source kept failing (timeouts, connection errors, 5xx, rate limits) after retries."""


class MarketDataResource(dg.ConfigurableResource, ABC):
    """Where bars come from. Subclasses implement ``bars``."""

    calendars: dict[str, str] = Field(
        default_factory=dict,
        description="Trading calendar per symbol, overriding the defaults (FX CMEGlobex_FX, "
        "metals CMEGlobex_Metals, crypto 24/7, others 24/5): a pandas_market_calendars name "
        "such as XNYS; '*' applies to every symbol not listed.",
    )

    def calendar(self, key: ModelKey) -> TradingCalendar:
        """The trading calendar of ``key``'s symbol: gaps, staleness and synthetic bars follow it."""
        return calendar_for(key.symbol, self.calendars)

    @abstractmethod
    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of ``key`` whose open time lies in ``[start, end)``."""


class SyntheticMarketDataResource(MarketDataResource):
    """Deterministic synthetic bars with changing regimes (trend, range, volatility bursts).

    The demo and the tests run on it so that a fresh machine needs no data provider. Its bars
    carry learnable structure that flips between regimes; real markets are far less generous.
    """

    seed: int = Field(default=7, description="Seed of the generator; same seed, same bars.")

    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        return synthetic.generate_bars(
            key.symbol, key.timeframe, start, end, seed=self.seed, calendar=self.calendar(key)
        )


class ValidatedMarketDataResource(MarketDataResource):
    """A source outside this process: its bars are validated before anyone uses them.

    Subclasses implement ``_read`` (raw bars covering at least ``[start, end)``); ``load`` cuts
    the window, validates it with repairs and returns the ``BarReport``.
    """

    max_gap_hours: float | None = Field(
        default=24.0,
        description="Longest run of missing bars, in trading hours, before loading fails; "
        "shorter gaps are reported. Null disables the limit.",
    )
    model_max_gap_hours: dict[str, float | None] = Field(
        default_factory=dict,
        description="max_gap_hours per model slug (e.g. XAUUSD_15T), over the one above; the "
        "settings file named by SESSION_LEARNING_SETTINGS fills it.",
    )
    max_staleness_hours: float | None = Field(
        default=None,
        description="Fail when the newest bar closed more than this many trading hours before "
        "the end of the requested window (or now, if earlier). Null disables the check.",
    )

    @abstractmethod
    def _read(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Raw bars of ``key`` (UTC index of open times) covering at least ``[start, end)``."""

    def load(
        self, key: ModelKey, start: object, end: object, *, now: pd.Timestamp | None = None
    ) -> BarReport:
        """Validated bars of ``key`` whose open time is in ``[start, end)`` (naive means UTC),
        with every repair, gap and warning. ``now`` (default: the clock) bounds staleness."""
        if not isinstance(key, ModelKey):
            raise TypeError(f"expected a ModelKey, got {type(key).__name__}")
        start_utc, end_utc = to_utc(start, "start"), to_utc(end, "end")
        now = pd.Timestamp.now(tz="UTC") if now is None else to_utc(now, "now")
        window = bars_in_window(self._read(key, start_utc, end_utc), key, start_utc, end_utc)
        return validate_bars(
            window,
            key,
            now=min(now, end_utc),
            max_staleness=_hours_or_none(self.max_staleness_hours),
            repair=True,
            calendar=self.calendar(key),
            max_gap=_hours_or_none(self.max_gap_hours_of(key)),
        )

    def max_gap_hours_of(self, key: ModelKey) -> float | None:
        """The gap limit of ``key``: its own, else the resource-wide one."""
        return self.model_max_gap_hours.get(key.slug, self.max_gap_hours)

    def bars(self, key: ModelKey, start: datetime, end: datetime) -> pd.DataFrame:
        report = self.load(key, start, end)
        log = dg.get_dagster_logger()
        for repair in report.repairs:
            log.warning(f"{key} bars repaired: {repair}")
        for warning in report.warnings:
            log.info(f"{key} bars: {warning}")
        return report.bars


def _hours_or_none(hours: float | None) -> pd.Timedelta | None:
    return None if hours is None else pd.Timedelta(hours=hours)
