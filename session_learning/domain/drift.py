"""Demote fast: a one-sided CUSUM on the champion's live R per trade.

The statistic accumulates how far each closed trade falls below a reference level,
``S_t = max(0, S_{t-1} + reference_r - r_t)``, and alarms when it reaches ``threshold``. With the
champion's in-control mean ``mu0`` and the smallest fall worth stopping for, ``shift_r``, the
reference is the midpoint ``mu0 - shift_r / 2``: the statistic drifts down while the champion
performs as expected and up once its mean has fallen by ``shift_r`` (Page's CUSUM, optimal for
that shift).

The in-control mean is the champion's expectancy on data it never trained on, capped at
``shift_r / 2`` (0.25 R by default), so the reference is at most 0: the detector stops a champion
that *loses*, not one that earns less than its validation promised. A validation expectancy is
an optimistic number (the gates chose the model on it), and a detector referenced to it paused
sound models: on the `flips` replay's calendar bars the first champion, validated at +1.05 R a
trade, was paused after 23 trades at -0.24 R and the arena stayed FLAT for the rest of the run
while the same model, kept trading, made +0.18 R a trade in that block.

The false-alarm budget is the setting; the threshold derives from it. ``design_detector``
resamples the in-control trades (bootstrap, so the real shape of R — mostly -1 R and +2 R with a
few timeouts — is kept), runs the statistic over ``horizon_sessions`` sessions of
``trades_per_session`` trades, and sets the threshold at the ``1 - budget`` quantile of the largest
value reached: an in-control champion is paused falsely within 100 sessions with probability
``false_alarms_per_100_sessions``. Trades of one model are not independent (a run of trades in
the same market state wins or loses together); resampling them one by one would understate how
far the statistic wanders and alarm more often than the budget. ``block_trades`` > 1 resamples
runs of that many consecutive in-control trades (a circular block bootstrap), which keeps that
dependence. Calibration assumes the live mean equals the validation mean; a
champion whose live mean is lower (an optimistic validation) alarms more often, which is the
intended behaviour.

A one-sided CUSUM written here rather than river's ``drift.PageHinkley``: river 0.26.1's detector
needs a dependency for six lines of arithmetic, and its ``alpha`` forgetting factor and two-sided
default make the false-alarm rate harder to state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FALSE_ALARMS_PER_100_SESSIONS = 0.10
DEFAULT_SHIFT_R = 0.5
# Runs of consecutive validation trades resampled together when the arena designs a detector: a
# model's trades are correlated (lag-1 about 0.3 in the replay), one-by-one resampling understates
# how far the statistic wanders.
DEFAULT_BLOCK_TRADES = 10
_MIN_IN_CONTROL_TRADES = 30
# Bootstrap cells drawn at once while calibrating.
_CHUNK_CELLS = 1 << 22


def cusum_statistic(r: np.ndarray, reference_r: float, start: float = 0.0) -> np.ndarray:
    """The CUSUM statistic after every trade of ``r`` (trades along the last axis).

    Closed form of ``S_t = max(0, S_{t-1} + reference_r - r_t)`` from ``S_0 = start``:
    ``S_t = W_t - min(-start, min_{s<=t} W_s)`` with ``W`` the running sum of ``reference_r - r``.
    """
    r = np.asarray(r, dtype=np.float64)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if not np.isfinite(r).all():
        raise ValueError("R multiples must be finite")
    w = np.cumsum(reference_r - r, axis=-1)
    return w - np.minimum(-start, np.minimum.accumulate(w, axis=-1))


@dataclass(frozen=True)
class ChangeResult:
    """One update's verdict: ``alarm`` once the statistic reached the threshold; ``trades`` seen
    in all, ``alarm_trade`` the 1-based trade at which it first did (None without an alarm)."""

    alarm: bool
    statistic: float
    threshold: float
    reference_r: float
    trades: int
    alarm_trade: int | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChangeDetector:
    """The running CUSUM of one champion. Immutable: ``update`` returns the next state.

    Once alarmed it stays alarmed (the arena pauses the champion; a new champion gets a new
    detector).
    """

    reference_r: float
    threshold: float
    false_alarms_per_100_sessions: float = DEFAULT_FALSE_ALARMS_PER_100_SESSIONS
    statistic: float = 0.0
    trades: int = 0
    alarm_trade: int | None = None

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")

    def update(self, r: np.ndarray) -> tuple[ChangeDetector, ChangeResult]:
        """Fold in the champion's closed trades (R multiples, in exit order)."""
        r = np.asarray(r, dtype=np.float64).ravel()
        alarm_trade = self.alarm_trade
        statistic = self.statistic
        if len(r):
            path = cusum_statistic(r, self.reference_r, self.statistic)
            statistic = float(path[-1])
            hits = np.flatnonzero(path >= self.threshold)
            if alarm_trade is None and len(hits):
                alarm_trade = self.trades + int(hits[0]) + 1
        state = ChangeDetector(
            self.reference_r,
            self.threshold,
            self.false_alarms_per_100_sessions,
            statistic,
            self.trades + len(r),
            alarm_trade,
        )
        return state, ChangeResult(
            alarm=alarm_trade is not None,
            statistic=statistic,
            threshold=self.threshold,
            reference_r=self.reference_r,
            trades=state.trades,
            alarm_trade=alarm_trade,
        )


def design_detector(
    in_control_r: np.ndarray,
    *,
    trades_per_session: float,
    false_alarms_per_100_sessions: float = DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
    shift_r: float = DEFAULT_SHIFT_R,
    horizon_sessions: int = 100,
    streams: int = 4000,
    seed: int = 0,
    block_trades: int = 1,
) -> ChangeDetector:
    """A detector for a champion whose trades on unseen data were ``in_control_r``: in control
    at their mean capped at ``shift_r / 2``, alarmed by a fall of ``shift_r`` from there.

    ``trades_per_session``: the champion's expected trades a session (its validation rate);
    ``false_alarms_per_100_sessions``: the probability of pausing an in-control champion within
    ``horizon_sessions`` (100) sessions; ``shift_r``: the fall of mean R per trade to detect.
    ``block_trades``: the length of the resampled runs of consecutive trades (1: one by one).
    Deterministic for a ``seed``. Raises ``ValueError`` with fewer than 30 in-control trades: the
    threshold would be calibrated on noise.
    """
    r = np.asarray(in_control_r, dtype=np.float64).ravel()
    if len(r) < _MIN_IN_CONTROL_TRADES or not np.isfinite(r).all():
        raise ValueError(
            f"design_detector needs at least {_MIN_IN_CONTROL_TRADES} finite in-control R "
            f"multiples (the champion's validation trades), got {len(r)}"
        )
    if not 0 < false_alarms_per_100_sessions < 1:
        raise ValueError(
            f"false_alarms_per_100_sessions must be in (0, 1), got {false_alarms_per_100_sessions}"
        )
    if trades_per_session <= 0 or shift_r <= 0 or horizon_sessions < 1 or streams < 100:
        raise ValueError("trades_per_session and shift_r must be positive, horizon and streams set")
    if not 1 <= block_trades <= len(r):
        raise ValueError(f"block_trades must be in [1, {len(r)}], got {block_trades}")
    in_control = min(float(r.mean()), shift_r / 2)
    reference = in_control - shift_r / 2
    # Resample the validation trades' shape around the in-control mean.
    r = r - r.mean() + in_control
    length = max(1, int(round(trades_per_session * horizon_sessions)))
    rng = np.random.default_rng(seed)
    peaks = np.empty(streams)
    step = max(1, _CHUNK_CELLS // length)
    for lo in range(0, streams, step):
        n = min(step, streams - lo)
        if block_trades == 1:
            sample = r[rng.integers(0, len(r), (n, length))]
        else:
            blocks = -(-length // block_trades)
            starts = rng.integers(0, len(r), (n, blocks, 1))
            positions = (starts + np.arange(block_trades)) % len(r)
            sample = r[positions.reshape(n, -1)[:, :length]]
        peaks[lo : lo + n] = cusum_statistic(sample, reference).max(axis=1)
    threshold = float(np.quantile(peaks, 1.0 - false_alarms_per_100_sessions))
    # A degenerate in-control sample (every trade equal) never moves the statistic.
    threshold = max(threshold, shift_r / 2)
    return ChangeDetector(reference, threshold, false_alarms_per_100_sessions)


def bracket_detector(
    *,
    reward_r: float,
    trades_per_session: float,
    false_alarms_per_100_sessions: float = DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
    shift_r: float = DEFAULT_SHIFT_R,
    seed: int = 0,
) -> ChangeDetector:
    """A detector for a champion with too few trades on unseen data to design one from.

    Without such trades nothing says what the champion's R looks like in control, and a champion
    that cannot be paused is the one failure this detector exists to prevent. Its in-control
    trades are taken to be its brackets' two outcomes, ``+reward_r`` R (take profit) or -1 R
    (stop loss), earning ``shift_r / 2`` a trade (the level ``design_detector`` caps every
    champion at), and the detector is designed from 3,000 of them. Raises ``ValueError`` for a
    reward that is not positive.
    """
    if not reward_r > 0 or not trades_per_session > 0:
        raise ValueError(
            f"reward_r and trades_per_session must be positive, got {reward_r}, "
            f"{trades_per_session}"
        )
    win = (shift_r / 2 + 1) / (reward_r + 1)
    r = np.where(np.random.default_rng(seed).random(3000) < win, reward_r, -1.0)
    return design_detector(
        r,
        trades_per_session=trades_per_session,
        false_alarms_per_100_sessions=false_alarms_per_100_sessions,
        shift_r=shift_r,
        seed=seed,
    )


def champion_detector(
    unseen_r: np.ndarray,
    *,
    sessions: float,
    reward_r: float,
    false_alarms_per_100_sessions: float = DEFAULT_FALSE_ALARMS_PER_100_SESSIONS,
    shift_r: float = DEFAULT_SHIFT_R,
    block_trades: int = DEFAULT_BLOCK_TRADES,
) -> ChangeDetector:
    """An arena member's detector: designed from its trades on unseen bars (``unseen_r`` over
    ``sessions`` sessions; ``design_detector``, runs of ``block_trades``) when it has at least
    30, else from its brackets (``bracket_detector``, ``reward_r`` = take profit / stop loss)."""
    r = np.asarray(unseen_r, dtype=np.float64).ravel()
    if len(r) < _MIN_IN_CONTROL_TRADES or sessions <= 0:
        return bracket_detector(
            reward_r=reward_r,
            trades_per_session=len(r) / sessions if len(r) and sessions > 0 else 1.0,
            false_alarms_per_100_sessions=false_alarms_per_100_sessions,
            shift_r=shift_r,
        )
    return design_detector(
        r,
        trades_per_session=len(r) / sessions,
        false_alarms_per_100_sessions=false_alarms_per_100_sessions,
        shift_r=shift_r,
        block_trades=min(block_trades, len(r)),
    )
