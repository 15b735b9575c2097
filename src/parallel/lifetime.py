"""Local worker processes never outlive the run (driver) that started them, even after SIGKILL.

Process tree on Linux: driver -> forkserver -> workers, and driver -> resource tracker.
CPython alone does not end them when the driver is killed: every worker holds the write
end of its task queue (so it waits forever), of the forkserver's "alive" pipe and of the
resource tracker's pipe (so those two wait for the workers).  Two mechanisms end the
workers; the forkserver and the resource tracker then see end-of-file and exit by
themselves (the tracker first unlinks the semaphores the dead run leaked, which is why it
is never killed):

* **lifeline** (portable): the driver keeps the only write end of a pipe; a daemon thread
  in each worker blocks reading it and ends the worker at end-of-file, i.e. as soon as
  the driver is gone, however it died.  No polling, no pid reuse.
* **parent-death signal** (Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, kernel-level so it
  works while a worker holds the GIL): each worker dies with the forkserver, and the
  forkserver dies with the driver.  The signal fires when the *thread* that started the
  process ends, so the forkserver gets it only when started from the driver's main thread
  (``forkserver_preload``); workers are forked by the forkserver's only thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["set_parent_death_signal", "forkserver_preload", "Lifeline", "watch_driver"]

_PR_SET_PDEATHSIG = 1
#: imported by the forkserver only; its import sets the forkserver's parent-death signal
DEATHSIG_MODULE = "src.parallel._forkserver_deathsig"


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def in_forkserver_main() -> bool:
    """True while ``multiprocessing.forkserver.main`` runs in this process (its preloads)."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "main"
                and frame.f_globals.get("__name__") == "multiprocessing.forkserver"):
            return True
        frame = frame.f_back
    return False


def forkserver_preload() -> list[str]:
    """Extra forkserver preloads: the parent-death signal, when started from the main thread."""
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        return [DEATHSIG_MODULE]
    return []


class Lifeline:
    """Driver side: a pipe whose write end only the driver holds; ``reader`` goes to workers."""

    def __init__(self, ctx: Any) -> None:
        self.reader, self._writer = ctx.Pipe(duplex=False)

    def close(self) -> None:
        """Close both ends (after the workers have exited: they would take it as the end)."""
        self.reader.close()
        self._writer.close()


def watch_driver(reader: Connection, driver_pid: int) -> None:
    """Worker side: end this process when the driver dies (lifeline thread, death signal)."""
    if os.getppid() != driver_pid:  # started by the forkserver: die with it
        set_parent_death_signal()
    threading.Thread(target=_exit_at_end_of_file, args=(reader,), daemon=True,
                     name="driver-lifeline").start()


def _exit_at_end_of_file(reader: Connection) -> None:
    try:
        while True:
            reader.recv_bytes()  # nothing is ever sent: returns only at end-of-file
    except (EOFError, OSError):
        pass
    os._exit(1)  # the driver is gone: nobody will read this worker's results
