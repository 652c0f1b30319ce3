"""The metadata plots: valid, deterministic PNGs of the promised size, also for empty inputs."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from session_learning.reports.plots import (
    calibration_png,
    equity_curves_png,
    png_markdown,
    reliability_table,
    session_win_rate_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def equity(values: list[float], start: str = "2025-03-01T00:00:00Z") -> pd.Series:
    index = pd.date_range(start, periods=len(values), freq="90min", name="exit_time")
    return pd.Series(values, index=index, name="equity", dtype=float)


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (640, 360)


CANDIDATE = equity([1.01, 1.0, 1.02, 1.03, 1.025])
PRODUCTION = equity([0.995, 1.0, 0.99, 1.005])
rng = np.random.default_rng(0)
PROBA = rng.dirichlet([2, 2, 2], size=400)
LABELS = rng.choice([-1, 0, 1], size=400)
SESSIONS = pd.DataFrame(
    {
        "session_start": pd.date_range("2025-03-03", periods=6, freq="4h", tz="UTC"),
        "win_rate": [0.5, 0.4, 0.45, 0.6, 0.3, 0.55],
    }
)

CASES = {
    "equity": lambda: equity_curves_png(CANDIDATE, PRODUCTION, "EURUSD_30T candidate"),
    "equity without production": lambda: equity_curves_png(CANDIDATE, None, "first model"),
    "equity, no trades": lambda: equity_curves_png(equity([]), None, "no trades"),
    "equity, production only": lambda: equity_curves_png(equity([]), PRODUCTION, "t"),
    "calibration": lambda: calibration_png(PROBA, LABELS),
    "calibration, empty": lambda: calibration_png(np.empty((0, 3)), np.empty(0)),
    "win rate": lambda: session_win_rate_png(SESSIONS, threshold=0.42),
    "win rate, empty": lambda: session_win_rate_png(SESSIONS.iloc[:0]),
}


@pytest.mark.parametrize("case", CASES)
def test_plots_are_deterministic_pngs(case):
    first = CASES[case]()
    assert_png(first)
    assert CASES[case]() == first


def test_different_inputs_give_different_pictures():
    with_production = equity_curves_png(CANDIDATE, PRODUCTION, "t")
    assert with_production != equity_curves_png(CANDIDATE, None, "t")


def test_naive_and_utc_indexes_draw_the_same_curve():
    naive = CANDIDATE.copy()
    naive.index = naive.index.tz_localize(None)
    assert equity_curves_png(naive, None, "t") == equity_curves_png(CANDIDATE, None, "t")


def test_reliability_table_counts_hits_of_the_top_direction():
    proba = np.array(
        [
            [0.10, 0.15, 0.75],  # long at 0.75, label long: hit
            [0.72, 0.18, 0.10],  # short at 0.72, label long: miss
            [0.05, 0.90, 0.05],  # long == short: no direction, left out
            [0.30, 0.05, 0.65],  # long at 0.65, label flat: miss
        ]
    )
    table = reliability_table(proba, np.array([1, 1, 0, 0]))
    assert table["count"].sum() == 3
    row = table.set_index("bin_low").loc[0.7]
    assert row["count"] == 2 and row["hit_rate"] == 0.5
    assert row["mean_probability"] == pytest.approx((0.75 + 0.72) / 2)
    assert table.set_index("bin_low").loc[0.6, "hit_rate"] == 0.0


def test_a_probability_of_one_falls_in_the_last_bin():
    table = reliability_table(np.array([[0.0, 0.0, 1.0]]), np.array([1]))
    assert table["bin_high"].tolist() == [1.0] and table["hit_rate"].tolist() == [1.0]


def test_calibration_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="labels"):
        calibration_png(PROBA, LABELS[:-1])


def test_png_markdown_is_an_image_with_a_data_uri():
    png = calibration_png(PROBA, LABELS)
    text = png_markdown(png, "calibration [validation]")
    match = re.fullmatch(r"!\[(.*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert match is not None
    assert match.group(1) == "calibration \\[validation\\]"
    assert base64.b64decode(match.group(2)) == png
