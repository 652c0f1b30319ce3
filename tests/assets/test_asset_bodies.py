"""Asset bodies called on their own: a built context, the real SQLite journal, the registry in
a temporary folder and synthetic bars, without the asset graph around them."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from session_learning.assets.arena import (
    challenger_evidence_body,
    champion_model_body,
    shadow_book_body,
)
from session_learning.assets.models import (
    TrainingSetConfig,
    candidate_model_body,
    deployed_model_body,
    weighted_training_set_body,
)
from session_learning.assets.session import (
    ProblemReportConfig,
    problem_report_body,
    session_trades_body,
)
from session_learning.domain.gates import GATES
from tests.assets.conftest import EURUSD, PERMISSIVE, S1, S2, losers_in, window
from tests.builders import frame, many, trade

SESSION = "2025-01-06-04:00"


def _window(partition_key: str) -> dg.TimeWindow:
    start, end = window(partition_key)
    return dg.TimeWindow(start.to_pydatetime(), end.to_pydatetime())


def _values(metadata: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_session_trades_body_quarantines_and_warns_on_a_real_journal(pipeline):
    p = pipeline()
    good = many(2, 3)
    p.journal.add_trades(frame([*good, trade(trade_id="alien", symbol="XAGUSD")]))

    output, check = session_trades_body(_window(SESSION), p.defs.resources["journal"], (EURUSD,))

    trades = output.value
    assert len(trades) == 6 and (trades["quarantine_reason"] != "").sum() == 1
    meta = _values(output.metadata)
    assert (meta["valid_trades"], meta["losers"]) == (5, 3)
    assert check.check_name == "session_trades_are_clean" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["quarantined"].value == 1


def test_problem_report_body_plans_a_retrain_from_the_session_losers(pipeline):
    p = pipeline()
    journal = p.defs.resources["journal"]
    p.journal.add_trades(frame(many(1, 4, confidence=0.7)))
    [trades, _] = session_trades_body(_window(SESSION), journal, (EURUSD,))

    report = problem_report_body(
        _window(SESSION),
        ProblemReportConfig(preset="aggressive"),
        trades.value,
        journal,
        (EURUSD,),
    )

    assert report.value["summary"]["trades"] == 5
    assert report.value["plans"][EURUSD.slug]["retrain"] is True
    assert _values(report.metadata)["models_to_retrain"] == 1
    assert pd.Timestamp(report.value["session_end"]) == window(SESSION)[1]


def test_learning_bodies_train_judge_and_deploy_a_first_model(pipeline):
    p = pipeline(**PERMISSIVE)
    p.journal.add_trades(frame(losers_in(8)))
    journal, registry = p.defs.resources["journal"], p.defs.resources["registry"]
    session = _window(S1)
    [trades, _] = session_trades_body(session, journal, (EURUSD,))
    report = problem_report_body(session, ProblemReportConfig(), trades.value, journal, (EURUSD,))
    context = dg.build_asset_context(partition_key=S1)

    [history, training_set] = weighted_training_set_body(
        context,
        EURUSD,
        session,
        TrainingSetConfig(),
        report.value,
        trades.value,
        p.defs.resources["market_data"],
        registry,
        p.learning,
        journal,
    )
    assert history.check_name == "history_supports_learning" and history.passed
    info = training_set.value["info"]
    assert _values(training_set.metadata)["training_rows"] == info["rows"]["train"] > 0

    [candidate, *gates] = candidate_model_body(
        context, EURUSD, session, training_set.value, registry, p.learning
    )
    version = candidate.value["version"]
    assert [g.check_name for g in gates] == [g.name for g in GATES]
    assert candidate.value["passed"] == all(g.passed for g in gates) is True
    assert p.registry.judgement(EURUSD, version)["partition"] == S1
    assert p.registry.production_version(EURUSD) is None

    deployed = deployed_model_body(context, EURUSD, candidate.value, registry)
    assert deployed.value["promoted"] and p.registry.production_version(EURUSD) == version
    again = deployed_model_body(context, EURUSD, candidate.value, registry)
    assert not again.value["promoted"] and _values(again.metadata)["previous"] == version


def test_arena_bodies_mark_fold_once_and_keep_the_trading_champion(deployed):
    p, _ = deployed
    live = p.registry.production_version(EURUSD)
    r = p.defs.resources
    context = dg.build_asset_context(partition_key=S2)
    session = _window(S2)

    book = shadow_book_body(
        context,
        EURUSD,
        session,
        r["market_data"],
        r["registry"],
        r["journal"],
        r["learning_settings"],
        r["arena_settings"],
    )
    assert book.value["champion"] == live and live in book.value["members"]
    assert len(book.value["index"]) == book.value["bars"] > 0
    written = _values(book.metadata)["shadow_trades_written"]
    assert written == sum(book.value["trades"].values())

    def evidence() -> list:
        return list(
            challenger_evidence_body(
                context,
                EURUSD,
                session,
                book.value,
                r["registry"],
                r["journal"],
                r["arena_settings"],
            )
        )

    [folded, beats, not_paused] = evidence()
    assert folded.value["folded_now"] and folded.value["champion"] == live
    assert p.registry.arena(EURUSD)["session"] == S2
    assert (beats.check_name, beats.passed) == ("challenger_beats_champion", False)
    assert (not_paused.check_name, not_paused.passed) == ("champion_not_paused", True)
    [again, *_] = evidence()
    assert again.value["folded_now"] is False and again.value["champion"] == live

    champion = champion_model_body(context, EURUSD, folded.value, r["registry"])
    assert champion.value["promoted"] is False and champion.value["version"] == live
    assert champion.value["summary"] == f"{live} is the arena's champion and trades already"
