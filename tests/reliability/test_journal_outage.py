"""The journal database unreachable at the start of a run, stopped for real in the middle of
one, and stopped inside the monitor's write: a clear error, nothing half-written, and the next
run converges once the database is back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from session_learning.resources.journal import TradeJournal
from session_learning.resources.market_data import SyntheticMarketDataResource
from session_learning.settings import JOURNAL_URL_VAR
from tests.assets.conftest import EURUSD, S1, S2
from tests.assets.test_learning_assets import production_files
from tests.judgements import LOSING_VARIANT_SESSION, deploy_losing_variant, redeploy_with_rule
from tests.reliability.conftest import (
    FaultPipeline,
    PostgresCluster,
    failures,
    seed_journal,
    succeeded,
    tree,
)


def _journal_down(result, step: str, password: str) -> None:
    """``step`` failed with the journal's own error, which names the database with its
    password masked, and says that nothing was written. (The test cluster's password is also
    its database name, so tests/reliability/test_security.py checks for leaks with a role of
    its own.)"""
    failed = failures(result)
    assert step in failed, failed
    text = failed[step]
    assert "JournalUnavailableError" in text and "is unreachable" in text
    assert "nothing was written" in text
    assert f":{password}@" not in text and ":***@" in text


def _on_postgres(home: Path, url: str, monkeypatch, **kwargs) -> FaultPipeline:
    monkeypatch.setenv(JOURNAL_URL_VAR, url)
    return FaultPipeline(home, journal_url=url, **kwargs)


# --- unreachable from the start -------------------------------------------------------------


def test_journal_on_a_closed_port_fails_session_trades_and_writes_nothing(tmp_path, monkeypatch):
    url = "postgresql+psycopg2://trader:hunter2-s3cret@127.0.0.1:1/journal"
    p = _on_postgres(tmp_path / "home", url, monkeypatch)
    result = p.run(S1)
    assert not result.success
    _journal_down(result, "session_trades", "hunter2-s3cret")
    # The arena's shadow book is recorded in the journal too: it fails the same way.
    _journal_down(result, "EURUSD_30T__shadow_book", "hunter2-s3cret")
    assert set(failures(result)) == {"session_trades", "EURUSD_30T__shadow_book"}
    assert not succeeded(result)
    for folder in (p.settings.values_dir, p.settings.exports_dir, p.settings.models_dir):
        assert tree(folder) == {}


@pytest.mark.postgres
def test_postgres_stopped_before_the_run_then_back_converges(pg_cluster, tmp_path, monkeypatch):
    p = _on_postgres(tmp_path / "home", pg_cluster.url, monkeypatch)
    seed_journal(p)
    pg_cluster.stop()
    result = p.run(S1)
    assert not result.success
    _journal_down(result, "session_trades", pg_cluster.password)
    assert tree(p.settings.values_dir) == tree(p.settings.models_dir) == {}

    pg_cluster.start()
    again = p.run(S1)
    assert again.success
    assert [e["session"] for e in p.registry.history(EURUSD)] == [S1]


# --- stopped in the middle of a learning run ------------------------------------------------


class StopsPostgresOnFirstRead(SyntheticMarketDataResource):
    """Synthetic bars whose first read stops the PostgreSQL cluster: the outage lands inside
    the run, before the shadow book's or the training set's own journal write or read
    (whichever step reads bars first)."""

    cluster_version: str
    cluster_name: str
    cluster_port: int
    marker: str

    def bars(self, key, start, end):
        flag = Path(self.marker)
        if not flag.exists():
            flag.touch()
            PostgresCluster(self.cluster_version, self.cluster_name, self.cluster_port).stop()
        return super().bars(key, start, end)


@pytest.mark.postgres
def test_postgres_stopped_mid_run_fails_clearly_and_rerun_converges(
    pg_cluster, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    p = _on_postgres(home, pg_cluster.url, monkeypatch)
    seed_journal(p)
    assert p.run(S1).success
    deploy_losing_variant(p.registry, EURUSD)  # so that the S2 candidate beats production
    before = production_files(p.settings.models_dir)

    stopping = StopsPostgresOnFirstRead(
        cluster_version=pg_cluster.version,
        cluster_name=pg_cluster.name,
        cluster_port=pg_cluster.port,
        marker=str(tmp_path / "stopped"),
    )
    broken = _on_postgres(home, pg_cluster.url, monkeypatch, resources={"market_data": stopping})
    result = broken.run(S2)
    assert not result.success
    # The outage lands at the first bars read: the shadow book's or the training set's,
    # whichever step runs first; every step after it that needs the journal fails too.
    down = {"EURUSD_30T__shadow_book", "EURUSD_30T__weighted_training_set"} & set(failures(result))
    assert down, failures(result)
    for step in down:
        _journal_down(result, step, pg_cluster.password)
    assert not {"EURUSD_30T__candidate_model", "EURUSD_30T__deployed_model"} & succeeded(result)
    assert production_files(p.settings.models_dir) == before

    pg_cluster.start()
    again = p.run(S2)
    assert again.success
    # After the first deployment only the arena promotes: the re-run judges S2's candidate
    # and production stays the variant; the arena folded S2 once.
    sessions = [e["session"] for e in p.registry.history(EURUSD)]
    assert sessions == [S1, LOSING_VARIANT_SESSION]
    assert p.registry.arena(EURUSD)["session"] == S2


# --- stopped inside the monitor's write -----------------------------------------------------


@pytest.mark.postgres
def test_postgres_stopped_inside_the_monitors_write_leaves_no_half_trade(
    pg_cluster, tmp_path, monkeypatch
):
    p = _on_postgres(tmp_path / "home", pg_cluster.url, monkeypatch)
    seed_journal(p)
    assert p.run(S1).success
    # trade every bar, so the tick surely signals
    redeploy_with_rule(p.registry, EURUSD, min_confidence=0.0, edge_threshold=0.0)
    assert p.monitor("2025-03-05T10:00:00+00:00").success
    [signal_id] = p.journal.open_signals()["signal_id"]
    trades_before = p.journal.count_trades()

    # Resolving a signal is one transaction: mark it resolved, then insert its trade. The
    # server goes down between the two statements.
    engine = TradeJournal(pg_cluster.url).engine

    def stop_before_the_trade_insert(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TRADES"):
            sa.event.remove(engine, "before_cursor_execute", stop_before_the_trade_insert)
            pg_cluster.stop()

    sa.event.listen(engine, "before_cursor_execute", stop_before_the_trade_insert)
    try:
        result = p.monitor("2025-03-06T10:00:00+00:00")  # past the signal's expiry
    finally:
        if sa.event.contains(engine, "before_cursor_execute", stop_before_the_trade_insert):
            sa.event.remove(engine, "before_cursor_execute", stop_before_the_trade_insert)
    assert not result.success
    _journal_down(result, "resolved_signals", pg_cluster.password)
    assert "live_signals" not in succeeded(result)

    pg_cluster.start()
    # Rolled back whole: the signal is still open and no trade was written.
    assert list(p.journal.open_signals()["signal_id"]) == [signal_id]
    assert p.journal.count_trades() == trades_before

    for _ in range(2):  # resolved on the next tick, and never twice
        assert p.monitor("2025-03-06T10:00:00+00:00").success
        assert signal_id not in set(p.journal.open_signals()["signal_id"])
        assert p.journal.count_trades() == trades_before + 1
    resolved = p.journal.trades_exited_between(
        pd.Timestamp("2025-03-05T10:00Z"), pd.Timestamp("2025-03-06T10:00Z")
    )
    assert len(resolved) == 1
