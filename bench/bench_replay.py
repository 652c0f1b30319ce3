"""Benchmark 4: replay cost per session at the start and at the end of a one-year range.

``session_learning.replay.run_replay`` walks a range session by session: the live model trades
the session's bars into a SQLite journal, and the learning cycle reads them back, trains,
judges and deploys through the registry. It records every session's wall and CPU time. The
journal, the registry's history and the replay's own records grow as the walk advances; if a
session's cost grew with them, a year would cost more than 52 times a week.

One model (EURUSD 30T), the ``periodic`` arm retraining every 12 sessions with bars (every other
trading day, so the start and the end of the range train equally often), small windows and 25
CatBoost iterations so that a year fits in a few minutes. Compares the sessions of the first
four weeks with those of the last four weeks, trading-only and training sessions apart.

Then the ``session_learning`` arm, the arena, on the same range: every session with bars it
marks every member's shadow book, folds the evidence, and trains one new challenger (two after
a pause). Its evidence, shadow records and registry grow with the range; the same start / end
comparison says whether a session costs more at the end, and the median CPU per session what
the arena costs against a training.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import pandas as pd
from _common import arguments, header, write_results

from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import LearningConfig
from session_learning.replay import ReplayConfig, SyntheticBars, run_replay

ARM = "periodic"
ARENA = "session_learning"
START = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
WINDOW = pd.Timedelta(weeks=4)


def config(weeks: int, arm: str = ARM) -> ReplayConfig:
    return ReplayConfig(
        models=(ModelKey("EURUSD", "30T"),),
        start=START,
        end=START + pd.Timedelta(weeks=weeks),
        arms=(arm,),
        workers=1,  # one process: the timings are not shared with another arm
        periodic_every=12,
        learning=LearningConfig(
            training_bars=800, validation_bars={"30T": 500}, iterations=25, learning_rate=0.3
        ),
        gates=GateThresholds(min_trades={"30T": 15}),
    )


def window_stats(sessions: pd.DataFrame) -> dict:
    """Median wall / CPU milliseconds of trading-only and of training sessions."""
    traded = sessions["triggered"].notna() & (sessions["trainings"] == 0)
    trained = sessions["trainings"] > 0
    out = {}
    for name, mask in (("trading", traded), ("training", trained)):
        part = sessions.loc[mask]
        out[name] = {
            "sessions": int(mask.sum()),
            "wall_ms": 1e3 * float(part["wall_seconds"].median()) if len(part) else None,
            "cpu_ms": 1e3 * float(part["cpu_seconds"].median()) if len(part) else None,
        }
    return out


def main() -> int:
    args = arguments(__doc__.splitlines()[0])
    weeks = 13 if args.quick else 52
    cfg = config(weeks)
    header(f"replay: {weeks} weeks of EURUSD 30T, '{ARM}' arm, start vs end of the range")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_replay(cfg, SyntheticBars(cfg.seed), out, progress=False)
    wall = time.perf_counter() - began
    sessions = result.arms[ARM].sessions
    times = pd.to_datetime(sessions["session"], format="%Y-%m-%d-%H:%M", utc=True)
    first = window_stats(sessions.loc[times < cfg.start + WINDOW])
    last = window_stats(sessions.loc[times >= cfg.end - WINDOW])
    print(
        f"-- {len(sessions):,} sessions, {int(sessions['trainings'].sum())} trainings, "
        f"{int(sessions['trades'].sum()):,} trades; replay {wall:.0f} s "
        f"(sessions: wall {sessions['wall_seconds'].sum():.0f} s, "
        f"CPU {sessions['cpu_seconds'].sum():.0f} s)"
    )
    ratios = {}
    for kind in ("trading", "training"):
        a, b = first[kind], last[kind]
        if a["cpu_ms"] is None or b["cpu_ms"] is None:
            print(f"   {kind}: too few sessions in one of the windows")
            continue
        ratios[kind] = b["cpu_ms"] / a["cpu_ms"]
        print(
            f"   {kind:8s} first 4 weeks: {a['cpu_ms']:6.1f} ms CPU, {a['wall_ms']:6.1f} ms wall "
            f"(n={a['sessions']}); last 4 weeks: {b['cpu_ms']:6.1f} ms CPU, "
            f"{b['wall_ms']:6.1f} ms wall (n={b['sessions']}) => end / start "
            f"{ratios[kind]:.2f}x by CPU, {b['wall_ms'] / a['wall_ms']:.2f}x by wall"
        )
    # The trend over the whole range, by quarter of the sessions with bars.
    active = sessions.loc[sessions["triggered"].notna()]
    quarters = [1e3 * float(np.median(q)) for q in np.array_split(active["cpu_seconds"], 4)]
    print("   median CPU per session by quarter: " + ", ".join(f"{q:.1f} ms" for q in quarters))
    arena = arena_cost(weeks)
    write_results(
        args.json,
        {
            "weeks": weeks,
            "sessions": len(sessions),
            "trainings": int(sessions["trainings"].sum()),
            "replay_wall_s": wall,
            "first_weeks": first,
            "last_weeks": last,
            "end_over_start_cpu": ratios,
            "quarter_median_cpu_ms": quarters,
            "arena": arena,
        },
    )
    return 0


def arena_cost(weeks: int) -> dict:
    """The arena arm over the same range: CPU per session at the start and at the end."""
    cfg = config(weeks, ARENA)
    header(f"replay: the arena ('{ARENA}' arm) over the same {weeks} weeks")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_replay(cfg, SyntheticBars(cfg.seed), out, progress=False)
    wall = time.perf_counter() - began
    sessions = result.arms[ARENA].sessions
    active = sessions.loc[sessions["trainings"] > 0]
    times = pd.to_datetime(active["session"], format="%Y-%m-%d-%H:%M", utc=True)
    first = 1e3 * float(active.loc[times < cfg.start + WINDOW, "cpu_seconds"].median())
    last = 1e3 * float(active.loc[times >= cfg.end - WINDOW, "cpu_seconds"].median())
    print(
        f"-- {len(sessions):,} sessions, {int(sessions['trainings'].sum())} trainings; replay "
        f"{wall:.0f} s (sessions: CPU {sessions['cpu_seconds'].sum():.0f} s)"
    )
    print(
        f"   median CPU of a session with bars: first 4 weeks {first:.0f} ms, last 4 weeks "
        f"{last:.0f} ms => end / start {last / first:.2f}x"
    )
    return {
        "replay_wall_s": wall,
        "sessions": len(sessions),
        "trainings": int(sessions["trainings"].sum()),
        "cpu_s": float(sessions["cpu_seconds"].sum()),
        "first_weeks_cpu_ms": first,
        "last_weeks_cpu_ms": last,
        "end_over_start_cpu": last / first,
    }


if __name__ == "__main__":
    sys.exit(main())
