"""``session-learning replay --source files:DIR``: a user's own history replayed from the
command line, validated by the same resource and rules as the assets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from session_learning.cli import main
from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.replay import ReplayError, ValidatedBars, bar_source

KEY = ModelKey("EURUSD", "1H")
FROM, TO = "2024-07-02T08:00:00Z", "2024-07-02T20:00:00Z"  # three sessions of a Tuesday
# Validation of 1H is 1400 bars: with warm-up and purge about five months of history.
HISTORY_START = pd.Timestamp("2024-01-01", tz="UTC")
QUICK = ["--training-bars", "600", "--iterations", "15", "--workers", "1", "--no-progress"]


def write_export(folder: Path, bars: pd.DataFrame) -> Path:
    """Bars as many exports write them: Date column, Open/High/Low/Close/Volume."""
    folder.mkdir(parents=True, exist_ok=True)
    table = bars.rename(columns=str.capitalize).reset_index(names="Date")
    table["Date"] = [stamp.isoformat() for stamp in bars.index]
    path = folder / f"{KEY.slug}.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture
def history() -> pd.DataFrame:
    return generate_bars(KEY.symbol, KEY.timeframe, HISTORY_START, pd.Timestamp(TO), seed=11)


def replay(tmp_path: Path, source: str, *extra: str) -> int:
    return main(
        [
            "replay",
            "--source",
            source,
            "--symbols",
            KEY.symbol,
            "--timeframes",
            KEY.timeframe,
            "--from",
            FROM,
            "--to",
            TO,
            "--arms",
            "static,session_learning",
            "--out",
            str(tmp_path / "out"),
            *QUICK,
            *extra,
        ]
    )


def test_a_files_folder_is_replayed_from_the_command_line(tmp_path, history, capsys):
    folder = tmp_path / "bars"
    write_export(folder, history)
    assert replay(tmp_path, f"files:{folder}") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["source"] == f"files:{folder}"
    assert summary["config"]["sessions"] == 3
    assert "by_regime" not in summary  # regimes are known only for synthetic bars
    # Each arm trained its first model on the file's bars (a failure would be recorded).
    for arm in ("static", "session_learning"):
        candidates = pd.read_csv(tmp_path / "out" / arm / "candidates.csv")
        assert len(candidates) >= 1
        assert candidates["error"].isna().all(), candidates["error"].tolist()
    assert "files:" in capsys.readouterr().err


def test_the_source_reads_the_files_bars_validated(tmp_path, history):
    folder = tmp_path / "bars"
    write_export(folder, history)
    source = bar_source(f"files:{folder}", 7)
    start, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-08", tz="UTC")
    pd.testing.assert_frame_equal(
        source(KEY, start, end),
        history.loc[start : end - KEY.bar],
        check_freq=False,
        check_index_type=False,
    )


def test_bad_bars_in_the_folder_stop_the_replay_with_the_reason(tmp_path, history, capsys):
    bad = history.copy()
    row = bad.index.get_loc(pd.Timestamp("2024-06-12 10:00", tz="UTC"))
    bad.iloc[row, bad.columns.get_loc("high")] = bad["low"].iloc[row] - 0.01
    folder = tmp_path / "bars"
    write_export(folder, bad)
    assert replay(tmp_path, f"files:{folder}") == 2
    err = capsys.readouterr().err
    assert "error: EURUSD 1H:" in err and "2024-06-12T10:00:00+00:00" in err
    assert not (tmp_path / "out").exists()


def test_too_short_a_history_is_refused_before_any_training(tmp_path, history, capsys):
    folder = tmp_path / "bars"
    write_export(folder, history.loc["2024-06-01":])
    assert replay(tmp_path, f"files:{folder}") == 2
    err = capsys.readouterr().err
    assert "EURUSD 1H: the source has" in err and "bars before the range's start" in err
    assert "needs at least 2248" in err and "--from" in err


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("files:", "use synthetic, files:DIR or polygon"),
        ("csv", "use synthetic, files:DIR or polygon"),
        ("files:/nonexistent/bars", "/nonexistent/bars is not a folder of bar files"),
    ],
)
def test_an_unusable_source_is_refused(source, message):
    with pytest.raises(ReplayError, match=message):
        bar_source(source, 7)


def test_polygon_needs_its_key(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    with pytest.raises(ReplayError, match="POLYGON_API_KEY"):
        bar_source("polygon", 7)
    monkeypatch.setenv("POLYGON_API_KEY", "k")
    monkeypatch.setenv("SESSION_LEARNING_POLYGON_BASE_URL", "http://127.0.0.1:9/api")
    source = bar_source("polygon", 7)
    assert isinstance(source, ValidatedBars)
    assert source.resource.base_url == "http://127.0.0.1:9/api"
