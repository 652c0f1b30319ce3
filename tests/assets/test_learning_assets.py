"""Training, gates and deployment through Dagster: blocked candidates leave production
byte-identical, passing ones are promoted once, corrupt models fail loudly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from session_learning.cli import main
from session_learning.resources.registry import RegistryError
from tests.assets.conftest import EURUSD, PERMISSIVE, S1, S2, S3, losers_in
from tests.builders import frame, many
from tests.judgements import deploy_losing_variant, redeploy_with_rule


def production_files(registry_root: Path) -> dict[str, bytes]:
    """Every file that defines what is live: pointer, history and the live version's files."""
    model_dir = registry_root / EURUSD.slug
    # The arena's own state (arena.json) moves every session; it does not say what is live.
    files = {p.name: p.read_bytes() for p in model_dir.glob("*.json") if p.name != "arena.json"}
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
    assert card["plan"]["trade_boosts"]
    verdict = p.registry.judgement(EURUSD, candidate["version"])
    assert verdict["decision"] == "passed" and verdict["partition"] == S1
    assert verdict["baseline_version"] is None and verdict["card_sha256"] == card["card_sha256"]
    assert sorted(g["name"] for g in verdict["gates"]) == sorted(checks)
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
    failures = {e.step_key: e for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    # The candidate cannot be judged against it, nor can the arena mark it as champion.
    assert set(failures) == {"EURUSD_30T__candidate_model", "EURUSD_30T__shadow_book"}
    for failure in failures.values():
        assert "checksum" in failure.event_specific_data.error.to_string().lower()
    assert production_files(p.settings.models_dir) == before


def test_status_and_models_flag_a_production_model_that_fails_its_checksum(
    deployed, monkeypatch, capsys
):
    p, _ = deployed
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    monkeypatch.setenv("SESSION_LEARNING_MODELS", "EURUSD:30T")
    monkeypatch.delenv("SESSION_LEARNING_JOURNAL_URL", raising=False)
    assert main(["status"]) == 0 and main(["models"]) == 0
    assert "UNUSABLE" not in capsys.readouterr().out
    live = p.registry.production_version(EURUSD)
    model_file = p.settings.models_dir / EURUSD.slug / "versions" / live / "model.cbm"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    for command in ("status", "models"):
        assert main([command]) == 1
        captured = capsys.readouterr()
        assert "PRODUCTION MODEL UNUSABLE" in captured.out and "fails its checksum" in captured.out
        assert "cannot be loaded" in captured.err
        assert "`session-learning rollback EURUSD 30T`" in captured.out  # the command, not the API


def test_rollback_without_an_earlier_deployment_names_the_cli_flag(deployed, monkeypatch, capsys):
    p, _ = deployed
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    assert main(["rollback", "EURUSD", "30T"]) != 0
    err = capsys.readouterr().err
    assert "session-learning rollback EURUSD 30T --to VERSION" in err


def test_rollback_command_restores_the_earlier_version(deployed, monkeypatch, capsys):
    p, _ = deployed
    first = p.registry.production_version(EURUSD)
    second = redeploy_with_rule(p.registry, EURUSD, min_confidence=0.5)  # a second deployment
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


USER_FEATURE = """
import pandas as pd


def momentum(bars: pd.DataFrame) -> pd.DataFrame:
    close = bars["close"]
    return pd.DataFrame({"user_mom": close / close.shift(WINDOW) - 1.0}, index=bars.index)
"""


def test_a_live_model_whose_feature_code_changed_is_refused(pipeline, tmp_path, monkeypatch):
    """The card names the user's feature function and seals the sha256 of its module: when
    that code changes after judgement, the live model stops signalling and says why."""
    code = tmp_path / "code"
    code.mkdir()
    module = code / "desk_features_under_test.py"
    module.write_text(USER_FEATURE.replace("WINDOW", "96"))
    monkeypatch.syspath_prepend(str(code))
    spec = "desk_features_under_test:momentum"
    p = pipeline(**PERMISSIVE, extra_features={"*": [spec]})
    p.journal.add_trades(frame(losers_in(8)))
    assert p.run(S1).success
    version = p.registry.production_version(EURUSD)
    card = p.registry.card(EURUSD, version)
    assert list(card["feature_sources"]) == [spec]
    assert p.monitor("2025-03-05T10:00:00+00:00").success

    module.write_text(USER_FEATURE.replace("WINDOW", "24"))  # same name, other behaviour
    before = production_files(p.settings.models_dir)
    tick = p.monitor("2025-03-05T14:00:00+00:00")
    assert not tick.success
    [failure] = [e for e in tick.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert f"feature function(s) ['{spec}'] changed since model {version}" in message
    assert "retrain" in message
    assert production_files(p.settings.models_dir) == before
    assert not (p.journal.open_signals()["bar_time"] >= "2025-03-05T10:00").any()


def test_a_user_feature_that_looks_ahead_is_refused(pipeline):
    p = pipeline(**PERMISSIVE, extra_features={"EURUSD_30T": ["tests.user_features:peeks_ahead"]})
    p.journal.add_trades(frame(losers_in(8)))
    result = p.run(S1)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "EURUSD_30T__weighted_training_set"
    assert "looks ahead" in failure.event_specific_data.error.to_string()
    assert p.registry.production_version(EURUSD) is None


# ---- the deployment guarantee across runs ----------------------------------------------------

DEPLOYED = "EURUSD_30T/deployed_model"


@pytest.fixture
def rejected(deployed):
    """S1's candidate is live; S2's candidate was judged and failed profit_factor_above_threshold
    (so the session's run stopped before ``deployed_model``)."""
    p, _ = deployed
    p.configure(**{**PERMISSIVE, "min_profit_factor": 1000.0})
    result = p.run(S2)
    assert not result.success
    candidate = result.output_for_node("EURUSD_30T__candidate_model")
    assert not candidate["passed"]
    assert candidate["version"] != p.registry.production_version(EURUSD)
    return p, candidate["version"]


def materialize_alone(p, asset: str, partition: str) -> dg.ExecuteInProcessResult:
    """``asset`` alone for one partition, as the UI's Materialize does (its upstream outputs
    are read back from the value store)."""
    return dg.materialize(
        p.defs.assets,
        selection=[asset],
        partition_key=partition,
        instance=p.instance,
        resources=p.defs.resources,
        raise_on_error=False,
    )


def deploy_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.asset_materializations_for_node("EURUSD_30T__deployed_model")
    return {k: v.value for k, v in event.metadata.items()}


def test_deploy_only_run_after_a_rejection_changes_nothing(rejected):
    p, version = rejected
    live = p.registry.production_version(EURUSD)
    before = production_files(p.settings.models_dir)

    result = materialize_alone(p, DEPLOYED, S2)

    assert result.success  # a decision, not an error
    output = result.output_for_node("EURUSD_30T__deployed_model")
    assert output == {**output, "version": version, "promoted": False, "passed": False}
    meta = deploy_metadata(result)
    assert meta["deployed"] is False
    summary = meta["summary"]
    assert summary.startswith(f"not deployed: EURUSD 30T version {version} did not pass")
    assert "failed profit_factor_above_threshold" in summary and f"stays {live}" in summary
    assert p.registry.production_version(EURUSD) == live
    assert production_files(p.settings.models_dir) == before


def test_deploy_only_cli_run_after_a_rejection_changes_nothing(rejected, tmp_path):
    """The same through `dagster asset materialize`: its own processes, the multiprocess
    executor and the asset job, exactly like the UI's Materialize button."""
    p, version = rejected
    live = p.registry.production_version(EURUSD)
    before = production_files(p.settings.models_dir)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEARNING_")},
        "DAGSTER_HOME": str(dagster_home),
        "SESSION_LEARNING_HOME": str(p.settings.home),
        "SESSION_LEARNING_MODELS": "EURUSD:30T",
        "SESSION_LEARNING_MARKET_DATA": "synthetic",
    }
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "session_learning.definitions",
        "-a",
        "defs",
        "--select",
        DEPLOYED,
        "--partition",
        S2,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "RUN_SUCCESS" in output
    assert f"not deployed: EURUSD 30T version {version} did not pass its gates" in output
    assert p.registry.production_version(EURUSD) == live
    assert production_files(p.settings.models_dir) == before


def test_backfill_of_deployed_model_alone_deploys_nothing_new(rejected):
    """A backfill launches one run of the selected asset per partition: the session that
    deployed its candidate already is not deployed twice, the rejected one not at all."""
    p, version = rejected
    live = p.registry.production_version(EURUSD)
    before = production_files(p.settings.models_dir)
    results = {session: materialize_alone(p, DEPLOYED, session) for session in (S1, S2)}
    assert all(r.success for r in results.values())
    first, second = (deploy_metadata(results[s]) for s in (S1, S2))
    assert first["summary"] == f"{live} was already deployed for this session: no second deployment"
    assert first["deployed"] is False and second["deployed"] is False
    assert "did not pass its gates" in second["summary"]
    assert production_files(p.settings.models_dir) == before


def test_after_the_first_deployment_gates_alone_deploy_nothing(deployed):
    """Once a model has traded, a candidate that passed every gate on its validation window is
    not deployed, whichever way ``deployed_model`` runs: only the arena's forward evidence
    promotes (the registry refuses anything else)."""
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that the S3 candidate beats production
    live = p.registry.production_version(EURUSD)
    p.journal.add_trades(frame(losers_in(16)))
    upstream = ["session_trades", "problem_report", "EURUSD_30T/weighted_training_set"]
    judged = p.run(S3, assets=[*upstream, "EURUSD_30T/candidate_model"])
    assert judged.success
    candidate = judged.output_for_node("EURUSD_30T__candidate_model")
    assert candidate["passed"]
    before = production_files(p.settings.models_dir)

    result = materialize_alone(p, DEPLOYED, S3)

    assert result.success  # a decision, not an error
    assert deploy_metadata(result)["deployed"] is False
    assert p.registry.production_version(EURUSD) == live
    assert production_files(p.settings.models_dir) == before
    with pytest.raises(RegistryError, match="only the arena's forward evidence"):
        p.registry.promote(EURUSD, candidate["version"], reason="by hand", session=S3)
    assert production_files(p.settings.models_dir) == before


def test_rollback_command_refuses_a_version_that_was_never_live(rejected, monkeypatch, capsys):
    p, version = rejected
    live = p.registry.production_version(EURUSD)
    before = production_files(p.settings.models_dir)
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))

    assert main(["rollback", "EURUSD", "30T", "--to", version]) == 2
    err = capsys.readouterr().err
    assert f"{version} was never live" in err and '--force --reason "..."' in err
    assert main(["rollback", "EURUSD", "30T", "--to", version, "--force"]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert production_files(p.settings.models_dir) == before

    reason = "desk review: the profit-factor gate was misconfigured"
    assert main(["rollback", "EURUSD", "30T", "--to", version, "--force", "--reason", reason]) == 0
    assert "(forced)" in capsys.readouterr().out
    last = p.registry.history(EURUSD)[-1]
    assert last["version"] == version and last["forced"] is True
    assert last["reason"] == f"rollback from {live} (forced: {reason})"


def test_a_live_card_edited_after_judgement_stops_signals_and_changes_nothing(deployed):
    p, _ = deployed
    live = p.registry.production_version(EURUSD)
    card_path = p.settings.models_dir / EURUSD.slug / "versions" / live / "card.json"
    sealed = card_path.read_bytes()
    card = json.loads(sealed)
    card["trading_rule"]["min_confidence"] = 0.0  # "trade every bar", by hand
    card_path.write_text(json.dumps(card))
    before = production_files(p.settings.models_dir)

    tick = p.monitor("2025-03-05T10:00:00+00:00")

    assert not tick.success
    [failure] = [e for e in tick.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert "card.json changed after the version was saved" in message and live in message
    assert p.journal.open_signals().empty
    assert production_files(p.settings.models_dir) == before
    # update_card cannot do it either: behaviour is sealed, only annotations may be added.
    card_path.write_bytes(sealed)
    with pytest.raises(RegistryError, match=r"\['trading_rule'\] were sealed"):
        p.registry.update_card(EURUSD, live, trading_rule={"min_confidence": 0.0})
    assert card_path.read_bytes() == sealed
    assert p.monitor("2025-03-05T10:00:00+00:00").success


def test_the_training_set_searches_loser_patterns_outside_its_held_out_span(pipeline):
    p = pipeline(**PERMISSIVE)
    inside = many(
        2, 10, entry_time="2025-02-25T14:00:00+00:00", exit_time="2025-02-25T15:00:00+00:00"
    )
    before = many(
        2, 10, entry_time="2025-01-21T14:00:00+00:00", exit_time="2025-01-21T15:00:00+00:00"
    )
    p.journal.add_trades(frame(losers_in(8) + inside + before))
    result = p.run(S1)
    assert result.success
    [event] = result.asset_materializations_for_node("EURUSD_30T__weighted_training_set")
    held_start, held_end = event.metadata["held_out"].value.split(" .. ")
    assert pd.Timestamp(held_start) < pd.Timestamp("2025-02-25T14:00Z") < pd.Timestamp(held_end)
    assert pd.Timestamp(held_start) - pd.Timedelta(days=28) < pd.Timestamp("2025-01-21T15:00Z")
    # The session's 4 trades and the 12 before the span are searched; the 12 inside are not.
    assert event.metadata["loser_pattern_trades"].value.startswith("16 used, 12 held out")
