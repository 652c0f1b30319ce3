"""Shadow trades: the arena members' virtual trades, one row per (model, member version,
session, signal bar).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

from session_learning.resources.journal.rows import _is_blank
from session_learning.resources.journal.schema import (
    SHADOW_TRADE_COLUMNS,
    JournalError,
    create_tables,
    shadow_trades_table,
)


class ShadowTrades:
    """Part of ``TradeJournal``: writing and reading shadow trades."""

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
            create_tables(conn)
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
            create_tables(conn)
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])
