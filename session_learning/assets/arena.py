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

The arena state the registry keeps and the fold of a session are in ``assets/arena_state.py``;
this module holds the assets, their bodies and the marking of the shadow book.
"""

from collections.abc import Callable

import dagster as dg
import pandas as pd

from session_learning.assets import model_asset
from session_learning.assets.arena_state import (
    book_value,
    document_state,
    fold_base,
    fold_session,
    plotted_records,
    synced_state,
)
from session_learning.assets.metadata import (
    best_challenger_metadata,
    deployment_metadata,
    evidence_metadata,
    evidence_table,
    session_check_spec,
    shadow_book_metadata,
)
from session_learning.domain.arena import FLAT, Arena
from session_learning.domain.arena_session import (
    ArenaState,
    BookPoint,
    SessionMarks,
    mark_session,
)
from session_learning.domain.features import atr, card_feature_set
from session_learning.domain.keys import ModelKey
from session_learning.domain.sessions import history_start
from session_learning.domain.signals import score_bars
from session_learning.domain.training import TradingRule
from session_learning.hooks import outcome_hooks
from session_learning.resources.arena import ArenaSettingsResource
from session_learning.resources.journal import TradeJournalResource
from session_learning.resources.learning_settings import LearningSettingsResource
from session_learning.resources.market_data import MarketDataResource
from session_learning.resources.registry import ModelRegistry, ModelRegistryResource

CHALLENGER_BEATS_CHAMPION = "challenger_beats_champion"
CHAMPION_NOT_PAUSED = "champion_not_paused"


def _session(context: dg.AssetExecutionContext, window: dg.TimeWindow):
    """``(session key, start, end)`` of the partition being materialized."""
    return context.partition_key, pd.Timestamp(window.start), pd.Timestamp(window.end)


# --- the bodies --------------------------------------------------------------------------


def shadow_book_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    window: dg.TimeWindow,
    market_data: MarketDataResource,
    registry: ModelRegistryResource,
    journal: TradeJournalResource,
    learning_settings: LearningSettingsResource,
    arena_settings: ArenaSettingsResource,
) -> dg.Output[dict]:
    """Mark every arena member on the session's bars; its closed trades go to the journal."""
    session, start, end = _session(context, window)
    store = registry.registry()
    settings = arena_settings.session_settings()
    recorded = store.arena_session(key, session)
    base, past = fold_base(store, key, session)
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
        held, _ = document_state(store.arena(key))
        state, _ = synced_state(store, key, held, end - start, arena_settings, settings)
    marked, signal_bars = _mark(state, store, key, start, end, market_data, learning_settings)
    rows = _journal_rows(marked, key, session, signal_bars)
    written, present = journal.journal().add_shadow_trades(rows)
    return dg.Output(
        book_value(session, base, state, marked),
        metadata=shadow_book_metadata(state, marked, written, present),
    )


def challenger_evidence_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    window: dg.TimeWindow,
    shadow_book: dict,
    registry: ModelRegistryResource,
    journal: TradeJournalResource,
    arena_settings: ArenaSettingsResource,
):
    """Fold the session into the arena (once); its output and the two checks' results."""
    session, start, end = _session(context, window)
    evidence_key = dg.AssetKey([key.slug, "challenger_evidence"])
    store = registry.registry()
    settings = arena_settings.session_settings()
    recorded = store.arena_session(key, session)
    folded_now = recorded is None
    _, past = fold_base(store, key, session)
    if folded_now and (past is not None or "past" in shadow_book):
        yield from _not_folded(session, past or shadow_book["past"], evidence_key)
        return
    if folded_now:
        recorded = fold_session(
            context, store, key, shadow_book, session, start, end, arena_settings, settings
        )
        if recorded["demoted"] is not None:
            journal.journal().add_alert(
                "demoted",
                key.slug,
                f"session {session}: {recorded['demotion_reason']}",
            )
    yield from _evidence_results(store, key, end - start, session, recorded, folded_now)


def champion_model_body(
    context: dg.AssetExecutionContext,
    key: ModelKey,
    challenger_evidence: dict,
    registry: ModelRegistryResource,
) -> dg.Output[dict]:
    """Deploy the arena's champion when the session is the arena's latest and it does not
    trade yet; else say why nothing changed."""
    store = registry.registry()
    session = context.partition_key
    previous = store.production_version(key)
    document = store.arena(key)
    latest = None if document is None else document["session"]
    current, _ = document_state(document)
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
        metadata=deployment_metadata("champion", champion, previous, promoted, summary),
    )


# --- the assets of one model's arena ------------------------------------------------------


def build_arena_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition, key: ModelKey
) -> list[dg.AssetsDefinition]:
    """The shadow book and the evidence of one model's arena."""
    # Each step records its decision or error (for `status`) through the outcome hooks.
    asset = model_asset(partitions_def, key, outcome_hooks(partitions_def))
    return [
        _shadow_book_asset(asset, partitions_def, key),
        _challenger_evidence_asset(asset, partitions_def, key),
        _champion_model_asset(asset, partitions_def, key),
    ]


def _shadow_book_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    @asset(
        key=dg.AssetKey([key.slug, "shadow_book"]),
        kinds={"pandas", "sql"},
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
        return shadow_book_body(
            context,
            key,
            context.partition_time_window,
            market_data,
            registry,
            journal,
            learning_settings,
            arena_settings,
        )

    return shadow_book


def _challenger_evidence_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    evidence_key = dg.AssetKey([key.slug, "challenger_evidence"])

    @asset(
        key=evidence_key,
        kinds={"numpy"},
        ins={"shadow_book": dg.AssetIn(key=dg.AssetKey([key.slug, "shadow_book"]))},
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
        yield from challenger_evidence_body(
            context,
            key,
            context.partition_time_window,
            shadow_book,
            registry,
            journal,
            arena_settings,
        )

    return challenger_evidence


def _champion_model_asset(
    asset: Callable, partitions_def: dg.PartitionsDefinition, key: ModelKey
) -> dg.AssetsDefinition:
    @asset(
        key_prefix=[key.slug],
        name="champion_model",
        kinds={"catboost"},
        ins={"challenger_evidence": dg.AssetIn(key=dg.AssetKey([key.slug, "challenger_evidence"]))},
        pool=f"deploy_{key.slug}",
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
        return champion_model_body(context, key, challenger_evidence, registry)

    return champion_model


# --- the shadow book's marks --------------------------------------------------------------


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


# --- the evidence's results -----------------------------------------------------------------


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


def _evidence_results(
    store: ModelRegistry,
    key: ModelKey,
    step: pd.Timedelta,
    session: str,
    record: dict,
    folded_now: bool,
):
    """The evidence's output with its metadata, then the results of its two checks."""
    evidence_key = dg.AssetKey([key.slug, "challenger_evidence"])
    decision = record.get("decision") or {}
    reasons = decision.get("reasons") or ["no bars in this session: nothing was decided"]
    promoted, demoted = record.get("promoted"), record.get("demoted")
    table = evidence_table(record)
    past = plotted_records(store, key, session, step)
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
        metadata=evidence_metadata(key, record, table, past, reasons[0], folded_now),
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
        yield dg.AssetCheckResult(
            asset_key=evidence_key,
            check_name=CHALLENGER_BEATS_CHAMPION,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=reasons[0],
            metadata=best_challenger_metadata(record, table),
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
            else f"{record['champion']}: no bars in this session, its change detector saw nothing"
            if record.get("bars") == 0 and record["champion"] != FLAT
            else f"{record['champion']}: no change detector running"
        ),
        metadata={k: v for k, v in change.items() if v is not None},
    )
