"""Known-answer scenarios: ``flips`` (the structure flips at known times: a model must adapt),
``null`` (no learnable structure: every promotion is false) and ``clones`` (a stationary
structure and challengers trained exactly like the champion with other seeds: every promotion
and every pause is false). All three replay one 15-minute model with short windows."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import LearningConfig
from session_learning.replay.bars import SyntheticBars
from session_learning.replay.config import ReplayConfig, ReplayError

# --- the known-answer scenario -------------------------------------------------------------


FLIPS_MODEL = ModelKey("EURUSD", "15T")
FLIPS_SEARCH_FROM = pd.Timestamp("2025-01-06", tz="UTC")
FLIPS_WEEKS = 13
FLIPS_PURITY = 0.75  # share of one structure in the static model's first windows


def flips_scenario(seed: int = 7, weeks: int = FLIPS_WEEKS) -> ReplayConfig:
    """One model on synthetic bars with short windows, so that a model trained at the start
    knows only the structure it was trained in.

    The synthetic structure flips sign between trend (moves continue) and range (moves snap
    back) at times ``synthetic.regime_schedule`` knows. With the product's windows (months of
    training) a model learns both rules; here the training window (800 bars, about 8 trading
    days) is about one regime long, the validation window 400 bars, and the gates' minimum
    trades scaled to it. The range starts at the first flip (from 2025-01-06 on) whose
    preceding training and validation windows hold one structure for at least 75% of their
    sessions, so the static arm's model knows one structure and meets the other right away;
    it runs ``weeks`` weeks from there.
    """
    learning = scenario_learning()
    start = first_clean_flip(FLIPS_MODEL, learning, seed, FLIPS_SEARCH_FROM)
    return ReplayConfig(
        models=(FLIPS_MODEL,),
        start=start,
        end=start + pd.Timedelta(weeks=weeks),
        seed=seed,
        learning=learning,
        gates=GateThresholds(min_trades={"15T": 20}),
        scenario="flips",
    )


def first_clean_flip(
    key: ModelKey, learning: LearningConfig, seed: int, after: pd.Timestamp
) -> pd.Timestamp:
    """The first session at or after ``after`` where the synthetic structure flips (trend to
    range or back) and the sessions a model trained there learns from (training, purge,
    validation, embargo) hold the old structure for at least ``FLIPS_PURITY`` of them."""
    session = pd.Timedelta(hours=4)
    bars = (
        learning.training_bars
        + learning.validation_for(key.timeframe)
        + 2 * learning.max_holding_bars
    )
    lookback = -(-bars * key.bar // session)  # sessions with bars
    regimes = SyntheticBars(seed).regimes(
        ModelKey(key.symbol, "4H"), after - pd.Timedelta(days=60), after + pd.Timedelta(days=365)
    )
    codes = regimes.astype(str).to_numpy()
    for i in range(lookback, len(codes)):
        if regimes.index[i] < after or codes[i] == "burst" or codes[i] == codes[i - 1]:
            continue
        before = codes[i - lookback : i]
        other = "range" if codes[i] == "trend" else "trend"
        if (before == other).mean() >= FLIPS_PURITY:
            return regimes.index[i]
    raise ReplayError(f"no clean flip of {key.symbol} within a year after {after:%Y-%m-%d}")


NULL_START = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday


def scenario_learning() -> LearningConfig:
    """The scenarios' short windows: 800 training bars, 400 validation bars, 60 iterations."""
    return LearningConfig(
        training_bars=800, validation_bars={"15T": 400}, warmup_bars=300, iterations=60
    )


def null_scenario(seed: int = 7, weeks: int = FLIPS_WEEKS) -> ReplayConfig:
    """The flips scenario's model and windows on a Gaussian random walk (``ProcessBars("null")``):
    nothing to learn, so a candidate passes the gates by luck only and every promotion on
    forward evidence is false. Measures false promotions per model-year."""
    return ReplayConfig(
        models=(FLIPS_MODEL,),
        start=NULL_START,
        end=NULL_START + pd.Timedelta(weeks=weeks),
        seed=seed,
        learning=scenario_learning(),
        gates=GateThresholds(min_trades={"15T": 20}),
        scenario="null",
        source="null",
    )


def clones_scenario(seed: int = 7, weeks: int = FLIPS_WEEKS) -> ReplayConfig:
    """One stationary learnable structure (``ProcessBars("stationary")``); the arena's champion is
    the model trained at the start and every challenger is trained on the same rows with another
    seed: identical in distribution to the champion. Every promotion and every pause (change
    alarm) is false. Measures both per model-year."""
    return replace(null_scenario(seed, weeks), scenario="clones", source="stationary")


SCENARIO_CONFIGS = {"flips": flips_scenario, "null": null_scenario, "clones": clones_scenario}
