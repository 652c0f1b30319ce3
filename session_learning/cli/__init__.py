"""The ``session-learning`` command: demo, models, status, rollback, upgrade-registry, enable,
check-data, replay, import-trades.

``build_parser`` assembles the subcommands each module registers: ``demo``, ``production``
(models, status, rollback, upgrade-registry, enable), ``check_data``, ``replay.cli`` (replay) and
``trades`` (import-trades); ``main`` runs one and turns an expected error into one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from session_learning.cli.check_data import add_check_data_parser
from session_learning.cli.demo import add_demo_parser
from session_learning.cli.production import add_production_parsers
from session_learning.cli.trades import add_import_trades_parser
from session_learning.domain.keys import UnknownModelError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-learning",
        description="Retrain trading models after every session, deploy only behind gates. "
        "Settings come from SESSION_LEARNING_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_demo_parser(sub)
    add_production_parsers(sub)
    add_check_data_parser(sub)
    from session_learning.replay.cli import add_replay_parser

    add_replay_parser(sub)
    add_import_trades_parser(sub)
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
