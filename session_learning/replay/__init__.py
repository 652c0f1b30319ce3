"""Replay: the whole learning loop over a historical range, to measure whether learning helps.

For every model (symbol x timeframe) the replay walks the range session by session (4 hours,
UTC), as production would:

1. the live model of each arm trades the session's bars: its probabilities become signals by
   the trading rule in its card (confidence, edge), entered at the next bar's open and resolved
   with the shared first-touch rules and costs (``backtest.run_backtest``), one position per
   model at a time; every closed trade is written to the arm's SQLite trade journal (the live
   ``TradeJournal``) in the session in which it exited;
2. at the session's end the arm's learning cycle reads the session's trades back from its
   journal and runs the same domain functions as the Dagster assets: ``validate_trades``,
   ``analyze_session``, ``effective_plan``, ``build_training_set``, ``train_candidate``,
   ``evaluate_production``, ``judge``, stores the judgement with the version and deploys
   through ``ModelRegistry.promote`` (one registry per arm). A candidate that did not pass
   cannot be promoted: the ``ungated`` arm and the static arm's first model, which trade it
   anyway, hold that model in the arm itself, outside the registry's production pointer.

Arms (``ARMS``):

- ``static``: trained once at the start and never retrained (its initial model is deployed
  whatever the gates say: it is the do-nothing baseline; its gate results are recorded);
- ``periodic``: retrained every session that has new bars, with a plain plan (no boosts,
  default class weights and parameters, no problem rules), deployed when the gates pass;
- ``session_learning``: the product: the plan comes from ``analyze_session``, the gates
  (including beating production beyond noise) decide;
- ``ungated``: session learning with every candidate deployed.

Every arm starts the same way: at the range's start, a model without production is trained
through ``effective_plan`` (initial training). Arms are independent (own journal, own
registry), so they run in parallel processes; within an arm all models share each session's
analysis, as in production (the trigger and the session-wide problems look at all models).

Simplifications, stated in the report: a deployment takes effect at the session's end (the
bars of a session are scored by the model that was live when the session began); only
deployed candidates are stored in the registry (rejected ones are recorded in the replay's own
candidate log); features are computed once per model over the whole range (they are causal,
so a value at a bar only depends on earlier bars; only the warm-up of the exponential averages
differs from a window computed live).

The package: ``config`` (arms, ``ReplayConfig``), ``bars`` (bar sources, loading, known regimes),
``arms`` (one arm's walk), ``arm_run`` (what an arm did: its task, results and their files),
``arena_arm`` (the ``session_learning`` arm: the arena), ``runner``
(every arm, in processes or as executor steps), ``scenarios`` (``flips``, ``null``, ``clones``),
``cli`` (``session-learning replay``). The report (``reports/replay_report.py``) reads the runs;
nothing here imports it except the command, when it runs.
"""

from session_learning.replay.arena_arm import ARENA_LOG_COLUMNS, ArenaArmReplay
from session_learning.replay.arm_run import (
    CANDIDATE_COLUMNS,
    CANDIDATE_TEXT_COLUMNS,
    SESSION_COLUMNS,
    TRADE_RECORD_COLUMNS,
    ArmRun,
    ArmTask,
    read_arm,
)
from session_learning.replay.arms import PrecomputedFeatures, run_arm
from session_learning.replay.bars import (
    PROCESSES,
    REGIME_LOOKBACK,
    BarSource,
    ProcessBars,
    SyntheticBars,
    ValidatedBars,
    bar_source,
    describe_bars,
    load_bars,
    session_regimes,
)
from session_learning.replay.cli import add_replay_parser, cmd_replay, config_from_args
from session_learning.replay.config import (
    ARM_DESCRIPTIONS,
    ARM_FILE,
    ARMS,
    GATED_ARMS,
    MARKER_FILE,
    SCENARIOS,
    ReplayConfig,
    ReplayError,
    plain_plan,
)
from session_learning.replay.runner import ReplayResult, run_replay
from session_learning.replay.scenarios import (
    FLIPS_MODEL,
    FLIPS_WEEKS,
    SCENARIO_CONFIGS,
    clones_scenario,
    first_clean_flip,
    flips_scenario,
    null_scenario,
)

__all__ = [
    "ARENA_LOG_COLUMNS",
    "PROCESSES",
    "SCENARIO_CONFIGS",
    "ArenaArmReplay",
    "ProcessBars",
    "clones_scenario",
    "null_scenario",
    "ARM_DESCRIPTIONS",
    "ARM_FILE",
    "ARMS",
    "CANDIDATE_COLUMNS",
    "CANDIDATE_TEXT_COLUMNS",
    "FLIPS_MODEL",
    "FLIPS_WEEKS",
    "GATED_ARMS",
    "MARKER_FILE",
    "REGIME_LOOKBACK",
    "SCENARIOS",
    "SESSION_COLUMNS",
    "TRADE_RECORD_COLUMNS",
    "ArmRun",
    "ArmTask",
    "BarSource",
    "PrecomputedFeatures",
    "ReplayConfig",
    "ReplayError",
    "ReplayResult",
    "SyntheticBars",
    "ValidatedBars",
    "add_replay_parser",
    "bar_source",
    "cmd_replay",
    "config_from_args",
    "describe_bars",
    "first_clean_flip",
    "flips_scenario",
    "load_bars",
    "plain_plan",
    "read_arm",
    "run_arm",
    "run_replay",
    "session_regimes",
]
