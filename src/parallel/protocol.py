"""The ``Executor`` protocol every executor follows (in process, local processes, Dask), as equals.

Two kinds of work:

* independent units: ``map_unordered(fn, args_list)`` yields ``(index, fn(*args))`` as units
  finish (random starts, bootstrap replicates);
* an ordered map-reduce over data partitions: ``map_reduce(fn, partitions, reduce=...,
  broadcast=...)`` computes ``fn(partition, *broadcast)`` for every partition (additive
  statistics: arrays, dicts/tuples of arrays, numbers) and folds the results **from the
  left in partition order**, ``reduce(...reduce(reduce(r0, r1), r2)..., r_last)``, so the
  result is bitwise identical whatever the number or kind of workers.
  ``persist_partitions(partitions)`` places the partitions with the workers once and
  returns a ``Partitions`` handle; repeated ``map_reduce(fn, handle, broadcast=...)`` calls
  (one per EM iteration) then send only ``fn`` (once) and the small broadcast value.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Executor", "Partitions", "add_stats", "fold_in_order", "check_handle", "persisted",
           "units_finished"]


class Partitions:
    """Data partitions placed where one executor's workers read them (``persist_partitions``).

    ``ref`` is the executor's own placement (the list, task files, Dask futures);
    ``release()`` (or leaving the ``with`` block, or closing the executor) frees it.
    """

    def __init__(self, owner: Any, n: int, ref: Any, release: Callable[[], None]) -> None:
        self.owner, self.n, self.ref = owner, int(n), ref
        self._release: Callable[[], None] | None = release

    def __len__(self) -> int:
        return self.n

    @property
    def released(self) -> bool:
        return self._release is None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> "Partitions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def add_stats(a: Any, b: Any) -> Any:
    """``a + b`` for additive statistics: arrays and numbers, and dicts/tuples/lists of them."""
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise ValueError(f"statistics to add have different keys: {sorted(a)} and {sorted(b)}")
        return {k: add_stats(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise ValueError(f"statistics to add have different lengths: {len(a)} and {len(b)}")
        return type(a)(add_stats(x, y) for x, y in zip(a, b))
    return np.add(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a + b


def fold_in_order(results: Iterable[tuple[int, Any]], n: int,
                  reduce: Callable[[Any, Any], Any]) -> Any:
    """Fold ``(index, value)`` pairs arriving in any order from the left in index order.

    Values are folded as soon as every lower index has arrived, so at most the
    out-of-order ones wait in memory.
    """
    if n < 1:
        raise ValueError("map_reduce needs at least one partition")
    waiting: dict[int, Any] = {}
    acc: Any = None
    nxt = 0
    for i, value in results:
        waiting[i] = value
        while nxt in waiting:
            value = waiting.pop(nxt)
            acc = value if nxt == 0 else reduce(acc, value)
            nxt += 1
    if nxt != n:
        raise RuntimeError(f"map_reduce received {nxt} of {n} partition results")
    return acc


def check_handle(executor: Any, partitions: Partitions) -> None:
    """Refuse a handle made by another executor or already released."""
    if partitions.owner is not executor:
        raise ValueError("these partitions were persisted by another executor; "
                         "persist them with the executor that runs map_reduce")
    if partitions.released:
        raise ValueError("these partitions were released; persist them again")


@contextmanager
def persisted(executor: Any, partitions: "Partitions | Sequence[Any]") -> Iterator[Partitions]:
    """The handle of ``partitions`` for one ``map_reduce``: a given handle, checked; plain
    partitions persisted for this call and released after it."""
    own = not isinstance(partitions, Partitions)
    handle = executor.persist_partitions(partitions) if own else partitions
    check_handle(executor, handle)
    try:
        yield handle
    finally:
        if own:
            handle.release()


@contextmanager
def units_finished(executor: Any, fn: Callable[[Any], Any], units: Sequence[Any]
                   ) -> Iterator[Iterator[tuple[Any, Any]]]:
    """``(unit, fn(unit))`` for each of ``units`` as it finishes, on ``executor`` (None: in
    process, in order); leaving the block, early or by an exception, cancels the units not
    yet finished.  The loop of random starts' and replicates' callers::

        with units_finished(executor, fn, missing) as finished:
            for r, rec in finished: ...
    """
    units = list(units)
    results = (executor.map_unordered(fn, [(u,) for u in units]) if executor is not None
               else ((i, fn(u)) for i, u in enumerate(units)))
    try:
        yield ((units[i], res) for i, res in results)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


@runtime_checkable
class Executor(Protocol):
    """Where work runs.  Executors subclass it for the context-manager methods."""

    workers: int

    def map_unordered(self, fn: Callable, args_list: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(*args_list[index]))`` as units finish; leaving early cancels the rest."""
        ...

    def persist_partitions(self, partitions: Sequence[Any]) -> Partitions:
        """Place ``partitions`` with the workers once, for repeated ``map_reduce`` calls."""
        ...

    def map_reduce(self, fn: Callable, partitions: Partitions | Sequence[Any], *,
                   reduce: Callable[[Any, Any], Any] = add_stats, broadcast: tuple = ()) -> Any:
        """Fold ``fn(partition, *broadcast)`` over the partitions in index order with ``reduce``."""
        ...

    def close(self) -> None:
        """Stop the workers (if owned) and free what the executor placed."""
        ...

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
