"""Deployments: the production pointer and its history, promotion (compare-and-swap on the
judgement's baseline), the arena's pause, rollback, and reading what is live.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from session_learning.domain.estimators import Estimator
from session_learning.domain.keys import ModelKey
from session_learning.resources.registry.history import _previous_version, _reconcile
from session_learning.resources.registry.storage import (
    _HISTORY_SCHEMA,
    _VERSION_RE,
    HISTORY_FILE,
    PRODUCTION_FILE,
    UPGRADE_COMMAND,
    CorruptModelError,
    LegacyRegistryError,
    NeverLiveError,
    NotJudgedError,
    ProductionChangedError,
    RegistryError,
    UnknownVersionError,
    _check_version,
    _dumps,
    _iso,
    _read_json,
    _remedy,
    _write_atomic,
    version_checksum,
)

logger = logging.getLogger(__name__)


class Deployments:
    """Part of ``ModelRegistry``: what is live, how it changes, and the history of it."""

    # ---- production pointer and history ----------------------------------------------------

    def _read_pointer(self, key: ModelKey) -> dict[str, Any] | None:
        path = self._model_dir(key) / PRODUCTION_FILE
        try:
            pointer = _read_json(path)
        except FileNotFoundError:
            return None
        except CorruptModelError as exc:
            problem = str(exc)
        else:
            version = pointer.get("version") if isinstance(pointer, dict) else None
            if isinstance(version, str) and _VERSION_RE.match(version):
                return pointer
            problem = f"{path} does not name a valid version"
        raise CorruptModelError(
            f"{problem}. The live model of {key} is unknown: the last entry of "
            f"{path.with_name(HISTORY_FILE)} names the version that was live; re-point "
            f"production with `session-learning rollback {key.symbol} {key.timeframe} --to "
            "VERSION` (ModelRegistry.rollback in Python) or promote(...)."
        )

    def _read_history(self, key: ModelKey) -> list[dict[str, Any]]:
        path = self._model_dir(key) / HISTORY_FILE
        try:
            document = _read_json(path)
        except FileNotFoundError:
            return []
        entries = document.get("entries") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("version"), str) for e in entries
        ):
            raise CorruptModelError(
                f"{path} is not a valid deployment history. Restore it from a backup, or move "
                "it aside: the next promote starts a new history from the live version."
            )
        return entries

    def _writer_view(self, key: ModelKey, now_iso: str) -> tuple[str | None, bool, list[dict]]:
        """(live version, pointer readable, reconciled history); call under the lock."""
        try:
            pointer = self._read_pointer(key)
        except CorruptModelError as exc:
            # Fall back on history so that promote/rollback can rewrite a broken pointer.
            entries = self._read_history(key)
            live = (
                entries[-1]["version"] if entries and entries[-1].get("live_to") is None else None
            )
            logger.warning("%s; assuming %s was live and rewriting the pointer", exc, live)
            return live, False, entries
        live = pointer["version"] if pointer else None
        entries, _ = _reconcile(self._read_history(key), live, now_iso, repair=True)
        return live, True, entries

    def _commit(
        self,
        key: ModelKey,
        entries: list[dict[str, Any]],
        entry: dict[str, Any],
        card: dict[str, Any],
    ) -> None:
        """Append ``entry`` to history, then switch the pointer (this order: see the package doc)."""
        if entries and entries[-1].get("live_to") is None:
            entries[-1]["live_to"] = entry["live_from"]
        entries.append(entry)
        self._write_history(key, entries)
        self._write_pointer(key, entry, card)

    def _write_history(self, key: ModelKey, entries: list[dict[str, Any]]) -> None:
        document = {"schema": _HISTORY_SCHEMA, "model": key.slug, "entries": entries}
        _write_atomic(self._model_dir(key) / HISTORY_FILE, _dumps(document))

    def _write_pointer(self, key: ModelKey, entry: dict[str, Any], card: dict[str, Any]) -> None:
        pointer = {
            "version": entry["version"],
            "model_sha256": card["model_sha256"],
            "checksum": entry["checksum"],
            "since": entry["live_from"],
            "reason": entry["reason"],
            "session": entry["session"],
        }
        if entry.get("kind") == "pause":
            # Trading reads this: a paused version is live (for rollback and history) but
            # emits no signal until a promotion or a rollback replaces the pointer.
            pointer["paused"] = {
                "since": entry["live_from"],
                "reason": entry["reason"],
                "session": entry["session"],
            }
        _write_atomic(self._model_dir(key) / PRODUCTION_FILE, _dumps(pointer))

    def _paused_record(self, key: ModelKey) -> dict[str, Any] | None:
        pointer = self._read_pointer(key)
        return None if pointer is None else pointer.get("paused")

    # ---- promotion and rollback ------------------------------------------------------------

    def promote(
        self,
        key: ModelKey,
        version: str,
        *,
        reason: str,
        session: str,
        now: datetime | None = None,
    ) -> bool:
        """Make ``version`` the live model of ``key``; return whether a deployment happened.

        The version must load (every checksum verified) or ``CorruptModelError`` is raised,
        and its judgement record must say it passed every declared gate, or
        ``NotJudgedError`` names the missing or failed gates. The judgement's
        ``baseline_version`` must still be live (compare-and-swap): when production changed
        since the candidate was judged, ``ProductionChangedError`` is raised, because the
        candidate never beat the model it would replace. Nothing changes on any error.

        Returns False without a new history entry when the version is already live, or when
        this same ``session`` already deployed it (a re-run or backfill of a partition must not
        put an old model back after production has moved on).

        There is no way around the judgement here. The only other way a version becomes live
        is ``rollback``: to a version that was live before, or forced with a reason that
        history records.
        """
        now_iso = _iso(now)
        self.load(key, version)  # CatBoost must be able to read it, before anything is locked
        with self._locked(key):
            card, _, judgement = self._verify(key, version)
            refusal = self._refusal(key, version, card, judgement, False)
            if refusal is not None:
                raise NotJudgedError(refusal + " Nothing was changed.")
            live, pointer_ok, entries = self._writer_view(key, now_iso)
            paused = pointer_ok and self._paused_record(key) is not None
            # A paused version that the arena promotes again trades again: a new entry.
            already = (live == version and not paused) or any(
                e["version"] == version and e.get("session") == session for e in entries
            )
            if already:
                self._write_repairs(key, entries, pointer_ok, live)
                return False
            if judgement["baseline_version"] != live:
                raise ProductionChangedError(
                    f"{key}: {version} was judged against production "
                    f"{judgement['baseline_version'] or 'none'} (at {judgement['judged_at']}), "
                    f"but {live or 'none'} is live now; re-run {key.slug}/candidate_model for "
                    f"session {judgement['partition']} to judge it against the model it would "
                    "replace. Nothing was changed."
                )
            governed = bool(entries) and self.arena_governs(key)
            refusal = self._refusal(key, version, card, judgement, governed)
            if refusal is not None:
                raise NotJudgedError(refusal + " Nothing was changed.")
            entry = {
                "version": version,
                "live_from": now_iso,
                "live_to": None,
                "reason": reason,
                "session": session,
                "kind": "promote",
                "checksum": version_checksum(card, judgement),
                "judged_at": judgement["judged_at"],
            }
            self._commit(key, entries, entry, card)
        logger.info("promoted %s version %s (was %s): %s", key, version, live, reason)
        return True

    # ---- pausing (the arena's demotion) ----------------------------------------------------

    def pause(
        self,
        key: ModelKey,
        *,
        reason: str,
        session: str,
        evidence: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Stop the live version of ``key`` from trading: FLAT is the champion. Returns whether
        it was paused now (False: nothing live, or already paused).

        Recorded in the history like a promotion (an entry of kind ``pause`` for the same
        version, with the reason, the session and the change detector's ``evidence``), and the
        production pointer says ``paused``: the live signal path emits nothing for a paused
        model. A promotion (the arena's forward evidence) or a rollback ends the pause.
        """
        note = str(reason).strip()
        if not note:
            raise RegistryError("a pause needs a reason; it is recorded in the history")
        if evidence is not None:
            _dumps(dict(evidence))
        now_iso = _iso(now)
        with self._locked(key):
            live, pointer_ok, entries = self._writer_view(key, now_iso)
            if live is None or (pointer_ok and self._paused_record(key) is not None):
                self._write_repairs(key, entries, pointer_ok, live)
                return False
            card, _, judgement = self._verify(key, live)
            entry = {
                "version": live,
                "live_from": now_iso,
                "live_to": None,
                "reason": note,
                "session": session,
                "kind": "pause",
                "checksum": version_checksum(card, judgement),
                "evidence": None if evidence is None else dict(evidence),
            }
            self._commit(key, entries, entry, card)
        logger.warning("paused %s version %s: %s", key, live, note)
        return True

    def paused(self, key: ModelKey) -> dict[str, Any] | None:
        """``{since, reason, session}`` while the live version is paused, else None."""
        return self._paused_record(key)

    def _write_repairs(
        self, key: ModelKey, entries: list[dict[str, Any]], pointer_ok: bool, live: str | None
    ) -> None:
        """Persist a reconciled history / rewrite a broken pointer when nothing else changes."""
        if entries != self._read_history(key):
            self._write_history(key, entries)
        if not pointer_ok and live is not None and entries:
            card, _, judgement = self._verify(key, live)
            entry = {"checksum": version_checksum(card, judgement), **entries[-1]}
            self._write_pointer(key, entry, card)

    def rollback(
        self,
        key: ModelKey,
        to_version: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Put a version that was live before back in production and return it.

        Default target: the most recent version live before the current one, skipping any
        version that a rollback already moved away from. An explicit ``to_version`` must be
        one the history shows live before, with the checksum it had then; anything else
        raises ``NeverLiveError`` unless ``force=True`` with a ``reason``, and history records
        that rollback as forced, with the reason. The target must load (checksum verified).
        Raises ``RegistryError`` when nothing is live, there is no earlier version, or
        ``to_version`` is unknown. Rolling back to the live version changes nothing.
        """
        now_iso = _iso(now)
        note = str(reason).strip() if reason is not None else ""
        if force and not note:
            raise RegistryError(
                "a forced rollback needs a reason (--reason); it is recorded in history"
            )
        with self._locked(key):
            live, pointer_ok, entries = self._writer_view(key, now_iso)
            if live is None:
                raise RegistryError(f"{key} has no production model, so there is nothing to undo")
            if to_version is None:
                target = _previous_version(entries, live)
                if target is None:
                    raise RegistryError(
                        f"{key}: no earlier deployment to roll back to from {live}; name one: "
                        f"`session-learning rollback {key.symbol} {key.timeframe} --to VERSION` "
                        f"(to_version= in Python; known versions: "
                        f"{', '.join(self.versions(key)[-5:])})"
                    )
            else:
                target = _check_version(to_version)
            if target == live and not (pointer_ok and self._paused_record(key)):
                self._write_repairs(key, entries, pointer_ok, live)
                return live
            _, card = self.load(key, target)
            card, _, judgement = self._verify(key, target)
            checksum = version_checksum(card, judgement)
            problem = self._rollback_problem(key, entries, live, target, checksum)
            if problem is not None and not force:
                raise NeverLiveError(
                    f'{problem}, or force it with --force --reason "..." (recorded in the '
                    "history as a forced rollback). Nothing was changed."
                )
            forced = problem is not None
            entry = {
                "version": target,
                "live_from": now_iso,
                "live_to": None,
                "reason": f"rollback from {live}"
                + (f" (forced: {note})" if forced else f": {note}" if note else ""),
                "session": None,
                "kind": "rollback",
                "checksum": checksum,
                "forced": forced,
            }
            self._commit(key, entries, entry, card)
        logger.warning("rolled %s back from %s to %s", key, live, target)
        return target

    @staticmethod
    def _rollback_problem(
        key: ModelKey, entries: list[dict[str, Any]], live: str, target: str, checksum: str
    ) -> str | None:
        """Why history does not show ``target`` live before with ``checksum``, or None."""
        deployments = [e for e in entries if e["version"] == target]
        recorded = deployments[-1].get("checksum") if deployments else None
        problem = None
        if not deployments:
            live_before = sorted({e["version"] for e in entries} - {live})
            problem = (
                f"{key}: {target} was never live (the deployment history has no entry for "
                "it), so nothing shows it is fit to trade. Roll back to a version that was "
                f"live before ({', '.join(live_before[-5:]) or 'none'})"
            )
        elif recorded is not None and recorded != checksum:
            problem = (
                f"{key}: {target} changed since it was live (checksum {checksum}, "
                f"{recorded} when it went live). Roll back to another version"
            )
        return problem

    def production_version(self, key: ModelKey) -> str | None:
        """The live version id of ``key``, or None if nothing was ever promoted."""
        pointer = self._read_pointer(key)
        return pointer["version"] if pointer else None

    def production(self, key: ModelKey) -> tuple[Estimator, dict[str, Any]] | None:
        """The live model and its card (fully verified, and unchanged since it went live), or
        None if nothing was promoted."""
        pointer = self._read_pointer(key)
        if pointer is None:
            return None
        version = pointer["version"]
        if "checksum" not in pointer:
            raise LegacyRegistryError(
                f"{self._model_dir(key) / PRODUCTION_FILE} was written by an earlier registry "
                "format (no checksum of the live version); run "
                f"`{UPGRADE_COMMAND}` once, then retry"
            )
        try:
            model, card = self.load(key, version)
            checksum = self.checksum(key, version)
        except UnknownVersionError as exc:
            raise CorruptModelError(
                f"production of {key} points to {version}, which is not stored. "
                + _remedy(key, version)
            ) from exc
        if pointer["checksum"] != checksum:
            raise CorruptModelError(
                f"{self._version_dir(key, version)} changed after it was promoted (checksum "
                f"{checksum}, promoted {pointer['checksum']}): its model, card or judgement is "
                "not what went live. " + _remedy(key, version)
            )
        return model, card

    def history(self, key: ModelKey) -> list[dict[str, Any]]:
        """Deployments of ``key``, oldest first: version, live_from, live_to, reason, session.

        ``kind`` tells promote, rollback and reconcile entries apart. An entry left by a
        promotion that crashed before switching the pointer is not shown.
        """
        if not self._model_dir(key).is_dir():
            return []
        with self._locked(key, shared=True):
            try:
                # Pointer first: a promotion finishing between the reads then looks like the
                # crash case and is hidden, instead of looking like a broken history.
                pointer = self._read_pointer(key)
            except CorruptModelError:
                return self._read_history(key)
            live = pointer["version"] if pointer else None
            entries, _ = _reconcile(self._read_history(key), live, _iso(None), repair=False)
        return entries

    def was_live(self, key: ModelKey, version: str) -> bool:
        """Whether the deployment history shows ``version`` live at some time (now included)."""
        return any(e["version"] == version for e in self.history(key))
