"""Identities shared by every part of the domain: timeframes, model keys, column contracts."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

# Bar length of each supported timeframe.
TIMEFRAMES: dict[str, pd.Timedelta] = {
    "5T": pd.Timedelta(minutes=5),
    "15T": pd.Timedelta(minutes=15),
    "30T": pd.Timedelta(minutes=30),
    "1H": pd.Timedelta(hours=1),
    "4H": pd.Timedelta(hours=4),
}

DIRECTIONS = ("long", "short")
EXIT_REASONS = ("take_profit", "stop_loss", "timeout", "manual")

# Columns of one closed trade, in journal order ("Data contract" in the README; the types and
# units are in DATA_CONTRACT, session_learning/domain/trades.py).
TRADE_COLUMNS = (
    "trade_id",
    "symbol",
    "timeframe",
    "direction",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "stop_loss",
    "take_profit",
    "exit_reason",
    "pnl",
    "confidence",
    "model_version",
)

# OHLCV bars: a UTC DatetimeIndex of bar *open* times; a bar's values are known at open + timeframe.
BAR_COLUMNS = ("open", "high", "low", "close", "volume")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,16}$")


class UnknownModelError(ValueError):
    """A symbol or timeframe that is not configured."""


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    """The bar length of ``timeframe``; raises ``UnknownModelError`` for an unsupported one."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise UnknownModelError(
            f"unknown timeframe {timeframe!r}; supported: {', '.join(TIMEFRAMES)}"
        ) from None


@dataclass(frozen=True, order=True)
class ModelKey:
    """One model = one symbol on one timeframe, e.g. ``ModelKey("EURUSD", "30T")``."""

    symbol: str
    timeframe: str

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.match(self.symbol):
            raise UnknownModelError(
                f"invalid symbol {self.symbol!r}: use 2-16 upper-case letters or digits"
            )
        timeframe_delta(self.timeframe)

    @property
    def slug(self) -> str:
        """A name safe for asset keys, file names and URLs: ``EURUSD_30T``."""
        return f"{self.symbol}_{self.timeframe}"

    @property
    def bar(self) -> pd.Timedelta:
        return timeframe_delta(self.timeframe)

    @classmethod
    def parse(cls, text: str) -> ModelKey:
        """Parse ``EURUSD:30T``, ``EURUSD/30T`` or ``EURUSD_30T``."""
        parts = re.split(r"[:/_ ]", text.strip(), maxsplit=1)
        if len(parts) != 2:
            raise UnknownModelError(f"cannot parse model {text!r}; expected SYMBOL:TIMEFRAME")
        return cls(parts[0].upper(), parts[1].upper())

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe}"


def parse_models(text: str) -> tuple[ModelKey, ...]:
    """Parse a comma-separated model list such as ``EURUSD:30T,GBPUSD:15T``."""
    models = tuple(ModelKey.parse(part) for part in text.split(",") if part.strip())
    if not models:
        raise UnknownModelError("the model list is empty")
    if len(set(models)) != len(models):
        raise UnknownModelError(f"the model list has duplicates: {text!r}")
    return models


DEFAULT_MODELS: tuple[ModelKey, ...] = (
    ModelKey("EURUSD", "30T"),
    ModelKey("EURUSD", "15T"),
    ModelKey("GBPUSD", "30T"),
    ModelKey("GBPUSD", "15T"),
    ModelKey("XAUUSD", "30T"),
    ModelKey("XAUUSD", "15T"),
)
