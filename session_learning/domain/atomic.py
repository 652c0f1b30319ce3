"""Writing a file so that a reader sees the old bytes or the new ones, never a part.

A file is written in full under a temporary name beside its final one and then renamed over
it (one ``os.replace``). What must survive a power loss is chosen by the caller: ``fsync``
flushes the file's data before the rename, ``sync_dir`` the folder entry after it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in the folder ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush the data of the file ``path`` to the disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_temporary(
    path: Path,
    write: Callable[[IO[Any]], object],
    *,
    text: bool = False,
    prefix: str | None = None,
    suffix: str = "",
    permissions: int | None = None,
    fsync: bool = True,
) -> Path:
    """Write a new temporary file beside ``path`` in full with ``write(handle)``; return it.

    The file is hidden (``prefix``, by default ``.<name>.``) and, as ``mkstemp`` creates it,
    readable by its owner only unless ``permissions`` says otherwise. On failure the temporary
    file is removed, and an ``OSError`` that names no file (a full disk says only "No space
    left on device") is raised again naming ``path``.
    """
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix, dir=path.parent
    )
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"newline": ""} if text else {})) as handle:
            if permissions is not None:
                os.fchmod(handle.fileno(), permissions)
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return Path(tmp)


def replace(tmp: Path, path: Path, *, sync_dir: bool = False) -> None:
    """Rename the written temporary file ``tmp`` over ``path`` (removing it if that fails)."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_atomic(
    path: Path, write: Callable[[IO[Any]], object], *, sync_dir: bool = False, **options: Any
) -> None:
    """Replace ``path`` with what ``write(handle)`` writes, whole or not at all.

    ``options`` are those of :func:`write_temporary`; ``sync_dir`` that of :func:`replace`.
    """
    replace(write_temporary(path, write, **options), path, sync_dir=sync_dir)
