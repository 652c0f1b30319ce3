"""Closed trades: parsing, data-quality rules, session membership, and the CSV exports.

A trade belongs to the session in which it *exited*. Rows that break a rule are kept with a
``quarantine_reason`` instead of being dropped, so every journal row is accounted for.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from session_learning.domain.models import (
    DIRECTIONS,
    EXIT_REASONS,
    TIMEFRAMES,
    TRADE_COLUMNS,
    ModelKey,
)

TIME_COLUMNS = ("entry_time", "exit_time")
PRICE_COLUMNS = ("entry_price", "exit_price", "stop_loss", "take_profit")
NUMERIC_COLUMNS = (*PRICE_COLUMNS, "pnl", "confidence")
REQUIRED_COLUMNS = tuple(c for c in TRADE_COLUMNS if c != "model_version")
QUARANTINE_COLUMN = "quarantine_reason"


@dataclass(frozen=True)
class QualityRules:
    """Tolerances of the data-quality rules.

    ``price_tolerance`` is relative to the entry price: an exit this far on the wrong side of
    the take-profit or stop-loss it claims to have hit is still accepted as slippage/rounding.
    """

    price_tolerance: float = 5e-4


def parse_utc_timestamp(value: object) -> tuple[pd.Timestamp | None, str | None]:
    """Parse one timestamp; return ``(timestamp_utc, None)`` or ``(None, problem)``.

    Naive timestamps are refused: a time without an offset cannot be placed in a UTC session.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None, "missing"
    if isinstance(value, str) and not value.strip():
        return None, "missing"
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None, f"unparseable ({value!r})"
    if ts is pd.NaT:
        return None, "missing"
    if ts.tzinfo is None:
        return None, f"naive timestamp without UTC offset ({value!r})"
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
        problems.append("not a finite number: " + ", ".join(numeric_bad))
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
    missing_cols = [c for c in TRADE_COLUMNS if c not in raw.columns]
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


def export_session(trades: pd.DataFrame, session_end: datetime, directory: Path) -> dict[str, Path]:
    """Write ``winners_``, ``losers_``, ``all_trades_`` (and ``quarantine_``) CSVs for a session.

    Every file is first written in full under a temporary name, and only when all of them are
    written are they renamed into place: a re-run replaces the files whole, a failed write (disk
    full) leaves the previous set as it was, and a crash never leaves a half-written file under
    a final name. A quarantine file from an earlier run is removed when the session has no
    quarantined rows any more.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = export_stamp(session_end)
    good = valid_trades(trades).sort_values(["exit_time", "trade_id"], kind="stable")
    frames = {
        "winners": good.loc[good["outcome"] == "winner"],
        "losers": good.loc[good["outcome"] == "loser"],
        "all_trades": good,
        "quarantine": quarantined_trades(trades),
    }
    paths: dict[str, Path] = {}
    staged: list[tuple[Path, Path]] = []
    try:
        for name, frame in frames.items():
            if name == "quarantine" and frame.empty:
                continue
            path = directory / f"{name}_{stamp}.csv"
            staged.append((_write_temporary_csv(frame, path), path))
            paths[name] = path
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)  # only a file that was not renamed is still there
    if "quarantine" not in paths:
        (directory / f"quarantine_{stamp}.csv").unlink(missing_ok=True)
    return paths


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    tmp = _write_temporary_csv(frame, path)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temporary_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in full (fsynced) to a new temporary file beside ``path`` and return it.

    On failure the temporary file is removed and an ``OSError`` names ``path``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            # A full disk says only "No space left on device"; say which file failed.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return Path(tmp)
