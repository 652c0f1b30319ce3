"""Helpers that turn domain results into metadata a person reads in the Dagster UI."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import dagster as dg
import numpy as np
import pandas as pd

from session_learning.domain.analysis import ProblemReport, RetrainPlan
from session_learning.domain.arena_session import ArenaState, SessionMarks
from session_learning.domain.backtest import BacktestResult
from session_learning.domain.gates import GateResult
from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import QUARANTINE_COLUMN
from session_learning.reports.plots import (
    calibration_png,
    change_statistic_png,
    equity_curves_png,
    evidence_curves_png,
    png_markdown,
)
from session_learning.resources.journal_reports import WinRateTrend


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A DataFrame as a Markdown table (first ``max_rows`` rows, with a note when cut)."""
    if frame.empty:
        return dg.MetadataValue.md("_(none)_")
    shown = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |"]
    lines.append("|" + "---|" * len(shown.columns))
    lines += [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)
    ]
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows not shown_")
    return dg.MetadataValue.md("\n".join(lines))


def session_check_spec(
    name: str, asset: dg.AssetKey | str, partitions_def: dg.PartitionsDefinition, **kwargs: object
) -> dg.AssetCheckSpec:
    """An asset check whose results belong to the session partition they judged.

    Without ``partitions_def`` a check on a partitioned asset records its result with no
    partition, so the UI cannot say which session a gate failed for. The argument is a preview
    API in Dagster 1.13; it is used deliberately (tests pin the behaviour: a failed gate stops
    that partition's deployment, and each result carries its partition), and its warning is
    silenced here rather than shown on every load of the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, **kwargs)


# --- session analysis ------------------------------------------------------------------------


def session_trades_metadata(
    raw: pd.DataFrame, good: pd.DataFrame, bad: pd.DataFrame, unplaced: pd.DataFrame
) -> dict:
    """UI metadata of ``session_trades``: row counts and the quarantined rows as tables."""
    return {
        "journal_rows": len(raw),
        "valid_trades": len(good),
        "quarantined": len(bad),
        "winners": int((good["pnl"] > 0).sum()),
        "losers": int((good["pnl"] < 0).sum()),
        "quarantined_rows": markdown_table(
            bad[["trade_id", "symbol", "timeframe", QUARANTINE_COLUMN]]
        ),
        "journal_rows_without_exit_time": len(unplaced),
        "rows_in_no_session": markdown_table(
            unplaced[["trade_id", "symbol", "timeframe", QUARANTINE_COLUMN]]
        ),
    }


def breakdown_metadata(table: pd.DataFrame) -> dict:
    """UI metadata of ``session_breakdown``: the table and its failing/warning models."""
    models_only = table.loc[table["direction"] == "all"]
    return {
        "breakdown": markdown_table(with_na(table)),
        "models_failing": int((models_only["status"] == "failing").sum()),
        "models_warning": int((models_only["status"] == "warning").sum()),
    }


def _rate(value: float | None) -> dg.MetadataValue:
    """A win rate or profit factor for the UI: "n/a" when there was nothing to measure."""
    if value is None:
        return dg.MetadataValue.text("n/a")
    return dg.MetadataValue.float(value) if math.isfinite(value) else dg.MetadataValue.text("∞")


def with_na(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every missing value written as "n/a" (for Markdown and CSV)."""
    return table.astype(object).where(table.notna(), "n/a")


def report_metadata(report: ProblemReport) -> dict:
    """UI metadata of a problem report: trigger, problems and plans as tables."""
    problems = pd.DataFrame(
        [
            {"kind": p.kind, "model": p.model or "session", "problem": p.message}
            for p in report.problems
        ],
        columns=["kind", "model", "problem"],
    )
    plans = pd.DataFrame(
        [
            {
                "model": slug,
                "retrain": plan.retrain,
                "boosted trades": len(plan.trade_boosts),
                "edge threshold": plan.edge_threshold,
                "l2_leaf_reg": plan.l2_leaf_reg,
                "class weights": ", ".join(f"{k} {v:g}" for k, v in plan.class_weights.items()),
                "why": "; ".join(plan.reasons),
            }
            for slug, plan in report.plans.items()
        ]
    )
    return {
        "triggered": report.trigger.triggered,
        "trigger": report.trigger.message,
        "trades": report.summary["trades"],
        "win_rate": _rate(report.summary["win_rate"]),
        "profit_factor": _rate(report.summary["profit_factor"]),
        "pnl": float(report.summary["pnl"]),
        "problems_found": len(report.problems),
        "models_to_retrain": sum(p.retrain for p in report.plans.values()),
        "problems": markdown_table(problems),
        "plan": markdown_table(plans),
        "loser_patterns": markdown_table(
            pd.DataFrame(
                [
                    {
                        "model": p["model"],
                        "dimension": p["dimension"],
                        "bucket": p["bucket"],
                        "trades": p["trades"],
                        "loss rate": p["loss_rate"],
                        "model loss rate": p["baseline_loss_rate"],
                        "p": p["p_value"],
                    }
                    for p in report.patterns
                ]
            )
        ),
    }


# --- learning: training set, candidate, deployment ---------------------------------------------


def training_set_metadata(info: dict) -> dict:
    """UI metadata of ``weighted_training_set``: rows, boosts, the window and the plan."""
    plan = RetrainPlan.from_dict(info["plan"])
    return {
        "training_rows": info["rows"]["train"],
        "validation_rows": info["rows"]["validation"],
        "boosted_rows": len(info["boosted_rows"]),
        "unmatched_trades": len(info["unmatched_trades"]),
        "class_balance": markdown_table(pd.DataFrame([info["class_balance"]])),
        "boosted": markdown_table(pd.DataFrame(info["boosted_rows"])),
        "unmatched": markdown_table(pd.DataFrame(info["unmatched_trades"])),
        "validation_window": f"{info['split']['validation_start']} .. {info['split']['validation_end']}",
        "plan": "; ".join(plan.reasons),
        "held_out": " .. ".join(info["held_out"]),
        "loser_pattern_trades": (
            "{trades_used} used, {trades_held_out} held out (touched the held-out span)".format(
                **info["loser_pattern_search"]
            )
        ),
    }


def gates_table(gates: list[GateResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "gate": g.name,
                "passed": "yes" if g.passed else "NO",
                "value": g.value,
                "threshold": g.threshold,
                "production": g.production_value,
                "detail": g.message,
            }
            for g in gates
        ]
    )


def candidate_metadata(
    key: ModelKey,
    version: str,
    decision: str,
    baseline: str | None,
    result: BacktestResult,
    production_result: BacktestResult | None,
    calibration: tuple[np.ndarray, np.ndarray],
    gates: list[GateResult],
) -> dict:
    """UI metadata of ``candidate_model``: its metrics, equity against production, calibration
    (the validation rows' class probabilities and labels) and the gates."""
    m = result.metrics
    return {
        "version": version,
        "decision": decision,
        "profit_factor": m.profit_factor,
        "max_drawdown_pct": m.max_drawdown_pct,
        "win_rate": m.win_rate,
        "validation_trades": m.trades,
        "expectancy_r": m.expectancy_r,
        "sharpe": m.sharpe,
        "production_version": baseline or "none",
        "equity_curves": dg.MetadataValue.md(
            png_markdown(
                equity_curves_png(
                    result.equity,
                    production_result.equity if production_result else None,
                    f"{key.slug}: {version} vs {baseline or 'no production model'}",
                ),
                "candidate vs production equity on the validation window",
            )
        ),
        "calibration": dg.MetadataValue.md(
            png_markdown(
                calibration_png(*calibration),
                "probability calibration on the validation window",
            )
        ),
        "gates": markdown_table(gates_table(gates)),
    }


def gate_check_result(asset: dg.AssetKey, gate: GateResult) -> dg.AssetCheckResult:
    """A gate's blocking check result: its value, threshold and production value."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=gate.name,
        passed=gate.passed,
        description=gate.message,
        metadata={
            "value": gate.value,
            "threshold": gate.threshold,
            "production_value": gate.production_value,
            **{k: v for k, v in gate.details.items()},
        },
    )


def deployment_metadata(
    label: str, version: str, previous: str | None, promoted: bool, summary: str
) -> dict:
    """UI metadata of a deployment (``deployed_model``, ``champion_model``): the version under
    ``label``, the one it replaced, whether it went live and why."""
    return {
        label: version,
        "previous": previous or "none",
        "deployed": promoted,
        "summary": summary,
    }


# --- the arena ---------------------------------------------------------------------------------


def shadow_book_metadata(
    state: ArenaState, marked: SessionMarks, written: int, present: int
) -> dict:
    """UI metadata of ``shadow_book``: each member's bars, trades and R, and the journal rows."""
    table = pd.DataFrame(
        [
            {
                "member": v,
                "role": "champion" if v == state.arena.champion else "challenger",
                "bars": len(marked.marks[v]),
                "trades": len(marked.trades[v]),
                "R": float(marked.trades[v]["r_multiple"].sum()) if len(marked.trades[v]) else 0.0,
                "marked R": float(marked.marks[v].sum()),
            }
            for v in state.arena.members()
        ],
        columns=["member", "role", "bars", "trades", "R", "marked R"],
    )
    return {
        "champion": state.arena.champion,
        "bars": marked.bars,
        "members": markdown_table(table),
        "shadow_trades_written": written,
        "shadow_trades_already_stored": present,
    }


def _e(value: float | None) -> float:
    return math.inf if value is None else float(value)


def evidence_table(record: Mapping) -> pd.DataFrame:
    """Each challenger's evidence of a folded session: e-values and confidence sequences
    against the champion and FLAT."""
    rows = []
    entered = {c["version"]: c for c in record.get("challengers", [])}
    for version, ev in sorted(record.get("evidence", {}).items()):
        champion, flat = ev["vs_champion"], ev["vs_flat"]
        rows.append(
            {
                "challenger": version,
                "kind": entered.get(version, {}).get("kind", "left"),
                "e vs champion": _e(champion["e_value"]),
                "e vs FLAT": _e(flat["e_value"]),
                "threshold": _e(champion["threshold"]),
                "mean R/bar": champion["mean_r"],
                "CS vs champion": f"[{champion['lower_r']:+.4f}, {champion['upper_r']:+.4f}]",
                "CS vs FLAT": f"[{flat['lower_r']:+.4f}, {flat['upper_r']:+.4f}]",
                "bars": champion["bars"],
                "trades": flat["trades"],
                "against": champion["baseline"],
            }
        )
    return pd.DataFrame(rows)


def _evidence_plots(key: ModelKey, past: list[dict]) -> dict:
    """The e-value curves and the champion's change statistic over the ``past`` records."""
    curve = pd.DataFrame(
        [
            {
                "session": r["session"],
                "version": v,
                "e_value": _e(ev["vs_champion"]["e_value"]),
                "threshold": _e(ev["vs_champion"]["threshold"]),
            }
            for r in past
            for v, ev in r.get("evidence", {}).items()
        ],
        columns=["session", "version", "e_value", "threshold"],
    )
    change = pd.DataFrame(
        [
            {
                "session": r["session"],
                "statistic": r["change"]["statistic"],
                "threshold": r["change"]["threshold"],
            }
            for r in past
            if r.get("change")
        ],
        columns=["session", "statistic", "threshold"],
    )
    return {
        "evidence_curves": dg.MetadataValue.md(
            png_markdown(
                evidence_curves_png(curve, f"{key.slug}: e-values vs the champion"),
                "each challenger's e-value against the champion, session by session",
            )
        ),
        "change_statistic": dg.MetadataValue.md(
            png_markdown(
                change_statistic_png(change, f"{key.slug}: champion change detector"),
                "the champion's CUSUM statistic and its alarm threshold",
            )
        ),
    }


def evidence_metadata(
    key: ModelKey,
    record: Mapping,
    table: pd.DataFrame,
    past: list[dict],
    decision: str,
    folded_now: bool,
) -> dict:
    """UI metadata of ``challenger_evidence``: the decision, the evidence, admissions and
    retirements as tables, and the curves of the ``past`` sessions' records."""
    return {
        "champion": f"{record['champion_before']} -> {record['champion']}",
        "decision": decision,
        "promoted": record.get("promoted") or "none",
        "demoted": record.get("demoted") or "none",
        "folded_now": folded_now,
        "restart": record.get("restart") or "-",
        "evidence": markdown_table(table),
        "admissions": markdown_table(pd.DataFrame(record.get("admissions", []))),
        "retirements": markdown_table(pd.DataFrame(record.get("retirements", []))),
        **_evidence_plots(key, past),
    }


def best_challenger_metadata(record: Mapping, table: pd.DataFrame) -> dict:
    """Check metadata while no challenger won: the best one's e-value and its threshold."""
    best = table.sort_values("e vs champion").iloc[-1] if len(table) else None
    return {
        "champion": record["champion"],
        "best_challenger": "none" if best is None else best["challenger"],
        "best_e_value": 0.0 if best is None else float(best["e vs champion"]),
        "threshold": 0.0 if best is None else float(best["threshold"]),
    }


# --- the signal monitor ------------------------------------------------------------------------


def resolved_signals_metadata(rows: list[dict], open_signals: int, now: pd.Timestamp) -> dict:
    """UI metadata of ``resolved_signals``: the trades closed and the signals still open."""
    return {
        "resolved": len(rows),
        "still_open": open_signals - len(rows),
        "trades": markdown_table(pd.DataFrame(rows)),
        "as_of": now.isoformat(),
    }


def live_signals_metadata(rows: list[dict], now: pd.Timestamp) -> dict:
    """UI metadata of ``live_signals``: each model's health and signal, and their counts."""
    table = pd.DataFrame(rows)
    return {
        "models": markdown_table(table),
        "signals_emitted": int(table["signal"].str.contains("@").sum()) if rows else 0,
        "degraded": int((table["health"] == "degraded").sum()) if rows else 0,
        "as_of": now.isoformat(),
    }


# --- monitoring --------------------------------------------------------------------------------


def _shown(frame: pd.DataFrame, time_columns: dict[str, str]) -> pd.DataFrame:
    """Newest first, times as text, for a Markdown table."""
    shown = frame.iloc[::-1].copy()
    for column, fmt in time_columns.items():
        shown[column] = shown[column].dt.strftime(fmt)
    return shown


def performance_metadata(
    start: pd.Timestamp,
    end: pd.Timestamp,
    weekly: pd.DataFrame,
    sessions: pd.DataFrame,
    trend: WinRateTrend,
    without_exit_time: int,
    png: bytes,
) -> dict:
    """UI metadata of ``learning_performance``: the window, the newest week's win rate and its
    change, the weekly and per-session tables and the plot."""
    return {
        "window": f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC",
        "trades": int(weekly["trades"].sum()),
        "latest_week": f"{trend.latest_week:%Y-%m-%d}" if trend.latest_week else "none",
        "latest_weekly_win_rate": dg.MetadataValue.float(trend.latest_win_rate),
        "win_rate_change_vs_4_weeks_ago": dg.MetadataValue.float(trend.change),
        "trades_without_pnl": int(weekly["without_pnl"].sum()),
        "trades_without_exit_time": without_exit_time,
        "weekly": markdown_table(_shown(weekly, {"week_start": "%Y-%m-%d"})),
        "sessions": markdown_table(
            _shown(sessions, {"session_start": "%Y-%m-%d %H:%M", "session_end": "%H:%M"})
        ),
        "plot": dg.MetadataValue.md(png_markdown(png, "weekly win rate")),
    }
