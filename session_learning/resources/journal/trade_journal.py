"""``TradeJournal``: the connection (errors that name the database, password hidden), the
reads and writes of trades, open signals and alerts; the CSV import and the shadow trades
are its parts in ``csv_import.py`` and ``shadow.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from session_learning.domain.keys import TRADE_COLUMNS
from session_learning.domain.trades import REQUIRED_COLUMNS
from session_learning.resources.journal.csv_import import CsvImport
from session_learning.resources.journal.rows import (
    _epoch_us,
    _insert,
    _journal_row,
    _to_us,
)
from session_learning.resources.journal.schema import (
    JournalError,
    JournalUnavailableError,
    alerts_table,
    corrections_table,
    create_tables,
    raw_values_table,
    signals_table,
    trades_table,
)
from session_learning.resources.journal.shadow import ShadowTrades


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and metadata."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by create_engine itself
        return "<unparsable database URL>"


@lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, pool_pre_ping=True, future=True)


class TradeJournal(CsvImport, ShadowTrades):
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
            create_tables(conn)

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
            create_tables(conn)
            _insert(conn, rows)
        return len(rows)

    def corrections(self) -> pd.DataFrame:
        """Every correction applied to journaled trades, oldest first."""
        query = sa.select(corrections_table).order_by(corrections_table.c.correction_id)
        with self._connect() as conn:
            create_tables(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame(
            [dict(r) for r in rows], columns=[c.name for c in corrections_table.columns]
        )

    def existing_trade_ids(self, trade_ids: Iterable[str]) -> set[str]:
        ids = list(trade_ids)
        found: set[str] = set()
        with self._connect() as conn:
            create_tables(conn)
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
            create_tables(conn)
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
            create_tables(conn)
            return int(conn.execute(sa.select(sa.func.max(trades_table.c.row_id))).scalar() or 0)

    def count_trades_after(self, row_id: int) -> int:
        """Journal rows written after ``row_id``."""
        query = sa.select(sa.func.count()).where(trades_table.c.row_id > row_id)
        with self._connect() as conn:
            create_tables(conn)
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
                create_tables(conn)
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
            create_tables(conn)
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
            create_tables(conn)
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
            create_tables(conn)
            conn.execute(alerts_table.insert(), [row])

    def alerts(self, limit: int = 50) -> pd.DataFrame:
        query = sa.select(alerts_table).order_by(alerts_table.c.alert_id.desc()).limit(limit)
        with self._connect() as conn:
            create_tables(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in alerts_table.columns])

    def count_trades(self) -> int:
        with self._connect() as conn:
            create_tables(conn)
            return int(conn.execute(sa.select(sa.func.count()).select_from(trades_table)).scalar())
