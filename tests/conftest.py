"""Project-wide fixtures: the test PostgreSQL started by ./scripts/test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from session_learning.resources.journal import TradeJournal

POSTGRES_URL_VAR = "SESSION_LEARNING_TEST_POSTGRES_URL"
POSTGRES_FIXTURES = frozenset({"postgres_url", "clean_postgres_url"})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the PostgreSQL fixtures carry the marker, so `-m "not postgres"` works
    # without every test repeating it.
    for item in items:
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL (postgresql+psycopg2://) of the trade-journal test database."""
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        if _in_ci():
            pytest.fail(
                f"{POSTGRES_URL_VAR} is not set: PostgreSQL tests must run in CI "
                "(./scripts/test starts a server and sets it)",
                pytrace=False,
            )
        pytest.skip("PostgreSQL not available; run ./scripts/test to start one")
    return url


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> Iterator[str]:
    """`postgres_url` with an empty `public` schema, so each test starts from nothing."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            # A connection leaked by an earlier test would block DROP forever; fail instead.
            conn.execute(sqlalchemy.text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(sqlalchemy.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sqlalchemy.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    yield postgres_url


# Every journal test runs on SQLite and on PostgreSQL: same schema, same code.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal(request, tmp_path) -> TradeJournal:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    else:
        url = request.getfixturevalue("clean_postgres_url")
    j = TradeJournal(url)
    j.create_schema()
    return j
