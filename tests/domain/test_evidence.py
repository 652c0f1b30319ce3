"""Forward evidence: the promotion e-process and the confidence sequence, checked by simulation."""

import math

import numpy as np
import pytest

from session_learning.domain.arena_simulation import (
    BARS_PER_SESSION,
    confidence_sequence_misses,
    difference_pool,
    promotion_sessions,
)
from session_learning.domain.evidence import (
    EvidenceSettings,
    EvidenceState,
    barrier_span_r,
    difference_bound_r,
    interval_bets,
    log_e_process,
    log_interval_wealth,
    paired_differences,
)

ALPHA = 0.05
COST = 0.005
BOUND = 6.0
STREAMS = 1000
SESSIONS = 500


@pytest.mark.parametrize(
    "mean, skew",
    [(0.0, -1), (0.0, 1), (COST, -1), (COST, 1)],
    ids=["zero-left-skew", "zero-right-skew", "at-cost-left-skew", "at-cost-right-skew"],
)
def test_false_promotion_rate_stays_below_alpha_over_500_sessions(mean, skew):
    # 1,000 null streams of 500 sessions x 16 paired bars: heavy-tailed, skewed differences whose
    # mean is exactly zero or exactly the switching cost. One test at 1 / alpha (the arena uses
    # the stricter K / alpha).
    rng = np.random.default_rng(11 if skew < 0 else 12)
    pool = difference_pool(rng, mean, skew=skew)
    assert pool.mean() == pytest.approx(mean, abs=1e-12)
    assert np.abs(pool).max() <= BOUND
    first = promotion_sessions(
        pool,
        streams=STREAMS,
        sessions=SESSIONS,
        threshold=1 / ALPHA,
        switching_cost_r=COST,
        seed=3,
    )
    rate = float(np.isfinite(first).mean())
    print(f"\nfalse promotions, mean {mean:+.3f}, skew {skew:+d}: {rate:.3f}")
    assert rate <= ALPHA


def test_a_null_just_above_the_cost_is_not_rejected_as_often_as_one_far_above():
    # Sanity of direction: the rate grows with the true edge, so the test is not trivially quiet.
    rng = np.random.default_rng(5)
    rates = [
        np.isfinite(
            promotion_sessions(
                difference_pool(rng, mean),
                streams=200,
                sessions=200,
                threshold=1 / ALPHA,
                switching_cost_r=COST,
                seed=4,
            )
        ).mean()
        for mean in (COST, 0.05, 0.1)
    ]
    assert rates[0] < rates[1] <= rates[2]
    assert rates[2] > 0.9


def test_confidence_sequence_covers_the_true_mean_at_every_time():
    # The sequence misses the mean at some time exactly when K+ or K- at the true mean reaches
    # 2 / alpha at some bar; over 1,000 streams of 8,000 bars that must happen in <= alpha.
    rng = np.random.default_rng(21)
    true_mean = 0.03
    pool = difference_pool(rng, true_mean, skew=-1)
    rate = confidence_sequence_misses(
        pool, streams=STREAMS, sessions=SESSIONS, alpha=ALPHA, bound_r=BOUND, seed=2
    )
    print(f"\nconfidence sequence misses: {rate:.3f}")
    assert rate <= ALPHA
    # A mean 0.1 R away is excluded in most streams: the sequence is not trivially wide.
    x = pool[rng.integers(0, len(pool), (20, SESSIONS * BARS_PER_SESSION))]
    far_up, _ = log_interval_wealth(x, true_mean - 0.1, BOUND)
    assert (far_up.max(axis=1) >= math.log(2 / ALPHA)).mean() >= 0.8


def test_a_known_edge_is_promoted_and_the_median_time_is_printed():
    rng = np.random.default_rng(31)
    challengers = 3
    first = promotion_sessions(
        difference_pool(rng, 0.1),
        streams=200,
        sessions=SESSIONS,
        threshold=challengers / ALPHA,
        switching_cost_r=COST,
        seed=6,
    )
    median = float(np.median(first))
    print(f"\nedge 0.1 R/bar, threshold {challengers / ALPHA:.0f}: median {median:.0f} sessions")
    assert np.isfinite(first).mean() >= 0.99
    assert median <= 60


def test_session_updates_equal_one_pass_over_all_bars():
    rng = np.random.default_rng(41)
    x = difference_pool(rng, 0.05, size=5000)[:640]
    state = EvidenceState(EvidenceSettings(alpha=ALPHA, switching_cost_r=COST, bound_r=BOUND))
    for session in x.reshape(-1, BARS_PER_SESSION):
        state = state.update(session, trades=2)
    log_e, _ = log_e_process(x, COST, BOUND)
    assert math.log(state.e_value()) == pytest.approx(log_e[-1], rel=1e-9)
    summary = state.summary("champion", threshold=60)
    assert summary.bars == 640 and summary.trades == 80
    assert summary.mean_r == pytest.approx(x.mean())
    assert summary.passed == (summary.e_value >= 60)


def test_confidence_bounds_are_the_grid_points_the_wealth_excluded():
    rng = np.random.default_rng(43)
    x = difference_pool(rng, 0.08, size=20_000)[:3200]
    state = EvidenceState(EvidenceSettings(alpha=ALPHA, switching_cost_r=COST, bound_r=BOUND))
    for session in x.reshape(-1, BARS_PER_SESSION):
        state = state.update(session)
    grid = state.grid()
    cut = math.log(2 / ALPHA)
    lower = state.lower_r
    assert np.isfinite(lower) and lower < x.mean() < state.upper_r
    up_at_lower, _ = log_interval_wealth(x, lower, BOUND)
    assert up_at_lower.max() >= cut
    above = grid[np.searchsorted(grid, lower) + 1]
    up_above, _ = log_interval_wealth(x, above, BOUND)
    assert up_above.max() < cut
    # The interval only shrinks as sessions arrive (a running intersection).
    more = state.update(x[:BARS_PER_SESSION])
    assert more.lower_r >= state.lower_r and more.upper_r <= state.upper_r


def test_confidence_sequence_of_the_session_state_covers_the_mean():
    rng = np.random.default_rng(47)
    true_mean = -0.02
    pool = difference_pool(rng, true_mean, skew=1)
    settings = EvidenceSettings(alpha=ALPHA, switching_cost_r=COST, bound_r=BOUND)
    covered = 0
    widths = []
    for _ in range(40):
        state = EvidenceState(settings)
        for session in pool[rng.integers(0, len(pool), (150, BARS_PER_SESSION))]:
            state = state.update(session)
        covered += state.lower_r <= true_mean <= state.upper_r
        widths.append(state.upper_r - state.lower_r)
    assert covered >= 38
    assert np.median(widths) < 0.3


def test_paired_differences_clip_at_the_bound_and_count_the_clipped_bars():
    span = barrier_span_r(2.0, 1.0)
    assert span == 3.0
    bound = difference_bound_r(span, span)
    assert bound == 6.0
    diff, clipped = paired_differences(
        np.array([0.5, 4.0, -3.5]), np.array([0.0, -3.0, 3.0]), bound
    )
    np.testing.assert_allclose(diff, [0.5, 6.0, -6.0])
    assert clipped == 2
    diff, clipped = paired_differences(np.array([0.25, -0.5]), None, difference_bound_r(span))
    np.testing.assert_allclose(diff, [0.25, -0.5])
    assert clipped == 0


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match="one value per bar"):
        paired_differences(np.zeros(3), np.zeros(4), BOUND)
    with pytest.raises(ValueError, match="first at position 1"):
        paired_differences(np.array([0.0, np.nan]), np.zeros(2), BOUND)
    with pytest.raises(ValueError, match="clip them"):
        EvidenceState().update(np.array([7.0]))
    with pytest.raises(ValueError, match="switching_cost_r"):
        EvidenceSettings(switching_cost_r=7.0)
    with pytest.raises(ValueError, match="alpha"):
        EvidenceSettings(alpha=1.5)


def test_wealth_never_goes_negative_on_the_worst_bars():
    worst = np.array([-BOUND, BOUND, -BOUND, -BOUND])
    log_e, _ = log_e_process(worst, COST, BOUND)
    assert np.isfinite(log_e).all()
    assert interval_bets(BOUND).max() * 2 * BOUND < 1


def test_state_survives_storage_between_sessions():
    import json

    rng = np.random.default_rng(51)
    x = difference_pool(rng, 0.05, size=5000, bound_r=3.0)[:320].reshape(-1, BARS_PER_SESSION)
    settings = EvidenceSettings(alpha=ALPHA, switching_cost_r=COST, bound_r=3.0)
    fresh = EvidenceState(settings)
    assert EvidenceState.from_dict(json.loads(json.dumps(fresh.as_dict()))).e_value() == 1.0
    state = fresh
    for session in x[:10]:
        state = state.update(session, trades=1)
    stored = EvidenceState.from_dict(json.loads(json.dumps(state.as_dict())))
    for session in x[10:]:
        state, stored = state.update(session), stored.update(session)
    assert stored.summary("champ") == state.summary("champ")
    broken = state.as_dict() | {"settings": {**state.as_dict()["settings"], "bets": 4}}
    with pytest.raises(ValueError, match="other settings"):
        EvidenceState.from_dict(broken)
