"""Market data: OHLCV bars per symbol/timeframe behind one resource interface.

Sources: ``SyntheticMarketDataResource`` (deterministic, the embedded default). Every source
returns bars in the same shape: a UTC DatetimeIndex of bar open times and float columns
open, high, low, close, volume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.domain import synthetic
from session_learning.domain.models import ModelKey


class MarketDataResource(dg.ConfigurableResource, ABC):
    """Where bars come from. Subclasses implement ``bars``."""

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
        return synthetic.generate_bars(key.symbol, key.timeframe, start, end, seed=self.seed)
