"""Training, gates and deployment through Dagster: blocked candidates leave production
byte-identical, passing ones are promoted once, corrupt models fail loudly."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import pytest

from session_learning.cli import main
from tests.assets.conftest import EURUSD, PERMISSIVE, S1, S2, S3, losers_in
from tests.builders import frame


def production_files(registry_root: Path) -> dict[str, bytes]:
    """Every file that defines what is live: pointer, history and the live version's files."""
    model_dir = registry_root / EURUSD.slug
    files = {p.name: p.read_bytes() for p in model_dir.glob("*.json")}
    live = (model_dir / "production.json").read_text()
    for path in model_dir.glob("versions/*/*"):
        if path.parent.name in live:
            files[f"{path.parent.name}/{path.name}"] = path.read_bytes()
    return files


def step_events(result: dg.ExecuteInProcessResult, event_type: str) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == event_type}


def test_first_passing_candidate_is_deployed(deployed):
    p, result = deployed
    candidate = result.output_for_node("EURUSD_30T__candidate_model")
    deployed_model = result.output_for_node("EURUSD_30T__deployed_model")
    assert candidate["passed"] and deployed_model["promoted"]
    assert p.registry.production_version(EURUSD) == candidate["version"]
    checks = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.path == ["EURUSD_30T", "candidate_model"]
    }
    assert set(checks) == {
        "profit_factor_above_threshold",
        "max_drawdown_below_threshold",
        "win_rate_above_threshold",
        "enough_validation_trades",
        "candidate_beats_production",
    }
    assert all(c.passed for c in checks.values())
    # Each gate's result belongs to the session it judged, so the UI can show it per partition.
    assert {c.partition for c in checks.values()} == {S1}
    pf = checks["profit_factor_above_threshold"].metadata
    expected = candidate["metrics"]["profit_factor"]  # None stands for an infinite PF in JSON
    assert pf["threshold"].value == 0.0
    assert pf["value"].value == pytest.approx(math.inf if expected is None else expected)
    assert candidate["metrics"]["trades"] >= 10
    [materialized] = result.asset_materializations_for_node("EURUSD_30T__candidate_model")
    for plot in ("equity_curves", "calibration"):
        assert "](data:image/png;base64,iVBOR" in materialized.metadata[plot].value
    card = p.registry.card(EURUSD, candidate["version"])
    assert card["passed_gates"] and card["plan"]["trade_boosts"]
    assert card["validation_window"][1] <= "2025-03-04T08:00"


def test_rerunning_a_partition_makes_no_second_deployment(deployed):
    p, first = deployed
    history = p.registry.history(EURUSD)
    again = p.run(S1)
    assert again.success
    assert not again.output_for_node("EURUSD_30T__deployed_model")["promoted"]
    assert p.registry.history(EURUSD) == history and len(history) == 1


def test_blocked_candidate_leaves_production_byte_identical(deployed):
    p, first = deployed
    live = p.registry.production_version(EURUSD)
    before = production_files(p.settings.models_dir)
    p.configure(**{**PERMISSIVE, "min_profit_factor": 1000.0})
    result = p.run(S2)
    assert not result.success  # a failed blocking gate fails the candidate's step
    assert "EURUSD_30T__deployed_model" not in step_events(result, "STEP_SUCCESS")
    failed = {c.check_name: c for c in result.get_asset_check_evaluations() if not c.passed}
    assert set(failed) >= {"profit_factor_above_threshold"}
    meta = failed["profit_factor_above_threshold"].metadata
    assert meta["threshold"].value == 1000.0
    # The production model is what the candidate was compared against, on the same window.
    assert meta["production_value"].value is not None
    candidate = result.output_for_node("EURUSD_30T__candidate_model")
    assert candidate["production_version"] == live and not candidate["passed"]
    assert p.registry.production_version(EURUSD) == live
    assert production_files(p.settings.models_dir) == before


def test_untouched_model_is_skipped_not_retrained(deployed):
    p, _ = deployed
    result = p.run(S3)  # no trades in this session: nothing to learn
    assert result.success
    skipped = step_events(result, "STEP_SKIPPED")
    assert {"EURUSD_30T__candidate_model", "EURUSD_30T__deployed_model"} <= skipped
    assert not result.asset_materializations_for_node("EURUSD_30T__weighted_training_set")


def test_corrupt_production_model_fails_clearly_and_changes_nothing(deployed):
    p, _ = deployed
    live = p.registry.production_version(EURUSD)
    model_file = p.settings.models_dir / EURUSD.slug / "versions" / live / "model.cbm"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    before = production_files(p.settings.models_dir)
    result = p.run(S2)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "EURUSD_30T__candidate_model"
    assert "checksum" in failure.event_specific_data.error.to_string().lower()
    assert production_files(p.settings.models_dir) == before


def test_rollback_command_restores_the_earlier_version(deployed, monkeypatch, capsys):
    p, _ = deployed
    first = p.registry.production_version(EURUSD)
    # A second deployment, forced through the registry as an operator would after a review.
    p.configure(**PERMISSIVE)
    p.journal.add_trades(frame(losers_in(16)))
    p.run(S3)
    second = [v for v in p.registry.versions(EURUSD) if v != first][0]
    p.registry.promote(EURUSD, second, reason="manual", session=S3)
    assert p.registry.production_version(EURUSD) == second
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    assert main(["rollback", "EURUSD", "30T"]) == 0
    assert p.registry.production_version(EURUSD) == first
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"production {first}" in out and "rollback" in out


def test_weekly_refresh_retrains_a_model_the_plan_left_alone(deployed):
    from session_learning.jobs import full_retrain_config

    p, _ = deployed
    result = p.run(S3, run_config=full_retrain_config([EURUSD.slug]))  # no trades in S3
    # Trained and judged through the same gates (it may or may not beat production).
    [event] = result.asset_materializations_for_node("EURUSD_30T__weighted_training_set")
    assert "full retrain (weekly refresh)" in event.metadata["plan"].value
    assert result.output_for_node("EURUSD_30T__candidate_model")["production_version"]


def test_user_features_are_trained_on_and_used_live(pipeline):
    p = pipeline(**PERMISSIVE, extra_features={"*": ["tests.user_features:momentum_96"]})
    p.journal.add_trades(frame(losers_in(8)))
    result = p.run(S1)
    assert result.success
    version = p.registry.production_version(EURUSD)
    card = p.registry.card(EURUSD, version)
    assert card["feature_functions"] == ["tests.user_features:momentum_96"]
    assert "user_mom_96" in card["features"]
    tick = p.monitor("2025-03-05T10:00:00+00:00")
    assert tick.success  # the live scorer rebuilt the same features from the card


def test_a_user_feature_that_looks_ahead_is_refused(pipeline):
    p = pipeline(**PERMISSIVE, extra_features={"EURUSD_30T": ["tests.user_features:peeks_ahead"]})
    p.journal.add_trades(frame(losers_in(8)))
    result = p.run(S1)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "EURUSD_30T__weighted_training_set"
    assert "looks ahead" in failure.event_specific_data.error.to_string()
    assert p.registry.production_version(EURUSD) is None
