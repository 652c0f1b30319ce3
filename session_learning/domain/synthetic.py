"""Deterministic synthetic OHLCV bars with regime-changing, learnable structure.

This is the embedded market-data source for demos and tests: no network, no files, and the same
bars on every machine. It is *not* a model of any real market; it exists so that the learning
loop has something learnable to learn, and so that structure changes at known times.

Calendar
    24/5, FX-style: a bar exists when its UTC open time falls Monday to Friday; Saturday and
    Sunday have no bars, and Monday's first bar opens at Friday's last close (no weekend gap).
    Every timeframe in ``models.TIMEFRAMES`` divides a day, so each trading week has a fixed
    number of bars.

Determinism
    Each path starts at ``EPOCH`` (Monday 2024-01-01 00:00 UTC) and is generated forward, with
    the random numbers of each trading week drawn from their own generator. Bar ``k`` therefore
    depends only on the seed and on bars ``0..k``: asking for a sub-range returns exactly the
    bars that slicing a longer request returns. Seeds come from a stable hash of
    ``(seed, symbol, timeframe)``, so symbols and timeframes get different but reproducible
    paths; the regime schedule comes from ``(seed, symbol)`` only, so all timeframes of a symbol
    change regime at the same times.

Regimes (``REGIMES``)
    ``trend``: a persistent, slowly wandering drift (momentum: moves continue), normal
    volatility. ``range``: mean reversion towards the price where the range began, about half
    the volatility. ``burst``: about 2.4x normal volatility with no exploitable direction.
    Regimes switch only on 4-hour session boundaries; trends and ranges last 2 to 12 trading
    days, bursts half a day to three days, and a regime never follows itself. The structure
    flips sign between trend and range (a stretched price runs on in one and snaps back in the
    other), and the regimes differ in volatility level, efficiency and autocorrelation, so
    causal features can tell them apart: a model trained across regimes learns both rules, one
    trained inside a single regime fails after the flip. ``regime_schedule`` gives the answer.

Scale
    Drift persistence and reversion speed are defined in bars, so every timeframe shows the same
    patterns to bar-based features; volatility scales with the square root of the bar length and
    follows a UTC intraday profile (quiet Asian hours, busy London/New York overlap). Trends are
    far stronger than in real markets, on purpose; so that years of them keep a realistic price
    level, a trend that carries the price more than ten daily volatilities from the profile
    price turns round. As a yardstick, CatBoost on the default features with 2/1 ATR
    barriers, 24 bars of holding and costs of 0.1 ATR reaches a profit factor of roughly 1.5-2.5
    on the 3,000 bars after an 8,000-bar training window.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from session_learning.domain.models import BAR_COLUMNS, timeframe_delta

EPOCH = pd.Timestamp("2024-01-01 00:00", tz="UTC")  # a Monday
REGIMES = ("trend", "range", "burst")


@dataclass(frozen=True)
class SymbolProfile:
    """Price level and volatility of one synthetic symbol.

    ``daily_volatility`` is the standard deviation of the log return over one 24-hour trading
    day in normal (trend-regime) conditions before the intraday profile; ``volume_per_hour`` is
    the mean tick volume per hour.
    """

    price: float
    daily_volatility: float
    digits: int
    volume_per_hour: float


# Roughly the levels and volatilities of late 2023 / 2024. Read-only: cached paths depend on it.
SYMBOL_PROFILES: Mapping[str, SymbolProfile] = MappingProxyType(
    {
        "EURUSD": SymbolProfile(
            price=1.08, daily_volatility=0.0050, digits=5, volume_per_hour=2400
        ),
        "GBPUSD": SymbolProfile(
            price=1.27, daily_volatility=0.0060, digits=5, volume_per_hour=2000
        ),
        "USDJPY": SymbolProfile(
            price=148.0, daily_volatility=0.0050, digits=3, volume_per_hour=2200
        ),
        "XAUUSD": SymbolProfile(
            price=2000.0, daily_volatility=0.0088, digits=2, volume_per_hour=3000
        ),
        "XAGUSD": SymbolProfile(
            price=23.5, daily_volatility=0.0150, digits=3, volume_per_hour=1200
        ),
    }
)
GENERIC_PROFILE = SymbolProfile(price=100.0, daily_volatility=0.010, digits=2, volume_per_hour=1000)

# --- structure, in bars unless stated -------------------------------------------------------
_TRADING_DAYS_PER_WEEK = 5
_BLOCK = pd.Timedelta(hours=4)  # regimes switch on these boundaries (one learning session)
_VOL_MULTIPLIER = np.array([1.0, 0.55, 2.4])  # trend, range, burst
_DURATION_BLOCKS = ((12, 72), (12, 72), (3, 18))  # 4-hour blocks, inclusive, per regime
_BURST_CHANCE = 0.3  # chance that a trend or a range is followed by a burst
_DRIFT_PERSISTENCE = 120.0  # bars: e-folding time of the trend drift
_DRIFT_STD = 0.5  # stationary std of the drift, in base per-bar volatilities
_RANGE_REVERSION = 1.0 / 8.0  # fraction of the distance to the range's anchor closed per bar
# Beyond this many daily volatilities from the profile price, trends turn round and the price is
# pulled back (a fraction of the excess per bar), so years of strong trends keep a realistic level.
_LEVEL_BAND = 10.0
_WALL = 1.0 / 100.0
_WICK = 0.5  # mean wick length in per-bar volatilities, roughly a Brownian bar's
# Relative volatility by UTC hour: Asia, London, London/New York overlap, New York, late.
_HOURLY_VOLATILITY = np.array([0.7] * 7 + [1.1] * 5 + [1.4] * 4 + [1.0] * 5 + [0.65] * 3)
_HOURLY_VOLATILITY /= np.sqrt(np.mean(_HOURLY_VOLATILITY**2))  # keeps the daily variance
_STREAM_REGIMES, _STREAM_BARS = 0, 1
_CACHE_WEEKS = 26  # paths are generated in half-year steps
_CACHE_PATHS = 16  # (symbol, timeframe, seed) paths kept, least recently used dropped first
_CACHE: OrderedDict[tuple[str, str, int], tuple[pd.DataFrame, np.ndarray]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def symbol_profile(symbol: str) -> SymbolProfile:
    """The profile of ``symbol``, or ``GENERIC_PROFILE`` (price 100, 1% a day) if unknown."""
    return SYMBOL_PROFILES.get(symbol, GENERIC_PROFILE)


def _stable_key(*parts: object) -> int:
    """A 64-bit seed from the parts' text; unlike ``hash()``, identical in every process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _to_utc(value: object, what: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        raise ValueError(f"{what} is not a time: {value!r}")
    # Naive times are read as UTC, the only time zone bars use.
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _bars_per_week(bar: pd.Timedelta) -> int:
    if _BLOCK % bar:
        raise ValueError(f"a {bar} bar does not divide the 4-hour regime blocks")
    return _TRADING_DAYS_PER_WEEK * int(pd.Timedelta(days=1) / bar)


def _bar_position(stamp: pd.Timestamp, bar: pd.Timedelta) -> int:
    """Number of grid bars (counted from ``EPOCH``) whose open time is before ``stamp``."""
    week = pd.Timedelta(days=7)
    offset = stamp - EPOCH
    weeks, within = divmod(offset, week)
    per_week = _bars_per_week(bar)
    if within >= pd.Timedelta(days=_TRADING_DAYS_PER_WEEK):
        return (weeks + 1) * per_week
    # Ceiling division: a bar opening exactly at ``stamp`` is not before it.
    return weeks * per_week + -(-within // bar)


def _bar_times(first: int, stop: int, bar: pd.Timedelta) -> pd.DatetimeIndex:
    positions = np.arange(first, stop, dtype=np.int64)
    per_week = _bars_per_week(bar)
    weeks, within = np.divmod(positions, per_week)
    ns = (
        EPOCH.as_unit("ns").value
        + weeks * pd.Timedelta(days=7).value
        + within * bar.as_unit("ns").value
    )
    index = pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")
    index.name = "time"
    return index


def _regime_codes(symbol: str, seed: int, n_blocks: int) -> np.ndarray:
    """Regime code (index into ``REGIMES``) of each 4-hour trading block from ``EPOCH``.

    Draws exactly two numbers per regime from one generator, so a longer schedule starts with
    the same regimes as a shorter one.
    """
    rng = np.random.default_rng(
        np.random.SeedSequence(_stable_key("regimes", seed, symbol), spawn_key=(_STREAM_REGIMES,))
    )
    codes = np.empty(n_blocks, dtype=np.int8)
    filled = 0
    regime = int(rng.random() < 0.5)  # start in a trend or a range
    while filled < n_blocks:
        shortest, longest = _DURATION_BLOCKS[regime]
        choice, length = rng.random(), rng.random()
        duration = shortest + int(length * (longest - shortest + 1))
        codes[filled : filled + duration] = regime
        filled += duration
        # A regime never follows itself.
        if regime == 2:
            regime = int(choice < 0.5)
        elif choice < _BURST_CHANCE:
            regime = 2
        else:
            regime = 1 - regime
    return codes


def _log_deviation(
    regimes: list[int],
    noise: list[float],
    drift_noise: list[float],
    drift_coefficient: float,
    range_reversion: float,
    band: float,
    wall: float,
) -> np.ndarray:
    """Log price minus log profile price, bar by bar (a plain loop: each step needs the last).

    The drift is an AR(1) process, ``drift = drift_coefficient * drift + drift_noise``, always
    running but applied only in trends. trend: ``y += drift + noise``; range: ``y += noise -
    range_reversion * (y - anchor)``, the anchor being the price where the range began; burst:
    ``y += noise``. Beyond ``band`` a drift pointing further out is reflected, so a trend turns
    round rather than stalls, and ``wall`` of the excess is taken off per bar.
    """
    out = np.empty(len(regimes))
    y = anchor = drift = 0.0
    previous = -1
    for t, regime in enumerate(regimes):
        excess = y - band if y > band else (y + band if y < -band else 0.0)
        drift = drift_coefficient * drift + drift_noise[t]
        if excess * drift > 0.0:
            drift = -drift
        if regime != previous:
            anchor, previous = y, regime
        step = noise[t] - wall * excess
        if regime == 0:
            step += drift
        elif regime == 1:
            step -= range_reversion * (y - anchor)
        y += step
        out[t] = y
    return out


def _generate_path(
    symbol: str, timeframe: str, seed: int, n_weeks: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``n_weeks`` trading weeks of bars and regime codes from ``EPOCH``."""
    bar = timeframe_delta(timeframe)
    profile = symbol_profile(symbol)
    per_week = _bars_per_week(bar)
    n_bars = n_weeks * per_week
    bars_per_block = int(_BLOCK / bar)
    regimes = np.repeat(_regime_codes(symbol, seed, n_bars // bars_per_block), bars_per_block)

    # Each week draws its own numbers, so the path is prefix-stable whatever n_weeks is.
    key = _stable_key("bars", seed, symbol, timeframe)
    draws = np.concatenate(
        [
            np.random.default_rng(
                np.random.SeedSequence(key, spawn_key=(_STREAM_BARS, week))
            ).standard_normal((5, per_week))
            for week in range(n_weeks)
        ],
        axis=1,
    )
    shock, drift_shock, upper, lower, volume_noise = draws

    base_sigma = profile.daily_volatility * np.sqrt(bar / pd.Timedelta(days=1))
    hours = _bar_times(0, per_week, bar).hour.to_numpy()
    intraday = np.tile(_HOURLY_VOLATILITY[hours], n_weeks)
    sigma = base_sigma * intraday * _VOL_MULTIPLIER[regimes]

    drift_coefficient = 1.0 - 1.0 / _DRIFT_PERSISTENCE
    deviation = _log_deviation(
        regimes.tolist(),
        (sigma * shock).tolist(),
        (_DRIFT_STD * base_sigma * np.sqrt(1.0 - drift_coefficient**2) * drift_shock).tolist(),
        drift_coefficient=drift_coefficient,
        range_reversion=_RANGE_REVERSION,
        band=_LEVEL_BAND * profile.daily_volatility,
        wall=_WALL,
    )
    log_close = np.log(profile.price) + deviation

    close = np.exp(log_close)
    open_ = np.concatenate(([profile.price], close[:-1]))
    high = np.maximum(open_, close) * np.exp(_WICK * sigma * np.abs(upper))
    low = np.minimum(open_, close) * np.exp(-_WICK * sigma * np.abs(lower))
    volume = (
        profile.volume_per_hour
        * (bar / pd.Timedelta(hours=1))
        * intraday
        * np.sqrt(_VOL_MULTIPLIER[regimes])
        * (0.6 + 0.4 * np.abs(shock))
        * np.exp(0.3 * volume_noise)
    )
    frame = pd.DataFrame(
        {
            # Rounding is monotone, so high >= max(open, close) >= min(open, close) >= low holds.
            "open": np.round(open_, profile.digits),
            "high": np.round(high, profile.digits),
            "low": np.round(low, profile.digits),
            "close": np.round(close, profile.digits),
            "volume": np.maximum(np.round(volume), 1.0),
        },
        index=_bar_times(0, n_bars, bar),
    )
    return frame, regimes


def _path(symbol: str, timeframe: str, seed: int, n_bars: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A generated path of at least ``n_bars`` bars, from the cache.

    One path per (symbol, timeframe, seed) is kept, the longest generated so far; a shorter
    request is served from it, since paths are prefix-stable. A longer one regenerates the path
    in whole ``_CACHE_WEEKS`` steps.
    """
    key = (symbol, timeframe, seed)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and len(cached[0]) >= n_bars:
            _CACHE.move_to_end(key)
            return cached
    per_step = _CACHE_WEEKS * _bars_per_week(timeframe_delta(timeframe))
    n_weeks = max(1, -(-n_bars // per_step)) * _CACHE_WEEKS
    path = _generate_path(symbol, timeframe, seed, n_weeks)
    with _CACHE_LOCK:
        _CACHE[key] = path
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_PATHS:
            _CACHE.popitem(last=False)
    return path


def _window(
    symbol: str, timeframe: str, start: object, end: object, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    bar = timeframe_delta(timeframe)
    start_utc, end_utc = _to_utc(start, "start"), _to_utc(end, "end")
    if start_utc < EPOCH:
        raise ValueError(f"synthetic bars begin at {EPOCH.isoformat()}; got start {start_utc}")
    first = _bar_position(start_utc, bar)
    stop = max(first, _bar_position(end_utc, bar))
    frame, regimes = _path(symbol, timeframe, int(seed), stop)
    return frame.iloc[first:stop], regimes[first:stop]


def generate_bars(
    symbol: str, timeframe: str, start: object, end: object, seed: int = 7
) -> pd.DataFrame:
    """Synthetic OHLCV bars of ``symbol`` whose UTC open time is in ``[start, end)``.

    ``start``/``end`` are anything ``pd.Timestamp`` accepts (naive means UTC) and must not be
    before ``EPOCH``. Returns float columns ``open, high, low, close, volume`` indexed by open
    time (``"time"``, UTC, weekdays only); empty when no bar opens in the range. The same
    arguments always return the same bars, and a sub-range equals the slice of a longer range.
    """
    frame, _ = _window(symbol, timeframe, start, end, seed)
    return frame.loc[:, list(BAR_COLUMNS)].copy()


def regime_schedule(
    symbol: str, timeframe: str, start: object, end: object, seed: int = 7
) -> pd.Series:
    """The regime (``"trend"``, ``"range"`` or ``"burst"``) of each bar ``generate_bars``
    returns for the same arguments: the known answer when checking what a model learned.

    A categorical Series named ``"regime"`` on the same index. All timeframes of a symbol share
    the schedule, which changes only on 4-hour session boundaries.
    """
    frame, regimes = _window(symbol, timeframe, start, end, seed)
    values = pd.Categorical.from_codes(regimes.astype(np.int64), categories=list(REGIMES))
    return pd.Series(values, index=frame.index.copy(), name="regime")
