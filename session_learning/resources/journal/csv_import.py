"""Importing a CSV of trades (``session-learning import-trades``): the header and encoding
checks, matching rows already journaled, conflicts and corrections, and the report.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from session_learning.domain.json_encoding import dumps
from session_learning.domain.keys import TRADE_COLUMNS
from session_learning.domain.trades import (
    TIME_COLUMNS,
    detect_delimiter,
    parse_utc_timestamp,
    resolve_columns,
)
from session_learning.resources.journal.rows import (
    RAW_KEY,
    _insert,
    _journal_row,
)
from session_learning.resources.journal.schema import (
    TradeImportError,
    corrections_table,
    create_tables,
    raw_values_table,
    trades_table,
)

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


class CsvImport:
    """Part of ``TradeJournal``: ``import_csv`` and the reconciliation of its rows."""

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
            create_tables(conn)
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
