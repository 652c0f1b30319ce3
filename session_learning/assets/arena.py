"""Per-model arena assets (one set per symbol/timeframe, beside the learning assets):

    <MODEL>/shadow_book -> <MODEL>/challenger_evidence --(challenger_beats_champion)--> <MODEL>/champion_model

``shadow_book`` marks every arena member (the champion unless FLAT trades, and each challenger)
on the session's bars with the live scorer, and stores its closed virtual trades in the journal's
``shadow_trades``. ``challenger_evidence`` folds the session into the arena state the registry
keeps (``domain.arena_session.run_arena_session``): the champion's change detector, each
challenger's forward evidence, retirements, the promotion decision and the newcomers. A demotion
pauses the champion in the registry at once (FLAT trades) and writes an alert; a promotion
records the winner's judgement with its forward evidence, which ``champion_model`` deploys
(``deployed_model`` makes only a model's first deployment, on its validation gates).

Sessions are folded in order: the registry's compare-and-swap refuses a session computed from
another state, so a re-run or two partitions side by side never fold a session twice or lose
one. A re-run of a folded session shows what was recorded and changes nothing.
"""

import math
from collections.abc import Mapping
from datetime import datetime

import dagster as dg
import numpy as np
import pandas as pd

from session_learning.assets.metadata import markdown_table, session_check_spec
from session_learning.domain.arena import FLAT, Arena, GateVerdict
from session_learning.domain.arena_judgement import arena_judgement, gate_verdict
from session_learning.domain.arena_session import (
    ArenaSessionSettings,
    ArenaState,
    BookPoint,
    Newcomer,
    SessionMarks,
    admit_newcomers,
    mark_session,
    run_arena_session,
)
from session_learning.domain.drift import ChangeDetector, design_detector
from session_learning.domain.features import atr, card_feature_set
from session_learning.domain.gates import Judgement
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import PARTITION_FORMAT, history_start
from session_learning.domain.signals import score_bars
from session_learning.domain.training import TradingRule
from session_learning.hooks import outcome_hooks
from session_learning.reports.plots import change_statistic_png, evidence_curves_png, png_markdown
from session_learning.resources.arena import ArenaSettingsResource
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.market_data import MarketDataResource
from session_learning.resources.registry import (
    ModelRegistry,
    ModelRegistryResource,
    RegistryError,
)

OWNERS = ["team:trading-ml"]
GROUP_PREFIX = "model_"
CHALLENGER_BEATS_CHAMPION = "challenger_beats_champion"
CHAMPION_NOT_PAUSED = "champion_not_paused"
# Sessions of evidence shown in the curves.
PLOTTED_SESSIONS = 60
_MIN_DETECTOR_TRADES = 30


def _key_of(moment: pd.Timestamp) -> str:
    return pd.Timestamp(moment).strftime(PARTITION_FORMAT)


def _stamp(version: str) -> pd.Timestamp:
    """The session end a version id starts with (``save_candidate``)."""
    return pd.Timestamp(datetime.strptime(version.split("-")[0], "%Y%m%dT%H%M"), tz="UTC")


# --- reading members from the registry ---------------------------------------------------


def _detector(card: Mapping, key: ModelKey, session: pd.Timedelta, rules) -> ChangeDetector | None:
    """A member's change detector, designed from its validation trades (the card's
    ``validation_r``); None with fewer than 30, as for a card written before they were kept."""
    r = np.asarray(card.get("validation_r") or [], dtype=np.float64)
    rows = card.get("validation_rows") or 0
    sessions = rows * key.bar / session
    if len(r) < _MIN_DETECTOR_TRADES or sessions <= 0:
        return None
    return design_detector(
        r,
        trades_per_session=len(r) / sessions,
        false_alarms_per_100_sessions=rules.false_alarms_per_100_sessions,
        shift_r=rules.shift_r,
        block_trades=min(rules.detector_block_trades, len(r)),
    )


def _gate(store: ModelRegistry, key: ModelKey, version: str) -> GateVerdict | None:
    """The seed's gates of a version on its validation window (held out of its training)."""
    record = store.judgement(key, version)
    if record is None:
        return None
    card = store.card(key, version)
    held = card.get("held_out") or card["validation_window"]
    return gate_verdict(
        Judgement.from_record(record),
        "validation",
        pd.Timestamp(card["validation_window"][0]),
        pd.Timestamp(held[0]) - pd.Timedelta(microseconds=1),
    )


def _kind(card: Mapping) -> str:
    if card.get("arena_kind"):
        return card["arena_kind"]
    plan = card.get("plan") or {}
    learned = plan.get("trade_boosts") or plan.get("loser_patterns")
    return "session_learned" if learned else "periodic"


def _newcomer(store, key, version, kind, session, rules) -> Newcomer:
    card = store.card(key, version)
    return Newcomer(
        version,
        kind or _kind(card),
        _gate(store, key, version),
        _detector(card, key, session, rules),
    )


def _pending(store: ModelRegistry, key: ModelKey, version: str) -> bool:
    """Whether the arena promoted ``version`` and ``champion_model`` has not deployed it yet."""
    record = store.judgement(key, version)
    evidence = (record or {}).get("evidence") or {}
    if evidence.get("kind") != "arena" or evidence.get("winner") != version:
        return False
    return not any(
        e["version"] == version and e.get("judged_at") == record["judged_at"]
        for e in store.history(key)
    )


def _synced(
    store: ModelRegistry,
    key: ModelKey,
    state: ArenaState | None,
    session: pd.Timedelta,
    rules: ArenaSettingsResource,
    settings: ArenaSessionSettings,
) -> tuple[ArenaState, str | None]:
    """The arena state to fold the session into, following the registry where it changed
    outside the arena: a model's first deployment (on its validation judgement), an operator's
    rollback or the end of a pause. The arena then restarts with what trades as champion and
    the same challengers (their evidence restarts). A promotion the arena decided and
    ``champion_model`` has not deployed yet is kept. Returns the state and why it restarted."""
    live = store.production_version(key)
    trading = live if live is not None and store.paused(key) is None else None
    if state is not None:
        champion = state.arena.champion
        arena_trading = None if champion == FLAT else champion
        if arena_trading == trading or (
            arena_trading is not None and _pending(store, key, arena_trading)
        ):
            return state, None
    fresh = ArenaState.start(
        key.slug,
        trading or FLAT,
        detector=None
        if trading is None
        else _detector(store.card(key, trading), key, session, rules),
        gate=None if trading is None else _gate(store, key, trading),
    )
    if state is None:
        return fresh, None
    old = state.arena
    again = [
        Newcomer(c.version, c.kind, state.gates.get(c.version), state.designs.get(c.version))
        for c in old.challengers
        if c.version != trading
    ]
    if old.champion not in (FLAT, trading):
        again.append(_newcomer(store, key, old.champion, "previous_champion", session, rules))
    fresh, _ = admit_newcomers(fresh, again, settings.arena)
    return fresh, (
        f"the registry trades {trading or 'nothing'} while the arena's champion was "
        f"{old.champion}: the arena restarted with {trading or FLAT} as champion"
    )


def _document_state(document: Mapping | None) -> tuple[ArenaState | None, list[str]]:
    if document is None:
        return None, []
    held = document["state"]
    return ArenaState.from_dict(held["arena_state"]), list(held.get("considered", []))


def _base(store: ModelRegistry, key: ModelKey, session: str) -> tuple[str | None, str | None]:
    """``(base, past)``: the session the arena state to fold ``session`` into was left by (None
    before the first), or, when the arena has already folded a later session, ``past``: that
    session (an older session is not folded any more; its bars were not evidence). Sessions the
    schedule never ran are skipped the same way: the test only needs the sessions it sees."""
    document = store.arena(key)
    if document is None:
        return None, None
    if document["session"] < session:  # keys sort as times (YYYY-MM-DD-HH:MM)
        return document["session"], None
    return None, document["session"]


def build_arena_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition, key: ModelKey
) -> list[dg.AssetsDefinition]:
    """The shadow book and the evidence of one model's arena."""
    prefix = [key.slug]
    group = f"{GROUP_PREFIX}{key.slug}"
    shadow_key = dg.AssetKey([*prefix, "shadow_book"])
    evidence_key = dg.AssetKey([*prefix, "challenger_evidence"])
    hooks = outcome_hooks(partitions_def)

    def window(context) -> tuple[str, pd.Timestamp, pd.Timestamp]:
        w = context.partition_time_window
        return context.partition_key, pd.Timestamp(w.start), pd.Timestamp(w.end)

    @dg.asset(
        key=shadow_key,
        partitions_def=partitions_def,
        group_name=group,
        owners=OWNERS,
        hooks=hooks,
        kinds={"pandas", "sql"},
        tags={"session_learning/model": key.slug},
    )
    def shadow_book(
        context: dg.AssetExecutionContext,
        market_data: MarketDataResource,
        registry: ModelRegistryResource,
        journal: TradeJournalResource,
        learning_settings: LearningSettingsResource,
        arena_settings: ArenaSettingsResource,
    ) -> dg.Output[dict]:
        """Every arena member (the champion unless FLAT trades, and each challenger) scores the
        session's bars with the live scorer; its virtual trades, resolved by the shared
        first-touch rules with costs, go to the journal's shadow_trades (never mixed with live
        trades), and its mark-to-market R on every bar feeds challenger_evidence."""
        session, start, end = window(context)
        store = registry.registry()
        settings = arena_settings.session_settings()
        recorded = store.arena_session(key, session)
        base, past = _base(store, key, session)
        if recorded is None and past is not None:
            note = f"the arena has folded up to {past}: session {session} is not folded"
            context.log.info(f"{key.slug}: {note}")
            return dg.Output({"session": session, "past": past}, metadata={"skipped": note})
        if recorded is not None:
            # A re-run of a folded session marks the members it was folded with, again.
            base = recorded["computed_from"]
            state = ArenaState(
                Arena.from_dict(recorded["arena_before"]),
                books={v: BookPoint.from_dict(b) for v, b in recorded["books_before"].items()},
            )
        else:
            held, _ = _document_state(store.arena(key))
            state, _ = _synced(store, key, held, end - start, arena_settings, settings)
        marked, signal_bars = _mark(state, store, key, start, end, market_data, learning_settings)
        rows = _journal_rows(marked, key, session, signal_bars)
        written, present = journal.journal().add_shadow_trades(rows)
        table = pd.DataFrame(
            [
                {
                    "member": v,
                    "role": "champion" if v == state.arena.champion else "challenger",
                    "bars": len(marked.marks[v]),
                    "trades": len(marked.trades[v]),
                    "R": float(marked.trades[v]["r_multiple"].sum())
                    if len(marked.trades[v])
                    else 0.0,
                    "marked R": float(marked.marks[v].sum()),
                }
                for v in state.arena.members()
            ],
            columns=["member", "role", "bars", "trades", "R", "marked R"],
        )
        return dg.Output(
            {
                "session": session,
                "computed_from": base,
                "champion": state.arena.champion,
                "members": list(state.arena.members()),
                "bars": marked.bars,
                "index": [t.isoformat() for t in _index(marked)],
                "marks": {v: [float(x) for x in m.to_numpy()] for v, m in marked.marks.items()},
                "trades": {v: int(len(t)) for v, t in marked.trades.items()},
                "trade_r": {
                    v: [float(x) for x in t["r_multiple"].to_numpy()]
                    for v, t in marked.trades.items()
                },
                "books": {v: b.as_dict() for v, b in marked.books.items()},
                "spans": {v: float(s) for v, s in marked.spans.items()},
            },
            metadata={
                "champion": state.arena.champion,
                "bars": marked.bars,
                "members": markdown_table(table),
                "shadow_trades_written": written,
                "shadow_trades_already_stored": present,
            },
        )

    @dg.asset(
        key=evidence_key,
        partitions_def=partitions_def,
        group_name=group,
        owners=OWNERS,
        hooks=hooks,
        kinds={"numpy"},
        ins={"shadow_book": dg.AssetIn(key=shadow_key)},
        check_specs=[
            session_check_spec(
                CHALLENGER_BEATS_CHAMPION,
                evidence_key,
                partitions_def,
                blocking=True,
                description="A challenger's forward evidence reached its threshold against the "
                "champion and against FLAT, it passed the seed's gates on data it never trained "
                "on, and its judgement record carries that evidence (fails as a warning while "
                "no challenger has it: the champion stays).",
            ),
            session_check_spec(
                CHAMPION_NOT_PAUSED,
                evidence_key,
                partitions_def,
                description="The champion's change detector did not alarm: the live R stream "
                "has not fallen below its validated level (fails when the champion was paused "
                "and FLAT trades).",
            ),
        ],
        tags={"session_learning/model": key.slug},
    )
    def challenger_evidence(
        context: dg.AssetExecutionContext,
        shadow_book: dict,
        registry: ModelRegistryResource,
        journal: TradeJournalResource,
        arena_settings: ArenaSettingsResource,
    ):
        """The session folded into the model's arena: the champion's change detector (an alarm
        pauses it: FLAT trades), each challenger's anytime-valid e-values and confidence
        sequence against the champion and FLAT, retirements, the promotion decision (its
        judgement record carries the evidence) and the newcomers (the candidates trained by
        then). Stored in the registry with a compare-and-swap, so each session is folded once."""
        session, start, end = window(context)
        store = registry.registry()
        settings = arena_settings.session_settings()
        recorded = store.arena_session(key, session)
        folded_now = recorded is None
        _, past = _base(store, key, session)
        if folded_now and (past is not None or "past" in shadow_book):
            yield from _not_folded(session, past or shadow_book["past"], evidence_key)
            return
        if folded_now:
            recorded = _fold(
                context,
                store,
                key,
                shadow_book,
                session,
                start,
                end,
                arena_settings,
                settings,
            )
            if recorded["demoted"] is not None:
                journal.journal().add_alert(
                    "demoted",
                    key.slug,
                    f"session {session}: {recorded['demotion_reason']}",
                )
        yield from _evidence_results(
            context, store, key, session, recorded, folded_now, evidence_key
        )

    @dg.asset(
        key_prefix=prefix,
        name="champion_model",
        partitions_def=partitions_def,
        group_name=group,
        owners=OWNERS,
        hooks=hooks,
        kinds={"catboost"},
        ins={"challenger_evidence": dg.AssetIn(key=evidence_key)},
        pool=f"deploy_{key.slug}",
        tags={"session_learning/model": key.slug},
    )
    def champion_model(
        context: dg.AssetExecutionContext,
        challenger_evidence: dict,
        registry: ModelRegistryResource,
    ) -> dg.Output[dict]:
        """The arena's champion in production: the challenger the arena promoted, deployed
        atomically through its judgement record (forward evidence against the champion and
        FLAT, gates passed on unseen data; the blocking challenger_beats_champion check guards
        it). A paused champion is already out of trading (FLAT). For a session the arena has
        folded past, or when production already is the champion, nothing changes and the
        metadata says why; a winner judged against a production model replaced since fails."""
        store = registry.registry()
        session = context.partition_key
        previous = store.production_version(key)
        document = store.arena(key)
        latest = None if document is None else document["session"]
        current, _ = _document_state(document)
        champion = FLAT if current is None else current.arena.champion
        trading = previous if store.paused(key) is None else None
        promoted = False
        if latest != session:
            summary = (
                f"the arena has folded up to session {latest}: its champion {champion} is "
                f"deployed by champion_model for {latest}; nothing changed for {session}"
            )
        elif champion == FLAT:
            summary = "FLAT is the arena's champion: nothing trades" + (
                f" ({previous} is paused)" if previous and trading is None else ""
            )
        elif champion == trading:
            summary = f"{champion} is the arena's champion and trades already"
        else:
            judgement = store.judgement(key, champion)
            evidence = (judgement or {}).get("evidence") or {}
            promoted = store.promote(
                key,
                champion,
                reason=f"promoted by the arena over {evidence.get('champion')} in session "
                f"{session} (judged {judgement['judged_at'] if judgement else 'never'})",
                session=session,
            )
            summary = (
                f"deployed {champion}, the arena's winner (was {previous or 'none'})"
                if promoted
                else f"{champion} was already deployed for this session: no second deployment"
            )
        return dg.Output(
            {
                "version": champion,
                "previous": previous,
                "promoted": promoted,
                "summary": summary,
            },
            metadata={
                "champion": champion,
                "previous": previous or "none",
                "deployed": promoted,
                "summary": summary,
            },
        )

    return [shadow_book, challenger_evidence, champion_model]


def _fold(
    context: dg.AssetExecutionContext,
    store: ModelRegistry,
    key: ModelKey,
    book: Mapping,
    session: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: ArenaSettingsResource,
    settings: ArenaSessionSettings,
) -> dict:
    """Fold one session into the stored arena state and return what was recorded."""
    base, _ = _base(store, key, session)
    if book["session"] != session or book["computed_from"] != base:
        raise dg.Failure(
            description=f"{key.slug}: shadow_book for {session} was computed from the arena "
            f"after {book['computed_from'] or 'none'}, but the arena is after "
            f"{base or 'none'} now; re-materialize {key.slug}/shadow_book for {session}."
        )
    held, considered = _document_state(store.arena(key))
    state, restart = _synced(store, key, held, end - start, rules, settings)
    if list(state.arena.members()) != book["members"]:
        raise dg.Failure(
            description=f"{key.slug}: shadow_book for {session} marked {book['members']}, "
            f"but the arena's members are {list(state.arena.members())} now (the registry "
            f"changed in between); re-materialize {key.slug}/shadow_book for {session}."
        )
    marked = _marks_from(book, start, end)
    # Candidates saved by the end of the session that the arena has not seen yet enter.
    since = start if held is None else None
    seen = set(considered)
    fresh = [
        v
        for v in store.versions(key)
        if v not in seen
        and _stamp(v) <= end
        and (since is None or _stamp(v) >= since)
        and v not in state.arena.members()
    ]
    newcomers, unusable = [], []
    for version in fresh:
        try:
            newcomers.append(_newcomer(store, key, version, None, end - start, rules))
        except RegistryError as exc:
            # One broken candidate must not stop the arena: it stays out, and says why.
            context.log.warning(f"{key.slug}: {version} cannot enter the arena: {exc}")
            unusable.append({"version": version, "admitted": False, "reason": str(exc)})
    outcome = run_arena_session(state, marked, newcomers, None, settings)
    before = state.arena.as_dict()
    demoted = outcome.demotion.demoted if outcome.demotion is not None else None
    if demoted is not None:
        # Stop losing at once: FLAT trades from now (recorded in the history).
        store.pause(
            key,
            reason=outcome.demotion.reason,
            session=session,
            evidence=outcome.demotion.change,
        )
    promoted = outcome.promoted
    if promoted is not None:
        gates = store.judgement(key, promoted)
        judgement = arena_judgement(
            Judgement.from_record(gates),
            outcome.decision,
            baseline_version=store.production_version(key),
            partition=session,
            judged_at=pd.Timestamp.now(tz="UTC").isoformat(),
        )
        store.record_judgement(key, promoted, judgement.to_record())
    record = {
        "arena_before": before,
        "books_before": {v: b.as_dict() for v, b in state.books.items()},
        "restart": restart,
        "champion_before": outcome.champion_before,
        "champion": outcome.champion,
        "arena_session": outcome.session,
        "bars": marked.bars,
        "trades": {v: int(n) for v, n in book["trades"].items()},
        "change": None if outcome.change is None else outcome.change.as_dict(),
        "demoted": demoted,
        "demotion_reason": None if outcome.demotion is None else outcome.demotion.reason,
        "retirements": [{"version": r.version, "reason": r.reason} for r in outcome.retirements],
        "decision": None if outcome.decision is None else outcome.decision.as_dict(),
        "promoted": promoted,
        "admissions": [a.__dict__ for a in outcome.admissions] + unusable,
        "evidence": {
            v: {"vs_champion": e.vs_champion.as_dict(), "vs_flat": e.vs_flat.as_dict()}
            for v, e in outcome.evidence.items()
        },
        "challengers": [c.__dict__ for c in outcome.state.arena.challengers],
        "paused": outcome.state.arena.paused,
    }
    store.fold_arena_session(
        key,
        session,
        computed_from=base,
        state={
            "arena_state": outcome.state.as_dict(),
            "considered": sorted(seen | set(fresh)),
        },
        record=record,
    )
    context.log.info(
        f"{key.slug} session {session}: champion {outcome.champion_before} -> "
        f"{outcome.champion}" + (f" ({restart})" if restart else "")
    )
    return store.arena_session(key, session)


def _mark(
    state: ArenaState,
    store: ModelRegistry,
    key: ModelKey,
    start: pd.Timestamp,
    end: pd.Timestamp,
    market_data: MarketDataResource,
    learning_settings: LearningSettingsResource,
) -> tuple[SessionMarks, pd.DatetimeIndex]:
    """Every member's shadow book on ``[start, end)``; also the bars (for signal times)."""
    members = state.arena.members()
    first = min(
        [start]
        + [
            state.books[v].resume_from
            for v in members
            if v in state.books and state.books[v].resume_from is not None
        ]
    )
    history = learning_settings.learning_config(key).warmup_bars + 50
    bars = market_data.bars(key, history_start(key, first, history, market_data.calendar(key)), end)
    bars = bars.loc[bars.index < end]
    signals, configs = {}, {}
    for version in members:
        model, card = store.load(key, version)
        signals[version] = score_bars(model, card, bars, first, card_feature_set(card))
        configs[version] = TradingRule.from_dict(card["trading_rule"]).backtest_config()
    marked = mark_session(
        state,
        bars,
        signals,
        atr(bars),
        configs,
        learning_settings.costs(key.symbol),
        start,
        end,
        key,
    )
    return marked, bars.index


def _journal_rows(
    marked: SessionMarks, key: ModelKey, session: str, index: pd.DatetimeIndex
) -> list[dict]:
    """The session's closed virtual trades as ``shadow_trades`` rows: the signal bar is the bar
    before the entry bar (entry at the next open)."""
    rows = []
    for version, trades in marked.trades.items():
        for t in trades.to_dict("records"):
            entry = pd.Timestamp(t["entry_time"])
            at = index.get_indexer([entry])[0]
            signal = index[at - 1] if at > 0 else entry - key.bar
            exit_ = pd.Timestamp(t["exit_time"])
            rows.append(
                {
                    "model": key.slug,
                    "member_version": version,
                    "session": session,
                    "signal_time": signal.isoformat(),
                    "direction": t["direction"],
                    "entry_time": entry.isoformat(),
                    "entry_price": float(t["entry_price"]),
                    "exit_time": exit_.isoformat(),
                    "exit_price": float(t["exit_price"]),
                    "stop_loss": float(t["stop_loss"]),
                    "take_profit": float(t["take_profit"]),
                    "exit_reason": t["exit_reason"],
                    "pnl": float(t["pnl"]),
                    "r_multiple": float(t["r_multiple"]),
                    "exit_time_us": int(exit_.value // 1000),
                }
            )
    return rows


def _index(marked: SessionMarks) -> pd.DatetimeIndex:
    for marks in marked.marks.values():
        return marks.index
    return pd.DatetimeIndex([], tz="UTC")


def _marks_from(book: Mapping, start: pd.Timestamp, end: pd.Timestamp) -> SessionMarks:
    """The shadow book's output back as the domain's ``SessionMarks`` (the trades as far as the
    rules read them: their R, in exit order)."""
    index = pd.DatetimeIndex(pd.to_datetime(book["index"], utc=True))
    marks = {
        v: pd.Series(np.asarray(m, dtype=np.float64), index=index, name="mark_r")
        for v, m in book["marks"].items()
    }
    trades = {
        v: pd.DataFrame({"r_multiple": np.asarray(r, dtype=np.float64)})
        for v, r in book["trade_r"].items()
    }
    return SessionMarks(
        start=start,
        end=end,
        bars=int(book["bars"]),
        marks=marks,
        trades=trades,
        books={v: BookPoint.from_dict(b) for v, b in book["books"].items()},
        spans={v: float(s) for v, s in book["spans"].items()},
    )


def _evidence_table(record: Mapping) -> pd.DataFrame:
    rows = []
    entered = {c["version"]: c for c in record.get("challengers", [])}
    for version, ev in sorted(record.get("evidence", {}).items()):
        champion, flat = ev["vs_champion"], ev["vs_flat"]
        rows.append(
            {
                "challenger": version,
                "kind": entered.get(version, {}).get("kind", "left"),
                "e vs champion": _e(champion["e_value"]),
                "e vs FLAT": _e(flat["e_value"]),
                "threshold": _e(champion["threshold"]),
                "mean R/bar": champion["mean_r"],
                "CS vs champion": f"[{champion['lower_r']:+.4f}, {champion['upper_r']:+.4f}]",
                "CS vs FLAT": f"[{flat['lower_r']:+.4f}, {flat['upper_r']:+.4f}]",
                "bars": champion["bars"],
                "trades": flat["trades"],
                "against": champion["baseline"],
            }
        )
    return pd.DataFrame(rows)


def _e(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _history(store: ModelRegistry, key: ModelKey, session: str, step: pd.Timedelta) -> list[dict]:
    """The records of up to ``PLOTTED_SESSIONS`` sessions ending with ``session``."""
    at = pd.Timestamp(datetime.strptime(session, PARTITION_FORMAT), tz="UTC")
    records = []
    for i in range(PLOTTED_SESSIONS - 1, -1, -1):
        found = store.arena_session(key, _key_of(at - i * step))
        if found is not None:
            records.append(found)
    return records


def _not_folded(session: str, past: str, evidence_key: dg.AssetKey):
    note = f"the arena has folded up to {past}: session {session} is not folded"
    yield dg.Output(
        {"session": session, "folded_now": False, "past": past, "reasons": [note]},
        metadata={"decision": note},
    )
    for name in (CHALLENGER_BEATS_CHAMPION, CHAMPION_NOT_PAUSED):
        yield dg.AssetCheckResult(
            asset_key=evidence_key,
            check_name=name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=note,
        )


def _evidence_results(context, store, key, session, record, folded_now, evidence_key):
    w = context.partition_time_window
    step = pd.Timestamp(w.end) - pd.Timestamp(w.start)
    past = _history(store, key, session, step)
    curve = pd.DataFrame(
        [
            {
                "session": r["session"],
                "version": v,
                "e_value": _e(ev["vs_champion"]["e_value"]),
                "threshold": _e(ev["vs_champion"]["threshold"]),
            }
            for r in past
            for v, ev in r.get("evidence", {}).items()
        ],
        columns=["session", "version", "e_value", "threshold"],
    )
    change = pd.DataFrame(
        [
            {
                "session": r["session"],
                "statistic": r["change"]["statistic"],
                "threshold": r["change"]["threshold"],
            }
            for r in past
            if r.get("change")
        ],
        columns=["session", "statistic", "threshold"],
    )
    decision = record.get("decision") or {}
    reasons = decision.get("reasons") or ["no bars in this session: nothing was decided"]
    promoted, demoted = record.get("promoted"), record.get("demoted")
    table = _evidence_table(record)
    yield dg.Output(
        {
            "session": session,
            "folded_now": folded_now,
            "champion_before": record["champion_before"],
            "champion": record["champion"],
            "promoted": promoted,
            "demoted": demoted,
            "paused": record.get("paused"),
            "reasons": list(reasons),
        },
        metadata={
            "champion": f"{record['champion_before']} -> {record['champion']}",
            "decision": reasons[0],
            "promoted": promoted or "none",
            "demoted": demoted or "none",
            "folded_now": folded_now,
            "restart": record.get("restart") or "-",
            "evidence": markdown_table(table),
            "admissions": markdown_table(pd.DataFrame(record.get("admissions", []))),
            "retirements": markdown_table(pd.DataFrame(record.get("retirements", []))),
            "evidence_curves": dg.MetadataValue.md(
                png_markdown(
                    evidence_curves_png(curve, f"{key.slug}: e-values vs the champion"),
                    "each challenger's e-value against the champion, session by session",
                )
            ),
            "change_statistic": dg.MetadataValue.md(
                png_markdown(
                    change_statistic_png(change, f"{key.slug}: champion change detector"),
                    "the champion's CUSUM statistic and its alarm threshold",
                )
            ),
        },
    )
    if promoted is not None:
        refusal = store.promotion_refusal(key, promoted)
        yield dg.AssetCheckResult(
            asset_key=evidence_key,
            check_name=CHALLENGER_BEATS_CHAMPION,
            passed=refusal is None,
            severity=dg.AssetCheckSeverity.ERROR,
            description=reasons[0] if refusal is None else refusal,
            metadata={"winner": promoted, "champion": record["champion_before"]},
        )
    else:
        best = table.sort_values("e vs champion").iloc[-1] if len(table) else None
        yield dg.AssetCheckResult(
            asset_key=evidence_key,
            check_name=CHALLENGER_BEATS_CHAMPION,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=reasons[0],
            metadata={
                "champion": record["champion"],
                "best_challenger": "none" if best is None else best["challenger"],
                "best_e_value": 0.0 if best is None else float(best["e vs champion"]),
                "threshold": 0.0 if best is None else float(best["threshold"]),
            },
        )
    change = record.get("change") or {}
    yield dg.AssetCheckResult(
        asset_key=evidence_key,
        check_name=CHAMPION_NOT_PAUSED,
        passed=demoted is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=record.get("demotion_reason")
        or (
            f"{record['champion']} trades; CUSUM {change['statistic']:.3g} below "
            f"{change['threshold']:.3g}"
            if change
            else f"{record['champion']}: no change detector running"
        ),
        metadata={k: v for k, v in change.items() if v is not None},
    )
