"""One run per task: an OS-level lock (filelock) and an owner file naming who holds it.

The lock is released by the OS when its holder dies, so a killed run never blocks the
next one; the owner file (pid, host, start time) lets a refused run name the holder.
:func:`lock_is_held` only reads (a shared ``flock`` probe on a read-only descriptor), so
``--check-progress`` works on a folder that cannot be written.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from filelock import FileLock, Timeout

from ..utils.errors import TaskRunning
from ..utils.messages import register, t
from .atomic import atomic_write_bytes

__all__ = ["TaskLock", "read_owner", "lock_is_held"]

register({
    "progress.running": {
        "en": "Task '{task}' is already running in process {pid} on {host} (started {started}); wait for it to finish or stop it first.",
        "zh": "任务 '{task}' 正在主机 {host} 的进程 {pid} 中运行（开始于 {started}）；请等待其结束或先停止它。"},
})


def read_owner(path: Path) -> dict:
    """The owner file's content, or ``{}`` when it is missing or unreadable."""
    try:
        owner = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class TaskLock:
    """The lock of one task: ``acquire()`` or TaskRunning naming the holder, ``release()``."""

    def __init__(self, task: str, lock_path: Path, owner_path: Path) -> None:
        self.task = task
        self.lock_path = Path(lock_path)
        self.owner_path = Path(owner_path)
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Take the lock, or TaskRunning naming the holder; OSError when the folder cannot
        hold a lock file at all (read-only, full, not a folder), so that is never mistaken
        for another run holding it."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        os.close(fd)
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = read_owner(self.owner_path)
            raise TaskRunning(t("progress.running", task=self.task,
                                pid=owner.get("pid", "?"), host=owner.get("host", "?"),
                                started=owner.get("started", "?"))) from None
        self._lock = lock

    def write_owner(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_bytes(self.owner_path, json.dumps(info).encode())

    def release(self) -> None:
        if self._lock is not None:
            try:
                self.owner_path.unlink(missing_ok=True)
            except OSError:
                pass
            self._lock.release()
            self._lock = None


def lock_is_held(lock_path: Path) -> bool:
    """True while another process holds the lock at ``lock_path`` (reads only)."""
    if fcntl is not None:
        try:
            fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # missing or a symbolic link (never followed): no lock of a run there
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return True
            raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)
    if not Path(lock_path).exists():  # pragma: no cover - not POSIX
        return False
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
