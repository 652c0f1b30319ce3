"""The one-off upgrade of a registry written by the previous format (``session-learning
upgrade-registry``), and the health flag of a model.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from session_learning.domain.keys import ModelKey, UnknownModelError
from session_learning.resources.registry.storage import (
    _JUDGEMENT_SCHEMA,
    CARD_FILE,
    HEALTH_FILE,
    HEALTH_STATUSES,
    JUDGEMENT_FILE,
    PRODUCTION_FILE,
    CorruptModelError,
    _dumps,
    _iso,
    _read_json,
    _write_atomic,
    card_digest,
    judgement_digest,
    version_checksum,
)


class FormatUpgrade:
    """Part of ``ModelRegistry``: sealing cards, judgements and pointers of the previous format."""

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


class HealthFlag:
    """Part of ``ModelRegistry``: the degraded / ok / enabled flag of a model."""

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
