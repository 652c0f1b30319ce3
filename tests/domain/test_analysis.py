"""Session analysis with hand-computed expectations, including the seed guide's examples."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from session_learning.domain.analysis import (
    LearningRules,
    ProblemReport,
    analyze_session,
    breakdown,
    build_plans,
    detect_problems,
    session_summary,
    trigger_status,
)
from session_learning.domain.keys import ModelKey
from session_learning.domain.trades import valid_trades, validate_trades
from tests.builders import frame, hour_pattern, many, trade

EURUSD, GBPUSD, XAUUSD = (
    ModelKey("EURUSD", "30T"),
    ModelKey("GBPUSD", "15T"),
    ModelKey("XAUUSD", "5T"),
)
MODELS = (EURUSD, GBPUSD, XAUUSD)


def trades(rows):
    out = validate_trades(frame(rows), known_models=MODELS)
    good = valid_trades(out)
    assert len(good) == len(rows)
    return good


def test_seed_overall_performance_12_trades_8_winners():
    # Seed: "Total Trades: 12, Winners: 8 (66.7%), Losers: 4 (33.3%)".
    rows = many(5, 1, symbol="EURUSD", timeframe="30T") + many(
        2, 2, symbol="GBPUSD", timeframe="15T"
    )
    rows += many(1, 1, symbol="XAUUSD", timeframe="5T", entry_price=2000.0, risk=2.0)
    s = session_summary(trades(rows))
    assert (s["trades"], s["winners"], s["losers"]) == (12, 8, 4)
    assert s["win_rate"] == pytest.approx(8 / 12)


def test_breakdown_per_model_and_direction_hand_computed():
    rows = many(2, 1, direction="long") + many(0, 1, direction="short")
    table = breakdown(trades(rows))
    model = table.loc[(table["symbol"] == "EURUSD") & (table["direction"] == "all")].iloc[0]
    assert (model["trades"], model["winners"], model["losers"]) == (4, 2, 2)
    assert model["win_rate"] == 0.5
    # Winners are +2R (0.0020), losers -1R (0.0010): PF = 0.0040 / 0.0020 = 2.
    assert model["pnl"] == pytest.approx(0.0020)
    assert model["profit_factor"] == pytest.approx(2.0)
    assert model["status"] == "warning"  # 50% < 55%
    longs = table.loc[(table["symbol"] == "EURUSD") & (table["direction"] == "long")].iloc[0]
    assert (longs["trades"], longs["winners"], longs["status"]) == (3, 2, "ok")
    shorts = table.loc[(table["symbol"] == "ALL") & (table["direction"] == "short")].iloc[0]
    assert (shorts["trades"], shorts["losers"], shorts["profit_factor"]) == (1, 1, 0.0)


def test_profit_factor_without_losers_is_infinite():
    table = breakdown(trades(many(2, 0)))
    assert math.isinf(table.iloc[0]["profit_factor"])


def test_seed_directional_bias_long_3_of_8_vs_short_7_of_9():
    rows = many(3, 5, direction="long") + many(7, 2, direction="short")
    problems = detect_problems(trades(rows))
    bias = [p for p in problems if p.kind == "directional_bias" and p.model is None]
    assert len(bias) == 1 and bias[0].direction == "long"
    assert bias[0].evidence["long_win_rate"] == pytest.approx(0.375)
    assert bias[0].evidence["short_win_rate"] == pytest.approx(7 / 9)
    assert "long 37.5% vs short 77.8%" in bias[0].message


def test_no_bias_when_gap_is_small_or_a_direction_is_thin():
    assert not [
        p
        for p in detect_problems(
            trades(many(3, 3, direction="long") + many(4, 2, direction="short"))
        )
        if p.kind == "directional_bias"
    ]
    assert not [
        p
        for p in detect_problems(
            trades(many(0, 2, direction="long") + many(9, 0, direction="short"))
        )
        if p.kind == "directional_bias"
    ]


def test_seed_five_high_confidence_stop_losers_mean_overconfidence():
    rows = many(6, 0, confidence=0.7) + many(0, 5, confidence=0.65) + many(0, 2, confidence=0.4)
    over = [p for p in detect_problems(trades(rows)) if p.kind == "overconfident_losers"]
    assert len(over) == 1 and over[0].evidence["count"] == 5


def test_high_confidence_timeout_loser_is_not_overconfident_stop():
    rows = many(3, 0) + [trade(win=False, exit_reason="timeout", confidence=0.9) for _ in range(4)]
    assert not [p for p in detect_problems(trades(rows)) if p.kind == "overconfident_losers"]


def test_seed_struggling_model_2_of_8_others_untouched():
    rows = many(2, 6, symbol="XAUUSD", timeframe="5T", entry_price=2000.0, risk=2.0)
    rows += many(7, 1, symbol="EURUSD", timeframe="30T") + many(
        4, 0, symbol="GBPUSD", timeframe="15T"
    )
    t = trades(rows)
    problems = detect_problems(t)
    struggling = [p for p in problems if p.kind == "struggling_model"]
    assert [p.model for p in struggling] == ["XAUUSD_5T"]
    assert struggling[0].evidence["win_rate"] == 0.25
    plans = build_plans(t, MODELS, problems, trigger_status(t, LearningRules()))
    assert plans["XAUUSD_5T"].retrain and plans["XAUUSD_5T"].refit_barriers
    # Other models get no struggling treatment; the one without losers is not retrained at all.
    assert not plans["EURUSD_30T"].refit_barriers
    assert not plans["GBPUSD_15T"].retrain
    assert plans["GBPUSD_15T"].reasons == ("untouched: no losers this session",)


@pytest.mark.parametrize(
    ("preset", "n_win", "n_loss", "triggered", "message"),
    [
        ("balanced", 1, 1, False, "need 1 more trade"),
        ("balanced", 3, 0, False, "need 1 more loser"),
        ("balanced", 2, 1, True, "learning triggered"),
        ("aggressive", 0, 1, True, "learning triggered"),
        ("conservative", 3, 1, False, "need 1 more trade and 1 more loser"),
        ("conservative", 3, 2, True, "learning triggered"),
    ],
)
def test_trigger_presets_need_trades_and_losers(preset, n_win, n_loss, triggered, message):
    status = trigger_status(trades(many(n_win, n_loss)), LearningRules.preset(preset))
    assert status.triggered is triggered
    assert message in status.message


def test_untriggered_session_retrains_nothing_and_says_why():
    t = trades(many(1, 1))
    plans = build_plans(t, MODELS, detect_problems(t), trigger_status(t, LearningRules()))
    assert not any(p.retrain for p in plans.values())
    assert "need 1 more trade" in plans["EURUSD_30T"].reasons[0]


def test_plan_boosts_overconfident_and_weak_direction_losers():
    rules = LearningRules()
    over = [trade(win=False, confidence=0.8, direction="short") for _ in range(3)]
    weak = [trade(win=False, confidence=0.3, direction="long") for _ in range(5)]
    rows = over + weak + many(3, 0, direction="long") + many(7, 0, direction="short")
    t = trades(rows)
    plan = build_plans(t, MODELS, detect_problems(t, rules), trigger_status(t, rules), rules)[
        "EURUSD_30T"
    ]
    assert plan.retrain and plan.weak_direction == "long"
    for row in over:
        assert plan.trade_boosts[row["trade_id"]] == 3.0
    for row in weak:
        assert plan.trade_boosts[row["trade_id"]] == 5.0
    assert plan.edge_threshold == 0.12 and plan.l2_leaf_reg == 10.0 and plan.depth == 5
    assert plan.class_weights == {"short": 1.0, "flat": 1.5, "long": 0.8}


def test_plain_loser_gets_the_base_boost_only():
    t = trades(many(3, 1))
    plan = build_plans(t, MODELS, detect_problems(t), trigger_status(t, LearningRules()))[
        "EURUSD_30T"
    ]
    loser = t.loc[t["pnl"] < 0, "trade_id"].iloc[0]
    assert plan.trade_boosts == {loser: 2.0}
    assert plan.edge_threshold == 0.08 and plan.weak_direction is None


def test_report_round_trips_through_dict():
    t = trades(many(3, 5, direction="long") + many(7, 2, direction="short"))
    report = analyze_session(
        t, MODELS, pd.Timestamp("2025-01-06T04:00Z"), pd.Timestamp("2025-01-06T08:00Z")
    )
    assert ProblemReport.from_dict(report.to_dict()) == report


def test_rules_preset_unknown_is_clear():
    with pytest.raises(ValueError, match="unknown preset 'wild'"):
        LearningRules.preset("wild")


def test_flagged_loser_patterns_ride_along_in_the_plan():
    pattern = hour_pattern("EURUSD_30T", 14)
    t = trades(many(3, 1))
    plans = build_plans(
        t,
        MODELS,
        detect_problems(t),
        trigger_status(t, LearningRules()),
        patterns={"EURUSD_30T": [pattern]},
    )
    assert plans["EURUSD_30T"].loser_patterns == (pattern.to_dict(),)
    assert any("loser pattern" in r for r in plans["EURUSD_30T"].reasons)
    assert plans["GBPUSD_15T"].loser_patterns == ()


@pytest.mark.parametrize("threshold", [2, 3, 4])
def test_overconfidence_is_one_rule_for_the_problem_and_the_plan(threshold):
    # EURUSD: 3 overconfident stop-loss losers; GBPUSD: 1; XAUUSD: 2. One threshold decides both
    # which models have the problem and which plans get the treatment.
    rules = LearningRules(min_overconfident_losers=threshold)
    rows = [trade(win=False, confidence=0.8) for _ in range(3)] + many(3, 0)
    rows += [trade(win=False, confidence=0.9, symbol="GBPUSD", timeframe="15T")]
    rows += [
        trade(
            win=False,
            confidence=0.7,
            symbol="XAUUSD",
            timeframe="5T",
            entry_price=2000.0,
            risk=2.0,
        )
        for _ in range(2)
    ]
    t = trades(rows)
    problems = detect_problems(t, rules)
    plans = build_plans(t, MODELS, problems, trigger_status(t, rules), rules)
    counts = {"EURUSD_30T": 3, "GBPUSD_15T": 1, "XAUUSD_5T": 2}
    flagged = {p.model for p in problems if p.kind == "overconfident_losers"}
    treated = {slug for slug, plan in plans.items() if plan.edge_threshold == 0.12}
    expected = {slug for slug, n in counts.items() if n >= threshold}
    assert flagged == treated == expected
    for slug, plan in plans.items():
        assert plan.retrain  # every model lost: each is retrained, treated or not
        if slug in expected:
            assert plan.l2_leaf_reg == 10.0 and plan.depth == 5
            assert set(plan.trade_boosts.values()) == {3.0}
        else:
            assert plan.l2_leaf_reg == 3.0 and plan.depth == 6
            assert set(plan.trade_boosts.values()) == {2.0}
            assert not any("overconfident" in r for r in plan.reasons)
