"""The gates, declared once, and the one judgement of a candidate: hand-computed verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from session_learning.domain.backtest import BacktestResult, compute_metrics, equity_curve
from session_learning.domain.gates import (
    GATE_NAMES,
    GATES,
    GateThresholds,
    Judgement,
    evaluate_gates,
    judge,
)
from session_learning.resources.learning_settings import LearningSettingsResource

RISK = 0.005
WINDOW = (pd.Timestamp("2025-01-06", tz="UTC"), pd.Timestamp("2025-02-06", tz="UTC"))
JUDGED_AT = "2025-02-06T00:00:00+00:00"


def backtest(r_multiples: list[float], every: str = "6h") -> BacktestResult:
    """A backtest result with these R multiples, entered every ``every`` from the window's start."""
    r = np.asarray(r_multiples, dtype=float)
    entries = pd.date_range(WINDOW[0], periods=len(r), freq=every)
    exits = entries + pd.Timedelta(hours=1)
    trades = pd.DataFrame({"entry_time": entries, "exit_time": exits, "r_multiple": r})
    equity = pd.Series(equity_curve(r, RISK), index=exits)
    return BacktestResult(trades, equity, compute_metrics(r, exits, RISK))


def test_every_gate_is_declared_once_with_its_setting_and_its_check():
    from session_learning.assets.models import build_model_assets
    from session_learning.domain.keys import ModelKey
    from session_learning.partitions import build_session_partitions

    assert tuple(g.name for g in GATES) == GATE_NAMES
    assert len(set(GATE_NAMES)) == len(GATES)
    thresholds = {f.name for f in dataclasses.fields(GateThresholds)}
    settings = set(LearningSettingsResource.model_fields)
    for gate in GATES:
        assert gate.description.strip(), gate.name
        # The threshold a gate reads is a setting an operator can change.
        assert gate.threshold_setting in thresholds & settings, gate.name

    partitions = build_session_partitions()
    _, candidate, _ = build_model_assets(partitions, ModelKey("EURUSD", "30T"))
    specs = {spec.name: spec for spec in candidate.check_specs}
    assert list(specs) == list(GATE_NAMES)
    for gate in GATES:
        assert specs[gate.name].description == gate.description
        assert specs[gate.name].blocking


def test_a_candidate_that_passes_every_gate_with_no_production_model():
    winner = backtest([2.0, -1.0, 2.0, 2.0, -1.0] * 24)  # 120 trades, PF 6/2 = 3, WR 60%
    verdict = judge(
        winner,
        None,
        "30T",
        WINDOW,
        GateThresholds(),
        baseline_version=None,
        partition="2025-02-05-20:00",
        judged_at=JUDGED_AT,
    )
    assert verdict.passed and verdict.decision == "passed" and verdict.failed == []
    assert [g.name for g in verdict.gates] == list(GATE_NAMES)
    assert verdict.reasons == ["passed every gate against no production model"]
    assert verdict.summary == "passed every gate"
    pf = verdict.gates[0]
    assert pf.value == pytest.approx(3.0) and pf.threshold == 1.4 and pf.production_value is None
    assert verdict.metrics["trades"] == 120 and verdict.production_metrics is None
    record = verdict.to_record()
    assert record["decision"] == "passed" and record["baseline_version"] is None
    assert record["evidence"] is None and record["partition"] == "2025-02-05-20:00"
    assert Judgement.from_record(record) == verdict


def test_a_rejected_candidate_names_each_failed_gate_with_its_numbers():
    loser = backtest([2.0, -1.0, -1.0, -1.0] * 5)  # 20 trades, PF 10/15, WR 25%
    production = backtest([1.0, -1.0] * 10)
    verdict = judge(
        loser,
        production,
        "30T",
        WINDOW,
        GateThresholds(),
        baseline_version="20250205T2000-0123456789",
        partition="2025-02-05-20:00",
        judged_at=JUDGED_AT,
        evidence={"note": "forward evidence goes here"},
    )
    assert not verdict.passed and verdict.decision == "rejected"
    assert set(verdict.failed) >= {
        "profit_factor_above_threshold",
        "win_rate_above_threshold",
        "enough_validation_trades",
    }
    assert verdict.summary.startswith("rejected: profit_factor_above_threshold, ")
    assert "profit_factor_above_threshold: profit factor 0.667 vs > 1.4" in verdict.reasons
    assert "win_rate_above_threshold: win rate 25.0% vs > 42.0%" in verdict.reasons
    trades = next(g for g in verdict.gates if g.name == "enough_validation_trades")
    assert (trades.value, trades.threshold, trades.production_value) == (20.0, 100.0, 20.0)
    record = verdict.to_record()
    assert record["baseline_version"] == "20250205T2000-0123456789"
    assert record["evidence"] == {"note": "forward evidence goes here"}
    assert Judgement.from_record(record) == verdict


def test_a_candidate_no_better_than_production_does_not_beat_it():
    same = backtest([2.0, -1.0, 2.0, -1.0, -1.0] * 30)
    [*_, beats] = evaluate_gates(same, same, "30T", WINDOW, GateThresholds())
    assert beats.name == "candidate_beats_production" and not beats.passed
    assert beats.details["difference_r"] == pytest.approx(0.0)
    assert "not better beyond noise" in beats.message


def test_a_production_result_needs_its_version_and_back():
    result = backtest([1.0, -1.0])
    with pytest.raises(ValueError, match="both or neither"):
        judge(
            result,
            result,
            "30T",
            WINDOW,
            GateThresholds(),
            baseline_version=None,
            partition=None,
            judged_at=JUDGED_AT,
        )


def test_the_readme_names_every_gate():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [g.name for g in GATES if g.name not in readme] == []
