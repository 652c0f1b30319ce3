"""The refit comparison reads finished replays back and compares them: identical runs are
identical, a run that earned 1 R more on every trade is measurably higher."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from session_learning.domain.keys import ModelKey
from session_learning.domain.training import LearningConfig
from session_learning.replay import CANDIDATE_COLUMNS, SESSION_COLUMNS, ArmRun, ReplayConfig
from session_learning.reports.refit_comparison import compare, main

KEY = ModelKey("EURUSD", "15T")


def _replay(folder, mode: str, bonus: float) -> None:
    config = ReplayConfig(
        models=(KEY,),
        start="2025-01-06",
        end="2025-02-03",
        arms=("session_learning",),
        learning=LearningConfig(barrier_refit=mode),
    )
    exits = pd.date_range("2025-01-06 10:00", periods=60, freq="11h", tz="UTC")
    r = [(1.5 if i % 3 == 0 else -1.0) + bonus for i in range(len(exits))]
    trades = pd.DataFrame(
        {
            "trade_id": [f"t{i}" for i in range(len(exits))],
            "entry_time": exits - pd.Timedelta(hours=1),
            "exit_time": exits,
            "r_multiple": r,
        }
    )
    candidates = pd.DataFrame(
        [
            {
                **{c: "" for c in CANDIDATE_COLUMNS},
                "reasons": "struggling: focused retrain, TP/SL re-fitted to volatility",
                "validation_trades": 12,
                "win_rate": 0.25,
                "profit_factor": 0.8,
                "expectancy_r": -0.1,
                "passed": False,
                "failed_gates": "enough_validation_trades",
                "deployed": False,
            },
            {**{c: "" for c in CANDIDATE_COLUMNS}, "passed": True, "deployed": True},
        ]
    )
    arm = folder / "session_learning"
    arm.mkdir(parents=True)
    run = ArmRun(
        "session_learning", trades, candidates, pd.DataFrame(columns=SESSION_COLUMNS), 0, 0
    )
    run.save(arm, config)


def test_identical_replays_compare_as_identical_and_a_better_one_is_higher(tmp_path):
    for name, mode, bonus in [
        ("off", "off", 0.0),
        ("again", "off", 0.0),
        ("fitted", "fitted", 1.0),
    ]:
        _replay(tmp_path / name, mode, bonus)
    summary = compare({n: tmp_path / n for n in ("off", "again", "fitted")})
    assert summary["variants"] == {"off": "off", "again": "off", "fitted": "fitted"}
    arm = summary["arms"]["session_learning"]
    off = arm["variants"]["off"]
    assert off["trades"] == 60 and off["refit_candidates"] == 1 and off["passed"] == 0
    assert off["median_validation_trades"] == 12
    assert off["failed_gate"] == {"enough_validation_trades": 1}
    # 20 trades at +1.5 R and 40 at -1 R: expectancy -1/6 R, total -10 R.
    assert off["expectancy_r"] == pytest.approx(-1 / 6) and off["total_r"] == pytest.approx(-10)
    verdicts = {(c["a"], c["b"]): c for c in arm["comparisons"]}
    assert verdicts[("off", "again")]["verdict"] == "identical trades"
    better = verdicts[("off", "fitted")]
    assert better["verdict"] == "fitted higher"
    assert better["difference_r"] == pytest.approx(-1.0)
    assert better["total_difference_r"] == pytest.approx(-60.0)
    assert better["total_ci"][1] < 0


def test_the_command_writes_report_and_summary(tmp_path, capsys):
    for name, mode in [("off", "off"), ("judged", "judged")]:
        _replay(tmp_path / name, mode, 0.0)
    notes = tmp_path / "notes.md"
    notes.write_text("## What it says\n")
    out = tmp_path / "out"
    main(
        [
            f"off={tmp_path / 'off'}",
            f"judged={tmp_path / 'judged'}",
            "--out",
            str(out),
            "--notes",
            str(notes),
        ]
    )
    report = (out / "report.md").read_text()
    assert "`off` = off, `judged` = judged" in report and report.endswith("## What it says\n")
    assert json.loads((out / "summary.json").read_text())["arms"]["session_learning"]
    with pytest.raises(SystemExit):
        main([f"off={tmp_path / 'missing'}", "--out", str(out)])
    assert "expected name=folder of a finished replay" in capsys.readouterr().err
