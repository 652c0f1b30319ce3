"""The signal monitor through Dagster: signals from the production model, resolution into
trades exactly once, and a degraded model paused until an operator re-enables it."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from session_learning.cli import main
from session_learning.domain.trades import quarantined_trades, validate_trades
from tests.assets.conftest import EURUSD
from tests.builders import frame, trade
from tests.judgements import redeploy_with_rule


def _always_signal(p) -> str:
    """Make the production model's rule trade every bar, so a tick always signals."""
    return redeploy_with_rule(p.registry, EURUSD, min_confidence=0.0, edge_threshold=0.0)


def _metadata(result, node: str) -> dict:
    [event] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def test_signal_then_resolution_exactly_once(deployed):
    p, _ = deployed
    version = _always_signal(p)
    first = p.monitor("2025-03-05T10:00:00+00:00")
    assert first.success
    assert _metadata(first, "live_signals")["signals_emitted"] == 1
    signals = p.journal.open_signals()
    assert len(signals) == 1 and signals.iloc[0]["model_version"] == version
    assert signals.iloc[0]["bar_time"] == "2025-03-05T09:30:00+00:00"  # newest closed bar

    again = p.monitor("2025-03-05T10:00:00+00:00")
    assert "already signalled this bar" in _metadata(again, "live_signals")["models"]
    assert len(p.journal.open_signals()) == 1

    rows_before = p.journal.count_trades()
    later = p.monitor("2025-03-06T10:00:00+00:00")  # past the 24-bar expiry
    assert _metadata(later, "resolved_signals")["resolved"] == 1
    assert p.journal.count_trades() == rows_before + 1
    start, end = pd.Timestamp("2025-03-05T10:00Z"), pd.Timestamp("2025-03-06T10:00Z")
    trades = validate_trades(p.journal.trades_exited_between(start, end))
    assert quarantined_trades(trades).empty  # monitor trades pass the quality rules
    assert trades.iloc[0]["exit_reason"] in {"take_profit", "stop_loss", "timeout"}

    p.monitor("2025-03-06T10:00:00+00:00")
    assert p.journal.count_trades() == rows_before + 1 + 0  # never resolved twice


def test_degraded_model_is_paused_until_an_operator_enables_it(deployed, monkeypatch, capsys):
    p, _ = deployed
    version = _always_signal(p)
    losing = [
        {
            **trade(
                win=i % 4 == 0,
                entry_time=f"2025-03-05T{i % 20:02d}:00:00+00:00",
                exit_time=f"2025-03-05T{i % 20:02d}:30:00+00:00",
            ),
            "model_version": version,
        }
        for i in range(40)
    ]
    p.journal.add_trades(frame(losing))  # 10 winners (+2R), 30 losers (-1R): PF 0.67
    p.configure()  # health is judged against the real gates, not the fixture's permissive ones

    tick = p.monitor("2025-03-05T22:00:00+00:00")
    meta = _metadata(tick, "live_signals")
    assert meta["degraded"] == 1 and "paused: degraded" in meta["models"]
    assert p.registry.health(EURUSD)["status"] == "degraded"
    assert p.journal.open_signals().empty
    alerts = p.journal.alerts()
    assert list(alerts["kind"]) == ["degraded"] and version in alerts.iloc[0]["message"]

    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    assert main(["enable", "EURUSD", "30T", "--reason", "reviewed"]) == 0
    tick = p.monitor("2025-03-05T22:00:00+00:00")
    assert "enabled by operator" in _metadata(tick, "live_signals")["models"]
    assert len(p.journal.open_signals()) == 1
    assert "re-enabled" in capsys.readouterr().out


def test_a_model_the_arena_paused_emits_no_signal(deployed):
    p, _ = deployed
    version = _always_signal(p)
    assert p.registry.pause(EURUSD, reason="change alarm: CUSUM 7.1 >= 6.2", session="s")
    paused = p.monitor("2025-03-05T10:00:00+00:00")
    assert paused.success
    meta = _metadata(paused, "live_signals")
    assert meta["signals_emitted"] == 0 and "paused by the arena" in meta["models"]
    assert p.journal.open_signals().empty
    # A rollback to the same version ends the pause: it signals again.
    p.registry.rollback(EURUSD, to_version=version)
    resumed = p.monitor("2025-03-05T10:00:00+00:00")
    assert _metadata(resumed, "live_signals")["signals_emitted"] == 1


def _losers(version: str, day: str) -> pd.DataFrame:
    """40 trades of ``version`` exiting on ``day``: 10 winners (+2R), 30 losers (-1R)."""
    rows = [
        {
            **trade(
                win=i % 4 == 0,
                entry_time=f"{day}T{i % 20:02d}:00:00+00:00",
                exit_time=f"{day}T{i % 20:02d}:30:00+00:00",
            ),
            "model_version": version,
        }
        for i in range(40)
    ]
    return frame(rows)


def test_enable_refuses_a_model_that_is_not_degraded(deployed, monkeypatch, capsys):
    p, _ = deployed
    version = _always_signal(p)
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    assert main(["enable", "EURUSD", "30T", "--reason", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not degraded" in err and version in err
    assert p.registry.health(EURUSD)["status"] == "ok"  # nothing recorded

    p.journal.add_trades(_losers(version, "2025-03-05"))
    p.configure()
    tick = p.monitor("2025-03-05T22:00:00+00:00")
    assert "paused: degraded" in _metadata(tick, "live_signals")["models"]


def test_an_override_does_not_outlive_a_later_degradation(deployed):
    p, _ = deployed
    version = _always_signal(p)
    p.journal.add_trades(_losers(version, "2025-03-05"))
    p.configure()
    p.monitor("2025-03-05T22:00:00+00:00")
    assert p.registry.health(EURUSD)["status"] == "degraded"
    given = datetime(2025, 3, 5, 23, tzinfo=UTC)
    p.registry.set_health(EURUSD, "enabled", "reviewed", version=version, now=given)

    tick = p.monitor("2025-03-06T00:00:00+00:00")  # the pause it was given for is lifted
    assert "enabled by operator" in _metadata(tick, "live_signals")["models"]
    assert len(p.journal.open_signals()) == 1

    p.journal.add_trades(_losers(version, "2025-03-07"))  # closed after the override
    tick = p.monitor("2025-03-07T22:00:00+00:00")
    meta = _metadata(tick, "live_signals")
    assert meta["degraded"] == 1 and "paused: degraded" in meta["models"]
    assert p.registry.health(EURUSD)["status"] == "degraded"
    assert list(p.journal.alerts()["kind"]) == ["degraded", "degraded"]
