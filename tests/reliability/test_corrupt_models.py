"""The production model's ``model.cbm`` or ``card.json`` truncated or garbled: the learning run
and the monitor fail clearly, naming the file, and production stays byte-identical.

(A bit flipped in the middle of ``model.cbm`` during learning is
tests/assets/test_learning_assets.py::test_corrupt_production_model_fails_clearly_and_changes_nothing;
the registry's own checks are in tests/resources/test_registry.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.assets.conftest import EURUSD, S2
from tests.assets.test_learning_assets import production_files
from tests.reliability.conftest import failures, pipeline_at, succeeded


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    junk = b"\x00\xffnot json, not a model"  # same length: only the checksum can tell
    path.write_bytes(junk + path.read_bytes()[len(junk) :])


DAMAGE = {
    "truncated model.cbm": ("model.cbm", _truncate, "truncated or overwritten"),
    "garbled model.cbm": ("model.cbm", _garble, "fails its checksum"),
    "truncated card.json": ("card.json", _truncate, "is not valid JSON"),
    "garbled card.json": ("card.json", _garble, "is not valid JSON"),
}


def _damage_production(p, case: str) -> Path:
    name, damage, _ = DAMAGE[case]
    live = p.registry.production_version(EURUSD)
    path = p.settings.models_dir / EURUSD.slug / "versions" / live / name
    damage(path)
    return path


@pytest.mark.parametrize("case", list(DAMAGE))
def test_learning_run_refuses_a_damaged_production_model(deployed_home, case):
    p = pipeline_at(deployed_home)
    path = _damage_production(p, case)
    before = production_files(p.settings.models_dir)

    result = p.run(S2)

    assert not result.success
    failed = failures(result)
    # Neither the candidate's judgement nor the arena's shadow book uses the damaged model.
    assert set(failed) == {"EURUSD_30T__candidate_model", "EURUSD_30T__shadow_book"}, failed
    assert "CorruptModelError" in failed["EURUSD_30T__candidate_model"]
    assert str(path) in failed["EURUSD_30T__candidate_model"]
    assert DAMAGE[case][2] in failed["EURUSD_30T__candidate_model"]
    assert "EURUSD_30T__deployed_model" not in succeeded(result)
    assert production_files(p.settings.models_dir) == before


@pytest.mark.parametrize("case", list(DAMAGE))
def test_monitor_refuses_a_damaged_production_model(deployed_home, case):
    p = pipeline_at(deployed_home)
    path = _damage_production(p, case)
    before = production_files(p.settings.models_dir)
    signals_before = len(p.journal.open_signals())

    result = p.monitor("2025-03-05T10:00:00+00:00")

    assert not result.success
    failed = failures(result)
    assert set(failed) == {"live_signals"}, failed
    assert "production model(s) could not be loaded" in failed["live_signals"]
    assert str(path) in failed["live_signals"]
    assert len(p.journal.open_signals()) == signals_before  # no signal from a broken model
    assert production_files(p.settings.models_dir) == before
