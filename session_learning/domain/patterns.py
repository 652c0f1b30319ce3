"""Loser patterns of one model: when, in which volatility, at what confidence and over what
holding time its trades lose more often than the model does overall.

Every trade falls in one bucket of each dimension:

- ``hour_of_day``: the UTC hour of its entry (``PatternRules.hour_block`` hours per bucket);
- ``volatility``: the ATR of its decision bar (the last bar closed at entry) as a percentile of
  the ATRs of the trailing ``volatility_window`` bars: ``low`` (<= 1/3), ``mid``, ``high``
  (> 2/3). Needs bars; without them the dimension is skipped, and the analysis says so;
- ``confidence``: below 0.5, 0.5 to 0.7, 0.7 and above (``confidence_edges``);
- ``bars_held``: (exit - entry) / bar length: quick (< 3), medium (3 to < 12), long (>= 12)
  (``held_bar_edges``).

A bucket is a loser pattern when all four hold (``PatternRules``):

1. it has at least ``min_trades`` trades (default 8);
2. at least ``min_losers`` of them lost, pnl < 0 (default 5);
3. its loss rate is at least ``min_excess`` (default 0.20) above the model's overall loss rate
   (losers / trades over every trade given);
4. the one-sided exact binomial test is significant: P[X >= losers] < ``max_p_value``
   (default 0.10) for X ~ Binomial(trades, overall loss rate).

Hour-of-day and volatility patterns describe the market at decision time, so ``pattern_weights``
can give the matching training rows extra weight. Confidence and holding-time patterns describe
the model's output and the trade's outcome; they are reported, and select no training rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from session_learning.domain.features import atr
from session_learning.domain.keys import ModelKey

DIMENSIONS = ("hour_of_day", "volatility", "confidence", "bars_held")
# Dimensions whose buckets are known at decision time, so training rows can be selected by them.
ROW_DIMENSIONS = ("hour_of_day", "volatility")
VOLATILITY_REGIMES = ("low", "mid", "high")
_REGIME_EDGES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
PATTERN_BOOST = 1.5
# Rates are compared with this slack so that 0.75 - 0.55 counts as the 0.20 it is meant to be.
_EPS = 1e-9
_TRADE_COLUMNS = ("symbol", "timeframe", "entry_time", "exit_time", "pnl", "confidence")


@dataclass(frozen=True)
class PatternRules:
    """Buckets of each dimension and the rule that makes a bucket a loser pattern."""

    min_trades: int = 8
    min_losers: int = 5
    min_excess: float = 0.20
    max_p_value: float = 0.10
    hour_block: int = 1  # hours per hour-of-day bucket; divides 24
    volatility_window: int = 240  # bars the ATR percentile is taken over
    atr_period: int = 14
    confidence_edges: tuple[float, float] = (0.5, 0.7)
    held_bar_edges: tuple[float, float] = (3.0, 12.0)
    # For training weights: days of trades searched before a candidate's held-out span.
    lookback_days: int = 28

    def __post_init__(self) -> None:
        if self.hour_block < 1 or 24 % self.hour_block:
            raise ValueError(f"hour_block must divide 24, got {self.hour_block}")
        for name in ("confidence_edges", "held_bar_edges"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} must be increasing, got {(low, high)}")
        if self.min_trades < 1 or self.min_losers < 0:
            raise ValueError("min_trades must be >= 1 and min_losers >= 0")
        if self.volatility_window < 3 or self.atr_period < 1:
            raise ValueError("volatility_window must be >= 3 and atr_period >= 1")
        if self.lookback_days < 1:
            raise ValueError(f"lookback_days must be >= 1, got {self.lookback_days}")


@dataclass(frozen=True)
class LoserPattern:
    """A bucket of one dimension where the model loses significantly more often than overall."""

    model: str  # ModelKey.slug
    dimension: str  # one of DIMENSIONS
    bucket: str
    trades: int
    winners: int
    losers: int
    loss_rate: float
    baseline_loss_rate: float
    p_value: float
    message: str
    # Which training rows the pattern selects (see pattern_weights):
    hours: tuple[int, ...] = ()  # hour_of_day: the UTC entry hours of the bucket
    atr_percentile: tuple[float, float] | None = None  # volatility: (low, high] of the percentile
    volatility_window: int | None = None  # volatility: how the percentile was measured
    atr_period: int | None = None

    @property
    def selects_rows(self) -> bool:
        """True for patterns ``pattern_weights`` can apply to training rows."""
        return self.dimension in ROW_DIMENSIONS

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists), e.g. to store in a retraining plan."""
        out = asdict(self)
        out["hours"] = list(self.hours)
        out["atr_percentile"] = list(self.atr_percentile) if self.atr_percentile else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LoserPattern:
        data = dict(data)
        data["hours"] = tuple(data.get("hours") or ())
        if data.get("atr_percentile") is not None:
            data["atr_percentile"] = tuple(data["atr_percentile"])
        return cls(**data)


@dataclass(frozen=True)
class PatternAnalysis:
    """Every bucket of every dimension, the patterns among them, and what was left out."""

    model: str
    trades: int
    losers: int
    baseline_loss_rate: float
    patterns: tuple[LoserPattern, ...]
    # One row per non-empty bucket: dimension, bucket, trades, winners, losers, loss_rate,
    # excess, p_value, flagged, verdict (the first rule a bucket fails, or "loser pattern").
    buckets: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)  # dimension -> why not analysed
    notes: tuple[str, ...] = ()  # trades a dimension could not place, and why


@dataclass(frozen=True)
class _Bucket:
    label: str
    hours: tuple[int, ...] = ()
    atr_percentile: tuple[float, float] | None = None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), summed exactly term by term.

    Terms are added in log space (``math.comb`` of large n overflows a float), so the result is
    exact to floating-point rounding for any n.
    """
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.log(math.comb(n, i)) + i * log_p + (n - i) * log_q for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def atr_percentile(bars: pd.DataFrame, window: int = 240, atr_period: int = 14) -> pd.Series:
    """Percentile rank in (0, 1] of each bar's ATR among the ATRs of the last ``window`` bars
    (itself included; ties share the average rank). Causal; NaN until ``window`` ATRs exist,
    and NaN wherever the ``window + atr_period`` bars it rests on hold a bar without prices
    (``held_out_bars`` blanks bars that way)."""
    ranks = atr(bars, atr_period).rolling(window, min_periods=window).rank(pct=True)
    missing = bars[["high", "low", "close"]].isna().any(axis=1).astype(float)
    if not missing.any():
        return ranks
    touched = missing.rolling(window + atr_period, min_periods=1).max().to_numpy() > 0
    return ranks.where(~touched)


def held_out_bars(bars: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """``bars`` with the prices of bars opening in ``[start, end)`` blanked (NaN), so that no ATR
    percentile (search or weights) rests on them."""
    index = _utc_index(bars)
    out = bars.copy()
    held = (index >= start) & (index < end)
    out.loc[held, ["open", "high", "low", "close"]] = np.nan
    return out


def trades_outside(
    trades: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, bar: pd.Timedelta
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``trades`` into those a pattern search may use when the bars opening in
    ``[start, end)`` are held out (a candidate's purge, validation window and embargo), and the
    rest: a trade may be used when it was over before ``start`` (exited before that bar opened)
    or decided at or after ``end`` (its decision bar opened there or later). Any other trade saw
    a held-out price, or its outcome did."""
    if trades.empty:
        return trades, trades
    decided = pd.DatetimeIndex(decision_bar_times(trades["entry_time"], bar))
    exited = pd.DatetimeIndex(pd.to_datetime(trades["exit_time"], utc=True))
    usable = np.asarray((exited < start) | (decided >= end))
    return trades.loc[usable], trades.loc[~usable]


def volatility_regime(percentile: pd.Series) -> pd.Series:
    """``low`` / ``mid`` / ``high`` tercile of an ATR percentile (NaN stays missing)."""
    regimes = pd.cut(
        percentile, bins=list(_REGIME_EDGES), labels=list(VOLATILITY_REGIMES), right=True
    )
    return regimes.astype(object).where(regimes.notna(), None)


def decision_bar_times(entry_times: pd.Series | pd.DatetimeIndex, bar: pd.Timedelta) -> pd.Series:
    """The bar each trade was decided on: the last bar that closed at or before its entry."""
    times = pd.Series(pd.to_datetime(entry_times, utc=True))
    return times.dt.floor(bar) - bar


def _utc_index(bars: pd.DataFrame) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(bars.index)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _model_of(trades: pd.DataFrame) -> ModelKey:
    missing = [c for c in _TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise ValueError(f"trades lack columns: {', '.join(missing)}")
    models = trades[["symbol", "timeframe"]].drop_duplicates()
    if len(models) != 1:
        found = ", ".join(f"{s} {t}" for s, t in models.itertuples(index=False))
        raise ValueError(f"loser patterns are found per model; got trades of: {found or 'none'}")
    symbol, timeframe = models.iloc[0]
    return ModelKey(str(symbol), str(timeframe))


def _hour_buckets(entry: pd.Series, rules: PatternRules) -> tuple[pd.Series, list[_Bucket]]:
    block = rules.hour_block
    start = (entry.dt.hour // block) * block
    buckets = [
        _Bucket(f"{h:02d}:00-{h + block:02d}:00 UTC", hours=tuple(range(h, h + block)))
        for h in range(0, 24, block)
    ]
    labels = start.map({b.hours[0]: b.label for b in buckets})
    return labels, buckets


def _edge_buckets(
    values: pd.Series, edges: tuple[float, float], names: Sequence[str]
) -> tuple[pd.Series, list[_Bucket]]:
    low, high = edges
    labels = np.select(
        [values < low, values < high, values >= high], list(names), default=None
    ).astype(object)
    return pd.Series(labels, index=values.index), [_Bucket(n) for n in names]


def _volatility_buckets(
    entry: pd.Series, key: ModelKey, bars: pd.DataFrame, rules: PatternRules
) -> tuple[pd.Series, list[_Bucket], list[str]]:
    percentile = atr_percentile(bars, rules.volatility_window, rules.atr_period)
    percentile.index = _utc_index(bars)
    decided = decision_bar_times(entry, key.bar)
    values = percentile.reindex(pd.DatetimeIndex(decided))
    no_bar = ~pd.DatetimeIndex(decided).isin(percentile.index)
    regimes = volatility_regime(pd.Series(values.to_numpy(), index=entry.index))
    notes = []
    if no_bar.any():
        notes.append(f"volatility: {int(no_bar.sum())} trade(s) without their decision bar")
    warm = int((~no_bar & np.isnan(values.to_numpy())).sum())
    if warm:
        notes.append(
            f"volatility: {warm} trade(s) decided before {rules.volatility_window} ATR values "
            "existed"
        )
    buckets = [
        _Bucket(name, atr_percentile=(_REGIME_EDGES[i], _REGIME_EDGES[i + 1]))
        for i, name in enumerate(VOLATILITY_REGIMES)
    ]
    return regimes, buckets, notes


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _describe(dimension: str, bucket: _Bucket, rules: PatternRules) -> str:
    if dimension == "hour_of_day":
        return f"entries {bucket.label}"
    if dimension == "volatility":
        low, high = bucket.atr_percentile or (0.0, 1.0)
        return (
            f"entries in {bucket.label} volatility (ATR percentile {_pct(low)}-{_pct(high)} of "
            f"the last {rules.volatility_window} bars)"
        )
    if dimension == "confidence":
        return f"confidence {bucket.label}"
    return f"{bucket.label} trades"


def _verdict(
    trades: int, losers: int, excess: float, p_value: float, rules: PatternRules
) -> str | None:
    """The first rule a bucket fails, or None when it is a loser pattern."""
    if trades < rules.min_trades:
        return f"{trades} trades < {rules.min_trades}"
    if losers < rules.min_losers:
        return f"{losers} losers < {rules.min_losers}"
    if excess < rules.min_excess - _EPS:
        return f"loss rate only {100 * excess:+.0f} pts vs overall (< {100 * rules.min_excess:g})"
    if not p_value < rules.max_p_value:
        return f"not significant (p = {p_value:.3f} >= {rules.max_p_value:g})"
    return None


def analyze_loser_patterns(
    trades: pd.DataFrame, bars: pd.DataFrame | None = None, rules: PatternRules = PatternRules()
) -> PatternAnalysis:
    """Compare losers with winners in every bucket of every dimension (see the module doc).

    ``trades``: valid trades of one model (the session's, optionally with a lookback of recent
    journal trades). ``bars``: that model's bars covering the trades' decision bars plus
    ``volatility_window + atr_period`` bars before them, or None to skip the volatility
    dimension. Raises ``ValueError`` when the trades belong to more than one model.
    """
    columns = ["dimension", "bucket", "trades", "winners", "losers", "loss_rate", "excess"]
    columns += ["p_value", "flagged", "verdict"]
    if trades.empty:
        return PatternAnalysis("", 0, 0, math.nan, (), pd.DataFrame(columns=columns))
    key = _model_of(trades)
    pnl = trades["pnl"].astype(float)
    n, n_losers = len(trades), int((pnl < 0).sum())
    baseline = n_losers / n
    dimensions, skipped, notes = _dimensions(trades, key, bars, rules)
    rows, patterns = [], []
    for dimension in DIMENSIONS:
        if dimension not in dimensions:
            continue
        labels, buckets = dimensions[dimension]
        for bucket in buckets:
            inside = (labels == bucket.label).to_numpy()
            if int(inside.sum()) == 0:
                continue
            row = _bucket_row(dimension, bucket, pnl[inside], baseline, rules)
            rows.append(row)
            if row["flagged"]:
                patterns.append(_pattern(key, row, bucket, baseline, rules))
    for dimension in ("confidence", "bars_held"):
        unplaced = int(dimensions[dimension][0].isna().sum())
        if unplaced:
            notes.append(f"{dimension}: {unplaced} trade(s) without a value")
    return PatternAnalysis(
        model=key.slug,
        trades=n,
        losers=n_losers,
        baseline_loss_rate=baseline,
        patterns=tuple(patterns),
        buckets=pd.DataFrame(rows, columns=columns),
        skipped=skipped,
        notes=tuple(notes),
    )


def _dimensions(
    trades: pd.DataFrame, key: ModelKey, bars: pd.DataFrame | None, rules: PatternRules
) -> tuple[dict[str, tuple[pd.Series, list[_Bucket]]], dict[str, str], list[str]]:
    """Each dimension's bucket label per trade and its buckets; the dimensions skipped (with
    why) and notes on the way."""
    entry = pd.Series(pd.to_datetime(trades["entry_time"], utc=True), index=trades.index)
    exit_ = pd.Series(pd.to_datetime(trades["exit_time"], utc=True), index=trades.index)
    dimensions: dict[str, tuple[pd.Series, list[_Bucket]]] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    dimensions["hour_of_day"] = _hour_buckets(entry, rules)
    if bars is None:
        skipped["volatility"] = "no bars given: the ATR regime at entry needs the model's bars"
    else:
        labels, buckets, bar_notes = _volatility_buckets(entry, key, bars, rules)
        dimensions["volatility"] = (labels, buckets)
        notes += bar_notes
    low, high = rules.confidence_edges
    dimensions["confidence"] = _edge_buckets(
        trades["confidence"].astype(float),
        rules.confidence_edges,
        (f"<{low:g}", f"{low:g}-{high:g}", f">={high:g}"),
    )
    quick, long_ = rules.held_bar_edges
    dimensions["bars_held"] = _edge_buckets(
        (exit_ - entry) / key.bar,
        rules.held_bar_edges,
        (
            f"quick (<{quick:g} bars)",
            f"medium ({quick:g}-{long_:g} bars)",
            f"long (>={long_:g} bars)",
        ),
    )
    return dimensions, skipped, notes


def _bucket_row(
    dimension: str, bucket: _Bucket, pnl: pd.Series, baseline: float, rules: PatternRules
) -> dict:
    """One bucket's line of the analysis: its trades (``pnl``), loss rate against the
    ``baseline``, p-value and verdict (flagged when it is a loser pattern)."""
    count = len(pnl)
    losers = int((pnl < 0).sum())
    winners = int((pnl > 0).sum())
    loss_rate = losers / count
    p_value = binomial_tail(losers, count, baseline)
    verdict = _verdict(count, losers, loss_rate - baseline, p_value, rules)
    return {
        "dimension": dimension,
        "bucket": bucket.label,
        "trades": count,
        "winners": winners,
        "losers": losers,
        "loss_rate": loss_rate,
        "excess": loss_rate - baseline,
        "p_value": p_value,
        "flagged": verdict is None,
        "verdict": verdict or "loser pattern",
    }


def _pattern(
    key: ModelKey, row: dict, bucket: _Bucket, baseline: float, rules: PatternRules
) -> LoserPattern:
    """The loser pattern of a flagged bucket (``row`` from ``_bucket_row``)."""
    dimension, count, losers = row["dimension"], row["trades"], row["losers"]
    loss_rate, p_value = row["loss_rate"], row["p_value"]
    volatility = dimension == "volatility"
    return LoserPattern(
        model=key.slug,
        dimension=dimension,
        bucket=bucket.label,
        trades=count,
        winners=row["winners"],
        losers=losers,
        loss_rate=loss_rate,
        baseline_loss_rate=baseline,
        p_value=p_value,
        message=(
            f"{key}: {_describe(dimension, bucket, rules)} lost {losers}/{count} "
            f"({_pct(loss_rate)}) vs {_pct(baseline)} overall (p = {p_value:.3f})"
        ),
        hours=bucket.hours,
        atr_percentile=bucket.atr_percentile,
        volatility_window=rules.volatility_window if volatility else None,
        atr_period=rules.atr_period if volatility else None,
    )


def find_loser_patterns(
    trades: pd.DataFrame, bars: pd.DataFrame | None = None, rules: PatternRules = PatternRules()
) -> list[LoserPattern]:
    """The loser patterns of one model's trades (``analyze_loser_patterns(...).patterns``)."""
    return list(analyze_loser_patterns(trades, bars, rules).patterns)


def pattern_weights(
    patterns: Iterable[LoserPattern],
    decision_times: pd.DatetimeIndex,
    bar: pd.Timedelta,
    bars: pd.DataFrame | None = None,
    boost: float = PATTERN_BOOST,
) -> np.ndarray:
    """Sample weight of each decision row: ``boost`` where a trade decided on that row would fall
    in a flagged hour-of-day or volatility bucket, 1.0 elsewhere.

    A row decided at ``t`` enters at ``t + bar`` (the next bar's open), so its hour is that of
    ``t + bar``; its volatility regime is its own ATR percentile, measured as the pattern was
    (``bars`` must cover ``decision_times``; needed only for volatility patterns). A row matching
    several patterns gets ``boost`` once. Confidence and holding-time patterns select no rows.
    """
    if boost <= 0:
        raise ValueError(f"boost must be positive, got {boost}")
    times = pd.DatetimeIndex(pd.to_datetime(decision_times, utc=True))
    selected = np.zeros(len(times), dtype=bool)
    chosen = [p for p in patterns if p.selects_rows]
    if len({p.model for p in chosen}) > 1:
        raise ValueError("pattern_weights takes the patterns of one model")
    entry_hours = (times + bar).hour.to_numpy()
    percentiles: dict[tuple[int, int], np.ndarray] = {}
    for pattern in chosen:
        if pattern.dimension == "hour_of_day":
            selected |= np.isin(entry_hours, pattern.hours)
            continue
        if bars is None:
            raise ValueError(f"volatility pattern {pattern.bucket!r} needs the model's bars")
        window, period = pattern.volatility_window or 240, pattern.atr_period or 14
        if (window, period) not in percentiles:
            series = atr_percentile(bars, window, period)
            series.index = _utc_index(bars)
            percentiles[(window, period)] = series.reindex(times).to_numpy()
        low, high = pattern.atr_percentile or (0.0, 1.0)
        values = percentiles[(window, period)]
        with np.errstate(invalid="ignore"):
            selected |= (values > low) & (values <= high)
    return np.where(selected, boost, 1.0)
