"""The ``session-learning`` command: demo, models, rollback, import-trades, check-data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from session_learning.domain.models import ModelKey, UnknownModelError
from session_learning.settings import Settings

DEMO_END = "2025-06-05T00:00:00Z"
# The demo prints its own summary per session; Dagster's event log stays in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _registry(settings: Settings):
    from session_learning.resources.registry import ModelRegistry

    return ModelRegistry(settings.models_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    """Seed the SQLite journal from synthetic bars and run the learning cycle on the latest
    sessions, in order, through Dagster."""
    import logging

    import dagster as dg

    from session_learning.definitions import build_definitions, build_resources
    from session_learning.domain.demo import malformed_examples, simulate_trades
    from session_learning.domain.learning import DEFAULT_COSTS

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
    print(
        f"journal {journal.url}: {len(new)} new demo trades "
        f"({len(trades)} in {args.sessions} sessions {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC)"
    )

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
    errors = {}
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.event_specific_data.error
        if error is not None and error.cls_name != "DagsterAssetCheckFailedError":
            cause = error.cause.message if error.cause else error.message
            errors[event.step_key] = cause.strip().splitlines()[-1]
    return errors


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
            print(f"   {model.slug:<11} untouched ({'; '.join(plan.get('reasons', []))})")
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


def cmd_models(args: argparse.Namespace) -> int:
    """List models, their production version and deployment history."""
    settings = Settings.from_env()
    registry = _registry(settings)
    keys = registry.models()
    if not keys:
        print(f"no models under {settings.models_dir}")
        return 0
    for key in keys:
        print(f"{key.slug}: production {registry.production_version(key) or 'none'}")
        for entry in registry.history(key):
            print(
                f"   {entry['version']}  live {entry['live_from']} .. {entry['live_to'] or 'now'}"
                f"  ({entry['reason']})"
            )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Production models, their health, the latest decision per model, and recent alerts."""
    from session_learning.resources.journal import TradeJournal

    settings = Settings.from_env()
    registry = _registry(settings)
    print(f"home {settings.home}")
    for key in settings.models:
        live = registry.production_version(key)
        history = registry.history(key) if live else []
        since = history[-1]["live_from"] if history else "-"
        health = registry.health(key)
        print(
            f"{key.slug:<11} production {live or 'none'} (since {since}), health {health['status']}"
        )
        versions = registry.versions(key)
        if versions:
            card = registry.card(key, versions[-1])
            failed = [g["name"] for g in card.get("gates", []) if not g["passed"]]
            verdict = (
                "passed every gate"
                if card.get("passed_gates")
                else "rejected: " + ", ".join(failed)
            )
            print(
                f"            latest candidate {versions[-1]} (session {card.get('session')}): {verdict}"
            )
        if health["status"] != "ok":
            print(f"            {health['reason']}")
    journal = TradeJournal(settings.journal_url or settings.default_journal_url)
    print(f"journal: {journal.count_trades()} trades, {len(journal.open_signals())} open signals")
    alerts = journal.alerts(limit=args.alerts)
    for alert in alerts.itertuples():
        print(f"  alert {alert.created_at} {alert.kind} {alert.subject}: {alert.message[:160]}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put an earlier version back into production."""
    settings = Settings.from_env()
    key = ModelKey(args.symbol.upper(), args.timeframe.upper())
    version = _registry(settings).rollback(key, args.to)
    print(f"{key.slug}: production is now {version}")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    """Let a degraded production model emit signals again (until a new model replaces it)."""
    settings = Settings.from_env()
    key = ModelKey(args.symbol.upper(), args.timeframe.upper())
    registry = _registry(settings)
    version = registry.production_version(key)
    if version is None:
        print(f"error: {key.slug} has no production model", file=sys.stderr)
        return 2
    registry.set_health(key, "enabled", f"re-enabled by operator: {args.reason}", version=version)
    print(f"{key.slug}: {version} re-enabled; it emits signals again")
    return 0


def cmd_import_trades(args: argparse.Namespace) -> int:
    """Import a CSV of closed trades into the journal."""
    from session_learning.resources.journal import TradeJournal

    settings = Settings.from_env()
    journal = TradeJournal(settings.journal_url or settings.default_journal_url)
    counts = journal.import_csv(args.path)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    """Before any training: can each configured model learn from the market data it has?
    Exits with 1 when one cannot."""
    import time

    from session_learning.assets.data_checks import check_model_history
    from session_learning.definitions import build_market_data
    from session_learning.domain.bars import to_utc
    from session_learning.resources.learning import LearningSettingsResource

    started = time.perf_counter()
    settings = Settings.from_env()
    market = build_market_data(settings)
    config = LearningSettingsResource().learning_config()
    hours = pd.Timedelta(hours=settings.session_hours)
    end = (to_utc(args.at, "--at") if args.at else pd.Timestamp.now(tz="UTC")).floor(hours)
    start = end - hours
    print(
        f"market data {settings.market_data}; learning at the end of the session "
        f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC (default windows)"
    )
    checks = []
    for key in settings.models:
        check = check_model_history(market, key, start, end, config)
        checks.append(check)
        print(f"\n{key.slug} on the {check.calendar} calendar: {check.status.upper()}")
        if check.first_bar is not None:
            stale = (
                f"{check.staleness / pd.Timedelta(hours=1):g}h of trading time"
                if check.staleness is not None
                else "-"
            )
            print(
                f"   history: {check.bars} bars {check.first_bar:%Y-%m-%d %H:%M} .. "
                f"{check.last_bar:%Y-%m-%d %H:%M} UTC; newest bar closed {stale} before the end"
            )
            print(
                f"   gaps on the calendar: {check.gaps} ({check.missing_bars} missing bars)"
                + (f", largest {check.largest_gap}" if check.largest_gap else "")
            )
        print(f"   needs: {check.needed} bars ({check.needs}), at least {check.minimum}")
        print(f"   -> {check.verdict}")
    cannot = [c.key.slug for c in checks if not c.can_learn]
    took = time.perf_counter() - started
    if cannot:
        print(
            f"\n{len(cannot)} of {len(checks)} models cannot learn: {', '.join(cannot)} "
            f"(checked in {took:.1f} s)"
        )
        return 1
    print(f"\nevery model can learn ({len(checks)} checked in {took:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-learning",
        description="Retrain trading models after every session, deploy only behind gates. "
        "Settings come from SESSION_LEARNING_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--sessions", type=int, default=6, help="sessions to run (default 6)")
    demo.add_argument(
        "--end", default=DEMO_END, help=f"end of the last session (default {DEMO_END})"
    )
    demo.set_defaults(func=cmd_demo)
    models = sub.add_parser("models", help=cmd_models.__doc__)
    models.set_defaults(func=cmd_models)
    status = sub.add_parser("status", help=cmd_status.__doc__)
    status.add_argument("--alerts", type=int, default=5, help="recent alerts to show")
    status.set_defaults(func=cmd_status)
    rollback = sub.add_parser("rollback", help=cmd_rollback.__doc__)
    rollback.add_argument("symbol")
    rollback.add_argument("timeframe")
    rollback.add_argument("--to", default=None, help="version (default: the one live before)")
    rollback.set_defaults(func=cmd_rollback)
    enable = sub.add_parser("enable", help=cmd_enable.__doc__)
    enable.add_argument("symbol")
    enable.add_argument("timeframe")
    enable.add_argument("--reason", default="no reason given", help="recorded with the override")
    enable.set_defaults(func=cmd_enable)
    check = sub.add_parser("check-data", help=cmd_check_data.__doc__)
    check.add_argument(
        "--at",
        default=None,
        help="judge learning at the last session end at or before this UTC time "
        "(default: now, i.e. the session that just ended)",
    )
    check.set_defaults(func=cmd_check_data)
    from session_learning.replay import add_replay_parser

    add_replay_parser(sub)
    imp = sub.add_parser("import-trades", help=cmd_import_trades.__doc__)
    imp.add_argument("path")
    imp.set_defaults(func=cmd_import_trades)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
