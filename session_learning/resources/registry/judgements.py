"""Judgement records: the sealed verdict of the gates on a version, and why a version may
or may not go live by it (the arena's evidence once a model has traded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from session_learning.domain.gates import GATE_NAMES
from session_learning.domain.keys import ModelKey
from session_learning.resources.registry.storage import (
    _JUDGEMENT_SCHEMA,
    _SEALED_JUDGEMENT_FIELDS,
    JUDGEMENT_DECISIONS,
    JUDGEMENT_FILE,
    RegistryError,
    _check_version,
    _dumps,
    _write_atomic,
    judgement_digest,
    version_checksum,
)

logger = logging.getLogger(__name__)


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


class JudgementRecords:
    """Part of ``ModelRegistry``: recording and reading judgements, and the promotion rule
    they feed (``promotion_refusal``)."""

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
