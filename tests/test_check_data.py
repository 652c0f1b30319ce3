"""`session-learning check-data` on a folder of short, real-shaped history: it names every
model the data cannot support, and why, before any training starts."""

from __future__ import annotations

import pandas as pd
import pytest

from session_learning.cli import main
from session_learning.domain.calendars import get_calendar
from session_learning.domain.keys import ModelKey
from session_learning.domain.synthetic import generate_bars
from session_learning.resources.market_data import write_bars

AT = "2024-12-02T12:00:00+00:00"  # a Monday; learning at the end of the 08:00 session
END = pd.Timestamp("2024-12-02 12:00", tz="UTC")


@pytest.fixture
def folder(tmp_path):
    """Nine models' files, each shaped like a real problem (or none)."""
    data = tmp_path / "bars"

    def write(symbol: str, timeframe: str, start: str, end=END, fmt="parquet", edit=None):
        key = ModelKey(symbol, timeframe)
        bars = generate_bars(symbol, timeframe, start, end)
        write_bars(data, key, edit(bars) if edit else bars, fmt)

    def polygon_style(bars):  # spot FX prints bars in CME's daily break too
        extra = bars.loc["2024-11-05 21:00":"2024-11-05 21:59"].copy()
        extra.index = extra.index + pd.Timedelta(hours=1)
        return pd.concat([bars, extra]).sort_index()

    def lost_sessions(bars):  # 13 and 14 November never downloaded
        return bars.drop(bars.loc["2024-11-12 23:00":"2024-11-14 21:45"].index)

    write("EURUSD", "15T", "2024-01-01")  # a whole year: fine
    write("EURUSD", "30T", "2024-10-01")  # two months: too short
    # EURUSD 1H: no file at all
    write("GBPUSD", "15T", "2024-01-01", edit=lost_sessions)
    write("GBPUSD", "30T", "2024-01-01", end=END - pd.Timedelta(days=3))  # stopped updating
    write("GBPUSD", "1H", "2024-05-01")  # enough to learn, not for the full windows
    write("XAUUSD", "15T", "2024-01-01", fmt="csv", edit=polygon_style)
    write("XAUUSD", "30T", "2024-01-01")
    path = data / "XAUUSD_30T.parquet"
    naive = pd.read_parquet(path)
    naive["time"] = naive["time"].dt.tz_localize(None)  # times without a zone
    naive.to_parquet(path)
    write("XAUUSD", "1H", "2024-01-01")
    return data


def test_check_data_names_every_model_it_cannot_support(folder, tmp_path, monkeypatch, capsys):
    models = [f"{s}:{t}" for s in ("EURUSD", "GBPUSD", "XAUUSD") for t in ("15T", "30T", "1H")]
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSION_LEARNING_MARKET_DATA", f"files:{folder}")
    monkeypatch.setenv("SESSION_LEARNING_MODELS", ",".join(models))
    assert main(["check-data", "--at", AT]) == 1
    out = capsys.readouterr().out
    blocks = {block.split()[0]: block for block in out.split("\n\n")[1:-1]}
    assert len(blocks) == 9

    def verdict(slug: str) -> str:
        return blocks[slug].split(" -> ")[1]

    assert "CMEGlobex_FX calendar: OK" in blocks["EURUSD_15T"]
    # Bars printed in the daily break (as spot FX providers do) are kept and are no gap.
    assert "CMEGlobex_Metals calendar: OK" in blocks["XAUUSD_15T"]
    assert "gaps on the calendar: 0" in blocks["XAUUSD_15T"]
    # Eleven months of 1H bars learn, with a shorter training window than configured.
    assert "WARNING" in blocks["XAUUSD_1H"] and "learning runs with" in verdict("XAUUSD_1H")

    short = verdict("EURUSD_30T")
    assert "CANNOT LEARN" in blocks["EURUSD_30T"]
    assert "learning needs at least" in short and "Fix: fetch" in short and "more bars" in short
    assert "no bar file EURUSD_1H.parquet" in verdict("EURUSD_1H")
    lost = verdict("GBPUSD_15T")
    assert "longer than max_gap" in lost and "2024-11-13, 2024-11-14" in lost
    assert "fetch recent bars" in verdict("GBPUSD_30T") and "WARNING" in blocks["GBPUSD_30T"]
    assert "learning runs with" in verdict("GBPUSD_1H") and "WARNING" in blocks["GBPUSD_1H"]
    assert "no time zone" in verdict("XAUUSD_30T") or "no UTC offset" in verdict("XAUUSD_30T")
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith("4 of 9 models cannot learn: EURUSD_30T, EURUSD_1H, GBPUSD_15T, XAUUSD_30T")
    )
    # The bars each model needs are stated with its windows.
    assert "needs: 9365 bars (warm-up 300 + training 6000 + validation 3000" in blocks["EURUSD_15T"]
    assert get_calendar("CMEGlobex_FX").name in blocks["GBPUSD_1H"]


def test_calendars_are_chosen_per_symbol_from_the_environment(tmp_path):
    from session_learning.definitions import build_market_data
    from session_learning.settings import Settings

    env = {
        "SESSION_LEARNING_HOME": str(tmp_path),
        "SESSION_LEARNING_MARKET_DATA": f"files:{tmp_path}",
        "SESSION_LEARNING_CALENDARS": "spy:XNYS, *:24/7",
    }
    market = build_market_data(Settings.from_env(env))
    assert market.calendar(ModelKey("SPY", "1H")).name == "XNYS"
    assert market.calendar(ModelKey("EURUSD", "1H")).name == "24/7"
    default = build_market_data(Settings.from_env({"SESSION_LEARNING_HOME": str(tmp_path)}))
    assert default.calendar(ModelKey("EURUSD", "1H")).name == "CMEGlobex_FX"
    for wrong, message in (("SPY", "expected SYMBOL:CALENDAR"), ("SPY:NYSEX", "unknown trading")):
        with pytest.raises(ValueError, match=message):
            Settings.from_env({**env, "SESSION_LEARNING_CALENDARS": wrong})


def test_check_data_names_the_default_synthetic_source(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SESSION_LEARNING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SESSION_LEARNING_MARKET_DATA", raising=False)
    monkeypatch.delenv("SESSION_LEARNING_JOURNAL_URL", raising=False)
    monkeypatch.setenv("SESSION_LEARNING_MODELS", "EURUSD:30T")
    main(["check-data", "--at", AT])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("market data synthetic;"), first
