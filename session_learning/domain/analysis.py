"""Session analysis: breakdown, problem detection, learning trigger and the retraining plan.

Input is a frame of *valid* trades (see ``trades.valid_trades``). Every threshold is a field of
``LearningRules``; the presets only change the trigger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import pandas as pd

from session_learning.domain.keys import ModelKey
from session_learning.domain.patterns import LoserPattern

TRIGGER_PRESETS: dict[str, tuple[int, int]] = {
    "aggressive": (1, 1),
    "balanced": (3, 1),
    "conservative": (5, 2),
}


@dataclass(frozen=True)
class LearningRules:
    """Every threshold of the session analysis; the defaults are the product's seed rules."""

    # Trigger: learning runs when the session has at least min_trades AND min_losers.
    min_trades: int = 3
    min_losers: int = 1
    # Breakdown status: failing below struggling_win_rate (with enough trades), warning below
    # warning_win_rate or with a negative P&L.
    struggling_win_rate: float = 0.40
    struggling_min_trades: int = 2
    warning_win_rate: float = 0.55
    # Overconfident losers: losers above this confidence that hit their stop. A model with at
    # least min_overconfident_losers of them in the session has the problem, and only such a
    # model gets the overconfidence treatment (one rule, one threshold: overconfident_models).
    overconfidence: float = 0.50
    min_overconfident_losers: int = 3
    overconfident_loser_boost: float = 3.0
    overconfident_l2_leaf_reg: float = 10.0
    overconfident_depth_reduction: int = 1
    base_edge_threshold: float = 0.08
    overconfident_edge_threshold: float = 0.12
    # Directional bias: both directions traded enough and win rates this far apart.
    bias_min_trades_per_direction: int = 3
    bias_win_rate_gap: float = 0.25
    weak_direction_loser_boost: float = 5.0
    flat_class_weight: float = 1.5
    weak_direction_class_weight: float = 0.8
    # Every loser of a retrained model gets at least this weight on its entry bar.
    base_loser_boost: float = 2.0
    # CatBoost defaults a plan starts from.
    base_l2_leaf_reg: float = 3.0
    base_depth: int = 6

    @classmethod
    def preset(cls, name: str, **overrides: object) -> LearningRules:
        """The rules with the trigger of preset ``name`` (aggressive, balanced, conservative)."""
        if name not in TRIGGER_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(TRIGGER_PRESETS)}")
        min_trades, min_losers = TRIGGER_PRESETS[name]
        return replace(cls(min_trades=min_trades, min_losers=min_losers), **overrides)


def _stats(frame: pd.DataFrame) -> dict:
    """Counts, win rate and profit factor; a rate that has nothing to measure is None (n/a):
    the win rate of no trades, the profit factor without winners or losers."""
    trades = len(frame)
    winners = int((frame["pnl"] > 0).sum())
    losers = int((frame["pnl"] < 0).sum())
    gross_win = float(frame.loc[frame["pnl"] > 0, "pnl"].sum())
    gross_loss = float(-frame.loc[frame["pnl"] < 0, "pnl"].sum())
    if gross_loss > 0:
        pf = gross_win / gross_loss
    else:
        pf = math.inf if gross_win > 0 else None
    return {
        "trades": trades,
        "winners": winners,
        "losers": losers,
        "win_rate": winners / trades if trades else None,
        "pnl": float(frame["pnl"].sum()),
        "profit_factor": pf,
    }


def _status(stats: dict, rules: LearningRules) -> str:
    if stats["trades"] >= rules.struggling_min_trades and (
        stats["win_rate"] < rules.struggling_win_rate
    ):
        return "failing"
    if stats["win_rate"] < rules.warning_win_rate or stats["pnl"] < 0:
        return "warning"
    return "ok"


def session_summary(trades: pd.DataFrame) -> dict:
    """Totals of a session: trades, winners, losers, win rate, P&L, profit factor."""
    return _stats(trades)


def breakdown(trades: pd.DataFrame, rules: LearningRules = LearningRules()) -> pd.DataFrame:
    """Per symbol/timeframe and per direction: trades, winners, losers, win rate, P&L, PF, status.

    Rows with ``direction == "all"`` are whole models; rows with ``symbol == "ALL"`` are the
    session's totals per direction.
    """
    rows = []
    groups = [
        (("symbol", "timeframe"), lambda key: (key[0], key[1], "all")),
        (("symbol", "timeframe", "direction"), lambda key: key),
        (("direction",), lambda key: ("ALL", "ALL", key[0])),
    ]
    for columns, label in groups:
        for key, frame in trades.groupby(list(columns), sort=True):
            key = key if isinstance(key, tuple) else (key,)
            stats = _stats(frame)
            symbol, timeframe, direction = label(key)
            rows.append(
                {
                    "symbol": symbol,
                    "timeframe": timeframe,
                    "direction": direction,
                    **stats,
                    "status": _status(stats, rules),
                }
            )
    columns = ["symbol", "timeframe", "direction", "trades", "winners", "losers", "win_rate"]
    columns += ["pnl", "profit_factor", "status"]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class TriggerStatus:
    """Whether a session has enough trades and losers to learn from, and what it still needs."""

    triggered: bool
    trades: int
    losers: int
    needed_trades: int
    needed_losers: int
    message: str


def trigger_status(trades: pd.DataFrame, rules: LearningRules) -> TriggerStatus:
    """Learning runs when the session has at least ``min_trades`` trades and ``min_losers`` losers."""
    n, losers = len(trades), int((trades["pnl"] < 0).sum())
    need_t, need_l = max(0, rules.min_trades - n), max(0, rules.min_losers - losers)
    if need_t == 0 and need_l == 0:
        message = f"learning triggered: {n} trades, {losers} losers"
    else:
        needs = []
        if need_t:
            needs.append(f"{need_t} more trade{'s' if need_t != 1 else ''}")
        if need_l:
            needs.append(f"{need_l} more loser{'s' if need_l != 1 else ''}")
        message = (
            f"no learning: {n} trades, {losers} losers; need {' and '.join(needs)} "
            f"(thresholds: {rules.min_trades} trades and {rules.min_losers} losers)"
        )
    return TriggerStatus(need_t == 0 and need_l == 0, n, losers, need_t, need_l, message)


@dataclass(frozen=True)
class Problem:
    """One detected problem: its kind, the model it concerns (None for the whole session)."""

    kind: str  # struggling_model | overconfident_losers | directional_bias
    message: str
    model: str | None = None  # ModelKey.slug
    direction: str | None = None
    evidence: dict = field(default_factory=dict)


def _overconfident_mask(trades: pd.DataFrame, rules: LearningRules) -> pd.Series:
    return (
        (trades["pnl"] < 0)
        & (trades["confidence"] > rules.overconfidence)
        & (trades["exit_reason"] == "stop_loss")
    )


def overconfident_models(trades: pd.DataFrame, rules: LearningRules) -> dict[ModelKey, list[str]]:
    """The models whose session had at least ``min_overconfident_losers`` overconfident losers
    (confidence above ``overconfidence``, stopped out), with those losers' trade ids.

    The one rule for overconfidence: ``detect_problems`` raises the problem for exactly these
    models and ``build_plans`` treats exactly these models (a model with fewer such losers is
    neither flagged nor treated, whatever the other models did).
    """
    over = trades.loc[_overconfident_mask(trades, rules)]
    found = {}
    for (symbol, timeframe), frame in over.groupby(["symbol", "timeframe"], sort=True):
        if len(frame) >= rules.min_overconfident_losers:
            found[ModelKey(symbol, timeframe)] = sorted(frame["trade_id"].astype(str))
    return found


def _bias(trades: pd.DataFrame, rules: LearningRules) -> tuple[str, dict] | None:
    """The weak direction when both directions traded enough and their win rates diverge."""
    stats = {d: _stats(trades.loc[trades["direction"] == d]) for d in ("long", "short")}
    if min(s["trades"] for s in stats.values()) < max(1, rules.bias_min_trades_per_direction):
        return None
    gap = stats["short"]["win_rate"] - stats["long"]["win_rate"]
    if abs(gap) < rules.bias_win_rate_gap:
        return None
    weak = "long" if gap > 0 else "short"
    return weak, {
        f"{d}_{k}": stats[d][k] for d in ("long", "short") for k in ("trades", "win_rate")
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def detect_problems(trades: pd.DataFrame, rules: LearningRules = LearningRules()) -> list[Problem]:
    """The seed's three rules: struggling models, overconfident losers, directional bias.

    Directional bias is looked for across the whole session and within each model.
    """
    problems: list[Problem] = []
    for (symbol, timeframe), frame in trades.groupby(["symbol", "timeframe"], sort=True):
        slug = ModelKey(symbol, timeframe).slug
        stats = _stats(frame)
        if (
            stats["trades"] >= rules.struggling_min_trades
            and stats["win_rate"] < rules.struggling_win_rate
        ):
            problems.append(
                Problem(
                    "struggling_model",
                    f"{symbol} {timeframe}: low win rate {stats['winners']}/{stats['trades']} "
                    f"({_pct(stats['win_rate'])} < {_pct(rules.struggling_win_rate)})",
                    model=slug,
                    evidence={k: stats[k] for k in ("trades", "winners", "win_rate")},
                )
            )
        bias = _bias(frame, rules)
        if bias:
            weak, evidence = bias
            problems.append(
                Problem(
                    "directional_bias",
                    f"{symbol} {timeframe}: {weak} trades struggling "
                    f"(long {_pct(evidence['long_win_rate'])} vs "
                    f"short {_pct(evidence['short_win_rate'])})",
                    model=slug,
                    direction=weak,
                    evidence=evidence,
                )
            )
    for key, trade_ids in overconfident_models(trades, rules).items():
        problems.append(
            Problem(
                "overconfident_losers",
                f"{key.symbol} {key.timeframe}: {len(trade_ids)} trades with confidence > "
                f"{rules.overconfidence} hit stop loss (>= {rules.min_overconfident_losers}): "
                "model overconfident",
                model=key.slug,
                evidence={"count": len(trade_ids), "trade_ids": trade_ids},
            )
        )
    bias = _bias(trades, rules)
    if bias:
        weak, evidence = bias
        problems.append(
            Problem(
                "directional_bias",
                f"session: {weak} trades struggling (long {_pct(evidence['long_win_rate'])} "
                f"vs short {_pct(evidence['short_win_rate'])})",
                direction=weak,
                evidence=evidence,
            )
        )
    return problems


@dataclass(frozen=True)
class RetrainPlan:
    """What to change when retraining one model after a session."""

    model: str  # ModelKey.slug
    retrain: bool
    reasons: tuple[str, ...] = ()
    # trade_id -> weight of the row the model decided that trade on.
    trade_boosts: dict[str, float] = field(default_factory=dict)
    class_weights: dict[str, float] = field(
        default_factory=lambda: {"short": 1.0, "flat": 1.0, "long": 1.0}
    )
    l2_leaf_reg: float = 3.0
    depth: int = 6
    edge_threshold: float = 0.08
    refit_barriers: bool = False
    weak_direction: str | None = None
    # LoserPattern.to_dict() of this model's flagged loser patterns: their rows weigh more.
    loser_patterns: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["loser_patterns"] = list(self.loser_patterns)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RetrainPlan:
        data = dict(data)
        data["reasons"] = tuple(data.get("reasons", ()))
        data["loser_patterns"] = tuple(data.get("loser_patterns", ()))
        return cls(**data)


def build_plans(
    trades: pd.DataFrame,
    models: tuple[ModelKey, ...],
    problems: list[Problem],
    trigger: TriggerStatus,
    rules: LearningRules = LearningRules(),
    patterns: Mapping[str, Sequence[LoserPattern]] | None = None,
) -> dict[str, RetrainPlan]:
    """One plan per configured model.

    A model is retrained when the session triggered learning and the model lost at least one
    trade or is struggling; a model with only winners is left untouched. Overconfidence is
    treated exactly where ``detect_problems`` raised it (``overconfident_models``: the same rule
    and threshold); the session-wide directional bias applies to the models whose losers show
    it. Flagged loser
    patterns (``patterns`` by model slug) ride along: their training rows weigh more.
    """
    base = RetrainPlan(
        model="",
        retrain=False,
        l2_leaf_reg=rules.base_l2_leaf_reg,
        depth=rules.base_depth,
        edge_threshold=rules.base_edge_threshold,
    )
    overconfident = {
        p.model: list(p.evidence.get("trade_ids", ()))
        for p in problems
        if p.kind == "overconfident_losers" and p.model is not None
    }
    session_bias = next(
        (p.direction for p in problems if p.kind == "directional_bias" and p.model is None), None
    )
    plans: dict[str, RetrainPlan] = {}
    for key in models:
        mine = (trades["symbol"] == key.symbol) & (trades["timeframe"] == key.timeframe)
        frame = trades.loc[mine]
        losers = frame.loc[frame["pnl"] < 0]
        if not trigger.triggered:
            plans[key.slug] = replace(base, model=key.slug, reasons=(trigger.message,))
            continue
        struggling = any(p.kind == "struggling_model" and p.model == key.slug for p in problems)
        if losers.empty and not struggling:
            reason = "no losers this session" if len(frame) else "no trades this session"
            plans[key.slug] = replace(base, model=key.slug, reasons=(f"untouched: {reason}",))
            continue

        reasons = [f"{len(losers)} loser(s) of {len(frame)} trade(s): losers boosted"]
        boosts = {str(t): rules.base_loser_boost for t in losers["trade_id"]}
        plan = replace(base, model=key.slug, retrain=True)
        if struggling:
            reasons.append("struggling: focused retrain, TP/SL re-fitted to volatility")
            plan = replace(plan, refit_barriers=True)
        my_over = overconfident.get(key.slug, [])
        if my_over:
            plan, reason = _treat_overconfidence(plan, my_over, boosts, rules)
            reasons.append(reason)
        own_bias = next(
            (p.direction for p in problems if p.kind == "directional_bias" and p.model == key.slug),
            None,
        )
        weak = own_bias or (session_bias if (losers["direction"] == session_bias).any() else None)
        if weak:
            weak_losers = losers.loc[losers["direction"] == weak, "trade_id"].astype(str)
            plan, reason = _treat_bias(plan, weak, list(weak_losers), boosts, rules)
            reasons.append(reason)
        mine_patterns = list((patterns or {}).get(key.slug, ()))
        if mine_patterns:
            reasons += [f"loser pattern: {p.message}" for p in mine_patterns]
            plan = replace(plan, loser_patterns=tuple(p.to_dict() for p in mine_patterns))
        plans[key.slug] = replace(plan, reasons=tuple(reasons), trade_boosts=boosts)
    return plans


def _treat_overconfidence(
    plan: RetrainPlan, trade_ids: list[str], boosts: dict[str, float], rules: LearningRules
) -> tuple[RetrainPlan, str]:
    """An overconfident model's plan: its high-confidence stop-loss losers boosted (in
    ``boosts``), more regularization, a higher edge threshold; and the reason."""
    reason = (
        f"overconfident: {len(trade_ids)} high-confidence stop-loss loser(s) boosted "
        f"{rules.overconfident_loser_boost:g}x, more regularization, edge threshold "
        f"{rules.base_edge_threshold:g} -> {rules.overconfident_edge_threshold:g}"
    )
    for trade_id in trade_ids:
        boosts[trade_id] = max(boosts.get(trade_id, 1.0), rules.overconfident_loser_boost)
    plan = replace(
        plan,
        l2_leaf_reg=rules.overconfident_l2_leaf_reg,
        depth=max(2, rules.base_depth - rules.overconfident_depth_reduction),
        edge_threshold=rules.overconfident_edge_threshold,
    )
    return plan, reason


def _treat_bias(
    plan: RetrainPlan,
    weak: str,
    weak_losers: list[str],
    boosts: dict[str, float],
    rules: LearningRules,
) -> tuple[RetrainPlan, str]:
    """A plan against a directional bias: the ``weak`` direction's losers boosted (in
    ``boosts``), the flat and ``weak`` classes weighted up; and the reason."""
    reason = (
        f"directional bias: {len(weak_losers)} {weak} loser(s) boosted "
        f"{rules.weak_direction_loser_boost:g}x, Flat class weight x"
        f"{rules.flat_class_weight:g}, {weak} class weight x"
        f"{rules.weak_direction_class_weight:g}"
    )
    for trade_id in weak_losers:
        boosts[trade_id] = max(boosts.get(trade_id, 1.0), rules.weak_direction_loser_boost)
    weights = dict(plan.class_weights)
    weights["flat"] *= rules.flat_class_weight
    weights[weak] *= rules.weak_direction_class_weight
    return replace(plan, class_weights=weights, weak_direction=weak), reason


@dataclass(frozen=True)
class ProblemReport:
    """Everything the session analysis concluded, as stored and shown for one partition."""

    session_start: str
    session_end: str
    summary: dict
    trigger: TriggerStatus
    problems: list[Problem]
    plans: dict[str, RetrainPlan]
    rules: LearningRules
    patterns: list[dict] = field(default_factory=list)  # every flagged LoserPattern.to_dict()

    def to_dict(self) -> dict:
        return {
            "session_start": self.session_start,
            "session_end": self.session_end,
            "summary": self.summary,
            "trigger": asdict(self.trigger),
            "problems": [asdict(p) for p in self.problems],
            "plans": {k: v.to_dict() for k, v in self.plans.items()},
            "rules": asdict(self.rules),
            "patterns": self.patterns,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ProblemReport:
        return cls(
            session_start=data["session_start"],
            session_end=data["session_end"],
            summary=data["summary"],
            trigger=TriggerStatus(**data["trigger"]),
            problems=[Problem(**p) for p in data["problems"]],
            plans={k: RetrainPlan.from_dict(v) for k, v in data["plans"].items()},
            rules=LearningRules(**data["rules"]),
            patterns=list(data.get("patterns", [])),
        )


def analyze_session(
    trades: pd.DataFrame,
    models: tuple[ModelKey, ...],
    session_start: pd.Timestamp,
    session_end: pd.Timestamp,
    rules: LearningRules = LearningRules(),
    patterns: Mapping[str, Sequence[LoserPattern]] | None = None,
) -> ProblemReport:
    """Run the whole analysis on a session's valid trades.

    ``patterns`` (by model slug: loser patterns found over a longer lookback of the journal)
    are reported, not put in the plans: that lookback overlaps the candidates' validation
    windows. The training set searches again, without the trades its held-out span touched
    (``training.build_training_set(pattern_trades=...)``), and weights rows by what it finds.
    """
    summary = session_summary(trades)
    trigger = trigger_status(trades, rules)
    problems = detect_problems(trades, rules)
    plans = build_plans(trades, models, problems, trigger, rules)
    return ProblemReport(
        session_start=pd.Timestamp(session_start).isoformat(),
        session_end=pd.Timestamp(session_end).isoformat(),
        summary=summary,
        trigger=trigger,
        problems=problems,
        plans=plans,
        rules=rules,
        patterns=[p.to_dict() for found in (patterns or {}).values() for p in found],
    )
