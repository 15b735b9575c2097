"""A row engine on a Dask cluster: each partition's E-step on a worker, the sum on the driver.

:class:`DaskEngine` follows :class:`src.estimation.engines.RowEngine`.  The partitions are
described by a small picklable *reader* (:class:`~src.estimation.engines.ParquetPartitions`
for Parquet files the workers can see, :class:`~src.estimation.engines.MemoryPartitions` for
data given in memory); the reader and the model travel as cloudpickle bytes (so a user
model's class travels by value), and workers read the partitions themselves.

Nothing is scattered: Dask keeps a task's inputs, so what a lost worker held is made again,
while scattered data lost with its worker cannot be recovered (and Dask's active memory
manager drops the extra replicas of a broadcast, so a broadcast does not protect it).  The
model and the parameters (a few KB) travel **inside every task** (:data:`EMBED_BYTES`), so a
task depends only on its partition and runs where it lives; larger ones, and the reader,
are **placed by a task** (``value-*``: a task returning the bytes given to it), which workers
fetch from a peer when a task of theirs first needs them.  Unpickled once per worker.

* ``persist=True``: each partition's chunks are loaded once by a task on a worker
  (``load-<i>``) and held there as a future; every later pass runs the statistics where the
  chunks live.  ``persist=False`` re-reads the partition inside every pass's task (worker
  memory bounded by a chunk).  ``"auto"``: persist when the data's estimated size is at most
  :data:`PERSIST_SHARE` of the workers' memory limits.
* Each :meth:`DaskEngine.reduce_stats` pickles the parameters once, submits one statistics
  task per partition (held partitions: one task per worker over the partitions placed there,
  which returns their statistics one by one), and folds the results **in partition
  index order** on the driver as they arrive (:func:`src.parallel.protocol.fold_in_order`
  with :func:`src.estimation.engines.add_partition_stats`): the same bits as the in-process
  engines, whatever the number of workers or which worker ran what.
* A worker lost during a pass: its tasks run again elsewhere, and the partitions it held are
  loaded again from the reader (every task is a pure function of the reader, the partition
  index and the parameters), so the pass returns the same bits.

The driver holds only the parameters and one partition's statistics per partition still
waiting for a lower index; its memory does not grow with the number of rows.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import cloudpickle

from src.estimation.engines import (add_counts, add_partition_stats, as_reader, count_rows,
                                    partition_stats, require_closed_form)
from src.models.base import MixtureModel, Params
from src.utils.messages import t

from .protocol import fold_in_order
from .dask_worker import compute
from .tasks import digest

__all__ = ["DaskEngine", "PERSIST_SHARE", "EMBED_BYTES"]

#: the model, the parameters and a mapped function's arguments travel inside every task when
#: their pickled bytes are at most this size (no dependency: a task runs where its partition
#: is, and a lost worker loses nothing of them); larger ones are placed by a task
EMBED_BYTES = 1 << 18

#: ``persist="auto"`` keeps the partitions in worker memory when their estimated size is at
#: most this share of the workers' summed memory limits (Dask starts spilling at 0.6)
PERSIST_SHARE = 0.5

# ------------------------------------------------------------------ worker side
def value(x: Any) -> Any:
    """Worker: ``x`` itself (how the engine places the reader, model and parameters)."""
    return x


#: objects unpickled on this worker, by digest (readers, models, mapped functions)
_OBJECTS: "OrderedDict[bytes, Any]" = OrderedDict()
_OBJECTS_SIZE = 16


def _obj(key: bytes, payload: bytes) -> Any:
    """The object pickled as ``payload``, unpickled once per worker."""
    obj = _OBJECTS.get(key)
    if obj is None:
        obj = _OBJECTS[key] = cloudpickle.loads(payload)
        while len(_OBJECTS) > _OBJECTS_SIZE:
            _OBJECTS.popitem(last=False)
    else:
        _OBJECTS.move_to_end(key)
    return obj


def load_partition(reader_key: bytes, reader_payload: bytes, index: int) -> list[dict]:
    """Worker: partition ``index``'s chunks, read into memory."""
    reader = _obj(reader_key, reader_payload)
    with compute():
        return list(reader.chunks(index))


def loaded_stats(chunks: list[dict], model_key: bytes, model_payload: bytes,
                 params_key: bytes, params_payload: bytes) -> tuple[dict, float] | None:
    """Worker: ``partition_stats`` of chunks held in memory."""
    model = _obj(model_key, model_payload)
    params = _obj(params_key, params_payload)
    with compute():
        return partition_stats(model, chunks, params)


def loaded_group_stats(model_key: bytes, model_payload: bytes, params_key: bytes,
                       params_payload: bytes, *parts: list[dict]
                       ) -> list[tuple[dict, float] | None]:
    """Worker: ``partition_stats`` of each of several partitions held here, in the order given."""
    model = _obj(model_key, model_payload)
    params = _obj(params_key, params_payload)
    with compute():
        return [partition_stats(model, chunks, params) for chunks in parts]


def read_stats(reader_key: bytes, reader_payload: bytes, index: int, model_key: bytes,
               model_payload: bytes, params_key: bytes, params_payload: bytes
               ) -> tuple[dict, float] | None:
    """Worker: ``partition_stats`` of partition ``index`` read chunk by chunk."""
    reader = _obj(reader_key, reader_payload)
    model = _obj(model_key, model_payload)
    params = _obj(params_key, params_payload)
    with compute():
        return partition_stats(model, reader.chunks(index), params)


def loaded_map(chunks: list[dict], fn_key: bytes, fn_payload: bytes, args_key: bytes,
               args_payload: bytes) -> Any:
    """Worker: ``fn(chunks, *args)`` of chunks held in memory."""
    fn = _obj(fn_key, fn_payload)
    args = _obj(args_key, args_payload)
    with compute():
        return fn(iter(chunks), *args)


def read_map(reader_key: bytes, reader_payload: bytes, index: int, fn_key: bytes,
             fn_payload: bytes, args_key: bytes, args_payload: bytes) -> Any:
    """Worker: ``fn(chunks, *args)`` of partition ``index`` read chunk by chunk."""
    reader = _obj(reader_key, reader_payload)
    fn = _obj(fn_key, fn_payload)
    args = _obj(args_key, args_payload)
    with compute():
        return fn(reader.chunks(index), *args)


# ------------------------------------------------------------------ driver side
class DaskEngine:
    """Row engine on a Dask cluster (``client``: a ``distributed.Client`` or a scheduler address).

    ``source``: a partitioned source (then ``cls``, ``options``, ``meta``, ``chunk_rows``,
    ``columns``, ``weight_column`` as for :class:`~src.estimation.engines.StreamingEngine`), a reader, or
    an in-process engine (its reader).  ``n_obs``, ``weight_sum``: the rows the model sees
    and their weights' sum (None: unweighted); without ``n_obs`` both are counted on the
    workers in one pass when first asked for.  ``persist``: True, False or
    ``"auto"`` (module docstring).  ``workers``: the worker addresses that may run the
    partitions' tasks (None: any).

    ``timings`` accumulates, per :meth:`reduce_stats`, the seconds spent submitting the
    parameters and the tasks (``submit``), waiting for the partitions (``wait``) and folding
    their statistics (``reduce``), and the number of passes (``passes``): the benchmark's
    task overhead and reduce time.
    """

    def __init__(self, client: Any, source: Any, cls: Any = None, options: Any = None,
                 meta: Any = None, chunk_rows: int = 4096, *, columns: Sequence[str] | None = None,
                 weight_column: str | None = None, n_obs: int | None = None,
                 weight_sum: float | None = None, persist: bool | str = "auto",
                 workers: Sequence[str] | None = None) -> None:
        from distributed import Client
        if persist not in (True, False, "auto"):
            raise ValueError(f"persist must be True, False or 'auto', got {persist!r}")
        self.reader = as_reader(source, cls, options, meta, chunk_rows, columns=columns,
                                weight_column=weight_column)
        own = not isinstance(client, Client)
        self.client = Client(client, set_as_default=False) if own else client
        self._own = own
        self._tag = uuid.uuid4().hex[:12]
        self._workers = list(workers) if workers is not None else None
        self._pass = 0
        self._placed: "OrderedDict[bytes, Any]" = OrderedDict()
        self._loaded: list[Any] | None = None
        self._homes: list[str] = []
        self.timings = {"submit": 0.0, "wait": 0.0, "reduce": 0.0, "passes": 0}
        try:
            self._reader_key, self._reader = self._object(self.reader, keep=True)
            self._counts = None if n_obs is None else (int(n_obs), weight_sum)
            self.persist = self._fits() if persist == "auto" else bool(persist)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_scan(cls, client: Any, source: Any, model_cls: Any, options: Any, scanned: Any, *,
                  persist: bool | str = "auto", workers: Sequence[str] | None = None
                  ) -> "DaskEngine":
        """The engine of ``source`` as :func:`src.data.partitions.scan` saw it."""
        from src.estimation.engines import ParquetPartitions
        return cls(client, ParquetPartitions.from_scan(source, model_cls, options, scanned),
                   n_obs=scanned.n_obs, weight_sum=scanned.weight_sum, persist=persist,
                   workers=workers)

    # ------------------------------------------------------------------ facts
    @property
    def n_partitions(self) -> int:
        return int(self.reader.n_partitions)

    def _counted(self) -> tuple[int, float | None]:
        """``(rows, weight sum or None)``: given, or counted on the workers once."""
        if self._counts is None:
            self._counts = add_counts(self.map_partitions(count_rows))
        return self._counts

    @property
    def n_obs(self) -> int:
        """The rows the model sees."""
        return int(self._counted()[0])

    @property
    def weight_sum(self) -> float | None:
        """The sum of the row weights (None: unweighted rows)."""
        return self._counted()[1]

    def _fits(self) -> bool:
        """Whether the partitions fit in :data:`PERSIST_SHARE` of the workers' memory limits."""
        limits = [int(w.get("memory_limit") or 0)
                  for w in self.client.scheduler_info()["workers"].values()]
        if self._workers is not None:
            info = self.client.scheduler_info()["workers"]
            limits = [int(info[a].get("memory_limit") or 0) for a in self._workers if a in info]
        if not limits or any(v == 0 for v in limits):   # no limit set
            return True
        return self.reader.nbytes() <= PERSIST_SHARE * sum(limits)

    # ---------------------------------------------------------------- plumbing
    def _submit(self, fn: Callable, *args: Any, key: str) -> Any:
        extra = {} if self._workers is None else {"workers": self._workers,
                                                   "allow_other_workers": False}
        return self.client.submit(fn, *args, key=key, pure=False, **extra)

    def _place(self, x: Any, name: str) -> Any:
        """A future of ``x`` made by a task (recomputed if lost, unlike scattered data)."""
        return self._submit(value, x, key=f"engine-{self._tag}-value-{name}")

    def _object(self, obj: Any, keep: bool = False, embed: bool = False) -> tuple[bytes, Any]:
        """``obj``'s digest and its cloudpickle bytes: the bytes themselves when ``embed`` and
        at most :data:`EMBED_BYTES` (they travel inside every task), else the future of a
        task placing them (once per distinct bytes; ``keep``: never dropped from the cache)."""
        payload = cloudpickle.dumps(obj)
        key = digest(payload)
        if embed and len(payload) <= EMBED_BYTES:
            return key, payload
        if keep:
            return key, self._place(payload, key.hex())
        fut = self._placed.get(key)
        if fut is None:
            fut = self._placed[key] = self._place(payload, key.hex())
            while len(self._placed) > 4:
                self._placed.popitem(last=False)
        else:
            self._placed.move_to_end(key)
        return key, fut

    def _chunks(self) -> list[Any]:
        """The futures of the partitions' loaded chunks (submitted on first use).

        Partition ``i`` is loaded on worker ``i mod W`` (the workers in sorted order), a
        preference the scheduler falls back from when that worker is gone: left to itself, it
        placed 21 of 24 loads on one of two workers (they have no inputs, and the first worker
        to ask takes them), and every later pass runs where the chunks are."""
        if self._loaded is None:
            if self._workers is None:   # restricted engines let the scheduler place them
                self._homes = sorted(self.client.scheduler_info()["workers"])
            homes = self._homes
            self._loaded = []
            for i in range(self.n_partitions):
                args = (load_partition, self._reader_key, self._reader, i)
                key = f"engine-{self._tag}-load-{i}"
                self._loaded.append(
                    self.client.submit(*args, key=key, pure=False,
                                       workers=[homes[i % len(homes)]], allow_other_workers=True)
                    if homes else self._submit(*args, key=key))
        return self._loaded

    def _partition_tasks(self, name: str, on_loaded: Callable, on_read: Callable,
                         *args: Any) -> list[Any]:
        self._pass += 1
        keys = [f"engine-{self._tag}-{name}-{self._pass}-{i}" for i in range(self.n_partitions)]
        if self.persist:
            return [self._submit(on_loaded, part, *args, key=k)
                    for part, k in zip(self._chunks(), keys)]
        return [self._submit(on_read, self._reader_key, self._reader, i, *args, key=k)
                for i, k in enumerate(keys)]

    def _results(self, futures: list[Any]) -> Iterable[tuple[int, Any]]:
        """``(index, result)`` as the futures finish; those left are cancelled on the way out."""
        from distributed import as_completed
        index = {fut.key: i for i, fut in enumerate(futures)}
        left = dict(zip(index, futures))
        try:
            # with_results: results fetched as tasks finish, concurrently (not one
            # round trip per future after its completion)
            for fut, result in as_completed(futures, loop=self.client.loop, with_results=True):
                if fut.status != "finished":   # cancelled or failed: raise its error
                    fut.result()
                left.pop(fut.key, None)
                yield index[fut.key], result
        finally:
            if left and self.client.status not in ("closing", "closed"):
                self.client.cancel(list(left.values()))

    def _homes_of_chunks(self) -> list[str]:
        """The workers the held partitions were placed on, round-robin (empty: not placed)."""
        self._chunks()
        return self._homes

    def _grouped_stats(self, *args: Any) -> Iterable[tuple[int, Any]]:
        """``(index, stats)`` of every partition from one task per worker over the partitions
        placed there (``i mod W``): W tasks a pass instead of P, so the scheduler and the
        workers' event loops take less of the cores the E-steps need.  A task whose worker
        is gone runs elsewhere, its partitions loaded again there (the same bits)."""
        self._pass += 1
        chunks, homes = self._chunks(), self._homes
        groups = [list(range(g, len(chunks), len(homes))) for g in range(len(homes))]
        groups = [g for g in groups if g]
        futures = [self.client.submit(loaded_group_stats, *args, *(chunks[i] for i in idx),
                                      key=f"engine-{self._tag}-stats-{self._pass}-g{g}",
                                      pure=False, workers=[homes[g]], allow_other_workers=True)
                   for g, idx in enumerate(groups)]
        return ((i, stats) for g, result in self._results(futures)
                for i, stats in zip(groups[g], result))

    # ---------------------------------------------------------------- the engine
    def map_partitions(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``fn(chunks, *args)`` on the workers for every partition, in partition order."""
        fn_key, fn_payload = self._object(fn, embed=True)
        args_key, args_payload = self._object(tuple(args), embed=True)
        futures = self._partition_tasks("map", loaded_map, read_map, fn_key, fn_payload,
                                        args_key, args_payload)
        out: list[Any] = [None] * len(futures)
        for i, value in self._results(futures):
            out[i] = value
        return out

    def reduce_stats(self, model: MixtureModel, params: Params) -> tuple[dict[str, Any], float]:
        """``(stats, loglik)``: partitions' statistics on the workers, folded in index order."""
        require_closed_form(model)
        t0 = time.perf_counter()
        model_key, model_payload = self._object(model, embed=True)
        params_key, params_payload = self._object(dict(params), embed=True)
        if self.persist and self._homes_of_chunks():
            results = self._grouped_stats(model_key, model_payload, params_key, params_payload)
        else:
            results = self._results(self._partition_tasks(
                "stats", loaded_stats, read_stats, model_key, model_payload, params_key,
                params_payload))
        t1 = time.perf_counter()
        folding = [0.0]

        def reduce(acc: Any, part: Any) -> Any:
            s = time.perf_counter()
            out = add_partition_stats(acc, part)
            folding[0] += time.perf_counter() - s
            return out

        total = fold_in_order(results, self.n_partitions, reduce)
        del params_payload
        if total is None:
            raise ValueError(t("engine.no_rows"))
        t2 = time.perf_counter()
        self.timings["submit"] += t1 - t0
        self.timings["wait"] += t2 - t1 - folding[0]
        self.timings["reduce"] += folding[0]
        self.timings["passes"] += 1
        return total

    def close(self) -> None:
        """Release the loaded partitions and placed values; close a client made here."""
        client = getattr(self, "client", None)
        if client is None:
            return
        if client.status not in ("closing", "closed"):
            held = list(self._loaded or []) + list(self._placed.values())
            if getattr(self, "_reader", None) is not None:
                held.append(self._reader)
            if held:
                client.cancel(held)
        self._loaded = None
        self._placed.clear()
        self._reader = None
        if self._own:
            client.close()

    def __enter__(self) -> "DaskEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

