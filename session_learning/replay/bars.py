"""Where the replay's bars come from (synthetic, files, Polygon), loaded and checked, and the
known regimes of synthetic bars."""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from session_learning.domain import synthetic
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import PARTITION_FORMAT, history_span
from session_learning.replay.config import ReplayConfig, ReplayError

REGIME_LOOKBACK = pd.Timedelta(days=30)  # regimes known before the range: a flip at its start

BarSource = Callable[[ModelKey, pd.Timestamp, pd.Timestamp], pd.DataFrame]
"""``bars(key, start, end)``: OHLCV bars of ``key`` opening in ``[start, end)``, UTC index."""


# --- bar sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticBars:
    """The deterministic synthetic source as a ``bars(key, start, end)`` callable.

    Requests before the generator's epoch are cut to it. ``regimes`` gives the known answer:
    the regime of every bar.
    """

    seed: int = 7

    def __call__(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return synthetic.generate_bars(
            key.symbol, key.timeframe, max(pd.Timestamp(start), synthetic.EPOCH), end, self.seed
        )

    def regimes(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        return synthetic.regime_schedule(
            key.symbol, key.timeframe, max(pd.Timestamp(start), synthetic.EPOCH), end, self.seed
        )


@dataclass(frozen=True)
class ProcessBars:
    """Bars of a known random process on the synthetic generator's 24/5 calendar, as a
    ``bars(key, start, end)`` callable; deterministic per (seed, symbol, timeframe), generated
    forward from ``synthetic.EPOCH`` so that a sub-range is a slice of a longer one.

    ``process``: ``"null"``, a Gaussian random walk (no learnable structure: no model can beat
    costs on it, so every promotion is false); ``"stationary"``, one persistent drift that never
    changes regime (an AR(1) drift with the synthetic trend's persistence, 120 bars, and size,
    half a bar's volatility; the price level reverts to the profile's over about 2,000 bars,
    so the costs keep their size against the bars' range): a model trained on it stays as good as it was, so clones of it
    are equal in distribution and every pause of it is a false alarm. Per-bar volatility is
    the symbol's daily volatility spread evenly over the day's bars.
    """

    process: str = "null"
    seed: int = 7

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ReplayError(f"unknown bar process {self.process!r}; choose from {PROCESSES}")

    def __call__(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        start = max(pd.Timestamp(start), synthetic.EPOCH)
        bar = key.bar
        index = pd.date_range(synthetic.EPOCH, pd.Timestamp(end), freq=bar, inclusive="left")
        index = index[index.day_of_week < 5]
        n = len(index)
        profile = synthetic.symbol_profile(key.symbol)
        sigma = profile.daily_volatility / np.sqrt(pd.Timedelta(days=1) / bar)
        tag = zlib.crc32(f"{self.process}/{key.symbol}/{key.timeframe}".encode())
        rng = np.random.default_rng([self.seed, tag])
        noise = rng.standard_normal(n)
        if self.process == "stationary":
            phi = np.exp(-1.0 / 120.0)
            shocks = rng.standard_normal(n) * 0.5 * sigma * np.sqrt(1 - phi**2)
            returns = np.empty(n)
            level, price = 0.0, 0.0
            for i in range(n):  # AR(1) recursions; a year of 15-minute bars is 25,000 steps
                level = phi * level + shocks[i]
                # The price level reverts slowly (about 2,000 bars) to the profile's, so that
                # costs keep their size against the bars' range.
                returns[i] = level + sigma * noise[i] - price / 2000.0
                price += returns[i]
        else:
            returns = sigma * noise
        close = profile.price * np.exp(np.cumsum(returns))
        open_ = np.r_[profile.price, close[:-1]]
        wick = sigma * 0.5 * np.abs(rng.standard_normal((2, n)))
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.full(n, profile.volume_per_hour * (bar / pd.Timedelta(hours=1)))
        digits = profile.digits
        frame = pd.DataFrame(
            {
                "open": np.round(open_, digits),
                "high": np.round(high, digits),
                "low": np.round(low, digits),
                "close": np.round(close, digits),
                "volume": volume,
            },
            index=index,
        )
        frame["high"] = frame[["open", "high", "close"]].max(axis=1)
        frame["low"] = frame[["open", "low", "close"]].min(axis=1)
        return frame.loc[frame.index >= start]


PROCESSES = ("null", "stationary")


def describe_bars(source: object) -> str:
    """What a bar source is, in the report's words: ``synthetic bars (seed 7)``, ``bar files
    in /srv/bars``, ``Polygon.io aggregates``; a market-data resource's bound ``bars`` method
    is described by its resource."""
    owner = getattr(source, "__self__", source)
    owner = getattr(owner, "resource", owner)  # ValidatedBars wraps a market-data resource
    name = type(owner).__name__
    if isinstance(owner, ProcessBars):
        what = "a Gaussian random walk" if owner.process == "null" else "one stationary drift"
        return f"{owner.process} bars: {what} on the 24/5 calendar (seed {owner.seed})"
    if isinstance(owner, SyntheticBars) or name.startswith("Synthetic"):
        return f"synthetic bars (seed {owner.seed})"
    if getattr(owner, "directory", None) is not None:
        return f"bar files in {owner.directory}"
    if name.startswith("Polygon"):
        url = getattr(owner, "base_url", None)
        return "Polygon.io aggregates" + (f" from {url}" if url else "")
    return f"bars from {getattr(source, '__qualname__', name)}"


class ValidatedBars:
    """A files folder or Polygon as a ``bars(key, start, end)`` callable, validated as the
    assets validate them (same resource, same rules); repairs and warnings go to stderr."""

    def __init__(self, resource: object) -> None:
        self.resource = resource

    def __call__(self, key: ModelKey, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        from session_learning.resources.market_data import MarketDataError

        try:
            report = self.resource.load(key, start, end)
        except MarketDataError as exc:
            raise ReplayError(str(exc)) from None
        for note in [*(f"repaired: {r}" for r in report.repairs), *report.warnings]:
            print(f"{key} bars {note}", file=sys.stderr)
        return report.bars


def bar_source(source: str, seed: int) -> BarSource:
    """The bars ``--source`` names: ``synthetic``, ``null``, ``stationary`` (``ProcessBars``),
    ``files:DIR`` or ``polygon``. Files and
    Polygon read the deployment's settings: gap limits from SESSION_LEARNING_SETTINGS, the key
    from POLYGON_API_KEY, address and page size from SESSION_LEARNING_POLYGON_*."""
    if source == "synthetic":
        return SyntheticBars(seed)
    if source in PROCESSES:
        return ProcessBars(source, seed)
    from session_learning.resources.market_data import (
        FileMarketDataResource,
        PolygonMarketDataResource,
    )
    from session_learning.settings import POLYGON_KEY_VAR, Settings

    settings = Settings.from_env()
    folder = source.removeprefix("files:").strip() if source.startswith("files:") else ""
    if folder:
        if not Path(folder).is_dir():
            raise ReplayError(f"--source {source}: {folder} is not a folder of bar files")
        return ValidatedBars(FileMarketDataResource(directory=folder, **settings.gap_limits()))
    if source == "polygon":
        key = os.environ.get(POLYGON_KEY_VAR, "")
        if not key:
            raise ReplayError(f"--source polygon needs the key in {POLYGON_KEY_VAR}")
        resource = PolygonMarketDataResource(
            api_key=key, **settings.polygon_fields(), **settings.gap_limits()
        )
        return ValidatedBars(resource)
    raise ReplayError(
        f"--source {source!r}: use synthetic, files:DIR or polygon (or the known processes "
        "null and stationary)"
    )


def load_bars(config: ReplayConfig, bars: BarSource) -> dict[str, pd.DataFrame]:
    """Each model's bars from the history its first learning step needs to the range's end."""
    loaded = {}
    for key in config.models:
        needed = config.learning.history_bars(key.timeframe) + config.learning.warmup_bars
        frame = bars(key, config.start - history_span(key, needed), config.end)
        if frame.empty:
            raise ReplayError(f"{key}: the source returned no bars for the range")
        # The first learning step needs warm-up, 500 training rows, validation and the purge
        # and embargo before the range; with less, every arm would fail on it.
        learning = config.learning
        least = (
            learning.warmup_bars + 500 + learning.validation_for(key.timeframe)
            + 2 * learning.max_holding_bars
        )  # fmt: skip
        before = int((frame.index < config.start).sum())
        if before < least:
            raise ReplayError(
                f"{key}: the source has {before} bars before the range's start "
                f"{config.start:%Y-%m-%d %H:%M} UTC (first bar {frame.index[0]:%Y-%m-%d %H:%M}); "
                f"the first learning step needs at least {least} and uses up to {needed}. "
                "Start the replay later (--from), or give the source more history."
            )
        loaded[key.slug] = frame
    return loaded


def session_regimes(config: ReplayConfig, source: object) -> pd.DataFrame | None:
    """The regime of every session per symbol, when the source knows it (synthetic bars),
    from ``REGIME_LOOKBACK`` before the range so that a flip at its start is known."""
    regimes = getattr(source, "regimes", None)
    if regimes is None:
        return None
    rows = []
    for symbol in config.symbols:
        key = next(m for m in config.models if m.symbol == symbol)
        series = regimes(key, config.start - REGIME_LOOKBACK, config.end)
        by_session = series.groupby(series.index.floor(config.session_length), observed=True)
        for start, values in by_session:
            rows.append(
                {
                    "session": start.strftime(PARTITION_FORMAT),
                    "start": start,
                    "symbol": symbol,
                    "regime": str(values.iloc[0]),
                }
            )
    return pd.DataFrame(rows, columns=["session", "start", "symbol", "regime"])
