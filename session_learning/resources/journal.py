"""The trade journal: closed trades and open signals in a SQL database.

SQLite by default, PostgreSQL by URL (``postgresql+psycopg2://...``); the same SQLAlchemy Core
code serves both. The journal stores what the trading system wrote, as written: timestamps are
kept as the ISO-8601 text they arrived as (so a missing UTC offset stays visible to the quality
rules), plus an integer ``exit_time_us`` (UTC microseconds) that places a row in its session.
Every statement uses bound parameters.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import make_url

from session_learning.domain.json_encoding import dumps
from session_learning.domain.keys import TRADE_COLUMNS
from session_learning.domain.trades import (
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    TIME_COLUMNS,
    detect_delimiter,
    parse_utc_timestamp,
    resolve_columns,
)

metadata = sa.MetaData()

trades_table = sa.Table(
    "trades",
    metadata,
    sa.Column("row_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trade_id", sa.String(128)),
    sa.Column("symbol", sa.String(32)),
    sa.Column("timeframe", sa.String(8)),
    sa.Column("direction", sa.String(16)),
    sa.Column("entry_time", sa.String(64)),
    sa.Column("entry_price", sa.Float),
    sa.Column("exit_time", sa.String(64)),
    sa.Column("exit_price", sa.Float),
    sa.Column("stop_loss", sa.Float),
    sa.Column("take_profit", sa.Float),
    sa.Column("exit_reason", sa.String(32)),
    sa.Column("pnl", sa.Float),
    sa.Column("confidence", sa.Float),
    sa.Column("model_version", sa.String(128)),
    # UTC microseconds of exit_time when it parses (naive times read as UTC, only to place the
    # row in a session where the quality rules will flag it); NULL when it does not parse.
    sa.Column("exit_time_us", sa.BigInteger, index=True),
    sa.Column("recorded_at", sa.String(64), nullable=False),
)
sa.Index("ix_trades_trade_id", trades_table.c.trade_id)

# What was written in a numeric column when it is not a number ("0,0038", "62%", "NULL"): the
# trades row holds NULL there, and this table keeps the text, so the quality rules show it.
raw_values_table = sa.Table(
    "trade_raw_values",
    metadata,
    sa.Column("row_id", sa.Integer, primary_key=True),
    sa.Column("column_name", sa.String(32), primary_key=True),
    sa.Column("raw_text", sa.Text, nullable=False),
)

# Every correction applied to a journaled trade (import-trades --apply-corrections): what it
# was before, what changed, where the new values came from.
corrections_table = sa.Table(
    "trade_corrections",
    metadata,
    sa.Column("correction_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("row_id", sa.Integer, nullable=False, index=True),
    sa.Column("trade_id", sa.String(128), nullable=False),
    sa.Column("corrected_at", sa.String(64), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("changes", sa.Text, nullable=False),  # JSON {column: [previous, new]}
    sa.Column("previous", sa.Text, nullable=False),  # JSON of the whole row as it was
)

signals_table = sa.Table(
    "signals",
    metadata,
    sa.Column("signal_id", sa.String(160), primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("bar_time", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(64), nullable=False),
    sa.Column("entry_time", sa.String(64), nullable=False),
    sa.Column("entry_price", sa.Float, nullable=False),
    sa.Column("take_profit", sa.Float, nullable=False),
    sa.Column("stop_loss", sa.Float, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("edge", sa.Float, nullable=False),
    sa.Column("expires_at", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | resolved
    sa.Column("trade_id", sa.String(128)),
    # Never two signals for the same bar and model.
    sa.UniqueConstraint("symbol", "timeframe", "bar_time", name="uq_signals_model_bar"),
)


alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.String(64), nullable=False),
    # run_failure | gate_rejection | degraded | demoted
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)


# What arena members would have traded (``shadow_book`` asset): virtual trades resolved by the
# same first-touch rules with costs, never sent to a broker. A separate table, so nothing that
# reads ``trades`` (the session's analysis, exports, health) can mix them with live trades.
# One row per (model, member version, session, signal bar): a re-run of a session writes nothing
# twice.
shadow_trades_table = sa.Table(
    "shadow_trades",
    metadata,
    sa.Column("shadow_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(48), nullable=False),  # ModelKey.slug
    sa.Column("member_version", sa.String(128), nullable=False),
    sa.Column("session", sa.String(32), nullable=False),  # the partition key it exited in
    sa.Column("signal_time", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("entry_time", sa.String(64), nullable=False),
    sa.Column("entry_price", sa.Float, nullable=False),
    sa.Column("exit_time", sa.String(64), nullable=False),
    sa.Column("exit_price", sa.Float, nullable=False),
    sa.Column("stop_loss", sa.Float, nullable=False),
    sa.Column("take_profit", sa.Float, nullable=False),
    sa.Column("exit_reason", sa.String(32), nullable=False),
    sa.Column("pnl", sa.Float, nullable=False),
    sa.Column("r_multiple", sa.Float, nullable=False),
    sa.Column("exit_time_us", sa.BigInteger, nullable=False, index=True),
    sa.Column("recorded_at", sa.String(64), nullable=False),
    sa.UniqueConstraint(
        "model", "member_version", "session", "signal_time", name="uq_shadow_trades_signal"
    ),
)
SHADOW_TRADE_COLUMNS = tuple(
    c.name for c in shadow_trades_table.columns if c.name not in ("shadow_id", "recorded_at")
)


class JournalError(RuntimeError):
    """The trade journal could not be read or written."""


class JournalUnavailableError(JournalError):
    """The journal database cannot be reached."""


class TradeImportError(JournalError):
    """A file of trades cannot be imported; the message says what, where and what to do.
    Nothing of the file was written."""


# Key of a journal row dict that carries the text of numeric values that are not numbers.
RAW_KEY = "_raw"
_SAMPLES = 20  # lines of each kind an import report keeps to show


@dataclass(frozen=True)
class Conflict:
    """A trade_id already journaled with other values than the file's."""

    line: int
    trade_id: str
    changes: dict[str, tuple[object, object]]  # column -> (journaled, in the file)

    def describe(self, path: str, applied: bool = False) -> str:
        diff = ", ".join(f"{c} {old!r} -> {new!r}" for c, (old, new) in self.changes.items())
        what = "was corrected" if applied else "is journaled with other values"
        return f"{path} line {self.line}: trade_id {self.trade_id!r} {what} ({diff})"


@dataclass
class ImportReport:
    """What an import did with every line of the file: each is ``written``,
    ``already_present`` or a conflict (``corrected`` when applied). ``unplaceable`` (a time the contract refuses) and
    ``not_numbers`` count the lines the session rules will quarantine for what they wrote."""

    path: str
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    ignored_columns: list[str] = field(default_factory=list)
    read: int = 0
    written: int = 0
    already_present: int = 0
    corrected: int = 0
    conflict_count: int = 0
    conflicts: list[Conflict] = field(default_factory=list)  # the first few
    unplaceable_count: int = 0
    unplaceable: list[str] = field(default_factory=list)  # the first few, described
    not_numbers_count: int = 0
    not_numbers: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "written": self.written,
            "already_present": self.already_present,
            "conflicts": self.conflict_count,
            "corrected": self.corrected,
            "unplaceable": self.unplaceable_count,
            "not_numbers": self.not_numbers_count,
        }

    def add_conflict(self, conflict: Conflict) -> None:
        self.conflict_count += 1
        if len(self.conflicts) < _SAMPLES:
            self.conflicts.append(conflict)

    def note_row(self, line: int, row: dict) -> None:
        """Remember rows the session rules will quarantine for what the file wrote."""
        # A time the contract refuses (naive, epoch, out of range, missing) quarantines the row;
        # a naive exit_time is read as UTC only so that session's check lists the row.
        problems = []
        for column in ("exit_time", "entry_time"):
            _, problem = parse_utc_timestamp(row[column])
            if problem is not None:
                problems.append(f"{column} {problem}")
        if row["exit_time_us"] is None and not problems:
            problems.append("exit_time cannot be placed")
        if problems:
            self.unplaceable_count += 1
            if len(self.unplaceable) < _SAMPLES:
                self.unplaceable.append(
                    f"{self.path} line {line}: trade_id {row['trade_id']!r}: " + "; ".join(problems)
                )
        for column, text in (row.get(RAW_KEY) or {}).items():
            self.not_numbers_count += 1
            if len(self.not_numbers) < _SAMPLES:
                self.not_numbers.append(
                    f"{self.path} line {line}: trade_id {row['trade_id']!r}: {column} {text!r} "
                    "is not a number"
                )


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and metadata."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by create_engine itself
        return "<unparsable database URL>"


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


def _stored_by_trade_id(conn: sa.Connection, trade_ids: set[str]) -> dict[str, dict]:
    """The journaled row of each of ``trade_ids`` (the first one when an id was journaled
    twice), with the text of its values that are not numbers under ``RAW_KEY``."""
    found: dict[str, dict] = {}
    ids = sorted(trade_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = (
            sa.select(trades_table)
            .where(trades_table.c.trade_id.in_(chunk))
            .order_by(trades_table.c.row_id)
        )
        by_row: dict[int, dict] = {}
        for r in conn.execute(query).mappings():
            if r["trade_id"] not in found:
                found[r["trade_id"]] = by_row[r["row_id"]] = dict(r)
        if by_row:
            raw = sa.select(raw_values_table).where(raw_values_table.c.row_id.in_(list(by_row)))
            for r in conn.execute(raw):
                by_row[r.row_id].setdefault(RAW_KEY, {})[r.column_name] = r.raw_text
    return found


_LENGTHS = {
    c.name: c.type.length
    for c in trades_table.columns
    if isinstance(c.type, sa.String) and c.type.length and c.name in TRADE_COLUMNS
}


def _check_lengths(row: dict, path: str, line: int) -> None:
    """Refuse text longer than its journal column (PostgreSQL would refuse it anyway, with a
    message that names neither the file nor the line)."""
    for column, limit in _LENGTHS.items():
        value = row[column]
        if value is not None and len(value) > limit:
            raise TradeImportError(
                f"{path} line {line}: {column} is {len(value)} characters long, the journal "
                f"keeps at most {limit}; shorten it in the file. Nothing was written."
            )


def _same_row_without_id(conn: sa.Connection, row: dict, columns: set[str]) -> bool:
    """Whether a journaled row without trade_id says the same as ``row`` (also without)."""
    query = sa.select(trades_table).where(trades_table.c.trade_id.is_(None))
    for column in ("symbol", "exit_time"):
        value = row[column]
        query = query.where(
            trades_table.c[column].is_(None) if value is None else trades_table.c[column] == value
        )
    candidates = [dict(r) for r in conn.execute(query).mappings()]
    if candidates:
        ids = [c["row_id"] for c in candidates]
        raw = sa.select(raw_values_table).where(raw_values_table.c.row_id.in_(ids))
        by_row = {c["row_id"]: c for c in candidates}
        for r in conn.execute(raw):
            by_row[r.row_id].setdefault(RAW_KEY, {})[r.column_name] = r.raw_text
    return any(not _differences(c, row, columns) for c in candidates)


def _as_written(row: dict, column: str) -> object:
    return (row.get(RAW_KEY) or {}).get(column, row.get(column))


def _differences(stored: dict, row: dict, columns: set[str]) -> dict[str, tuple[object, object]]:
    """Journal columns (among ``columns``) where ``row`` says something else than ``stored``.

    Times are the same when they name the same instant (``Z`` and ``+00:00`` agree); numbers
    when they are equal as floats, or are the same text.
    """
    changes = {}
    for column in TRADE_COLUMNS:
        if column not in columns:
            continue
        old, new = _as_written(stored, column), _as_written(row, column)
        if old == new:
            continue
        if column in TIME_COLUMNS and old is not None and new is not None:
            (a, _), (b, _) = parse_utc_timestamp(old), parse_utc_timestamp(new)
            if a is not None and a == b:
                continue
        changes[column] = (old, new)
    return changes


def _read_header(path: Path, encoding: str, delimiter: str | None) -> tuple[list[str], str]:
    """The column names of a CSV file and its delimiter (detected unless given)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except OSError as exc:
        raise TradeImportError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TradeImportError(_decode_error(path, encoding, exc)) from None
    except LookupError:
        raise TradeImportError(
            f"--encoding {encoding}: unknown encoding; use e.g. utf-8, latin-1 or cp1252"
        ) from None
    if not text.strip():
        raise TradeImportError(
            f"{path} is empty (no header line); write a header first: {','.join(TRADE_COLUMNS)}"
        )
    delimiter = delimiter or detect_delimiter(text)
    header = pd.read_csv(io.StringIO(text), sep=delimiter, nrows=0, dtype=str)
    return [str(c) for c in header.columns], delimiter


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Where in ``path`` the first byte that ``encoding`` cannot decode is, and the fix."""
    name = (
        "UTF-8"
        if encoding.replace("_", "-").lower() in {"utf-8", "utf-8-sig", "utf8"}
        else encoding
    )
    where, byte = "", exc.object[exc.start : exc.start + 1]
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as bad:
                column = len(line[: bad.start].decode(encoding, errors="replace")) + 1
                where, byte = f" line {number} column {column}", line[bad.start : bad.start + 1]
                break
    return (
        f"{path}{where}: byte 0x{byte.hex()} is not valid {name}; if the file was saved as "
        "Latin-1 or by Excel on Windows, re-run with --encoding latin-1 (or cp1252). "
        "Nothing was written."
    )


def _to_us(ts: datetime) -> int:
    return int(pd.Timestamp(ts).tz_convert("UTC").value // 1000)


@lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, pool_pre_ping=True, future=True)


class TradeJournal:
    """Read and write the journal behind ``url`` (any SQLAlchemy URL; SQLite and PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise JournalUnavailableError(
                f"trade journal {redact_url(self.url)} is unreachable: "
                f"{' '.join(str(exc.orig).split()).rstrip('.')}. "
                "Check that the database is running and the URL is right; nothing was written."
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise JournalError(f"trade journal {redact_url(self.url)}: {exc}") from exc
        except ValueError as exc:
            # The driver refuses some values before SQL sees them (psycopg2: a NUL character;
            # any driver: text that is not valid UTF-8); the transaction is rolled back.
            raise JournalError(
                f"trade journal {redact_url(self.url)} cannot store a value ({exc}); "
                "nothing was written"
            ) from exc

    def transaction(self) -> AbstractContextManager[sa.Connection]:
        """One transaction on the journal's database (committed when the block ends, rolled
        back on an error) whose failures are the journal's errors naming the database: for the
        tables kept beside the trades (outcomes, reports)."""
        return self._connect()

    def create_schema(self) -> None:
        """Create the tables if they do not exist (safe to call every time)."""
        with self._connect() as conn:
            metadata.create_all(conn)

    def add_trades(self, trades: pd.DataFrame | Iterable[dict]) -> int:
        """Append closed trades as given (bad rows too: the session's quality rules judge them).

        Returns the number of rows written; the whole batch is one transaction. A numeric value
        that is not a number is kept as written (see ``trade_raw_values``).
        """
        frame = pd.DataFrame(list(trades)) if not isinstance(trades, pd.DataFrame) else trades
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise JournalError(f"trades lack required columns: {', '.join(missing)}")
        now = pd.Timestamp.now(tz="UTC").isoformat()
        columns = [c for c in TRADE_COLUMNS if c in frame.columns]
        rows = [_journal_row(record, now) for record in frame[columns].to_dict("records")]
        if not rows:
            return 0
        with self._connect() as conn:
            metadata.create_all(conn)
            _insert(conn, rows)
        return len(rows)

    def import_csv(
        self,
        path: Path | str,
        *,
        mapping: dict[str, str] | None = None,
        delimiter: str | None = None,
        encoding: str | None = None,
        apply_corrections: bool = False,
        chunk_rows: int = 20_000,
    ) -> ImportReport:
        """Import a CSV of trades, streamed in chunks of ``chunk_rows`` (memory does not grow
        with the file), as one transaction: a file that fails part-way writes nothing.

        Values are read as text, so what the file says reaches the journal and the quality rules
        unchanged. A ``trade_id`` already journaled with the same values is counted as
        ``already_present``; with different values it is a *conflict*, reported and left as it
        was unless ``apply_corrections``, which replaces the journaled values and records the
        previous ones in ``trade_corrections``. ``mapping`` renames file columns to journal
        columns (``{"id": "trade_id"}``); the delimiter is detected from the header unless
        given; the encoding is UTF-8 unless given. A file that cannot be read raises
        ``TradeImportError`` saying what is wrong, where, and what to do.
        """
        path = Path(path)
        encoding = encoding or "utf-8-sig"
        header, delimiter = _read_header(path, encoding, delimiter)
        try:
            columns = resolve_columns(header, mapping)
        except ValueError as exc:
            raise TradeImportError(f"{path} line 1 (header): {exc}") from None
        report = ImportReport(
            path=str(path),
            delimiter=delimiter,
            encoding=encoding,
            ignored_columns=[c for c in header if c not in columns],
        )
        now = pd.Timestamp.now(tz="UTC").isoformat()
        with self._connect() as conn:
            metadata.create_all(conn)
            try:
                reader = pd.read_csv(
                    path,
                    sep=delimiter,
                    dtype=str,
                    keep_default_na=False,
                    encoding=encoding,
                    chunksize=chunk_rows,
                )
                line = 2
                for chunk in reader:
                    records = chunk[list(columns)].rename(columns=columns).to_dict("records")
                    self._import_chunk(
                        conn, records, line, report, now, apply_corrections, set(columns.values())
                    )
                    line += len(records)
            except UnicodeDecodeError as exc:
                raise TradeImportError(_decode_error(path, encoding, exc)) from None
            except pd.errors.ParserError as exc:
                raise TradeImportError(
                    f"{path}: {str(exc).strip()}; check the quoting and the delimiter (read with "
                    f"{delimiter!r}; pass --delimiter to choose another). Nothing was written."
                ) from None
        return report

    def _import_chunk(
        self,
        conn: sa.Connection,
        records: list[dict],
        first_line: int,
        report: ImportReport,
        now: str,
        apply_corrections: bool,
        columns: set[str],
    ) -> None:
        rows = [_journal_row(record, now) for record in records]
        stored = _stored_by_trade_id(conn, {r["trade_id"] for r in rows if r["trade_id"]})
        queued: list[dict] = []
        queued_ids: set[str] = set()
        deferred: list[tuple[int, dict]] = []
        for offset, row in enumerate(rows):
            line = first_line + offset
            _check_lengths(row, report.path, line)
            report.read += 1
            report.note_row(line, row)
            trade_id = row["trade_id"]
            if trade_id is None:
                deferred.append((line, row))  # matched by its values, after the rows with ids
            elif trade_id in queued_ids:
                deferred.append((line, row))  # a second copy in the file: judged after the first
            elif trade_id is not None and trade_id in stored:
                self._reconcile(
                    conn, stored[trade_id], row, line, report, apply_corrections, columns
                )
            else:
                queued.append(row)
                if trade_id is not None:
                    queued_ids.add(trade_id)
        _insert(conn, queued)
        report.written += len(queued)
        for line, row in deferred:
            if row["trade_id"] is None:
                # Without an id a row can only be recognised by its values: an identical row
                # already journaled is the same trade, anything else is new.
                if _same_row_without_id(conn, row, columns):
                    report.already_present += 1
                else:
                    _insert(conn, [row])
                    report.written += 1
                continue
            previous = _stored_by_trade_id(conn, {row["trade_id"]})[row["trade_id"]]
            self._reconcile(conn, previous, row, line, report, apply_corrections, columns)

    def _reconcile(
        self,
        conn: sa.Connection,
        stored: dict,
        row: dict,
        line: int,
        report: ImportReport,
        apply_corrections: bool,
        columns: set[str],
    ) -> None:
        """A row whose trade_id is journaled already: the same trade, or a correction (only the
        journal columns the file has are compared and corrected)."""
        changes = _differences(stored, row, columns)
        if not changes:
            report.already_present += 1
            return
        conflict = Conflict(line=line, trade_id=row["trade_id"], changes=changes)
        report.add_conflict(conflict)
        if not apply_corrections:
            return
        values = {c: row[c] for c in (*columns, "exit_time_us", "recorded_at")}
        conn.execute(
            trades_table.update().where(trades_table.c.row_id == stored["row_id"]).values(values)
        )
        conn.execute(raw_values_table.delete().where(raw_values_table.c.row_id == stored["row_id"]))
        kept = {c: t for c, t in (stored.get(RAW_KEY) or {}).items() if c not in columns}
        raw = {**kept, **(row.get(RAW_KEY) or {})}
        if raw:
            conn.execute(
                raw_values_table.insert(),
                [
                    {"row_id": stored["row_id"], "column_name": c, "raw_text": t}
                    for c, t in raw.items()
                ],
            )
        conn.execute(
            corrections_table.insert(),
            [
                {
                    "row_id": stored["row_id"],
                    "trade_id": row["trade_id"],
                    "corrected_at": row["recorded_at"],
                    "source": f"{report.path} line {line}",
                    "changes": dumps({k: list(v) for k, v in changes.items()}),
                    "previous": dumps(
                        {k: v for k, v in stored.items() if k != RAW_KEY}
                        | {"raw": stored.get(RAW_KEY)}
                    ),
                }
            ],
        )
        report.corrected += 1
        previous = {k: v for k, v in stored.items() if k != RAW_KEY}
        stored.clear()
        stored.update(previous, **values)  # a later line of the file compares with this one
        if raw:
            stored[RAW_KEY] = raw

    def corrections(self) -> pd.DataFrame:
        """Every correction applied to journaled trades, oldest first."""
        query = sa.select(corrections_table).order_by(corrections_table.c.correction_id)
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame(
            [dict(r) for r in rows], columns=[c.name for c in corrections_table.columns]
        )

    def existing_trade_ids(self, trade_ids: Iterable[str]) -> set[str]:
        ids = list(trade_ids)
        found: set[str] = set()
        with self._connect() as conn:
            metadata.create_all(conn)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = sa.select(trades_table.c.trade_id).where(trades_table.c.trade_id.in_(chunk))
                found.update(r[0] for r in conn.execute(query))
        return found

    def trades_exited_between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows whose exit time lies in ``[start, end)``, as stored (text times, raw values)."""
        return self._select(
            trades_table.c.exit_time_us >= _to_us(start),
            trades_table.c.exit_time_us < _to_us(end),
        )

    def unplaceable_trades(self) -> pd.DataFrame:
        """Rows whose exit time is missing, unparsable or outside 1677..2262: they belong to no
        session (``session_trades_are_clean`` fails in every session while there are any)."""
        return self._select(trades_table.c.exit_time_us.is_(None))

    def _select(self, *conditions: sa.ColumnElement[bool]) -> pd.DataFrame:
        """Journal rows matching ``conditions``, in exit order, with every value as written:
        a numeric column that held text that is not a number shows that text."""
        query = sa.select(trades_table).where(*conditions)
        query = query.order_by(trades_table.c.exit_time_us, trades_table.c.row_id)
        raw_query = sa.select(raw_values_table).where(
            raw_values_table.c.row_id.in_(sa.select(trades_table.c.row_id).where(*conditions))
        )
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
            raw = conn.execute(raw_query).all()
        frame = pd.DataFrame(
            [dict(r) for r in rows], columns=[c.name for c in trades_table.columns]
        )
        if raw:
            position = {row_id: i for i, row_id in enumerate(frame["row_id"])}
            for column in {r.column_name for r in raw}:
                frame[column] = frame[column].astype("object")
            for r in raw:
                frame.iat[position[r.row_id], frame.columns.get_loc(r.column_name)] = r.raw_text
        return frame

    def max_row_id(self) -> int:
        """The newest journal row id (0 when empty): a cursor for "trades since"."""
        with self._connect() as conn:
            metadata.create_all(conn)
            return int(conn.execute(sa.select(sa.func.max(trades_table.c.row_id))).scalar() or 0)

    def count_trades_after(self, row_id: int) -> int:
        """Journal rows written after ``row_id``."""
        query = sa.select(sa.func.count()).where(trades_table.c.row_id > row_id)
        with self._connect() as conn:
            metadata.create_all(conn)
            return int(conn.execute(query).scalar())

    def trades_of_version(self, symbol: str, timeframe: str, model_version: str) -> pd.DataFrame:
        """Every journaled trade a model version produced, oldest exit first."""
        return self._select(
            trades_table.c.symbol == symbol,
            trades_table.c.timeframe == timeframe,
            trades_table.c.model_version == model_version,
        )

    # --- open signals ---------------------------------------------------------------------

    def add_signal(self, signal: dict) -> bool:
        """Record an open signal; False when one exists for the same model and bar already."""
        row = {**signal, "status": "open", "trade_id": None}
        try:
            with self._connect() as conn:
                metadata.create_all(conn)
                conn.execute(signals_table.insert(), [row])
        except JournalError as exc:
            # The unique (model, bar) constraint decides, so two monitors cannot race past it.
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                return False
            raise
        return True

    def open_signals(self) -> pd.DataFrame:
        """Signals not resolved yet, oldest first."""
        query = (
            sa.select(signals_table)
            .where(signals_table.c.status == "open")
            .order_by(signals_table.c.bar_time, signals_table.c.signal_id)
        )
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame(
            [dict(r) for r in rows], columns=[c.name for c in signals_table.columns]
        )

    def close_signal(self, signal_id: str, trade: dict) -> bool:
        """Resolve an open signal into a closed trade, atomically and at most once.

        Returns False when the signal was already resolved (a second monitor run).
        """
        now = pd.Timestamp.now(tz="UTC").isoformat()
        with self._connect() as conn:
            metadata.create_all(conn)
            updated = conn.execute(
                signals_table.update()
                .where(signals_table.c.signal_id == signal_id)
                .where(signals_table.c.status == "open")
                .values(status="resolved", trade_id=trade["trade_id"])
            ).rowcount
            if updated != 1:
                return False
            row = {c: trade.get(c) for c in TRADE_COLUMNS}
            row["exit_time_us"] = _epoch_us(row["exit_time"])
            row["recorded_at"] = now
            conn.execute(trades_table.insert(), [row])
        return True

    # --- shadow trades --------------------------------------------------------------------

    def add_shadow_trades(self, rows: Iterable[dict]) -> tuple[int, int]:
        """Record arena members' closed virtual trades (``SHADOW_TRADE_COLUMNS``); returns
        ``(written, already_present)``. A row whose (model, member version, session, signal
        time) is stored already is left as it was, so a re-run of a session, or two runs of it
        at once, never store a virtual trade twice. The batch is one transaction."""
        now = pd.Timestamp.now(tz="UTC").isoformat()
        batch = []
        for row in rows:
            missing = [c for c in SHADOW_TRADE_COLUMNS if c not in row or _is_blank(row[c])]
            if missing:
                raise JournalError(
                    f"shadow trade of {row.get('model')} {row.get('member_version')} at "
                    f"{row.get('signal_time')} lacks {', '.join(missing)}; nothing was written"
                )
            batch.append({**{c: row[c] for c in SHADOW_TRADE_COLUMNS}, "recorded_at": now})
        # Connects even for an empty batch: a session's shadow book is recorded in the journal,
        # so an unreachable journal stops the session's arena fold rather than skipping it.
        with self._connect() as conn:
            metadata.create_all(conn)
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            statement = insert(shadow_trades_table).on_conflict_do_nothing(
                index_elements=["model", "member_version", "session", "signal_time"]
            )
            written = sum(conn.execute(statement, [row]).rowcount for row in batch)
        return written, len(batch) - written

    def shadow_trades(
        self,
        model: str,
        *,
        session: str | None = None,
        member_version: str | None = None,
    ) -> pd.DataFrame:
        """A model's virtual trades (one session's, one member's, or all), in exit order."""
        table = shadow_trades_table
        query = sa.select(table).where(table.c.model == model)
        if session is not None:
            query = query.where(table.c.session == session)
        if member_version is not None:
            query = query.where(table.c.member_version == member_version)
        query = query.order_by(table.c.exit_time_us, table.c.member_version, table.c.shadow_id)
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])

    # --- alerts ---------------------------------------------------------------------------

    def add_alert(self, kind: str, subject: str, message: str) -> None:
        """Record something an operator must see (run failures, rejections, degradation)."""
        row = {
            "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "kind": kind,
            "subject": subject[:256],
            "message": message,
        }
        with self._connect() as conn:
            metadata.create_all(conn)
            conn.execute(alerts_table.insert(), [row])

    def alerts(self, limit: int = 50) -> pd.DataFrame:
        query = sa.select(alerts_table).order_by(alerts_table.c.alert_id.desc()).limit(limit)
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in alerts_table.columns])

    def count_trades(self) -> int:
        with self._connect() as conn:
            metadata.create_all(conn)
            return int(conn.execute(sa.select(sa.func.count()).select_from(trades_table)).scalar())


class TradeJournalResource(dg.ConfigurableResource):
    """The trade journal database (SQLite file by default, PostgreSQL in production)."""

    url: str = Field(
        description="SQLAlchemy URL of the journal, e.g. sqlite:////srv/sl/journal.sqlite or "
        "postgresql+psycopg2://user:password@host:5432/db (pass it with an EnvVar)."
    )

    def journal(self) -> TradeJournal:
        return TradeJournal(self.url)
