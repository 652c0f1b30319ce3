import numpy as np
import pandas as pd
import pytest

from session_learning.domain.stats import paired_bootstrap_expectancy

START = pd.Timestamp("2025-01-01", tz="UTC")
END = pd.Timestamp("2025-01-31", tz="UTC")
DAY = pd.Timedelta(days=1)


def trades(seed, n, mean, sd=1.0):
    """``n`` trades with R ~ N(mean, sd) at random times inside the window."""
    rng = np.random.default_rng(seed)
    times = START + pd.to_timedelta(np.sort(rng.uniform(0, 30, n)), unit="D")
    return rng.normal(mean, sd, n), pd.DatetimeIndex(times)


def compare(candidate, production, **kwargs):
    return paired_bootstrap_expectancy(*candidate, *production, START, END, DAY, **kwargs)


def test_identical_models_do_not_beat():
    r, times = trades(1, 300, 0.3)
    result = compare((r, times), (r, times))
    assert result.difference == 0.0
    assert result.lower == result.upper == 0.0
    assert not result.beats


def test_clearly_better_candidate_beats():
    result = compare(trades(1, 600, 0.5), trades(2, 600, 0.0))
    assert result.beats
    assert 0 < result.lower < result.difference < result.upper
    assert result.candidate_expectancy == pytest.approx(0.5, abs=0.1)
    assert result.production_expectancy == pytest.approx(0.0, abs=0.1)
    assert result.n_blocks == 30 and result.confidence == 0.90


def test_small_noisy_improvement_does_not_beat():
    result = compare(trades(3, 200, 0.05), trades(4, 200, 0.0))
    assert result.difference > 0  # a higher point estimate...
    assert not result.beats  # ...is not enough
    assert result.one_sided_lower < 0


def test_pairing_removes_shared_noise():
    """The same trades, each 0.1 R better: every paired resample shows exactly +0.1."""
    r, times = trades(5, 300, 0.0, sd=3.0)
    result = compare((r + 0.1, times), (r, times))
    assert result.beats
    assert result.lower == pytest.approx(0.1) and result.upper == pytest.approx(0.1)


def test_deterministic_for_a_seed():
    candidate, production = trades(6, 150, 0.2), trades(7, 150, 0.0)
    first = compare(candidate, production, seed=11)
    assert compare(candidate, production, seed=11) == first
    assert compare(candidate, production, seed=12).lower != first.lower


def test_without_production_trades():
    empty = (np.array([]), pd.DatetimeIndex([], tz="UTC"))
    result = compare(trades(8, 200, 0.8), empty)
    assert result.production_expectancy == 0.0
    assert result.difference == result.candidate_expectancy
    assert result.beats


def test_single_block_has_no_sampling_spread():
    """With one block every resample is the whole sample: the interval collapses to the point."""
    candidate = (
        np.array([1.0, -0.5, 2.0]),
        pd.DatetimeIndex(["2025-01-02", "2025-01-05", "2025-01-20"], tz="UTC"),
    )
    production = (np.array([0.5, -1.0]), pd.DatetimeIndex(["2025-01-03", "2025-01-10"], tz="UTC"))
    result = paired_bootstrap_expectancy(*candidate, *production, START, END, pd.Timedelta(days=30))
    assert result.n_blocks == 1
    assert result.candidate_expectancy == pytest.approx(2.5 / 3)
    assert result.production_expectancy == pytest.approx(-0.25)
    assert result.lower == result.upper == pytest.approx(2.5 / 3 + 0.25)
    assert result.beats


def test_blocks_and_window_edges():
    """Blocks round up to cover the window; trades outside [start, end) are ignored."""
    times = pd.DatetimeIndex(
        ["2024-12-31 23:00", "2025-01-01", "2025-01-30 23:59", "2025-01-31"], tz="UTC"
    )
    r = np.array([100.0, 1.0, 3.0, -100.0])
    result = paired_bootstrap_expectancy(
        r, times, r[:0], times[:0], START, END, pd.Timedelta(days=7), n_boot=50
    )
    assert result.n_blocks == 5  # 30 days in blocks of 7
    assert result.candidate_expectancy == 2.0


def test_naive_times_are_utc():
    r, times = trades(9, 100, 0.2)
    aware = compare((r, times), trades(10, 100, 0.0))
    naive = paired_bootstrap_expectancy(
        r, times.tz_localize(None), *trades(10, 100, 0.0), START.tz_localize(None), END, DAY
    )
    assert naive == aware


def test_interval_agrees_with_a_plain_loop():
    """A slow, obvious block bootstrap gives the same interval up to Monte Carlo error."""
    candidate, production = trades(11, 400, 0.15), trades(12, 400, 0.0)
    result = compare(candidate, production, n_boot=4000)

    rng = np.random.default_rng(99)
    blocks = [np.asarray((t - START) // DAY) for _, t in (candidate, production)]
    diffs = []
    for _ in range(4000):
        drawn = rng.integers(0, 30, 30)
        means = []
        for (r, _), block in zip((candidate, production), blocks, strict=True):
            picked = np.concatenate([r[block == b] for b in drawn])
            means.append(picked.mean() if len(picked) else 0.0)
        diffs.append(means[0] - means[1])
    lower, upper = np.quantile(diffs, [0.05, 0.95])
    spread = np.std(diffs)
    assert result.lower == pytest.approx(lower, abs=0.25 * spread)
    assert result.upper == pytest.approx(upper, abs=0.25 * spread)


@pytest.mark.parametrize(
    "kwargs",
    [{"confidence": 1.0}, {"confidence": 0.0}, {"n_boot": 0}, {"block": pd.Timedelta(0)}],
)
def test_invalid_arguments(kwargs):
    args = {"block": DAY} | kwargs
    r, times = trades(1, 10, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_expectancy(r, times, r, times, START, END, **args)


def test_invalid_inputs():
    r, times = trades(1, 10, 0.0)
    with pytest.raises(ValueError):  # one time per R multiple
        paired_bootstrap_expectancy(r, times, r[:5], times, START, END, DAY)
    with pytest.raises(ValueError):  # an empty window
        paired_bootstrap_expectancy(r, times, r, times, END, START, DAY)
