"""The trade journal: closed trades and open signals in a SQL database.

SQLite by default, PostgreSQL by URL (``postgresql+psycopg2://...``); the same SQLAlchemy Core
code serves both. The journal stores what the trading system wrote, as written: timestamps are
kept as the ISO-8601 text they arrived as (so a missing UTC offset stays visible to the quality
rules), plus an integer ``exit_time_us`` (UTC microseconds) that places a row in its session.
Every statement uses bound parameters.

Where each part lives (one class, ``TradeJournal``, in ``trade_journal.py``):

* ``schema.py``: the tables and the errors.
* ``rows.py``: a trade as a journal row, and its insert.
* ``csv_import.py``: ``import_csv``, its conflicts, corrections and report.
* ``shadow.py``: the arena's shadow trades.
* ``trade_journal.py``: the connection, trades, open signals and alerts.
* ``resource.py``: ``TradeJournalResource``.
"""

from session_learning.resources.journal.csv_import import (
    Conflict,
    ImportReport,
)
from session_learning.resources.journal.resource import TradeJournalResource
from session_learning.resources.journal.rows import RAW_KEY
from session_learning.resources.journal.schema import (
    SHADOW_TRADE_COLUMNS,
    JournalError,
    JournalUnavailableError,
    TradeImportError,
    alerts_table,
    corrections_table,
    create_tables,
    metadata,
    raw_values_table,
    shadow_trades_table,
    signals_table,
    trades_table,
)
from session_learning.resources.journal.trade_journal import (
    TradeJournal,
    redact_url,
)

__all__ = [
    "Conflict",
    "ImportReport",
    "JournalError",
    "JournalUnavailableError",
    "RAW_KEY",
    "SHADOW_TRADE_COLUMNS",
    "TradeImportError",
    "TradeJournal",
    "TradeJournalResource",
    "alerts_table",
    "corrections_table",
    "create_tables",
    "metadata",
    "raw_values_table",
    "redact_url",
    "shadow_trades_table",
    "signals_table",
    "trades_table",
]
