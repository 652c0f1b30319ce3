"""Versioned, checksummed store of trained models with an atomic production pointer.

Layout, one folder per model named by ``ModelKey.slug``::

    <root>/EURUSD_30T/
        .lock                        per-model lock file (fcntl.flock); never deleted
        production.json              the live pointer: which version trading uses
        history.json                 deployment history, oldest first
        health.json                  degraded flag (absent means "ok")
        versions/
            20240102T0800-0123456789/
                model.cbm            CatBoost native format; never pickle, so loading runs no code
                card.json            model card: caller fields + version, checksum, size, ...
            .tmp-*                   a save in progress or killed; invisible to readers

Guarantees:

* A version folder appears in one ``os.rename`` after its files are fsynced, so a reader never
  sees half a version. Its ``model.cbm`` never changes afterwards; ``card.json`` may gain fields
  through ``update_card`` but its checksum fields are fixed.
* Every JSON file is replaced by write-temp + fsync + ``os.replace`` + fsync of the folder.
* Nothing is handed to CatBoost before the size and sha256 of ``model.cbm`` match the card.
* Writers of a model (save, promote, rollback, card and health updates) hold an exclusive
  ``flock`` on its ``.lock``, so concurrent processes never lose an update. ``flock`` needs a
  local POSIX filesystem; network filesystems may not honour it.

Deployment invariant: ``production.json`` is authoritative for what is live; ``history.json``
is written *before* it. When both are consistent, only the last history entry is open
(``live_to`` is None), its version is the pointer's, and every entry's ``live_to`` equals the
next entry's ``live_from``. A crash between the two writes leaves one trailing open entry for
a version the pointer never switched to; readers hide it and the next promote or rollback
removes it (re-opening the previous entry), so the files converge.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from catboost import CatBoost, CatBoostClassifier, CatBoostError
from pydantic import Field

from session_learning.domain.models import ModelKey, UnknownModelError

logger = logging.getLogger(__name__)

MODEL_FILE = "model.cbm"
CARD_FILE = "card.json"
PRODUCTION_FILE = "production.json"
HISTORY_FILE = "history.json"
HEALTH_FILE = "health.json"
LOCK_FILE = ".lock"
VERSIONS_DIR = "versions"
# Anything starting with this is an unfinished write: readers skip it, the next save deletes it.
TMP_PREFIX = ".tmp-"
# A broken version found while re-saving the same version is moved aside, not deleted.
CORRUPT_PREFIX = ".corrupt-"

HEALTH_STATUSES = ("ok", "degraded", "enabled")
# Card fields the registry sets; callers cannot supply or change them.
RESERVED_CARD_FIELDS = (
    "version",
    "model_sha256",
    "model_bytes",
    "created_at",
    "symbol",
    "timeframe",
)
# CatBoost writes a random GUID and the training wall-clock time into every model; they are
# dropped from the stored copy so that identical training yields identical bytes (and version).
_VOLATILE_METADATA = ("model_guid", "train_finish_time")

_VERSION_RE = re.compile(r"^\d{8}T\d{4}-[0-9a-f]{10}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HISTORY_SCHEMA = 1


class RegistryError(Exception):
    """A registry operation cannot be carried out (unknown version, nothing to roll back, ...)."""


class UnknownVersionError(RegistryError):
    """The requested version does not exist for that model (or is not a version id)."""


class ProductionChangedError(RegistryError):
    """Production changed between judging a candidate and promoting it."""


class CorruptModelError(RegistryError):
    """A stored file is missing, unreadable or fails its checksum; it must not be used."""


# --------------------------------------------------------------------------------------------
# Small file-system helpers
# --------------------------------------------------------------------------------------------


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time is ambiguous and would give the same session different version ids.
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def _iso(now: datetime | None) -> str:
    return _utc(now if now is not None else datetime.now(UTC), "now").isoformat()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    raise TypeError(
        f"value of type {type(obj).__name__} cannot be stored as JSON; "
        "convert it to a string, number, list or dict"
    )


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    # Makes a rename or a new directory entry survive a power loss, not only the file data.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new bytes."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates 0600; other users (the trading service) must be able to read.
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    """Parse ``path``; ``FileNotFoundError`` passes through, any other problem is corruption."""
    raw = path.read_bytes()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptModelError(f"{path} is not valid JSON ({exc})") from exc


def _check_version(version: object) -> str:
    # Version ids become path components: only the exact generated shape is accepted, so a
    # version string can never climb out of the model folder.
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise UnknownVersionError(
            f"{version!r} is not a version id (expected YYYYMMDDTHHMM-<10 hex digits>)"
        )
    return version


def _remedy(key: ModelKey, version: str) -> str:
    return (
        f"Do not deploy {key} version {version}: if it is live, roll production back to a "
        "known-good version (ModelRegistry.rollback); retrain the session to write a fresh version."
    )


def _canonical_copy(model: CatBoost) -> CatBoost:
    if not isinstance(model, CatBoost):
        raise TypeError(f"expected a CatBoost model, got {type(model).__name__}")
    if not model.is_fitted():
        raise RegistryError("the model is not trained; fit it before saving it to the registry")
    clone = model.copy()  # the caller's model keeps its metadata
    metadata = clone.get_metadata()
    for name in _VOLATILE_METADATA:
        if name in metadata:
            del metadata[name]
    return clone


# --------------------------------------------------------------------------------------------
# History reconciliation (pure functions on the list of entries)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class ModelRegistry:
    """Versioned model store on a local directory; safe for several processes at once.

    Every path is derived from a validated ``ModelKey`` and a validated version id, so nothing
    can be read or written outside ``root``.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ---- paths and locking -----------------------------------------------------------------

    def _model_dir(self, key: ModelKey) -> Path:
        if not isinstance(key, ModelKey):
            raise TypeError(f"expected a ModelKey, got {type(key).__name__}")
        # Re-validate: a frozen dataclass can still be altered through object.__setattr__.
        ModelKey(key.symbol, key.timeframe)
        return self.root / key.slug

    def _version_dir(self, key: ModelKey, version: str) -> Path:
        return self._model_dir(key) / VERSIONS_DIR / _check_version(version)

    @contextlib.contextmanager
    def _locked(self, key: ModelKey, *, shared: bool = False) -> Iterator[None]:
        model_dir = self._model_dir(key)
        lock_path = model_dir / LOCK_FILE
        if shared:
            try:
                fd = os.open(lock_path, os.O_RDONLY)
            except FileNotFoundError:
                fd = None
        else:
            model_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if fd is None:
            # No writer has ever touched this model, so there is nothing to wait for.
            yield
            return
        try:
            # Blocks until the holder finishes; released by close, or by the kernel if the
            # holder dies, so a killed process never leaves the model locked.
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- saving ------------------------------------------------------------------------------

    def save_candidate(
        self,
        key: ModelKey,
        model: CatBoostClassifier,
        card: Mapping[str, Any],
        session_end: datetime,
    ) -> str:
        """Store a trained model as a new candidate version and return its version id.

        ``card`` is any JSON-able description (data window, features, params, plan, metrics,
        parent version); the registry adds ``version``, ``model_sha256``, ``model_bytes``,
        ``created_at``, ``symbol`` and ``timeframe``. The version id is
        ``<session_end:%Y%m%dT%H%M>-<first 10 hex of the model's sha256>``, so saving the same
        model for the same session again changes nothing and returns the same id (the card
        of the first save is kept; use ``update_card`` to add fields). ``session_end`` must
        be timezone-aware. Nothing is promoted.
        """
        if not isinstance(card, Mapping):
            raise TypeError(f"card must be a mapping, got {type(card).__name__}")
        fixed = {"symbol": key.symbol, "timeframe": key.timeframe}
        clash = sorted(
            name for name in RESERVED_CARD_FIELDS if name in card and card[name] != fixed.get(name)
        )
        if clash:
            raise RegistryError(f"card fields {clash} are set by the registry; leave them out")
        _dumps(dict(card))  # a value that is not JSON-able fails here, before any disk write
        stamp = f"{_utc(session_end, 'session_end'):%Y%m%dT%H%M}"
        versions_dir = self._model_dir(key) / VERSIONS_DIR

        with self._locked(key):
            versions_dir.mkdir(parents=True, exist_ok=True)
            # Under the lock no other save is running, so every temp entry is a leftover.
            self._remove_leftovers(versions_dir)
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=versions_dir))
            try:
                model_path = tmp / MODEL_FILE
                _canonical_copy(model).save_model(str(model_path), format="cbm")
                data = model_path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                version = f"{stamp}-{sha[:10]}"
                final = versions_dir / version
                if final.exists() and self._existing_is_intact(key, version, sha):
                    return version
                full_card = {
                    **card,
                    "version": version,
                    "symbol": key.symbol,
                    "timeframe": key.timeframe,
                    "model_sha256": sha,
                    "model_bytes": len(data),
                    "created_at": _iso(None),
                }
                (tmp / CARD_FILE).write_bytes(_dumps(full_card))
                _fsync_file(model_path)
                _fsync_file(tmp / CARD_FILE)
                os.chmod(tmp, 0o755)  # mkdtemp creates 0700; readers may be another user
                _fsync_dir(tmp)
                os.rename(tmp, final)
                _fsync_dir(versions_dir)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved %s version %s (%d bytes)", key, version, len(data))
        return version

    def _existing_is_intact(self, key: ModelKey, version: str, sha: str) -> bool:
        """True if ``version`` is already stored intact; a broken copy is moved aside."""
        try:
            card, _ = self._verify(key, version)
        except CorruptModelError as exc:
            final = self._version_dir(key, version)
            aside = final.with_name(f"{CORRUPT_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
            os.rename(final, aside)
            logger.warning("moved corrupt %s aside to %s before re-saving: %s", final, aside, exc)
            return False
        if card["model_sha256"] != sha:
            raise RegistryError(
                f"{key} version {version} already exists with a different model "
                f"(sha256 {card['model_sha256']} vs {sha}); refusing to overwrite it"
            )
        return True

    @staticmethod
    def _remove_leftovers(versions_dir: Path) -> None:
        for folder in (versions_dir, versions_dir.parent):
            for entry in os.scandir(folder):
                if not entry.name.startswith(TMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                logger.warning("removed leftover of an interrupted write: %s", entry.path)

    def update_card(self, key: ModelKey, version: str, /, **fields: Any) -> dict[str, Any]:
        """Add or change card fields (e.g. validation metrics) and return the new card.

        The fields the registry sets (version, checksum, size, creation time, symbol,
        timeframe) cannot be changed. The model is verified first, so a corrupt version is
        never annotated; the card is rewritten atomically.
        """
        fixed = sorted(set(fields) & set(RESERVED_CARD_FIELDS))
        if fixed:
            raise RegistryError(f"card fields {fixed} are fixed when a version is saved")
        _dumps(fields)
        with self._locked(key):
            card, _ = self._verify(key, version)
            card.update(fields)
            _write_atomic(self._version_dir(key, version) / CARD_FILE, _dumps(card))
        return card

    # ---- reading versions ------------------------------------------------------------------

    def versions(self, key: ModelKey) -> list[str]:
        """Stored version ids of ``key``, oldest session first (not checked for corruption)."""
        versions_dir = self._model_dir(key) / VERSIONS_DIR
        if not versions_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(versions_dir)
            if _VERSION_RE.match(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def card(self, key: ModelKey, version: str) -> dict[str, Any]:
        """The model card of a version. Checks the card only; ``load`` also checks the model."""
        version_dir = self._version_dir(key, version)
        self._require_version(key, version, version_dir)
        return self._read_card(key, version, version_dir)

    def load(self, key: ModelKey, version: str) -> tuple[CatBoostClassifier, dict[str, Any]]:
        """Load a version after checking its card and the size and sha256 of its model file.

        Raises ``UnknownVersionError`` if the version does not exist and ``CorruptModelError``
        if any of its files is missing, unreadable or does not match the card.
        """
        card, data = self._verify(key, version)
        model = CatBoostClassifier()
        try:
            # Load the very bytes that were checksummed, so the file cannot change in between.
            model.load_model(blob=data, format="cbm")
        except CatBoostError as exc:
            path = self._version_dir(key, version) / MODEL_FILE
            raise CorruptModelError(
                f"{path} matches its checksum but CatBoost cannot read it ({exc}). "
                + _remedy(key, version)
            ) from exc
        return model, card

    def _require_version(self, key: ModelKey, version: str, version_dir: Path) -> None:
        if not version_dir.is_dir():
            known = self.versions(key)
            raise UnknownVersionError(
                f"{key} has no version {version!r} in {version_dir.parent}; "
                f"known versions: {', '.join(known[-5:]) or 'none'}"
            )

    def _read_card(self, key: ModelKey, version: str, version_dir: Path) -> dict[str, Any]:
        path = version_dir / CARD_FILE
        try:
            card = _read_json(path)
        except FileNotFoundError:
            raise CorruptModelError(f"{path} is missing. " + _remedy(key, version)) from None
        except CorruptModelError as exc:
            raise CorruptModelError(f"{exc}. " + _remedy(key, version)) from exc
        problem = None
        if not isinstance(card, dict):
            problem = "is not a JSON object"
        elif card.get("version") != version:
            problem = f"names version {card.get('version')!r}"
        elif (card.get("symbol"), card.get("timeframe")) != (key.symbol, key.timeframe):
            problem = f"belongs to {card.get('symbol')!r} {card.get('timeframe')!r}"
        elif not isinstance(card.get("model_sha256"), str) or not _SHA256_RE.match(
            card["model_sha256"]
        ):
            problem = "has no valid model_sha256"
        elif (
            not isinstance(card.get("model_bytes"), int)
            or isinstance(card["model_bytes"], bool)
            or card["model_bytes"] < 0
        ):
            problem = "has no valid model_bytes"
        if problem:
            raise CorruptModelError(f"{path} {problem}. " + _remedy(key, version))
        return card

    def _verify(self, key: ModelKey, version: str) -> tuple[dict[str, Any], bytes]:
        version_dir = self._version_dir(key, version)
        self._require_version(key, version, version_dir)
        card = self._read_card(key, version, version_dir)
        path = version_dir / MODEL_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptModelError(f"{path} is missing. " + _remedy(key, version)) from None
        if len(data) != card["model_bytes"]:
            raise CorruptModelError(
                f"{path} has {len(data)} bytes but its card records {card['model_bytes']} "
                "(truncated or overwritten). " + _remedy(key, version)
            )
        sha = hashlib.sha256(data).hexdigest()
        if sha != card["model_sha256"]:
            raise CorruptModelError(
                f"{path} fails its checksum (sha256 {sha}, card says {card['model_sha256']}). "
                + _remedy(key, version)
            )
        return card, data

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
            "production with ModelRegistry.rollback(key, to_version=...) or promote(...)."
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
        """Append ``entry`` to history, then switch the pointer (this order: see module doc)."""
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
            "since": entry["live_from"],
            "reason": entry["reason"],
            "session": entry["session"],
        }
        _write_atomic(self._model_dir(key) / PRODUCTION_FILE, _dumps(pointer))

    def promote(
        self,
        key: ModelKey,
        version: str,
        *,
        reason: str,
        session: str,
        now: datetime | None = None,
        expected_live: str | None | object = ...,
    ) -> bool:
        """Make ``version`` the live model of ``key``; return whether a deployment happened.

        The version must load (checksum verified) or ``CorruptModelError`` is raised and no
        file changes. Returns False without a new history entry when the version is already
        live, or when this same ``session`` already deployed it (a re-run or backfill of a
        partition must not put an old model back after production has moved on).

        ``expected_live`` is the version the candidate was judged against (None: no production
        model). When production changed since then, ``ProductionChangedError`` is raised and
        nothing changes: the candidate never beat the model it would replace.
        """
        now_iso = _iso(now)
        _, card = self.load(key, version)
        with self._locked(key):
            live, pointer_ok, entries = self._writer_view(key, now_iso)
            already = live == version or any(
                e["version"] == version and e.get("session") == session for e in entries
            )
            if already:
                self._write_repairs(key, entries, pointer_ok, live)
                return False
            if expected_live is not ... and live != expected_live:
                raise ProductionChangedError(
                    f"{key}: {version} was judged against production {expected_live or 'none'}, "
                    f"but {live or 'none'} is live now; re-run the session to judge it against "
                    "the model it would replace. Nothing was changed."
                )
            entry = {
                "version": version,
                "live_from": now_iso,
                "live_to": None,
                "reason": reason,
                "session": session,
                "kind": "promote",
            }
            self._commit(key, entries, entry, card)
        logger.info("promoted %s version %s (was %s): %s", key, version, live, reason)
        return True

    def _write_repairs(
        self, key: ModelKey, entries: list[dict[str, Any]], pointer_ok: bool, live: str | None
    ) -> None:
        """Persist a reconciled history / rewrite a broken pointer when nothing else changes."""
        if entries != self._read_history(key):
            self._write_history(key, entries)
        if not pointer_ok and live is not None and entries:
            _, card = self.load(key, live)
            self._write_pointer(key, entries[-1], card)

    def rollback(
        self, key: ModelKey, to_version: str | None = None, *, now: datetime | None = None
    ) -> str:
        """Put an earlier version back in production and return it.

        Default target: the most recent version live before the current one, skipping any
        version that a rollback already moved away from. The target must load (checksum
        verified). Raises ``RegistryError`` when nothing is live, there is no earlier
        version, or ``to_version`` is unknown. Rolling back to the live version changes nothing.
        """
        now_iso = _iso(now)
        with self._locked(key):
            live, pointer_ok, entries = self._writer_view(key, now_iso)
            if live is None:
                raise RegistryError(f"{key} has no production model, so there is nothing to undo")
            if to_version is None:
                target = _previous_version(entries, live)
                if target is None:
                    raise RegistryError(
                        f"{key}: no earlier deployment to roll back to from {live}; pass "
                        f"to_version= (known versions: {', '.join(self.versions(key)[-5:])})"
                    )
            else:
                target = _check_version(to_version)
            if target == live:
                self._write_repairs(key, entries, pointer_ok, live)
                return live
            _, card = self.load(key, target)
            entry = {
                "version": target,
                "live_from": now_iso,
                "live_to": None,
                "reason": f"rollback from {live}",
                "session": None,
                "kind": "rollback",
            }
            self._commit(key, entries, entry, card)
        logger.warning("rolled %s back from %s to %s", key, live, target)
        return target

    def production_version(self, key: ModelKey) -> str | None:
        """The live version id of ``key``, or None if nothing was ever promoted."""
        pointer = self._read_pointer(key)
        return pointer["version"] if pointer else None

    def production(self, key: ModelKey) -> tuple[CatBoostClassifier, dict[str, Any]] | None:
        """The live model and its card (fully verified), or None if nothing was promoted."""
        pointer = self._read_pointer(key)
        if pointer is None:
            return None
        version = pointer["version"]
        try:
            model, card = self.load(key, version)
        except UnknownVersionError as exc:
            raise CorruptModelError(
                f"production of {key} points to {version}, which is not stored. "
                + _remedy(key, version)
            ) from exc
        if pointer.get("model_sha256", card["model_sha256"]) != card["model_sha256"]:
            raise CorruptModelError(
                f"{self._version_dir(key, version)} was replaced after it was promoted "
                f"(sha256 {card['model_sha256']}, promoted {pointer['model_sha256']}). "
                + _remedy(key, version)
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

    def models(self) -> list[ModelKey]:
        """Every model with at least one stored version, sorted."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                key = ModelKey.parse(entry.name)
            except UnknownModelError:
                continue
            if key.slug == entry.name and self.versions(key):
                found.append(key)
        return sorted(found)

    # ---- health flag -------------------------------------------------------------------------

    def set_health(
        self,
        key: ModelKey,
        status: str,
        reason: str,
        *,
        version: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Flag ``key`` "ok", "degraded", or "enabled" (an operator's override of a degraded
        verdict for production ``version``), with a reason; return the stored record."""
        if status not in HEALTH_STATUSES:
            raise ValueError(f"health status must be one of {HEALTH_STATUSES}, got {status!r}")
        record = {
            "status": status,
            "reason": str(reason),
            "version": version,
            "updated_at": _iso(now),
        }
        with self._locked(key):
            _write_atomic(self._model_dir(key) / HEALTH_FILE, _dumps(record))
        return record

    def health(self, key: ModelKey) -> dict[str, Any]:
        """The health record of ``key``: status, reason, updated_at; "ok" if never set."""
        path = self._model_dir(key) / HEALTH_FILE
        try:
            record = _read_json(path)
        except FileNotFoundError:
            return {"status": "ok", "reason": "", "version": None, "updated_at": None}
        if not isinstance(record, dict) or record.get("status") not in HEALTH_STATUSES:
            raise CorruptModelError(
                f"{path} is not a valid health record; rewrite it with ModelRegistry.set_health"
            )
        return record


class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry as a Dagster resource; assets call ``.registry()`` for the API."""

    root: str = Field(
        description=(
            "Directory holding every model's versions, production pointer and deployment "
            "history. Must be on a local POSIX filesystem: promotions rely on fcntl.flock."
        )
    )

    def registry(self) -> ModelRegistry:
        """A ``ModelRegistry`` rooted at ``root``."""
        return ModelRegistry(self.root)
