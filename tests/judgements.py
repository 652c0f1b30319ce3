"""Judgement records for tests that exercise the registry directly (the assets write real ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from session_learning.domain.gates import GATE_NAMES
from session_learning.domain.keys import ModelKey
from session_learning.resources.registry import RESERVED_CARD_FIELDS, ModelRegistry


def arena_evidence(winner: str, *, champion: str = "FLAT", e_value: float = 100.0) -> dict:
    """The arena's evidence for promoting ``winner`` as a judgement record carries it (every
    deployment after a model's first needs it), passing unless ``e_value`` is below 60."""

    def side(baseline: str) -> dict:
        return {
            "baseline": baseline,
            "e_value": e_value,
            "threshold": 60.0,
            "passed": e_value >= 60,
        }

    return {
        "kind": "arena",
        "winner": winner,
        "champion": champion,
        "vs_champion": side(champion),
        "vs_flat": side("FLAT"),
    }


def judgement(
    baseline: str | None,
    *,
    failed: tuple[str, ...] = (),
    partition: str | None = "test",
    judged_at: str = "2024-01-02T08:00:00+00:00",
    gates: tuple[str, ...] = GATE_NAMES,
    evidence: dict | None = None,
) -> dict:
    """A judgement record against ``baseline`` in which only the ``failed`` gates failed."""
    return {
        "evidence": evidence,
        "judged_at": judged_at,
        "partition": partition,
        "baseline_version": baseline,
        "gates": [
            {
                "name": name,
                "value": 0.0 if name in failed else 2.0,
                "threshold": 1.0,
                "production_value": None,
                "passed": name not in failed,
            }
            for name in gates
        ],
        "decision": "rejected" if failed else "passed",
        "reasons": [f"{name}: below its threshold" for name in failed] or ["passed every gate"],
    }


def judge(
    registry: ModelRegistry, key: ModelKey, version: str, *, failed: tuple[str, ...] = ()
) -> dict:
    """Record a judgement of ``version`` against the version live now."""
    live = registry.production_version(key)
    # A later deployment goes through the arena: its record carries the arena's evidence.
    evidence = arena_evidence(version, champion=live) if live is not None else None
    return registry.record_judgement(
        key, version, judgement(live, failed=failed, evidence=evidence)
    )


def judge_and_promote(
    registry: ModelRegistry,
    key: ModelKey,
    version: str,
    *,
    reason: str = "passed every gate",
    session: str = "test",
    now: datetime | None = None,
) -> bool:
    """Judge ``version`` as passing against the live version (unless it already went live
    under a judgement) and promote it."""
    if not registry.was_live(key, version):
        judge(registry, key, version)
    return registry.promote(key, version, reason=reason, session=session, now=now)


def redeploy_with_rule(
    registry: ModelRegistry, key: ModelKey, *, session: str = "test", **rule: float
) -> str:
    """Deploy the live model again as a new version whose trading rule differs by ``rule``
    (a sealed card cannot be edited): saved one minute after the live version's session,
    judged as passing against it, promoted under ``session``. Returns the new version."""
    live = registry.production_version(key)
    model, card = registry.load(key, live)
    fields = {k: v for k, v in card.items() if k not in RESERVED_CARD_FIELDS}
    fields["trading_rule"] = {**card["trading_rule"], **rule}
    stamp = datetime.strptime(live.split("-")[0], "%Y%m%dT%H%M").replace(tzinfo=UTC)
    version = registry.save_candidate(key, model, fields, stamp + timedelta(minutes=1))
    judge_and_promote(registry, key, version, reason="test: trading rule changed", session=session)
    return version


# The session under which deploy_losing_variant records its deployment.
LOSING_VARIANT_SESSION = "losing-variant"


def deploy_losing_variant(registry: ModelRegistry, key: ModelKey) -> str:
    """Replace the live model by the same model trading with its take profit and stop a
    twentieth of an ATR from entry: the spread then costs more than any move a trade can catch
    (about -2.5R a trade on the synthetic bars), so a later candidate with the configured
    barriers beats it beyond noise. Candidates of neighbouring sessions train on nearly the
    same rows and rarely beat each other beyond noise, so a test of what follows a passing
    judgement against a live model starts from this one, not from whichever of two similar
    models the bars favour. Returns the new live version."""
    return redeploy_with_rule(
        registry, key, session=LOSING_VARIANT_SESSION, tp_atr=0.05, sl_atr=0.05
    )
