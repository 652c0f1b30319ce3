"""Deterministic synthetic OHLCV bars with regime-changing, learnable structure.

This is the embedded market-data source for demos and tests: no network, no files, and the same
bars on every machine. It is *not* a model of any real market; it exists so that the learning
loop has something learnable to learn, and so that structure changes at known times.

Calendar
    Bars follow the symbol's trading calendar (``session_learning.domain.calendars``; EURUSD on
    CME Globex FX, XAUUSD on CME Globex metals, unknown symbols on the 24/5 fallback, or any
    calendar passed in): a bar exists exactly when the calendar expects one, so the weekend,
    the daily break, Christmas, New Year and early closes have no bars, and the Sunday open
    moves with US summer time. The first bar after a closure opens at the last close before it
    (no price gap over closures).

Determinism
    Each path starts at ``EPOCH`` (Monday 2024-01-01 00:00 UTC) and is generated forward, with
    the random numbers of each calendar week drawn from their own generator, one per bar slot
    of the week whether or not the calendar is open then. Bar ``k`` therefore depends only on
    the seed, the calendar and bars ``0..k``: asking for a sub-range returns exactly the bars
    that slicing a longer request returns. Seeds come from a stable hash of
    ``(seed, symbol, timeframe)``, so symbols and timeframes get different but reproducible
    paths; the regime schedule comes from ``(seed, symbol)`` and the calendar only, so all
    timeframes of a symbol change regime at the same times.

Regimes (``REGIMES``)
    ``trend``: a persistent, slowly wandering drift (momentum: moves continue), normal
    volatility. ``range``: mean reversion towards the price where the range began, about half
    the volatility. ``burst``: about 2.4x normal volatility with no exploitable direction.
    Regimes switch only on 4-hour session boundaries (counting the 4-hour blocks in which the
    calendar trades); trends and ranges last 2 to 12 trading days, bursts half a day to three
    days, and a regime never follows itself. The structure
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

from session_learning.domain.calendars import TradingCalendar, calendar_for, get_calendar
from session_learning.domain.keys import BAR_COLUMNS, timeframe_delta

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
_WEEK = pd.Timedelta(days=7)
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
_CACHE: OrderedDict[tuple[str, str, int, str], tuple[pd.DataFrame, np.ndarray]] = OrderedDict()
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


def _slots_per_week(bar: pd.Timedelta) -> int:
    if _BLOCK % bar:
        raise ValueError(f"a {bar} bar does not divide the 4-hour regime blocks")
    return int(_WEEK / bar)


def _weeks_until(stamp: pd.Timestamp) -> int:
    """Whole calendar weeks from ``EPOCH`` that cover every bar opening before ``stamp``."""
    return max(0, -(-(stamp - EPOCH) // _WEEK))


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
    symbol: str, timeframe: str, seed: int, n_weeks: int, calendar: TradingCalendar
) -> tuple[pd.DataFrame, np.ndarray]:
    """The bars and regime codes of the first ``n_weeks`` calendar weeks from ``EPOCH``."""
    bar = timeframe_delta(timeframe)
    profile = symbol_profile(symbol)
    per_week = _slots_per_week(bar)
    horizon = EPOCH + n_weeks * _WEEK
    times = calendar.expected_bar_times(EPOCH, horizon - bar, bar)
    times.name = "time"
    # Regimes run over the 4-hour blocks in which the calendar trades, shared by timeframes.
    blocks = calendar.expected_bar_times(EPOCH, horizon - _BLOCK, _BLOCK)
    codes = _regime_codes(symbol, seed, len(blocks))
    own_block = EPOCH + ((times - EPOCH) // _BLOCK) * _BLOCK
    regimes = codes[blocks.searchsorted(own_block)] if len(times) else codes[:0]

    # Each week draws its own numbers, one per bar slot, so the path is prefix-stable.
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
    slots = ((times - EPOCH) // bar).to_numpy(dtype=np.int64)
    shock, drift_shock, upper, lower, volume_noise = draws[:, slots]

    base_sigma = profile.daily_volatility * np.sqrt(bar / pd.Timedelta(days=1))
    intraday = _HOURLY_VOLATILITY[times.hour.to_numpy()]
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
        index=times,
    )
    return frame, regimes


def _path(
    symbol: str, timeframe: str, seed: int, n_weeks: int, calendar: TradingCalendar
) -> tuple[pd.DataFrame, np.ndarray]:
    """A generated path of at least ``n_weeks`` calendar weeks, from the cache.

    One path per (symbol, timeframe, seed, calendar) is kept, the longest generated so far; a
    shorter request is served from it, since paths are prefix-stable. A longer one regenerates
    the path in whole ``_CACHE_WEEKS`` steps.
    """
    key = (symbol, timeframe, seed, calendar.name)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0].attrs["weeks"] >= n_weeks:
            _CACHE.move_to_end(key)
            return cached
    weeks = max(1, -(-n_weeks // _CACHE_WEEKS)) * _CACHE_WEEKS
    path = _generate_path(symbol, timeframe, seed, weeks, calendar)
    path[0].attrs["weeks"] = weeks
    with _CACHE_LOCK:
        _CACHE[key] = path
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_PATHS:
            _CACHE.popitem(last=False)
    return path


def _window(
    symbol: str,
    timeframe: str,
    start: object,
    end: object,
    seed: int,
    calendar: str | TradingCalendar | None,
) -> tuple[pd.DataFrame, np.ndarray]:
    timeframe_delta(timeframe)
    chosen = calendar_for(symbol) if calendar is None else get_calendar(calendar)
    start_utc, end_utc = _to_utc(start, "start"), _to_utc(end, "end")
    if start_utc < EPOCH:
        raise ValueError(f"synthetic bars begin at {EPOCH.isoformat()}; got start {start_utc}")
    frame, regimes = _path(symbol, timeframe, int(seed), _weeks_until(end_utc), chosen)
    first = int(frame.index.searchsorted(start_utc))
    stop = max(first, int(frame.index.searchsorted(end_utc)))
    return frame.iloc[first:stop], regimes[first:stop]


def generate_bars(
    symbol: str,
    timeframe: str,
    start: object,
    end: object,
    seed: int = 7,
    calendar: str | TradingCalendar | None = None,
) -> pd.DataFrame:
    """Synthetic OHLCV bars of ``symbol`` whose UTC open time is in ``[start, end)``.

    ``start``/``end`` are anything ``pd.Timestamp`` accepts (naive means UTC) and must not be
    before ``EPOCH``. ``calendar`` (a name or a ``TradingCalendar``) defaults to the symbol's.
    Returns float columns ``open, high, low, close, volume`` indexed by open time (``"time"``,
    UTC, only while the calendar trades); empty when no bar opens in the range. The same
    arguments always return the same bars, and a sub-range equals the slice of a longer range.
    """
    frame, _ = _window(symbol, timeframe, start, end, seed, calendar)
    return frame.loc[:, list(BAR_COLUMNS)].copy()


def regime_schedule(
    symbol: str,
    timeframe: str,
    start: object,
    end: object,
    seed: int = 7,
    calendar: str | TradingCalendar | None = None,
) -> pd.Series:
    """The regime (``"trend"``, ``"range"`` or ``"burst"``) of each bar ``generate_bars``
    returns for the same arguments: the known answer when checking what a model learned.

    A categorical Series named ``"regime"`` on the same index. All timeframes of a symbol share
    the schedule, which changes only on 4-hour session boundaries.
    """
    frame, regimes = _window(symbol, timeframe, start, end, seed, calendar)
    values = pd.Categorical.from_codes(regimes.astype(np.int64), categories=list(REGIMES))
    return pd.Series(values, index=frame.index.copy(), name="regime")
