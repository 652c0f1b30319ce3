"""The trade journal as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from session_learning.resources.journal.trade_journal import TradeJournal


class TradeJournalResource(dg.ConfigurableResource):
    """The trade journal database (SQLite file by default, PostgreSQL in production)."""

    url: str = Field(
        description="SQLAlchemy URL of the journal, e.g. sqlite:////srv/sl/journal.sqlite or "
        "postgresql+psycopg2://user:password@host:5432/db (pass it with an EnvVar)."
    )

    def journal(self) -> TradeJournal:
        return TradeJournal(self.url)
