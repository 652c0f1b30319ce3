"""The versioned store: each model's folder and its lock, the atomic save of a version, and
reading a version back with every checksum verified before its model is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from session_learning.domain.atomic import fsync_dir, fsync_file
from session_learning.domain.estimators import Estimator, ModelFormatError
from session_learning.domain.keys import ModelKey, UnknownModelError
from session_learning.resources.registry.storage import (
    _SHA256_RE,
    _VERSION_RE,
    CARD_FILE,
    CORRUPT_PREFIX,
    JUDGEMENT_FILE,
    LOCK_FILE,
    RESERVED_CARD_FIELDS,
    TMP_PREFIX,
    UPGRADE_COMMAND,
    VERSIONS_DIR,
    CorruptModelError,
    LegacyRegistryError,
    RegistryError,
    UnknownVersionError,
    _check_version,
    _dumps,
    _iso,
    _model_file,
    _read_json,
    _remedy,
    _trained,
    _utc,
    _write_atomic,
    card_digest,
    judgement_digest,
)

logger = logging.getLogger(__name__)


class VersionStore:
    """Part of ``ModelRegistry``: paths, the per-model lock, saving, annotating and reading
    versions. Every path is derived from a validated ``ModelKey`` and version id."""

    root: Path

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
