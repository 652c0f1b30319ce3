"""Closed trades: parsing, data-quality rules, session membership, and the tables to export.

A trade belongs to the session in which it *exited*. Rows that break a rule are kept with a
``quarantine_reason`` instead of being dropped, so every journal row is accounted for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from session_learning.domain.keys import (
    DIRECTIONS,
    EXIT_REASONS,
    TIMEFRAMES,
    TRADE_COLUMNS,
    ModelKey,
)

TIME_COLUMNS = ("entry_time", "exit_time")
PRICE_COLUMNS = ("entry_price", "exit_price", "stop_loss", "take_profit")
NUMERIC_COLUMNS = (*PRICE_COLUMNS, "pnl", "confidence")
OPTIONAL_COLUMNS = ("model_version",)
REQUIRED_COLUMNS = tuple(c for c in TRADE_COLUMNS if c not in OPTIONAL_COLUMNS)
QUARANTINE_COLUMN = "quarantine_reason"

# The journal's data contract, one entry per column: (type, meaning and units). The README's
# "Data contract" section and ``session-learning import-trades --help`` say the same; a test
# holds them to this table.
DATA_CONTRACT: dict[str, tuple[str, str]] = {
    "trade_id": ("text", "unique id of the trade; a re-import with the same id is a correction"),
    "symbol": ("text", "instrument, as configured (EURUSD, XAUUSD, ...)"),
    "timeframe": ("text", "model timeframe: 5T, 15T, 30T, 1H or 4H"),
    "direction": ("text", "long or short"),
    "entry_time": ("time", "when the trade was entered (ISO 8601 with offset)"),
    "entry_price": ("number", "fill price of the entry, in price units"),
    "exit_time": ("time", "when the trade was closed; places it in its session"),
    "exit_price": ("number", "fill price of the exit, in price units"),
    "stop_loss": ("number", "stop-loss level, in price units"),
    "take_profit": ("number", "take-profit level, in price units"),
    "exit_reason": ("text", "take_profit, stop_loss, timeout or manual"),
    "pnl": ("number", "result per unit in price units (exit - entry for a long), after costs"),
    "confidence": ("number", "the model's probability for the direction, 0..1"),
    "model_version": ("text", "registry version that produced the trade (empty if unknown)"),
}
TIME_FORMAT_RULE = (
    "Times are ISO 8601 with a UTC offset: 2025-01-06T05:30:00+00:00, 2025-01-06T05:30:00Z, "
    "2025-01-06 07:30:00+02:00 (converted to UTC). A time without an offset, an epoch number "
    "(seconds or milliseconds) or a year outside 1678..2261 is quarantined with its reason."
)
SESSION_RULE = (
    "A trade belongs to the session [start, end) in UTC that contains its exit_time; a row "
    "whose exit_time cannot be placed fails every session's session_trades_are_clean check "
    "until it is corrected."
)
NUMBER_RULE = (
    "Numbers use a decimal point and no thousands separator (1.1050, 2000.5); anything else "
    "(0,0038 / 2,000.00 / 62% / NULL) is kept as written and the row is quarantined."
)


@dataclass(frozen=True)
class QualityRules:
    """Tolerances of the data-quality rules.

    ``price_tolerance`` is relative to the entry price: an exit this far on the wrong side of
    the take-profit or stop-loss it claims to have hit is still accepted as slippage/rounding.
    """

    price_tolerance: float = 5e-4


_EPOCH = re.compile(r"[+-]?\d{9,}(\.\d*)?")


def parse_utc_timestamp(value: object) -> tuple[pd.Timestamp | None, str | None]:
    """Parse one timestamp; return ``(timestamp_utc, None)`` or ``(None, problem)``.

    Naive timestamps are refused: a time without an offset cannot be placed in a UTC session.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None, "missing"
    if isinstance(value, str) and not value.strip():
        return None, "missing"
    if isinstance(value, str) and _EPOCH.fullmatch(value.strip()):
        return None, (
            f"epoch number, not an ISO 8601 time ({value!r}; write e.g. 2025-01-06T05:30:00Z)"
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None, f"unparseable ({value!r})"
    if ts is pd.NaT:
        return None, "missing"
    if ts.tzinfo is None:
        return None, f"naive timestamp without UTC offset ({value!r})"
    try:
        ts.as_unit("ns")
    except (OverflowError, ValueError):
        return None, (
            f"year {ts.year} cannot be placed in a session ({value!r}; supported 1678..2261)"
        )
    return ts.tz_convert("UTC"), None


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _as_float(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # an int beyond 1e308 is no price either
        return math.nan
    return out


def _shown(value: object, limit: int = 40) -> str:
    """A value as written, for a quarantine reason (cut when long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row_problems(
    row: dict, known_models: frozenset[ModelKey] | None, rules: QualityRules
) -> tuple[list[str], dict]:
    """Check one raw row; return its problems and its normalized values."""
    problems: list[str] = []
    clean: dict = {}
    missing = [c for c in REQUIRED_COLUMNS if _is_missing(row.get(c))]
    numeric_bad = [
        c for c in NUMERIC_COLUMNS if c not in missing and not math.isfinite(_as_float(row.get(c)))
    ]
    if missing:
        problems.append("missing value: " + ", ".join(missing))
    if numeric_bad:
        problems.append(
            "not a finite number: " + ", ".join(f"{c} ({_shown(row.get(c))})" for c in numeric_bad)
        )
    for column in NUMERIC_COLUMNS:
        clean[column] = _as_float(row.get(column))

    for column in TIME_COLUMNS:
        if column in missing:
            clean[column] = pd.NaT
            continue
        ts, problem = parse_utc_timestamp(row.get(column))
        clean[column] = ts if ts is not None else pd.NaT
        if problem:
            problems.append(f"{column}: {problem}")

    for column in ("trade_id", "symbol", "timeframe", "direction", "exit_reason", "model_version"):
        value = row.get(column)
        clean[column] = None if _is_missing(value) else str(value).strip()

    direction, reason = clean["direction"], clean["exit_reason"]
    if direction is not None and direction not in DIRECTIONS:
        problems.append(f"invalid direction {direction!r}")
    if reason is not None and reason not in EXIT_REASONS:
        problems.append(f"invalid exit_reason {reason!r}")
    symbol, timeframe = clean["symbol"], clean["timeframe"]
    if symbol is not None and timeframe is not None:
        if timeframe not in TIMEFRAMES:
            problems.append(f"unknown timeframe {timeframe!r}")
        elif known_models is not None and not any(
            m.symbol == symbol and m.timeframe == timeframe for m in known_models
        ):
            problems.append(f"unknown model {symbol} {timeframe}")

    conf = clean["confidence"]
    if math.isfinite(conf) and not 0.0 <= conf <= 1.0:
        problems.append(f"confidence {conf} outside [0, 1]")
    entry, exit_ = clean["entry_time"], clean["exit_time"]
    if entry is not pd.NaT and exit_ is not pd.NaT and exit_ < entry:
        problems.append("exit before entry")
    if direction in DIRECTIONS and all(math.isfinite(clean[c]) for c in NUMERIC_COLUMNS):
        problems.extend(_price_problems(clean, rules))
    return problems, clean


def _price_problems(t: dict, rules: QualityRules) -> list[str]:
    """Prices that contradict the trade's direction, stops, exit reason or P&L."""
    sign = 1.0 if t["direction"] == "long" else -1.0
    entry, exit_, sl, tp, pnl = (
        t["entry_price"],
        t["exit_price"],
        t["stop_loss"],
        t["take_profit"],
        t["pnl"],
    )
    tol = rules.price_tolerance * abs(entry)
    problems = []
    if min(entry, exit_, sl, tp) <= 0:
        problems.append("non-positive price")
        return problems
    if not (sign * (tp - entry) > 0 and sign * (entry - sl) > 0):
        problems.append(
            f"take_profit/stop_loss on the wrong side of entry for a {t['direction']} trade"
        )
    if t["exit_reason"] == "take_profit" and sign * (exit_ - tp) < -tol:
        problems.append("exit_reason take_profit but exit price did not reach take_profit")
    if t["exit_reason"] == "stop_loss" and sign * (sl - exit_) < -tol:
        problems.append("exit_reason stop_loss but exit price did not reach stop_loss")
    move = sign * (exit_ - entry)
    # Costs can turn a tiny favourable move into a small loss, never a loss into a gain.
    if pnl > 0 and move < -tol:
        problems.append("positive pnl on an adverse price move")
    return problems


def validate_trades(
    raw: pd.DataFrame,
    known_models: Iterable[ModelKey] | None = None,
    rules: QualityRules = QualityRules(),
) -> pd.DataFrame:
    """Normalize raw journal rows and mark each bad one with a ``quarantine_reason``.

    Returns one row per input row (nothing is dropped) with typed columns: UTC timestamps,
    floats, and ``outcome`` (``winner`` pnl > 0, ``loser`` pnl < 0, ``breakeven``). A row is
    valid when ``quarantine_reason`` is empty. Duplicate ``trade_id`` rows: identical copies keep
    the first and quarantine the rest; conflicting copies are all quarantined, since nothing
    says which one is right.
    """
    known = frozenset(known_models) if known_models is not None else None
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing_cols:
        raise ValueError(f"trade data lacks required columns: {', '.join(missing_cols)}")
    records = raw.to_dict("records")
    cleaned, reasons = [], []
    for row in records:
        problems, clean = _row_problems(row, known, rules)
        cleaned.append(clean)
        reasons.append(problems)

    _mark_duplicates(cleaned, reasons)
    out = pd.DataFrame(cleaned, columns=list(TRADE_COLUMNS))
    for column in TIME_COLUMNS:
        out[column] = pd.to_datetime(out[column], utc=True)
    for column in NUMERIC_COLUMNS:
        out[column] = out[column].astype("float64")
    for column in ("trade_id", "symbol", "timeframe", "direction", "exit_reason", "model_version"):
        out[column] = out[column].astype("object")
    out["outcome"] = np.select(
        [out["pnl"] > 0, out["pnl"] < 0], ["winner", "loser"], default="breakeven"
    )
    out[QUARANTINE_COLUMN] = ["; ".join(r) for r in reasons]
    if "row_id" in raw.columns:
        out.insert(0, "row_id", raw["row_id"].to_numpy())
    return out


def _mark_duplicates(cleaned: list[dict], reasons: list[list[str]]) -> None:
    by_id: dict[str, list[int]] = {}
    for i, row in enumerate(cleaned):
        if row["trade_id"] is not None:
            by_id.setdefault(row["trade_id"], []).append(i)
    for trade_id, positions in by_id.items():
        if len(positions) < 2:
            continue
        first = cleaned[positions[0]]
        identical = all(_same_trade(first, cleaned[p]) for p in positions[1:])
        if identical:
            for p in positions[1:]:
                reasons[p].append(f"duplicate trade_id {trade_id!r} (identical copy)")
        else:
            for p in positions:
                reasons[p].append(f"duplicate trade_id {trade_id!r} with conflicting content")


def _same_trade(a: dict, b: dict) -> bool:
    for key in TRADE_COLUMNS:
        x, y = a[key], b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def valid_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """The rows of a validated frame that passed every rule."""
    return trades.loc[trades[QUARANTINE_COLUMN] == ""].drop(columns=[QUARANTINE_COLUMN])


def quarantined_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """The rows of a validated frame that broke a rule, with their reasons."""
    return trades.loc[trades[QUARANTINE_COLUMN] != ""]


def judge_unplaceable(
    raw: pd.DataFrame, known_models: Iterable[ModelKey] | None = None
) -> pd.DataFrame:
    """Journal rows that no session contains (their ``exit_time`` cannot be placed), validated:
    every one is quarantined, with why its exit time cannot be placed among its reasons."""
    out = validate_trades(raw, known_models=known_models)
    for i, reason in enumerate(out[QUARANTINE_COLUMN]):
        if "exit_time:" not in reason:
            placed = "exit_time: cannot be placed in a session"
            out.iat[i, out.columns.get_loc(QUARANTINE_COLUMN)] = "; ".join(
                r for r in (placed, reason) if r
            )
    return out


def quarantine_counts(trades: pd.DataFrame) -> dict[str, int]:
    """How many quarantined rows each kind of problem accounts for (a row may count twice)."""
    counts: dict[str, int] = {}
    for reason in quarantined_trades(trades)[QUARANTINE_COLUMN]:
        for part in reason.split("; "):
            kind = part.split(" (")[0].split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def export_stamp(session_end: datetime) -> str:
    """The ``YYYYmmdd_HHMMSS`` stamp of a session's export files (its end, UTC)."""
    return pd.Timestamp(session_end).tz_convert("UTC").strftime("%Y%m%d_%H%M%S")


def export_frames(trades: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A session's export tables by file name prefix: ``winners``, ``losers`` and
    ``all_trades`` (valid trades by exit time, then id) and ``quarantine`` (possibly empty)."""
    good = valid_trades(trades).sort_values(["exit_time", "trade_id"], kind="stable")
    return {
        "winners": good.loc[good["outcome"] == "winner"],
        "losers": good.loc[good["outcome"] == "loser"],
        "all_trades": good,
        "quarantine": quarantined_trades(trades),
    }


# --- reading journals exported by other systems --------------------------------------------

DELIMITERS = (",", ";", "\t", "|")


def detect_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the most frequent of , ; tab | (comma on a tie)."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["id=trade_id", ...]`` (file column = journal column) as a dict; a bad pair raises
    ``ValueError`` naming it."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(
                f"--map {pair!r}: expected FILE_COLUMN=JOURNAL_COLUMN, e.g. --map id=trade_id"
            )
        mapping[source.strip()] = target.strip()
    return mapping


def resolve_columns(header: list[str], mapping: dict[str, str] | None = None) -> dict[str, str]:
    """How the columns of a file's header become journal columns: ``{file column: journal
    column}`` for every column the journal keeps (others are ignored).

    ``mapping`` (file column -> journal column) is applied first; then a column whose name
    matches a journal column apart from case and surrounding spaces is taken as that column.
    Raises ``ValueError`` with what is wrong and what to do: a mapping that names a column the
    file lacks or a journal column that does not exist, two file columns for one journal column,
    or required journal columns that nothing provides.
    """
    mapping = dict(mapping or {})
    known = set(TRADE_COLUMNS)
    for source, target in mapping.items():
        if source not in header:
            raise ValueError(
                f"--map {source}={target}: the file has no column {source!r} "
                f"(its columns: {', '.join(header)})"
            )
        if target not in known:
            raise ValueError(
                f"--map {source}={target}: {target!r} is not a journal column "
                f"(journal columns: {', '.join(TRADE_COLUMNS)})"
            )
    resolved: dict[str, str] = {}
    for column in header:
        target = mapping.get(column)
        if target is None and column.strip().lower() in known:
            target = column.strip().lower()
        if target is None:
            continue
        clash = next((s for s, t in resolved.items() if t == target), None)
        if clash is not None:
            raise ValueError(
                f"columns {clash!r} and {column!r} both give journal column {target!r}; "
                "remove one or map them differently"
            )
        resolved[column] = target
    missing = [c for c in REQUIRED_COLUMNS if c not in resolved.values()]
    if missing:
        hint = (
            "only one column was found: if the file uses another separator, pass --delimiter"
            if len(header) == 1
            else "rename them in the file or map them, e.g. --map id=trade_id"
        )
        raise ValueError(
            f"missing required column(s) {', '.join(missing)} "
            f"(the file has: {', '.join(header) or 'nothing'}); {hint}"
        )
    return resolved
