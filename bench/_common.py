"""Helpers shared by the benchmarks: timing, machine description, results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


def arguments(description: str, **flags: str) -> argparse.Namespace:
    """``--quick`` (fewer repeats), ``--json PATH`` (where run_all collects results) and one
    ``--name`` switch per keyword, the value being its help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller runs")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    for name, help_text in flags.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=help_text)
    return parser.parse_args()


def interleaved(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU times (this process, all threads) of each candidate, ``repeats`` times,
    taking turns.

    Taking turns (A B A B ..., the order alternating each round) exposes every candidate to the
    same background load, so their ratio holds up on a busy machine better than either time. CPU
    time does not count the time other processes had the cores, so it moves less with load.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            start, start_cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """``median (min..max, n=N)`` in seconds or milliseconds, whichever reads better."""
    med, lo, hi = statistics.median(values), min(values), max(values)
    if hi < 1:
        return f"{1e3 * med:.1f} ms ({1e3 * lo:.1f}..{1e3 * hi:.1f}, n={len(values)})"
    return f"{med:.2f} s ({lo:.2f}..{hi:.2f}, n={len(values)})"


def row(label: str, wall: list[float], cpu: list[float] | None = None, width: int = 34) -> str:
    """One result line: the wall-time spread, then the median CPU time."""
    text = f"   {label:{width}s} {spread(wall)}"
    if cpu:
        med = statistics.median(cpu)
        text += f"; CPU {1e3 * med:.1f} ms" if med < 1 else f"; CPU {med:.2f} s"
    return text


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "versions": {
            p: _version(p) for p in ("numpy", "pandas", "catboost", "dagster", "vectorbt", "numba")
        },
    }


def header(title: str) -> None:
    m = machine()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    print(f"== {title}")
    print(
        f"   {m['date']}; {m['cores']} cores ({m['cpu']}); Python {m['python']}; "
        f"load average {m['load_average_1m']}"
    )
    print(f"   {versions}")


def write_results(path: Path | None, results: dict) -> None:
    if path is not None:
        path.write_text(json.dumps({"machine": machine(), **results}, indent=1, default=str))


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time of a fresh ``python -c code args`` (interpreter start included) and its stdout."""
    import subprocess

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout
