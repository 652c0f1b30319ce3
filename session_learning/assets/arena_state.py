"""The arena state as the registry keeps it, and the fold of one session into it.

The registry stores each model's arena document (the state after the last folded session) and
one record per folded session. ``synced_state`` reads the state to fold a session into,
following the registry where it changed outside the arena (a first deployment, a rollback,
the end of a pause); ``fold_session`` folds the shadow book's marks into it with the
registry's compare-and-swap, so a session is folded once whatever runs side by side.
"""

from collections.abc import Mapping
from datetime import datetime

import dagster as dg
import numpy as np
import pandas as pd

from session_learning.domain.arena import FLAT, GateVerdict
from session_learning.domain.arena_judgement import arena_judgement, gate_verdict
from session_learning.domain.arena_session import (
    ArenaSessionSettings,
    ArenaState,
    BookPoint,
    Newcomer,
    SessionMarks,
    admit_newcomers,
    run_arena_session,
)
from session_learning.domain.drift import ChangeDetector, champion_detector
from session_learning.domain.gates import Judgement
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import PARTITION_FORMAT
from session_learning.resources.arena import ArenaSettingsResource
from session_learning.resources.registry import ModelRegistry, RegistryError

# Sessions of evidence shown in the curves.
PLOTTED_SESSIONS = 60


def _key_of(moment: pd.Timestamp) -> str:
    return pd.Timestamp(moment).strftime(PARTITION_FORMAT)


def _stamp(version: str) -> pd.Timestamp:
    """The session end a version id starts with (``save_candidate``)."""
    return pd.Timestamp(datetime.strptime(version.split("-")[0], "%Y%m%dT%H%M"), tz="UTC")


# --- reading members from the registry ---------------------------------------------------


def _detector(card: Mapping, key: ModelKey, session: pd.Timedelta, rules) -> ChangeDetector | None:
    """A member's change detector, designed from its validation trades (the card's
    ``validation_r``); with fewer than 30, from its brackets (``drift.bracket_detector``); None
    only for a card written before validation trades were kept."""
    if "validation_r" not in card:
        return None
    rule = card["trading_rule"]
    return champion_detector(
        card.get("validation_r") or [],
        sessions=(card.get("validation_rows") or 0) * key.bar / session,
        reward_r=rule["tp_atr"] / rule["sl_atr"],
        false_alarms_per_100_sessions=rules.false_alarms_per_100_sessions,
        shift_r=rules.shift_r,
        block_trades=rules.detector_block_trades,
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


def synced_state(
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


def document_state(document: Mapping | None) -> tuple[ArenaState | None, list[str]]:
    if document is None:
        return None, []
    held = document["state"]
    return ArenaState.from_dict(held["arena_state"]), list(held.get("considered", []))


def fold_base(store: ModelRegistry, key: ModelKey, session: str) -> tuple[str | None, str | None]:
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


# --- folding a session ------------------------------------------------------------------


def _newcomers(
    context: dg.AssetExecutionContext,
    store: ModelRegistry,
    key: ModelKey,
    state: ArenaState,
    first_fold: bool,
    considered: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    rules: ArenaSettingsResource,
) -> tuple[list[str], list[Newcomer], list[dict]]:
    """``(fresh, newcomers, unusable)``: the candidates saved by the end of the session that the
    arena has not seen yet (on its first fold, only those of this session), the ones that can
    enter, and why the others cannot."""
    since = start if first_fold else None
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
    return fresh, newcomers, unusable


def _act_on(store: ModelRegistry, key: ModelKey, session: str, outcome) -> None:
    """A demotion pauses the champion at once; a promotion records the winner's judgement with
    its forward evidence (``champion_model`` deploys it)."""
    if outcome.demotion is not None and outcome.demotion.demoted is not None:
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


def _session_record(
    state: ArenaState,
    restart: str | None,
    outcome,
    marked: SessionMarks,
    book: Mapping,
    unusable: list[dict],
) -> dict:
    """What the registry records of a folded session (shown again by a re-run)."""
    return {
        "arena_before": state.arena.as_dict(),
        "books_before": {v: b.as_dict() for v, b in state.books.items()},
        "restart": restart,
        "champion_before": outcome.champion_before,
        "champion": outcome.champion,
        "arena_session": outcome.session,
        "bars": marked.bars,
        "trades": {v: int(n) for v, n in book["trades"].items()},
        "change": None if outcome.change is None else outcome.change.as_dict(),
        "demoted": outcome.demotion.demoted if outcome.demotion is not None else None,
        "demotion_reason": None if outcome.demotion is None else outcome.demotion.reason,
        "retirements": [{"version": r.version, "reason": r.reason} for r in outcome.retirements],
        "decision": None if outcome.decision is None else outcome.decision.as_dict(),
        "promoted": outcome.promoted,
        "admissions": [a.__dict__ for a in outcome.admissions] + unusable,
        "evidence": {
            v: {"vs_champion": e.vs_champion.as_dict(), "vs_flat": e.vs_flat.as_dict()}
            for v, e in outcome.evidence.items()
        },
        "challengers": [c.__dict__ for c in outcome.state.arena.challengers],
        "paused": outcome.state.arena.paused,
    }


def fold_session(
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
    base, _ = fold_base(store, key, session)
    if book["session"] != session or book["computed_from"] != base:
        raise dg.Failure(
            description=f"{key.slug}: shadow_book for {session} was computed from the arena "
            f"after {book['computed_from'] or 'none'}, but the arena is after "
            f"{base or 'none'} now; re-materialize {key.slug}/shadow_book for {session}."
        )
    held, considered = document_state(store.arena(key))
    state, restart = synced_state(store, key, held, end - start, rules, settings)
    if list(state.arena.members()) != book["members"]:
        raise dg.Failure(
            description=f"{key.slug}: shadow_book for {session} marked {book['members']}, "
            f"but the arena's members are {list(state.arena.members())} now (the registry "
            f"changed in between); re-materialize {key.slug}/shadow_book for {session}."
        )
    marked = _marks_from(book, start, end)
    # Candidates saved by the end of the session that the arena has not seen yet enter.
    fresh, newcomers, unusable = _newcomers(
        context, store, key, state, held is None, considered, start, end, rules
    )
    outcome = run_arena_session(state, marked, newcomers, None, settings)
    _act_on(store, key, session, outcome)
    store.fold_arena_session(
        key,
        session,
        computed_from=base,
        state={
            "arena_state": outcome.state.as_dict(),
            "considered": sorted(set(considered) | set(fresh)),
        },
        record=_session_record(state, restart, outcome, marked, book, unusable),
    )
    context.log.info(
        f"{key.slug} session {session}: champion {outcome.champion_before} -> "
        f"{outcome.champion}" + (f" ({restart})" if restart else "")
    )
    return store.arena_session(key, session)


def _index(marked: SessionMarks) -> pd.DatetimeIndex:
    for marks in marked.marks.values():
        return marks.index
    return pd.DatetimeIndex([], tz="UTC")


def book_value(session: str, base: str | None, state: ArenaState, marked: SessionMarks) -> dict:
    """The shadow book's output: every member's marks, trades' R and book, with the arena
    state it was computed from (``_marks_from`` reads it back)."""
    return {
        "session": session,
        "computed_from": base,
        "champion": state.arena.champion,
        "members": list(state.arena.members()),
        "bars": marked.bars,
        "index": [t.isoformat() for t in _index(marked)],
        "marks": {v: [float(x) for x in m.to_numpy()] for v, m in marked.marks.items()},
        "trades": {v: int(len(t)) for v, t in marked.trades.items()},
        "trade_r": {
            v: [float(x) for x in t["r_multiple"].to_numpy()] for v, t in marked.trades.items()
        },
        "books": {v: b.as_dict() for v, b in marked.books.items()},
        "spans": {v: float(s) for v, s in marked.spans.items()},
    }


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


def plotted_records(
    store: ModelRegistry, key: ModelKey, session: str, step: pd.Timedelta
) -> list[dict]:
    """The records of up to ``PLOTTED_SESSIONS`` sessions ending with ``session``."""
    at = pd.Timestamp(datetime.strptime(session, PARTITION_FORMAT), tz="UTC")
    records = []
    for i in range(PLOTTED_SESSIONS - 1, -1, -1):
        found = store.arena_session(key, _key_of(at - i * step))
        if found is not None:
            records.append(found)
    return records
