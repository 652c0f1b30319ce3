"""The journal's tables (trades, the text of values that are not numbers, corrections,
signals, alerts, shadow trades) and its errors.
"""

from __future__ import annotations

import sqlalchemy as sa

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


# Any fixed number: the advisory lock that serializes creating the tables on PostgreSQL.
SCHEMA_LOCK_KEY = 0x5E55_1011


def create_tables(conn: sa.Connection, *more: sa.MetaData) -> None:
    """Create the journal's tables (and those of ``more``, kept in the same database) that do
    not exist yet, in the caller's transaction; safe to call every time.

    On PostgreSQL two first runs at once would both create the same tables and one would fail
    on the catalog's unique index (``pg_type_typname_nsp_index``); while a table is missing,
    creators take a transaction-level advisory lock, so the second waits for the first's
    commit and then finds the tables there.
    """
    metadatas = (metadata, *more)
    if conn.dialect.name == "postgresql":
        inspector = sa.inspect(conn)
        if all(inspector.has_table(t) for m in metadatas for t in m.tables):
            return  # the common case: one look at the catalog, not a second in create_all
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
    for meta in metadatas:
        meta.create_all(conn)


class JournalError(RuntimeError):
    """The trade journal could not be read or written."""


class JournalUnavailableError(JournalError):
    """The journal database cannot be reached."""


class TradeImportError(JournalError):
    """A file of trades cannot be imported; the message says what, where and what to do.
    Nothing of the file was written."""
