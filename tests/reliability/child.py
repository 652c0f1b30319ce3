"""What the fault tests run in a subprocess (``python -c "from tests.reliability.child import
...; ..."``) so that they can SIGKILL it or let it race another process."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# Each entry point imports what it needs, so that a child starts as fast as it can.


def run_learning(
    home: str, partition: str, iterations: int = 80, assets: list[str] | None = None
) -> None:
    """A run of the learning job for one partition on ``home`` with PERMISSIVE gates (only
    ``assets`` when given); exits 0 on success."""
    from tests.assets.conftest import EURUSD, PERMISSIVE, Pipeline

    p = Pipeline(Path(home), (EURUSD,), **{**PERMISSIVE, "iterations": iterations})
    result = p.run(partition, assets=assets)
    sys.exit(0 if result.success else 1)


def run_learning_promoting_together(
    home: str, partition: str, barrier: str, parties: int, assets: list[str] | None = None
) -> None:
    """``run_learning``, but every process waits at the promotion until ``parties`` of them got
    there, so that the promotions really overlap."""
    from session_learning.resources.registry import ModelRegistry

    real_promote = ModelRegistry.promote

    def promote(self, *args, **kwargs):
        folder = Path(barrier)
        (folder / f"{os.getpid()}.ready").touch()
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*.ready"))) < parties:
            if time.monotonic() > deadline:
                raise TimeoutError("the other promotion never arrived")
            time.sleep(0.005)
        return real_promote(self, *args, **kwargs)

    ModelRegistry.promote = promote
    run_learning(home, partition, assets=assets)


def promote_and_die(root: str, version: str, session: str, target: str, when: str) -> None:
    """Promote ``version`` and SIGKILL this process at an ``os.replace`` of ``target``
    (``when`` "before" or "after" the rename): a power cut inside a promotion."""
    from session_learning.domain.keys import ModelKey
    from session_learning.resources.registry import ModelRegistry

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        hit = Path(dst).name == target
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    ModelRegistry(root).promote(ModelKey("EURUSD", "30T"), version, reason="dies", session=session)
    sys.exit(3)  # not reached: the kill point was never hit


def _cap_file_size(limit: int) -> None:
    """Cap every file this process writes at ``limit`` bytes (RLIMIT_FSIZE) with SIGXFSZ
    ignored, so a write beyond it fails with EFBIG: a disk that fills up mid-write."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _report(call) -> None:
    """Run ``call``; exit 2 after printing its error, 0 if it succeeded."""
    try:
        call()
    except Exception as exc:
        print(f"{type(exc).__name__} errno={getattr(exc, 'errno', None)}: {exc}")
        sys.exit(2)
    sys.exit(0)


def export_on_a_full_disk(trades_csv: str, directory: str, limit: int) -> None:
    """Export the session of the trades in ``trades_csv`` with files capped at ``limit``."""
    import pandas as pd

    from session_learning.domain.trades import validate_trades
    from session_learning.resources.exports import write_session_exports

    trades = validate_trades(pd.read_csv(trades_csv, dtype=str, keep_default_na=False))
    _cap_file_size(limit)
    _report(
        lambda: write_session_exports(trades, pd.Timestamp("2025-03-04T12:00Z"), Path(directory))
    )


def store_value_on_a_full_disk(base_dir: str, rows: int, limit: int) -> None:
    """Store a training-set-like value (a frame part and its JSON) with files capped."""
    import dagster as dg
    import numpy as np
    import pandas as pd

    from session_learning.resources.value_store import ValueStoreIOManager

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(rows, 8)), columns=list("abcdefgh"))
    store = ValueStoreIOManager(base_dir=base_dir)
    context = dg.build_output_context(
        asset_key=dg.AssetKey(["EURUSD_30T", "weighted_training_set"]), partition_key="p1"
    )
    _cap_file_size(limit)
    _report(lambda: store.handle_output(context, {"frame": frame, "info": {"rows": rows}}))


def save_model_on_a_full_disk(root: str, limit: int) -> None:
    """Save a trained candidate to the registry with files capped."""
    from datetime import UTC, datetime

    import numpy as np
    from catboost import CatBoostClassifier

    from session_learning.domain.keys import ModelKey
    from session_learning.resources.registry import ModelRegistry

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    model = CatBoostClassifier(iterations=60, depth=4, verbose=False, allow_writing_files=False)
    model.fit(x, (x[:, 0] > 0).astype(int))
    registry = ModelRegistry(root)
    key, end = ModelKey("EURUSD", "30T"), datetime(2025, 3, 4, 12, tzinfo=UTC)
    _cap_file_size(limit)
    _report(lambda: registry.save_candidate(key, model, {"note": "full disk"}, end))
