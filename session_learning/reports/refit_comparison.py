"""Replays of one scenario that differ only in how a struggling model's TP/SL is refitted
(``replay --barrier-refit``), compared: per arm and variant, the traded results with 95%
block-bootstrap intervals, paired differences between variants, and what the candidates
trained under a refit did on their validation windows.

    python -m session_learning.reports.refit_comparison --out docs/replay/flips_refit \\
        off=var/replay_refit/off judged=var/replay_refit/judged fitted=var/replay_refit/fitted

Each ``name=folder`` is the ``--out`` of one replay (same scenario, seed and arms).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from session_learning.domain.backtest import compute_metrics
from session_learning.domain.json_encoding import dumps
from session_learning.domain.stats import paired_bootstrap_expectancy
from session_learning.replay import ArmRun, ReplayConfig, read_arm

CONFIDENCE = 0.95
BLOCK = pd.Timedelta("1D")
SAMPLES = 2000
REFIT_MARK = "TP/SL re-fitted"  # the plan's reason of a struggling model


def _config(folder: Path, arm: str) -> ReplayConfig:
    done = json.loads((folder / arm / "arm.json").read_text())
    return ReplayConfig.from_description(done["config"])


def _bootstrap(a: ArmRun, b: ArmRun | None, config: ReplayConfig) -> tuple[float, float, float]:
    def r_and_times(run: ArmRun | None):
        if run is None:
            return np.empty(0), pd.DatetimeIndex([], tz="UTC")
        trades = run.trades.sort_values(["exit_time", "trade_id"], kind="stable")
        return trades["r_multiple"].to_numpy(float), pd.DatetimeIndex(trades["exit_time"])

    cmp = paired_bootstrap_expectancy(
        *r_and_times(a),
        *r_and_times(b),
        config.start,
        config.end,
        BLOCK,
        n_boot=SAMPLES,
        confidence=CONFIDENCE,
        seed=config.seed,
    )
    return cmp.difference, cmp.lower, cmp.upper


def _total_difference(a: ArmRun, b: ArmRun, config: ReplayConfig) -> tuple[float, float, float]:
    """Total R of ``a`` minus ``b`` over the range, with a day-block bootstrap interval (the
    same days drawn for both): trade counts differ between geometries, so R per trade alone
    does not say which earned more."""
    days = pd.date_range(config.start.floor("D"), config.end.ceil("D"), freq="D")

    def daily(run: ArmRun) -> np.ndarray:
        t = run.trades
        by_day = t.groupby(pd.DatetimeIndex(t["exit_time"]).floor("D"))["r_multiple"].sum()
        return by_day.reindex(days, fill_value=0.0).to_numpy(float)

    diff = daily(a) - daily(b)
    rng = np.random.default_rng(config.seed)
    draws = rng.integers(0, len(diff), size=(SAMPLES, len(diff)))
    totals = diff[draws].sum(axis=1)
    tail = (1 - CONFIDENCE) / 2
    return float(diff.sum()), float(np.quantile(totals, tail)), float(np.quantile(totals, 1 - tail))


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _candidates(run: ArmRun) -> dict:
    """What the candidates of struggling sessions (the refit ones) did on validation."""
    cands = run.candidates
    refit = cands.loc[cands["reasons"].str.contains(REFIT_MARK, regex=False, na=False)]
    judged = refit.loc[refit["error"] == ""]
    out = {
        "refit_candidates": int(len(refit)),
        "errors": int(len(refit) - len(judged)),
        "passed": int(judged["passed"].astype(bool).sum()),
        "deployed": int(judged["deployed"].astype(bool).sum()),
        "all_candidates_passed": int(cands.loc[cands["error"] == "", "passed"].astype(bool).sum()),
        "all_candidates": int(len(cands)),
    }
    for column in ("validation_trades", "win_rate", "profit_factor", "expectancy_r"):
        values = pd.to_numeric(judged[column], errors="coerce").replace([np.inf], np.nan)
        out[f"median_{column}"] = _num(values.median()) if len(values.dropna()) else None
    failed = judged.loc[~judged["passed"].astype(bool), "failed_gates"].str.split(",")
    counts: dict[str, int] = {}
    for gates in failed:
        for gate in gates:
            if gate:
                counts[gate] = counts.get(gate, 0) + 1
    out["failed_gate"] = dict(sorted(counts.items()))
    return out


def compare(folders: dict[str, Path]) -> dict:
    """Every number of the comparison (JSON-able)."""
    names = list(folders)
    first = folders[names[0]]
    arms = sorted(p.name for p in first.iterdir() if (p / "arm.json").exists())
    runs = {n: {a: read_arm(folders[n] / a) for a in arms} for n in names}
    configs = {n: _config(folders[n], arms[0]) for n in names}
    config = configs[names[0]]
    summary: dict = {
        "variants": {n: configs[n].learning.barrier_refit for n in names},
        "scenario": config.scenario,
        "models": [m.slug for m in config.models],
        "range": [config.start.isoformat(), config.end.isoformat()],
        "sessions": len(config.sessions()),
        "seed": config.seed,
        "arms": {},
    }
    for arm in arms:
        per = {}
        for n in names:
            run = runs[n][arm]
            trades = run.trades.sort_values(["exit_time", "trade_id"], kind="stable")
            r = trades["r_multiple"].to_numpy(float)
            m = compute_metrics(r, pd.DatetimeIndex(trades["exit_time"]), 0.005)
            expectancy, low, high = _bootstrap(run, None, configs[n])
            per[n] = {
                "trades": m.trades,
                "profit_factor": _num(m.profit_factor),
                "win_rate": _num(m.win_rate),
                "max_drawdown_pct": _num(m.max_drawdown_pct),
                "expectancy_r": _num(m.expectancy_r),
                "expectancy_ci": [low, high],
                "total_r": float(r.sum()),
                "deploys": int(run.candidates["deployed"].astype(bool).sum()),
                **_candidates(run),
            }
        pairs = []
        for a, b in itertools.combinations(names, 2):
            difference, low, high = _bootstrap(runs[a][arm], runs[b][arm], config)
            same = ["trade_id", "exit_time", "r_multiple"]
            ta, tb = (
                runs[x][arm].trades.sort_values(same[:2], kind="stable")[same] for x in (a, b)
            )
            if ta.reset_index(drop=True).equals(tb.reset_index(drop=True)):
                verdict = "identical trades"
            elif low > 0:
                verdict = f"{a} higher"
            elif high < 0:
                verdict = f"{b} higher"
            else:
                verdict = "no measurable difference"
            total, total_low, total_high = _total_difference(runs[a][arm], runs[b][arm], config)
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "difference_r": difference,
                    "ci": [low, high],
                    "verdict": verdict,
                    "total_difference_r": total,
                    "total_ci": [total_low, total_high],
                }
            )
        summary["arms"][arm] = {"variants": per, "comparisons": pairs}
    return summary


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def render(summary: dict) -> str:
    """The comparison as Markdown."""
    lines = [
        f"# Barrier refit on the `{summary['scenario']}` replay: "
        + " vs ".join(f"`{n}`" for n in summary["variants"]),
        "",
        f"{', '.join(summary['models'])}, {summary['sessions']} sessions "
        f"{summary['range'][0]} .. {summary['range'][1]}, synthetic bars (seed {summary['seed']}). "
        "Variants differ only in `--barrier-refit` (how a struggling model's TP/SL is refitted): "
        + ", ".join(f"`{n}` = {mode}" for n, mode in summary["variants"].items())
        + ". Expectancy in R per trade with "
        f"{100 * CONFIDENCE:.0f}% block-bootstrap intervals (1-day blocks); differences are "
        "paired on the same days.",
        "",
    ]
    for arm, data in summary["arms"].items():
        lines += [f"## Arm `{arm}`", ""]
        lines += [
            "| variant | trades | PF | WR | max DD | expectancy R [95% CI] | total R | deploys | "
            "refit candidates | passed | median val. trades | median val. WR |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n, v in data["variants"].items():
            lines.append(
                f"| `{n}` | {v['trades']} | {_f(v['profit_factor'])} | "
                f"{_f(v['win_rate'], '{:.1%}')} | {_f(v['max_drawdown_pct'], '{:.2f}%')} | "
                f"{_r(v['expectancy_r'])} [{_r(v['expectancy_ci'][0])}, "
                f"{_r(v['expectancy_ci'][1])}] | {v['total_r']:+.1f} | {v['deploys']} | "
                f"{v['refit_candidates']} | "
                f"{v['passed']} | {_f(v['median_validation_trades'], '{:.0f}')} | "
                f"{_f(v['median_win_rate'], '{:.1%}')} |"
            )
        lines += [
            "",
            "| comparison | difference in R per trade [95% CI] | verdict | difference in total R "
            "[95% CI] |",
            "|---|---|---|---|",
        ]
        for c in data["comparisons"]:
            lines.append(
                f"| `{c['a']}` − `{c['b']}` | {_r(c['difference_r'])} "
                f"[{_r(c['ci'][0])}, {_r(c['ci'][1])}] | {c['verdict']} | "
                f"{c['total_difference_r']:+.1f} [{c['total_ci'][0]:+.1f}, "
                f"{c['total_ci'][1]:+.1f}] |"
            )
        lines += ["", "Gates that rejected refit candidates:", ""]
        for n, v in data["variants"].items():
            gates = ", ".join(f"{g} {k}" for g, k in v["failed_gate"].items()) or "none"
            lines.append(f"* `{n}`: {gates}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="name=folder of each replay")
    parser.add_argument("--out", required=True, help="folder for report.md and summary.json")
    parser.add_argument(
        "--notes", default=None, help="a Markdown file appended to the report (the reading)"
    )
    args = parser.parse_args(argv)
    folders = {}
    for item in args.variants:
        name, _, folder = item.partition("=")
        if not folder or not Path(folder).is_dir():
            parser.error(f"{item!r}: expected name=folder of a finished replay")
        folders[name] = Path(folder)
    summary = compare(folders)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(dumps(summary, indent=2) + "\n")
    notes = "\n" + Path(args.notes).read_text() if args.notes else ""
    (out / "report.md").write_text(render(summary) + notes)
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
