"""The registry's files and their vocabulary: file names, errors, the card, judgement and
version checksums, the atomic JSON write, id checks and the model file of a version.

Shared by every part of ``ModelRegistry``; nothing here takes a lock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from session_learning.domain.atomic import write_atomic
from session_learning.domain.estimators import MODEL_TYPES, Estimator, as_estimator
from session_learning.domain.json_encoding import dumps
from session_learning.domain.keys import ModelKey

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
