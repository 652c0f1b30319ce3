"""The replay report names the bars it was given: synthetic bars with their seed, or the files
(or other source) they came from, never "synthetic bars" for bars that were not."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from session_learning.replay import SyntheticBars, describe_bars, run_replay
from session_learning.reports.replay_report import (
    load_replay,
    render_markdown,
    summarize,
    write_report,
)
from session_learning.resources.market_data import FileMarketDataResource, write_bars
from tests.domain.test_replay import KEY, SMALL

STATIC_ONLY = replace(SMALL, arms=("static", "session_learning"))


def test_a_replay_on_bar_files_names_the_files_not_synthetic_bars(tmp_path):
    folder = tmp_path / "bars"
    write_bars(folder, KEY, SyntheticBars(11)(KEY, pd.Timestamp("2024-06-01T00:00Z"), SMALL.end))
    source = FileMarketDataResource(directory=str(folder))
    out = tmp_path / "replay"
    result = run_replay(STATIC_ONLY, source.bars, out, progress=False)
    paths = write_report(result, out)
    report = paths["report"].read_text()
    assert f"bar files in {folder}" in report
    assert "synthetic bars" not in report.lower()
    # Read back from its files, the replay still names its source.
    again = load_replay(out)
    assert render_markdown(summarize(again)) == report


def test_bar_sources_are_described_by_what_they_are(tmp_path):
    assert describe_bars(SyntheticBars(3)) == "synthetic bars (seed 3)"
    assert describe_bars(FileMarketDataResource(directory="/srv/bars").bars) == (
        "bar files in /srv/bars"
    )

    def my_bars(key, start, end):  # any callable with the BarSource signature
        return SyntheticBars(7)(key, start, end)

    assert describe_bars(my_bars).startswith("bars from ") and "my_bars" in describe_bars(my_bars)
