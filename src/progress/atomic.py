"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temporary file in the same folder, fsync it, rename it over the target, fsync
the folder (the pattern of joblib's ``concurrency_safe_write`` and Orbax's finalize).
Temporary files start with ``.tmp-`` so readers and cleaners can ignore them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "replace_with_link", "fsync_dir", "sha256_bytes", "sha256_file",
           "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def replace_with_link(main: Path, backup: Path) -> None:
    """Make ``backup`` a copy of the current ``main`` (a hard link when possible), atomically,
    without ever leaving ``main`` absent."""
    tmp = backup.with_name(f"{TMP_PREFIX}{backup.name}.{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(main, tmp)
        os.replace(tmp, backup)
    except OSError:
        atomic_write_bytes(backup, main.read_bytes(), sync_dir=False)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so large data files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
