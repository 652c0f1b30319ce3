"""``session-learning import-trades``: a CSV of closed trades into the journal, with the data
contract as its help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from session_learning.settings import Settings


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


def add_import_trades_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``import-trades`` subcommand (its help ends with the data contract)."""
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
