"""A disk that fills up mid-write, simulated in a subprocess with RLIMIT_FSIZE (SIGXFSZ
ignored, so writes beyond the limit fail with EFBIG): a clear error naming the file, no partial
file under a final name, no temporary file left behind."""

from __future__ import annotations

import errno
import subprocess
import sys

import pandas as pd

from session_learning.domain.trades import validate_trades
from session_learning.resources.exports import write_session_exports
from tests.builders import frame, many
from tests.reliability.conftest import REPO, tree

STAMP = "20250304_120000"
SESSION_END = pd.Timestamp("2025-03-04T12:00Z")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _session(n: int, hour: int = 9) -> pd.DataFrame:
    return frame(
        many(
            n,
            n,
            entry_time=f"2025-03-04T{hour - 1:02d}:30:00+00:00",
            exit_time=f"2025-03-04T{hour:02d}:30:00+00:00",
        )
    )


def test_exports_on_a_full_disk_fail_whole_and_keep_the_previous_set(tmp_path):
    exports = tmp_path / "live_trades"
    # A previous run's exports, which a failed re-run must leave exactly as they were.
    write_session_exports(validate_trades(_session(2)), SESSION_END, exports)
    previous = tree(exports)
    trades_csv = tmp_path / "session.csv"
    _session(300).to_csv(trades_csv, index=False)  # winners, losers ~45 kB; all ~90 kB

    done = _run(
        "from tests.reliability.child import export_on_a_full_disk; "
        f"export_on_a_full_disk({str(trades_csv)!r}, {str(exports)!r}, 60_000)"
    )

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"errno={errno.EFBIG}" in done.stdout
    # The error names the file that could not be written.
    assert f"all_trades_{STAMP}.csv" in done.stdout
    # Winners and losers fitted, all_trades did not: none of the three replaced the old set.
    assert tree(exports) == previous
    assert not list(exports.glob(".*"))  # no temporary files left

    rerun = write_session_exports(validate_trades(_session(300)), SESSION_END, exports)
    assert {p.name for p in rerun.values()} == {
        f"winners_{STAMP}.csv",
        f"losers_{STAMP}.csv",
        f"all_trades_{STAMP}.csv",
    }


def test_stored_value_on_a_full_disk_leaves_no_partial_file(tmp_path):
    base = tmp_path / "values"
    done = _run(
        "from tests.reliability.child import store_value_on_a_full_disk; "
        f"store_value_on_a_full_disk({str(base)!r}, 5000, 50_000)"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"errno={errno.EFBIG}" in done.stdout
    assert "weighted_training_set/p1.frame.parquet" in done.stdout
    assert tree(base) == {}  # neither the frame nor the JSON, and no temporary file


def test_model_save_on_a_full_disk_leaves_no_version_and_no_temporary_folder(tmp_path):
    root = tmp_path / "models"
    done = _run(
        "from tests.reliability.child import save_model_on_a_full_disk; "
        f"save_model_on_a_full_disk({str(root)!r}, 4096)"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CatBoostError" in done.stdout and "File too large" in done.stdout
    assert "model.cbm" in done.stdout
    versions = root / "EURUSD_30T" / "versions"
    assert list(versions.iterdir()) == []  # no version, no .tmp-* folder
