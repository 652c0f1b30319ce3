import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.backtest import (
    TRADE_FRAME_COLUMNS,
    BacktestConfig,
    CostModel,
    compute_metrics,
    run_backtest,
    signals_from_probabilities,
)
from tests.builders import ohlc_frame, random_ohlc

BAR = pd.Timedelta(minutes=30)


def make_bars(rows, start="2025-01-06 00:00"):
    return ohlc_frame(rows, start)


def random_bars(seed, n):
    return make_bars(random_ohlc(seed, n))


def reference_backtest(bars, signals, atr, config, costs):
    """A plain bar-by-bar simulation, written without the module's barrier code."""
    o, h, lo, c = (bars[col].tolist() for col in ("open", "high", "low", "close"))
    n = len(o)
    trades = []
    position = None
    t = 0
    while t < n:
        if position is None:
            width = atr[t]
            if signals[t] != 0 and t + 1 < n and width == width and width > 0:
                d, entry = int(signals[t]), o[t + 1]
                position = {
                    "d": d,
                    "entry": entry,
                    "entry_bar": t + 1,
                    "signal": t,
                    "tp": entry + d * config.tp_atr * width,
                    "sl": entry - d * config.sl_atr * width,
                }
            t += 1
            continue
        p = position
        if p["d"] == 1:
            gap_stop, gap_take = o[t] <= p["sl"], o[t] >= p["tp"]
            stop, take = lo[t] <= p["sl"], h[t] >= p["tp"]
        else:
            gap_stop, gap_take = o[t] >= p["sl"], o[t] <= p["tp"]
            stop, take = h[t] >= p["sl"], lo[t] <= p["tp"]
        exit_ = None
        if gap_stop:
            exit_ = (o[t], "stop_loss")
        elif gap_take:
            exit_ = (p["tp"], "take_profit")
        elif stop:
            exit_ = (p["sl"], "stop_loss")
        elif take:
            exit_ = (p["tp"], "take_profit")
        elif t - p["entry_bar"] + 1 == config.max_holding_bars:
            exit_ = (c[t], "timeout")
        if exit_ is None:
            t += 1
            continue
        price, reason = exit_
        gross = p["d"] * (price - p["entry"])
        cost = costs.spread + costs.commission_rate * p["entry"] + costs.commission_rate * price
        pnl = gross - cost
        trades.append(
            {
                "entry_time": bars.index[p["entry_bar"]],
                "exit_time": bars.index[t] + BAR,
                "direction": "long" if p["d"] == 1 else "short",
                "entry_price": p["entry"],
                "exit_price": price,
                "stop_loss": p["sl"],
                "take_profit": p["tp"],
                "exit_reason": reason,
                "pnl": pnl,
                "r_multiple": pnl / abs(p["entry"] - p["sl"]),
                "bars_held": t - p["entry_bar"] + 1,
                "signal_index": p["signal"],
            }
        )
        position = None  # the exit bar's own signal is considered next, without advancing
    return pd.DataFrame(trades, columns=list(TRADE_FRAME_COLUMNS))


def reference_metrics(trades, risk):
    """The metrics from their definitions, with pandas and the statistics module."""
    r = trades["r_multiple"]
    equity = (1 + risk * r).cumprod()
    peaks = pd.concat([pd.Series([1.0]), equity], ignore_index=True).cummax().iloc[1:]
    drawdown = (1 - equity.to_numpy() / peaks.to_numpy()).max()
    wins, losses = r[r > 0].sum(), -r[r < 0].sum()
    years = (trades["exit_time"].iloc[-1] - trades["exit_time"].iloc[0]).total_seconds() / (
        365.25 * 86400
    )
    sd = statistics.stdev(r)
    return {
        "trades": len(r),
        "win_rate": (trades["pnl"] > 0).mean(),
        "profit_factor": wins / losses,
        "max_drawdown_pct": 100 * drawdown,
        "expectancy_r": statistics.fmean(r),
        "sharpe": statistics.fmean(r) / sd * math.sqrt(len(r) / years),
        "total_return_pct": 100 * (equity.iloc[-1] - 1),
    }


@pytest.mark.parametrize("seed", range(30))
def test_matches_reference_simulation(seed):
    rng = np.random.default_rng(seed)
    n = 400
    bars = random_bars(seed, n)
    signals = rng.choice([-1, 0, 1], size=n, p=[0.15, 0.7, 0.15])
    atr = rng.integers(1, 10, n) * 0.25
    atr[rng.random(n) < 0.05] = np.nan
    atr[rng.random(n) < 0.02] = 0.0
    config = BacktestConfig(
        tp_atr=float(rng.choice([1.0, 1.5, 2.0, 3.0])),
        sl_atr=float(rng.choice([0.5, 1.0, 2.0])),
        max_holding_bars=int(rng.integers(1, 20)),
        risk_per_trade=0.02,
    )
    costs = CostModel(spread=float(rng.choice([0.0, 0.25])), commission_rate=0.0005)

    result = run_backtest(bars, signals, atr, config, costs)
    expected = reference_backtest(bars, signals, atr, config, costs)

    assert len(expected) > 10
    pd.testing.assert_frame_equal(
        result.trades, expected, check_dtype=False, check_exact=False, rtol=1e-12
    )
    assert set(expected["exit_reason"]) <= {"take_profit", "stop_loss", "timeout"}
    want = reference_metrics(expected, config.risk_per_trade)
    assert result.metrics.as_dict() == pytest.approx(want, rel=1e-9)
    assert result.equity.to_numpy() == pytest.approx(
        (1 + config.risk_per_trade * expected["r_multiple"]).cumprod().to_numpy(), rel=1e-12
    )
    assert (result.equity.index == pd.DatetimeIndex(expected["exit_time"])).all()


QUIET = (100.0, 100.5, 99.5, 100.0)
CONFIG = BacktestConfig(tp_atr=2.0, sl_atr=1.0, max_holding_bars=4)
NO_COSTS = CostModel()


def backtest(rows, signals, config=CONFIG, costs=NO_COSTS, atr=1.0):
    bars = make_bars(rows)
    atr = np.full(len(rows), atr) if np.isscalar(atr) else np.asarray(atr, dtype=float)
    return run_backtest(bars, np.asarray(signals), atr, config, costs)


def only_trade(result):
    assert len(result.trades) == 1
    return result.trades.iloc[0]


def test_take_profit_trade():
    rows = [QUIET, QUIET, (100.5, 102.5, 100.0, 102.0), QUIET, QUIET]
    trade = only_trade(backtest(rows, [1, 0, 0, 0, 0]))
    index = make_bars(rows).index
    assert trade["entry_time"] == index[1]
    assert trade["exit_time"] == index[2] + BAR
    assert trade["direction"] == "long"
    assert (trade["entry_price"], trade["exit_price"]) == (100.0, 102.0)
    assert (trade["take_profit"], trade["stop_loss"]) == (102.0, 99.0)
    assert trade["exit_reason"] == "take_profit"
    assert (trade["pnl"], trade["r_multiple"]) == (2.0, 2.0)
    assert (trade["bars_held"], trade["signal_index"]) == (2, 0)


def test_stop_loss_short_trade():
    rows = [QUIET, QUIET, (100.5, 101.5, 100.0, 101.2), QUIET, QUIET]
    trade = only_trade(backtest(rows, [-1, 0, 0, 0, 0]))
    assert (trade["direction"], trade["exit_reason"]) == ("short", "stop_loss")
    assert (trade["take_profit"], trade["stop_loss"], trade["exit_price"]) == (98.0, 101.0, 101.0)
    assert (trade["pnl"], trade["r_multiple"]) == (-1.0, -1.0)


def test_both_barriers_in_one_bar_is_a_stop():
    rows = [QUIET, QUIET, (100.5, 102.5, 98.5, 101.0), QUIET, QUIET]
    trade = only_trade(backtest(rows, [1, 0, 0, 0, 0]))
    assert (trade["exit_reason"], trade["exit_price"], trade["r_multiple"]) == (
        "stop_loss",
        99.0,
        -1.0,
    )


def test_gap_through_stop_fills_at_open():
    rows = [QUIET, QUIET, (98.5, 98.8, 98.0, 98.2), QUIET, QUIET]
    trade = only_trade(backtest(rows, [1, 0, 0, 0, 0]))
    assert (trade["exit_reason"], trade["exit_price"], trade["r_multiple"]) == (
        "stop_loss",
        98.5,
        -1.5,
    )


def test_timeout_exits_at_close():
    rows = [QUIET, QUIET, (100.0, 101.0, 99.4, 100.6), QUIET, QUIET]
    config = BacktestConfig(tp_atr=2.0, sl_atr=1.0, max_holding_bars=2)
    trade = only_trade(backtest(rows, [1, 0, 0, 0, 0], config=config))
    assert (trade["exit_reason"], trade["exit_price"], trade["bars_held"]) == ("timeout", 100.6, 2)
    assert trade["r_multiple"] == pytest.approx(0.6)


def test_trade_open_at_end_is_not_counted():
    rows = [QUIET] * 5  # a signal on bar 2 would need bars 3..6 to time out
    result = backtest(rows, [0, 0, 1, 0, 1])  # the last bar has no next open to enter on either
    assert result.trades.empty
    assert list(result.trades.columns) == list(TRADE_FRAME_COLUMNS)
    assert result.equity.empty
    assert result.metrics.trades == 0 and result.metrics.profit_factor == 0.0


def test_costs_reduce_pnl_by_spread_and_commission():
    rows = [QUIET, QUIET, (100.5, 102.5, 100.0, 102.0), QUIET, QUIET]
    costs = CostModel(spread=0.1, commission_rate=0.001)
    trade = only_trade(backtest(rows, [1, 0, 0, 0, 0], costs=costs))
    # 0.1 spread + 0.001 * (100 entry + 102 exit) = 0.302
    assert trade["pnl"] == pytest.approx(2.0 - 0.302, abs=1e-12)
    assert trade["r_multiple"] == pytest.approx(1.698, abs=1e-12)


def test_one_position_at_a_time():
    rows = [
        QUIET,
        QUIET,  # entry of the first trade
        (100.5, 102.5, 100.0, 102.0),  # take profit; this bar's signal opens the next trade
        (102.0, 102.2, 101.8, 102.0),  # entry of the second trade
        (102.0, 102.2, 100.5, 100.8),  # second trade stopped at 101
        QUIET,
    ]
    result = backtest(rows, [1, -1, 1, 1, 0, 0])
    assert result.trades["signal_index"].tolist() == [0, 2]
    assert result.trades["entry_price"].tolist() == [100.0, 102.0]
    assert result.trades["exit_reason"].tolist() == ["take_profit", "stop_loss"]
    assert result.equity.to_numpy() == pytest.approx([1.02, 1.02 * 0.99])


def test_signal_without_atr_is_skipped():
    rows = [QUIET, QUIET, QUIET, (100.0, 102.5, 99.8, 102.0), QUIET]
    result = backtest(rows, [1, 1, 0, 0, 0], atr=[np.nan, 1.0, 1.0, 1.0, 1.0])
    assert only_trade(result)["signal_index"] == 1


def test_series_inputs_are_aligned_by_index():
    rows = [QUIET, QUIET, (100.5, 102.5, 100.0, 102.0), QUIET, QUIET]
    bars = make_bars(rows)
    # Reversed Series: by position the signal would sit on the last bar and never trade.
    signals = pd.Series([1, 0, 0, 0, 0], index=bars.index).iloc[::-1]
    atr = pd.Series(1.0, index=bars.index).iloc[::-1]
    result = run_backtest(bars, signals, atr, CONFIG, NO_COSTS)
    assert result.trades["signal_index"].tolist() == [0]


def test_rejects_bad_signals():
    with pytest.raises(ValueError):
        backtest([QUIET] * 3, [2, 0, 0])
    with pytest.raises(ValueError):
        backtest([QUIET] * 3, [1, 0])


def test_compute_metrics_by_hand():
    times = pd.date_range("2025-01-01", periods=4, freq="1D", tz="UTC")
    metrics = compute_metrics(np.array([2.0, -1.0, -1.0, 0.5]), times, risk_per_trade=0.1)
    # Equity 1.2, 1.08, 0.972, 1.0206: deepest fall 0.228 from the 1.2 peak.
    assert metrics.trades == 4
    assert metrics.win_rate == 0.5
    assert metrics.profit_factor == pytest.approx(2.5 / 2.0)
    assert metrics.max_drawdown_pct == pytest.approx(19.0)
    assert metrics.expectancy_r == pytest.approx(0.125)
    assert metrics.total_return_pct == pytest.approx(2.06)
    # Sample variance of R is 6.1875 / 3; four trades over three days.
    assert metrics.sharpe == pytest.approx(0.125 / math.sqrt(2.0625) * math.sqrt(4 * 365.25 / 3))


def test_drawdown_counts_starting_equity_as_peak():
    times = pd.date_range("2025-01-01", periods=2, freq="1D", tz="UTC")
    metrics = compute_metrics([-1.0, -1.0], times, risk_per_trade=0.1)
    assert metrics.max_drawdown_pct == pytest.approx(19.0)
    assert metrics.profit_factor == 0.0 and metrics.win_rate == 0.0


def test_metrics_without_losers_and_json():
    times = pd.date_range("2025-01-01", periods=2, freq="1D", tz="UTC")
    metrics = compute_metrics([1.0, 2.0], times, 0.01)
    assert metrics.profit_factor == math.inf
    assert metrics.max_drawdown_pct == 0.0
    payload = json.loads(json.dumps(metrics.as_dict(), allow_nan=False))
    assert payload["profit_factor"] is None and payload["trades"] == 2


def test_sharpe_undefined_is_zero():
    one_day = pd.DatetimeIndex(["2025-01-01"] * 3, tz="UTC")
    assert compute_metrics([1.0, -1.0, 2.0], one_day, 0.01).sharpe == 0.0
    times = pd.date_range("2025-01-01", periods=3, freq="1D", tz="UTC")
    assert compute_metrics([1.0, 1.0, 1.0], times, 0.01).sharpe == 0.0
    assert compute_metrics([1.0], times[:1], 0.01).sharpe == 0.0
    assert compute_metrics([], times[:0], 0.01) == compute_metrics([], [], 0.5)


def test_signals_from_probabilities():
    proba = np.array(
        [
            [0.10, 0.30, 0.60],  # long: 0.60 >= 0.45, edge 0.50
            [0.50, 0.10, 0.40],  # short: 0.50, edge 0.10
            [0.44, 0.20, 0.36],  # short below min confidence
            [0.47, 0.00, 0.53],  # long, edge 0.06 below 0.08
            [0.30, 0.40, 0.30],  # tie
            [0.05, 0.90, 0.05],  # flat
            [np.nan, np.nan, np.nan],
            [0.40, 0.10, 0.50],  # long, confidence 0.50, edge 0.10
        ]
    )
    signals = signals_from_probabilities(proba, min_confidence=0.45, edge_threshold=0.08)
    assert signals.dtype == np.int8
    assert signals.tolist() == [1, -1, 0, 0, 0, 0, 0, 1]
    loose = signals_from_probabilities(proba, min_confidence=0.0, edge_threshold=0.0)
    assert loose.tolist() == [1, -1, -1, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        signals_from_probabilities(proba[:, :2], 0.45, 0.08)


@pytest.mark.parametrize(
    "kwargs",
    [{"tp_atr": 0.0}, {"sl_atr": -1.0}, {"max_holding_bars": 0}, {"risk_per_trade": 1.5}],
)
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        BacktestConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"spread": -0.1}, {"commission_rate": -0.001}])
def test_costs_are_validated(kwargs):
    with pytest.raises(ValueError):
        CostModel(**kwargs)
