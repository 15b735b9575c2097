"""Where independent units of work run: in process, in local processes, on a Dask cluster.

Every executor has ``map_unordered(fn, args_list)``, which runs ``fn(*args)`` for each tuple
in ``args_list`` and yields ``(index, result)`` as tasks finish, and ``close()``; each is a
context manager.  Inside every task BLAS is limited to one thread (threadpoolctl), so a
task's numbers do not depend on where it ran.  The function travels to workers as
cloudpickle bytes, serialised once per ``map_unordered`` call, so a user model loaded from a
file (registered with ``cloudpickle.register_pickle_by_value``) reaches them by value.
Leaving the context (or an exception in the consumer) cancels the tasks not yet started.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import tempfile
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

import cloudpickle
from threadpoolctl import threadpool_limits

__all__ = ["InProcessExecutor", "ProcessExecutor", "DaskExecutor", "make_executor"]

_FN_CACHE: dict[bytes, Callable] = {}
#: task functions are handed to local workers through a file here (memory-backed on Linux)
_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
#: imported once by the forkserver, so each worker starts with them (spawn: ignored)
PRELOAD = ["numpy", "scipy.linalg", "scipy.special", "scipy.optimize", "threadpoolctl",
           "cloudpickle", "src.estimation.em", "src.inference.bootstrap"]


def _load_fn(payload: bytes) -> Callable:
    """Unpickle a task function once per worker process (keyed by a digest of the bytes)."""
    key = hashlib.blake2b(payload, digest_size=16).digest()
    fn = _FN_CACHE.get(key)
    if fn is None:
        if len(_FN_CACHE) > 8:
            _FN_CACHE.clear()
        fn = _FN_CACHE[key] = cloudpickle.loads(payload)
    return fn


def _run_task(payload: bytes, args: bytes) -> Any:
    """Worker-side entry: one BLAS thread, then ``fn(*args)``."""
    fn = _load_fn(payload)
    with threadpool_limits(1):
        return fn(*cloudpickle.loads(args))


_BLAS_LIMITED: list[bool] = []


def _run_batch_from_file(key: bytes, path: str, batch: bytes) -> list[Any]:
    """Worker-side entry for local processes: ``fn(*args)`` for each args of the batch.

    The function is read from ``path`` only the first time this worker meets ``key``, so
    large data bound into it cross once per worker.  These workers serve this pipeline
    only, so BLAS is limited to one thread once for the whole process.
    """
    if not _BLAS_LIMITED:
        threadpool_limits(1)
        _BLAS_LIMITED.append(True)
    fn = _FN_CACHE.get(key)
    if fn is None:
        with open(path, "rb") as fh:
            fn = _load_fn(fh.read())
        _FN_CACHE[key] = fn
    return [fn(*args) for args in cloudpickle.loads(batch)]


class InProcessExecutor:
    """Runs tasks one after another in this process, in order (workers = 1)."""

    workers = 1

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(args_list):
            with threadpool_limits(1):
                result = fn(*args)
            yield i, result

    def close(self) -> None:
        pass

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessExecutor(InProcessExecutor):
    """A pool of local worker processes (forkserver on Linux, spawn elsewhere).

    At most ``2 * workers`` tasks (each a batch of at most 8 units, one unit when there are
    few) are submitted ahead of the consumer, so a driver that stops early (interruption)
    loses only the units in flight and leaves few tasks to cancel.
    """

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":  # workers fork from a server that imported these once
            ctx.set_forkserver_preload(PRELOAD)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        # Start the workers now, in the background: the forkserver's imports (about a
        # second) then overlap with whatever the driver does before the first map.
        self._warm = [self._pool.submit(os.getpid) for _ in range(self.workers)]
        self._files: list[str] = []

    def wait_ready(self) -> None:
        """Block until every worker process has started (for benchmarks)."""
        wait(self._warm)

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        payload = cloudpickle.dumps(fn)
        key = hashlib.blake2b(payload, digest_size=16).digest()
        fd, path = tempfile.mkstemp(prefix="em-task-", suffix=".pkl", dir=_TMP_DIR)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        # Small batches of units per task cut the per-task cost (a round trip through the
        # pool) for many short units; batches shrink as the work runs out (guided
        # scheduling) so no worker idles at the end, and few units go one by one.
        n_units, nxt = len(args_list), 0
        pending: dict[Any, list[int]] = {}
        try:
            while True:
                while len(pending) < 2 * self.workers and nxt < n_units:
                    size = max(1, min(8, (n_units - nxt) // (4 * self.workers)))
                    idx = list(range(nxt, min(nxt + size, n_units)))
                    nxt += len(idx)
                    blob = cloudpickle.dumps([tuple(args_list[i]) for i in idx])
                    pending[self._pool.submit(_run_batch_from_file, key, path, blob)] = idx
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f][0]):
                    idx = pending.pop(fut)
                    for i, result in zip(idx, fut.result()):
                        yield i, result
        finally:
            for fut in pending:
                fut.cancel()
            self._files.append(path)  # removed in close(), once no task can still read it

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for path in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files.clear()


class DaskExecutor(InProcessExecutor):
    """Tasks on an existing Dask distributed cluster (``scheduler`` address or a Client).

    The function is scattered to every worker once per ``map_unordered`` call; results are
    gathered as they complete.
    """

    def __init__(self, scheduler: Any) -> None:
        from distributed import Client
        if isinstance(scheduler, Client):
            self.client, self._own = scheduler, False
        else:
            self.client, self._own = Client(scheduler, set_as_default=False), True
        self.workers = max(sum(self.client.nthreads().values()), 1)

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed
        payload = self.client.scatter(cloudpickle.dumps(fn), broadcast=True, hash=False)
        futures = {}
        tag = uuid.uuid4().hex
        for i, args in enumerate(args_list):
            fut = self.client.submit(_run_task, payload, cloudpickle.dumps(tuple(args)),
                                     pure=False, key=f"task-{tag}-{i}")
            futures[fut.key] = (i, fut)
        try:
            for fut in as_completed([f for _, f in futures.values()], loop=self.client.loop):
                i, _ = futures.pop(fut.key)
                yield i, fut.result()
        finally:
            if futures:
                self.client.cancel([f for _, f in futures.values()])

    def close(self) -> None:
        if self._own:
            self.client.close()


def make_executor(workers: int | None = None, scheduler: Any = None) -> InProcessExecutor:
    """An executor: Dask when ``scheduler`` is given, local processes when ``workers > 1``,
    otherwise in-process."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None or int(workers) <= 1:
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return InProcessExecutor()
    return ProcessExecutor(int(workers))
