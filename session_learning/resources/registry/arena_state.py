"""The arena state a model's registry folder keeps (``arena.json``, ``arena/<session>.json``),
folded one session at a time with a compare-and-swap on the session it was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from session_learning.domain.keys import ModelKey
from session_learning.resources.registry.storage import (
    _ARENA_SCHEMA,
    ARENA_DIR,
    ARENA_FILE,
    ArenaChangedError,
    CorruptModelError,
    _check_session,
    _dumps,
    _iso,
    _read_json,
    _write_atomic,
)


class ArenaState:
    """Part of ``ModelRegistry``: reading and folding the arena state of a model."""

    # ---- the arena state -------------------------------------------------------------------

    def arena_governs(self, key: ModelKey) -> bool:
        """Whether ``key`` has an arena (a session was folded into its state): from then on,
        once a version has traded, only the arena's evidence promotes. A registry without arena
        state (the replay's arms that keep the gates-only rule) promotes on the gates alone."""
        return (self._model_dir(key) / ARENA_FILE).exists()

    def arena(self, key: ModelKey) -> dict[str, Any] | None:
        """The arena document of ``key`` (``{session, state, updated_at}``: ``session`` is the
        last session folded into ``state``), or None before the first session."""
        path = self._model_dir(key) / ARENA_FILE
        try:
            document = _read_json(path)
        except FileNotFoundError:
            return None
        if not isinstance(document, dict) or not isinstance(document.get("state"), dict):
            raise CorruptModelError(
                f"{path} is not an arena state; move it aside to start the arena afresh "
                "(every challenger's evidence restarts)"
            )
        return document

    def arena_session(self, key: ModelKey, session: str) -> dict[str, Any] | None:
        """What the arena recorded for ``session`` when it folded it, or None."""
        path = self._model_dir(key) / ARENA_DIR / f"{_check_session(session)}.json"
        try:
            return _read_json(path)
        except FileNotFoundError:
            return None

    def fold_arena_session(
        self,
        key: ModelKey,
        session: str,
        *,
        computed_from: str | None,
        state: Mapping[str, Any],
        record: Mapping[str, Any],
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Store the arena state after ``session``, computed from the state after
        ``computed_from`` (None: the empty arena), and what happened in it; return the document.

        Compare-and-swap under the model's lock: when the stored state is no longer the one
        after ``computed_from`` (another run folded a session meanwhile), or ``session`` was
        folded already, ``ArenaChangedError`` is raised and nothing is written, so no session
        is folded twice and none is lost. The session's record is written before the state
        (a crash between leaves a record the next fold of that session overwrites).
        """
        _check_session(session)
        if computed_from is not None:
            _check_session(computed_from)
        document = {
            "schema": _ARENA_SCHEMA,
            "model": key.slug,
            "session": session,
            "state": dict(state),
            "updated_at": _iso(now),
        }
        data = _dumps(document)
        record_data = _dumps({**record, "session": session, "computed_from": computed_from})
        with self._locked(key):
            current = self.arena(key)
            stored_session = None if current is None else current["session"]
            if stored_session != computed_from:
                raise ArenaChangedError(
                    f"{key}: the arena state is the one after session {stored_session or 'none'}"
                    f", not after {computed_from or 'none'} as session {session} was computed "
                    f"from; materialize {key.slug}/shadow_book and challenger_evidence for "
                    "the sessions in order. Nothing was written."
                )
            folder = self._model_dir(key) / ARENA_DIR
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / f"{session}.json", record_data)
            _write_atomic(self._model_dir(key) / ARENA_FILE, data)
        return document
