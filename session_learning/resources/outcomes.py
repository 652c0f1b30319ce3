"""What each learning step decided, and which journal rows each session was learned from.

Two small tables in the trade journal's database (SQLite or PostgreSQL, the same code), written
by the learning assets' hooks (``session_learning/hooks.py``) and read by ``session-learning
status``, the alerts and the late-trade sensor:

- ``learning_outcomes``: per model and session, the latest word of each learning step: the
  decision (deployed; rejected, with every failed gate's value and threshold; untouched, with
  the plan's reasons) or the error that stopped it, with the numbers and the fix, and the run.
  Session-level steps (``session_trades``, ``problem_report``) are recorded under the model
  ``*``.
- ``session_reads``: the journal rows a learning run read for a session, and when. A row of
  a closed session that the session's latest read did not see was journaled after the session
  was learned: a *late trade*, never learned from until the session is re-run.

The model registry keeps the models and which one is live; this store only explains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from session_learning.domain.json_encoding import dumps
from session_learning.resources.journal import TradeJournal, alerts_table, create_tables

SESSION = "*"  # the model name of session-level outcomes
STEP_SEPARATOR = "__"  # Dagster step keys of per-model assets: EURUSD_30T__candidate_model

# Outcomes a user must act on or know about; each is also an alert.
ALERTED = frozenset({"error", "rejected"})
# Session-level steps whose failure stops every model's learning for the session (a failed
# CSV export or breakdown is an alert, but the models learn regardless).
STOPPING_STEPS = frozenset({"session_trades", "problem_report", "run"})
# Outcomes that end a model's learning step for a session (the rest say what is under way).
DECISIONS = frozenset({"passed", "deployed", "not_deployed", "rejected", "error"})

outcomes_metadata = sa.MetaData()

outcomes_table = sa.Table(
    "learning_outcomes",
    outcomes_metadata,
    sa.Column("outcome_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session", sa.String(32), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("step", sa.String(64), nullable=False),
    # untouched | training | passed | rejected | deployed | not_deployed | error
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("version", sa.String(128)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: gates, error class, fix
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.String(64), nullable=False),
)
sa.Index("ix_learning_outcomes_model", outcomes_table.c.model, outcomes_table.c.outcome_id)
sa.Index("ix_learning_outcomes_run", outcomes_table.c.run_id, outcomes_table.c.step)

reads_table = sa.Table(
    "session_reads",
    outcomes_metadata,
    sa.Column("read_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session", sa.String(32), nullable=False),
    sa.Column("session_start_us", sa.BigInteger, nullable=False),
    sa.Column("session_end_us", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("read_at", sa.String(64), nullable=False),
    sa.Column("read_at_us", sa.BigInteger, nullable=False),
    sa.Column("row_ids", sa.Text, nullable=False),  # JSON list of the journal rows read
)
sa.Index("ix_session_reads_read_at", reads_table.c.read_at_us)
sa.Index("ix_session_reads_session", reads_table.c.session)

LATE_TRADE_COLUMNS = [
    "session",
    "row_id",
    "trade_id",
    "symbol",
    "timeframe",
    "exit_time",
    "recorded_at",
    "learned_at",
    "learned_by_run",
]


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat()


def _us(moment: datetime | pd.Timestamp) -> int:
    return int(pd.Timestamp(moment).tz_convert("UTC").value // 1000)


def split_step_key(step_key: str) -> tuple[str, str]:
    """``("EURUSD_30T", "candidate_model")`` for a per-model step, ``("*", step)`` otherwise."""
    model, sep, step = step_key.rpartition(STEP_SEPARATOR)
    return (model, step) if sep else (SESSION, step_key)


@dataclass(frozen=True)
class Outcome:
    """One learning step's word on one model (or the session) for one session."""

    session: str
    model: str
    step: str
    outcome: str
    message: str
    run_id: str
    version: str | None = None
    details: dict = field(default_factory=dict)
    recorded_at: str = ""

    def alert(self) -> tuple[str, str, str]:
        """``(kind, subject, message)`` of the alert this outcome raises: a rejection is a
        decision (``gate_rejection``), anything else that stopped learning is an error
        (``run_failure``). The message is whole: what happened, the numbers, the fix."""
        kind = "gate_rejection" if self.outcome == "rejected" else "run_failure"
        who = "session" if self.model == SESSION else self.model
        subject = f"{who} {self.session} {self.step} (run {self.run_id[:8]})"
        return kind, subject, self.message


class OutcomeStore:
    """The outcome and session-read tables in the journal behind ``journal``."""

    def __init__(self, journal: TradeJournal) -> None:
        self.journal = journal

    def _ready(self, conn: sa.Connection) -> None:
        create_tables(conn, outcomes_metadata)  # the journal's alerts table and the outcomes

    # --- outcomes -------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> bool:
        """Store ``outcome`` (and its alert, for an error or a rejection) in one transaction.

        A step is recorded once per run: a second call for the same run, model and step (the
        run-failure sensor after the step's own hook) writes nothing and returns False.
        """
        row = {
            "session": outcome.session,
            "model": outcome.model,
            "step": outcome.step,
            "outcome": outcome.outcome,
            "version": outcome.version,
            "message": outcome.message,
            "details": dumps(outcome.details, lenient=True, allow_nan=True),
            "run_id": outcome.run_id,
            "recorded_at": outcome.recorded_at or _now(),
        }
        with self.journal.transaction() as conn:
            self._ready(conn)
            if self._has(conn, outcome.run_id, outcome.model, outcome.step):
                return False
            conn.execute(outcomes_table.insert(), [row])
            if outcome.outcome in ALERTED:
                kind, subject, message = outcome.alert()
                conn.execute(
                    alerts_table.insert(),
                    [
                        {
                            "created_at": row["recorded_at"],
                            "kind": kind,
                            "subject": subject[:256],
                            "message": message,
                        }
                    ],
                )
        return True

    @staticmethod
    def _has(conn: sa.Connection, run_id: str, model: str, step: str) -> bool:
        query = (
            sa.select(sa.func.count())
            .select_from(outcomes_table)
            .where(outcomes_table.c.run_id == run_id)
            .where(outcomes_table.c.model == model)
            .where(outcomes_table.c.step == step)
        )
        return bool(conn.execute(query).scalar())

    def has(self, run_id: str, model: str, step: str) -> bool:
        """Whether this run already recorded this model's step."""
        with self.journal.transaction() as conn:
            self._ready(conn)
            return self._has(conn, run_id, model, step)

    def latest(self, models: Iterable[str]) -> dict[str, Outcome]:
        """The newest outcome of each model: its own, or a session-level error that stopped
        every model after it (the journal unreachable, the session analysis failed)."""
        out: dict[str, Outcome] = {}
        with self.journal.transaction() as conn:
            self._ready(conn)
            session_error = self._newest(
                conn,
                (outcomes_table.c.model == SESSION)
                & (outcomes_table.c.outcome == "error")
                & outcomes_table.c.step.in_(sorted(STOPPING_STEPS)),
            )
            for model in models:
                own = self._newest(conn, outcomes_table.c.model == model)
                best = max(
                    (o for o in (own, session_error) if o is not None),
                    key=lambda o: o[0],
                    default=None,
                )
                if best is not None:
                    out[model] = best[1]
        return out

    def history(self, model: str, limit: int = 20) -> list[Outcome]:
        """A model's outcomes, newest first."""
        query = (
            sa.select(outcomes_table)
            .where(outcomes_table.c.model == model)
            .order_by(outcomes_table.c.outcome_id.desc())
            .limit(limit)
        )
        with self.journal.transaction() as conn:
            self._ready(conn)
            return [_outcome(r) for r in conn.execute(query).mappings()]

    @staticmethod
    def _newest(conn: sa.Connection, where) -> tuple[int, Outcome] | None:
        query = (
            sa.select(outcomes_table)
            .where(where)
            .order_by(outcomes_table.c.outcome_id.desc())
            .limit(1)
        )
        row = conn.execute(query).mappings().first()
        return None if row is None else (row["outcome_id"], _outcome(row))

    # --- session reads and late trades ----------------------------------------------------

    def record_read(
        self,
        session: str,
        start: datetime,
        end: datetime,
        run_id: str,
        row_ids: Sequence[int],
    ) -> None:
        """Remember that ``run_id`` learned ``session`` from exactly these journal rows."""
        now = pd.Timestamp.now(tz="UTC")
        row = {
            "session": session,
            "session_start_us": _us(start),
            "session_end_us": _us(end),
            "run_id": run_id,
            "read_at": now.isoformat(),
            "read_at_us": _us(now),
            "row_ids": dumps(sorted(int(r) for r in row_ids)),
        }
        with self.journal.transaction() as conn:
            self._ready(conn)
            conn.execute(reads_table.insert(), [row])

    def late_trades(
        self,
        now: datetime,
        lookback: pd.Timedelta = pd.Timedelta(days=7),
        settle: pd.Timedelta = pd.Timedelta(hours=1),
    ) -> pd.DataFrame:
        """Journal rows of learned sessions that the session's latest read did not see.

        Searched: the sessions learned (read) in the ``lookback`` before ``now`` that ended at
        least ``settle`` before ``now`` (a session still open, or just closed with its scheduled
        run still to come, is not late yet). A backfill of old sessions counts from when it ran.
        One row per late trade (columns ``LATE_TRADE_COLUMNS``), oldest session first.
        """
        now_us = _us(now)
        learned = (
            sa.select(reads_table.c.session)
            .where(reads_table.c.read_at_us > now_us - _us_of(lookback))
            .where(reads_table.c.session_end_us <= now_us - _us_of(settle))
        )
        query = (
            sa.select(reads_table)
            .where(reads_table.c.session.in_(learned))
            .order_by(reads_table.c.read_id)
        )
        with self.journal.transaction() as conn:
            self._ready(conn)
            reads = {r["session"]: dict(r) for r in conn.execute(query).mappings()}  # last wins
        if not reads:
            return pd.DataFrame(columns=LATE_TRADE_COLUMNS)
        first = min(r["session_start_us"] for r in reads.values())
        last = max(r["session_end_us"] for r in reads.values())
        rows = self.journal.trades_exited_between(
            pd.Timestamp(first * 1000, tz="UTC"), pd.Timestamp(last * 1000, tz="UTC")
        )
        late = []
        for read in sorted(reads.values(), key=lambda r: r["session_start_us"]):
            seen = set(json.loads(read["row_ids"]))
            inside = rows.loc[
                (rows["exit_time_us"] >= read["session_start_us"])
                & (rows["exit_time_us"] < read["session_end_us"])
                & ~rows["row_id"].isin(seen)
            ]
            for trade in inside.itertuples():
                late.append(
                    {
                        "session": read["session"],
                        "row_id": int(trade.row_id),
                        "trade_id": trade.trade_id,
                        "symbol": trade.symbol,
                        "timeframe": trade.timeframe,
                        "exit_time": trade.exit_time,
                        "recorded_at": trade.recorded_at,
                        "learned_at": read["read_at"],
                        "learned_by_run": read["run_id"],
                    }
                )
        return pd.DataFrame(late, columns=LATE_TRADE_COLUMNS)


def _us_of(delta: pd.Timedelta) -> int:
    return int(pd.Timedelta(delta).value // 1000)


def _outcome(row) -> Outcome:
    return Outcome(
        session=row["session"],
        model=row["model"],
        step=row["step"],
        outcome=row["outcome"],
        message=row["message"],
        run_id=row["run_id"],
        version=row["version"],
        details=json.loads(row["details"]),
        recorded_at=row["recorded_at"],
    )


def rerun_command(session: str) -> str:
    """The shell command that re-runs the learning job for ``session`` through the daemon."""
    tags = dumps({"dagster/partition": session})
    return f"dagster job launch -w workspace.yaml -j session_learning_job --tags '{tags}'"
