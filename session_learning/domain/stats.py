"""Does a candidate model beat production beyond noise? A paired block bootstrap of expectancy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Upper bound on resample-by-block weight cells drawn at once (8 bytes each).
_CHUNK_CELLS = 1 << 21


@dataclass(frozen=True)
class Comparison:
    """Candidate vs production expectancy (mean R per trade) on one validation window.

    ``difference`` is candidate minus production; ``lower`` / ``upper`` is the two-sided bootstrap
    interval of the difference at ``confidence``. ``beats`` is True only when the one-sided lower
    bound at ``confidence`` (``one_sided_lower``, the ``1 - confidence`` quantile) is above 0.
    """

    candidate_expectancy: float
    production_expectancy: float
    difference: float
    lower: float
    upper: float
    confidence: float
    n_blocks: int
    beats: bool
    one_sided_lower: float = float("nan")


def paired_bootstrap_expectancy(
    candidate_r: np.ndarray | pd.Series,
    candidate_times: pd.DatetimeIndex | pd.Series | np.ndarray,
    production_r: np.ndarray | pd.Series,
    production_times: pd.DatetimeIndex | pd.Series | np.ndarray,
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
    block: pd.Timedelta,
    n_boot: int = 2000,
    confidence: float = 0.90,
    seed: int = 0,
) -> Comparison:
    """Compare two models' trades on the same window with a paired block bootstrap.

    ``[window_start, window_end)`` is cut into consecutive blocks of length ``block`` (the last one
    may be shorter); each trade belongs to the block of its time, and trades outside the window are
    ignored. Each of ``n_boot`` resamples draws as many blocks as the window has, with replacement,
    and uses the *same* blocks for both models: market conditions are shared, so only the models'
    difference varies. A resample's expectancy is the sum of R over the number of trades in the
    drawn blocks (0 when there are none). Percentile intervals of candidate minus production give
    ``lower`` / ``upper``; ``beats`` needs the one-sided lower bound above 0, so an identical or
    merely noisily better candidate does not beat production. Deterministic for a ``seed``.
    Naive times are taken as UTC.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if block <= pd.Timedelta(0):
        raise ValueError(f"block must be positive, got {block}")
    start, end = _utc(window_start), _utc(window_end)
    if end <= start:
        raise ValueError(f"window_end {end} must be after window_start {start}")
    n_blocks = -(-(end - start) // block)

    candidate_sum, candidate_count = _per_block(
        candidate_r, candidate_times, start, end, block, n_blocks
    )
    production_sum, production_count = _per_block(
        production_r, production_times, start, end, block, n_blocks
    )
    candidate = _expectancy(candidate_sum.sum(), candidate_count.sum())
    production = _expectancy(production_sum.sum(), production_count.sum())

    rng = np.random.default_rng(seed)
    uniform = np.full(n_blocks, 1.0 / n_blocks)
    totals = np.stack([candidate_sum, candidate_count, production_sum, production_count], axis=1)
    differences = np.empty(n_boot)
    step = max(1, _CHUNK_CELLS // n_blocks)
    for lo in range(0, n_boot, step):
        size = min(step, n_boot - lo)
        # How often each block is drawn in each resample; drawing with replacement is multinomial.
        weights = rng.multinomial(n_blocks, uniform, size=size)
        c_sum, c_count, p_sum, p_count = (weights @ totals).T
        differences[lo : lo + size] = _expectancy(c_sum, c_count) - _expectancy(p_sum, p_count)

    alpha = 1.0 - confidence
    lower, upper, one_sided = np.quantile(differences, [alpha / 2, 1 - alpha / 2, alpha])
    return Comparison(
        candidate_expectancy=float(candidate),
        production_expectancy=float(production),
        difference=float(candidate - production),
        lower=float(lower),
        upper=float(upper),
        confidence=confidence,
        n_blocks=int(n_blocks),
        beats=bool(one_sided > 0),
        one_sided_lower=float(one_sided),
    )


def _per_block(
    r: np.ndarray | pd.Series,
    times: pd.DatetimeIndex | pd.Series | np.ndarray,
    start: pd.Timestamp,
    end: pd.Timestamp,
    block: pd.Timedelta,
    n_blocks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of R and number of trades in each block of the window."""
    r = np.asarray(r, dtype=np.float64)
    stamps = pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    if len(r) != len(stamps):
        raise ValueError(f"{len(r)} R multiples but {len(stamps)} times")
    inside = np.asarray((stamps >= start) & (stamps < end))
    blocks = np.asarray((stamps[inside] - start) // block, dtype=np.int64)
    sums = np.bincount(blocks, weights=r[inside], minlength=n_blocks)
    counts = np.bincount(blocks, minlength=n_blocks).astype(np.float64)
    return sums, counts


def _expectancy(total: np.ndarray | float, count: np.ndarray | float) -> np.ndarray:
    """``total / count``, 0 where there are no trades."""
    total, count = np.asarray(total, dtype=np.float64), np.asarray(count, dtype=np.float64)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _utc(moment: pd.Timestamp) -> pd.Timestamp:
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
