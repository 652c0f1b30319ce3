"""The trade journal: closed trades and open signals in a SQL database.

SQLite by default, PostgreSQL by URL (``postgresql+psycopg2://...``); the same SQLAlchemy Core
code serves both. The journal stores what the trading system wrote, as written: timestamps are
kept as the ISO-8601 text they arrived as (so a missing UTC offset stays visible to the quality
rules), plus an integer ``exit_time_us`` (UTC microseconds) that places a row in its session.
Every statement uses bound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import make_url

from session_learning.domain.models import TRADE_COLUMNS
from session_learning.domain.trades import NUMERIC_COLUMNS, TIME_COLUMNS, parse_utc_timestamp

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
    sa.Column("kind", sa.String(32), nullable=False),  # run_failure | gate_rejection | degraded
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)


class JournalError(RuntimeError):
    """The trade journal could not be read or written."""


class JournalUnavailableError(JournalError):
    """The journal database cannot be reached."""


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
                f"trade journal {redact_url(self.url)} is unreachable: {exc.orig}. "
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

    def create_schema(self) -> None:
        """Create the tables if they do not exist (safe to call every time)."""
        with self._connect() as conn:
            metadata.create_all(conn)

    def add_trades(self, trades: pd.DataFrame | Iterable[dict]) -> int:
        """Append closed trades as given (bad rows too: the session's quality rules judge them).

        Returns the number of rows written; the whole batch is one transaction.
        """
        frame = pd.DataFrame(list(trades)) if not isinstance(trades, pd.DataFrame) else trades
        missing = [c for c in TRADE_COLUMNS if c not in frame.columns]
        if missing:
            raise JournalError(f"trades lack required columns: {', '.join(missing)}")
        now = pd.Timestamp.now(tz="UTC").isoformat()
        rows = []
        for record in frame[list(TRADE_COLUMNS)].to_dict("records"):
            row = {}
            for column in TRADE_COLUMNS:
                value = record[column]
                if column in TIME_COLUMNS:
                    row[column] = _time_text(value)
                elif column in NUMERIC_COLUMNS:
                    row[column] = _number(value)
                else:
                    row[column] = None if pd.isna(value) else str(value)
            row["exit_time_us"] = _epoch_us(row["exit_time"])
            row["recorded_at"] = now
            rows.append(row)
        if not rows:
            return 0
        with self._connect() as conn:
            metadata.create_all(conn)
            conn.execute(trades_table.insert(), rows)
        return len(rows)

    def import_csv(self, path: Path | str) -> dict[str, int]:
        """Import a CSV of trades; rows whose ``trade_id`` is already journaled are skipped.

        Returns counts: ``read``, ``written``, ``already_present``. Values are read as text so
        that what the file says reaches the quality rules unchanged.
        """
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in TRADE_COLUMNS if c not in frame.columns]
        if missing:
            raise JournalError(f"{path}: missing columns {', '.join(missing)}")
        ids = [i for i in frame["trade_id"].unique() if i]
        present = self.existing_trade_ids(ids)
        new = frame.loc[~frame["trade_id"].isin(present)]
        written = self.add_trades(new)
        return {"read": len(frame), "written": written, "already_present": len(frame) - written}

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
        query = (
            sa.select(trades_table)
            .where(trades_table.c.exit_time_us >= _to_us(start))
            .where(trades_table.c.exit_time_us < _to_us(end))
            .order_by(trades_table.c.exit_time_us, trades_table.c.row_id)
        )
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        columns = [c.name for c in trades_table.columns]
        return pd.DataFrame([dict(r) for r in rows], columns=columns)

    def unplaceable_trades(self) -> pd.DataFrame:
        """Rows whose exit time is missing, unparsable or outside 1677..2262: they belong to no
        session."""
        query = sa.select(trades_table).where(trades_table.c.exit_time_us.is_(None))
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in trades_table.columns])

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
        query = (
            sa.select(trades_table)
            .where(trades_table.c.symbol == symbol)
            .where(trades_table.c.timeframe == timeframe)
            .where(trades_table.c.model_version == model_version)
            .order_by(trades_table.c.exit_time_us, trades_table.c.row_id)
        )
        with self._connect() as conn:
            metadata.create_all(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in trades_table.columns])

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
