"""The deployment history reconciled with the production pointer: pure functions on the list
of ``history.json`` entries (see the package docstring for the deployment invariant).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def _is_consistent(entries: list[dict[str, Any]], live: str | None) -> bool:
    if live is None:
        return not entries or entries[-1].get("live_to") is not None
    return bool(entries) and entries[-1]["version"] == live and entries[-1].get("live_to") is None


def _reconcile(
    entries: list[dict[str, Any]], live: str | None, now_iso: str, *, repair: bool
) -> tuple[list[dict[str, Any]], bool]:
    """Bring ``entries`` in line with the live pointer; returns (entries, changed).

    The crash case (one trailing open entry whose version never went live) is always undone.
    With ``repair`` (writers only), any other mismatch - files edited or lost by hand - is
    resolved in favour of the pointer by closing the open entry and, if something is live,
    appending a ``reconcile`` entry for it, so that nothing already recorded is discarded.
    """
    entries = [dict(entry) for entry in entries]
    if _is_consistent(entries, live):
        return entries, False
    last = entries[-1] if entries else None
    if last is not None and last.get("live_to") is None:
        previous = entries[-2]["version"] if len(entries) >= 2 else None
        if previous == live:
            entries.pop()
            if entries:
                entries[-1]["live_to"] = None
            return entries, True
    if not repair:
        return entries, False
    if last is not None and last.get("live_to") is None:
        last["live_to"] = now_iso
    if live is not None:
        entries.append(
            {
                "version": live,
                "live_from": now_iso,
                "live_to": None,
                "reason": "reconciled: production.json pointed here without a matching "
                "history entry",
                "session": None,
                "kind": "reconcile",
            }
        )
    logger.warning("history.json did not match production.json (%s); repaired", live)
    return entries, True


def _previous_version(entries: list[dict[str, Any]], live: str) -> str | None:
    """The most recent earlier version that is not live and was not left through a rollback."""
    seen: set[str] = set()
    for i in range(len(entries) - 2, -1, -1):
        version = entries[i]["version"]
        if version in seen:
            continue
        seen.add(version)  # walking backwards, this is the version's latest deployment
        # A version whose latest deployment a rollback ended was judged bad: never the default.
        if version != live and entries[i + 1].get("kind") != "rollback":
            return version
    return None
