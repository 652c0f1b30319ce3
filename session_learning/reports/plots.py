"""Small PNG plots for asset metadata and reports: equity curves, calibration, session win rates,
the arena's evidence curves and the champion's change statistic.

Every function returns PNG bytes of a 640x360 figure drawn with matplotlib's Agg canvas (no
display, no pyplot global state, safe in a run worker's threads). The same input gives the same
bytes: the PNG carries no timestamp or software tag. ``png_markdown`` wraps the bytes in a
Markdown image with a data URI, which the Dagster UI renders in ``MetadataValue.md``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from session_learning.domain.sessions import PARTITION_FORMAT

WIDTH_PX, HEIGHT_PX, DPI = 640, 360, 100
CANDIDATE_COLOR = "#1f77b4"
PRODUCTION_COLOR = "#7f7f7f"
HIT_COLOR = "#2ca02c"
BINS = 10


def new_figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    """A matplotlib figure on its own Agg canvas: no display, no pyplot global state."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The PNG bytes of ``fig`` at its own resolution."""
    buffer = io.BytesIO()
    # No "Software" tag and no timestamp: identical inputs give identical bytes.
    fig.savefig(buffer, format="png", dpi=fig.dpi, metadata={"Software": None})
    return buffer.getvalue()


def _figure() -> tuple[Figure, object]:
    fig = new_figure(WIDTH_PX / DPI, HEIGHT_PX / DPI)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _as_naive_utc(index: pd.Index) -> pd.Index:
    """Datetime indexes as naive UTC (matplotlib's date axis); other indexes unchanged."""
    if isinstance(index, pd.DatetimeIndex) and index.tz is not None:
        return index.tz_convert("UTC").tz_localize(None)
    return index


def _equity_line(ax, equity: pd.Series, label: str, color: str) -> None:
    equity = equity.dropna().astype(float)
    final = equity.iloc[-1]
    ax.step(
        _as_naive_utc(equity.index),
        equity.to_numpy(),
        where="post",
        color=color,
        label=f"{label} ({len(equity)} trades, {100 * (final - 1):+.2f}%)",
    )


def equity_curves_png(
    candidate_equity: pd.Series,
    production_equity: pd.Series | None,
    title: str = "Equity on the validation window",
) -> bytes:
    """Candidate vs production equity on the validation window (starting capital 1.0).

    Each series is the equity after each trade, indexed by exit time (``BacktestResult.equity``).
    ``production_equity`` is None when there is no production model; an empty series means the
    model made no trade on the window.
    """
    fig, ax = _figure()
    ax.set_title(title, fontsize=11)
    curves = [(candidate_equity, "candidate", CANDIDATE_COLOR)]
    if production_equity is not None:
        curves.append((production_equity, "production", PRODUCTION_COLOR))
    drawn = False
    for series, label, color in curves:
        if series is not None and not series.dropna().empty:
            _equity_line(ax, series, label, color)
            drawn = True
    if not drawn:
        _empty(ax, "no trades on the validation window")
        return png_bytes(fig)
    ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
    notes = []
    if candidate_equity is None or candidate_equity.dropna().empty:
        notes.append("candidate: no trades")
    if production_equity is None:
        notes.append("production: none")
    elif production_equity.dropna().empty:
        notes.append("production: no trades")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        loc="upper left",
        fontsize=8,
        title="; ".join(notes) or None,
        title_fontsize=8,
    )
    ax.set_ylabel("equity (start = 1.0)")
    fig.autofmt_xdate()
    return png_bytes(fig)


def reliability_table(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> pd.DataFrame:
    """The numbers behind ``calibration_png``, one row per non-empty bin.

    ``probabilities`` has columns (short, flat, long) like ``predict_proba`` of the classes
    (-1, 0, 1); ``labels`` are those classes. The top direction of a row is the more probable
    of long and short (how signals are chosen); a *hit* is a label equal to it. Rows with equal
    long and short probabilities name no direction and are left out. Bins split [0, 1] into
    ``bins`` equal widths; columns: ``bin_low``, ``bin_high``, ``mean_probability``,
    ``hit_rate``, ``count``.
    """
    proba = np.asarray(probabilities, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels).reshape(-1)
    if len(proba) != len(labels):
        raise ValueError(f"{len(proba)} probability rows but {len(labels)} labels")
    direction = np.sign(proba[:, 2] - proba[:, 0])
    keep = (direction != 0) & np.isfinite(direction)
    p_top = np.maximum(proba[:, 0], proba[:, 2])[keep]
    hit = (labels[keep].astype(np.float64) == direction[keep]).astype(np.float64)
    edges = np.round(np.linspace(0.0, 1.0, bins + 1), 10)  # 0.7, not 0.7000000000000001
    which = np.clip(np.digitize(p_top, edges[1:-1], right=False), 0, bins - 1)
    rows = [
        {
            "bin_low": edges[b],
            "bin_high": edges[b + 1],
            "mean_probability": float(p_top[which == b].mean()),
            "hit_rate": float(hit[which == b].mean()),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
    return pd.DataFrame(
        rows, columns=["bin_low", "bin_high", "mean_probability", "hit_rate", "count"]
    )


def calibration_png(probabilities: np.ndarray, labels: np.ndarray) -> bytes:
    """Reliability diagram: predicted top-direction probability vs realized hit rate, 10 bins.

    Points on the diagonal are calibrated; below it the model is overconfident. Bars show how
    many rows fell in each bin (right axis). See ``reliability_table`` for the definitions.
    """
    table = reliability_table(probabilities, labels)
    fig, ax = _figure()
    ax.set_title("Calibration of the top-direction probability", fontsize=11)
    if table.empty:
        _empty(ax, "no predictions with a direction")
        return png_bytes(fig)
    counts = ax.twinx()
    counts.bar(
        (table["bin_low"] + table["bin_high"]) / 2,
        table["count"],
        width=1.0 / BINS * 0.9,
        color="0.85",
        zorder=0,
    )
    counts.set_ylabel("rows", color="0.5")
    counts.tick_params(axis="y", colors="0.5")
    # Keep the calibration line above the count bars.
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=0.8, label="calibrated")
    ax.plot(
        table["mean_probability"],
        table["hit_rate"],
        marker="o",
        color=HIT_COLOR,
        label=f"model ({int(table['count'].sum())} rows)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of the top direction")
    ax.set_ylabel("realized hit rate")
    ax.legend(loc="upper left", fontsize=8)
    return png_bytes(fig)


def session_win_rate_png(
    frame: pd.DataFrame,
    start_column: str = "session_start",
    threshold: float | None = None,
) -> bytes:
    """Win rate per session (``frame[start_column]`` and ``frame["win_rate"]`` in [0, 1]),
    with an optional gate line at ``threshold``."""
    fig, ax = _figure()
    ax.set_title("Win rate per session", fontsize=11)
    data = frame[[start_column, "win_rate"]].dropna() if not frame.empty else frame
    if data.empty:
        _empty(ax, "no sessions")
        return png_bytes(fig)
    starts = pd.to_datetime(data[start_column], utc=True)
    data = pd.DataFrame(
        {"start": starts.dt.tz_localize(None), "win_rate": data["win_rate"].astype(float)}
    ).sort_values("start", kind="stable")
    ax.plot(data["start"], 100 * data["win_rate"], marker="o", color=CANDIDATE_COLOR)
    if threshold is not None:
        ax.axhline(
            100 * threshold,
            color="#d62728",
            linestyle="--",
            linewidth=0.8,
            label=f"gate {100 * threshold:.0f}%",
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate (%)")
    ax.set_xlabel("session start (UTC)")
    fig.autofmt_xdate()
    return png_bytes(fig)


def evidence_curves_png(frame: pd.DataFrame, title: str = "Forward evidence") -> bytes:
    """Each challenger's e-value against the champion, session by session, on a log scale,
    with its promotion threshold dashed. ``frame`` has ``session``, ``version``, ``e_value``
    and ``threshold`` (one row per challenger and session)."""
    fig, ax = _figure()
    ax.set_title(title, fontsize=11)
    data = frame.dropna(subset=["e_value"]) if not frame.empty else frame
    if data.empty:
        _empty(ax, "no challenger has forward evidence yet")
        return png_bytes(fig)
    ax.set_yscale("log")
    colors = [CANDIDATE_COLOR, "#ff7f0e", HIT_COLOR, "#9467bd", "#8c564b", "#e377c2"]
    for i, (version, rows) in enumerate(data.groupby("version", sort=True)):
        color = colors[i % len(colors)]
        starts = pd.to_datetime(rows["session"], format=PARTITION_FORMAT, utc=True)
        x = starts.dt.tz_localize(None)
        ax.plot(x, rows["e_value"].clip(lower=1e-6), marker=".", color=color, label=version)
        threshold = rows["threshold"].astype(float)
        if np.isfinite(threshold).all():
            ax.plot(x, threshold, color=color, linestyle="--", linewidth=0.8)
    ax.axhline(1.0, color="0.5", linewidth=0.8)
    ax.set_ylabel("e-value vs champion (log)")
    ax.set_xlabel("session start (UTC); dashed: promotion threshold")
    ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    return png_bytes(fig)


def change_statistic_png(frame: pd.DataFrame, title: str = "Champion change detector") -> bytes:
    """The champion's CUSUM statistic after each session (``session``, ``statistic``,
    ``threshold``): it alarms, and the champion is paused, when it reaches the threshold."""
    fig, ax = _figure()
    ax.set_title(title, fontsize=11)
    data = frame.dropna(subset=["statistic"]) if not frame.empty else frame
    if data.empty:
        _empty(ax, "no champion trades watched yet (FLAT trades nothing)")
        return png_bytes(fig)
    x = pd.to_datetime(data["session"], format=PARTITION_FORMAT, utc=True).dt.tz_localize(None)
    ax.step(
        x,
        data["statistic"].astype(float),
        where="post",
        color=CANDIDATE_COLOR,
        label="CUSUM of R below reference",
    )
    ax.step(
        x,
        data["threshold"].astype(float),
        where="post",
        color="#d62728",
        linestyle="--",
        linewidth=0.8,
        label="alarm threshold",
    )
    ax.set_ylabel("statistic (R)")
    ax.set_xlabel("session start (UTC)")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return png_bytes(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """A Markdown image of ``png`` with a base64 data URI (for ``dg.MetadataValue.md``)."""
    safe_alt = alt.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
