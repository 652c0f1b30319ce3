"""Causal features from OHLCV bars, and the one ATR the project uses.

A *feature function* takes bars (see ``keys.BAR_COLUMNS``) and returns a DataFrame of feature
columns on the same index. The value of a feature at bar ``i`` may use bars ``0..i`` only: it is
known when bar ``i`` closes. ``build_features`` runs a tuple of feature functions and joins their
columns; ``DEFAULT_FEATURES`` is the built-in set; ``load_feature_function`` resolves a user's own
function from a ``"package.module:function"`` name given in configuration; and
``check_no_lookahead`` tests on real bars that a function does not peek at later bars.

Writing your own feature function::

    def my_features(bars: pd.DataFrame) -> pd.DataFrame:
        close = bars["close"]
        return pd.DataFrame({"ret_96": close / close.shift(96) - 1.0}, index=bars.index)

Extra parameters must have defaults (``functools.partial`` fixes them); column names must be
unique across all functions in use. Lookbacks are counted in bars, so the same function describes
a different span of time on each timeframe.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

FeatureFunction = Callable[[pd.DataFrame], pd.DataFrame]


class FeatureError(ValueError):
    """A feature function, or its output, breaks the feature contract."""


class LookAheadError(FeatureError):
    """A feature value at or before bar ``position`` changed when only later bars changed."""

    def __init__(self, function_name: str, column: str, position: int, changed_at: int) -> None:
        self.function_name = function_name
        self.column = column
        self.position = position
        self.changed_at = changed_at
        super().__init__(
            f"feature {column!r} of {function_name} looks ahead: its value at bar {changed_at} "
            f"changed when only bars after position {position} were changed"
        )


def function_name(feature_function: Callable[..., object]) -> str:
    """A readable name for a feature function, for error messages and model cards."""
    inner = getattr(feature_function, "func", feature_function)  # functools.partial
    module = getattr(inner, "__module__", None)
    name = getattr(inner, "__qualname__", None) or repr(inner)
    return f"{module}:{name}" if module else name


# --- ATR --------------------------------------------------------------------------------------


def true_range(bars: pd.DataFrame) -> pd.Series:
    """Wilder's true range: the bar's high-low range widened to include the previous close.

    The first bar has no previous close, so its true range is its high-low range.
    """
    high = bars["high"].to_numpy(dtype=float)
    low = bars["low"].to_numpy(dtype=float)
    prev_close = bars["close"].shift(1).to_numpy(dtype=float)
    # fmax ignores the NaN previous close of the first bar instead of propagating it.
    values = np.fmax(high - low, np.fmax(np.abs(high - prev_close), np.abs(low - prev_close)))
    return pd.Series(values, index=bars.index, name="true_range")


def _wilder_smooth(values: pd.Series, period: int) -> pd.Series:
    """Wilder's running mean: seeded with the simple mean of the first ``period`` valid values,
    then ``m[t] = m[t-1] + (x[t] - m[t-1]) / period``. NaN until ``period`` values were seen."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    x = values.to_numpy(dtype=float)
    valid = np.flatnonzero(~np.isnan(x))
    seeded = np.full(len(x), np.nan)
    if len(valid) >= period:
        seed_at = valid[period - 1]
        seeded[seed_at] = np.nanmean(x[: seed_at + 1])
        seeded[seed_at + 1 :] = x[seed_at + 1 :]
    # With adjust=False, ewm is exactly Wilder's recursion, and leading NaNs stay NaN.
    smoothed = pd.Series(seeded, index=values.index).ewm(alpha=1.0 / period, adjust=False).mean()
    return smoothed


def atr(bars: pd.DataFrame, period: int = 14) -> pd.Series:
    """Average true range with Wilder's smoothing, in price units; causal.

    The first ``period - 1`` bars are NaN; bar ``period - 1`` holds the simple mean of the first
    ``period`` true ranges, and every later bar ``atr[t] = atr[t-1] + (tr[t] - atr[t-1]) / period``.
    This is the ATR used everywhere: labels, TP/SL sizing and volatility regimes.
    """
    result = _wilder_smooth(true_range(bars), period)
    result.name = "atr"
    return result


# --- default feature functions -------------------------------------------------------------


def _log_returns(bars: pd.DataFrame) -> pd.Series:
    return np.log(bars["close"]).diff()


def returns(
    bars: pd.DataFrame, lookbacks: Sequence[int] = (1, 3, 12, 48), atr_period: int = 14
) -> pd.DataFrame:
    """Close-to-close move over each lookback, in ATRs (``ret_<n>``): momentum at several
    horizons, comparable across symbols and volatility levels."""
    close = bars["close"]
    scale = atr(bars, atr_period)
    return pd.DataFrame(
        {f"ret_{n}": (close - close.shift(n)) / scale for n in lookbacks}, index=bars.index
    )


def moving_average_distance(
    bars: pd.DataFrame, spans: Sequence[int] = (20, 100), atr_period: int = 14
) -> pd.DataFrame:
    """Distance of the close above its exponential moving averages, in ATRs
    (``ma_dist_<span>``): how stretched price is from its recent mean."""
    close = bars["close"]
    scale = atr(bars, atr_period)
    return pd.DataFrame(
        {
            f"ma_dist_{span}": (close - close.ewm(span=span, adjust=False, min_periods=span).mean())
            / scale
            for span in spans
        },
        index=bars.index,
    )


def zscore(bars: pd.DataFrame, window: int = 48) -> pd.DataFrame:
    """Z-score of the close against its rolling mean and standard deviation (``zscore_<w>``)."""
    close = bars["close"]
    rolling = close.rolling(window, min_periods=window)
    return pd.DataFrame(
        {f"zscore_{window}": (close - rolling.mean()) / rolling.std()}, index=bars.index
    )


def volatility_ratio(bars: pd.DataFrame, short: int = 12, long: int = 96) -> pd.DataFrame:
    """Short over long rolling standard deviation of log returns (``vol_ratio_<s>_<l>``):
    above 1 when volatility is expanding."""
    log_ret = _log_returns(bars)
    ratio = (
        log_ret.rolling(short, min_periods=short).std()
        / log_ret.rolling(long, min_periods=long).std()
    )
    return pd.DataFrame({f"vol_ratio_{short}_{long}": ratio}, index=bars.index)


def volatility_level(bars: pd.DataFrame, period: int = 14, long: int = 240) -> pd.DataFrame:
    """Volatility level: ATR as a percentage of the close (``natr_<p>``) and ATR relative to its
    own rolling mean over ``long`` bars (``atr_ratio_<l>``)."""
    value = atr(bars, period)
    return pd.DataFrame(
        {
            f"natr_{period}": 100.0 * value / bars["close"],
            f"atr_ratio_{long}": value / value.rolling(long, min_periods=long).mean(),
        },
        index=bars.index,
    )


def range_position(bars: pd.DataFrame, window: int = 24) -> pd.DataFrame:
    """Where the close sits in the high-low range of the last ``window`` bars, 0 at the low
    and 1 at the high (``range_pos_<w>``)."""
    lowest = bars["low"].rolling(window, min_periods=window).min()
    highest = bars["high"].rolling(window, min_periods=window).max()
    position = (bars["close"] - lowest) / (highest - lowest)
    return pd.DataFrame({f"range_pos_{window}": position}, index=bars.index)


def rsi(bars: pd.DataFrame, period: int = 14) -> pd.DataFrame:
    """Wilder's relative strength index rescaled to -1..1 (``rsi_<p>``; 0 is RSI 50)."""
    change = bars["close"].diff()
    gain = _wilder_smooth(change.clip(lower=0.0), period)
    loss = _wilder_smooth(-change.clip(upper=0.0), period)
    return pd.DataFrame({f"rsi_{period}": 2.0 * gain / (gain + loss) - 1.0}, index=bars.index)


def hour_of_day(bars: pd.DataFrame) -> pd.DataFrame:
    """UTC time of day of the bar's open on the unit circle (``hour_sin``, ``hour_cos``), so
    23:30 and 00:00 are neighbours; lets a model tell trading sessions apart."""
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise FeatureError("hour_of_day needs bars indexed by a DatetimeIndex")
    if index.tz is not None:
        index = index.tz_convert("UTC")
    hours = index.hour.to_numpy(dtype=float) + index.minute.to_numpy(dtype=float) / 60.0
    angle = 2.0 * np.pi * hours / 24.0
    return pd.DataFrame({"hour_sin": np.sin(angle), "hour_cos": np.cos(angle)}, index=bars.index)


def candle_shape(bars: pd.DataFrame) -> pd.DataFrame:
    """The bar's signed body and its upper and lower wicks as fractions of its high-low range
    (``body``, ``upper_wick``, ``lower_wick``)."""
    open_, high, low, close = (bars[c] for c in ("open", "high", "low", "close"))
    span = high - low
    return pd.DataFrame(
        {
            "body": (close - open_) / span,
            "upper_wick": (high - np.maximum(open_, close)) / span,
            "lower_wick": (np.minimum(open_, close) - low) / span,
        },
        index=bars.index,
    )


def return_autocorrelation(bars: pd.DataFrame, window: int = 96, lag: int = 1) -> pd.DataFrame:
    """Rolling correlation of log returns with themselves ``lag`` bars earlier
    (``autocorr_<w>``): positive while moves continue, negative while they revert."""
    log_ret = _log_returns(bars)
    corr = log_ret.rolling(window, min_periods=window).corr(log_ret.shift(lag))
    return pd.DataFrame({f"autocorr_{window}": corr}, index=bars.index)


def efficiency_ratio(bars: pd.DataFrame, window: int = 48) -> pd.DataFrame:
    """Kaufman's efficiency ratio (``efficiency_<w>``): net move over the path travelled in the
    last ``window`` bars; near 1 in a clean trend, near 0 in a range."""
    close = bars["close"]
    path = close.diff().abs().rolling(window, min_periods=window).sum()
    return pd.DataFrame(
        {f"efficiency_{window}": (close - close.shift(window)).abs() / path}, index=bars.index
    )


def relative_volume(bars: pd.DataFrame, window: int = 48) -> pd.DataFrame:
    """Log of volume over its rolling mean (``rel_volume_<w>``)."""
    volume = bars["volume"]
    mean = volume.rolling(window, min_periods=window).mean()
    return pd.DataFrame({f"rel_volume_{window}": np.log(volume / mean)}, index=bars.index)


# The built-in set, 20 columns: ret_1/3/12/48, ma_dist_20/100, zscore_48, vol_ratio_12_96,
# natr_14, atr_ratio_240, range_pos_24, rsi_14, hour_sin/cos, body, upper/lower_wick,
# autocorr_96, efficiency_48, rel_volume_48. The longest lookback is 240 bars.
DEFAULT_FEATURES: tuple[FeatureFunction, ...] = (
    returns,
    moving_average_distance,
    zscore,
    volatility_ratio,
    volatility_level,
    range_position,
    rsi,
    hour_of_day,
    candle_shape,
    return_autocorrelation,
    efficiency_ratio,
    relative_volume,
)


# --- loading, building, checking -------------------------------------------------------------


def load_feature_function(spec: str) -> FeatureFunction:
    """Resolve ``"package.module:function"`` (or ``"package.module:Object.attribute"``) to a
    feature function, so configuration can name user-supplied features.

    Importing the module runs its top-level code, as any Python import does; name only modules
    you trust. Raises ``FeatureError`` if the name is malformed, cannot be imported or is not
    callable.
    """
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise FeatureError(f"feature function {spec!r} must look like 'package.module:function'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise FeatureError(f"cannot import module {module_name!r} for {spec!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise FeatureError(
                f"{spec!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise FeatureError(f"{spec!r} is not callable")
    return target  # type: ignore[return-value]


def _run_feature_function(feature_function: FeatureFunction, bars: pd.DataFrame) -> pd.DataFrame:
    """Call one feature function and check its output: a DataFrame on ``bars.index`` with
    unique string column names and numeric values, returned as float64."""
    name = function_name(feature_function)
    # A shallow copy is free under copy-on-write and keeps a function that adds columns to its
    # input from changing the caller's bars or the input of the next function.
    try:
        output = feature_function(bars.copy(deep=False))
    except KeyError as exc:
        raise FeatureError(f"{name} needs column {exc} that the bars lack") from exc
    if not isinstance(output, pd.DataFrame):
        raise FeatureError(f"{name} returned {type(output).__name__}, expected a DataFrame")
    if not output.index.equals(bars.index):
        raise FeatureError(
            f"{name} returned a different index than the bars ({len(output)} rows for "
            f"{len(bars)} bars); keep the bars' index, e.g. pd.DataFrame(..., index=bars.index)"
        )
    names = list(output.columns)
    not_str = [c for c in names if not isinstance(c, str)]
    if not_str:
        raise FeatureError(f"{name} returned non-string column names: {not_str!r}")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise FeatureError(f"{name} returned duplicate columns: {duplicated}")
    try:
        return output.astype("float64")
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"{name} returned a non-numeric column: {exc}") from exc


def build_features(
    bars: pd.DataFrame, feature_functions: Sequence[FeatureFunction] = DEFAULT_FEATURES
) -> pd.DataFrame:
    """Run each feature function on ``bars`` and join their columns, in order.

    Returns float64 features on ``bars.index``. Rows before a lookback is filled hold NaN, and
    infinities (a division by a zero range) become NaN; CatBoost handles missing values. Raises
    ``FeatureError`` when a function needs a column the bars lack, returns something other than
    a numeric DataFrame on the bars' index, or when a column name appears twice (naming both
    functions).
    """
    if not isinstance(bars, pd.DataFrame):
        raise FeatureError(f"bars must be a DataFrame, got {type(bars).__name__}")
    if not feature_functions:
        raise FeatureError("no feature functions given")
    owner: dict[str, str] = {}
    frames = []
    for feature_function in feature_functions:
        frame = _run_feature_function(feature_function, bars)
        name = function_name(feature_function)
        for column in frame.columns:
            if column in owner:
                raise FeatureError(
                    f"feature column {column!r} is produced by both {owner[column]} and {name}"
                )
            owner[column] = name
        frames.append(frame)
    features = pd.concat(frames, axis=1)
    return features.replace([np.inf, -np.inf], np.nan)


def _default_probe_positions(n_bars: int) -> list[int]:
    # Early positions catch functions that look ahead only during warm-up (e.g. a backfill);
    # later ones catch centred windows and whole-series normalisation.
    candidates = [0, 1, 2, 5, 13, 30, 60, 120, 250, n_bars // 3, n_bars // 2, n_bars - 2]
    return sorted({p for p in candidates if 0 <= p < n_bars - 1})


def _perturbed(bars: pd.DataFrame, position: int, factors: np.ndarray) -> pd.DataFrame:
    """``bars`` with every numeric value after ``position`` multiplied by its row's factor.

    One factor per row scales open, high, low and close alike, so the bars stay consistent.
    """
    perturbed = bars.copy()
    numeric = perturbed.select_dtypes(include="number").columns
    for column in numeric:
        values = perturbed[column].to_numpy(dtype=float, copy=True)
        values[position + 1 :] *= factors
        perturbed[column] = values
    return perturbed


def _first_change(reference: np.ndarray, probe: np.ndarray) -> int | None:
    """Index of the first element that differs beyond floating-point noise, NaN-aware."""
    ref_nan, probe_nan = np.isnan(reference), np.isnan(probe)
    finite = reference[~ref_nan]
    scale = float(np.max(np.abs(finite[np.isfinite(finite)]), initial=0.0)) or 1.0
    with np.errstate(invalid="ignore"):
        differs = np.abs(reference - probe) > 1e-9 * scale
    # Equal infinities give inf - inf = NaN, which compares as not different.
    differs = (differs & ~(reference == probe)) | (ref_nan != probe_nan)
    hits = np.flatnonzero(differs)
    return int(hits[0]) if len(hits) else None


def check_no_lookahead(
    feature_function: FeatureFunction,
    bars: pd.DataFrame,
    probe_positions: Sequence[int] | None = None,
    seed: int = 0,
) -> None:
    """Raise ``LookAheadError`` if any feature at or before a probe position depends on later bars.

    For each probe position ``t`` the bars after ``t`` are scaled by random factors, once
    upwards and once downwards, and the function is run again; every feature value in rows
    ``0..t`` must stay the same (to 1e-9 of the column's scale, NaN where it was NaN). The
    default probes include the first bars (warm-up) and positions across the whole sample, so
    pass at least a few hundred bars. ``seed`` fixes the random factors. Also raises
    ``FeatureError`` when the function breaks the output contract checked by ``build_features``.
    """
    n_bars = len(bars)
    if n_bars < 2:
        raise FeatureError("check_no_lookahead needs at least 2 bars")
    positions = (
        _default_probe_positions(n_bars) if probe_positions is None else list(probe_positions)
    )
    for position in positions:
        if not -n_bars <= position < n_bars - 1:
            raise FeatureError(
                f"probe position {position} must leave at least one later bar in {n_bars} bars"
            )
    name = function_name(feature_function)
    reference = _run_feature_function(feature_function, bars)
    rng = np.random.default_rng(seed)
    for position in positions:
        position = position % n_bars
        n_later = n_bars - position - 1
        # Up and down, so a feature that compares a later bar with the current one flips
        # whichever way the later bar moved.
        for low, high in ((1.1, 1.5), (0.55, 0.9)):
            factors = rng.uniform(low, high, size=n_later)
            probe = _run_feature_function(feature_function, _perturbed(bars, position, factors))
            for column in reference.columns:
                changed = _first_change(
                    reference[column].to_numpy()[: position + 1],
                    probe[column].to_numpy()[: position + 1],
                )
                if changed is not None:
                    raise LookAheadError(name, column, position, changed)


def feature_set(specs: Sequence[str] = ()) -> tuple[FeatureFunction, ...]:
    """``DEFAULT_FEATURES`` followed by the user functions named in ``specs``."""
    return (*DEFAULT_FEATURES, *(load_feature_function(spec) for spec in specs))


def feature_sources(specs: Sequence[str]) -> dict[str, str]:
    """sha256 of the source file of the module behind each feature function named in ``specs``.

    A model card records them beside the names, so the code a model was trained and judged
    with is part of what its checksum covers (see ``card_feature_set``).
    """
    digests = {}
    for spec in specs:
        function = load_feature_function(spec)
        module = inspect.getmodule(getattr(function, "func", function))
        path = inspect.getsourcefile(module) if module is not None else None
        if path is None:
            raise FeatureError(f"{spec!r}: its source file cannot be found, so it cannot be sealed")
        with open(path, "rb") as fh:
            digests[spec] = hashlib.sha256(fh.read()).hexdigest()
    return digests


def card_feature_set(card: Mapping) -> tuple[FeatureFunction, ...]:
    """The feature functions a model card names (``feature_functions``), after checking that
    each module's source is the one recorded when the model was trained (``feature_sources``).

    Raises ``FeatureError`` naming the function when its code changed: the model would score
    features it was never judged on. Cards written before sources were recorded have no
    ``feature_sources``; their names alone are checked (by the card's checksum).
    """
    specs = list(card.get("feature_functions", []))
    recorded = card.get("feature_sources")
    if recorded is not None:
        now = feature_sources(specs)
        changed = [spec for spec in specs if recorded.get(spec) != now[spec]]
        if changed:
            raise FeatureError(
                f"the code of feature function(s) {changed} changed since model "
                f"{card.get('version')} was trained and judged (source sha256 differs): it would "
                "score features it was never judged on. Restore that code, or retrain and judge "
                "a new version with it."
            )
    return feature_set(specs)
