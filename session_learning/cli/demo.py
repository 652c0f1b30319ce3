"""``session-learning demo``: seed a journal with synthetic trades and run the learning cycle on
the latest sessions through Dagster, printing what each session decided."""

from __future__ import annotations

import argparse

import pandas as pd

from session_learning.cli.production import _registry
from session_learning.domain.arena import FLAT
from session_learning.domain.arena_session import ArenaState
from session_learning.settings import Settings

DEMO_END = "2025-06-05T00:00:00Z"
# The demo prints its own summary per session; Dagster's event log stays in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def cmd_demo(args: argparse.Namespace) -> int:
    """Seed the SQLite journal from synthetic bars and run the learning cycle on the latest
    sessions, in order, through Dagster."""
    import logging

    import dagster as dg

    from session_learning.definitions import build_definitions, build_resources

    # A model the session leaves alone has no candidate, so its gates have nothing to judge;
    # Dagster warns about that for every skipped model. The summary below says "untouched".
    logging.getLogger("dagster._core.execution.plan.active").setLevel(logging.ERROR)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    resources = build_resources(settings)
    journal = resources["journal"].journal()
    market = resources["market_data"]
    end = pd.Timestamp(args.end)
    hours = pd.Timedelta(hours=settings.session_hours)
    start = end - args.sessions * hours

    _seed_journal(settings, journal, market, start, end, args.sessions)

    defs = build_definitions(settings)
    job = defs.resolve_job_def("session_learning_job")
    instance = _instance(settings)
    partitions = defs.resolve_job_def("session_learning_job").partitions_def
    keys = partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(
            partitions.get_partition_key_for_timestamp(start.timestamp()),
            partitions.get_partition_key_for_timestamp((end - hours).timestamp()),
        )
    )
    registry = _registry(settings)
    for key in keys:
        result = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        print(f"\n== session {key} (run {result.run_id[:8]}; full logs in the UI)")
        _print_partition(result, settings, registry)

    # One tick of the signal monitor at the end: production models signal on the newest bar.
    config = {"config": {"now": end.isoformat()}}
    monitor = defs.resolve_job_def("signal_monitor_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"resolved_signals": config, "live_signals": config}, **QUIET},
    )
    print(
        f"\n== signal monitor at {end:%Y-%m-%d %H:%M} UTC: {'success' if monitor.success else 'failed'}"
    )
    for row in journal.open_signals().itertuples():
        print(
            f"   open signal {row.signal_id}: {row.direction} {row.symbol} {row.timeframe} "
            f"TP {row.take_profit:.5g} SL {row.stop_loss:.5g} (confidence {row.confidence:.2f})"
        )
    defs.resolve_job_def("learning_performance_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={
            "ops": {"learning_performance": {"config": {"now": end.isoformat()}}},
            **QUIET,
        },
    )
    print(f"\nexports: {settings.exports_dir}\nmodels:  {settings.models_dir}")
    print("open the UI on this instance with: make ui")
    return 0


def _seed_journal(
    settings: Settings, journal, market, start: pd.Timestamp, end: pd.Timestamp, sessions: int
) -> None:
    """Journal the demo's trades over ``[start, end)`` (simulated on the market's bars); on a
    fresh journal, a few malformed rows too, for the quality check to quarantine."""
    from session_learning.domain.demo import malformed_examples, simulate_trades
    from session_learning.domain.training import DEFAULT_COSTS

    journal.create_schema()
    frames = []
    for key in settings.models:
        bars = market.bars(key, start - pd.Timedelta(days=3), end)
        frames.append(simulate_trades(bars, key, start, end, DEFAULT_COSTS[key.symbol], seed=1))
    trades = pd.concat(frames, ignore_index=True).sort_values("exit_time", kind="stable")
    present = journal.existing_trade_ids(trades["trade_id"])
    new = trades.loc[~trades["trade_id"].isin(present)]
    journal.add_trades(new)
    if not present:
        journal.add_trades(malformed_examples(trades))
    print(f"journal {journal.url}: {_demo_trades_line(new, trades, start, end, sessions)}")


def _instance(settings: Settings):
    """The Dagster instance in DAGSTER_HOME; without one, a local SQLite instance under the
    home folder (so `make ui` / `dagster dev` with that DAGSTER_HOME shows the runs)."""
    import os

    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.home / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"DAGSTER_HOME not set: using {home}")
    return dg.DagsterInstance.get()


def _step_errors(result) -> dict[str, str]:
    """Failed steps of a run that are real errors (a failed gate is a decision, not an error)."""
    from session_learning.hooks import GATE_FAILURE
    from session_learning.sensors import error_cause

    errors = {}
    for event in result.get_step_failure_events():
        name, message = error_cause(event.event_specific_data.error)
        if name != GATE_FAILURE:
            errors[event.step_key] = f"{name}: {message}"
    return errors


def _demo_trades_line(
    new: pd.DataFrame, trades: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, sessions: int
) -> str:
    """How many demo trades were journaled and how many the sessions hold: a trade belongs to
    the session [start, end) containing its exit, so one exiting at ``end`` is the next one's."""
    exits = pd.to_datetime(trades["exit_time"], utc=True)
    inside = int(((exits >= start) & (exits < end)).sum())
    line = (
        f"{len(new)} new demo trades ({inside} in {sessions} sessions "
        f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    )
    later = int((exits >= end).sum())
    return line + (
        f"; {later} exiting at or after the end belong to later sessions)" if later else ")"
    )


def _print_partition(result, settings: Settings, registry) -> None:
    errors = _step_errors(result)
    for step, message in errors.items():
        print(f"   ERROR in {step}: {message}")
    if "problem_report" in errors or "session_trades" in errors:
        return
    report = result.output_for_node("problem_report")
    print(f"   {report['trigger']['message']}")
    for problem in report["problems"]:
        print(f"   problem: {problem['message']}")
    for model in settings.models:
        node = f"{model.slug}__candidate_model"
        if any(step.startswith(model.slug) for step in errors):
            continue  # printed above
        try:
            candidate = result.output_for_node(node)
        except Exception:  # not materialized: the plan left the model untouched
            plan = report["plans"].get(model.slug, {})
            reasons = [r.removeprefix("untouched: ") for r in plan.get("reasons", [])]
            print(f"   {model.slug:<11} untouched ({'; '.join(reasons)})")
            continue
        m = candidate["metrics"]
        pf = "inf" if m["profit_factor"] is None else f"{m['profit_factor']:.2f}"
        print(
            f"   {model.slug:<11} {candidate['version']}: PF {pf}, DD {m['max_drawdown_pct']:.2f}%, "
            f"WR {100 * m['win_rate']:.1f}%, {m['trades']} trades -> {candidate['decision']}"
        )
    live = ", ".join(
        f"{m.slug} {registry.production_version(m) or 'none'}" for m in settings.models
    )
    print(f"   production now: {live}")
    print("   arena after the session's fold:")
    for line in _arena_lines(settings, registry):
        print(f"     {line}")


def _arena_lines(settings: Settings, registry) -> list[str]:
    """Each model's arena after the session's fold: its champion (FLAT when paused or none yet)
    and how many challengers trade beside it in the shadow. A first deployment made after the
    fold becomes the arena's champion at the next session's fold, and the line says so."""
    lines = []
    for model in settings.models:
        document = registry.arena(model)
        if document is None:
            lines.append(f"{model.slug:<11} not started")
            continue
        arena = ArenaState.from_dict(document["state"]["arena_state"]).arena
        line = f"{model.slug:<11} champion {arena.champion}"
        if arena.champion == FLAT and arena.paused:
            line += f" ({arena.paused} paused)"
        live = registry.production_version(model)
        if live is not None and arena.champion == FLAT and arena.paused is None:
            line += f" (production {live} becomes champion at the next session's fold)"
        lines.append(f"{line}, {len(arena.challengers)} challenger(s)")
    return lines


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand."""
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--sessions", type=int, default=6, help="sessions to run (default 6)")
    demo.add_argument(
        "--end", default=DEMO_END, help=f"end of the last session (default {DEMO_END})"
    )
    demo.set_defaults(func=cmd_demo)
