"""The replay report: ``report.md`` (per-arm results with confidence intervals, paired
comparisons, gate rejections, regimes and flips for synthetic bars, the arena), ``equity.png``
(the arms' equity curves), ``summary.json`` (every number) and ``timing.json`` (the cost per
session).

``summarize`` (``replay_summary``) computes every number (a JSON-able dict);
``render_markdown`` (``replay_markdown``) and ``equity_png`` (here) present it; ``write_report``
writes the four files and ``load_replay`` reads a finished replay back. Everything but
``timing.json`` (wall-clock and CPU time) is a function of the replay's inputs, so two replays
with the same seed write identical files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from session_learning.domain.backtest import equity_curve
from session_learning.domain.json_encoding import dumps
from session_learning.replay.arm_run import read_arm
from session_learning.replay.bars import SyntheticBars, session_regimes
from session_learning.replay.config import ReplayConfig
from session_learning.replay.runner import ReplayResult
from session_learning.reports.plots import new_figure, png_bytes
from session_learning.reports.replay_markdown import render_markdown
from session_learning.reports.replay_summary import _ordered, summarize

ARM_COLORS = {
    "static": "#7f7f7f",
    "periodic": "#1f77b4",
    "session_learning": "#2ca02c",
    "ungated": "#d62728",
}
REGIME_COLORS = {"trend": "#fdf1d8", "range": "#e3eefb", "burst": "#eeeeee"}


# --- plots ----------------------------------------------------------------------------------


def _naive(times: pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(times)
    return index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index


def equity_png(result: ReplayResult) -> bytes:
    """Equity curves of every arm (all models, compounding at the configured risk per trade);
    with a single synthetic symbol, trend and range stretches are shaded."""
    config = result.config
    fig = new_figure(10, 5)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    start, end = _naive([config.start, config.end])
    if result.regimes is not None and len(config.symbols) == 1:
        regimes = result.regimes.sort_values("start")
        for regime, color in REGIME_COLORS.items():
            first = True
            for row in regimes.loc[regimes["regime"] == regime].itertuples(index=False):
                s = _naive([row.start])[0]
                ax.axvspan(
                    s,
                    s + config.session_length,
                    color=color,
                    linewidth=0,
                    label=f"{regime} regime" if first else None,
                )
                first = False
    for arm, run in result.arms.items():
        trades = _ordered(run.trades)
        equity = equity_curve(
            trades["r_multiple"].to_numpy(dtype=float), config.learning.risk_per_trade
        )
        times = _naive(trades["exit_time"])
        xs = [start, *times]
        ys = [1.0, *equity]
        ax.step(
            xs,
            ys,
            where="post",
            color=ARM_COLORS[arm],
            label=f"{arm} ({len(trades)} trades, {100 * (ys[-1] - 1):+.1f}%)",
        )
    ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xlim(start, end)
    ax.set_ylabel(f"equity (start 1.0, {100 * config.learning.risk_per_trade:.1f}% risk per trade)")
    ax.set_title(f"Replay {', '.join(m.slug for m in config.models)}: equity by arm", fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return png_bytes(fig)  # the same replay gives the same bytes


# --- timing ----------------------------------------------------------------------------------


def _cost_per_training(sessions: pd.DataFrame) -> float | None:
    """CPU seconds one training adds to a session: sessions with trainings, less the median
    session without any, per training."""
    trained = sessions.loc[sessions["trainings"] > 0]
    if trained.empty:
        return None
    idle = sessions.loc[sessions["trainings"] == 0, "cpu_seconds"]
    baseline = float(idle.median()) if len(idle) else 0.0
    return float((trained["cpu_seconds"] - baseline).sum() / trained["trainings"].sum())


def timing(result: ReplayResult) -> dict:
    """Wall-clock and CPU cost: in total, per arm, and per session by quarter of the range (a
    flat cost per session means nothing grows with the history already replayed)."""
    arms = {}
    for arm, run in result.arms.items():
        sessions = run.sessions
        quarters = np.array_split(np.arange(len(sessions)), 4)
        arms[arm] = {
            "sessions": len(sessions),
            "initial_training_cpu_seconds": run.initial_cpu_seconds,
            "trainings": int(sessions["trainings"].sum()),
            "wall_seconds": float(sessions["wall_seconds"].sum()),
            "cpu_seconds": float(sessions["cpu_seconds"].sum()),
            "cpu_seconds_per_training": _cost_per_training(sessions),
            "by_quarter": [
                {
                    "sessions": len(q),
                    "cpu_seconds_per_session": float(sessions["cpu_seconds"].iloc[q].mean()),
                    "trainings_per_session": float(sessions["trainings"].iloc[q].mean()),
                    "cpu_seconds_per_session_without_training": float(
                        sessions.loc[sessions.index[q], "cpu_seconds"]
                        .where(sessions["trainings"].iloc[q] == 0)
                        .mean()
                    ),
                }
                for q in quarters
                if len(q)
            ],
        }
    return {
        "wall_seconds": result.wall_seconds,
        "workers": result.workers,
        "cpus": os.cpu_count(),
        "sessions": len(result.config.sessions()),
        "models": [m.slug for m in result.config.models],
        "arms": arms,
    }


# --- files -----------------------------------------------------------------------------------


def _json(obj: object) -> str:
    return dumps(obj, indent=2, allow_nan=False) + "\n"


def write_report(result: ReplayResult, out: Path | str) -> dict[str, Path]:
    """Write ``report.md``, ``equity.png``, ``summary.json`` and ``timing.json`` under ``out``
    (each arm's trades, candidates and session costs are in ``out/<arm>/``); returns the
    paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    paths = {
        "report": out / "report.md",
        "equity": out / "equity.png",
        "summary": out / "summary.json",
        "timing": out / "timing.json",
    }
    paths["report"].write_text(render_markdown(summary, paths["equity"].name))
    paths["equity"].write_bytes(equity_png(result))
    paths["summary"].write_text(_json(_clean(summary)))
    paths["timing"].write_text(_json(_clean(timing(result))))
    return paths


def load_replay(out: Path | str) -> ReplayResult:
    """A finished replay read back from its folder, to re-render its report without
    replaying (the regimes come from the synthetic source again, when the bars were synthetic)."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    times = json.loads((out / "timing.json").read_text())
    config = ReplayConfig.from_description(summary["config"])
    bars = summary.get("bars", "")
    synthetic = bars.startswith("synthetic") if bars else config.source == "synthetic"
    source = SyntheticBars(config.seed) if synthetic else None
    return ReplayResult(
        config=config,
        arms={arm: read_arm(out / arm) for arm in config.arms},
        regimes=session_regimes(config, source) if source is not None else None,
        out=out,
        wall_seconds=times["wall_seconds"],
        workers=times["workers"],
        bars=bars,
    )


def _clean(obj: object) -> object:
    """NaN and infinities as None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
