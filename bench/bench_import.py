"""Does importing a trade journal take memory that grows with the file?

    python bench/bench_import.py            # 200,000 and 1,000,000 rows
    python bench/bench_import.py --quick    # 20,000 and 100,000 rows

Writes a CSV of N closed trades (a few with text where a number belongs, as real exports have),
then imports it with ``session-learning import-trades``'s code (``TradeJournal.import_csv``)
into a fresh SQLite journal, each size in a fresh process, and prints the peak RSS of that
process, its RSS before the import (interpreter + libraries), the file size and the time.
The import streams the file in chunks, so peak RSS should be flat with size: the ratio of the
larger file's peak to the smaller's is the number to watch (target ~1x).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

from _common import REPO, arguments, header, run_python, write_results

CHILD = """
import json, resource, sys, time
from session_learning.resources.journal import TradeJournal
journal = TradeJournal(f"sqlite:///{sys.argv[2]}")
journal.create_schema()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
report = journal.import_csv(sys.argv[1])
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": elapsed,
                  **report.counts()}))
"""


def write_journal_csv(path: Path, rows: int) -> None:
    """``rows`` trades, streamed to disk (EURUSD 30T, valid, every 997th pnl written '0,0038')."""
    columns = [
        "trade_id", "symbol", "timeframe", "direction", "entry_time", "entry_price", "exit_time",
        "exit_price", "stop_loss", "take_profit", "exit_reason", "pnl", "confidence",
        "model_version",
    ]  # fmt: skip
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(columns)
        for i in range(rows):
            minutes = i * 7
            day, minute = divmod(minutes, 24 * 60)
            entry = f"2025-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z"
            win = i % 3 != 0
            price = 1.1 + (i % 100) * 1e-4
            exit_price = price + (0.002 if win else -0.001)
            out.writerow(
                [
                    f"T{i:08d}", "EURUSD", "30T", "long", entry, f"{price:.5f}", entry,
                    f"{exit_price:.5f}", f"{price - 0.001:.5f}", f"{price + 0.002:.5f}",
                    "take_profit" if win else "stop_loss",
                    "0,0038" if i % 997 == 0 else f"{exit_price - price:.5f}",
                    "0.55", "v-bench",
                ]
            )  # fmt: skip


def measure(rows: int, folder: Path) -> dict:
    csv_path, journal = folder / f"trades_{rows}.csv", folder / f"journal_{rows}.sqlite"
    write_journal_csv(csv_path, rows)
    wall, stdout = run_python(CHILD, str(csv_path), str(journal))
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["read"] == result["written"] == rows, result
    result.update(rows=rows, file_mib=csv_path.stat().st_size / 2**20, process_s=wall)
    csv_path.unlink()
    journal.unlink()
    return result


def main() -> int:
    args = arguments(__doc__.splitlines()[0])
    sizes = (20_000, 100_000) if args.quick else (200_000, 1_000_000)
    header("import-trades: peak memory against file size")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            r = measure(rows, Path(tmp))
            results.append(r)
            print(
                f"   {rows:>9,} rows ({r['file_mib']:.0f} MiB CSV): peak RSS "
                f"{r['peak_kib'] / 1024:.0f} MiB (before the import {r['before_kib'] / 1024:.0f} "
                f"MiB, +{(r['peak_kib'] - r['before_kib']) / 1024:.0f} MiB), "
                f"{r['seconds']:.1f} s ({rows / r['seconds']:,.0f} rows/s)",
                flush=True,
            )
    small, large = results
    ratio = large["peak_kib"] / small["peak_kib"]
    growth = (large["peak_kib"] - large["before_kib"]) / max(
        1, small["peak_kib"] - small["before_kib"]
    )
    print(
        f"   peak RSS, {large['rows']:,} / {small['rows']:,} rows: {ratio:.2f}x "
        f"(growth over the interpreter: {growth:.2f}x) for a {large['rows'] / small['rows']:.0f}x "
        "larger file (target: flat, ~1x)"
    )
    write_results(args.json, {"sizes": results, "peak_ratio": ratio, "growth_ratio": growth})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
