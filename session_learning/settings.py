"""Deployment settings read from environment variables when the code location loads.

Everything that shapes the asset graph (the models, the session length) has to be known when
the definitions are built; everything else is resource or run config.

| variable | default | meaning |
|---|---|---|
| SESSION_LEARNING_HOME | ./var | folder for the SQLite journal, exports, models, stored values |
| SESSION_LEARNING_JOURNAL_URL | sqlite:///$HOME/journal.sqlite | trade journal (SQLAlchemy URL) |
| SESSION_LEARNING_MODELS | EURUSD:30T,EURUSD:15T,GBPUSD:30T,GBPUSD:15T,XAUUSD:30T,XAUUSD:15T | models |
| SESSION_LEARNING_SESSION_HOURS | 4 | session length (partitions and schedule) |
| SESSION_LEARNING_START | 2025-01-01-00:00 | first partition |
| SESSION_LEARNING_SYNTHETIC_SEED | 7 | seed of the synthetic market data |
| SESSION_LEARNING_MARKET_DATA | synthetic | synthetic, files:/path/to/folder, or polygon (key in POLYGON_API_KEY) |
| SESSION_LEARNING_CALENDARS | (per symbol) | trading calendar overrides, e.g. SPY:XNYS,USDJPY:24/5 (*:NAME for all) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from session_learning.domain.models import DEFAULT_MODELS, ModelKey, parse_models
from session_learning.partitions import DEFAULT_SESSION_HOURS, DEFAULT_START

JOURNAL_URL_VAR = "SESSION_LEARNING_JOURNAL_URL"


@dataclass(frozen=True)
class Settings:
    """What the code location is built from."""

    home: Path
    models: tuple[ModelKey, ...] = DEFAULT_MODELS
    session_hours: int = DEFAULT_SESSION_HOURS
    start: str = DEFAULT_START
    journal_url: str | None = None  # None: the SQLite file under home
    synthetic_seed: int = 7
    market_data: str = "synthetic"  # synthetic | files:<folder> | polygon
    calendars: tuple[tuple[str, str], ...] = ()  # (symbol or "*", calendar name) overrides

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("SESSION_LEARNING_HOME", "var")).resolve()
        models = env.get("SESSION_LEARNING_MODELS")
        return cls(
            home=home,
            models=parse_models(models) if models else DEFAULT_MODELS,
            session_hours=int(env.get("SESSION_LEARNING_SESSION_HOURS", DEFAULT_SESSION_HOURS)),
            start=env.get("SESSION_LEARNING_START", DEFAULT_START),
            journal_url=env.get(JOURNAL_URL_VAR) or None,
            synthetic_seed=int(env.get("SESSION_LEARNING_SYNTHETIC_SEED", "7")),
            market_data=env.get("SESSION_LEARNING_MARKET_DATA", "synthetic"),
            calendars=parse_calendars(env.get("SESSION_LEARNING_CALENDARS", "")),
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
