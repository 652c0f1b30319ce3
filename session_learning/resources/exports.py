"""The session's people-facing files: the folder they go into and the winners/losers/all-trades
CSV exports written there (atomically; the domain only builds the frames)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from session_learning.domain.atomic import replace, write_temporary
from session_learning.domain.trades import export_frames, export_stamp


class TradeExportsResource(dg.ConfigurableResource):
    """The folder of per-session trade CSVs (``winners_``, ``losers_``, ``all_trades_``)."""

    directory: str = Field(description="Folder for the per-session trade CSV exports.")

    def path(self) -> Path:
        return Path(self.directory)

    def write_session(self, trades: pd.DataFrame, session_end: datetime) -> dict[str, Path]:
        """Write the session's CSVs into the folder (``write_session_exports``)."""
        return write_session_exports(trades, session_end, self.path())


def write_session_exports(
    trades: pd.DataFrame, session_end: datetime, directory: Path
) -> dict[str, Path]:
    """Write ``winners_``, ``losers_``, ``all_trades_`` (and ``quarantine_``) CSVs for a session.

    Every file is first written in full under a temporary name, and only when all of them are
    written are they renamed into place: a re-run replaces the files whole, a failed write (disk
    full) leaves the previous set as it was, and a crash never leaves a half-written file under
    a final name. A quarantine file from an earlier run is removed when the session has no
    quarantined rows any more.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = export_stamp(session_end)
    paths: dict[str, Path] = {}
    staged: list[tuple[Path, Path]] = []
    try:
        for name, frame in export_frames(trades).items():
            if name == "quarantine" and frame.empty:
                continue
            path = directory / f"{name}_{stamp}.csv"
            staged.append((_write_temporary_csv(frame, path), path))
            paths[name] = path
        for tmp, path in staged:
            replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)  # only a file that was not renamed is still there
    if "quarantine" not in paths:
        (directory / f"quarantine_{stamp}.csv").unlink(missing_ok=True)
    return paths


def _write_temporary_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in full (fsynced) to a new temporary file beside ``path`` and return it.

    On failure the temporary file is removed and an ``OSError`` names ``path``.
    """
    return write_temporary(
        path,
        lambda handle: frame.to_csv(handle, index=False, date_format="%Y-%m-%dT%H:%M:%S%z"),
        text=True,
        suffix=".tmp",
    )
