"""Task files: what local workers read (functions, data partitions), and removing what a dead run left.

Files live in memory (``/dev/shm`` on Linux) and are named ``em-{kind}-{pid}-{random}.pkl``
(created exclusively with ``mkstemp``), so after a crash (SIGKILL, power cut of a container)
the creating process is known and ``remove_stale_task_files`` can delete the files of runs
that no longer exist without touching those of runs still going.  A pool also records the
names of its named semaphores (``em-sems-{pid}-{random}.json``): multiprocessing's resource
tracker unlinks them when only the driver is killed, but when the whole process group is
killed the tracker dies too and only this record lets the next run unlink them.  Files of the earlier
format without a pid are removed once an hour old (workers read them within seconds).
multiprocessing's own temporary folder (the forkserver's socket; ``pymp-XXXX`` by default,
which a killed run leaves in ``/tmp`` for ever) is made ``em-mp-{pid}-{random}`` beside the
task files by :func:`own_multiprocessing_tempdir`, so it is removed the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from typing import BinaryIO, Iterable

import psutil

__all__ = ["task_dir", "create_task_file", "write_task_file", "record_semaphores",
           "task_files_of", "remove_stale_task_files", "own_multiprocessing_tempdir"]

KINDS = ("task", "part")
_NAME = re.compile(r"^em-(task|part|sems)-(\d+)-[^/]*\.(?:pkl|json)$")
#: multiprocessing's temporary folder of process pid (see own_multiprocessing_tempdir)
_MP_DIR = re.compile(r"^em-mp-(\d+)-[a-z0-9_]{8}$")
#: the earlier format without the pid (``em-task-{random}.pkl``): removed once this old
_LEGACY = re.compile(r"^em-task-[a-z0-9_]{8}\.pkl$")
_LEGACY_AGE = 3600.0
#: a process that started this long after a file was written cannot have written it
_CLOCK_SLACK = 2.0


def task_dir() -> str:
    """The folder of task files: memory-backed ``/dev/shm`` when writable, else the temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def create_task_file(kind: str = "task") -> tuple[BinaryIO, str]:
    """A new, exclusively created task file of this process, open for writing, and its path."""
    if kind not in KINDS:
        raise ValueError(f"task file kind must be one of {KINDS}, got {kind!r}")
    fd, path = tempfile.mkstemp(prefix=f"em-{kind}-{os.getpid()}-", suffix=".pkl",
                                dir=task_dir())
    return os.fdopen(fd, "wb"), path


def write_task_file(payload: bytes, kind: str = "task") -> str:
    """Write ``payload`` to a new task file of this process; its path."""
    fh, path = create_task_file(kind)
    try:
        with fh:
            fh.write(payload)
    except BaseException:
        _unlink(path)
        raise
    return path


def record_semaphores(names: Iterable[str]) -> str | None:
    """Record the names of this process's named semaphores; the record's path (None: none)."""
    names = [n for n in names if n]
    if not names:
        return None
    fd, path = tempfile.mkstemp(prefix=f"em-sems-{os.getpid()}-", suffix=".json", dir=task_dir())
    with os.fdopen(fd, "w") as fh:
        json.dump(names, fh)
    return path


def own_multiprocessing_tempdir() -> str:
    """Give this process's multiprocessing a temporary folder named after its pid.

    multiprocessing puts the forkserver's socket in a ``pymp-XXXX`` folder that only a normal
    exit removes; this one (``em-mp-{pid}-{random}``, in :func:`task_dir`) is removed at exit
    the same way and, after a crash, by :func:`remove_stale_task_files`.  A folder already
    chosen (a forkserver already running) is kept.
    """
    from multiprocessing import process, util

    config = process.current_process()._config
    current = config.get("tempdir")
    if current and os.path.isdir(current):
        return current
    path = tempfile.mkdtemp(prefix=f"em-mp-{os.getpid()}-", dir=task_dir())
    config["tempdir"] = path
    # as multiprocessing.util.get_temp_dir does for its own folder
    util.Finalize(None, shutil.rmtree, args=(path, True), exitpriority=-100)
    return path


def task_files_of(pid: int, directory: str | None = None) -> list[str]:
    """The task files created by process ``pid`` (sorted paths)."""
    directory = directory or task_dir()
    return sorted(os.path.join(directory, name) for name in _names(directory)
                  if int(_NAME.match(name).group(2)) == pid)


def remove_stale_task_files(directory: str | None = None) -> list[str]:
    """Delete task files whose creating process is gone (pid dead, a zombie, or reused).

    Cheap (one directory listing); files of live runs are kept.  Returns the removed paths.
    """
    directory = directory or task_dir()
    removed: list[str] = []
    for name in _names(directory, legacy=True):
        path = os.path.join(directory, name)
        try:
            written = os.stat(path).st_mtime
        except OSError:
            continue
        match = _NAME.match(name)
        stale = (not _creator_alive(int(match.group(2)), written) if match
                 else time.time() - written > _LEGACY_AGE)
        if stale and match and match.group(1) == "sems":
            _unlink_semaphores(path)
        if stale and _unlink(path):
            removed.append(path)
    for name in _mp_dirs(directory):
        path = os.path.join(directory, name)
        try:
            written = os.lstat(path).st_mtime
        except OSError:
            continue
        if not _creator_alive(int(_MP_DIR.match(name).group(1)), written):
            shutil.rmtree(path, ignore_errors=True)  # rmtree never follows a symlink inside
            removed.append(path)
    return removed


def _mp_dirs(directory: str) -> list[str]:
    try:
        return [e.name for e in os.scandir(directory)
                if _MP_DIR.match(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _names(directory: str, legacy: bool = False) -> list[str]:
    try:
        return [n for n in os.listdir(directory)
                if _NAME.match(n) or (legacy and _LEGACY.match(n))]
    except OSError:
        return []


def _creator_alive(pid: int, written: float) -> bool:
    """Whether process ``pid`` may still be the one that wrote a file at time ``written``."""
    if pid == os.getpid():
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= written + _CLOCK_SLACK  # else: the pid was reused
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def _unlink_semaphores(record: str) -> None:
    """Unlink the named semaphores listed in ``record`` (those already gone are skipped)."""
    try:
        from _multiprocessing import sem_unlink
        with open(record) as fh:
            names = json.load(fh)
    except (ImportError, OSError, ValueError):
        return
    for name in names if isinstance(names, list) else []:
        try:
            sem_unlink(str(name))
        except OSError:
            pass


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
