"""Features: the one ATR, the default feature set, the plug-in contract and the look-ahead check."""

from __future__ import annotations

import collections
import functools
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_learning.domain import features as F
from session_learning.domain.features import (
    DEFAULT_FEATURES,
    FeatureError,
    LookAheadError,
    atr,
    build_features,
    check_no_lookahead,
    load_feature_function,
    true_range,
)
from session_learning.domain.synthetic import generate_bars


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars("EURUSD", "30T", "2024-01-01", "2024-03-01")


def _bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(rows), freq="30min", tz="UTC", name="time")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    frame["volume"] = 100.0
    return frame


# --- ATR ----------------------------------------------------------------------------------------


def test_true_range_includes_the_previous_close():
    bars = _bars([(10, 11, 9, 10), (12, 13, 12, 12.5), (12, 12.2, 8, 9)])
    # Bar 0: no previous close, so high - low; bar 1 gapped up over close 10; bar 2 plain range.
    assert true_range(bars).tolist() == [2.0, 3.0, 4.5]


def test_atr_is_wilder_smoothing_seeded_with_a_simple_mean():
    rng = np.random.default_rng(3)
    close = 100 + np.cumsum(rng.normal(size=60))
    high = close + rng.uniform(0.1, 1.0, size=60)
    low = close - rng.uniform(0.1, 1.0, size=60)
    bars = _bars(list(zip(close, high, low, close, strict=True)))
    tr = true_range(bars).to_numpy()
    period = 14
    expected = np.full(60, np.nan)
    expected[period - 1] = tr[:period].mean()
    for t in range(period, 60):
        expected[t] = expected[t - 1] + (tr[t] - expected[t - 1]) / period
    result = atr(bars, period)
    assert result.name == "atr"
    assert result.index.equals(bars.index)
    np.testing.assert_allclose(result.to_numpy(), expected, rtol=1e-12, equal_nan=True)


def test_atr_of_period_one_is_the_true_range(bars):
    pd.testing.assert_series_equal(
        atr(bars, 1), true_range(bars).rename("atr"), check_exact=False, rtol=1e-12
    )


def test_atr_rejects_a_non_positive_period(bars):
    with pytest.raises(ValueError, match="period"):
        atr(bars, 0)


# --- default features ---------------------------------------------------------------------------


def test_default_features_are_a_documented_float_table(bars):
    features = build_features(bars)
    assert 12 <= features.shape[1] <= 25
    assert features.columns.is_unique
    assert features.index.equals(bars.index)
    assert (features.dtypes == np.float64).all()
    assert not np.isinf(features.to_numpy()).any()
    # After the longest lookback (240 bars) every default feature has a value.
    assert not features.iloc[300:].isna().any().any()
    for function in DEFAULT_FEATURES:
        assert function.__doc__, f"{function.__name__} needs a docstring"


def test_default_feature_values_mean_what_their_names_say(bars):
    features = build_features(bars)
    later = features.iloc[300:]
    assert later["range_pos_24"].between(0, 1).all()
    assert later["rsi_14"].between(-1, 1).all()
    assert later["efficiency_48"].between(0, 1).all()
    shape = later["body"].abs() + later["upper_wick"] + later["lower_wick"]
    np.testing.assert_allclose(shape.dropna(), 1.0, rtol=1e-9)
    ret = (bars["close"] - bars["close"].shift(12)) / atr(bars)
    pd.testing.assert_series_equal(features["ret_12"], ret, check_names=False)
    at_noon = features.loc[(bars.index.hour == 12) & (bars.index.minute == 0)]
    np.testing.assert_allclose(at_noon["hour_sin"], 0.0, atol=1e-12)
    np.testing.assert_allclose(at_noon["hour_cos"], -1.0)


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=1, max_value=1400))
def test_features_of_a_prefix_equal_the_prefix_of_features(cut):
    # Another view of causality: computing on bars 0..cut-1 must give what the full history gives.
    bars = generate_bars("GBPUSD", "15T", "2024-01-01", "2024-01-22")
    full = build_features(bars)
    pd.testing.assert_frame_equal(
        build_features(bars.iloc[:cut]), full.iloc[:cut], check_exact=False, rtol=1e-12
    )


def test_building_fifty_thousand_bars_is_fast():
    bars = generate_bars("EURUSD", "5T", "2024-01-01", "2024-10-01").iloc[:50_000]
    assert len(bars) == 50_000
    build_features(bars)  # warm caches and imports
    started = time.perf_counter()
    build_features(bars)
    assert time.perf_counter() - started < 1.0


# --- plug-in contract ---------------------------------------------------------------------------


def _momentum(bars: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    return pd.DataFrame({f"mom_{window}": bars["close"].diff(window)}, index=bars.index)


def test_user_functions_join_the_defaults_in_order(bars):
    features = build_features(bars, (*DEFAULT_FEATURES, _momentum))
    assert features.columns[-1] == "mom_5"
    assert features.columns[0] == "ret_1"


def test_duplicate_columns_across_functions_name_both(bars):
    with pytest.raises(FeatureError, match=r"'mom_5'.*_momentum.*_momentum"):
        build_features(bars, (_momentum, functools.partial(_momentum, window=5)))


def test_duplicate_columns_within_a_function_are_refused(bars):
    def twice(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.concat([frame[["close"]], frame[["close"]]], axis=1)
        return out

    with pytest.raises(FeatureError, match="duplicate columns"):
        build_features(bars, (twice,))


@pytest.mark.parametrize(
    "broken, message",
    [
        (lambda b: b[["close"]].dropna().iloc[1:], "different index"),
        (lambda b: b[["close"]].reset_index(drop=True), "different index"),
        (lambda b: b["close"], "expected a DataFrame"),
        (lambda b: pd.DataFrame({"side": "long"}, index=b.index), "non-numeric"),
        (lambda b: pd.DataFrame({0: b["close"]}, index=b.index), "non-string"),
    ],
)
def test_broken_feature_functions_are_refused(bars, broken, message):
    with pytest.raises(FeatureError, match=message):
        build_features(bars, (broken,))


def test_a_missing_bar_column_is_named(bars):
    with pytest.raises(FeatureError, match="relative_volume needs column 'volume'"):
        build_features(bars.drop(columns="volume"))


def test_no_feature_functions_is_an_error(bars):
    with pytest.raises(FeatureError, match="no feature functions"):
        build_features(bars, ())


def test_a_function_that_writes_to_its_input_does_not_change_the_bars(bars):
    def scribble(frame: pd.DataFrame) -> pd.DataFrame:
        frame["close"] = 0.0
        frame["extra"] = 1.0
        return frame[["extra"]]

    before = bars.copy()
    build_features(bars, (scribble, _momentum))
    pd.testing.assert_frame_equal(bars, before)


def test_infinities_become_missing_values(bars):
    def divide_by_zero(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"inf": frame["close"] / 0.0}, index=frame.index)

    assert build_features(bars, (divide_by_zero,))["inf"].isna().all()


def test_load_feature_function_resolves_module_and_attribute():
    assert load_feature_function("session_learning.domain.features:returns") is F.returns
    # Surrounding spaces are ignored and the attribute may be dotted.
    resolved = load_feature_function(" collections:OrderedDict.fromkeys ")
    assert resolved == collections.OrderedDict.fromkeys


@pytest.mark.parametrize(
    "spec, message",
    [
        ("session_learning.domain.features.returns", "must look like"),
        (":returns", "must look like"),
        ("no_such_package.features:f", "cannot import"),
        ("session_learning.domain.features:no_such_function", "has no attribute"),
        ("session_learning.domain.features:DEFAULT_FEATURES", "not callable"),
    ],
)
def test_load_feature_function_explains_bad_names(spec, message):
    with pytest.raises(FeatureError, match=message):
        load_feature_function(spec)


# --- look-ahead check ---------------------------------------------------------------------------

PROBES = (0, 1, 2, 7, 20, 60, 150, 290, 500, 798)


@pytest.mark.parametrize("function", DEFAULT_FEATURES, ids=lambda f: f.__name__)
def test_every_default_feature_is_causal(bars, function):
    check_no_lookahead(function, bars.iloc[:800], probe_positions=PROBES)


def test_default_probes_cover_the_start_and_the_whole_sample(bars):
    probes = F._default_probe_positions(800)
    assert probes[:3] == [0, 1, 2]
    assert probes[-1] == 798
    for function in DEFAULT_FEATURES:
        check_no_lookahead(function, bars.iloc[:800])


def _next_close(bars: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"ok": bars["close"].diff(), "next_close": bars["close"].shift(-1)}, index=bars.index
    )


def test_a_shifted_feature_is_caught_with_its_column(bars):
    with pytest.raises(LookAheadError) as caught:
        check_no_lookahead(_next_close, bars.iloc[:400])
    error = caught.value
    assert error.column == "next_close"
    assert error.position == 0
    assert error.changed_at == 0
    assert "_next_close" in str(error) and "next_close" in str(error)


def test_a_shifted_feature_is_caught_at_a_single_late_probe(bars):
    with pytest.raises(LookAheadError) as caught:
        check_no_lookahead(_next_close, bars.iloc[:400], probe_positions=[350])
    assert (caught.value.position, caught.value.changed_at) == (350, 350)


@pytest.mark.parametrize(
    "leaky",
    [
        # A centred window: each value uses the next 5 bars.
        lambda b: pd.DataFrame(
            {"centred": b["close"].rolling(11, center=True).mean()}, index=b.index
        ),
        # Normalising by statistics of the whole sample.
        lambda b: pd.DataFrame(
            {"z": (b["close"] - b["close"].mean()) / b["close"].std()}, index=b.index
        ),
        # Back-filling the warm-up: only the first rows peek ahead.
        lambda b: pd.DataFrame({"sma": b["close"].rolling(20).mean().bfill()}, index=b.index),
        # A binary comparison with the next bar.
        lambda b: pd.DataFrame(
            {"up_next": (b["close"].shift(-1) > b["close"]).astype(float)}, index=b.index
        ),
        # Dividing by the last price of the sample.
        lambda b: pd.DataFrame({"rel": b["close"] / b["close"].iloc[-1]}, index=b.index),
    ],
    ids=["centred-window", "global-zscore", "bfill-warmup", "next-bar-sign", "last-price"],
)
def test_common_leaks_are_caught(bars, leaky):
    with pytest.raises(LookAheadError):
        check_no_lookahead(leaky, bars.iloc[:600])


def test_the_check_also_enforces_the_output_contract(bars):
    with pytest.raises(FeatureError, match="different index"):
        check_no_lookahead(lambda b: b[["close"]].iloc[:-1], bars.iloc[:100])


@pytest.mark.parametrize("position", [99, 100, -101])
def test_probe_positions_must_leave_later_bars(bars, position):
    with pytest.raises(FeatureError, match="probe position"):
        check_no_lookahead(_momentum, bars.iloc[:100], probe_positions=[position])
