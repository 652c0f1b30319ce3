"""The replay report's numbers: per-arm results with bootstrap intervals, paired comparisons of
the arms, gate rejections, results per synthetic regime and after each flip, and the arena's
counts and flips. ``summarize`` turns a ``ReplayResult`` into one JSON-able dict, a function of
the replay's inputs only; ``replay_markdown`` renders it and ``replay_report`` writes it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from session_learning.domain.backtest import compute_metrics
from session_learning.domain.gates import GATE_NAMES
from session_learning.domain.sessions import PARTITION_FORMAT
from session_learning.domain.stats import paired_bootstrap_expectancy
from session_learning.replay.arena_report import (
    adverse_sessions,
    arena_counts,
    flip_medians,
    per_flip,
)
from session_learning.replay.runner import ReplayResult

CONFIDENCE = 0.95
BOOTSTRAP_BLOCK = pd.Timedelta("1D")
BOOTSTRAP_SAMPLES = 2000
# The smallest difference in expectancy worth resolving, for the "too short" verdict.
RESOLUTION_R = 0.1
COMPARISONS = (
    ("session_learning", "static"),
    ("session_learning", "periodic"),
    ("session_learning", "ungated"),
    ("periodic", "static"),
)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(r: np.ndarray, times: pd.Series, window: tuple, seed: int) -> tuple[float, float]:
    """The expectancy's bootstrap interval (daily blocks), through the paired bootstrap with
    no second model: its difference is the expectancy itself."""
    if len(r) == 0:
        return (0.0, 0.0)
    cmp = _paired(r, times, np.empty(0), pd.DatetimeIndex([], tz="UTC"), window, seed)
    return (cmp.lower, cmp.upper)


def _paired(r_a, times_a, r_b, times_b, window: tuple, seed: int):
    """The report's paired bootstrap of two trade streams' expectancy (daily blocks)."""
    return paired_bootstrap_expectancy(
        r_a,
        times_a,
        r_b,
        times_b,
        window[0],
        window[1],
        BOOTSTRAP_BLOCK,
        n_boot=BOOTSTRAP_SAMPLES,
        confidence=CONFIDENCE,
        seed=seed,
    )


def _paired_trades(a: pd.DataFrame, b: pd.DataFrame, window: tuple, seed: int):
    """``_paired`` on two trade frames (``r_multiple``, ``exit_time``)."""
    return _paired(
        a["r_multiple"].to_numpy(dtype=float),
        pd.DatetimeIndex(a["exit_time"]),
        b["r_multiple"].to_numpy(dtype=float),
        pd.DatetimeIndex(b["exit_time"]),
        window,
        seed,
    )


def _ordered(trades: pd.DataFrame) -> pd.DataFrame:
    return trades.sort_values(["exit_time", "trade_id"], kind="stable")


def _arm_summary(run, risk: float, window: tuple, seed: int) -> dict:
    trades = _ordered(run.trades)
    r = trades["r_multiple"].to_numpy(dtype=float)
    times = pd.DatetimeIndex(trades["exit_time"])
    m = compute_metrics(r, times, risk)
    cands = run.candidates
    judged = cands.loc[cands["error"] == ""] if not cands.empty else cands
    failed = judged.loc[~judged["passed"].astype(bool)] if not judged.empty else judged
    per_gate = {
        gate: int(failed["failed_gates"].str.split(",").apply(lambda g, n=gate: n in g).sum())
        for gate in GATE_NAMES
    }
    only_gate = {
        gate: int((failed["failed_gates"] == gate).sum()) if not failed.empty else 0
        for gate in GATE_NAMES
    }
    low, high = _ci(r, times, window, seed)
    return {
        "trades": m.trades,
        "profit_factor": _finite(m.profit_factor),
        "win_rate": m.win_rate,
        "max_drawdown_pct": m.max_drawdown_pct,
        "expectancy_r": m.expectancy_r,
        "expectancy_ci": [low, high],
        "r_std": float(r.std(ddof=1)) if len(r) > 1 else None,
        "total_return_pct": m.total_return_pct,
        "candidates": int(len(cands)),
        "errors": int((cands["error"] != "").sum()) if not cands.empty else 0,
        "passed": int(judged["passed"].astype(bool).sum()) if not judged.empty else 0,
        "deploys": int(cands["deployed"].astype(bool).sum()) if not cands.empty else 0,
        "rejected": int(len(failed)),
        "failed_gate": per_gate,
        "failed_only_gate": only_gate,
        "open_at_end": run.open_at_end,
        "quarantined": run.quarantined,
        "registry_deployments": run.promotions,
        "unjudged_deployments": run.unjudged_promotions,
    }


def _comparison(a, b, window: tuple, seed: int) -> dict:
    ta, tb = _ordered(a.trades), _ordered(b.trades)
    cmp = _paired_trades(ta, tb, window, seed)
    same = ["trade_id", "exit_time", "r_multiple"]
    if len(ta) == 0 or len(tb) == 0:
        verdict = "cannot compare: an arm made no trades"
    elif ta[same].reset_index(drop=True).equals(tb[same].reset_index(drop=True)):
        verdict = "identical trades"
    elif cmp.lower > 0:
        verdict = f"{a.arm} higher"
    elif cmp.upper < 0:
        verdict = f"{b.arm} higher"
    else:
        verdict = "no measurable difference"
    return {
        "a": a.arm,
        "b": b.arm,
        "difference_r": cmp.difference,
        "ci": [cmp.lower, cmp.upper],
        "verdict": verdict,
    }


def _per_model(result: ReplayResult) -> list[dict]:
    rows = []
    risk = result.config.learning.risk_per_trade
    for arm, run in result.arms.items():
        for key in result.config.models:
            trades = _ordered(run.trades.loc[run.trades["symbol"].eq(key.symbol)])
            trades = trades.loc[trades["timeframe"] == key.timeframe]
            m = compute_metrics(
                trades["r_multiple"].to_numpy(dtype=float),
                pd.DatetimeIndex(trades["exit_time"]),
                risk,
            )
            cands = run.candidates.loc[run.candidates["model"] == key.slug]
            rows.append(
                {
                    "arm": arm,
                    "model": key.slug,
                    "trades": m.trades,
                    "profit_factor": _finite(m.profit_factor),
                    "win_rate": m.win_rate,
                    "expectancy_r": m.expectancy_r,
                    "deploys": int(cands["deployed"].astype(bool).sum()),
                }
            )
    return rows


def _trade_regimes(result: ReplayResult) -> dict[str, pd.DataFrame]:
    """Each arm's trades with the regime of the session they were entered in."""
    regimes = result.regimes
    length = result.config.session_length
    out = {}
    for arm, run in result.arms.items():
        trades = run.trades.copy()
        trades["entry_session"] = pd.Series(
            [
                pd.Timestamp(t).floor(length).strftime(PARTITION_FORMAT)
                for t in trades["entry_time"]
            ],
            index=trades.index,
            dtype=object,
        )
        out[arm] = trades.merge(
            regimes[["session", "symbol", "regime"]].rename(columns={"session": "entry_session"}),
            on=["entry_session", "symbol"],
            how="left",
        )
    return out


def _by_regime(result: ReplayResult, tagged: dict[str, pd.DataFrame]) -> list[dict]:
    rows = []
    for arm, trades in tagged.items():
        for regime in ("trend", "range", "burst"):
            r = trades.loc[trades["regime"] == regime, "r_multiple"].to_numpy(dtype=float)
            rows.append(
                {
                    "arm": arm,
                    "regime": regime,
                    "trades": len(r),
                    "expectancy_r": float(r.mean()) if len(r) else None,
                }
            )
    return rows


def flip_blocks(regimes: pd.DataFrame) -> pd.DataFrame:
    """Stretches between flips of the synthetic structure, per symbol.

    A *flip* is a session whose regime is trend or range while the last trend-or-range regime
    before it was the other one (bursts in between do not count: they have no direction to
    learn). Each block runs from its flip to the next, with the structure it flipped to;
    ``session_number`` counts sessions with bars since the flip.
    """
    rows = []
    for symbol, frame in regimes.sort_values("start").groupby("symbol", sort=True):
        structure, flip, number = None, None, 0
        for row in frame.itertuples(index=False):
            if row.regime in ("trend", "range") and row.regime != structure:
                if structure is not None:
                    flip = row.start
                    number = 0
                structure = row.regime
            rows.append(
                {
                    "session": row.session,
                    "symbol": symbol,
                    "regime": row.regime,
                    "structure": structure,
                    "flip": flip,
                    "session_number": number,
                }
            )
            number += 1
    return pd.DataFrame(
        rows, columns=["session", "symbol", "regime", "structure", "flip", "session_number"]
    )


def adaptation_sessions(config) -> int:
    """Sessions (with bars) after a flip before any candidate can have trained on the new
    structure: the validation window and the purge and embargo around it lie between the
    training rows and the session, so the newest trainable row is that many bars old."""
    learning = config.learning
    return max(
        -(
            -(learning.validation_for(m.timeframe) + 2 * learning.max_holding_bars)
            * m.bar
            // config.session_length
        )
        for m in config.models
    )


def _flips(result: ReplayResult, tagged: dict[str, pd.DataFrame], seed: int) -> dict:
    """Expectancy per arm after each flip: within the adaptation lag, and after it."""
    lag = adaptation_sessions(result.config)
    blocks = flip_blocks(result.regimes)
    blocks = blocks.loc[blocks["flip"].notna()]
    per_flip, phases = [], []
    joined = {
        arm: trades.merge(
            blocks.rename(columns={"session": "entry_session"})[
                ["entry_session", "symbol", "structure", "flip", "session_number"]
            ],
            on=["entry_session", "symbol"],
            how="inner",
        )
        for arm, trades in tagged.items()
    }
    for (symbol, flip), block in blocks.groupby(["symbol", "flip"], sort=True):
        row = {
            "symbol": symbol,
            "flip": pd.Timestamp(flip).strftime(PARTITION_FORMAT),
            "to": block["structure"].iloc[0],
            "sessions": len(block),
        }
        for arm, trades in joined.items():
            mine = trades.loc[(trades["symbol"] == symbol) & (trades["flip"] == flip)]
            later = mine.loc[mine["session_number"] >= lag, "r_multiple"]
            row[f"{arm}_trades"] = len(mine)
            row[f"{arm}_expectancy_r"] = float(mine["r_multiple"].mean()) if len(mine) else None
            row[f"{arm}_later_expectancy_r"] = float(later.mean()) if len(later) else None
        per_flip.append(row)
    for arm, trades in joined.items():
        for structure in ("trend", "range"):
            for phase, mask in (
                ("within the lag", trades["session_number"] < lag),
                ("after the lag", trades["session_number"] >= lag),
            ):
                chosen = trades.loc[mask & (trades["structure"] == structure)]
                r = chosen["r_multiple"].to_numpy(dtype=float)
                window = (result.config.start, result.config.end)
                low, high = _ci(r, pd.DatetimeIndex(chosen["exit_time"]), window, seed)
                phases.append(
                    {
                        "arm": arm,
                        "structure": structure,
                        "phase": phase,
                        "trades": len(r),
                        "expectancy_r": float(r.mean()) if len(r) else None,
                        "ci": [low, high],
                    }
                )
    return {
        "per_flip": per_flip,
        "phases": phases,
        "flips": len(per_flip),
        "adaptation_sessions": lag,
    }


def bars_source(result: ReplayResult) -> str:
    """What the replayed bars were, as the replay recorded them. A result without that record
    (read back from an older replay) is named by its configuration only when that is certain:
    the command line replayed synthetic bars and nothing else."""
    if result.bars:
        return result.bars
    if result.config.source == "synthetic" and result.regimes is not None:
        return f"synthetic bars (seed {result.config.seed})"
    return f"bars from an unrecorded source (configured: {result.config.source})"


def summarize(result: ReplayResult) -> dict:
    """Every number of the report, JSON-able: configuration, arms, comparisons, verdicts."""
    config = result.config
    window = (config.start, config.end)
    seed = config.seed
    risk = config.learning.risk_per_trade
    arms = {arm: _arm_summary(run, risk, window, seed) for arm, run in result.arms.items()}
    comparisons = [
        _comparison(result.arms[a], result.arms[b], window, seed)
        for a, b in COMPARISONS
        if a in result.arms and b in result.arms
    ]
    all_r = np.concatenate(
        [run.trades["r_multiple"].to_numpy(dtype=float) for run in result.arms.values()]
    )
    spread = float(all_r.std(ddof=1)) if len(all_r) > 1 else None
    needed = (
        int(math.ceil(2 * (1.959964 * spread / RESOLUTION_R) ** 2)) if spread else None
    )  # per arm, for a 95% interval of a difference of +-RESOLUTION_R
    fewest = min((s["trades"] for s in arms.values()), default=0)
    summary = {
        "config": config.describe(),
        "bars": bars_source(result),
        "arms": arms,
        "comparisons": comparisons,
        "per_model": _per_model(result),
        "resolution": {
            "r_std": spread,
            "difference_r": RESOLUTION_R,
            "trades_needed_per_arm": needed,
            "fewest_trades": fewest,
            "too_short": needed is None or fewest < needed,
        },
    }
    tagged = None
    if result.regimes is not None:
        tagged = _trade_regimes(result)
        summary["by_regime"] = _by_regime(result, tagged)
        summary["flips"] = _flips(result, tagged, seed)
    arena = _arena(result, tagged, seed)
    if arena is not None:
        summary["arena"] = arena
    return summary


def _arena(result: ReplayResult, tagged: dict[str, pd.DataFrame] | None, seed: int) -> dict | None:
    """The arena arm's numbers: counts per model-year; per flip, sessions until the champion
    stopped trading and until another version was promoted; expectancy after adverse flips."""
    run = result.arms.get("session_learning")
    if run is None or run.arena is None:
        return None
    config = result.config
    out = {"counts": arena_counts(run.arena, config.false_alarms_per_100_sessions)}
    if result.regimes is None or tagged is None:
        return out
    blocks = flip_blocks(result.regimes)
    symbol_of = {m.slug: m.symbol for m in config.models}
    flips = per_flip(run.arena, blocks, symbol_of)
    out["per_flip"] = flips
    out["medians"] = flip_medians(flips)
    chosen = adverse_sessions(flips, blocks, symbol_of)
    window = (config.start, config.end)
    after: dict[str, dict] = {}
    picked: dict[str, pd.DataFrame] = {}
    for arm, trades in tagged.items():
        mine = trades.merge(chosen, on=["symbol", "entry_session"], how="inner")
        picked[arm] = _ordered(mine)
        r = picked[arm]["r_multiple"].to_numpy(dtype=float)
        low, high = _ci(r, pd.DatetimeIndex(picked[arm]["exit_time"]), window, seed)
        after[arm] = {
            "trades": len(r),
            "total_r": float(r.sum()),
            "expectancy_r": float(r.mean()) if len(r) else None,
            "ci": [low, high],
        }
    out["after_adverse_flips"] = after
    versus = []
    for other in ("static", "periodic"):
        if other not in picked or not len(picked[other]) or not len(picked["session_learning"]):
            continue
        a, b = picked["session_learning"], picked[other]
        cmp = _paired_trades(a, b, window, seed)
        versus.append({"b": other, "difference_r": cmp.difference, "ci": [cmp.lower, cmp.upper]})
    out["after_adverse_versus"] = versus
    return out
