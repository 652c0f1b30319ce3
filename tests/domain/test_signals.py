"""The monitor's resolution of open signals on hand-built bars, and health verdicts."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.domain.backtest import CostModel
from session_learning.domain.health import HealthRule, assess_health
from session_learning.domain.keys import ModelKey
from session_learning.domain.signals import resolve_signal

KEY = ModelKey("EURUSD", "30T")
T0 = pd.Timestamp("2025-03-04T10:00Z")


def bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    index = pd.date_range(T0, periods=len(rows), freq="30min", name="time")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    frame["volume"] = 1.0
    return frame


def signal(direction: str = "long", tp: float = 1.1020, sl: float = 1.0990, bars_: int = 3) -> dict:
    return {
        "signal_id": "S1",
        "symbol": "EURUSD",
        "timeframe": "30T",
        "direction": direction,
        "entry_time": T0.isoformat(),
        "entry_price": 1.1000,
        "take_profit": tp,
        "stop_loss": sl,
        "confidence": 0.6,
        "expires_at": (T0 + bars_ * KEY.bar).isoformat(),
        "model_version": "v1",
    }


FLAT = (1.1000, 1.1005, 1.0995, 1.1000)


def test_take_profit_hit():
    trade = resolve_signal(
        signal(), bars([FLAT, (1.1000, 1.1025, 1.0998, 1.1020), FLAT]), KEY, CostModel()
    )
    assert trade["exit_reason"] == "take_profit" and trade["exit_price"] == pytest.approx(1.1020)
    assert trade["exit_time"] == (T0 + 2 * KEY.bar).isoformat()  # close of the second bar
    assert trade["pnl"] == pytest.approx(0.0020)


def test_stop_loss_hit_for_a_short():
    s = signal("short", tp=1.0980, sl=1.1010)
    trade = resolve_signal(
        s, bars([FLAT, (1.1000, 1.1012, 1.0999, 1.1008), FLAT]), KEY, CostModel()
    )
    assert trade["exit_reason"] == "stop_loss" and trade["pnl"] == pytest.approx(-0.0010)


def test_same_bar_touching_both_is_a_stop_loss():
    trade = resolve_signal(
        signal(), bars([(1.1000, 1.1030, 1.0980, 1.1000), FLAT, FLAT]), KEY, CostModel()
    )
    assert trade["exit_reason"] == "stop_loss" and trade["exit_price"] == pytest.approx(1.0990)


def test_expiry_times_out_at_the_last_bars_close():
    trade = resolve_signal(
        signal(),
        bars([FLAT, FLAT, (1.1000, 1.1004, 1.0996, 1.1003)]),
        KEY,
        CostModel(spread=0.0001),
    )
    assert trade["exit_reason"] == "timeout"
    assert trade["exit_price"] == pytest.approx(1.1003)
    assert trade["pnl"] == pytest.approx(0.0003 - 0.0001)  # net of the spread
    assert trade["exit_time"] == (T0 + 3 * KEY.bar).isoformat()


def test_still_open_until_the_bars_arrive():
    assert resolve_signal(signal(), bars([FLAT, FLAT]), KEY, CostModel()) is None
    assert (
        resolve_signal(
            {
                **signal(),
                "entry_time": (T0 + 5 * KEY.bar).isoformat(),
                "expires_at": (T0 + 8 * KEY.bar).isoformat(),
            },
            bars([FLAT]),
            KEY,
            CostModel(),
        )
        is None
    )


def test_brackets_follow_the_fill_price():
    # The entry bar opens 5 pips above the signal's reference price: TP/SL move with it.
    trade = resolve_signal(
        signal(), bars([(1.1005, 1.1024, 1.1000, 1.1010), FLAT, FLAT]), KEY, CostModel()
    )
    assert trade["entry_price"] == 1.1005
    assert trade["take_profit"] == pytest.approx(1.1025)
    assert trade["exit_reason"] != "take_profit"  # 1.1024 did not reach the moved 1.1025


def _live(n_win: int, n_loss: int) -> pd.DataFrame:
    rows = []
    for i in range(n_win + n_loss):
        win = i < n_win
        rows.append(
            {
                "exit_time": T0 + i * pd.Timedelta(hours=2),
                "entry_price": 1.1,
                "stop_loss": 1.099,
                "pnl": 0.002 if win else -0.001,
            }
        )
    return pd.DataFrame(rows)


def test_health_needs_enough_trades():
    verdict = assess_health(_live(0, 10), HealthRule(min_trades=30))
    assert verdict.status == "ok" and "not enough to judge" in verdict.reason


def test_health_degraded_below_the_gates():
    # 10 winners at +2R, 25 losers at -1R: PF 0.8, WR 28.6%.
    verdict = assess_health(_live(10, 25), HealthRule(min_trades=30))
    assert verdict.status == "degraded"
    assert verdict.profit_factor == pytest.approx(0.8)
    assert "profit factor 0.80 <= 1.4" in verdict.reason and "win rate 28.6%" in verdict.reason


def test_health_ok_within_the_gates():
    rows = _live(20, 20).sample(frac=1.0, random_state=3).reset_index(drop=True)
    rows["exit_time"] = [T0 + i * pd.Timedelta(hours=2) for i in range(len(rows))]
    verdict = assess_health(rows, HealthRule(min_trades=30, risk_per_trade=0.001))
    assert verdict.status == "ok", verdict.reason  # PF 2.0, WR 50%
