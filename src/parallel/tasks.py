"""What runs inside workers: unpickling task functions once, batches of units, partitions.

Task functions travel as cloudpickle bytes with a digest ``key``; each worker unpickles a
given function once (``load_fn``), so a user model loaded from a file (registered with
``cloudpickle.register_pickle_by_value``) reaches workers by value and large data bound
into the function are unpickled once per worker.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from typing import Any, Callable, ContextManager

import cloudpickle
from threadpoolctl import ThreadpoolController, threadpool_limits

from .lifetime import watch_driver
from .shared import load_shared

_FN_CACHE: "OrderedDict[bytes, Callable]" = OrderedDict()
_FN_CACHE_SIZE = 8
#: persisted partitions this worker has mapped: handle id -> {index: partition}
_PARTS: "OrderedDict[str, dict[int, Any]]" = OrderedDict()
_PARTS_HANDLES = 2


#: (controller, len(sys.modules) when made): finding the BLAS libraries costs milliseconds
_CONTROLLER: list[Any] = [None, -1]


def one_blas_thread() -> ContextManager:
    """``threadpool_limits(1)`` without rescanning the loaded libraries on every task.

    The controller is made again whenever modules were imported since (a new BLAS library
    can only arrive with an import).
    """
    if _CONTROLLER[1] != len(sys.modules):
        _CONTROLLER[:] = [ThreadpoolController(), len(sys.modules)]
    return _CONTROLLER[0].limit(limits=1)


def digest(payload: bytes) -> bytes:
    """The key a pickled task function is known by."""
    return hashlib.blake2b(payload, digest_size=16).digest()


def load_fn(key: bytes, payload: bytes | None = None, path: str | None = None) -> Callable:
    """The task function ``key``, unpickled from ``payload`` (or the file ``path``) once."""
    fn = _FN_CACHE.get(key)
    if fn is None:
        if payload is None:
            with open(path, "rb") as fh:
                payload = fh.read()
        fn = _FN_CACHE[key] = cloudpickle.loads(payload)
        while len(_FN_CACHE) > _FN_CACHE_SIZE:
            _FN_CACHE.popitem(last=False)
    else:
        _FN_CACHE.move_to_end(key)
    return fn


def init_local_worker(lifeline: Any, driver_pid: int) -> None:
    """Initializer of local worker processes: die with the driver; BLAS at 1 thread.

    These workers serve this pipeline only, so BLAS is limited once for the whole process.
    """
    watch_driver(lifeline, driver_pid)
    threadpool_limits(1)


def run_batch(key: bytes, path: str, batch: bytes) -> list[Any]:
    """Local worker: ``fn(*args)`` for each args of the pickled ``batch``."""
    fn = load_fn(key, path=path)
    return [fn(*args) for args in cloudpickle.loads(batch)]


def run_partition_file(key: bytes, path: str, handle: str, index: int, part_path: str,
                       broadcast: bytes) -> Any:
    """Local worker: ``fn(partition, *broadcast)``, the partition mapped from its file once."""
    fn = load_fn(key, path=path)
    parts = _PARTS.get(handle)
    if parts is None:
        parts = _PARTS[handle] = {}
        while len(_PARTS) > _PARTS_HANDLES:  # released handles' maps go with them
            _PARTS.popitem(last=False)
    else:
        _PARTS.move_to_end(handle)
    part = parts.get(index)
    if part is None:
        part = parts[index] = load_shared(part_path)
    return fn(part, *cloudpickle.loads(broadcast))


def run_task(key: bytes, payload: bytes, args: bytes) -> Any:
    """Dask worker: one BLAS thread, then ``fn(*args)``."""
    from .dask_worker import compute
    fn = load_fn(key, payload)
    with compute():
        return fn(*cloudpickle.loads(args))


def run_partition(key: bytes, payload: bytes, partition: Any, broadcast: bytes) -> Any:
    """Dask worker: one BLAS thread, then ``fn(partition, *broadcast)``."""
    from .dask_worker import compute
    fn = load_fn(key, payload)
    with compute():
        return fn(partition, *cloudpickle.loads(broadcast))
