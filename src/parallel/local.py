"""Executors on this machine: in this process, and a pool of local worker processes."""

from __future__ import annotations

import multiprocessing
import os
import sys
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from . import cleanup, lifetime
from .protocol import Executor, Partitions, add_stats, check_handle, fold_in_order, persisted
from .shared import dump_shared
from .tasks import digest, init_local_worker, one_blas_thread, run_batch, run_partition_file

__all__ = ["InProcessExecutor", "ProcessExecutor", "PRELOAD"]

#: imported once by the forkserver, so each worker starts with them (spawn: ignored)
PRELOAD = ["numpy", "scipy.linalg", "scipy.special", "scipy.optimize", "threadpoolctl",
           "cloudpickle", "src.parallel.tasks", "src.estimation.em", "src.inference.bootstrap"]


class InProcessExecutor(Executor):
    """Runs everything one after another in this process, in order (workers = 1)."""

    workers = 1

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(args_list):
            with one_blas_thread():
                result = fn(*args)
            yield i, result

    def persist_partitions(self, partitions: Sequence[Any]) -> Partitions:
        parts = list(partitions)
        return Partitions(self, len(parts), parts, parts.clear)

    def map_reduce(self, fn: Callable, partitions: Partitions | Sequence[Any], *,
                   reduce: Callable[[Any, Any], Any] = add_stats, broadcast: tuple = ()) -> Any:
        if isinstance(partitions, Partitions):
            check_handle(self, partitions)
            partitions = partitions.ref
        with one_blas_thread():
            return fold_in_order(((i, fn(p, *broadcast)) for i, p in enumerate(partitions)),
                                 len(partitions), reduce)

    def close(self) -> None:
        pass


class ProcessExecutor(Executor):
    """A pool of local worker processes (forkserver on Linux, spawn elsewhere).

    Units go in small batches (at most 8, one by one when few; batches shrink as the work
    runs out so no worker idles at the end), at most ``2 * workers`` batches ahead of the
    consumer, so a driver that stops early (interruption) loses only the units in flight.
    Task functions reach workers through a memory-backed task file written once per
    distinct function; persisted partitions are task files the workers map, sharing one
    copy.  Workers die with the driver and stale task files are removed at creation
    (``lifetime.py``, ``cleanup.py``).
    """

    def __init__(self, workers: int) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        cleanup.remove_stale_task_files()
        cleanup.own_multiprocessing_tempdir()  # not a pymp-XXXX folder a crash leaves for ever
        self.workers = int(workers)
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":  # workers fork from a server that imported these once
            ctx.set_forkserver_preload(lifetime.forkserver_preload() + PRELOAD)
        self._lifeline = lifetime.Lifeline(ctx)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                         initializer=init_local_worker,
                                         initargs=(self._lifeline.reader, os.getpid()))
        self._sem_record = cleanup.record_semaphores(_semaphore_names(self._pool))
        # Start the workers now, in the background: the forkserver's imports (about a
        # second) then overlap with whatever the driver does before the first map.
        self._warm = [self._pool.submit(os.getpid) for _ in range(self.workers)]
        self._fn_files: dict[bytes, str] = {}
        self._handles: list[Partitions] = []
        self._closed = False

    def wait_ready(self) -> None:
        """Block until every worker process has started (for benchmarks)."""
        wait(self._warm)

    def _fn_file(self, fn: Callable) -> tuple[bytes, str]:
        """The key and task file of ``fn`` (written once per distinct pickled function)."""
        payload = cloudpickle.dumps(fn)
        key = digest(payload)
        if key not in self._fn_files:
            self._fn_files[key] = cleanup.write_task_file(payload)
        return key, self._fn_files[key]

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        key, path = self._fn_file(fn)
        n_units, nxt = len(args_list), 0
        pending: dict[Future, list[int]] = {}
        try:
            while True:
                while len(pending) < 2 * self.workers and nxt < n_units:
                    size = max(1, min(8, (n_units - nxt) // (4 * self.workers)))
                    idx = list(range(nxt, min(nxt + size, n_units)))
                    nxt += len(idx)
                    blob = cloudpickle.dumps([tuple(args_list[i]) for i in idx])
                    pending[self._pool.submit(run_batch, key, path, blob)] = idx
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

    def persist_partitions(self, partitions: Sequence[Any]) -> Partitions:
        paths: list[str] = []
        try:
            for part in partitions:
                fh, path = cleanup.create_task_file("part")
                paths.append(path)
                with fh:
                    dump_shared(part, fh)
        except BaseException:
            _unlink_all(paths)
            raise
        handle = Partitions(self, len(paths), (uuid.uuid4().hex, paths),
                            lambda: _unlink_all(paths))
        self._handles = [h for h in self._handles if not h.released] + [handle]
        return handle

    def map_reduce(self, fn: Callable, partitions: Partitions | Sequence[Any], *,
                   reduce: Callable[[Any, Any], Any] = add_stats, broadcast: tuple = ()) -> Any:
        with persisted(self, partitions) as handle:
            key, path = self._fn_file(fn)
            blob = cloudpickle.dumps(tuple(broadcast))
            tag, paths = handle.ref
            futures = {self._pool.submit(run_partition_file, key, path, tag, i, p, blob): i
                       for i, p in enumerate(paths)}
            try:
                return fold_in_order(((futures[f], f.result()) for f in as_completed(futures)),
                                     len(paths), reduce)
            finally:
                for fut in futures:
                    fut.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lifeline.close()  # after the workers exited: they take its end as the driver's
        for handle in self._handles:
            handle.release()
        self._handles.clear()
        _unlink_all(self._fn_files.values())  # now that no task can still read them
        self._fn_files.clear()
        if self._sem_record:  # the pool's own finalizers unlink the semaphores
            _unlink_all([self._sem_record])


def _semaphore_names(pool: ProcessPoolExecutor) -> list[str]:
    """Names of the named semaphores of the pool's queues (empty where there are none)."""
    from multiprocessing.synchronize import SemLock
    names = []
    for queue in (getattr(pool, "_call_queue", None), getattr(pool, "_result_queue", None)):
        for value in vars(queue).values() if queue is not None else ():
            if isinstance(value, SemLock):
                names.append(getattr(value._semlock, "name", None))
    return [n for n in names if n]


def _unlink_all(paths: Any) -> None:
    for path in list(paths):
        try:
            os.unlink(path)
        except OSError:
            pass
