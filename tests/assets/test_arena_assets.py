"""The arena through Dagster: shadow books in the journal, the state folded once per session in
the registry, a demotion that pauses trading and alerts, a promotion only through the arena's
judgement record, and what a re-run or an out-of-order run does."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd

from session_learning.assets.arena_state import _gate, _stamp
from session_learning.domain.arena import Challenger
from session_learning.domain.arena_evidence import PairEvidence
from session_learning.domain.arena_session import ArenaState
from session_learning.domain.drift import ChangeDetector
from session_learning.domain.evidence import EvidenceState
from tests.assets.conftest import EURUSD, S2, S3, losers_in, window
from tests.builders import frame
from tests.judgements import deploy_losing_variant

BOOK, EVIDENCE, CHAMPION = (
    f"EURUSD_30T/{a}" for a in ("shadow_book", "challenger_evidence", "champion_model")
)
LATER = [f"2025-03-04-{h:02d}:00" for h in (16, 20)] + [
    f"2025-03-05-{h:02d}:00" for h in (0, 4, 8, 12, 16, 20)
]


def materialize(p, assets: list[str], partition: str) -> dg.ExecuteInProcessResult:
    """``assets`` alone for one partition (upstream values read back from the value store)."""
    return dg.materialize(
        p.defs.assets,
        selection=assets,
        partition_key=partition,
        instance=p.instance,
        resources=p.defs.resources,
        raise_on_error=False,
    )


def succeeded_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}


def output(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return result.output_for_node(asset.replace("/", "__"))


def checks(result: dg.ExecuteInProcessResult) -> dict:
    return {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.path == ["EURUSD_30T", "challenger_evidence"]
    }


def arena_files(p) -> dict[str, bytes]:
    folder = p.settings.models_dir / EURUSD.slug
    files = {"arena.json": (folder / "arena.json").read_bytes()}
    files.update({f.name: f.read_bytes() for f in (folder / "arena").glob("*.json")})
    return files


def test_the_arena_follows_the_first_deployment_and_folds_each_session_once(deployed):
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that later candidates pass their gates
    live = p.registry.production_version(EURUSD)
    first = p.run(S2)
    assert first.success
    document = p.registry.arena(EURUSD)
    assert document["session"] == S2
    state = ArenaState.from_dict(document["state"]["arena_state"])
    # Deployed on its validation gates after the S1 fold: the arena restarted with it.
    assert state.arena.champion == live
    assert "restarted" in p.registry.arena_session(EURUSD, S2)["restart"]
    # S2's candidate passed its gates, but after the first deployment it only enters the arena.
    assert output(first, "EURUSD_30T/deployed_model")["promoted"] is False
    assert p.registry.production_version(EURUSD) == live
    candidates = {v for v in p.registry.versions(EURUSD) if _stamp(v) == window(S2)[1]}
    assert candidates

    for session in LATER[:4]:
        assert p.run(session).success
    # Saved after its session's fold (the runs order nothing between the two), S2's candidate
    # entered the arena at the next fold, as a challenger.
    admitted = p.registry.arena_session(EURUSD, LATER[0])["admissions"]
    assert {a["version"] for a in admitted if a["admitted"]} >= candidates
    shadow = p.journal.shadow_trades(EURUSD.slug)
    assert len(shadow) > 0 and set(shadow["member_version"]) >= {live}
    # Shadow trades never reach the live trades a session's analysis reads.
    assert p.journal.count_trades() == 8

    # A re-run of a folded session: same shadow trades, same arena state, nothing refolded.
    before, rows = arena_files(p), len(shadow)
    again = materialize(p, [BOOK, EVIDENCE], LATER[1])
    assert again.success
    assert output(again, EVIDENCE)["folded_now"] is False
    assert arena_files(p) == before
    assert len(p.journal.shadow_trades(EURUSD.slug)) == rows
    assert output(again, BOOK)["marks"] == output(p.run(LATER[1], assets=[BOOK]), BOOK)["marks"]


def test_two_sessions_computed_from_the_same_state_fold_one_after_the_other(deployed):
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that later candidates pass their gates
    assert p.run(S2).success
    # Both shadow books computed from the state after S2 (side by side, or a slow run).
    for session in LATER[:2]:
        assert materialize(p, [BOOK], session).success
    assert materialize(p, [EVIDENCE], LATER[0]).success
    before = arena_files(p)
    stale = materialize(p, [EVIDENCE], LATER[1])
    assert not stale.success
    [failure] = [e for e in stale.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert f"re-materialize EURUSD_30T/shadow_book for {LATER[1]}" in message
    assert arena_files(p) == before  # nothing folded from the stale book
    # Marked again from the state after LATER[0], it folds.
    assert materialize(p, [BOOK, EVIDENCE], LATER[1]).success
    assert p.registry.arena(EURUSD)["session"] == LATER[1]
    assert p.registry.arena_session(EURUSD, LATER[1])["computed_from"] == LATER[0]
    # An older session the arena has folded past is not folded any more (not an error).
    old = materialize(p, [BOOK, EVIDENCE], "2025-03-04-04:00")
    assert old.success and "folded up to" in output(old, EVIDENCE)["reasons"][0]


def _rewrite_state(p, session: str, change) -> None:
    """Replace the stored arena state (as a fold of ``session`` would) by ``change(state)``."""
    document = p.registry.arena(EURUSD)
    state = ArenaState.from_dict(document["state"]["arena_state"])
    p.registry.fold_arena_session(
        EURUSD,
        session,
        computed_from=document["session"],
        state={**document["state"], "arena_state": change(state).as_dict()},
        record={"evidence": {}, "change": None},
    )


def status_lines(p, monkeypatch, capsys) -> str:
    from session_learning.cli import main

    monkeypatch.setenv("SESSION_LEARNING_HOME", str(p.settings.home))
    monkeypatch.setenv("SESSION_LEARNING_MODELS", "EURUSD:30T")
    monkeypatch.setenv("SESSION_LEARNING_MARKET_DATA", "synthetic")
    capsys.readouterr()
    assert main(["status"]) == 0
    return capsys.readouterr().out


def test_a_champion_whose_detector_alarms_is_paused_with_an_alert_and_trades_nothing(
    deployed, monkeypatch, capsys
):
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that later candidates pass their gates
    live = p.registry.production_version(EURUSD)
    assert p.run(S2).success
    # A detector that alarms on the champion's first closed shadow trade.
    hair_trigger = ChangeDetector(reference_r=100.0, threshold=1e-6)
    _rewrite_state(p, "2025-03-04-12:01", lambda s: replace(s, detector=hair_trigger))
    demoted = None
    for session in LATER:
        result = p.run(session)
        if output(result, EVIDENCE)["demoted"]:
            demoted = session
            break
    assert demoted is not None, "the champion closed no shadow trade in two days"
    assert output(result, EVIDENCE)["champion"] == "FLAT"
    found = checks(result)
    assert not found["champion_not_paused"].passed
    assert found["champion_not_paused"].severity == dg.AssetCheckSeverity.ERROR
    paused = p.registry.paused(EURUSD)
    assert paused is not None and paused["session"] == demoted
    entry = p.registry.history(EURUSD)[-1]
    assert (entry["kind"], entry["version"]) == ("pause", live)
    assert entry["evidence"]["alarm"] is True and entry["evidence"]["threshold"] == 1e-6
    alerts = p.journal.alerts()
    assert list(alerts["kind"]).count("demoted") == 1
    assert live in alerts.loc[alerts["kind"] == "demoted", "message"].iloc[0]
    # The paused champion stays in the arena as a challenger; nothing trades.
    state = ArenaState.from_dict(p.registry.arena(EURUSD)["state"]["arena_state"])
    assert state.arena.challenger(live).kind == "previous_champion"
    tick = p.monitor(f"{window(demoted)[1] + pd.Timedelta(hours=1):%Y-%m-%dT%H:%M:%S+00:00}")
    [event] = tick.asset_materializations_for_node("live_signals")
    assert event.metadata["signals_emitted"].value == 0
    assert "paused by the arena" in event.metadata["models"].value
    out = status_lines(p, monkeypatch, capsys)
    assert f"arena: champion FLAT (nothing trades): {live} paused in session {demoted}" in out
    assert f"  {live} (previous_champion, 1 sessions)" in out
    # A re-run of the demotion's session alerts and pauses nothing twice.
    assert materialize(p, [BOOK, EVIDENCE], demoted).success
    assert list(p.journal.alerts()["kind"]).count("demoted") == 1
    # The arena asked for a recency-weighted challenger: the demotion's own run trains one (its
    # training set comes after the fold) on the newest half of the training window, even with
    # no trades to learn from, and it enters at the next fold.
    assert state.arena.requests == ("recency_weighted",)
    following = LATER[LATER.index(demoted) + 1]
    assert p.run(following).success
    [recent] = [v for v in p.registry.versions(EURUSD) if _stamp(v) == window(demoted)[1]]
    card = p.registry.card(EURUSD, recent)
    assert card["arena_kind"] == "recency_weighted"
    first, last = (pd.Timestamp(t) for t in p.registry.card(EURUSD, live)["training_window"])
    newer = [pd.Timestamp(t) for t in card["training_window"]]
    assert newer[1] - newer[0] < (last - first) * 0.75
    state = ArenaState.from_dict(p.registry.arena(EURUSD)["state"]["arena_state"])
    assert state.arena.challenger(recent).kind == "recency_weighted"
    assert state.arena.requests == ()


def test_the_arenas_winner_is_deployed_only_through_its_judgement_record(
    deployed, monkeypatch, capsys
):
    p, _ = deployed
    live = p.registry.production_version(EURUSD)
    for session in (S2, S3):  # S2's candidate enters at S3's fold
        # Whether the candidate beats production on its validation window is the gates'
        # business (a failed blocking check fails the run); the arena folds either way.
        arena_steps = {"EURUSD_30T__shadow_book", "EURUSD_30T__challenger_evidence"}
        assert arena_steps <= succeeded_steps(p.run(session))
    state = ArenaState.from_dict(p.registry.arena(EURUSD)["state"]["arena_state"])
    s2 = {v for v in p.registry.versions(EURUSD) if _stamp(v) == window(S2)[1]}
    [challenger] = [c.version for c in state.arena.challengers if c.version in s2]
    assert p.registry.promotion_refusal(EURUSD, challenger) is not None  # gates alone: no

    def ahead(s: ArenaState) -> ArenaState:
        """The challenger has already bet its way far past the threshold (e^12 against the
        champion and FLAT); its gate verdict is its validation judgement's."""
        settings = p.defs.resources["arena_settings"].session_settings().evidence
        rich = EvidenceState(settings, log_wealth=np.full(settings.bets, 12.0), bars=400)
        pair = PairEvidence(s.arena.champion, s.arena.champion_since, rich, rich)
        gate = _gate(p.registry, EURUSD, challenger)
        return replace(s, evidence={challenger: pair}, gates={**s.gates, challenger: gate})

    _rewrite_state(p, "2025-03-04-16:01", ahead)
    session = LATER[1]
    result = p.run(session)
    assert "EURUSD_30T__champion_model" in succeeded_steps(result)
    decided = output(result, EVIDENCE)
    assert decided["promoted"] == challenger and decided["champion"] == challenger
    assert checks(result)["challenger_beats_champion"].passed
    deployed_now = output(result, CHAMPION)
    assert deployed_now["promoted"] and p.registry.production_version(EURUSD) == challenger
    record = p.registry.judgement(EURUSD, challenger)
    evidence = record["evidence"]
    assert (evidence["kind"], evidence["winner"], evidence["champion"]) == (
        "arena",
        challenger,
        live,
    )
    for side in ("vs_champion", "vs_flat"):
        assert evidence[side]["e_value"] >= evidence["threshold"] and evidence[side]["bars"] > 400
        assert evidence[side]["lower_r"] <= evidence[side]["upper_r"]
    assert record["baseline_version"] == live and record["decision"] == "passed"
    entry = p.registry.history(EURUSD)[-1]
    assert entry["version"] == challenger and "promoted by the arena" in entry["reason"]
    # The old champion stays as a challenger; a re-run deploys nothing twice.
    state = ArenaState.from_dict(p.registry.arena(EURUSD)["state"]["arena_state"])
    assert state.arena.challenger(live) == Challenger(
        live, "previous_champion", state.arena.session - 1, state.arena.challenger(live).capital
    )
    out = status_lines(p, monkeypatch, capsys)
    assert f"arena: champion {challenger}; last session folded {session}" in out
    assert f"  {live} (previous_champion, 1 sessions): no evidence yet" in out
    again = materialize(p, [CHAMPION], session)
    assert again.success and output(again, CHAMPION)["promoted"] is False
    assert len(p.registry.history(EURUSD)) == 2


def test_shadow_trades_are_not_in_the_sessions_analysis(deployed):
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that later candidates pass their gates
    p.journal.add_trades(frame(losers_in(16)))
    assert p.run(S2).success and p.run(S3).success
    live = p.journal.trades_exited_between(*window(S3))
    result = p.run(S3, assets=["session_trades", "session_breakdown"])
    trades = result.output_for_node("session_trades")
    assert len(trades) == len(live) == 4
    table = result.output_for_node("session_breakdown")
    assert int(table.loc[table["direction"] == "all", "trades"].sum()) == 4


def test_a_broken_candidate_stays_out_of_the_arena_and_says_why(deployed):
    p, _ = deployed
    deploy_losing_variant(p.registry, EURUSD)  # so that later candidates pass their gates
    assert p.run(S2).success
    [candidate] = [v for v in p.registry.versions(EURUSD) if _stamp(v) == window(S2)[1]]
    card = p.settings.models_dir / EURUSD.slug / "versions" / candidate / "card.json"
    card.write_text(card.read_text().replace('"session"', '"session_edited"', 1))
    result = p.run(S3, assets=[BOOK, EVIDENCE])
    assert result.success  # the arena goes on
    [refused] = [
        a for a in p.registry.arena_session(EURUSD, S3)["admissions"] if a["version"] == candidate
    ]
    assert (
        refused["admitted"] is False and "changed after the version was saved" in refused["reason"]
    )
    state = ArenaState.from_dict(p.registry.arena(EURUSD)["state"]["arena_state"])
    assert state.arena.challenger(candidate) is None
