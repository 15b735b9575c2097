"""Inside a Dask worker: the process settings our compute tasks need, set from the task.

Two of a Dask worker's defaults cost a numpy-heavy task like an E-step a fifth of its time
(measured in ``benchmarks/README.md``, "The Dask speed-up on a quiet machine"):

* its allocator: Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which switches off
  glibc's adaptive mmap threshold, and a task thread allocates from a per-thread arena whose
  64 MB heaps glibc deletes as soon as the newest one is empty, so the same few-MB buffers are
  mapped again on every use (88,000 page faults in one pass over 1e7 rows).
  :func:`tune_malloc` sets, once per process, the ceilings glibc's adaptive scheme reaches and
  a top pad that keeps an emptied heap;
* its diagnostics: every 10 ms the worker's event loop takes the GIL and walks the task
  thread's stack (the statistical profiler, the dashboard's Profile page), 15-20% of an E-step
  pass; and every 20 ms it wakes to time itself (the health tick), which on a machine whose
  cores all compute preempts a task each time.  :func:`compute` stops the profiler and slows
  the tick to once a second while our tasks run, and restores both when the last of them ends
  (the task stream still shows the tasks).

:func:`compute` is the context every compute task of the engine and the executor runs in: one
BLAS thread, the allocator tuned, the worker's diagnostics quietened.  Outside a Dask worker it
only limits BLAS.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .tasks import one_blas_thread

__all__ = ["compute", "tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "QUIET_TICK_MS"]

#: glibc's ceilings for the sizes it serves from the heap and keeps at its top when freed
#: (what its adaptive threshold reaches: 32 MB and twice that); the trim threshold is also the
#: top pad, so a per-thread arena keeps an emptied heap instead of unmapping it
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_MALLOC_TUNED: list[bool] = []

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Worker: let glibc serve the E-step's buffers (a few MB) from its heaps again.

    Set once per process; at most :data:`TRIM_THRESHOLD` of freed memory stays with each of
    the worker's arenas.  False where there is no glibc ``mallopt``."""
    if not _MALLOC_TUNED:
        ok = False
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
            ok = all(libc.mallopt(param, value) == 1 for param, value in (
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (_M_TOP_PAD, TRIM_THRESHOLD)))
        except (OSError, AttributeError):
            pass
        _MALLOC_TUNED.append(ok)
    return _MALLOC_TUNED[0]


#: the worker's event-loop health tick while our tasks run (Dask's default: every 20 ms)
QUIET_TICK_MS = 1000.0


class _QuietWorker:
    """The worker's diagnostics quietened while at least one of our tasks is inside: its
    statistical profiler (``profile``) stopped and its event-loop health tick (``tick``) slowed
    to :data:`QUIET_TICK_MS` (below the 3 s at which Dask reports an unresponsive loop, so a
    slowed tick raises no false alarm).  The memory monitor, heartbeats and the rest stay.

    Tasks enter and leave from their threads; the callbacks change on the worker's event loop
    (tornado's callbacks are not thread-safe), in order, and are restored only by the change
    that made them and only when no task is inside by then."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.stopped: Any = None                  # the profiler this stopped
        self.slowed: tuple[Any, float] | None = None   # the tick this slowed, its interval

    @staticmethod
    def _worker() -> Any:
        if "distributed" not in sys.modules:   # not in a Dask worker
            return None
        from distributed import get_worker
        try:
            worker = get_worker()
        except ValueError:
            return None
        return worker if getattr(worker, "periodic_callbacks", None) is not None else None

    def _quieten(self, worker: Any) -> None:        # on the event loop
        with self.lock:
            if not self.inside:
                return
            profile = worker.periodic_callbacks.get("profile")
            if self.stopped is None and profile is not None and profile.is_running():
                profile.stop()
                self.stopped = profile
            tick = worker.periodic_callbacks.get("tick")
            if self.slowed is None and tick is not None and tick.callback_time < QUIET_TICK_MS:
                self.slowed = (tick, tick.callback_time)
                tick.callback_time = QUIET_TICK_MS

    def _restore(self) -> None:                    # on the event loop
        with self.lock:
            if self.inside:
                return
            if self.stopped is not None:
                self.stopped.start()
                self.stopped = None
            if self.slowed is not None:
                tick, interval = self.slowed
                tick.callback_time = interval
                self.slowed = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        worker = self._worker()
        if worker is None:
            yield
            return
        with self.lock:
            self.inside += 1
        self._on_loop(worker, self._quieten, worker)
        try:
            yield
        finally:
            with self.lock:
                self.inside -= 1
            self._on_loop(worker, self._restore)

    @staticmethod
    def _on_loop(worker: Any, fn: Any, *args: Any) -> None:
        """``fn(*args)`` on the worker's event loop; nothing when the loop is closing (the
        worker is going away with its diagnostics)."""
        try:
            worker.loop.add_callback(fn, *args)
        except RuntimeError:
            pass


_QUIET = _QuietWorker()


@contextmanager
def compute() -> Iterator[None]:
    """A compute task's context: one BLAS thread; in a Dask worker also the allocator tuned
    (once) and the worker's profiler and health tick quietened (:class:`_QuietWorker`)."""
    if not _MALLOC_TUNED and "distributed" in sys.modules:
        tune_malloc()
    with _QUIET(), one_blas_thread():
        yield
