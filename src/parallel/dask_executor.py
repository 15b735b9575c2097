"""Executor on an existing Dask distributed cluster (a scheduler address or a ``Client``)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from .protocol import Executor, Partitions, add_stats, fold_in_order, persisted
from .tasks import digest, run_partition, run_task

__all__ = ["DaskExecutor"]

_FN_FUTURES = 8


class DaskExecutor(Executor):
    """Work on a Dask cluster; ``workers`` is the cluster's total thread count.

    Each distinct task function is scattered to every worker once (kept for later calls);
    units' results are gathered as they complete.  ``persist_partitions`` scatters the
    partitions once (each to one worker), and ``map_reduce`` runs each partition's task
    where its data live, sending only the function's future and the broadcast bytes.
    """

    def __init__(self, scheduler: Any) -> None:
        from distributed import Client
        if isinstance(scheduler, Client):
            self.client, self._own = scheduler, False
        else:
            self.client, self._own = Client(scheduler, set_as_default=False), True
        self.workers = max(sum(self.client.nthreads().values()), 1)
        self._fns: "OrderedDict[bytes, Any]" = OrderedDict()
        self._handles: list[Partitions] = []

    def _fn_future(self, fn: Callable) -> tuple[bytes, Any]:
        """The key of ``fn`` and its pickled bytes scattered to every worker (once)."""
        payload = cloudpickle.dumps(fn)
        key = digest(payload)
        fut = self._fns.get(key)
        if fut is None:
            fut = self._fns[key] = self.client.scatter(payload, broadcast=True, hash=False)
            while len(self._fns) > _FN_FUTURES:
                self._fns.popitem(last=False)
        else:
            self._fns.move_to_end(key)
        return key, fut

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        key, payload = self._fn_future(fn)
        tag = uuid.uuid4().hex
        futures = [self.client.submit(run_task, key, payload, cloudpickle.dumps(tuple(args)),
                                      pure=False, key=f"task-{tag}-{i}")
                   for i, args in enumerate(args_list)]
        yield from self._gather(futures)

    def persist_partitions(self, partitions: Sequence[Any]) -> Partitions:
        futures = self.client.scatter(list(partitions), hash=False)
        handle = Partitions(self, len(futures), futures, lambda: self._cancel(futures))
        self._handles = [h for h in self._handles if not h.released] + [handle]
        return handle

    def map_reduce(self, fn: Callable, partitions: Partitions | Sequence[Any], *,
                   reduce: Callable[[Any, Any], Any] = add_stats, broadcast: tuple = ()) -> Any:
        with persisted(self, partitions) as handle:
            key, payload = self._fn_future(fn)
            blob = cloudpickle.dumps(tuple(broadcast))
            tag = uuid.uuid4().hex
            futures = [self.client.submit(run_partition, key, payload, part, blob,
                                          pure=False, key=f"part-{tag}-{i}")
                       for i, part in enumerate(handle.ref)]
            return fold_in_order(self._gather(futures), len(futures), reduce)

    def _gather(self, futures: list[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` as futures complete; unfinished ones cancelled on the way out."""
        from distributed import as_completed
        index = {fut.key: i for i, fut in enumerate(futures)}
        left = dict(zip(index, futures))
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                left.pop(fut.key, None)
                yield index[fut.key], fut.result()
        finally:
            if left:
                self._cancel(list(left.values()))

    def _cancel(self, futures: list[Any]) -> None:
        """Cancel ``futures`` (nothing to do once the client is closed)."""
        if self.client.status not in ("closing", "closed"):
            self.client.cancel(futures)

    def close(self) -> None:
        for handle in self._handles:
            handle.release()
        self._handles.clear()
        self._fns.clear()
        if self._own:
            self.client.close()
