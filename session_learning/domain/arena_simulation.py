"""Simulated error rates and speeds of the arena's two tests: promotion and demotion.

``python -m session_learning.domain.arena_simulation`` prints the tables quoted in the README
(section "Forward evidence and the arena"); the tests in ``tests/domain`` assert the same
quantities. Everything is vectorized over streams: one stream is one arena pair (promotion) or one
champion (demotion), observed for hundreds of sessions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from session_learning.domain.arena import (
    FLAT,
    Arena,
    ArenaSettings,
    ChallengerEvidence,
    GateVerdict,
    admit,
    decide_promotion,
    next_session,
    promote,
    retire,
)
from session_learning.domain.drift import cusum_statistic, design_detector
from session_learning.domain.evidence import (
    DEFAULT_BETS,
    Evidence,
    log_e_process,
    log_interval_wealth,
)

# Bars in a 4-hour session at 15 minutes.
BARS_PER_SESSION = 16


def difference_pool(
    rng: np.random.Generator,
    mean_r: float,
    *,
    size: int = 200_000,
    scale_r: float = 0.35,
    flat_share: float = 0.4,
    skew: int = -1,
    bound_r: float = 6.0,
) -> np.ndarray:
    """A finite population of per-bar paired differences whose mean is exactly ``mean_r``.

    Shaped like real paired marks: ``flat_share`` of bars are 0 (both members flat, or holding
    the same position), the rest heavy-tailed (Student t with 3 degrees of freedom, scaled by
    ``scale_r``) and skewed: ``skew=-1`` stretches the losing side (many small gains, rare large
    losses, the shape most likely to fool a bettor), ``+1`` the winning side. Values stay within
    ``bound_r``. Drawing uniformly from the pool gives i.i.d. bars with exactly the stated mean,
    so a null stream is exactly at its null.
    """
    if skew not in (-1, 1):
        raise ValueError("skew must be -1 or +1")
    v = rng.standard_t(3, size) * scale_r
    v = np.where(v * skew > 0, v * 1.8, v * 0.7)
    v = np.where(rng.random(size) < flat_share, 0.0, v)
    v = np.clip(v, -bound_r + 1.0, bound_r - 1.0)
    pool = v - v.mean() + mean_r
    if np.abs(pool).max() > bound_r:
        raise ValueError(f"mean_r {mean_r} pushes the pool beyond the bound {bound_r}")
    return pool


def promotion_sessions(
    pool: np.ndarray,
    *,
    streams: int,
    sessions: int,
    threshold: float,
    switching_cost_r: float,
    bound_r: float = 6.0,
    bars_per_session: int = BARS_PER_SESSION,
    seed: int = 0,
    chunk: int = 100,
) -> np.ndarray:
    """For each simulated stream, the session at whose end the e-process first reached
    ``threshold`` (1-based), or ``inf`` when it did not within ``sessions``.

    The e-process is checked at session ends only, as the arena checks it.
    """
    rng = np.random.default_rng(seed)
    first = np.full(streams, np.inf)
    cut = math.log(threshold)
    for lo in range(0, streams, chunk):
        n = min(chunk, streams - lo)
        x = pool[rng.integers(0, len(pool), (n, sessions * bars_per_session))]
        log_e, _ = log_e_process(x, switching_cost_r, bound_r)
        hit = log_e[:, bars_per_session - 1 :: bars_per_session] >= cut
        first[lo : lo + n] = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
    return first


def clone_arena_years(
    pool: np.ndarray,
    *,
    years: int,
    sessions_per_year: int = 2190,
    settings: ArenaSettings = ArenaSettings(),
    switching_cost_r: float = 0.005,
    bound_r: float = 6.0,
    bars_per_session: int = BARS_PER_SESSION,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Model-years of an arena whose challengers are all clones of the champion, run through the
    arena's own rules (``admit``, ``retire``, ``decide_promotion``, ``promote``).

    A new session-learned candidate arrives every session (the most churn the rules allow); every
    challenger's per-bar difference against the champion is drawn from ``pool`` (mean 0 for
    clones), and it is assumed to beat FLAT and to pass the gates, so only the evidence against
    the champion stands between a clone and a promotion. Only the e-process is run (the decision
    does not read the confidence sequence). Returns, per year, the promotions and the challengers
    that entered.
    """
    rng = np.random.default_rng(seed)
    promotions = np.zeros(years, dtype=np.int64)
    entered = np.zeros(years, dtype=np.int64)
    for year in range(years):
        promotions[year], entered[year], _ = _run_arena(
            rng,
            pool,
            None,
            None,
            sessions_per_year,
            settings,
            switching_cost_r,
            bound_r,
            bars_per_session,
        )
    return promotions, entered


def late_entrant_sessions(
    pool: np.ndarray,
    better_pool: np.ndarray,
    *,
    arrives: int,
    streams: int,
    horizon: int = 500,
    settings: ArenaSettings = ArenaSettings(),
    switching_cost_r: float = 0.005,
    bound_r: float = 6.0,
    bars_per_session: int = BARS_PER_SESSION,
    seed: int = 0,
) -> np.ndarray:
    """The price of churn: from session ``arrives`` of a reign full of churning clones, every new
    candidate is better (differences from ``better_pool``), as after a change that the newest
    models have learned. Returns the sessions until one of them is promoted (``inf`` if none
    within ``horizon`` sessions).
    """
    rng = np.random.default_rng(seed)
    out = np.full(streams, np.inf)
    for k in range(streams):
        _, _, promoted_at = _run_arena(
            rng,
            pool,
            better_pool,
            arrives,
            arrives + horizon,
            settings,
            switching_cost_r,
            bound_r,
            bars_per_session,
        )
        if promoted_at is not None:
            out[k] = promoted_at - arrives + 1
    return out


def _run_arena(
    rng: np.random.Generator,
    pool: np.ndarray,
    better_pool: np.ndarray | None,
    better_arrives: int | None,
    sessions: int,
    settings: ArenaSettings,
    switching_cost_r: float,
    bound_r: float,
    bars_per_session: int,
) -> tuple[int, int, int | None]:
    """One arena through ``sessions`` sessions: (promotions, entries, the session the better
    challenger was promoted in, if it was; the run stops then)."""
    trained = pd.Timestamp("2000-01-01", tz="UTC")
    gate = GateVerdict(True, "validation", trained + pd.Timedelta(days=1), trained)
    better: set[str] = set()  # the candidates that arrived from ``better_arrives`` on
    arena = Arena(model="clones", champion="champion")
    wealth: dict[str, np.ndarray] = {}
    promotions = entered = 0
    for session in range(sessions):
        arena, admission = admit(
            arena, f"c{session}", "session_learned", _clone_evidence(arena, wealth), settings
        )
        if admission.admitted:
            entered += 1
            wealth.pop(admission.evicted or "", None)
            if better_arrives is not None and session >= better_arrives:
                better.add(f"c{session}")
        for c in arena.challengers:
            source = better_pool if c.version in better else pool
            x = source[rng.integers(0, len(source), bars_per_session)]
            start = wealth.get(c.version, np.zeros(DEFAULT_BETS))
            _, wealth[c.version] = log_e_process(x, switching_cost_r, bound_r, log_wealth=start)
        evidence = _clone_evidence(arena, wealth)
        arena, gone = retire(arena, evidence, settings)
        for r in gone:
            wealth.pop(r.version, None)
        evidence = _clone_evidence(arena, wealth)
        gates = {c.version: gate for c in arena.challengers}
        decision = decide_promotion(arena, evidence, gates, settings)
        if decision.promote:
            promotions += 1
            if decision.winner in better:
                return promotions, entered, session
            arena = promote(arena, decision, evidence, settings)
            wealth = {}  # a new reign: every comparison restarts
        arena = next_session(arena)
    return promotions, entered, None


def _clone_evidence(arena: Arena, wealth: dict[str, np.ndarray]) -> dict[str, ChallengerEvidence]:
    """Evidence summaries from the e-process alone; FLAT is taken as beaten."""
    out = {}
    for c in arena.challengers:
        log_w = wealth.get(c.version)
        e_value = 1.0 if log_w is None else float(np.exp(np.log(np.exp(log_w).mean())))
        vs_champion = Evidence(arena.champion, e_value, 0, False, 0, -1, 1, 0, 0.05, 6, 0, 0, 0)
        vs_flat = Evidence(FLAT, math.inf, 0, True, 0, -1, 1, 0, 0.05, 6, 0, 0, 0)
        out[c.version] = ChallengerEvidence(vs_champion, vs_flat)
    return out


def confidence_sequence_misses(
    pool: np.ndarray,
    *,
    streams: int,
    sessions: int,
    alpha: float,
    bound_r: float = 6.0,
    bars_per_session: int = BARS_PER_SESSION,
    seed: int = 0,
    chunk: int = 100,
) -> float:
    """The share of streams whose confidence sequence excludes the pool's true mean at some bar:
    exactly the streams where ``K+`` or ``K-`` at the true mean reaches ``2 / alpha``."""
    rng = np.random.default_rng(seed)
    mean = float(pool.mean())
    cut = math.log(2 / alpha)
    misses = 0
    for lo in range(0, streams, chunk):
        n = min(chunk, streams - lo)
        x = pool[rng.integers(0, len(pool), (n, sessions * bars_per_session))]
        up, down = log_interval_wealth(x, mean, bound_r)
        misses += int(((up.max(axis=1) >= cut) | (down.max(axis=1) >= cut)).sum())
    return misses / streams


def detection_sessions(
    *,
    before_r: float,
    after_r: float,
    sd_r: float,
    trades_per_session: int,
    false_alarms_per_100_sessions: float,
    streams: int = 2000,
    sessions_before: int = 20,
    sessions_after: int = 60,
    seed: int = 0,
) -> tuple[np.ndarray, float, float]:
    """Detection delay of the demotion detector after the champion's mean R per trade falls
    from ``before_r`` to ``after_r`` (normal trades, sd ``sd_r``).

    The detector is designed from 3,000 in-control trades (as from a validation window) and the
    budget. Returns the delays in sessions (the session during which the alarm fired, counted from
    the change, 1-based; ``inf`` when none within ``sessions_after``) of the streams with no alarm
    before the change, the share of streams that alarmed before it, and the threshold.
    """
    rng = np.random.default_rng(seed)
    detector = design_detector(
        rng.normal(before_r, sd_r, 3000),
        trades_per_session=trades_per_session,
        false_alarms_per_100_sessions=false_alarms_per_100_sessions,
        seed=seed + 1,
    )
    pre = sessions_before * trades_per_session
    r = np.concatenate(
        [
            rng.normal(before_r, sd_r, (streams, pre)),
            rng.normal(after_r, sd_r, (streams, sessions_after * trades_per_session)),
        ],
        axis=1,
    )
    alarm = cusum_statistic(r, detector.reference_r) >= detector.threshold
    first = np.where(alarm.any(axis=1), alarm.argmax(axis=1), np.iinfo(np.int64).max)
    clean = first >= pre
    delay = np.where(
        first[clean] == np.iinfo(np.int64).max,
        np.inf,
        (first[clean] - pre) // trades_per_session + 1,
    )
    return delay.astype(float), float(1.0 - clean.mean()), detector.threshold


def demotion_frontier(
    *,
    before_r: float,
    after_r: float,
    sd_r: float,
    trades_per_session: float,
    within_sessions: int = 3,
    shift_r: float = 0.5,
    streams: int = 2000,
    horizon_sessions: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """What pausing within ``within_sessions`` sessions costs in false pauses.

    The champion's mean R per trade falls from ``before_r`` to ``after_r`` (normal trades, sd
    ``sd_r``), it closes ``trades_per_session`` trades a session (trade ``i`` closes during
    session ``floor(i / rate) + 1``), and its CUSUM has the design's reference
    ``before_r - shift_r / 2``. The largest threshold whose median delay is at most
    ``within_sessions`` is the median, over post-change streams, of the statistic's peak over the
    trades closed by then. Returns that threshold, the probability that an in-control champion
    is paused within 100 sessions at it, and the median number of sessions an in-control
    champion trades before a false pause (``inf`` when most streams never alarm within
    ``horizon_sessions``).
    """
    if trades_per_session <= 0 or within_sessions < 1 or horizon_sessions < 100:
        raise ValueError("trades_per_session > 0, within_sessions >= 1, horizon >= 100 needed")
    rng = np.random.default_rng(seed)
    reference = before_r - shift_r / 2
    closed = max(1, int(math.floor(within_sessions * trades_per_session)))
    after = rng.normal(after_r, sd_r, (streams, closed))
    threshold = float(np.median(cusum_statistic(after, reference).max(axis=1)))
    length = int(math.ceil(horizon_sessions * trades_per_session))
    first = np.full(streams, np.inf)
    for lo in range(0, streams, 200):
        n = min(200, streams - lo)
        alarm = cusum_statistic(rng.normal(before_r, sd_r, (n, length)), reference) >= threshold
        hit = alarm.any(axis=1)
        first[lo : lo + n] = np.where(
            hit, np.floor(alarm.argmax(axis=1) / trades_per_session) + 1, np.inf
        )
    return threshold, float(np.mean(first <= 100)), float(np.median(first))


def main() -> None:
    """Print the promotion and demotion tables."""
    rng = np.random.default_rng(0)
    alpha, cost, challengers = 0.05, 0.005, 3
    _print_false_promotions(rng, alpha, cost)
    _print_promotion_speed(rng, alpha, cost, challengers)
    _print_demotion_delays()


def _print_false_promotions(rng: np.random.Generator, alpha: float, cost: float) -> None:
    """How often a challenger no better than the champion is promoted."""
    print(f"Promotion e-process: {BARS_PER_SESSION} paired bars a session, switching cost {cost} R")
    print("a bar, bound 6 R, heavy-tailed skewed differences (sd about 0.58 R a bar)")
    print("\nfalse promotions within 500 sessions, 1,000 null streams, threshold 1/alpha = 20:")
    for mean in (0.0, cost):
        for skew in (-1, 1):
            first = promotion_sessions(
                difference_pool(rng, mean, skew=skew),
                streams=1000,
                sessions=500,
                threshold=1 / alpha,
                switching_cost_r=cost,
                seed=1,
            )
            print(f"  true mean {mean:+.3f} R/bar, skew {skew:+d}: {np.isfinite(first).mean():.3f}")
    print(
        "\nper model-year (2,190 sessions), the arena's own rules, a new candidate every session,"
    )
    print("every challenger a clone (or exactly the switching cost better), 60 model-years each:")
    for mean in (0.0, cost):
        promotions, entered = clone_arena_years(difference_pool(rng, mean), years=60, seed=5)
        print(
            f"  true mean {mean:+.3f} R/bar: model-years with a promotion "
            f"{np.mean(promotions > 0):.3f}, challengers entered a year {entered.mean():.0f}"
        )


def _print_promotion_speed(
    rng: np.random.Generator, alpha: float, cost: float, challengers: int
) -> None:
    """How fast a better challenger is promoted, and what the bound and the churn cost."""
    print("\nthe price of churn: from a session of a churning reign on, every new candidate is")
    print("0.1 R/bar better than the champion (as after a change the newest models learned):")
    null_pool, better_pool = difference_pool(rng, 0.0), difference_pool(rng, 0.1)
    for arrives in (0, 100, 500):
        first = late_entrant_sessions(
            null_pool, better_pool, arrives=arrives, streams=40, horizon=300, seed=6
        )
        print(
            f"  after {arrives} sessions: median {np.median(first):.0f} sessions to promotion, "
            f"promoted within 300: {np.isfinite(first).mean():.2f}"
        )
    misses = confidence_sequence_misses(
        difference_pool(rng, 0.03), streams=1000, sessions=500, alpha=alpha, seed=1
    )
    print(f"\nconfidence sequence missing the true mean at some bar, 1,000 streams: {misses:.3f}")
    print(f"\nsessions to promotion at threshold K/alpha = {challengers / alpha:.0f}, 200 streams:")
    for mean in (0.03, 0.06, 0.1, 0.2):
        first = promotion_sessions(
            difference_pool(rng, mean),
            streams=200,
            sessions=500,
            threshold=challengers / alpha,
            switching_cost_r=cost,
            seed=2,
        )
        print(
            f"  edge {mean:.2f} R/bar ({mean * BARS_PER_SESSION:.2f} R/session): median "
            f"{np.median(first):.0f}, promoted within 500: {np.isfinite(first).mean():.2f}"
        )
    print("what the bound costs: one pool of differences within 2 R (sd about 0.49 R), judged")
    print("with the 6 R bound of two 2:1 members and with a 3 R bound:")
    for mean in (0.06, 0.1, 0.2):
        pool = difference_pool(rng, mean, bound_r=3.0)
        medians = [
            np.median(
                promotion_sessions(
                    pool,
                    streams=200,
                    sessions=500,
                    threshold=challengers / alpha,
                    switching_cost_r=cost,
                    bound_r=bound,
                    seed=2,
                )
            )
            for bound in (6.0, 3.0)
        ]
        print(
            f"  edge {mean:.2f} R/bar: median {medians[0]:.0f} sessions (bound 6 R), "
            f"{medians[1]:.0f} (bound 3 R)"
        )


def _print_demotion_delays() -> None:
    """How fast the change detector demotes a champion that starts losing."""
    print("\nDemotion CUSUM, champion mean +0.2 R -> -0.3 R a trade, sd 1.2 R:")
    print("(delays pooled over 5 detectors, each designed from its own 3,000 validation trades)")
    for trades in (20, 10):
        for budget in (0.05, 0.10, 0.20):
            runs = [
                detection_sessions(
                    before_r=0.2,
                    after_r=-0.3,
                    sd_r=1.2,
                    trades_per_session=trades,
                    false_alarms_per_100_sessions=budget,
                    streams=1000,
                    seed=seed,
                )
                for seed in range(5)
            ]
            delay = np.concatenate([run[0] for run in runs])
            print(
                f"  {trades} trades/session, budget {budget:.2f}: median delay "
                f"{np.median(delay):.0f} sessions ({np.mean(delay <= 3):.2f} within 3, 90th "
                f"percentile {np.percentile(delay, 90):.0f}); threshold about "
                f"{np.mean([run[2] for run in runs]):.1f}"
            )
    print(
        "\nThe demotion frontier: the threshold whose median delay is 3 / 6 / 12 sessions, and what"
    )
    print("it costs an in-control champion (paused within 100 sessions; median sessions to a false")
    print("pause), by trades closed a session (same change, 2,000 streams):")
    for trades in (1.5, 3, 10, 20):
        cells = []
        for within in (3, 6, 12):
            threshold, within_100, median = demotion_frontier(
                before_r=0.2,
                after_r=-0.3,
                sd_r=1.2,
                trades_per_session=trades,
                within_sessions=within,
            )
            cells.append(f"{within}: h {threshold:.1f} R, {within_100:.0%}, {median:.0f}")
        print(f"  {trades:g} trades/session -> " + "; ".join(cells))


if __name__ == "__main__":
    main()
