"""Versioned, checksummed store of trained models with an atomic production pointer.

Layout, one folder per model named by ``ModelKey.slug``::

    <root>/EURUSD_30T/
        .lock                        per-model lock file (fcntl.flock); never deleted
        production.json              the live pointer: which version trading uses
        history.json                 deployment history, oldest first
        health.json                  degraded flag (absent means "ok")
        arena.json                   the arena state after the last session folded into it
        arena/<session>.json         what the arena did in each session it folded
        versions/
            20240102T0800-0123456789/
                model.cbm            the model in its type's native format (CatBoost ``.cbm``;
                                     ``domain/estimators``); never pickle, so loading runs no code
                card.json            model card: caller fields + version, checksums, size, ...
                judgement.json       the verdict of the gates on this version (absent: never
                                     judged); see ``record_judgement``
            .tmp-*                   a save in progress or killed; invisible to readers

Guarantees:

* A version folder appears in one ``os.rename`` after its files are fsynced, so a reader never
  sees half a version. Its ``model.cbm`` never changes afterwards, nor does its card: everything
  in ``card.json`` except the ``annotations`` dict (trading rule, features, feature functions,
  params, the model's sha256, ...) is sealed by ``card_sha256``. ``update_card`` only writes
  ``annotations``, which nothing that scores or trades reads.
* The version's checksum (``checksum``) covers the model, the sealed card and the judgement:
  ``judgement.json`` names the ``model_sha256`` and ``card_sha256`` it judged and is sealed by
  its own ``judgement_sha256``. A version whose card changed after it was judged (or whose
  judgement was edited) refuses to load; the production pointer and every history entry record
  the checksum the version had when it went live, and a live version that no longer matches it
  refuses to load or signal.
* Every JSON file is replaced by write-temp + fsync + ``os.replace`` + fsync of the folder.
* Nothing is handed to CatBoost before the size and sha256 of ``model.cbm`` match the card.
* Writers of a model (save, promote, rollback, card and health updates) hold an exclusive
  ``flock`` on its ``.lock``, so concurrent processes never lose an update. ``flock`` needs a
  local POSIX filesystem; network filesystems may not honour it.

Promotion invariant: a version becomes production only through ``promote`` with a judgement
record that passed every declared gate (``domain.gates.GATE_NAMES``) against the version that
is live at the moment of promotion (compare-and-swap on the judgement's ``baseline_version``).
For a model with an arena (its state stored here: ``arena_governs``), only the first deployment
goes live on its validation judgement; every later one needs the arena's decision in the record (``evidence.kind == "arena"`` naming the version, its
forward e-values against the champion and FLAT at their thresholds: ``arena_evidence_problem``).
``pause`` stops the live version from trading (the arena demoted it to FLAT), recorded in the
history; a promotion or a rollback ends it. ``fold_arena_session`` stores the arena state with a
compare-and-swap on the session it was computed from, so no session is folded twice or lost.
``rollback`` returns only to a version that history shows live before, unchanged since; anything
else needs ``force=True`` with a reason, and history records it as forced.

Files written by the previous format (cards without ``card_sha256``, a pointer without
``checksum``) are refused with ``LegacyRegistryError``; ``ModelRegistry.upgrade`` (the
``session-learning upgrade-registry`` command) seals them once.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from session_learning.domain.atomic import fsync_dir, fsync_file, write_atomic
from session_learning.domain.estimators import (
    MODEL_TYPES,
    Estimator,
    ModelFormatError,
    as_estimator,
)
from session_learning.domain.gates import GATE_NAMES
from session_learning.domain.json_encoding import dumps
from session_learning.domain.keys import ModelKey, UnknownModelError

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
JUDGEMENT_FILE = "judgement.json"
PRODUCTION_FILE = "production.json"
HISTORY_FILE = "history.json"
HEALTH_FILE = "health.json"
ARENA_FILE = "arena.json"
ARENA_DIR = "arena"
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
    "card_sha256",
    "annotations",
)
# Judgement fields the registry sets from the stored version.
_SEALED_JUDGEMENT_FIELDS = ("model_sha256", "card_sha256", "judgement_sha256", "schema")
JUDGEMENT_DECISIONS = ("passed", "rejected")

_VERSION_RE = re.compile(r"^\d{8}T\d{4}-[0-9a-f]{10}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HISTORY_SCHEMA = 1
_ARENA_SCHEMA = 1
_SESSION_KEY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}:\d{2}$")
_JUDGEMENT_SCHEMA = 1
UPGRADE_COMMAND = "session-learning upgrade-registry"


class RegistryError(Exception):
    """A registry operation cannot be carried out (unknown version, nothing to roll back, ...)."""


class UnknownVersionError(RegistryError):
    """The requested version does not exist for that model (or is not a version id)."""


class ProductionChangedError(RegistryError):
    """Production changed between judging a candidate and promoting it."""


class CorruptModelError(RegistryError):
    """A stored file is missing, unreadable or fails its checksum; it must not be used."""


class NotJudgedError(RegistryError):
    """The version has no judgement that passed every gate, so it cannot become production."""


class NeverLiveError(RegistryError):
    """A rollback target that history does not show live before (needs force and a reason)."""


class ArenaChangedError(RegistryError):
    """The arena state moved on (another run folded a session) since it was read."""


class LegacyRegistryError(RegistryError):
    """A file written by the previous registry format, without the checksums this one needs."""


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


def _dumps(obj: Any) -> bytes:
    return (dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def _digest(document: Mapping[str, Any], *, leave_out: tuple[str, ...]) -> str:
    """sha256 of ``document`` as canonical JSON (sorted keys), without the ``leave_out`` keys.

    The document is first round-tripped through the stored JSON form, so the digest of what
    is written equals the digest of what is read back.
    """
    stored = json.loads(_dumps({k: v for k, v in document.items() if k not in leave_out}))
    canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def card_digest(card: Mapping[str, Any]) -> str:
    """The ``card_sha256`` of a card: every field except the digest and ``annotations``."""
    return _digest(card, leave_out=("card_sha256", "annotations"))


def judgement_digest(judgement: Mapping[str, Any]) -> str:
    """The ``judgement_sha256`` of a judgement record: every field except the digest."""
    return _digest(judgement, leave_out=("judgement_sha256",))


def version_checksum(card: Mapping[str, Any], judgement: Mapping[str, Any] | None) -> str:
    """The checksum of a version: its model (through the card's ``model_sha256``), its sealed
    card and its judgement (or the absence of one)."""
    judged = judgement["judgement_sha256"] if judgement is not None else "not judged"
    return hashlib.sha256(f"{card['card_sha256']}:{judged}".encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new bytes."""
    # mkstemp creates 0600; other users (the trading service) must be able to read.
    write_atomic(
        path,
        lambda fh: fh.write(data),
        prefix=f"{TMP_PREFIX}{path.name}-",
        permissions=0o644,
        fsync=True,
        sync_dir=True,
    )


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


def _check_session(session: object) -> str:
    # Session keys become file names: only the partition key shape is accepted.
    if not isinstance(session, str) or not _SESSION_KEY_RE.match(session):
        raise RegistryError(f"{session!r} is not a session key (expected YYYY-MM-DD-HH:MM)")
    return session


def _remedy(key: ModelKey, version: str) -> str:
    return (
        f"Do not deploy {key} version {version}: if it is live, roll production back to a "
        f"known-good version (`session-learning rollback {key.symbol} {key.timeframe}`, "
        "ModelRegistry.rollback in Python); retrain the session to write a fresh version."
    )


def _trained(model: object) -> Estimator:
    estimator = as_estimator(model)
    if not estimator.is_fitted():
        raise RegistryError("the model is not trained; fit it before saving it to the registry")
    return estimator


def _model_file(version_dir: Path) -> tuple[type[Estimator], Path]:
    """The model type of a version and its model file: the first type whose file is there
    (CatBoost's ``model.cbm`` when none is, so that the missing file is named)."""
    for model_type in MODEL_TYPES:
        path = version_dir / model_type.file_name
        if path.exists():
            return model_type, path
    return MODEL_TYPES[0], version_dir / MODEL_TYPES[0].file_name


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


def arena_evidence_problem(version: str, evidence: Any) -> str | None:
    """Why ``evidence`` (a judgement's) is not the arena's decision to promote ``version``, or
    None when it is: ``kind`` "arena", ``winner`` the version, and its forward evidence against
    the champion and against FLAT each at or above its threshold (``passed``)."""
    if not isinstance(evidence, Mapping) or evidence.get("kind") != "arena":
        return "its judgement carries no arena evidence (forward e-values against the champion)"
    if evidence.get("winner") != version:
        return f"the arena's decision names {evidence.get('winner')!r}, not {version}"
    for side in ("vs_champion", "vs_flat"):
        found = evidence.get(side)
        if not isinstance(found, Mapping) or found.get("passed") is not True:
            return f"its forward evidence {side} did not pass"
        e_value, threshold = found.get("e_value"), found.get("threshold")
        # An e-value too large for JSON is stored as None; ``passed`` then decides.
        if e_value is not None and not (
            isinstance(threshold, int | float) and e_value >= threshold
        ):
            return f"its forward evidence {side} (e-value {e_value}) is below {threshold}"
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
        model: Estimator | object,
        card: Mapping[str, Any],
        session_end: datetime,
    ) -> str:
        """Store a trained model as a new candidate version and return its version id.

        ``card`` is any JSON-able description (data window, features, params, plan, metrics,
        parent version); the registry adds ``version``, ``model_sha256``, ``model_bytes``,
        ``created_at``, ``symbol``, ``timeframe`` and ``card_sha256`` (which seals every field:
        the card cannot change afterwards, see ``update_card``). The version id is
        ``<session_end:%Y%m%dT%H%M>-<first 10 hex of the model's sha256>``, so saving the same
        model for the same session again changes nothing and returns the same id (the card
        of the first save is kept). ``session_end`` must be timezone-aware. Nothing is
        promoted: a version needs a passing judgement (``record_judgement``) for that.
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
                estimator = _trained(model)
                model_path = tmp / estimator.file_name
                estimator.save(model_path)
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
                full_card["card_sha256"] = card_digest(full_card)
                (tmp / CARD_FILE).write_bytes(_dumps(full_card))
                fsync_file(model_path)
                fsync_file(tmp / CARD_FILE)
                os.chmod(tmp, 0o755)  # mkdtemp creates 0700; readers may be another user
                fsync_dir(tmp)
                os.rename(tmp, final)
                fsync_dir(versions_dir)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved %s version %s (%d bytes)", key, version, len(data))
        return version

    def _existing_is_intact(self, key: ModelKey, version: str, sha: str) -> bool:
        """True if ``version`` is already stored intact; a broken copy is moved aside."""
        try:
            card, _, _ = self._verify(key, version)
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
        """Add or change non-behavioural annotations of a version and return the new card.

        Annotations (notes, links, review comments) are stored under the card's
        ``annotations`` dict, which is the only part of a card outside ``card_sha256`` and is
        never read by anything that scores or trades. Every field saved with the version (the
        trading rule, features, feature functions, params, plan, windows) and every field the
        registry sets is sealed: naming one raises ``RegistryError``, so a live model's
        behaviour cannot be changed after it was judged. To change behaviour, train (or save)
        a new version and have it judged. The model is verified first, so a corrupt version is
        never annotated; the card is rewritten atomically.
        """
        fixed = sorted(set(fields) & set(RESERVED_CARD_FIELDS))
        if fixed:
            raise RegistryError(f"card fields {fixed} are fixed when a version is saved")
        _dumps(fields)
        with self._locked(key):
            card, _, _ = self._verify(key, version)
            sealed = sorted(set(fields) & (set(card) - {"annotations"}))
            if sealed:
                raise RegistryError(
                    f"{key} version {version}: card fields {sealed} were sealed when the version "
                    "was saved (they decide how the model trades); save a new version with the "
                    "change and have it judged. Only annotations can be added to a stored card."
                )
            card["annotations"] = {**card.get("annotations", {}), **fields}
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

    def load(self, key: ModelKey, version: str) -> tuple[Estimator, dict[str, Any]]:
        """Load a version after checking its card and the size and sha256 of its model file.

        Raises ``UnknownVersionError`` if the version does not exist and ``CorruptModelError``
        if any of its files is missing, unreadable or does not match its checksum (including
        a card changed after the version was saved or judged).
        """
        card, data, _ = self._verify(key, version)
        model_type, path = _model_file(self._version_dir(key, version))
        try:
            # Load the very bytes that were checksummed, so the file cannot change in between.
            model = model_type.load(data)
        except ModelFormatError as exc:
            raise CorruptModelError(
                f"{path} matches its checksum but {model_type.library} cannot read it ({exc}). "
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
        elif not isinstance(card.get("annotations", {}), dict):
            problem = "has annotations that are not a JSON object"
        elif "card_sha256" not in card:
            raise LegacyRegistryError(
                f"{path} was written by an earlier registry format (its card has no "
                "card_sha256), so nothing proves it is the card that was judged; run "
                f"`{UPGRADE_COMMAND}` once to seal the stored cards as they are, then retry"
            )
        elif card["card_sha256"] != card_digest(card):
            problem = (
                f"changed after the version was saved (card_sha256 {card['card_sha256']}, "
                f"content {card_digest(card)}): its trading rule, features or other sealed "
                "fields are not the ones that were trained and judged"
            )
        if problem:
            raise CorruptModelError(f"{path} {problem}. " + _remedy(key, version))
        return card

    def _read_judgement(
        self, key: ModelKey, version: str, version_dir: Path, card: dict[str, Any]
    ) -> dict[str, Any] | None:
        path = version_dir / JUDGEMENT_FILE
        try:
            judgement = _read_json(path)
        except FileNotFoundError:
            return None
        except CorruptModelError as exc:
            raise CorruptModelError(f"{exc}. " + _remedy(key, version)) from exc
        problem = None
        if not isinstance(judgement, dict) or "judgement_sha256" not in judgement:
            problem = "is not a sealed judgement record"
        elif judgement["judgement_sha256"] != judgement_digest(judgement):
            problem = "was edited after it was recorded (judgement_sha256 does not match)"
        elif judgement.get("version") != version:
            problem = f"names version {judgement.get('version')!r}"
        elif judgement.get("model_sha256") != card["model_sha256"]:
            problem = "judged another model file (model_sha256 differs from the card's)"
        elif judgement.get("card_sha256") != card["card_sha256"]:
            problem = (
                "judged another card: the card changed after the version was judged, so "
                "the judgement says nothing about the model as it now stands"
            )
        if problem:
            raise CorruptModelError(f"{path} {problem}. " + _remedy(key, version))
        return judgement

    def _verify(
        self, key: ModelKey, version: str
    ) -> tuple[dict[str, Any], bytes, dict[str, Any] | None]:
        """(card, model bytes, judgement or None), every checksum verified."""
        version_dir = self._version_dir(key, version)
        self._require_version(key, version, version_dir)
        card = self._read_card(key, version, version_dir)
        judgement = self._read_judgement(key, version, version_dir, card)
        _, path = _model_file(version_dir)
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
        return card, data, judgement

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

    # ---- judgements ------------------------------------------------------------------------

    def record_judgement(
        self, key: ModelKey, version: str, judgement: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store the verdict of the gates on ``version`` and return the sealed record.

        ``judgement`` carries ``judged_at`` (ISO time), ``partition`` (the session judged, or
        None), ``baseline_version`` (the production version the candidate was compared with,
        None if nothing was live), ``gates`` (a non-empty list of ``{name, value, threshold,
        production_value, passed, ...}``), ``decision`` ("passed" or "rejected"), ``reasons``
        (list of text) and optionally ``evidence`` (a JSON object, e.g. forward evidence) and
        other JSON fields (metrics). The registry adds ``version``, ``model_sha256`` and
        ``card_sha256`` (what was judged) and ``judgement_sha256`` (which seals the record).

        A version may be judged again (against a newer production) until it has been live;
        the judgement it went live under is part of the deployment record and is kept:
        re-judging it raises ``RegistryError``.
        """
        record = self._judgement_record(key, version, judgement)
        arena = arena_evidence_problem(version, record["evidence"]) is None
        with self._locked(key):
            card, _, existing = self._verify(key, version)
            went_live = existing is not None and any(
                e["version"] == version for e in self._read_history(key)
            )
            if went_live and arena:
                # A former champion earning its place back on forward evidence: the record it
                # went live under before is kept beside the new one.
                kept = (
                    self._version_dir(key, version)
                    / f"judgement-{existing['judgement_sha256'][:16]}.json"
                )
                if not kept.exists():
                    _write_atomic(kept, _dumps(existing))
            elif went_live:
                raise RegistryError(
                    f"{key} version {version} went live under its judgement of "
                    f"{existing['judged_at']}; that record is part of the deployment history "
                    "and is kept. Train a new version to judge the model again."
                )
            record.update(model_sha256=card["model_sha256"], card_sha256=card["card_sha256"])
            record["judgement_sha256"] = judgement_digest(record)
            _write_atomic(self._version_dir(key, version) / JUDGEMENT_FILE, _dumps(record))
        logger.info("judged %s version %s: %s", key, version, record["decision"])
        return record

    @staticmethod
    def _judgement_record(
        key: ModelKey, version: str, judgement: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate a caller's judgement; the registry's own fields are not accepted."""
        if not isinstance(judgement, Mapping):
            raise TypeError(f"judgement must be a mapping, got {type(judgement).__name__}")
        where = f"judgement of {key} version {_check_version(version)}"
        clash = sorted(set(judgement) & set(_SEALED_JUDGEMENT_FIELDS))
        if clash:
            raise RegistryError(f"{where}: fields {clash} are set by the registry; leave them out")
        if judgement.get("version", version) != version:
            raise RegistryError(f"{where} names version {judgement['version']!r}")
        missing = sorted(
            {"judged_at", "partition", "baseline_version", "gates", "decision", "reasons"}
            - set(judgement)
        )
        if missing:
            raise RegistryError(f"{where} lacks {missing}")
        record = {"schema": _JUDGEMENT_SCHEMA, "evidence": None, **judgement, "version": version}
        try:
            datetime.fromisoformat(str(record["judged_at"]))
        except ValueError:
            raise RegistryError(
                f"{where}: judged_at {record['judged_at']!r} is not an ISO time"
            ) from None
        if record["baseline_version"] is not None:
            _check_version(record["baseline_version"])
        gates = record["gates"]
        if (
            not isinstance(gates, list)
            or not gates
            or not all(
                isinstance(g, Mapping)
                and isinstance(g.get("name"), str)
                and isinstance(g.get("passed"), bool)
                for g in gates
            )
        ):
            raise RegistryError(
                f"{where}: gates must be a non-empty list of {{name, passed, value, threshold, "
                "production_value}}"
            )
        if record["decision"] not in JUDGEMENT_DECISIONS:
            raise RegistryError(
                f"{where}: decision must be one of {JUDGEMENT_DECISIONS}, "
                f"got {record['decision']!r}"
            )
        failed = [g["name"] for g in gates if not g["passed"]]
        if record["decision"] == "passed" and failed:
            raise RegistryError(f"{where} says passed but gates {failed} failed")
        if not isinstance(record["reasons"], list) or not all(
            isinstance(r, str) for r in record["reasons"]
        ):
            raise RegistryError(f"{where}: reasons must be a list of text")
        if record["evidence"] is not None and not isinstance(record["evidence"], Mapping):
            raise RegistryError(f"{where}: evidence must be a JSON object or None")
        _dumps(record)  # not JSON-able: fails here, before any disk write
        return record

    def judgement(self, key: ModelKey, version: str) -> dict[str, Any] | None:
        """The sealed judgement of a version (verified with its card), or None if never judged."""
        version_dir = self._version_dir(key, version)
        self._require_version(key, version, version_dir)
        card = self._read_card(key, version, version_dir)
        return self._read_judgement(key, version, version_dir, card)

    def checksum(self, key: ModelKey, version: str) -> str:
        """The version's checksum over model, card and judgement (every file verified)."""
        card, _, judgement = self._verify(key, version)
        return version_checksum(card, judgement)

    def promotion_refusal(self, key: ModelKey, version: str) -> str | None:
        """Why ``version`` cannot become production by its judgement, or None when it passed
        every declared gate. (``promote`` also needs its baseline to be live still.)"""
        card, _, judgement = self._verify(key, version)
        history = self.history(key)
        # The version trading now needs nothing more; any other needs the arena once a model
        # has traded. A judgement against a version that is no longer live is promote's
        # compare-and-swap to refuse (ProductionChangedError: judge it again).
        trading = bool(history) and history[-1]["version"] == version and not self.paused(key)
        stale = judgement is not None and judgement["baseline_version"] != (
            self.production_version(key)
        )
        return self._refusal(
            key,
            version,
            card,
            judgement,
            bool(history) and not trading and not stale and self.arena_governs(key),
        )

    def was_live(self, key: ModelKey, version: str) -> bool:
        """Whether the deployment history shows ``version`` live at some time (now included)."""
        return any(e["version"] == version for e in self.history(key))

    @staticmethod
    def _refusal(
        key: ModelKey,
        version: str,
        card: Mapping[str, Any],
        judgement: Mapping | None,
        deployed_before: bool,
    ) -> str | None:
        """Why ``judgement`` does not let ``version`` go live, or None when it passed.

        The first deployment of a model goes live on its validation judgement (there is no
        champion to compare with forward); with ``deployed_before`` (the model has traded and
        has an arena) a promotion needs the arena's decision in the record
        (``arena_evidence_problem``)."""
        if judgement is None:
            return (
                f"{key} version {version} has no judgement record: it was never judged against "
                f"the gates. Materialize {key.slug}/candidate_model for its session "
                f"({card.get('session') or 'unknown'}) to judge it, or roll back to a version "
                "that was live before."
            )
        names = [g["name"] for g in judgement["gates"]]
        failed = [g["name"] for g in judgement["gates"] if not g["passed"]]
        missing = [name for name in GATE_NAMES if name not in names]
        if judgement["decision"] == "passed" and not failed and not missing:
            problem = arena_evidence_problem(version, judgement.get("evidence"))
            if not deployed_before or problem is None:
                return None
            return (
                f"{key} version {version} passed its gates but {problem}: once a model has "
                "traded, only the arena's forward evidence (challenger_evidence) promotes a "
                "challenger. It cannot become production."
            )
        problems = []
        if failed:
            problems.append(f"failed {', '.join(failed)}")
        if missing:
            problems.append(f"was never judged on {', '.join(missing)}")
        if not problems:
            problems.append(f"was {judgement['decision']}: {'; '.join(judgement['reasons'])}")
        return (
            f"{key} version {version} did not pass its gates (judged {judgement['judged_at']} "
            f"for session {judgement['partition']} against "
            f"{judgement['baseline_version'] or 'no production model'}): {'; '.join(problems)}. "
            "It cannot become production; train a better candidate, or roll back to a version "
            "that was live before."
        )

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

    # ---- upgrade of the previous format ----------------------------------------------------

    def upgrade(self, now: datetime | None = None) -> list[str]:
        """Seal a registry written by the previous format; return what was done, one line each.

        The previous format checksummed only ``model.cbm`` and kept the gate results in the
        card. For every model: each card without ``card_sha256`` is sealed as it stands now
        (whoever runs this vouches that the stored cards were not edited by hand); a card that
        recorded gate results (``gates``, ``passed_gates``) gets a judgement record made from
        them, against its ``parent_version`` (the production version when it was judged);
        the pointer and the history entries get the checksum of their version. A version whose
        model file fails its checksum is reported and left unusable. Running it twice changes
        nothing the second time.
        """
        done: list[str] = []
        if not self.root.is_dir():
            return done
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            try:
                key = ModelKey.parse(entry.name)
            except UnknownModelError:
                continue
            if key.slug != entry.name or not entry.is_dir(follow_symlinks=False):
                continue
            with self._locked(key):
                done.extend(self._upgrade_model(key, _iso(now)))
        return done

    def _upgrade_model(self, key: ModelKey, now_iso: str) -> list[str]:
        done = []
        checksums: dict[str, str] = {}
        for version in self.versions(key):
            version_dir = self._version_dir(key, version)
            path = version_dir / CARD_FILE
            try:
                card = _read_json(path)
            except (FileNotFoundError, CorruptModelError) as exc:
                done.append(f"{key.slug} {version}: card unreadable, left as is ({exc})")
                continue
            if isinstance(card, dict) and "card_sha256" not in card:
                card["card_sha256"] = card_digest(card)
                _write_atomic(path, _dumps(card))
                done.append(f"{key.slug} {version}: card sealed")
                legacy = self._legacy_judgement(card, version, now_iso)
                if legacy is not None and not (version_dir / JUDGEMENT_FILE).exists():
                    legacy.update(
                        model_sha256=card.get("model_sha256"), card_sha256=card_digest(card)
                    )
                    legacy["judgement_sha256"] = judgement_digest(legacy)
                    _write_atomic(version_dir / JUDGEMENT_FILE, _dumps(legacy))
                    done.append(
                        f"{key.slug} {version}: judgement recorded from its card "
                        f"({legacy['decision']})"
                    )
            try:
                card, _, judgement = self._verify(key, version)
            except CorruptModelError as exc:
                done.append(f"{key.slug} {version}: NOT usable: {exc}")
                continue
            checksums[version] = version_checksum(card, judgement)
        try:
            pointer = self._read_pointer(key)
        except CorruptModelError as exc:
            done.append(f"{key.slug}: production pointer unreadable, left as is ({exc})")
            return done
        entries = self._read_history(key)
        changed = False
        for item in entries:
            if "checksum" not in item and item["version"] in checksums:
                item["checksum"] = checksums[item["version"]]
                changed = True
        if changed:
            self._write_history(key, entries)
            done.append(f"{key.slug}: history entries given their version's checksum")
        if pointer is not None and "checksum" not in pointer:
            if pointer["version"] in checksums:
                pointer["checksum"] = checksums[pointer["version"]]
                _write_atomic(self._model_dir(key) / PRODUCTION_FILE, _dumps(pointer))
                done.append(f"{key.slug}: production pointer to {pointer['version']} sealed")
            else:
                done.append(
                    f"{key.slug}: production {pointer['version']} is not usable; roll back "
                    "to another version"
                )
        return done

    @staticmethod
    def _legacy_judgement(card: dict[str, Any], version: str, now_iso: str) -> dict | None:
        """A judgement record from the gate results the previous format kept in the card."""
        gates = card.get("gates")
        if not isinstance(gates, list) or not gates or "passed_gates" not in card:
            return None
        if not all(isinstance(g, dict) and isinstance(g.get("name"), str) for g in gates):
            return None
        kept = [
            {
                "name": g["name"],
                "value": g.get("value"),
                "threshold": g.get("threshold"),
                "production_value": g.get("production_value"),
                "passed": g.get("passed") is True,
                "message": g.get("message", ""),
            }
            for g in gates
        ]
        passed = card["passed_gates"] is True and all(g["passed"] for g in kept)
        parent = card.get("parent_version")
        return {
            "schema": _JUDGEMENT_SCHEMA,
            "version": version,
            "judged_at": card.get("created_at") or now_iso,
            "partition": card.get("session"),
            "baseline_version": parent if isinstance(parent, str) else None,
            "gates": kept,
            "decision": "passed" if passed else "rejected",
            "reasons": [
                "recorded by the registry upgrade from the gate results the card kept",
                *[f"failed {g['name']}" for g in kept if not g["passed"]],
            ],
            "evidence": None,
            "upgraded_at": now_iso,
        }

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
