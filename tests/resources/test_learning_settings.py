"""The learning_settings resource carries the domain's settings and defaults, no copies."""

from __future__ import annotations

from dataclasses import fields

import pytest

from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import LearningConfig
from session_learning.resources.learning_settings import (
    LearningSettingsResource,
    ModelWindowsConfig,
)


def test_defaults_are_the_domain_defaults():
    resource = LearningSettingsResource()
    assert resource.learning_config() == LearningConfig()
    assert resource.gate_thresholds() == GateThresholds()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("barrier_refit", "off"),
        ("refit_lift_tolerance", 0.05),
        ("max_loser_age_bars", 12),
        ("tp_atr", 3.0),
        ("training_bars", 1234),
    ],
)
def test_a_learning_setting_reaches_the_learning_config(name, value):
    config = LearningSettingsResource(**{name: value}).learning_config()
    assert getattr(config, name) == value
    assert getattr(LearningConfig(), name) != value  # the setting, not the default


def test_gate_settings_reach_the_thresholds_and_are_copies():
    resource = LearningSettingsResource(min_win_rate=0.5, min_trades={"30T": 7})
    gates = resource.gate_thresholds()
    assert gates.min_win_rate == 0.5 and gates.min_trades == {"30T": 7}
    gates.min_trades["30T"] = 8
    assert resource.min_trades == {"30T": 7}


def test_every_shared_field_has_the_domain_default():
    resource = LearningSettingsResource()
    for source in (LearningConfig(), GateThresholds()):
        shared = [f.name for f in fields(source) if f.name in LearningSettingsResource.model_fields]
        assert shared
        for name in shared:
            assert getattr(resource, name) == getattr(source, name), name


def test_an_unknown_barrier_refit_is_one_clear_error():
    with pytest.raises(ValueError, match="barrier_refit must be one of judged, fitted, off"):
        LearningSettingsResource(barrier_refit="median")


def test_model_windows_still_override_the_shared_ones():
    resource = LearningSettingsResource(
        barrier_refit="fitted",
        model_windows={"EURUSD_30T": ModelWindowsConfig(training_bars=500, validation_bars=90)},
    )
    config = resource.learning_config(ModelKey("EURUSD", "30T"))
    assert config.training_bars == 500 and config.validation_bars["30T"] == 90
    assert config.barrier_refit == "fitted"
