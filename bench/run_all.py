"""Run every benchmark, one fresh process each, and print the results against their targets.

    python bench/run_all.py            # from the repository root, after ./scripts/bootstrap
    python bench/run_all.py --quick    # fewer repeats (a rough look, not for the table)
    python bench/run_all.py --only backtest training

vectorbt (the backtest benchmark's reference) is not a dependency of the project: when it is
missing, it is installed from bench/requirements.txt into the running interpreter first
(``--no-install`` skips the backtest benchmark instead).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BENCH, REPO, header, median

BENCHMARKS = ("backtest", "session", "training", "replay", "import")


def ensure_vectorbt(install: bool) -> bool:
    if importlib.util.find_spec("vectorbt") is not None:
        return True
    if not install:
        print("vectorbt is not installed: skipping the backtest benchmark")
        return False
    requirements = BENCH / "requirements.txt"
    print(f"installing the benchmark's requirements ({requirements.relative_to(REPO)})")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)], check=True
    )
    return True


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary(results: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    if "backtest" in results:
        b = results["backtest"]
        for label in ("dense", "sparse"):
            w = b["warm"][label]
            rows.append(
                (
                    f"backtest, {w['signal_density']:.0%} signals: vectorbt / ours",
                    f"{w['speedup']:.2f}x (CPU {w['speedup_cpu']:.2f}x)",
                    ">= 3x",
                    verdict(w["speedup"] >= 3),
                )
            )
        n = b["new_process"]
        r = n["ratio_to_vectorbt_warm_cache"]
        rows.append(
            (
                "backtest, new process: ours / vectorbt",
                f"{r:.3f}x ({median(n['ours']['wall_s']):.2f} s vs "
                f"{median(n['vectorbt_warm_cache']['wall_s']):.1f} s)",
                "<= 0.1x",
                verdict(r <= 0.1),
            )
        )
    if "session" in results:
        s = results["session"]
        c, nine = s["dagster_vs_plain"], s["nine_models"]
        rows += [
            (
                f"session, {len(c['models'])} models: Dagster / plain loop",
                f"{c['ratio']:.3f}x (CPU {c['ratio_cpu']:.3f}x)",
                "<= 1.15x",
                verdict(c["ratio"] <= 1.15),
            ),
            (
                "  the same on an in-memory Dagster instance",
                f"{c['ratio_in_memory']:.3f}x (CPU {c['ratio_in_memory_cpu']:.3f}x)",
                "(info)",
                "",
            ),
            (
                "session, 9 models through Dagster",
                f"{nine['session_s']:.1f} s",
                "<= 60 s",
                verdict(nine["session_s"] <= 60),
            ),
            (
                "session, 9 models: peak RSS",
                f"{nine['peak_rss_kib'] / 1024:.0f} MiB",
                "<= 1024 MiB",
                verdict(nine["peak_rss_kib"] <= 1024 * 1024),
            ),
        ]
    if "training" in results:
        t = results["training"]
        rows.append(
            (
                "training: train_model / CatBoostClassifier.fit",
                f"{t['ratio']:.3f}x (CPU {t['ratio_cpu']:.3f}x)",
                "<= 1.10x",
                verdict(t["ratio"] <= 1.10),
            )
        )
    if "replay" in results:
        r = results["replay"]
        for kind, ratio in r["end_over_start_cpu"].items():
            rows.append(
                (
                    f"replay, {r['weeks']} weeks: {kind} session, last / first 4 weeks",
                    f"{ratio:.2f}x by CPU",
                    "(info: ~1x)",
                    "",
                )
            )
    if "import" in results:
        i = results["import"]
        small, large = i["sizes"]
        rows.append(
            (
                f"import-trades: peak RSS, {large['rows']:,} / {small['rows']:,} rows",
                f"{i['peak_ratio']:.2f}x ({small['peak_kib'] / 1024:.0f} -> "
                f"{large['peak_kib'] / 1024:.0f} MiB)",
                "flat (~1x)",
                verdict(i["peak_ratio"] <= 1.2),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--no-install", action="store_true", help="never pip install vectorbt")
    args = parser.parse_args()

    header("session_learning benchmarks")
    chosen = list(args.only or BENCHMARKS)
    if "backtest" in chosen and not ensure_vectorbt(not args.no_install):
        chosen.remove("backtest")
    if "replay" in chosen and importlib.util.find_spec("session_learning.replay") is None:
        print("session_learning.replay is not there: skipping the replay benchmark")
        chosen.remove("replay")
    results, failed = {}, []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            out = Path(tmp, f"{name}.json")
            command = [sys.executable, str(BENCH / f"bench_{name}.py"), "--json", str(out)]
            if args.quick:
                command.append("--quick")
            print(flush=True)
            if subprocess.run(command, cwd=REPO).returncode != 0 or not out.exists():
                failed.append(name)
                continue
            results[name] = json.loads(out.read_text())

    print(f"\n== summary ({time.perf_counter() - started:.0f} s in all)")
    rows = summary(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    for r in rows:
        print("   " + "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    for name in failed:
        print(f"   {name}: FAILED (see its output above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
