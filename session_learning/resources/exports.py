"""Folders the pipeline writes people-facing files into."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field


class TradeExportsResource(dg.ConfigurableResource):
    """The folder of per-session trade CSVs (``winners_``, ``losers_``, ``all_trades_``)."""

    directory: str = Field(description="Folder for the per-session trade CSV exports.")

    def path(self) -> Path:
        return Path(self.directory)
