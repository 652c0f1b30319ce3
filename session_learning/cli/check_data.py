"""``session-learning check-data``: before any training, whether each configured model can learn
from the market data it has."""

from __future__ import annotations

import argparse

import pandas as pd

from session_learning.settings import Settings


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


def add_check_data_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``check-data`` subcommand."""
    check = sub.add_parser("check-data", help=cmd_check_data.__doc__)
    check.add_argument(
        "--at",
        default=None,
        help="judge learning at the last session end at or before this UTC time "
        "(default: now, i.e. the session that just ended)",
    )
    check.set_defaults(func=cmd_check_data)
