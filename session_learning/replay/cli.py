"""The ``session-learning replay`` command."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from session_learning.domain.analysis import (
    TRIGGER_PRESETS,
    LearningRules,
)
from session_learning.domain.drift import DEFAULT_BLOCK_TRADES
from session_learning.domain.gates import GateThresholds
from session_learning.domain.keys import ModelKey
from session_learning.domain.training import (
    BARRIER_REFITS,
    LearningConfig,
)
from session_learning.replay.bars import bar_source
from session_learning.replay.config import (
    ARMS,
    DEFAULT_FROM,
    DEFAULT_OUT,
    DEFAULT_SYMBOLS,
    DEFAULT_TIMEFRAMES,
    DEFAULT_TO,
    SCENARIOS,
    ReplayConfig,
)
from session_learning.replay.runner import run_replay
from session_learning.replay.scenarios import FLIPS_WEEKS, SCENARIO_CONFIGS

# --- command line ----------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """The ``ReplayConfig`` of parsed ``replay`` arguments (a scenario gives the defaults)."""
    weeks = getattr(args, "weeks", None) or FLIPS_WEEKS
    base = SCENARIO_CONFIGS[args.scenario](args.seed, weeks) if args.scenario else None
    if base is not None and not (args.symbols or args.timeframes):
        models = base.models
    else:
        symbols = _csv(args.symbols or DEFAULT_SYMBOLS)
        timeframes = _csv(args.timeframes or DEFAULT_TIMEFRAMES)
        models = tuple(ModelKey(s.upper(), t.upper()) for s in symbols for t in timeframes)
    learning = base.learning if base is not None else LearningConfig()
    if args.iterations is not None:
        learning = replace(learning, iterations=args.iterations)
    if args.training_bars is not None:
        learning = replace(learning, training_bars=args.training_bars)
    if args.barrier_refit is not None:
        learning = replace(learning, barrier_refit=args.barrier_refit)
    rules = LearningRules.preset(args.preset)
    return ReplayConfig(
        models=models,
        start=args.from_ or (base.start if base is not None else DEFAULT_FROM),
        end=args.to or (base.end if base is not None else DEFAULT_TO),
        arms=tuple(_csv(args.arms)),
        seed=args.seed,
        learning=learning,
        gates=base.gates if base is not None else GateThresholds(),
        rules=rules,
        workers=args.workers,
        periodic_every=args.periodic_every,
        challenger_every=args.challenger_every,
        detector_block_trades=args.detector_block,
        scenario=args.scenario,
        source=args.source or (base.source if base is not None else "synthetic"),
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay the learning loop over a historical range: static vs periodic vs session learning
    vs session learning without gates; writes a Markdown report and equity curves."""
    from session_learning.reports.replay_report import write_report

    config = config_from_args(args)
    source = bar_source(config.source, config.seed)
    sessions = len(config.sessions())
    print(
        f"replaying {', '.join(m.slug for m in config.models)}: {sessions} sessions "
        f"{config.start:%Y-%m-%d %H:%M} .. {config.end:%Y-%m-%d %H:%M} UTC, "
        f"arms {', '.join(config.arms)} ({config.source} bars, seed {config.seed})",
        file=sys.stderr,
    )
    result = run_replay(config, source, args.out, progress=not args.no_progress, resume=args.resume)
    paths = write_report(result, Path(args.out))
    summary = json.loads(paths["summary"].read_text())
    for arm, stats in summary["arms"].items():
        low, high = stats["expectancy_ci"]
        print(
            f"{arm:<17} {stats['trades']:>5} trades  expectancy {stats['expectancy_r']:+.3f}R "
            f"[{low:+.3f}, {high:+.3f}]  deploys {stats['deploys']}"
        )
    print(f"runtime {result.wall_seconds:.0f}s with {result.workers} worker(s)")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def add_replay_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``replay`` subcommand on a ``session-learning`` parser."""
    parser = subparsers.add_parser(
        "replay", help=cmd_replay.__doc__, description=cmd_replay.__doc__
    )
    _add_range_arguments(parser)
    _add_learning_arguments(parser)
    parser.add_argument(
        "--workers", type=int, default=0, help="processes (default: one per arm, at most CPUs)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep arms a stopped replay already finished (same settings) instead of redoing them",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=cmd_replay)
    return parser


def _add_range_arguments(parser: argparse.ArgumentParser) -> None:
    """What is replayed: the range, the models, the arms, the bars (or a scenario) and where the
    results go."""
    parser.add_argument(
        "--from", dest="from_", default=None, help=f"range start, UTC (default {DEFAULT_FROM})"
    )
    parser.add_argument("--to", default=None, help=f"range end, UTC (default {DEFAULT_TO})")
    parser.add_argument(
        "--symbols", default=None, help=f"comma-separated symbols (default {DEFAULT_SYMBOLS})"
    )
    parser.add_argument(
        "--timeframes",
        default=None,
        help=f"comma-separated timeframes, crossed with the symbols (default {DEFAULT_TIMEFRAMES})",
    )
    parser.add_argument(
        "--arms", default=",".join(ARMS), help=f"comma-separated arms (default {','.join(ARMS)})"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic bars")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--source",
        default=None,
        help="where bars come from: synthetic (default; a scenario names its own), null (a "
        "random walk), stationary (one persistent drift), files:DIR (one <SYMBOL>_<TIMEFRAME>.csv "
        "or .parquet per model) or polygon (key in POLYGON_API_KEY); validated as in the assets",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help="a known-answer scenario: 'flips' replays one model with short windows across "
        "the synthetic regime flips; 'null' the same model on a random walk (every promotion is "
        "false); 'clones' on a stationary structure with challengers that are reseeded copies "
        "of the champion (every promotion and every pause is false)",
    )
    parser.add_argument(
        "--weeks",
        type=int,
        default=None,
        help=f"length of a scenario's range in weeks (default {FLIPS_WEEKS}; --to overrides)",
    )


def _add_learning_arguments(parser: argparse.ArgumentParser) -> None:
    """How the arms learn: the trigger preset, CatBoost and the training window, the barrier
    refit, and how often the periodic arm and the arena take a new model."""
    parser.add_argument(
        "--preset",
        choices=tuple(TRIGGER_PRESETS),
        default="balanced",
        help="learning trigger preset (default balanced: 3 trades and 1 loser)",
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="CatBoost iterations (default 250)"
    )
    parser.add_argument(
        "--training-bars", type=int, default=None, help="rolling training rows (default 6000)"
    )
    parser.add_argument(
        "--barrier-refit",
        choices=BARRIER_REFITS,
        default=None,
        help="TP/SL refit of struggling models: judged against the gates (default), fitted "
        "(median excursions as they come) or off",
    )
    parser.add_argument(
        "--periodic-every",
        type=int,
        default=1,
        help="the periodic arm retrains every N sessions with bars (default 1; 30 is weekly)",
    )
    parser.add_argument(
        "--challenger-every",
        type=int,
        default=1,
        help="the arena (session_learning arm) takes a new challenger every N sessions with bars "
        "(default 1; a pause's recency-weighted challenger comes at once)",
    )
    parser.add_argument(
        "--detector-block",
        type=int,
        default=DEFAULT_BLOCK_TRADES,
        help="the arena's change detector is calibrated by resampling runs of N consecutive "
        f"validation trades (default {DEFAULT_BLOCK_TRADES}; 1: one by one; trades of one model "
        "are correlated)",
    )
