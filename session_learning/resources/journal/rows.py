"""A trade as the journal stores it: times as written, numbers as floats with the text of a
value that is not a number kept beside them (``RAW_KEY``), and the insert of such rows.
"""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from session_learning.domain.keys import TRADE_COLUMNS
from session_learning.domain.trades import (
    NUMERIC_COLUMNS,
    TIME_COLUMNS,
    parse_utc_timestamp,
)
from session_learning.resources.journal.schema import (
    raw_values_table,
    trades_table,
)

# Key of a journal row dict that carries the text of numeric values that are not numbers.
RAW_KEY = "_raw"


def _epoch_us(value: object) -> int | None:
    ts, _ = parse_utc_timestamp(value)
    if ts is None:
        try:
            naive = pd.Timestamp(value)  # a naive time is read as UTC to find its session only
        except (TypeError, ValueError):
            return None
        if naive is pd.NaT or naive.tzinfo is not None:
            return None
        ts = naive.tz_localize("UTC")
    try:
        return int(ts.value // 1000)
    except OverflowError:
        # Outside 1677..2262 (pandas' nanosecond range) no session can hold the row: it is
        # reported with the unplaceable rows instead of failing the whole batch.
        return None


def _time_text(value: object) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):
        # datetime.isoformat (pd.Timestamp overrides it) works for any year, in or out of range.
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _number(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # an int beyond 1e308 overflows
        return None
    return out if math.isfinite(out) else None


def _is_blank(value: object) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _journal_row(record: dict, recorded_at: str) -> dict:
    """One trade as the journal stores it: times as written, numbers as floats (with the text
    of a value that is not a number under ``RAW_KEY``), a missing optional column as NULL."""
    row: dict = {}
    raw: dict[str, str] = {}
    for column in TRADE_COLUMNS:
        value = record.get(column)
        if column in TIME_COLUMNS:
            row[column] = _time_text(value)
        elif column in NUMERIC_COLUMNS:
            row[column] = _number(value)
            if row[column] is None and not _is_blank(value):
                raw[column] = str(value)
        else:
            row[column] = None if _is_blank(value) else str(value)
    row["exit_time_us"] = _epoch_us(row["exit_time"])
    row["recorded_at"] = recorded_at
    if raw:
        row[RAW_KEY] = raw
    return row


def _insert(conn: sa.Connection, rows: list[dict]) -> None:
    """Insert journal rows (``_journal_row``), and the text of their values that are not
    numbers."""
    if not rows:
        return
    # A trades row deleted by hand leaves its raw values behind, and SQLite may give its id to
    # the next row: values stored beyond the newest row belong to no row and are dropped.
    newest = sa.select(sa.func.coalesce(sa.func.max(trades_table.c.row_id), 0)).scalar_subquery()
    conn.execute(raw_values_table.delete().where(raw_values_table.c.row_id > newest))
    plain = [r for r in rows if RAW_KEY not in r]
    if plain:
        conn.execute(trades_table.insert(), plain)
    with_raw = [r for r in rows if RAW_KEY in r]
    if not with_raw:
        return
    returning = trades_table.insert().returning(trades_table.c.row_id, sort_by_parameter_order=True)
    ids = conn.execute(returning, [{k: v for k, v in r.items() if k != RAW_KEY} for r in with_raw])
    raw_rows = [
        {"row_id": row_id, "column_name": column, "raw_text": text}
        for row_id, row in zip(ids.scalars().all(), with_raw, strict=True)
        for column, text in row[RAW_KEY].items()
    ]
    conn.execute(raw_values_table.insert(), raw_rows)


def _to_us(ts: datetime) -> int:
    return int(pd.Timestamp(ts).tz_convert("UTC").value // 1000)
