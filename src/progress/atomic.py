"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temporary file in the same folder, fsync it, rename it over the target, fsync
the folder (the pattern of joblib's ``concurrency_safe_write`` and Orbax's finalize).
Temporary files are created exclusively (``O_EXCL``, never through a symlink) under an
unpredictable name ``.tmp-NAME.XXXXXXXX`` (:func:`tempfile.mkstemp`), so nobody who can
write to a shared folder can make a write land elsewhere, and they are removed on any
failure.  Readers ignore names starting with ``.tmp-``; cleaners find a file's leftovers
with :func:`temp_pattern`.  :func:`write_file_set` writes files that must appear together;
:class:`FileSet` does the same step by step, each file's temporary written (and fsynced) by
a background thread as soon as the file is known, while the caller makes the next one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["atomic_write_bytes", "replace_with_link", "write_file_set", "FileSet", "write_temp",
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


def remove_stray_temporaries(folder: Path, names: Iterable[str],
                             keep: Iterable[str] = ()) -> list[Path]:
    """Remove the temporaries an interrupted write of ``names`` left in ``folder``.

    Only those names' own (``.tmp-estimates.csv.XXXXXXXX`` and the older ``.PID`` naming,
    :func:`temp_pattern`); any other file stays, and so do the entries named in ``keep``
    (a write under way: :class:`FileSet`'s own).  A symbolic link is removed itself, never
    followed; a folder is left alone.  Returns what was removed.
    """
    patterns = [temp_pattern(n) for n in names]
    keep = set(keep)
    removed: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX) or entry.name in keep \
                or not any(p.match(entry.name) for p in patterns):
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
    with FileSet(folder) as fset:
        for name, data in files.items():
            fset.add(name, data)
        return fset.commit(manifest, remove=remove)


def _write_and_hash(folder: Path, name: str, data: bytes) -> tuple[Path, str]:
    return write_temp(folder, name, data), sha256_bytes(data)


class FileSet:
    """:func:`write_file_set` step by step, for files made one after another.

    ``add(name, data)`` hands the file to background threads, which write its temporary
    and fsync it (both release the GIL, as does hashing: the caller makes the next file
    meanwhile, and the fsyncs of several files overlap); :meth:`commit` waits for them all
    and puts the set in place exactly as :func:`write_file_set` does (a failed write is
    raised there, every temporary removed).  Leaving the ``with`` block without a commit,
    or by an error, removes every temporary of the set.  :meth:`sha256` gives an added
    file's digest (computed by the thread that wrote it).
    """

    #: threads writing temporaries (two: one large file's fsync need not hold up the rest)
    THREADS = 2

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._writes: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="file-set")
        self._closed = False

    def __enter__(self) -> "FileSet":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.abort()

    def add(self, name: str, data: bytes) -> None:
        """Start writing ``data`` to a temporary for ``name`` (each name once)."""
        if self._closed:
            raise ValueError(f"the file set in {self.folder} was committed or aborted; "
                             f"{name!r} cannot be added")
        if name in self._writes:
            raise ValueError(f"{name!r} was added to the file set in {self.folder} twice")
        self._writes[name] = self._pool.submit(_write_and_hash, self.folder, name,
                                                 data if isinstance(data, bytes) else bytes(data))

    def __contains__(self, name: object) -> bool:
        return name in self._writes

    def sha256(self, name: str) -> str:
        """The SHA-256 of the file added as ``name`` (waiting for its write)."""
        return self._writes[name].result()[1]

    def _temps(self) -> dict[str, Path]:
        """Every file's temporary (waiting for the writes); the first failure raised."""
        temps: dict[str, Path] = {}
        for name, future in self._writes.items():
            temps[name] = future.result()[0]
        return temps

    def abort(self) -> None:
        """Remove every temporary of the set (after its writes end); nothing is renamed."""
        self._closed = True
        for future in self._writes.values():
            try:
                _unlink_quietly(future.result()[0])
            except BaseException:
                continue
        self._pool.shutdown(wait=True)

    def commit(self, manifest: tuple[str, bytes], *, remove: Iterable[str] = (),
               strays: Iterable[str] | None = None) -> list[Path]:
        """Put the set in place with ``manifest`` last (as :func:`write_file_set`, ``remove``
        the same); ``strays``: names whose temporaries an interrupted earlier write left are
        removed first (:func:`remove_stray_temporaries`, this set's own kept).  Returns the
        paths in the order added, the manifest's last."""
        if self._closed:
            raise ValueError(f"the file set in {self.folder} was committed or aborted already")
        try:
            temps = self._temps()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._pool.shutdown(wait=True)
        try:
            if strays is not None:
                remove_stray_temporaries(self.folder, strays, keep=[p.name for p in temps.values()])
            mname, mdata = manifest
            temps[mname] = write_temp(self.folder, mname, mdata)
        except BaseException:
            for path in temps.values():
                _unlink_quietly(path)
            raise
        files = [n for n in temps if n != mname]
        _put_in_place(self.folder, files, temps, mname, remove)
        return [self.folder / name for name in files] + [self.folder / mname]


def _put_in_place(folder: Path, files: list[str], temps: dict[str, Path], mname: str,
                  remove: Iterable[str]) -> None:
    """Rename the fsynced temporaries ``temps`` of ``files`` and the manifest ``mname`` into
    ``folder`` (see :func:`write_file_set`); on failure, the old entries back and every
    temporary removed."""
    temps = dict(temps)
    stale = [n for n in remove if n not in temps and n != mname]
    kept: dict[str, Path | None] = {}
    changed: list[str] = []  # entries changed so far, in order (undone in reverse)
    try:
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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so large data files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
