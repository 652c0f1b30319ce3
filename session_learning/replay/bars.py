"""Where the replay's bars come from (synthetic, files, Polygon), loaded and checked, and the
known regimes of synthetic bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from session_learning.domain import synthetic
from session_learning.domain.models import ModelKey
from session_learning.partitions import PARTITION_FORMAT
from session_learning.replay.config import ReplayConfig, ReplayError, history_span

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


def describe_bars(source: object) -> str:
    """What a bar source is, in the report's words: ``synthetic bars (seed 7)``, ``bar files
    in /srv/bars``, ``Polygon.io aggregates``; a market-data resource's bound ``bars`` method
    is described by its resource."""
    owner = getattr(source, "__self__", source)
    owner = getattr(owner, "resource", owner)  # ValidatedBars wraps a market-data resource
    name = type(owner).__name__
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
    """The bars ``--source`` names: ``synthetic``, ``files:DIR`` or ``polygon``. Files and
    Polygon read the deployment's settings: gap limits from SESSION_LEARNING_SETTINGS, the key
    from POLYGON_API_KEY, address and page size from SESSION_LEARNING_POLYGON_*."""
    if source == "synthetic":
        return SyntheticBars(seed)
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
    raise ReplayError(f"--source {source!r}: use synthetic, files:DIR or polygon")


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
