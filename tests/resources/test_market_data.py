"""Market-data sources: the synthetic default and the folder of CSV/Parquet files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from session_learning.domain.bars import BarDataError
from session_learning.domain.keys import ModelKey, UnknownModelError
from session_learning.domain.synthetic import generate_bars
from session_learning.resources.market_data import (
    FileMarketDataResource,
    MarketDataError,
    SyntheticMarketDataResource,
    write_bars,
)

KEY = ModelKey("EURUSD", "30T")
START = pd.Timestamp("2024-01-08", tz="UTC")  # a Monday
END = pd.Timestamp("2024-01-13", tz="UTC")  # Saturday: a whole trading week
FORMATS = ("csv", "parquet")


@pytest.fixture
def week() -> pd.DataFrame:
    return generate_bars(KEY.symbol, KEY.timeframe, START, END)


def load(folder: Path, start=START, end=END, **fields):
    return FileMarketDataResource(directory=str(folder), **fields).load(KEY, start, end, now=END)


def fail(folder: Path, **fields) -> BarDataError:
    with pytest.raises(BarDataError) as info:
        load(folder, **fields)
    assert str(info.value).startswith("EURUSD 30T: ")
    return info.value


def write_and_fail(folder: Path, bars: pd.DataFrame, fmt: str = "csv", **fields) -> BarDataError:
    write_bars(folder, KEY, bars, fmt)
    return fail(folder, **fields)


def test_synthetic_source_is_deterministic():
    source = SyntheticMarketDataResource(seed=3)
    first = source.bars(KEY, START, END)
    pd.testing.assert_frame_equal(first, source.bars(KEY, START, END))
    # CME Globex FX (EURUSD's calendar) from Monday 00:00 to Friday 22:00 UTC, less four
    # daily breaks of an hour (22:00-23:00 in winter).
    assert len(first) == 5 * 48 - 4 * 2 - 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, week, fmt):
    path = write_bars(tmp_path, KEY, week, fmt)
    assert path == tmp_path / f"EURUSD_30T.{fmt}"
    source = FileMarketDataResource(directory=str(tmp_path))
    bars = source.bars(KEY, START, END)
    pd.testing.assert_frame_equal(bars, week, check_index_type=False)
    assert str(bars.index.tz) == "UTC" and bars.index.name == "time"
    report = source.load(KEY, START, END)
    assert report.repairs == () and report.gaps == () and report.input_rows == len(week)


def test_csv_format_is_iso_time_with_offset(tmp_path, week):
    path = write_bars(tmp_path, KEY, week.iloc[:2], "csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "time,open,high,low,close,volume"
    assert lines[1].startswith("2024-01-08T00:00:00+00:00,")


def test_csv_by_hand_with_offsets_and_whole_numbers(tmp_path):
    # Times in another zone are converted; whole-number columns are read as floats.
    (tmp_path / "EURUSD_30T.csv").write_text(
        "time,open,high,low,close,volume,spread\n"
        "2024-01-08T02:00:00+02:00,1,2,1,2,10,0.1\n"
        "2024-01-08T00:30:00Z,2,2,1,1,11,0.1\n"
    )
    bars = load(tmp_path).bars
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert list(bars.index) == [START, START + KEY.bar]
    assert bars["volume"].dtype == np.float64


def test_window_is_cut_before_validation(tmp_path, week):
    # A bad bar outside the requested window does not block the window.
    bad = week.copy()
    bad.iloc[-1, bad.columns.get_loc("close")] = np.nan
    write_bars(tmp_path, KEY, bad, "parquet")
    report = load(tmp_path, START, START + pd.Timedelta(days=1))
    assert len(report.bars) == 46 and report.bars.index[-1] < START + pd.Timedelta(days=1)


# --- each kind of bad bar -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_identical_duplicate_is_repaired_and_recorded(tmp_path, week, fmt):
    write_bars(tmp_path, KEY, pd.concat([week, week.iloc[[7]]]), fmt)
    report = load(tmp_path)
    pd.testing.assert_frame_equal(report.bars, week, check_index_type=False)
    assert report.dropped_duplicates == 1 and report.input_rows == len(week) + 1
    (repair,) = report.repairs  # the later copy goes, so what remains is in order
    assert repair.startswith("dropped 1 bar repeating an identical bar (first at 2024-01-08T03:30")
    assert report.to_metadata()["dropped_duplicates"] == 1


def test_conflicting_duplicate_is_an_error(tmp_path, week):
    other = week.iloc[[7]].assign(volume=week["volume"].iloc[7] + 1)
    err = write_and_fail(tmp_path, pd.concat([week, other]))
    assert err.kind == "duplicates" and "2024-01-08T03:30:00+00:00" in str(err)


def test_unsorted_bars_are_repaired(tmp_path, week):
    write_bars(tmp_path, KEY, week.iloc[::-1], "parquet")
    report = load(tmp_path)
    pd.testing.assert_frame_equal(report.bars, week, check_index_type=False)
    assert len(report.repairs) == 1 and report.repairs[0].startswith("sorted bars into time order")


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_is_an_error(tmp_path, week, fmt):
    bad = week.copy()
    bad.iloc[[5, 9], bad.columns.get_loc("high")] = np.nan
    err = write_and_fail(tmp_path, bad, fmt)
    assert err.kind == "non_finite" and err.count == 2
    assert "2 bars have NaN or infinite prices (first at 2024-01-08T02:30:00+00:00)" in str(err)


def test_text_in_a_price_column_is_an_error(tmp_path):
    (tmp_path / "EURUSD_30T.csv").write_text(
        "time,open,high,low,close,volume\n2024-01-08T00:00:00+00:00,1.1O,1.2,1.0,1.1,5\n"
    )
    err = fail(tmp_path)
    assert err.kind == "dtype" and "open is str" in str(err)


def test_high_below_low_is_an_error(tmp_path, week):
    bad = week.copy()
    bad.iloc[3, bad.columns.get_loc("high")] = bad["low"].iloc[3] - 0.01
    err = write_and_fail(tmp_path, bad)
    assert err.kind == "ohlc" and "high below low" in str(err)


def test_off_grid_time_is_an_error(tmp_path, week):
    bad = week.rename(index={week.index[4]: week.index[4] + pd.Timedelta(minutes=1)})
    err = write_and_fail(tmp_path, bad)
    assert err.kind == "grid" and "2024-01-08T02:01:00+00:00" in str(err)


def test_gap_longer_than_max_gap_is_an_error(tmp_path, week):
    holed = week.drop(week.index[10:70])  # 30 hours
    err = write_and_fail(tmp_path, holed)
    assert err.kind == "gap" and "longer than max_gap 24h" in str(err)
    write_and_fail(tmp_path, week.drop(week.index[10:30]), max_gap_hours=5)
    report = load(tmp_path, max_gap_hours=None)
    assert report.missing_bars == 20


def test_short_gap_is_recorded(tmp_path, week):
    write_bars(tmp_path, KEY, week.drop(week.index[10:14]), "csv")
    report = load(tmp_path)
    assert [(g.start, g.missing_bars) for g in report.gaps] == [(week.index[10], 4)]
    assert report.to_metadata()["gap_count"] == 1


def test_stale_data_is_an_error(tmp_path, week):
    err = write_and_fail(tmp_path, week.loc[:"2024-01-10"], max_staleness_hours=6)
    assert err.kind == "stale" and "2024-01-10T23:30:00+00:00" in str(err)
    # A backfill of the same window is judged against the window's end, not the clock.
    source = FileMarketDataResource(directory=str(tmp_path), max_staleness_hours=6)
    report = source.load(KEY, START, "2024-01-11", now=pd.Timestamp("2030-01-01", tz="UTC"))
    assert len(report.bars) == 3 * 46  # the daily break 22:00-23:00 UTC has no bars


def test_naive_csv_times_are_an_error(tmp_path, week):
    path = write_bars(tmp_path, KEY, week.iloc[:4], "csv")
    path.write_text(path.read_text().replace("+00:00", "", 2))
    err = fail(tmp_path)
    assert err.kind == "timezone" and err.count == 2
    assert "'2024-01-08T00:00:00' in data row 1" in str(err) and "+00:00" in str(err)


def test_naive_parquet_times_are_an_error(tmp_path, week):
    err = write_and_fail(tmp_path, week.tz_localize(None), "parquet")
    assert err.kind == "timezone" and "no time zone" in str(err)


def test_unparseable_time_is_an_error(tmp_path, week):
    path = write_bars(tmp_path, KEY, week.iloc[:4], "csv")
    path.write_text(path.read_text().replace("2024-01-08T01:00:00+00:00", "yesterday+00:00"))
    err = fail(tmp_path)
    assert "not ISO-8601" in str(err) and "'yesterday+00:00' in data row 3" in str(err)


def test_missing_time_column(tmp_path, week):
    (tmp_path / "EURUSD_30T.csv").write_text("open,high,low,close,volume,when\n1,1,1,1,1,x\n")
    err = fail(tmp_path)
    assert err.kind == "columns"
    assert "has no time column (columns: open, high, low, close, volume, when)" in str(err)
    assert "timestamp, datetime" in str(err)


# --- column names as exports write them --------------------------------------------------------


def capitalised(bars: pd.DataFrame, time_name: str | None) -> pd.DataFrame:
    """``bars`` with Open/High/Low/Close/Volume and the time in ``time_name`` (None: index)."""
    table = bars.rename(columns=str.capitalize)
    if time_name is None:
        return table.rename_axis(None)
    return table.reset_index(names=time_name)


@pytest.mark.parametrize(
    "time_name",
    ["time", "Time", "timestamp", "Timestamp", "datetime", "Datetime", "date", "Date", "DATE"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_capitalised_columns_and_common_time_names_load(tmp_path, week, time_name, fmt):
    table = capitalised(week, time_name)
    path = tmp_path / f"EURUSD_30T.{fmt}"
    if fmt == "csv":
        table[time_name] = [stamp.isoformat() for stamp in week.index]
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    assert list(table.columns)[1:] == ["Open", "High", "Low", "Close", "Volume"]
    report = load(tmp_path)
    pd.testing.assert_frame_equal(report.bars, week, check_index_type=False, check_freq=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_time_in_the_index_loads(tmp_path, week, fmt):
    """As the ``backtesting`` package keeps bars: a DatetimeIndex and capitalised columns."""
    table = capitalised(week, None)
    path = tmp_path / f"EURUSD_30T.{fmt}"
    if fmt == "csv":
        table.set_axis([stamp.isoformat() for stamp in week.index], axis=0).to_csv(path)
        assert path.read_text().startswith(",Open,High,Low,Close,Volume\n")
    else:
        table.to_parquet(path)
    pd.testing.assert_frame_equal(
        load(tmp_path).bars, week, check_index_type=False, check_freq=False
    )


def test_gmt_time_without_an_offset_is_utc(tmp_path, week):
    """A Dukascopy-style export: ``Gmt time`` day-first without an offset; its name says UTC."""
    table = capitalised(week, "Gmt time")
    table["Gmt time"] = [stamp.strftime("%d.%m.%Y %H:%M:%S.000") for stamp in week.index]
    table.to_csv(tmp_path / "EURUSD_30T.csv", index=False)
    pd.testing.assert_frame_equal(
        load(tmp_path).bars, week, check_index_type=False, check_freq=False
    )
    # Any other naive name is still refused: its zone is unknown.
    table.rename(columns={"Gmt time": "Date"}).to_csv(tmp_path / "EURUSD_30T.csv", index=False)
    assert fail(tmp_path).kind == "timezone"


def test_missing_price_column_says_what_was_found(tmp_path, week):
    table = capitalised(week, "Date").rename(columns={"Close": "Last", "Volume": "Vol"})
    table["Date"] = [stamp.isoformat() for stamp in week.index]
    table.to_csv(tmp_path / "EURUSD_30T.csv", index=False)
    err = fail(tmp_path)
    assert err.kind == "columns"
    assert "has no close, volume column" in str(err)
    assert "its columns are: Date, Open, High, Low, Last, Vol" in str(err)


def test_two_columns_for_one_price_are_an_error(tmp_path, week):
    table = week.reset_index(names="time")
    table["Close"] = table["close"]
    table["time"] = [stamp.isoformat() for stamp in week.index]
    table.to_csv(tmp_path / "EURUSD_30T.csv", index=False)
    err = fail(tmp_path)
    assert "2 columns for close (close, Close)" in str(err)


# --- finding the file -----------------------------------------------------------------------


def test_unknown_symbol_lists_the_files_there(tmp_path, week):
    write_bars(tmp_path, ModelKey("GBPUSD", "15T"), week, "csv")
    write_bars(tmp_path, ModelKey("XAUUSD", "5T"), week, "parquet")
    (tmp_path / "notes.txt").write_text("not bars")
    with pytest.raises(MarketDataError) as info:
        load(tmp_path)
    message = str(info.value)
    assert "no bar file EURUSD_30T.parquet or EURUSD_30T.csv" in message
    assert "files there: GBPUSD_15T.csv, XAUUSD_5T.parquet" in message


def test_missing_folder(tmp_path):
    with pytest.raises(MarketDataError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_two_files_for_one_model_is_an_error(tmp_path, week):
    write_bars(tmp_path, KEY, week, "csv")
    write_bars(tmp_path, KEY, week, "parquet")
    with pytest.raises(MarketDataError, match="remove one"):
        load(tmp_path)


@pytest.mark.parametrize(
    "symbol", ["../SECRET", "..", "EUR/USD", "EUR.USD", "~ROOT", "A" * 17, "EURUSD\0", ""]
)
def test_hostile_symbols_never_reach_the_file_system(symbol):
    with pytest.raises(UnknownModelError):
        ModelKey(symbol, "30T")
    with pytest.raises(UnknownModelError):
        ModelKey.parse(f"{symbol}:30T")
    with pytest.raises(UnknownModelError):
        ModelKey("EURUSD", f"30T/{symbol}")


def test_only_a_model_key_builds_a_path(tmp_path):
    class Impostor:
        symbol, timeframe, slug = "../../etc/passwd", "30T", "../../etc/passwd"

    with pytest.raises(TypeError, match="ModelKey"):
        FileMarketDataResource(directory=str(tmp_path)).load(Impostor(), START, END)  # type: ignore[arg-type]


def test_write_bars_refuses_unknown_format(tmp_path, week):
    with pytest.raises(ValueError, match="unknown bar file format"):
        write_bars(tmp_path, KEY, week, "xlsx")


def test_file_source_as_a_dagster_resource(tmp_path, week):
    write_bars(tmp_path, KEY, week, "parquet")

    @dg.asset
    def bar_count(market_data: FileMarketDataResource) -> int:
        return len(market_data.bars(KEY, START, END))

    result = dg.materialize(
        [bar_count], resources={"market_data": FileMarketDataResource(directory=str(tmp_path))}
    )
    assert result.success and result.output_for_node("bar_count") == len(week)
