"""The ``session-learning`` command: demo, models, rollback, import-trades, check-data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from session_learning.domain.keys import ModelKey, UnknownModelError
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
    from session_learning.domain.training import DEFAULT_COSTS

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
    print(f"journal {journal.url}: {_demo_trades_line(new, trades, start, end, args.sessions)}")

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


def cmd_models(args: argparse.Namespace) -> int:
    """List models, their production version and deployment history."""
    settings = Settings.from_env()
    registry = _registry(settings)
    keys = registry.models()
    if not keys:
        print(f"no models under {settings.models_dir}")
        return 0
    unusable = 0
    for key in keys:
        live = registry.production_version(key)
        print(f"{key.slug}: production {live or 'none'}")
        problem = _production_problem(registry, key) if live else None
        if problem:
            unusable += 1
            print(f"   PRODUCTION MODEL UNUSABLE: {problem}")
        for entry in registry.history(key):
            print(
                f"   {entry['version']}  live {entry['live_from']} .. {entry['live_to'] or 'now'}"
                f"  ({entry['reason']})"
            )
    if unusable:
        print(
            f"error: {unusable} production model(s) cannot be loaded (see above)", file=sys.stderr
        )
        return 1
    return 0


def _production_problem(registry, key: ModelKey) -> str | None:
    """Why the production model of ``key`` cannot be loaded (checksums verified), or None."""
    from session_learning.resources.registry import RegistryError

    try:
        registry.production(key)
    except RegistryError as exc:
        return str(exc)
    return None


def cmd_status(args: argparse.Namespace) -> int:
    """Production models, their health, the latest decision or error per model (with the
    numbers and the fix), late trades, and recent alerts."""
    import textwrap

    from session_learning.domain.gates import Judgement
    from session_learning.resources.journal import TradeJournal
    from session_learning.resources.outcomes import DECISIONS, OutcomeStore
    from session_learning.sensors import LATE_TRADE_LOOKBACK, late_report

    def block(text: str) -> str:  # whole, never cut: the cause and the fix are in it
        return textwrap.indent(text, " " * 12)

    settings = Settings.from_env()
    registry = _registry(settings)
    journal = TradeJournal(settings.journal_url or settings.default_journal_url)
    outcomes = OutcomeStore(journal)
    latest = outcomes.latest(m.slug for m in settings.models)
    print(f"home {settings.home}")
    unusable = 0
    for key in settings.models:
        live = registry.production_version(key)
        history = registry.history(key) if live else []
        since = history[-1]["live_from"] if history else "-"
        health = registry.health(key)
        print(
            f"{key.slug:<11} production {live or 'none'} (since {since}), health {health['status']}"
        )
        problem = _production_problem(registry, key) if live else None
        if problem:
            unusable += 1
            print(block(f"PRODUCTION MODEL UNUSABLE: {problem}"))
        versions = registry.versions(key)
        if versions:
            card = registry.card(key, versions[-1])
            record = registry.judgement(key, versions[-1])
            verdict = Judgement.from_record(record).summary if record else "not judged"
            print(
                f"            latest candidate {versions[-1]} (session {card.get('session')}): {verdict}"
            )
        if health["status"] != "ok":
            print(f"            {health['reason']}")
        for line in arena_lines(registry, key):
            print(f"            {line}")
        outcome = latest.get(key.slug)
        if outcome is None:
            print("            no learning outcome recorded yet")
            continue
        shown = [outcome]
        if outcome.outcome in ("untouched", "training"):  # and the last time it was judged
            decided = next((o for o in outcomes.history(key.slug) if o.outcome in DECISIONS), None)
            shown += [decided] if decided is not None else []
        for label, o in zip(("latest", "last decision"), shown, strict=False):
            print(
                f"            {label}: {o.outcome.upper()} in {o.step} "
                f"(session {o.session}, run {o.run_id[:8]}, {o.recorded_at[:19]})"
            )
            print(block(o.message))
    late = outcomes.late_trades(pd.Timestamp.now(tz="UTC"), LATE_TRADE_LOOKBACK)
    if not late.empty:
        print(f"late trades: {len(late)} in {late['session'].nunique()} session(s)")
        for session, rows in late.groupby("session", sort=True):
            print(block(late_report(session, rows)))
    print(f"journal: {journal.count_trades()} trades, {len(journal.open_signals())} open signals")
    alerts = journal.alerts(limit=args.alerts)
    for alert in alerts.itertuples():
        print(f"  alert {alert.created_at} {alert.kind} {alert.subject}:")
        print(block(alert.message))
    from session_learning.settings import settings_report

    print("\n".join(settings_report(settings)))
    if unusable:
        print(
            f"error: {unusable} production model(s) cannot be loaded (see above)", file=sys.stderr
        )
        return 1
    return 0


def _e(value: float | None) -> str:
    """An e-value or threshold as stored (JSON keeps infinity as null)."""
    return "inf" if value is None else f"{value:.3g}"


def arena_lines(registry, key: ModelKey) -> list[str]:
    """The model's arena for ``status``: what trades (a champion, or FLAT and why), the last
    session folded, and each challenger's e-values against the champion and FLAT."""
    document = registry.arena(key)
    if document is None:
        return ["arena: not started (no session folded by challenger_evidence yet)"]
    arena = document["state"]["arena_state"]["arena"]
    record = registry.arena_session(key, document["session"]) or {}
    champion = arena["champion"]
    paused = registry.paused(key)
    trading = f"champion {champion}"
    if champion == "FLAT":
        trading = "champion FLAT (nothing trades)"
        if paused is not None:
            trading += (
                f": {arena.get('paused') or registry.production_version(key)} paused in session "
                f"{paused['session']}: {paused['reason']}"
            )
    lines = [
        f"arena: {trading}; last session folded {document['session']} "
        f"({arena['session']} sessions with bars), {len(arena['challengers'])} challenger(s)"
    ]
    evidence = record.get("evidence", {})
    for c in arena["challengers"]:
        found = evidence.get(c["version"])
        age = arena["session"] - c["entered_session"]
        if found is None:
            lines.append(f"  {c['version']} ({c['kind']}, {age} sessions): no evidence yet")
            continue
        vs_champion, vs_flat = found["vs_champion"], found["vs_flat"]
        lines.append(
            f"  {c['version']} ({c['kind']}, {age} sessions): e-value "
            f"{_e(vs_champion['e_value'])} vs {vs_champion['baseline']}, "
            f"{_e(vs_flat['e_value'])} vs FLAT (promotion at {_e(vs_champion['threshold'])}); "
            f"mean {vs_champion['mean_r']:+.4f} R/bar, "
            f"{vs_champion['bars']} bars, {vs_flat['trades']} shadow trades"
        )
    return lines


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put a version that was live before back into production (--force --reason for any
    other version; recorded in the history as forced)."""
    settings = Settings.from_env()
    key = ModelKey(args.symbol.upper(), args.timeframe.upper())
    registry = _registry(settings)
    version = registry.rollback(key, args.to, force=args.force, reason=args.reason)
    forced = registry.history(key)[-1].get("forced") is True
    print(f"{key.slug}: production is now {version}" + (" (forced)" if forced else ""))
    return 0


def cmd_upgrade_registry(args: argparse.Namespace) -> int:
    """Seal a model registry written by an earlier version (card checksums, judgements from
    the gate results the cards kept); run once after upgrading."""
    settings = Settings.from_env()
    registry = _registry(settings)
    done = registry.upgrade()
    for line in done:
        print(line)
    print(f"{registry.root}: {'upgraded' if done else 'nothing to upgrade'}")
    return 1 if any("NOT usable" in line for line in done) else 0


def cmd_enable(args: argparse.Namespace) -> int:
    """Let a degraded production model emit signals again (until a new model replaces it)."""
    settings = Settings.from_env()
    key = ModelKey(args.symbol.upper(), args.timeframe.upper())
    registry = _registry(settings)
    version = registry.production_version(key)
    if version is None:
        print(f"error: {key.slug} has no production model", file=sys.stderr)
        return 2
    health = registry.health(key)
    if health["status"] != "degraded" or health.get("version") not in (None, version):
        shown = "enabled by operator" if health["status"] == "enabled" else health["status"]
        print(
            f"error: {key.slug} {version} is not degraded (health: {shown}); "
            "enable only lifts a degradation pause",
            file=sys.stderr,
        )
        return 2
    registry.set_health(key, "enabled", f"re-enabled by operator: {args.reason}", version=version)
    print(f"{key.slug}: {version} re-enabled; it emits signals again")
    return 0


def cmd_import_trades(args: argparse.Namespace) -> int:
    """Import a CSV of closed trades into the journal (see the data contract below)."""
    from session_learning.domain.trades import parse_mapping
    from session_learning.resources.journal import TradeImportError, TradeJournal

    settings = Settings.from_env()
    journal = TradeJournal(settings.journal_url or settings.default_journal_url)
    try:
        mapping = {**_mapping_file(args.mapping), **parse_mapping(args.map)}
    except ValueError as exc:
        raise TradeImportError(str(exc)) from None
    report = journal.import_csv(
        args.path,
        mapping=mapping,
        delimiter=args.delimiter,
        encoding=args.encoding,
        apply_corrections=args.apply_corrections,
    )
    counts = report.counts()
    print(f"{args.path}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if report.ignored_columns:
        print(f"ignored columns (not in the journal): {', '.join(report.ignored_columns)}")
    for line in report.unplaceable:
        print(f"quarantined: {line}; it fails session_trades_are_clean until corrected")
    for line in report.not_numbers:
        print(f"quarantined: {line} (kept as written)")
    for conflict in report.conflicts:
        verb = "corrected" if args.apply_corrections else "conflict"
        print(f"{verb}: {conflict.describe(report.path, applied=args.apply_corrections)}")
    shown = len(report.unplaceable) + len(report.not_numbers) + len(report.conflicts)
    hidden = report.unplaceable_count + report.not_numbers_count + report.conflict_count - shown
    if hidden:
        print(f"... and {hidden} more (see the session_trades check in the UI)")
    if report.conflict_count and not args.apply_corrections:
        print(
            f"error: {report.conflict_count} trade(s) in {args.path} differ from the journal and "
            "were left as journaled; re-run with --apply-corrections to replace the journaled "
            "values (the previous ones are kept in the trade_corrections table)",
            file=sys.stderr,
        )
        return 1
    return 0


def _mapping_file(path: str | None) -> dict[str, str]:
    """A YAML column mapping ``{file column: journal column}`` (optionally under ``columns:``)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--mapping {path}: cannot be read ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(
            f"--mapping {path}: expected lines 'file_column: journal_column', e.g. 'id: trade_id'"
        )
    return {str(k): v for k, v in data.items()}


def _data_contract_help() -> str:
    from session_learning.domain.trades import (
        DATA_CONTRACT,
        NUMBER_RULE,
        REQUIRED_COLUMNS,
        SESSION_RULE,
        TIME_FORMAT_RULE,
    )

    lines = ["data contract (one row per closed trade, a header line first):"]
    for column, (kind, meaning) in DATA_CONTRACT.items():
        need = "required" if column in REQUIRED_COLUMNS else "optional"
        lines.append(f"  {column:<14} {need:<9} {kind:<7} {meaning}")
    lines += ["", TIME_FORMAT_RULE, "", NUMBER_RULE, "", SESSION_RULE]
    lines += [
        "",
        "Column names match apart from case; other columns are ignored. A trade_id already in "
        "the journal with the same values is skipped (the import is idempotent); with other "
        "values it is a conflict: see --apply-corrections.",
        "",
        "example: session-learning import-trades export.csv --map id=trade_id --map "
        "ticker=symbol --map profit=pnl",
    ]
    import textwrap

    return "\n".join(
        textwrap.fill(line, 96, subsequent_indent=" " * 35)
        if line.startswith("  ")
        else textwrap.fill(line, 96)
        if line
        else ""
        for line in lines
    )


def cmd_check_data(args: argparse.Namespace) -> int:
    """Before any training: can each configured model learn from the market data it has?
    Exits with 1 when one cannot."""
    import time

    from session_learning.assets.data_checks import check_model_history
    from session_learning.definitions import build_market_data
    from session_learning.domain.bars import to_utc
    from session_learning.resources.learning_settings import LearningSettingsResource

    started = time.perf_counter()
    settings = Settings.from_env()
    market = build_market_data(settings)
    config = LearningSettingsResource().learning_config()
    hours = pd.Timedelta(hours=settings.session_hours)
    end = (to_utc(args.at, "--at") if args.at else pd.Timestamp.now(tz="UTC")).floor(hours)
    start = end - hours
    print(
        f"market data {settings.market_data_source}; learning at the end of the session "
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
    rollback.add_argument(
        "--force",
        action="store_true",
        help="allow a version that was never live (needs --reason; recorded as forced)",
    )
    rollback.add_argument("--reason", default=None, help="why; recorded in the history")
    rollback.set_defaults(func=cmd_rollback)
    upgrade = sub.add_parser("upgrade-registry", help=cmd_upgrade_registry.__doc__)
    upgrade.set_defaults(func=cmd_upgrade_registry)
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
    from session_learning.replay.cli import add_replay_parser

    add_replay_parser(sub)
    imp = sub.add_parser(
        "import-trades",
        help=cmd_import_trades.__doc__,
        description=cmd_import_trades.__doc__,
        epilog=_data_contract_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("path", help="CSV file of closed trades")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FILE_COLUMN=JOURNAL_COLUMN",
        help="read a column of the file as a journal column (repeatable), e.g. --map id=trade_id",
    )
    imp.add_argument(
        "--mapping", metavar="YAML", help="a file of 'file_column: journal_column' lines"
    )
    imp.add_argument(
        "--delimiter", help="column separator (default: detected from the header: , ; tab |)"
    )
    imp.add_argument("--encoding", help="text encoding of the file (default UTF-8), e.g. latin-1")
    imp.add_argument(
        "--apply-corrections",
        action="store_true",
        help="replace journaled trades whose values differ from the file's (same trade_id); "
        "the previous values are recorded in the trade_corrections table",
    )
    imp.set_defaults(func=cmd_import_trades)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        # Imported here: the registry pulls in dagster, which most commands never need.
        from session_learning.resources.journal import JournalError
        from session_learning.resources.registry import RegistryError

        expected = UnknownModelError | ValueError | OSError | RegistryError | JournalError
        if not isinstance(exc, expected):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
