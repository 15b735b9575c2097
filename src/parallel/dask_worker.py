"""Inside a Dask worker: the process settings our compute tasks need, set from the task.

Two of a Dask worker's defaults cost a numpy-heavy task like an E-step a fifth of its time
(measured in ``benchmarks/README.md``, "The Dask speed-up on a quiet machine"):

* its allocator: Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which switches off
  glibc's adaptive mmap threshold, and a task thread allocates from a per-thread arena whose
  64 MB heaps glibc deletes as soon as the newest one is empty, so the same few-MB buffers are
  mapped again on every use (88,000 page faults in one pass over 1e7 rows).
  :func:`tune_malloc` sets, once per process, the ceilings glibc's adaptive scheme reaches and
  a top pad that keeps an emptied heap;
* its statistical profiler: every 10 ms the worker's event loop takes the GIL and walks the
  task thread's stack (the dashboard's Profile page); for a task that runs Python between
  numpy calls that is 15-20% of its time.  :func:`compute` pauses it while our tasks run and
  starts it again when the last of them ends (the task stream still shows them).

:func:`compute` is the context every compute task of the engine and the executor runs in: one
BLAS thread, the allocator tuned, the profiler paused.  Outside a Dask worker it only limits
BLAS.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .tasks import one_blas_thread

__all__ = ["compute", "tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

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


class _ProfilerPause:
    """The worker's ``profile`` periodic callback stopped while at least one task is inside.

    Tasks enter and leave from their threads; the callback is stopped and started on the
    worker's event loop (tornado's callbacks are not thread-safe), in order, and started again
    only if it was this pause that stopped it and no task is inside by then."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.stopped: Any = None      # the callback this pause stopped

    @staticmethod
    def _callback() -> tuple[Any, Any]:
        if "distributed" not in sys.modules:   # not in a Dask worker
            return None, None
        from distributed import get_worker
        try:
            worker = get_worker()
        except ValueError:
            return None, None
        callbacks = getattr(worker, "periodic_callbacks", None) or {}
        return worker, callbacks.get("profile")

    def _stop(self, callback: Any) -> None:        # on the event loop
        with self.lock:
            if self.inside and callback.is_running():
                callback.stop()
                self.stopped = callback

    def _start(self) -> None:                      # on the event loop
        with self.lock:
            if not self.inside and self.stopped is not None:
                self.stopped.start()
                self.stopped = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        worker, callback = self._callback()
        if callback is None:
            yield
            return
        with self.lock:
            self.inside += 1
        worker.loop.add_callback(self._stop, callback)
        try:
            yield
        finally:
            with self.lock:
                self.inside -= 1
            worker.loop.add_callback(self._start)


_PROFILER_PAUSE = _ProfilerPause()


@contextmanager
def compute() -> Iterator[None]:
    """A compute task's context: one BLAS thread; in a Dask worker also the allocator tuned
    (once) and the statistical profiler paused."""
    if not _MALLOC_TUNED and "distributed" in sys.modules:
        tune_malloc()
    with _PROFILER_PAUSE(), one_blas_thread():
        yield
