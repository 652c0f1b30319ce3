"""The deployment gates and the one judgement of a candidate.

The gates are declared once, in ``GATES``: absolute benchmarks on the validation window, and
beating production. Each gives a ``GateResult`` carrying its value, its threshold and the
production model's value on the same window, so a person can see how far a candidate was from
passing. ``judge`` runs them all and returns a ``Judgement`` (gates, decision, reasons,
evidence, metrics): the Dagster candidate asset and the replay both judge through it, and the
model registry stores its record, without which nothing can go live.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd

from session_learning.domain.backtest import BacktestResult
from session_learning.domain.stats import paired_bootstrap_expectancy

DEFAULT_MIN_TRADES = {"5T": 200, "15T": 150, "30T": 100, "1H": 60, "4H": 40}


@dataclass(frozen=True)
class GateThresholds:
    """The benchmark gates (seed: PF > 1.4, DD < 6.5%, WR > 42%) and the comparison's settings."""

    min_profit_factor: float = 1.4
    max_drawdown_pct: float = 6.5
    min_win_rate: float = 0.42
    min_trades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_TRADES))
    confidence: float = 0.90
    bootstrap_block: str = "1D"
    bootstrap_samples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict with the numbers behind it."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    production_value: float | None
    message: str
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateInputs:
    """What every gate looks at: the candidate and production on the same validation window."""

    candidate: BacktestResult
    production: BacktestResult | None
    timeframe: str
    window: tuple[pd.Timestamp, pd.Timestamp]
    thresholds: GateThresholds


@dataclass(frozen=True)
class Gate:
    """A deployment gate, declared once: its name (the asset check's name), what it asserts
    (the check's description), the threshold setting it reads (a field of ``GateThresholds``
    and of the learning settings) and how it is evaluated."""

    name: str
    description: str
    threshold_setting: str
    evaluate: Callable[[GateInputs], GateResult]


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "∞"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _threshold_gate(
    name: str,
    description: str,
    threshold_setting: str,
    metric: str,
    above: bool,
    message: Callable[[float, float], str],
) -> Gate:
    """A gate that passes when the candidate has trades and its ``metric`` is strictly above
    (``above``) or below the ``threshold_setting``; ``message(value, limit)`` says so."""

    def evaluate(g: GateInputs) -> GateResult:
        c, p = g.candidate.metrics, g.production
        value, limit = getattr(c, metric), getattr(g.thresholds, threshold_setting)
        return GateResult(
            name,
            c.trades > 0 and (value > limit if above else value < limit),
            _num(value),
            limit,
            _num(getattr(p.metrics, metric)) if p else None,
            message(value, limit),
        )

    return Gate(name, description, threshold_setting, evaluate)


def _enough_trades(g: GateInputs) -> GateResult:
    c, p = g.candidate.metrics, g.production
    min_trades = g.thresholds.min_trades.get(g.timeframe, 100)
    return GateResult(
        "enough_validation_trades",
        c.trades >= min_trades,
        float(c.trades),
        float(min_trades),
        float(p.metrics.trades) if p else None,
        f"{c.trades} validation trades vs >= {min_trades} for {g.timeframe}"
        + ("" if c.trades >= min_trades else "; the window is too short to judge this model"),
    )


def _beats_production(g: GateInputs) -> GateResult:
    """With no production model the comparison passes with a note: the absolute gates alone
    decide. Otherwise the candidate's expectancy must be above production's at ``confidence``
    (a paired block bootstrap over the window), not merely a higher point estimate."""
    c, production, t = g.candidate.metrics, g.production, g.thresholds
    if production is None:
        return GateResult(
            "candidate_beats_production",
            True,
            _num(c.expectancy_r),
            None,
            None,
            "no production model: the absolute gates alone decide",
        )
    cmp = paired_bootstrap_expectancy(
        g.candidate.trades["r_multiple"].to_numpy(),
        g.candidate.trades["entry_time"],
        production.trades["r_multiple"].to_numpy(),
        production.trades["entry_time"],
        g.window[0],
        g.window[1],
        pd.Timedelta(t.bootstrap_block),
        n_boot=t.bootstrap_samples,
        confidence=t.confidence,
        seed=t.seed,
    )
    return GateResult(
        "candidate_beats_production",
        bool(cmp.beats),
        cmp.candidate_expectancy,
        0.0,
        cmp.production_expectancy,
        f"expectancy {cmp.candidate_expectancy:+.3f}R vs production "
        f"{cmp.production_expectancy:+.3f}R; difference {cmp.difference:+.3f}R, "
        f"{100 * cmp.confidence:.0f}% interval [{cmp.lower:+.3f}, {cmp.upper:+.3f}]"
        + ("" if cmp.beats else ": not better beyond noise"),
        details={
            "difference_r": cmp.difference,
            "interval_lower": cmp.lower,
            "interval_upper": cmp.upper,
            "one_sided_lower": cmp.one_sided_lower,
            "confidence": cmp.confidence,
            "blocks": cmp.n_blocks,
        },
    )


# Every gate a candidate must pass to go live, in the order they are shown. The asset checks,
# the registry's promotion rule and the reports all read this list.
GATES: tuple[Gate, ...] = (
    _threshold_gate(
        "profit_factor_above_threshold",
        "Validation profit factor (with costs) above the gate.",
        "min_profit_factor",
        "profit_factor",
        above=True,
        message=lambda value, limit: f"profit factor {_fmt(value)} vs > {limit}",
    ),
    _threshold_gate(
        "max_drawdown_below_threshold",
        "Validation max drawdown below the gate.",
        "max_drawdown_pct",
        "max_drawdown_pct",
        above=False,
        message=lambda value, limit: f"max drawdown {value:.2f}% vs < {limit}%",
    ),
    _threshold_gate(
        "win_rate_above_threshold",
        "Validation win rate above the gate.",
        "min_win_rate",
        "win_rate",
        above=True,
        message=lambda value, limit: (
            f"win rate {_fmt(value, pct=True)} vs > {_fmt(limit, pct=True)}"
        ),
    ),
    Gate(
        "enough_validation_trades",
        "Enough validation trades for the timeframe to judge the model.",
        "min_trades",
        _enough_trades,
    ),
    Gate(
        "candidate_beats_production",
        "Expectancy above production's on the same window, beyond noise (paired block "
        "bootstrap at the configured confidence).",
        "confidence",
        _beats_production,
    ),
)
GATE_NAMES = tuple(gate.name for gate in GATES)


def evaluate_gates(
    candidate: BacktestResult,
    production: BacktestResult | None,
    timeframe: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    thresholds: GateThresholds = GateThresholds(),
) -> list[GateResult]:
    """Judge a candidate on the validation ``window`` against every gate of ``GATES``."""
    inputs = GateInputs(candidate, production, timeframe, window, thresholds)
    results = []
    for gate in GATES:
        result = gate.evaluate(inputs)
        if result.name != gate.name:  # a gate reports under the name it is declared with
            raise ValueError(f"gate {gate.name} returned a result named {result.name}")
        results.append(result)
    return results


def all_passed(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)


@dataclass(frozen=True)
class Judgement:
    """The verdict on one candidate: every gate with its numbers, what it was judged against,
    the decision and why. ``to_record`` is what the model registry stores (and seals) beside
    the version; nothing can make the version production without a record that passed."""

    gates: tuple[GateResult, ...]
    baseline_version: str | None
    partition: str | None
    judged_at: str
    metrics: dict = field(default_factory=dict)
    production_metrics: dict | None = None
    evidence: dict | None = None

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    @property
    def reasons(self) -> list[str]:
        if self.passed:
            against = self.baseline_version or "no production model"
            return [f"passed every gate against {against}"]
        return [f"{g.name}: {g.message}" for g in self.gates if not g.passed]

    @property
    def summary(self) -> str:
        """One line: "passed every gate" or "rejected: <failed gates>"."""
        return "passed every gate" if self.passed else "rejected: " + ", ".join(self.failed)

    def to_record(self) -> dict:
        """The judgement as the registry stores it (``ModelRegistry.record_judgement``)."""
        return {
            "judged_at": self.judged_at,
            "partition": self.partition,
            "baseline_version": self.baseline_version,
            "gates": [
                {
                    "name": g.name,
                    "value": g.value,
                    "threshold": g.threshold,
                    "production_value": g.production_value,
                    "passed": g.passed,
                    "message": g.message,
                    "details": g.details,
                }
                for g in self.gates
            ],
            "decision": self.decision,
            "reasons": self.reasons,
            "evidence": self.evidence,
            "metrics": self.metrics,
            "production_metrics": self.production_metrics,
        }

    @classmethod
    def from_record(cls, record: dict) -> Judgement:
        """A stored judgement record back as a ``Judgement``."""
        return cls(
            gates=tuple(
                GateResult(
                    name=g["name"],
                    passed=g["passed"],
                    value=g.get("value"),
                    threshold=g.get("threshold"),
                    production_value=g.get("production_value"),
                    message=g.get("message", ""),
                    details=dict(g.get("details") or {}),
                )
                for g in record["gates"]
            ),
            baseline_version=record["baseline_version"],
            partition=record["partition"],
            judged_at=record["judged_at"],
            metrics=dict(record.get("metrics") or {}),
            production_metrics=record.get("production_metrics"),
            evidence=record.get("evidence"),
        )


def judge(
    candidate: BacktestResult,
    production: BacktestResult | None,
    timeframe: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    thresholds: GateThresholds,
    *,
    baseline_version: str | None,
    partition: str | None,
    judged_at: str,
    evidence: dict | None = None,
) -> Judgement:
    """Judge a candidate on its validation ``window`` against every gate and the production
    model ``baseline_version`` (whose result on the same window is ``production``)."""
    if (production is None) != (baseline_version is None):
        raise ValueError("the production result and its version go together (both or neither)")
    return Judgement(
        gates=tuple(evaluate_gates(candidate, production, timeframe, window, thresholds)),
        baseline_version=baseline_version,
        partition=partition,
        judged_at=judged_at,
        metrics=candidate.metrics.as_dict(),
        production_metrics=production.metrics.as_dict() if production is not None else None,
        evidence=evidence,
    )
