"""Property-based fuzzing of what comes in from outside: journal rows and bars.

Trades: any row either lands in the journal and comes back out to be judged (valid, or
quarantined with a reason) or, on PostgreSQL, the whole batch is refused with a JournalError
and nothing is written. Counts always add up. Bars: validated with every repair recorded, or
refused with a BarDataError; nothing else escapes.

tests/domain/test_bars.py::test_validates_with_recorded_repairs_or_refuses fuzzes bars that
are mostly well-formed; here the shapes, dtypes, indexes and values are arbitrary.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from itertools import count

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from session_learning.domain.bars import BarDataError, validate_bars
from session_learning.domain.keys import BAR_COLUMNS, DIRECTIONS, EXIT_REASONS, TRADE_COLUMNS
from session_learning.domain.trades import (
    QUARANTINE_COLUMN,
    quarantined_trades,
    valid_trades,
    validate_trades,
)
from session_learning.resources.journal import (
    JournalError,
    TradeImportError,
    TradeJournal,
    metadata,
    trades_table,
)
from tests.assets.conftest import EURUSD
from tests.builders import trade

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples on every run: CI failures reproduce locally
)
SESSION = (pd.Timestamp("2025-03-04T08:00Z"), pd.Timestamp("2025-03-04T12:00Z"))
EVERYTHING = (pd.Timestamp("1677-09-22T00:00Z"), pd.Timestamp("2262-04-11T00:00Z"))
HOSTILE = [
    "EURUSD'); DROP TABLE trades; --",
    "EURUSD\u202e",  # right-to-left override
    "𝐄𝐔𝐑𝐔𝐒𝐃",
    "ＥＵＲＵＳＤ",  # full-width
    "EUR USD",
    " EURUSD ",
    "eurusd",
    "../../etc/passwd",
    "%s%s%n",
    "nan",
    "",
    "x" * 300,
]

# --- strategies ----------------------------------------------------------------------------

OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
odd_text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE))
odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, float("nan"), float("inf")]),
    st.integers(-(10**18), 10**18),
    st.sampled_from(["1.1", "1e999", "-inf", "NaN", "1,1", "0x10", " 1.1 ", "", "none"]),
    odd_text,
    st.none(),
    st.booleans(),
)
in_session = st.datetimes(
    min_value=datetime(2025, 3, 4, 7), max_value=datetime(2025, 3, 4, 13), timezones=OFFSETS
)
odd_times = st.one_of(
    in_session,  # aware, near the session, in several zones
    in_session.map(lambda t: t.isoformat()),  # the same as text
    st.datetimes(timezones=OFFSETS),  # any year 1..9999, aware
    st.datetimes(),  # naive
    st.datetimes().map(lambda t: t.isoformat()),  # naive text
    st.sampled_from(["2025-03-04 09:00", "yesterday", "2025-02-30T10:00:00Z", "0", "", "NaT"]),
    odd_text,
    st.none(),
    st.just(float("nan")),
    st.just(pd.NaT),
)
FIELD = {
    "trade_id": odd_text,
    "symbol": odd_text,
    "timeframe": st.one_of(st.sampled_from(["30T", "5T", "30t", "1D", ""]), odd_text),
    "direction": st.one_of(st.sampled_from([*DIRECTIONS, "LONG", "buy"]), odd_text),
    "exit_reason": st.one_of(st.sampled_from([*EXIT_REASONS, "tp"]), odd_text),
    "entry_time": odd_times,
    "exit_time": odd_times,
    **{c: odd_numbers for c in ("entry_price", "exit_price", "stop_loss", "take_profit")},
    "pnl": odd_numbers,
    "confidence": odd_numbers,
}
_ids = count(1)


@st.composite
def trade_rows(draw, max_size: int = 8, beyond_float: bool = False) -> list[dict]:
    """Valid EURUSD 30T trades of the session with any subset of fields replaced by junk,
    plus exact copies of earlier rows; ``beyond_float`` adds ints no float can hold.
    ``model_version`` tags each row."""
    fields = dict(FIELD)
    if beyond_float:
        huge = st.sampled_from([10**400, -(10**309)])
        for column in ("entry_price", "exit_price", "stop_loss", "take_profit", "pnl"):
            fields[column] = st.one_of(huge, FIELD[column])
    rows = []
    for _ in range(draw(st.integers(0, max_size))):
        row = trade(
            trade_id=f"F{next(_ids)}",
            win=draw(st.booleans()),
            direction=draw(st.sampled_from(DIRECTIONS)),
            entry_time="2025-03-04T08:30:00+00:00",
            exit_time=draw(st.sampled_from(["2025-03-04T09:30:00+00:00", "2025-03-04T11:59:59Z"])),
        )
        for column in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
            row[column] = draw(fields[column])
        rows.append(row)
    if rows and draw(st.booleans()):
        rows.append(dict(draw(st.sampled_from(rows))))  # an identical copy
    for i, row in enumerate(rows):
        row["model_version"] = f"row{i}"
    return rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))


# --- the quality rules on arbitrary rows ------------------------------------------------------


def _check_validated(out: pd.DataFrame, n: int) -> None:
    """Every input row comes out, valid or quarantined with a reason; valid rows are sane."""
    assert len(out) == n
    good, bad = valid_trades(out), quarantined_trades(out)
    assert len(good) + len(bad) == n
    assert all(isinstance(r, str) and r for r in bad[QUARANTINE_COLUMN])
    for row in good.to_dict("records"):
        assert (row["symbol"], row["timeframe"]) == (EURUSD.symbol, EURUSD.timeframe)
        assert row["direction"] in DIRECTIONS and row["exit_reason"] in EXIT_REASONS
        for column in ("entry_price", "exit_price", "stop_loss", "take_profit", "pnl"):
            assert math.isfinite(row[column])
        assert 0.0 <= row["confidence"] <= 1.0
        assert str(row["exit_time"].tz) == "UTC" and row["entry_time"] <= row["exit_time"]
    assert good["trade_id"].is_unique


@settings(FUZZ, max_examples=150)
@given(rows=trade_rows())
def test_validate_trades_judges_every_row_and_raises_nothing(rows):
    out = validate_trades(_frame(rows), known_models=[EURUSD])
    _check_validated(out, len(rows))


def test_validate_trades_quarantines_an_int_beyond_float_range():
    out = validate_trades(_frame([{**trade(), "pnl": 10**400}]))
    assert "not a finite number" in out[QUARANTINE_COLUMN].iloc[0]


# --- journal ingestion ------------------------------------------------------------------------


def _round_trip(journal: TradeJournal, rows: list[dict]) -> None:
    """Append ``rows``; every one is then either placed in exactly one window or listed as
    unplaceable, and the session's rows all come back judged."""
    journal.create_schema()
    with journal.engine.begin() as conn:
        conn.execute(trades_table.delete())
    try:
        written = journal.add_trades(_frame(rows))
    except JournalError as exc:
        # PostgreSQL refuses text longer than a column or holding NUL: the batch is one
        # transaction, so nothing at all was written, and the error says why.
        assert "postgresql" in journal.url
        assert "value too long" in str(exc) or "NUL" in str(exc)
        assert journal.count_trades() == 0
        event("batch refused whole")
        return
    event("batch landed")
    assert written == len(rows) == journal.count_trades()
    placed = journal.trades_exited_between(*EVERYTHING)
    unplaceable = journal.unplaceable_trades()
    assert len(placed) + len(unplaceable) == len(rows)
    assert sorted([*placed["model_version"], *unplaceable["model_version"]]) == sorted(
        f"row{i}" for i in range(len(rows))
    )
    session = journal.trades_exited_between(*SESSION)
    for i, row in enumerate(rows):
        expected = _aware_instant(row["exit_time"])
        if expected is not None:
            inside = SESSION[0] <= expected < SESSION[1]
            assert (f"row{i}" in set(session["model_version"])) == inside, row["exit_time"]
    checked = validate_trades(session, known_models=[EURUSD])
    _check_validated(checked, len(session))
    for row in valid_trades(checked).to_dict("records"):
        assert SESSION[0] <= row["exit_time"] < SESSION[1]


def _aware_instant(value: object) -> pd.Timestamp | None:
    """Where an aware time (object or ISO text with an offset) must be placed, if it is one."""
    if isinstance(value, datetime) and value.tzinfo is not None and 1678 <= value.year <= 2261:
        return pd.Timestamp(value).tz_convert("UTC")
    if isinstance(value, str) and value[-6:-5] in "+-" and value[-3:-2] == ":":
        try:
            stamp = pd.Timestamp(value)
        except ValueError:
            return None
        if 1678 <= stamp.year <= 2261:
            return stamp.tz_convert("UTC")
    return None


def _tagged(**changes: object) -> list[dict]:
    return [{**trade(exit_time="2025-03-04T09:30:00+00:00"), **changes, "model_version": "row0"}]


# Inputs that once escaped as raw exceptions, pinned so they are tried on every run.
PINNED = [
    _tagged(pnl=10**400),  # OverflowError in float()
    _tagged(exit_time=datetime(1, 1, 1, tzinfo=UTC)),  # outside pandas' nanosecond range
    _tagged(exit_time=datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    _tagged(entry_time="0001-01-01T00:00:00"),
    _tagged(symbol="EUR\x00USD"),  # PostgreSQL: NUL cannot be stored (ValueError from psycopg2)
    _tagged(symbol="X" * 300),  # PostgreSQL: longer than the column
]


def _pinned(test):
    for rows in PINNED:
        test = example(rows=rows)(test)
    return test


@settings(FUZZ, max_examples=80)
@_pinned
@given(rows=trade_rows(beyond_float=True))
def test_sqlite_journal_keeps_every_row_and_counts_add_up(tmp_path, rows):
    _round_trip(TradeJournal(f"sqlite:///{tmp_path / 'journal.sqlite'}"), rows)


@pytest.mark.postgres
@settings(FUZZ, max_examples=40)
@_pinned
@given(rows=trade_rows(max_size=5, beyond_float=True))
def test_postgres_journal_lands_a_batch_whole_or_refuses_it_whole(clean_postgres_url, rows):
    _round_trip(TradeJournal(clean_postgres_url), rows)


@settings(FUZZ, max_examples=60)
@given(rows=trade_rows(max_size=6))
def test_csv_import_keeps_every_line_or_refuses_the_file_whole(tmp_path, rows):
    """Any rows, written to a CSV and imported twice: every line is read and either written,
    already present or a conflict; every written row is placed or listed as unplaceable."""
    journal = TradeJournal(f"sqlite:///{tmp_path / 'import.sqlite'}")
    journal.create_schema()
    with journal.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    path = tmp_path / "fuzz.csv"
    _frame(rows).to_csv(path, index=False)
    try:
        first = journal.import_csv(path)
    except TradeImportError as exc:
        assert str(exc).startswith(str(path)) and "Nothing was written" in str(exc)
        assert journal.count_trades() == 0
        event("file refused whole")
        return
    second = journal.import_csv(path)
    for report in (first, second):
        assert report.read == len(rows)
        assert report.written + report.already_present + report.conflict_count == len(rows)
    assert second.written == 0 and journal.count_trades() == first.written
    placed = journal.trades_exited_between(*EVERYTHING)
    assert len(placed) + len(journal.unplaceable_trades()) == first.written
    # Counted per line of the file (an identical copy counts again, and is written once).
    assert first.unplaceable_count >= len(journal.unplaceable_trades())


# --- bars -------------------------------------------------------------------------------------

KEY = EURUSD
MONDAY = pd.Timestamp("2024-01-08", tz="UTC")


@st.composite
def any_bars(draw) -> pd.DataFrame:
    """Frames of any shape a source might deliver: missing, extra or text columns; ints; any
    float; a naive, foreign-zone, NaT-holding or non-time index; duplicates; any order."""
    n = draw(st.integers(0, 12))
    slots = draw(st.lists(st.integers(-3, 200), min_size=n, max_size=n))
    times = [MONDAY + s * KEY.bar for s in slots]
    if times and draw(st.integers(0, 5)) == 0:
        times[draw(st.integers(0, n - 1))] += pd.Timedelta(minutes=draw(st.integers(1, 29)))
    kind = draw(st.sampled_from(["utc", "utc", "utc", "zone", "naive", "nat", "range", "text"]))
    utc = pd.DatetimeIndex(times, name="time", tz="UTC")
    if kind == "utc":
        index = utc
    elif kind == "zone":
        index = utc.tz_convert("America/New_York")
    elif kind == "naive":
        index = utc.tz_localize(None)
    elif kind == "nat":
        index = pd.DatetimeIndex([*times[:-1], pd.NaT] if times else [], name="time", tz="UTC")
    elif kind == "range":
        index = pd.RangeIndex(n)
    else:
        index = pd.Index([str(t) for t in times], dtype=object)

    base = draw(st.floats(1e-6, 1e6))
    columns = {}
    for column in BAR_COLUMNS:
        style = draw(st.sampled_from(["ok", "ok", "ok", "ok", "any", "int", "text", "missing"]))
        if style == "missing":
            continue
        if style == "ok":
            values = [base * (1.001 if column == "high" else 0.999 if column == "low" else 1)] * n
        elif style == "any":
            values = draw(
                st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n)
            )
        elif style == "int":
            values = draw(st.lists(st.integers(-5, 10**6), min_size=n, max_size=n))
        else:
            values = draw(st.lists(st.one_of(odd_text, st.floats()), min_size=n, max_size=n))
        columns[column] = values
    if draw(st.booleans()):
        columns["vwap"] = [base] * n  # ignored
    frame = pd.DataFrame(columns, index=index)
    if len(frame) and draw(st.booleans()):
        frame = pd.concat([frame, frame.iloc[[draw(st.integers(0, len(frame) - 1))]]])
    return frame


@settings(FUZZ, max_examples=300)
@given(
    frame=any_bars(),
    repair=st.booleans(),
    calendar=st.sampled_from(["24/5", "24/7"]),
    max_gap_hours=st.one_of(st.none(), st.integers(1, 100)),
    now_slot=st.one_of(st.none(), st.integers(0, 400)),
)
def test_validate_bars_accepts_with_every_repair_recorded_or_refuses(
    frame, repair, calendar, max_gap_hours, now_slot
):
    before = frame.copy()
    now = None if now_slot is None else MONDAY + now_slot * KEY.bar
    try:
        report = validate_bars(
            frame,
            KEY,
            repair=repair,
            calendar=calendar,
            max_gap=None if max_gap_hours is None else pd.Timedelta(hours=max_gap_hours),
            now=now,
            max_staleness=pd.Timedelta(hours=48) if now is not None else None,
        )
    except BarDataError as err:
        assert str(err).startswith("EURUSD 30T: ") and err.kind
        return
    finally:
        pd.testing.assert_frame_equal(frame, before)  # the input is never modified
    out = report.bars
    assert report.input_rows == len(frame) == len(out) + report.dropped_duplicates
    assert isinstance(out.index, pd.DatetimeIndex) and str(out.index.tz) == "UTC"
    assert out.index.is_unique and out.index.is_monotonic_increasing
    values = out[list(BAR_COLUMNS)].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert (out["low"] <= out[["open", "close"]].min(axis=1)).all()
    assert (out["high"] >= out[["open", "close"]].max(axis=1)).all()
    assert (out[["open", "high", "low", "close"]] > 0).all().all() and (out["volume"] >= 0).all()
    if not repair:
        assert report.repairs == ()
