"""The trade journal on both databases: every journal test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from session_learning.resources.journal import TradeJournal


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal(request, tmp_path) -> TradeJournal:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    else:
        url = request.getfixturevalue("clean_postgres_url")
    j = TradeJournal(url)
    j.create_schema()
    return j
