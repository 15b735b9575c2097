"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temporary file in the same folder, fsync it, rename it over the target, fsync
the folder (the pattern of joblib's ``concurrency_safe_write`` and Orbax's finalize).
Temporary files are created exclusively (``O_EXCL``, never through a symlink) under an
unpredictable name ``.tmp-NAME.XXXXXXXX`` (:func:`tempfile.mkstemp`), so nobody who can
write to a shared folder can make a write land elsewhere, and they are removed on any
failure.  Readers ignore names starting with ``.tmp-``; cleaners find a file's leftovers
with :func:`temp_pattern`.  :func:`write_file_set` writes files that must appear together.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["atomic_write_bytes", "replace_with_link", "write_file_set", "write_temp",
           "temp_pattern", "remove_stray_temporaries", "fsync_dir", "sha256_bytes", "sha256_file",
           "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
_FILE_MODE = 0o644  # before the umask, as open() would create the file
_RANDOM_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # mkstemp's alphabet, 8 characters
_umask_cache: list[int] = []


def temp_pattern(name: str) -> re.Pattern[str]:
    """Names of the temporary files made for a file called ``name``: mkstemp's 8 random
    characters, or the digits of the older ``.PID`` naming."""
    return re.compile(re.escape(TMP_PREFIX + name) + r"\.(?:[a-z0-9_]{8}|[0-9]+)\Z")


def remove_stray_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporaries an interrupted write of ``names`` left in ``folder``.

    Only those names' own (``.tmp-estimates.csv.XXXXXXXX`` and the older ``.PID`` naming,
    :func:`temp_pattern`); any other file stays.  A symbolic link is
    removed itself, never followed; a folder is left alone.  Returns what was removed.
    """
    patterns = [temp_pattern(n) for n in names]
    removed: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX) or not any(p.match(entry.name) for p in patterns):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
            os.unlink(entry.path)  # unlink never follows a symbolic link
        except OSError:
            continue  # gone meanwhile, or not ours to remove: it harms nothing
        removed.append(Path(entry.path))
    return removed


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


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (once per process)."""
    if not _umask_cache:
        mask = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
        except (OSError, ValueError, IndexError):
            mask = None
        if mask is None:
            mask = os.umask(0o022)
            os.umask(mask)
        _umask_cache.append(mask)
    return _umask_cache[0]


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temp(folder: Path, name: str, data: bytes) -> Path:
    """A new temporary file in ``folder`` holding ``data``, fsynced, named ``.tmp-NAME.XXXXXXXX``.

    Created exclusively under an unpredictable name (never through a symlink planted in a
    shared folder) and removed again if anything fails.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{name}.")
    try:
        try:
            os.fchmod(fd, _FILE_MODE & ~_umask())  # mkstemp makes 0600; results are for reading
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (a symlink at ``path`` is
    replaced, not written through)."""
    path = Path(path)
    tmp = write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def _random_name(name: str) -> str:
    return f"{TMP_PREFIX}{name}.{''.join(secrets.choice(_RANDOM_CHARS) for _ in range(8))}"


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as fh:
        return fh.read()


def _link_to_temp(source: Path, folder: Path, name: str) -> Path | None:
    """A hard link to ``source`` (the entry itself, never a symlink's target) at a fresh
    temporary name for ``name``; None where this filesystem has no hard links."""
    for _ in range(100):
        tmp = folder / _random_name(name)
        try:
            os.link(source, tmp, follow_symlinks=False)
            return tmp
        except FileExistsError:
            continue  # someone else's file at this name: draw another
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise
            return None
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder / name))


def replace_with_link(main: Path, backup: Path) -> None:
    """Make ``backup`` a copy of the current ``main`` (a hard link when possible), atomically,
    without ever leaving ``main`` absent.  ``main`` must be a regular file, not a symlink."""
    main, backup = Path(main), Path(backup)
    if not stat.S_ISREG(os.lstat(main).st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a symlink?); it is not backed up", str(main))
    tmp = _link_to_temp(main, backup.parent, backup.name)
    if tmp is None:  # no hard links here: copy, never reading through a symlink
        atomic_write_bytes(backup, _read_nofollow(main), sync_dir=False)
        return
    try:
        if not stat.S_ISREG(os.lstat(tmp).st_mode):  # main was swapped for a symlink meanwhile
            raise OSError(errno.EINVAL, "not a regular file (a symlink?); it is not backed up",
                          str(main))
        os.replace(tmp, backup)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    # rename() of two links to one file does nothing and leaves the source: the case when
    # the backup already is this very file (a run killed between backup and write)
    if os.path.lexists(tmp):
        _unlink_quietly(tmp)


def _keep_old(folder: Path, name: str) -> Path | None:
    """Keep the entry at ``folder/name`` under a temporary name (a hard link, else a copy),
    so a failed set can put it back; None when there is nothing (or a folder) there."""
    path = folder / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return None  # not ours; renaming a file onto it fails and the set is rolled back
    kept = _link_to_temp(path, folder, name)
    if kept is not None:
        return kept
    if stat.S_ISLNK(st.st_mode):
        kept = folder / _random_name(name)
        os.symlink(os.readlink(path), kept)
        return kept
    return write_temp(folder, name, _read_nofollow(path))


def write_file_set(folder: Path, files: Mapping[str, bytes], *, manifest: tuple[str, bytes],
                   remove: Iterable[str] = ()) -> list[Path]:
    """Write ``files`` into ``folder`` as one set, with ``manifest`` written last.

    Every file (and the manifest) goes to a fsynced temporary file first.  Only when all
    are written: the old manifest goes, the files are renamed into place, the names in
    ``remove`` (regular files of an earlier set that this one lacks) go, and the new
    manifest is renamed in last.  On any failure the old entries, kept as hard links
    meanwhile, are put back, every temporary is removed and the error is raised.  Only a
    crash during the renames can leave a mixed set, and then there is no manifest.
    """
    folder = Path(folder)
    mname, mdata = manifest
    stale = [n for n in remove if n not in files and n != mname]
    temps: dict[str, Path] = {}
    kept: dict[str, Path | None] = {}
    changed: list[str] = []  # entries changed so far, in order (undone in reverse)
    try:
        for name, data in files.items():
            temps[name] = write_temp(folder, name, data)
        temps[mname] = write_temp(folder, mname, mdata)
        for name in [mname, *files, *stale]:
            kept[name] = _keep_old(folder, name)
        if kept[mname] is not None:
            os.unlink(folder / mname)  # from here until the end the set is incomplete
            changed.append(mname)
            fsync_dir(folder)
        for name in files:
            os.replace(temps[name], folder / name)
            del temps[name]
            changed.append(name)
        for name in stale:
            if kept[name] is not None and not stat.S_ISDIR(os.lstat(folder / name).st_mode):
                os.unlink(folder / name)
                changed.append(name)
        fsync_dir(folder)
        os.replace(temps[mname], folder / mname)
    except BaseException:
        for name in reversed(changed):
            old = kept.pop(name, None)
            try:
                if old is not None:
                    os.replace(old, folder / name)
                else:
                    os.unlink(folder / name)
            except OSError:
                pass
        for path in [*temps.values(), *(p for p in kept.values() if p is not None)]:
            _unlink_quietly(path)
        fsync_dir(folder)
        raise
    for path in kept.values():
        if path is not None:
            _unlink_quietly(path)
    fsync_dir(folder)
    return [folder / name for name in files] + [folder / mname]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so large data files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
