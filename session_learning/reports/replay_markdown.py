"""The replay report as Markdown: ``render_markdown`` turns ``summarize``'s dict into
``report.md``, one function per section (verdict, arms, paired comparisons, candidates and
gates, per model, regimes and flips, the arena, how the replay works).
"""

from __future__ import annotations

import math

from session_learning.domain.gates import GATE_NAMES
from session_learning.replay.config import ARM_DESCRIPTIONS
from session_learning.reports.replay_summary import BOOTSTRAP_SAMPLES, CONFIDENCE


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return fmt.format(x)


def _r(x: float | None) -> str:
    return _num(x, "{:+.3f}")


def _pct(x: float | None) -> str:
    return _num(None if x is None else 100 * x, "{:.1f}%")


def _estimate(value: float | None, ci: list, trades: int) -> str:
    if not trades:
        return "–"
    return f"{_r(value)} [{_r(ci[0])}, {_r(ci[1])}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(summary: dict, png_name: str = "equity.png") -> str:
    """The report as Markdown (links ``png_name`` for the equity curves)."""
    lines = _title_lines(summary)
    lines += ["## Verdict", ""]
    lines += _verdict_lines(summary)
    lines += _arm_lines(summary, png_name)
    lines += _comparison_lines(summary)
    lines += _gate_lines(summary)
    lines += _per_model_lines(summary)
    if "by_regime" in summary:
        lines += _regime_lines(summary)
    if "arena" in summary:
        lines += _arena_lines(summary)
    lines += _method_lines(summary["config"])
    return "\n".join(lines)


def _title_lines(summary: dict) -> list[str]:
    """The title, what was replayed, and the warning that synthetic bars are not a market."""
    config = summary["config"]
    lines = [
        "# Replay: does session learning help?",
        "",
        f"Models {', '.join(config['models'])}; {config['sessions']} sessions of "
        f"{config['session_hours']} hours, {config['start'][:16]} .. {config['end'][:16]} UTC; "
        f"{summary['bars']}"
        + (f"; scenario `{config['scenario']}`" if config["scenario"] else "")
        + ".",
        "",
    ]
    if summary["bars"].startswith("synthetic"):
        lines += [
            "> These are **synthetic bars** with learnable, regime-changing structure, far "
            "stronger than in real markets. An independent replay on nine real gold, silver "
            "and EURUSD series found no model reaching profit factor 1.4 out of sample and no "
            "measurable benefit from boosting losers. Read these numbers as a test of the "
            "machinery, not as a forecast.",
            "",
        ]
    return lines


def _arm_lines(summary: dict, png_name: str) -> list[str]:
    """The arms' results table, what its numbers are over, and the equity curves."""
    learning = summary["config"]["learning"]
    lines = ["", "## Arms", ""]
    lines += _table(
        [
            "arm",
            "what it does",
            "trades",
            "PF",
            "WR",
            "max DD",
            f"expectancy R [{100 * CONFIDENCE:.0f}% CI]",
            "return",
            "candidates",
            "deploys",
        ],
        [
            [
                f"`{arm}`",
                ARM_DESCRIPTIONS[arm],
                str(s["trades"]),
                _num(s["profit_factor"]),
                _pct(s["win_rate"]),
                _num(s["max_drawdown_pct"], "{:.2f}%"),
                _estimate(s["expectancy_r"], s["expectancy_ci"], s["trades"]),
                _num(s["total_return_pct"], "{:+.1f}%"),
                str(s["candidates"]),
                str(s["deploys"]),
            ]
            for arm, s in summary["arms"].items()
        ],
    )
    lines += [
        "",
        f"All trades are out of sample: a session's bars are traded by a model trained before "
        f"the session began. PF, WR, max DD and expectancy are over every trade of the arm "
        f"(all models, in exit order; drawdown on a compounding curve risking "
        f"{100 * learning['risk_per_trade']:.1f}% per trade). Intervals: bootstrap over "
        f"one-day blocks, {BOOTSTRAP_SAMPLES} resamples.",
        "",
        f"![equity curves of the arms]({png_name})",
    ]
    return lines


def _comparison_lines(summary: dict) -> list[str]:
    """The paired comparisons of the arms' expectancy."""
    lines = ["", "## Paired comparisons", ""]
    lines += _table(
        ["comparison", "difference in expectancy (R)", f"{100 * CONFIDENCE:.0f}% CI", "verdict"],
        [
            [
                f"`{c['a']}` − `{c['b']}`",
                _r(c["difference_r"]),
                f"[{_r(c['ci'][0])}, {_r(c['ci'][1])}]",
                c["verdict"],
            ]
            for c in summary["comparisons"]
        ],
    )
    lines += [
        "",
        "Same one-day blocks for both arms (shared market conditions). A difference whose "
        "interval contains 0 is reported as *no measurable difference*.",
    ]
    return lines


def _gate_lines(summary: dict) -> list[str]:
    """The gates' thresholds and, per arm, the candidates each gate rejected."""
    config = summary["config"]
    gates = config["gates"]
    lines = [
        "",
        "## Candidates and gates",
        "",
        f"Gates on the validation window: PF > {gates['min_profit_factor']}, max DD < "
        f"{gates['max_drawdown_pct']}%, WR > {100 * gates['min_win_rate']:.0f}%, minimum "
        f"trades {', '.join(f'{k} {v}' for k, v in gates['min_trades'].items() if any(m.endswith('_' + k) for m in config['models']))}"
        f", and beating production at {100 * gates['confidence']:.0f}% confidence. A "
        "rejected candidate counts once under every gate it failed (and under *only* when "
        "that gate alone stopped it). `static` and `ungated` deploy regardless; their "
        "counts say what the gates would have stopped.",
        "",
    ]
    gate_rows = []
    for arm, s in summary["arms"].items():
        gate_rows.append(
            [
                f"`{arm}`",
                str(s["candidates"]),
                str(s["passed"]),
                str(s["rejected"]),
                *[f"{s['failed_gate'][g]} ({s['failed_only_gate'][g]})" for g in GATE_NAMES],
                str(s["errors"]),
            ]
        )
    lines += _table(
        [
            "arm",
            "candidates",
            "passed",
            "failed",
            *[f"{g} (only)" for g in GATE_NAMES],
            "errors",
        ],
        gate_rows,
    )
    return lines


def _per_model_lines(summary: dict) -> list[str]:
    """Each arm's results per model."""
    lines = ["", "## Per model", ""]
    lines += _table(
        ["arm", "model", "trades", "PF", "WR", "expectancy R", "deploys"],
        [
            [
                f"`{row['arm']}`",
                row["model"],
                str(row["trades"]),
                _num(row["profit_factor"]),
                _pct(row["win_rate"]),
                _r(row["expectancy_r"]),
                str(row["deploys"]),
            ]
            for row in summary["per_model"]
        ],
    )
    return lines


def _method_lines(config: dict) -> list[str]:
    """How the replay works, its simplifications and its settings."""
    learning = config["learning"]
    return [
        "",
        "## How the replay works",
        "",
        "Each session (UTC) the live model of each arm scores the session's bars; a signal "
        "(the card's confidence and edge thresholds) enters at the next bar's open and is "
        "resolved by the shared first-touch rules with costs, one position per model at a "
        "time. Closed trades go to the arm's SQLite trade journal in the session they exited; "
        "at the session's end the arm's learning cycle reads them back and runs the same "
        "domain functions as the Dagster assets (validate, analyze, plan, weighted training "
        "set, candidate, production on the same window, gates) and deploys through the model "
        "registry. Every arm starts with the same initial training at the range's start.",
        "",
        "Simplifications: a deployment takes effect at the session's end; rejected candidates "
        "are logged, not stored; features are computed once per model over the whole range "
        "(causal features; only the warm-up differs from a live window).",
        "",
        "Settings: training window "
        f"{learning['training_bars']} bars, validation "
        f"{', '.join(f'{k} {v}' for k, v in learning['validation_bars'].items() if any(m.endswith('_' + k) for m in config['models']))}"
        f" bars, barriers TP {learning['tp_atr']} / SL {learning['sl_atr']} ATR, "
        f"{learning['max_holding_bars']} bars holding, CatBoost {learning['iterations']} "
        f"iterations (seed {learning['random_seed']}); trigger {config['rules']['min_trades']} "
        f"trades and {config['rules']['min_losers']} loser(s); costs "
        + ", ".join(f"{s} spread {c['spread']:g}" for s, c in config["costs"].items())
        + ".",
        "",
    ]


def _arena_lines(summary: dict) -> list[str]:
    """The arena's counts and, with synthetic bars, how it met the flips."""
    arena = summary["arena"]
    c = arena["counts"]
    n = c["counts"]
    deployments = ", ".join(
        f"`{arm}` {s['registry_deployments']} ({s['unjudged_deployments']} without)"
        for arm, s in summary["arms"].items()
    )
    lines = [
        "",
        "## The arena (`session_learning` arm)",
        "",
        f"{c['sessions']} model-sessions with bars ({c['model_years']:.2f} model-years). "
        f"Promotions {n['promoted']} ({c['promotions_over_flat']} over FLAT, "
        f"{c['promotions_over_a_version']} over a trading version): "
        f"{_num(c['promotions_per_model_year'])} per model-year. Pauses (change alarms) "
        f"{n['demoted']}: {_num(c['pauses_per_model_year'])} per model-year, "
        f"{_num(c['pauses_per_100_champion_sessions'], '{:.3f}')} per 100 sessions of a "
        f"trading champion ({c['champion_sessions']} such sessions; the detector's budget is "
        f"{c['pause_budget_per_100_sessions']:.2f} false alarms per 100 in-control sessions). "
        f"FLAT traded {_pct(c['flat_share'])} of the sessions. Challengers admitted "
        f"{n['admitted']}, refused {n['refused']}, evicted {n['evicted']}, retired "
        f"{n['retired']}.",
        "",
        f"Deployments in each arm's registry, and how many without a passing judgement record: "
        f"{deployments}.",
    ]
    if "medians" not in arena:
        return lines
    return lines + _arena_flip_lines(arena)


def _arena_flip_lines(arena: dict) -> list[str]:
    """Per flip, how fast the champion stopped and another version was promoted; the trades
    after adverse flips, per arm."""
    m = arena["medians"]
    lines = [
        "",
        f"**Flips.** {m['flips']} flips, {m['adverse']} adverse (the champion at the flip lost "
        "in the shadow over the block). After an adverse flip the champion stopped trading "
        f"after a median of {_num(m['median_sessions_to_stop'], '{:.1f}')} sessions "
        f"({m['stopped_within_3']} of {m['adverse']} within 3; {m['stop_censored']} not before "
        "the next flip); another version was promoted after a median of "
        f"{_num(m['median_sessions_to_promotion'], '{:.1f}')} sessions ({m['promoted_within_8']} "
        f"within 8; {m['promotion_censored']} not before the next flip; censored flips count "
        "past their block).",
        "",
    ]
    lines += _table(
        ["flip", "to", "sessions", "champion", "its R in the block", "stopped after", "by",
         "promoted after"],
        [
            [
                f["flip"][:16],
                f["to"],
                str(f["sessions"]),
                f["champion"],
                _r(f["champion_r"]),
                "–" if f["stopped_after"] is None else str(f["stopped_after"]),
                f["stopped_by"] or "–",
                "–" if f["promoted_after"] is None else str(f["promoted_after"]),
            ]
            for f in arena["per_flip"]
        ],
    )  # fmt: skip
    lines += [
        "",
        "The trades entered in the adverse flips' blocks (FLAT's sessions add no trade: the "
        "total shows what pausing saved):",
        "",
    ]
    lines += _table(
        ["arm", "trades", "total R", f"expectancy R [{100 * CONFIDENCE:.0f}% CI]"],
        [
            [
                f"`{arm}`",
                str(a["trades"]),
                _num(a["total_r"], "{:+.1f}"),
                _estimate(a["expectancy_r"], a["ci"], a["trades"]),
            ]
            for arm, a in arena["after_adverse_flips"].items()
        ],
    )
    for v in arena["after_adverse_versus"]:
        lines.append(
            f"- `session_learning` − `{v['b']}` after adverse flips: {_r(v['difference_r'])} R "
            f"({100 * CONFIDENCE:.0f}% CI [{_r(v['ci'][0])}, {_r(v['ci'][1])}])."
        )
    return lines


def _verdict_lines(summary: dict) -> list[str]:
    res = summary["resolution"]
    lines = []
    for c in summary["comparisons"]:
        if c["verdict"] == "no measurable difference":
            text = (
                f"- `{c['a']}` vs `{c['b']}`: **no measurable difference** "
                f"({_r(c['difference_r'])} R, {100 * CONFIDENCE:.0f}% CI "
                f"[{_r(c['ci'][0])}, {_r(c['ci'][1])}])."
            )
        elif c["verdict"].startswith("cannot") or c["verdict"] == "identical trades":
            text = f"- `{c['a']}` vs `{c['b']}`: {c['verdict']}."
        else:
            gap = c["difference_r"] if c["verdict"].startswith(c["a"]) else -c["difference_r"]
            text = (
                f"- `{c['a']}` vs `{c['b']}`: **{c['verdict']}** by {_num(gap, '{:.3f}')} R "
                f"({100 * CONFIDENCE:.0f}% CI [{_r(c['ci'][0])}, {_r(c['ci'][1])}])."
            )
        lines.append(text)
    if res["too_short"]:
        spread = "–" if res["r_std"] is None else f"±{res['r_std']:.2f}"
        needed = (
            "many"
            if res["trades_needed_per_arm"] is None
            else (f"about {res['trades_needed_per_arm']}")
        )
        lines += [
            "",
            f"**This replay is too short to conclude.** The fewest trades of an arm is "
            f"{res['fewest_trades']}; per-trade results spread {spread} R, so telling arms "
            f"{res['difference_r']} R apart needs {needed} trades per arm. Differences "
            "smaller than the intervals above are invisible here.",
        ]
    else:
        lines += [
            "",
            f"Every arm has at least {res['trades_needed_per_arm']} trades, enough to tell "
            f"{res['difference_r']} R apart at {100 * CONFIDENCE:.0f}% confidence.",
        ]
    return lines


def _regime_lines(summary: dict) -> list[str]:
    lines = ["", "## By regime (the synthetic generator's known answer)", ""]
    rows = {}
    for row in summary["by_regime"]:
        rows.setdefault(row["arm"], {})[row["regime"]] = row
    lines += _table(
        ["arm", "trend: trades, R", "range: trades, R", "burst: trades, R"],
        [
            [f"`{arm}`"]
            + [
                f"{by[g]['trades']}, {_r(by[g]['expectancy_r'])}"
                for g in ("trend", "range", "burst")
            ]
            for arm, by in rows.items()
        ],
    )
    flips = summary["flips"]
    lines += [
        "",
        f"### After the flips ({flips['flips']} flips between trend and range)",
        "",
        "Expectancy of trades entered after a flip until the next one, split at the "
        f"adaptation lag ({flips['adaptation_sessions']} sessions with bars): the validation "
        "window, purge and embargo separate a candidate's newest training row from the "
        "session, so no candidate can have trained on the new structure before the lag. A "
        "model that recovers from flips does well after the lag in both structures; a model "
        "that knows one structure does well in it and badly in the other.",
        "",
    ]
    lines += _table(
        ["arm", "flipped to", "phase", "trades", f"expectancy R [{100 * CONFIDENCE:.0f}% CI]"],
        [
            [
                f"`{p['arm']}`",
                p["structure"],
                p["phase"],
                str(p["trades"]),
                _estimate(p["expectancy_r"], p["ci"], p["trades"]),
            ]
            for p in flips["phases"]
        ],
    )
    if flips["per_flip"]:
        arms = [a for a in summary["arms"]]
        lines += ["", "<details><summary>Every flip</summary>", ""]
        lines += _table(
            [
                "symbol",
                "flip",
                "to",
                "sessions",
                *[f"`{a}` trades, R (after the lag)" for a in arms],
            ],
            [
                [
                    f["symbol"],
                    f["flip"],
                    f["to"],
                    str(f["sessions"]),
                    *[
                        f"{f[f'{a}_trades']}, {_r(f[f'{a}_expectancy_r'])} "
                        f"({_r(f[f'{a}_later_expectancy_r'])})"
                        for a in arms
                    ],
                ]
                for f in flips["per_flip"]
            ],
        )
        lines += ["", "</details>"]
    return lines
