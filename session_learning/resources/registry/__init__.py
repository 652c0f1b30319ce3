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

Where each part lives (one class, ``ModelRegistry``, assembled in ``resource.py``):

* ``storage.py``: file names, errors, checksums (``card_digest``, ``judgement_digest``,
  ``version_checksum``), the atomic JSON write and the id checks.
* ``versions.py``: the model folder and its lock, saving and verifying versions.
* ``judgements.py``: judgement records and the promotion rule (``arena_evidence_problem``).
* ``history.py`` and ``deployments.py``: pointer and history, promote, pause, rollback.
* ``arena_state.py``: the arena state and its compare-and-swap fold.
* ``upgrade.py``: the previous format's upgrade, and the health flag.
* ``resource.py``: ``ModelRegistry`` and ``ModelRegistryResource``.
"""

from session_learning.resources.registry.judgements import arena_evidence_problem
from session_learning.resources.registry.resource import ModelRegistry, ModelRegistryResource
from session_learning.resources.registry.storage import (
    ARENA_DIR,
    ARENA_FILE,
    CARD_FILE,
    CORRUPT_PREFIX,
    HEALTH_FILE,
    HEALTH_STATUSES,
    HISTORY_FILE,
    JUDGEMENT_DECISIONS,
    JUDGEMENT_FILE,
    LOCK_FILE,
    PRODUCTION_FILE,
    RESERVED_CARD_FIELDS,
    TMP_PREFIX,
    UPGRADE_COMMAND,
    VERSIONS_DIR,
    ArenaChangedError,
    CorruptModelError,
    LegacyRegistryError,
    NeverLiveError,
    NotJudgedError,
    ProductionChangedError,
    RegistryError,
    UnknownVersionError,
    card_digest,
    judgement_digest,
    version_checksum,
)

__all__ = [
    "ARENA_DIR",
    "ARENA_FILE",
    "CARD_FILE",
    "CORRUPT_PREFIX",
    "HEALTH_FILE",
    "HEALTH_STATUSES",
    "HISTORY_FILE",
    "JUDGEMENT_DECISIONS",
    "JUDGEMENT_FILE",
    "LOCK_FILE",
    "PRODUCTION_FILE",
    "RESERVED_CARD_FIELDS",
    "TMP_PREFIX",
    "UPGRADE_COMMAND",
    "VERSIONS_DIR",
    "ArenaChangedError",
    "CorruptModelError",
    "LegacyRegistryError",
    "ModelRegistry",
    "ModelRegistryResource",
    "NeverLiveError",
    "NotJudgedError",
    "ProductionChangedError",
    "RegistryError",
    "UnknownVersionError",
    "arena_evidence_problem",
    "card_digest",
    "judgement_digest",
    "version_checksum",
]
