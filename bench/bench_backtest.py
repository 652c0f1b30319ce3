"""Benchmark 1: the validation backtest engine (``run_backtest``) against vectorbt.

Same synthetic bars, same signals, same take-profit / stop-loss / time exits and costs; the
trades of both must agree (entry and exit bars, direction, prices and pnl) before any time is
reported. See ``vectorbt_backtest.py`` for how vectorbt is configured to match.

Prints warm times (medians of interleaved repeats) and the time of a fresh process that imports
each engine and runs one validation-size backtest.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _common import (
    BENCH,
    arguments,
    header,
    interleaved,
    median,
    row,
    run_python,
    spread,
    write_results,
)

from session_learning.domain.backtest import (
    BacktestConfig,
    CostModel,
    run_backtest,
    signals_from_probabilities,
)
from session_learning.domain.features import atr
from session_learning.domain.synthetic import EPOCH, generate_bars

N_BARS = 100_000
VALIDATION_BARS = 4_000  # DEFAULT_VALIDATION_BARS["5T"], the largest validation window
CONFIG = BacktestConfig()  # 2 ATR take profit, 1 ATR stop, 24 bars at most
COSTS = CostModel(spread=0.00008, commission_rate=0.00002)
BAR = pd.Timedelta(minutes=5)
# numba's cache lives here, not in site-packages or the repository; a fresh directory is a cold
# start (every function compiled), a reused one a warm start (compiled code loaded from disk).
NUMBA_CACHE = Path(tempfile.gettempdir()) / "session_learning_bench_numba"


def make_inputs(n_bars: int, min_confidence: float) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """EURUSD 5T bars, their ATR and signals from seeded random class probabilities.

    At the default thresholds (confidence 0.45, edge 0.08) about 57% of bars carry a signal,
    as many as the trained candidates give on their validation windows (49-57%).
    """
    weeks = -(-n_bars // (5 * 288))
    bars = generate_bars("EURUSD", "5T", EPOCH, EPOCH + pd.Timedelta(weeks=weeks)).iloc[:n_bars]
    atr_values = atr(bars)
    proba = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], size=n_bars)
    signals = signals_from_probabilities(proba, min_confidence, CONFIG.edge_threshold)
    # No ATR yet: run_backtest skips these signals; zero them so both engines get the same set.
    signals[~np.isfinite(atr_values.to_numpy())] = 0
    return bars, atr_values, signals


def ours(bars: pd.DataFrame, atr_values: pd.Series, signals: np.ndarray):
    return run_backtest(bars, signals, atr_values, CONFIG, COSTS, bar_length=BAR)


def vbt_prepared(bars: pd.DataFrame, atr_values: pd.Series, signals: np.ndarray):
    import vectorbt_backtest as vb

    return vb.prepare(
        *(bars[c].to_numpy() for c in ("open", "high", "low", "close")),
        signals,
        atr_values.to_numpy(),
        tp_atr=CONFIG.tp_atr,
        sl_atr=CONFIG.sl_atr,
        max_holding_bars=CONFIG.max_holding_bars,
        spread=COSTS.spread,
        commission_rate=COSTS.commission_rate,
    )


def compare(result, records) -> dict:
    """Check that both engines made the same trades; raise with the first difference if not."""
    import vectorbt_backtest as vb

    theirs = vb.closed_trades(records)
    t = result.trades
    mine = {
        "entry_bar": t["signal_index"].to_numpy() + 1,
        "exit_bar": (t["signal_index"] + t["bars_held"]).to_numpy(),
        "direction": np.where(t["direction"].to_numpy() == "long", 1, -1),
        "entry_price": t["entry_price"].to_numpy(),
        "exit_price": t["exit_price"].to_numpy(),
        "pnl": t["pnl"].to_numpy(),
    }
    if len(mine["pnl"]) != len(theirs["pnl"]):
        raise AssertionError(f"trade counts differ: {len(mine['pnl'])} vs {len(theirs['pnl'])}")
    worst = {}
    for field in mine:
        if field in ("entry_bar", "exit_bar", "direction"):
            bad = np.flatnonzero(mine[field] != theirs[field])
        else:
            diff = np.abs(mine[field] - theirs[field])
            worst[field] = float(diff.max(initial=0.0))
            bad = np.flatnonzero(diff > 1e-9 * np.maximum(1.0, np.abs(mine[field])))
        if len(bad):
            i = bad[0]
            raise AssertionError(
                f"trade {i} differs in {field}: {mine[field][i]} vs {theirs[field][i]}"
            )
    return {"trades": len(mine["pnl"]), "max_abs_diff": worst}


# The fresh-process runs: the same validation-size inputs, loaded from one file.
CHILD_OURS = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np, pandas as pd
from session_learning.domain.backtest import BacktestConfig, CostModel, run_backtest
t1 = time.perf_counter()
d = np.load(sys.argv[1])
bars = pd.DataFrame({c: d[c] for c in ("open", "high", "low", "close")},
                    index=pd.DatetimeIndex(d["time"], tz="UTC"))
r = run_backtest(bars, d["signals"], d["atr"], BacktestConfig(), CostModel(**json.loads(sys.argv[2])),
                 bar_length=pd.Timedelta(minutes=5))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "run_s": t2 - t1, "trades": len(r.trades)}))
"""

CHILD_VBT = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, sys.argv[3])
import vectorbt_backtest as vb
t1 = time.perf_counter()
d = np.load(sys.argv[1])
costs = json.loads(sys.argv[2])
p = vb.prepare(d["open"], d["high"], d["low"], d["close"], d["signals"], d["atr"],
               tp_atr=2.0, sl_atr=1.0, max_holding_bars=24, **costs)
trades = vb.closed_trades(vb.simulate(p))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "run_s": t2 - t1, "trades": len(trades["pnl"])}))
"""


def new_process(repeats: int, cold: bool) -> dict:
    bars, atr_values, signals = make_inputs(VALIDATION_BARS + CONFIG.max_holding_bars + 1, 0.45)
    signals[VALIDATION_BARS:] = 0  # like evaluate(): signals only inside the window
    costs = json.dumps({"spread": COSTS.spread, "commission_rate": COSTS.commission_rate})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "validation.npz")
        np.savez(
            data,
            time=bars.index.tz_convert(None).to_numpy(),
            signals=signals,
            atr=atr_values.to_numpy(),
            **{c: bars[c].to_numpy() for c in ("open", "high", "low", "close")},
        )
        # The in-process runs of main() compiled into this cache already: these start warm.
        warm_env = {"NUMBA_CACHE_DIR": str(NUMBA_CACHE)}
        samples: dict[str, list] = {"ours": [], "vectorbt_warm_cache": []}
        for round_ in range(repeats):
            order = ["ours", "vectorbt_warm_cache"]
            for name in order if round_ % 2 == 0 else reversed(order):
                if name == "ours":
                    wall, out = run_python(CHILD_OURS, str(data), costs)
                else:
                    wall, out = run_python(CHILD_VBT, str(data), costs, str(BENCH), env=warm_env)
                samples[name].append((wall, json.loads(out)))
        if cold:
            with tempfile.TemporaryDirectory() as empty:
                wall, out = run_python(
                    CHILD_VBT, str(data), costs, str(BENCH), env={"NUMBA_CACHE_DIR": empty}
                )
            samples["vectorbt_cold_cache"] = [(wall, json.loads(out))]
    counts = {s[1]["trades"] for runs in samples.values() for s in runs}
    if len(counts) != 1:
        raise AssertionError(f"fresh processes disagree on the trade count: {counts}")
    return {
        name: {
            "wall_s": [s[0] for s in runs],
            "import_s": median([s[1]["import_s"] for s in runs]),
            "run_s": median([s[1]["run_s"] for s in runs]),
        }
        for name, runs in samples.items()
    } | {"trades": counts.pop()}


def main() -> int:
    args = arguments(
        __doc__.splitlines()[0],
        cold="also time a fresh process whose numba cache is empty (compiles everything, ~40 s)",
    )
    os.environ["NUMBA_CACHE_DIR"] = str(NUMBA_CACHE)
    try:
        import vectorbt_backtest as vb
    except ImportError as exc:
        print(f"vectorbt is not installed ({exc}): pip install -r bench/requirements.txt")
        return 2

    header(f"backtest engine vs vectorbt: {N_BARS:,} EURUSD 5T bars")
    repeats = 7 if args.quick else 21
    results: dict = {"warm": {}}
    for label, min_confidence in (("dense", 0.45), ("sparse", 0.75)):
        bars, atr_values, signals = make_inputs(N_BARS, min_confidence)
        prepared = vbt_prepared(bars, atr_values, signals)
        result = ours(bars, atr_values, signals)
        check = compare(result, vb.simulate(prepared))
        lower = vbt_lower_bound_inputs(bars, atr_values, signals)
        times, cpu = interleaved(
            {
                "ours": lambda b=bars, a=atr_values, s=signals: ours(b, a, s),
                "vectorbt": lambda p=prepared: vb.simulate(p),
                "vectorbt_stops_only": lambda lb=lower: vb.simulate_stops_only(**lb),
            },
            repeats=repeats,
            warmup=2,
        )
        density = float((signals != 0).mean())
        ratio = median(times["vectorbt"]) / median(times["ours"])
        cpu_ratio = median(cpu["vectorbt"]) / median(cpu["ours"])
        lower_ratio = median(times["vectorbt_stops_only"]) / median(times["ours"])
        print(
            f"-- {label} signals: {density:.0%} of bars, {check['trades']:,} trades, "
            f"identical in both engines (max |diff|: "
            + ", ".join(f"{k} {v:.1e}" for k, v in check["max_abs_diff"].items())
            + ")"
        )
        print(row("run_backtest", times["ours"], cpu["ours"]))
        print(row("vectorbt (same trades)", times["vectorbt"], cpu["vectorbt"]))
        print(
            row(
                "vectorbt stops only (lower bound)",
                times["vectorbt_stops_only"],
                cpu["vectorbt_stops_only"],
            )
        )
        print(
            f"   => vectorbt / run_backtest = {ratio:.2f}x by wall time, {cpu_ratio:.2f}x by CPU "
            f"time (target >= 3x); {lower_ratio:.2f}x against vectorbt's cheapest configuration"
        )
        results["warm"][label] = {
            "signal_density": density,
            **check,
            "wall_s": times,
            "cpu_s": cpu,
            "speedup": ratio,
            "speedup_cpu": cpu_ratio,
            "speedup_vs_stops_only": lower_ratio,
        }

    fresh = new_process(repeats=1 if args.quick else 3, cold=args.cold)
    print(
        f"-- fresh process: import + one {VALIDATION_BARS:,}-bar validation backtest "
        f"({fresh['trades']} trades, wall time incl. interpreter start)"
    )
    for name in ("ours", "vectorbt_warm_cache", "vectorbt_cold_cache"):
        if name in fresh:
            f = fresh[name]
            print(
                f"   {name:20s} {spread(f['wall_s'])}; import {f['import_s']:.2f} s, "
                f"first backtest {f['run_s']:.2f} s"
            )
    for name in ("vectorbt_warm_cache", "vectorbt_cold_cache"):
        if name in fresh:
            r = median(fresh["ours"]["wall_s"]) / median(fresh[name]["wall_s"])
            fresh[f"ratio_to_{name}"] = r
            print(f"   => ours / {name} = {r:.3f}x (target <= 0.1x)")
    results["new_process"] = fresh
    write_results(args.json, results)
    return 0


def vbt_lower_bound_inputs(bars: pd.DataFrame, atr_values: pd.Series, signals: np.ndarray):
    open_, high, low, close = (bars[c].to_numpy() for c in ("open", "high", "low", "close"))
    a = atr_values.to_numpy()
    n = len(bars)
    decision = np.flatnonzero(signals[: n - 1])
    entry_bar = decision + 1
    long_entries = np.zeros(n, dtype=bool)
    short_entries = np.zeros(n, dtype=bool)
    long_entries[entry_bar[signals[decision] > 0]] = True
    short_entries[entry_bar[signals[decision] < 0]] = True
    sl_stop = np.full(n, np.nan)
    tp_stop = np.full(n, np.nan)
    sl_stop[entry_bar] = CONFIG.sl_atr * a[decision] / open_[entry_bar]
    tp_stop[entry_bar] = CONFIG.tp_atr * a[decision] / open_[entry_bar]
    return {
        "open_": open_,
        "high": high,
        "low": low,
        "close": close,
        "long_entries": long_entries,
        "short_entries": short_entries,
        "sl_stop": sl_stop,
        "tp_stop": tp_stop,
        "spread": COSTS.spread,
        "commission_rate": COSTS.commission_rate,
    }


if __name__ == "__main__":
    sys.exit(main())
