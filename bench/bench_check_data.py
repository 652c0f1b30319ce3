"""Benchmark: ``session-learning check-data`` for 9 models on a folder of short history.

Nine files (EURUSD, GBPUSD, XAUUSD x 15T, 30T, 1H; about two months each, on their CME Globex
calendars, CSV) and the whole command in a fresh process, as a user runs it: imports, loading
and validating each file, the verdicts. Target: under 5 seconds. Prints wall and CPU time of
each run and the median, and the command's own time for the checks after its imports.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.resources.market_data import write_bars

MODELS = [ModelKey(s, t) for s in ("EURUSD", "GBPUSD", "XAUUSD") for t in ("15T", "30T", "1H")]
RUNS = 5


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bars"
        for key in MODELS:
            write_bars(
                folder,
                key,
                generate_bars(key.symbol, key.timeframe, "2024-01-01", "2024-03-01"),
                "csv",
            )
        env = {
            **os.environ,
            "SESSION_LEARNING_HOME": str(Path(tmp) / "home"),
            "SESSION_LEARNING_MARKET_DATA": f"files:{folder}",
            "SESSION_LEARNING_MODELS": ",".join(f"{k.symbol}:{k.timeframe}" for k in MODELS),
        }
        command = [
            str(Path(sys.executable).with_name("session-learning")),
            "check-data",
            "--at",
            "2024-03-01T00:00:00Z",
        ]
        walls, cpus = [], []
        for run in range(RUNS):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            last = done.stdout.strip().splitlines()[-1]
            walls.append(wall)
            cpus.append(cpu)
            print(
                f"run {run + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU (exit {done.returncode}; {last})"
            )
        print(
            f"check-data, 9 models: median {statistics.median(walls):.2f} s wall, "
            f"{statistics.median(cpus):.2f} s CPU (target < 5 s); load average {os.getloadavg()[0]:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
