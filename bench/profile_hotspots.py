"""Where the time goes: cProfile of the code each benchmark measures.

    python bench/profile_hotspots.py backtest   # run_backtest on the dense 100k-bar signals
    python bench/profile_hotspots.py session    # the Dagster session of bench_session
    python bench/profile_hotspots.py session-memory   # the same on an in-memory instance
    python bench/profile_hotspots.py plain      # bench_session's plain loop
    python bench/profile_hotspots.py training   # train_model on bench_training's data

Prints the functions with the most time of their own, and that time summed by package.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

TOP = 18


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own time per top-level package (``session_learning``, ``dagster``, ``pandas``, ...)."""
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        parts = Path(filename).parts
        if "site-packages" in parts:
            package = parts[parts.index("site-packages") + 1]
        elif "session_learning" in parts:
            package = "session_learning"
        elif filename.startswith("~") or filename == "<built-in>":
            package = "builtins (numpy, C extensions, I/O)"
        else:
            package = "python stdlib / other"
        totals[package] += tottime
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def report(profile: cProfile.Profile, title: str) -> None:
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())
    print(f"== {title}: {total:.2f} s of own time in all")
    for package, seconds in list(by_package(stats).items())[:10]:
        print(f"   {seconds:8.3f} s {100 * seconds / total:5.1f}%  {package}")
    print()
    stats.sort_stats("tottime").print_stats(TOP)


def backtest() -> None:
    import bench_backtest as b

    bars, atr_values, signals = b.make_inputs(b.N_BARS, 0.45)
    b.ours(bars, atr_values, signals)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        b.ours(bars, atr_values, signals)
    profile.disable()
    report(profile, "run_backtest x 20, 100k bars, dense signals")


def session(storage: str = "sqlite") -> None:
    import bench_session as b

    with tempfile.TemporaryDirectory() as root:
        b.through_dagster(b.new_home(Path(root), b.COMPARED_MODELS[:1]), storage=storage)
        settings = b.new_home(Path(root), b.COMPARED_MODELS)
        profile = cProfile.Profile()
        profile.enable()
        b.through_dagster(settings, storage=storage)
        profile.disable()
    report(profile, f"Dagster session, {len(b.COMPARED_MODELS)} models, {storage} instance")
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(
        "store_event|handle_output|load_input|_train|markdown_table|build_training_set|"
        "run_backtest|save_candidate|promote|write_session_exports|execute_step|evaluate_gates"
    )


def plain() -> None:
    import bench_session as b

    with tempfile.TemporaryDirectory() as root:
        b.plain_loop(b.new_home(Path(root), b.COMPARED_MODELS[:1]))  # warm up
        settings = b.new_home(Path(root), b.COMPARED_MODELS)
        profile = cProfile.Profile()
        profile.enable()
        b.plain_loop(settings)
        profile.disable()
    report(profile, f"plain loop, {len(b.COMPARED_MODELS)} models")


def training() -> None:
    import bench_training as b

    from session_learning.domain.fitting import train_model

    frame, features, params = b.training_set()
    profile = cProfile.Profile()
    profile.enable()
    train_model(frame, features, params)
    profile.disable()
    report(profile, "train_model")


if __name__ == "__main__":
    targets = {
        "backtest": backtest,
        "session": session,
        "session-memory": lambda: session("memory"),
        "plain": plain,
        "training": training,
    }
    if len(sys.argv) != 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: python bench/profile_hotspots.py {'|'.join(targets)}")
    targets[sys.argv[1]]()
