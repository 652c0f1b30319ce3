"""The commands on production models and their registry: ``models``, ``status``, ``rollback``,
``upgrade-registry`` and ``enable``."""

from __future__ import annotations

import argparse
import sys
import textwrap

import pandas as pd

from session_learning.domain.keys import ModelKey
from session_learning.settings import Settings


def _registry(settings: Settings):
    from session_learning.resources.registry import ModelRegistry

    return ModelRegistry(settings.models_dir)


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
    from session_learning.domain.gates import Judgement
    from session_learning.resources.journal import TradeJournal
    from session_learning.resources.outcomes import OutcomeStore
    from session_learning.sensors import LATE_TRADE_LOOKBACK, late_report

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
            print(_block(f"PRODUCTION MODEL UNUSABLE: {problem}"))
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
        _print_outcome(outcomes, key.slug, latest.get(key.slug))
    late = outcomes.late_trades(pd.Timestamp.now(tz="UTC"), LATE_TRADE_LOOKBACK)
    if not late.empty:
        print(f"late trades: {len(late)} in {late['session'].nunique()} session(s)")
        for session, rows in late.groupby("session", sort=True):
            print(_block(late_report(session, rows)))
    print(f"journal: {journal.count_trades()} trades, {len(journal.open_signals())} open signals")
    alerts = journal.alerts(limit=args.alerts)
    for alert in alerts.itertuples():
        print(f"  alert {alert.created_at} {alert.kind} {alert.subject}:")
        print(_block(alert.message))
    from session_learning.settings import settings_report

    print("\n".join(settings_report(settings)))
    if unusable:
        print(
            f"error: {unusable} production model(s) cannot be loaded (see above)", file=sys.stderr
        )
        return 1
    return 0


def _block(text: str) -> str:
    """``text`` indented under a model's line, whole, never cut: the cause and the fix are in it."""
    return textwrap.indent(text, " " * 12)


def _print_outcome(outcomes, slug: str, outcome) -> None:
    """The model's latest learning outcome and, when it decided nothing (untouched, training),
    the last time it was judged."""
    from session_learning.resources.outcomes import DECISIONS

    if outcome is None:
        print("            no learning outcome recorded yet")
        return
    shown = [outcome]
    if outcome.outcome in ("untouched", "training"):  # and the last time it was judged
        decided = next((o for o in outcomes.history(slug) if o.outcome in DECISIONS), None)
        shown += [decided] if decided is not None else []
    for label, o in zip(("latest", "last decision"), shown, strict=False):
        print(
            f"            {label}: {o.outcome.upper()} in {o.step} "
            f"(session {o.session}, run {o.run_id[:8]}, {o.recorded_at[:19]})"
        )
        print(_block(o.message))


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


def add_production_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``models``, ``status``, ``rollback``, ``upgrade-registry`` and ``enable``."""
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
