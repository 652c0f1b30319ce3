"""The judgement record of an arena promotion.

A promotion deploys through the registry's sealed judgement record like any other:
``gate_verdict`` reads the seed's gates (profit factor, drawdown, win rate, trades) from a
judgement of the candidate's validation window, or of its forward record
(``forward_judgement``: the gates on its shadow trades, bars it never trained on); the backward
comparison with production (``FORWARD_GATE``) is replaced by the forward evidence in
``arena_judgement``, whose ``evidence`` is ``promotion_evidence(decision)``: e-values, confidence
sequences, bars, trades, threshold and reasons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from session_learning.domain.arena import GateVerdict, PromotionDecision
from session_learning.domain.backtest import BacktestResult, compute_metrics, equity_curve
from session_learning.domain.gates import GateResult, GateThresholds, Judgement, judge

# The backward comparison with production that the arena's forward evidence replaces.
FORWARD_GATE = "candidate_beats_production"


def promotion_evidence(decision: PromotionDecision) -> dict:
    """The forward evidence of a promoting decision, as the judgement record stores it: the
    winner's e-values and confidence sequences against the champion and FLAT, its gate verdict,
    the threshold and every reason. Raises ``ValueError`` for a decision that does not promote."""
    winner = decision.winner_verdict()
    if not decision.promote or winner is None:
        raise ValueError(f"{decision.model} session {decision.session}: nothing was promoted")
    return {
        "kind": "arena",
        "model": decision.model,
        "arena_session": decision.session,
        "champion": decision.champion,
        "winner": winner.version,
        "threshold": winner.threshold,
        "vs_champion": dict(winner.evidence["vs_champion"]),
        "vs_flat": dict(winner.evidence["vs_flat"]),
        "gates": winner.gates,
        "reasons": list(decision.reasons),
    }


def gate_verdict(
    judgement: Judgement,
    data: str,
    evaluated_from: pd.Timestamp,
    trained_until: pd.Timestamp,
) -> GateVerdict:
    """The seed's gates of ``judgement`` (profit factor, drawdown, win rate, trades) as the arena
    reads them: every gate but the backward comparison with production (``FORWARD_GATE``), which
    the forward evidence replaces. ``data`` is ``"validation"`` or ``"forward"``; the gates saw
    bars from ``evaluated_from``, the model was trained on bars up to ``trained_until``."""
    absolute = [g for g in judgement.gates if g.name != FORWARD_GATE]
    failed = tuple(g.name for g in absolute if not g.passed)
    return GateVerdict(
        bool(absolute) and not failed,
        data,
        pd.Timestamp(evaluated_from),
        pd.Timestamp(trained_until),
        failed,
    )


def forward_judgement(
    trades: pd.DataFrame,
    timeframe: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    thresholds: GateThresholds,
    risk_per_trade: float,
    *,
    partition: str | None,
    judged_at: str,
) -> Judgement:
    """The gates on a member's forward record: its closed shadow trades (``r_multiple``,
    ``exit_time``, ``entry_time``) over ``window``, bars it never trained on. The comparison
    with production passes with a note here (no production on these bars): the arena's
    evidence decides it (``arena_judgement``)."""
    ordered = trades.sort_values("exit_time", kind="stable")
    r = ordered["r_multiple"].to_numpy(dtype=np.float64)
    exits = pd.DatetimeIndex(pd.to_datetime(ordered["exit_time"], utc=True))
    result = BacktestResult(
        trades=ordered.reset_index(drop=True),
        equity=pd.Series(equity_curve(r, risk_per_trade), index=exits, name="equity"),
        metrics=compute_metrics(r, exits, risk_per_trade),
    )
    return judge(
        result,
        None,
        timeframe,
        window,
        thresholds,
        baseline_version=None,
        partition=partition,
        judged_at=judged_at,
    )


def arena_judgement(
    gates: Judgement,
    decision: PromotionDecision,
    *,
    baseline_version: str | None,
    partition: str | None,
    judged_at: str,
) -> Judgement:
    """The judgement record of an arena promotion, for ``ModelRegistry.record_judgement``.

    ``gates``: the judgement the winner's gate verdict came from (its validation judgement or
    ``forward_judgement``); its seed gates are kept as they were. ``FORWARD_GATE`` is decided by
    the forward evidence instead: passed when the winner's e-values against the champion and
    against FLAT reached its threshold. ``evidence`` carries ``promotion_evidence(decision)``.
    ``baseline_version`` is the version live in the registry (the paused one while FLAT
    trades). Raises ``ValueError`` for a decision that does not promote.
    """
    evidence = promotion_evidence(decision)
    winner = decision.winner_verdict()
    vs_champion, vs_flat = evidence["vs_champion"], evidence["vs_flat"]

    def e(value: float | None) -> str:
        return "inf" if value is None else f"{value:.3g}"

    forward = GateResult(
        FORWARD_GATE,
        bool(winner.eligible),
        vs_champion["mean_r"],
        vs_champion["switching_cost_r"],
        None,
        f"forward evidence over {vs_champion['bars']} bars: e-value {e(vs_champion['e_value'])} "
        f"vs {decision.champion} and {e(vs_flat['e_value'])} vs FLAT, threshold "
        f"{winner.threshold:.3g}; mean {vs_champion['mean_r']:+.4f} R/bar, "
        f"{100 * (1 - vs_champion['alpha']):.0f}% CS [{vs_champion['lower_r']:+.4f}, "
        f"{vs_champion['upper_r']:+.4f}]",
        details={"vs_champion": vs_champion, "vs_flat": vs_flat, "threshold": winner.threshold},
    )
    kept = tuple(forward if g.name == FORWARD_GATE else g for g in gates.gates)
    if FORWARD_GATE not in {g.name for g in kept}:
        kept = (*kept, forward)
    return Judgement(
        gates=kept,
        baseline_version=baseline_version,
        partition=partition,
        judged_at=judged_at,
        metrics=gates.metrics,
        production_metrics=None,
        evidence=evidence,
    )
