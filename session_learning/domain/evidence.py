"""Forward evidence: is a challenger better than the champion (or FLAT) on bars nobody trained on?

Every arena member marks its shadow position to market on every bar (``shadow.shadow_book``'s
``marks``), so two members give one *paired* difference per bar: challenger R minus baseline R on the same
bar (FLAT's R is 0 on every bar). This module turns that stream into an anytime-valid test and a
confidence sequence, both safe to look at after every session without inflating the error rate.

The hypothesis. ``H0: mean difference per bar <= switching_cost_r`` against ``H1: > switching_cost_r``,
where the mean is conditional on the past (it may drift; the guarantee holds whenever every bar's
conditional mean is at most the switching cost).

Bounded differences. Betting needs a known bound ``|d| <= bound_r``. On a bar where a position is
open and no barrier was touched, the close lies between the stop and the take profit, so one
member's mark-to-market change is at most the barrier span, ``(tp_atr + sl_atr) / sl_atr`` R; the
exit bar fills at a barrier (or times out at the close), within the same span. Only a gap through
the stop (a fill at the open, beyond the stop) exceeds it, or costs on top of a full-span bar. The bound of a difference is the sum of the two members' spans
(``difference_bound_r``; 6 R for the default 2:1 brackets). ``paired_differences`` clips at it and
counts the clipped bars, which the evidence reports: the test is about the mean of the *clipped*
difference, equal to the raw mean except on gap bars. A wider bound would cost power (the largest
bet is inversely proportional to it); a tighter one would clip ordinary bars and bias the mean.

The e-process (a betting wealth). A bettor starts with wealth 1 and on each bar stakes a fraction
``lam`` on ``d - switching_cost_r``: ``W *= 1 + lam * (d - switching_cost_r)``. Under H0 each
factor has conditional mean <= 1, so ``W`` is a nonnegative supermartingale and, by Ville's
inequality, ``P(W ever reaches 1 / alpha) <= alpha``: the wealth may be checked after every bar or
session, and promotion at ``W >= threshold`` is a level ``1 / threshold`` test. The stake is a
uniform mixture over a grid of constant bets ``lam_k = 0.9 / (bound_r + switching_cost_r) / 2**k``
("diversified Kelly"): a mixture of supermartingales is one, and it grows almost as fast as the
best bet of the grid (losing ``log(bets)``) without having to estimate the edge first. The largest
bet keeps a tenth of its wealth on the worst possible bar and the smaller ones far more; a cap of
0.9 rather than the textbook 0.5 promotes a 0.1 R-a-bar edge in about 35 sessions instead of
about 53 (16 bars a session), because with a 6 R bound the cap, not the edge, limits the best bet. No
plug-in estimate, so a session's update is a sum.

The confidence sequence. For every candidate mean ``m`` on a grid, two such wealths bet that the
mean is above ``m`` (``K+``) and below it (``K-``), with bets ``0.9 / (2 bound_r) / 2**k``, the same
for every ``m`` and small enough for any ``m`` in ``[-bound_r, bound_r]`` (``|d - m| <= 2 bound_r``).
``m`` is excluded once ``K+(m)`` or ``K-(m)`` reaches ``2 / alpha``; the sequence ``[lower, upper]`` is the running intersection, so it only shrinks.
Because ``K+(m)`` decreases in ``m``, the true mean stays inside at every time at once with
probability at least ``1 - alpha``. The e-value decides; the sequence describes. Its bets are half
the e-process's (they must be valid for every ``m``), so it is the more conservative of the two: a
promoted challenger's lower bound may still lie below the switching cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_BETS = 6
BET_CAP = 0.9
# Time steps folded at once when updating the confidence-sequence grid (cells = grid * bets * step).
_CHUNK_BARS = 256


def barrier_span_r(tp_atr: float, sl_atr: float) -> float:
    """The largest mark-to-market move of one position in one bar, in R, without a gap:
    the distance between its take profit and its stop over the stop distance."""
    if tp_atr <= 0 or sl_atr <= 0:
        raise ValueError(f"tp_atr and sl_atr must be positive, got {tp_atr}, {sl_atr}")
    return (tp_atr + sl_atr) / sl_atr


def difference_bound_r(challenger_span_r: float, baseline_span_r: float = 0.0) -> float:
    """The bound of a per-bar paired difference: the sum of the two members' barrier spans
    (FLAT's span is 0)."""
    if challenger_span_r <= 0 or baseline_span_r < 0:
        raise ValueError("barrier spans must be positive (FLAT's is 0)")
    return challenger_span_r + baseline_span_r


def paired_differences(
    challenger_r: np.ndarray, baseline_r: np.ndarray | None, bound_r: float
) -> tuple[np.ndarray, int]:
    """Challenger minus baseline R on the same bars, clipped to ``[-bound_r, bound_r]``.

    ``baseline_r`` None is FLAT (0 R on every bar). Returns the differences and how many bars were
    clipped. Raises ``ValueError`` when the series differ in length or hold a non-finite value: a
    bar one member did not mark cannot be paired.
    """
    if bound_r <= 0:
        raise ValueError(f"bound_r must be positive, got {bound_r}")
    challenger = np.asarray(challenger_r, dtype=np.float64)
    baseline = np.zeros_like(challenger) if baseline_r is None else np.asarray(baseline_r, float)
    if challenger.shape != baseline.shape or challenger.ndim != 1:
        raise ValueError(
            f"paired series need one value per bar each, got shapes {challenger.shape} and "
            f"{baseline.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(challenger) | ~np.isfinite(baseline))
    if len(bad):
        raise ValueError(
            f"{len(bad)} bar(s) without a finite mark-to-market value (first at position "
            f"{bad[0]}); mark every member on every bar before pairing"
        )
    difference = challenger - baseline
    clipped = int((np.abs(difference) > bound_r).sum())
    return np.clip(difference, -bound_r, bound_r), clipped


def promotion_bets(bound_r: float, switching_cost_r: float, bets: int = DEFAULT_BETS) -> np.ndarray:
    """The grid of constant bets of the promotion e-process (largest first)."""
    _check_bound(bound_r, switching_cost_r)
    return BET_CAP / (bound_r + switching_cost_r) / 2.0 ** np.arange(bets)


def interval_bets(bound_r: float, bets: int = DEFAULT_BETS) -> np.ndarray:
    """The grid of constant bets of the confidence sequence, valid for every mean in the bound."""
    return BET_CAP / (2.0 * bound_r) / 2.0 ** np.arange(bets)


def log_e_process(
    differences: np.ndarray,
    switching_cost_r: float,
    bound_r: float,
    bets: int = DEFAULT_BETS,
    log_wealth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The promotion e-process after every observation, in logs.

    ``differences`` has shape ``(..., T)`` (streams along the leading axes, bars along the last)
    and must lie in ``[-bound_r, bound_r]``. ``log_wealth`` (shape ``(..., bets)``) carries the
    grid's log wealths from earlier bars; it starts at 0. Returns ``(log_e, log_wealth)``: the log
    of the mixture wealth after each bar, shape ``(..., T)``, and the grid's log wealths at the end.
    """
    x = _checked(differences, bound_r)
    lam = promotion_bets(bound_r, switching_cost_r, bets)
    start = np.zeros(x.shape[:-1] + (bets,)) if log_wealth is None else log_wealth
    paths = start[..., None, :] + np.cumsum(
        np.log1p((x[..., None] - switching_cost_r) * lam), axis=-2
    )
    return _log_mean_exp(paths), (paths[..., -1, :] if x.shape[-1] else start)


def log_interval_wealth(
    differences: np.ndarray, mean_r: float, bound_r: float, bets: int = DEFAULT_BETS
) -> tuple[np.ndarray, np.ndarray]:
    """``log K+(m)`` and ``log K-(m)`` after every observation for one candidate mean ``m``.

    The confidence sequence excludes ``m`` at the first time either reaches ``log(2 / alpha)``;
    it misses the true mean exactly when that happens for ``m`` equal to the true mean.
    """
    x = _checked(differences, bound_r)
    lam = interval_bets(bound_r, bets)
    z = (x[..., None] - mean_r) * lam
    return (
        _log_mean_exp(np.cumsum(np.log1p(z), axis=-2)),
        _log_mean_exp(np.cumsum(np.log1p(-z), axis=-2)),
    )


@dataclass(frozen=True)
class EvidenceSettings:
    """``alpha``: the level of the confidence sequence (and of a single test);
    ``switching_cost_r``: the margin a challenger must beat, in R per bar (0.005 R a bar is
    0.08 R over a 16-bar session: about the spread and slippage of closing one position and
    opening another); ``bound_r``: the bound of a paired difference (``difference_bound_r``);
    ``bets``: size of the grid of constant bets."""

    alpha: float = 0.05
    switching_cost_r: float = 0.005
    bound_r: float = 6.0
    bets: int = DEFAULT_BETS

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        _check_bound(self.bound_r, self.switching_cost_r)
        if self.bets < 1:
            raise ValueError(f"bets must be >= 1, got {self.bets}")


@dataclass(frozen=True)
class Evidence:
    """The evidence of one challenger against one baseline, as stored in a judgement record.

    ``e_value``: the betting wealth for "mean difference > switching cost" (promotion needs it at
    ``threshold`` or above); ``lower_r`` / ``upper_r``: the ``1 - alpha`` confidence sequence of
    the mean difference per bar; ``mean_r``: the observed mean; ``bars``: paired bars;
    ``trades``: the challenger's closed shadow trades; ``clipped_bars``: bars beyond the bound.
    """

    baseline: str
    e_value: float
    threshold: float
    passed: bool
    mean_r: float
    lower_r: float
    upper_r: float
    switching_cost_r: float
    alpha: float
    bound_r: float
    bars: int
    trades: int
    clipped_bars: int

    def as_dict(self) -> dict:
        """Plain JSON-safe values (an infinite e-value becomes ``None``)."""
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def _interval_grid(bound_r: float) -> np.ndarray:
    """Candidate means: every 0.002 R within 0.5 R of zero, where real differences lie, and
    coarser steps out to the bound."""
    fine = np.linspace(-0.5, 0.5, 501)
    outer = np.linspace(0.5, bound_r, 56)[1:] if bound_r > 0.5 else np.empty(0)
    return np.unique(np.clip(np.concatenate([-outer[::-1], fine, outer]), -bound_r, bound_r))


@dataclass(frozen=True)
class EvidenceState:
    """The running evidence of one (challenger, baseline) pair; ``update`` with each session's
    paired differences, ``summary`` for the record. Immutable: ``update`` returns a new state."""

    settings: EvidenceSettings = field(default_factory=EvidenceSettings)
    log_wealth: np.ndarray | None = None
    log_up: np.ndarray | None = None
    log_down: np.ndarray | None = None
    lower_r: float = -math.inf
    upper_r: float = math.inf
    bars: int = 0
    trades: int = 0
    clipped_bars: int = 0
    total_r: float = 0.0

    def grid(self) -> np.ndarray:
        return _interval_grid(self.settings.bound_r)

    def update(
        self, differences: np.ndarray, trades: int = 0, clipped_bars: int = 0
    ) -> EvidenceState:
        """Fold in one session's paired differences (already clipped by ``paired_differences``)
        and the challenger's closed trades in it."""
        s = self.settings
        x = _checked(differences, s.bound_r)
        if x.ndim != 1:
            raise ValueError(f"one session's differences must be 1-D, got shape {x.shape}")
        if trades < 0 or clipped_bars < 0:
            raise ValueError("trades and clipped_bars must be >= 0")
        grid = self.grid()
        bets = s.bets
        log_wealth = np.zeros(bets) if self.log_wealth is None else self.log_wealth
        log_up = np.zeros((len(grid), bets)) if self.log_up is None else self.log_up
        log_down = np.zeros((len(grid), bets)) if self.log_down is None else self.log_down
        _, log_wealth = log_e_process(x, s.switching_cost_r, s.bound_r, bets, log_wealth)

        lam = interval_bets(s.bound_r, bets)
        cut = math.log(2.0 / s.alpha)
        lower, upper = self.lower_r, self.upper_r
        for lo in range(0, len(x), _CHUNK_BARS):
            z = (x[None, lo : lo + _CHUNK_BARS, None] - grid[:, None, None]) * lam
            up = log_up[:, None, :] + np.cumsum(np.log1p(z), axis=1)
            down = log_down[:, None, :] + np.cumsum(np.log1p(-z), axis=1)
            # Excluded at any bar of the chunk: the running intersection over every time.
            up_hit = (_log_mean_exp(up) >= cut).any(axis=1)
            down_hit = (_log_mean_exp(down) >= cut).any(axis=1)
            if up_hit.any():
                lower = max(lower, float(grid[up_hit].max()))
            if down_hit.any():
                upper = min(upper, float(grid[down_hit].min()))
            log_up, log_down = up[:, -1, :], down[:, -1, :]
        return EvidenceState(
            settings=s,
            log_wealth=log_wealth,
            log_up=log_up,
            log_down=log_down,
            lower_r=lower,
            upper_r=upper,
            bars=self.bars + len(x),
            trades=self.trades + int(trades),
            clipped_bars=self.clipped_bars + int(clipped_bars),
            total_r=self.total_r + float(x.sum()),
        )

    def as_dict(self) -> dict:
        """Plain JSON-safe values, for storage between sessions (``from_dict`` reads them)."""

        def array(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {
            "settings": dict(self.settings.__dict__),
            "log_wealth": array(self.log_wealth),
            "log_up": array(self.log_up),
            "log_down": array(self.log_down),
            "lower_r": None if math.isinf(self.lower_r) else self.lower_r,
            "upper_r": None if math.isinf(self.upper_r) else self.upper_r,
            "bars": self.bars,
            "trades": self.trades,
            "clipped_bars": self.clipped_bars,
            "total_r": self.total_r,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EvidenceState:
        settings = EvidenceSettings(**data["settings"])
        shape = (len(_interval_grid(settings.bound_r)), settings.bets)

        def array(values: list | None, expected: tuple[int, ...]) -> np.ndarray | None:
            if values is None:
                return None
            out = np.asarray(values, dtype=np.float64)
            if out.shape != expected:
                raise ValueError(
                    f"stored evidence has an array of shape {out.shape}, expected {expected} for "
                    "its settings; it was written with other settings"
                )
            return out

        lower, upper = data["lower_r"], data["upper_r"]
        return cls(
            settings=settings,
            log_wealth=array(data["log_wealth"], (settings.bets,)),
            log_up=array(data["log_up"], shape),
            log_down=array(data["log_down"], shape),
            lower_r=-math.inf if lower is None else float(lower),
            upper_r=math.inf if upper is None else float(upper),
            bars=int(data["bars"]),
            trades=int(data["trades"]),
            clipped_bars=int(data["clipped_bars"]),
            total_r=float(data["total_r"]),
        )

    def e_value(self) -> float:
        """The mixture wealth now (1.0 before any bar)."""
        if self.log_wealth is None:
            return 1.0
        return float(np.exp(_log_mean_exp(self.log_wealth)))

    def summary(self, baseline: str, threshold: float | None = None) -> Evidence:
        """The evidence for the record; ``threshold`` defaults to ``1 / alpha`` (one test)."""
        s = self.settings
        threshold = 1.0 / s.alpha if threshold is None else float(threshold)
        e_value = self.e_value()
        bound = s.bound_r
        return Evidence(
            baseline=baseline,
            e_value=e_value,
            threshold=threshold,
            passed=bool(e_value >= threshold),
            mean_r=self.total_r / self.bars if self.bars else 0.0,
            lower_r=max(self.lower_r, -bound),
            upper_r=min(self.upper_r, bound),
            switching_cost_r=s.switching_cost_r,
            alpha=s.alpha,
            bound_r=bound,
            bars=self.bars,
            trades=self.trades,
            clipped_bars=self.clipped_bars,
        )


def _check_bound(bound_r: float, switching_cost_r: float) -> None:
    if not bound_r > 0:
        raise ValueError(f"bound_r must be positive, got {bound_r}")
    if not 0 <= switching_cost_r < bound_r:
        raise ValueError(f"switching_cost_r must be in [0, bound_r), got {switching_cost_r}")


def _checked(differences: np.ndarray, bound_r: float) -> np.ndarray:
    x = np.asarray(differences, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("differences must be an array with bars along the last axis")
    if not np.isfinite(x).all():
        raise ValueError("differences must be finite")
    if x.size and np.abs(x).max() > bound_r:
        raise ValueError(
            f"differences must lie in [-{bound_r}, {bound_r}]; clip them with paired_differences"
        )
    return x


def _log_mean_exp(log_values: np.ndarray) -> np.ndarray:
    """log of the mean of exp over the last axis (the grid of bets), without overflow."""
    top = log_values.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    mean = np.exp(log_values - top).mean(axis=-1)
    return np.log(mean) + top[..., 0]
