"""Row engines: the EM map's statistics summed over partitions of the rows, in a fixed order.

A row engine holds the rows of one data set split into **partitions** (a file or a run of its
row groups, or a list of in-memory data dicts), each read as a sequence of **chunks** (data
dicts of at most ``chunk_rows`` rows, the chunking restarting at each partition).  Closed-form
models' statistics add up (:meth:`~src.models.base.MixtureModel.e_step_stats`), so one
evaluation of the EM map over an engine is

* per partition, :func:`partition_stats`: the chunks' ``(stats, loglik)`` summed in chunk
  order exactly as :func:`src.estimation.em.em_map` sums its chunks (rows carrying weights,
  :data:`~src.models.base.WEIGHT_KEY`, through ``e_step_stats_weighted``);
* the partitions' sums folded **from the left in partition index order**
  (:func:`sum_in_order`) on the driver, then the model's M-step.

Because both orders are fixed, every engine (:class:`InMemoryEngine`,
:class:`StreamingEngine`, and :class:`src.parallel.dask_engine.DaskEngine` with any number of
workers) gives the same bits on the same partitions; with one partition chunked like
``em_map``'s rows they are ``em_map``'s bits, otherwise they agree to rounding.

Readers say what a partition is and how to read it (``n_partitions``, ``chunks(index)``);
they are small picklable values, so a Dask worker reads its partitions itself:

* :class:`MemoryPartitions`: given data dicts (tests, and data already in memory);
* :class:`ParquetPartitions`: a partitioned Parquet source
  (:class:`src.data.partitions.PartitionedSource`) converted chunk by chunk to the model's
  arrays by :func:`src.data.partitions.partition_chunks`.

The M-step, SQUAREM and checkpoints stay with the caller; :func:`engine_em_map` is the EM map
over an engine (the M-step of :meth:`RowEngine.reduce_stats`).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from src.models import checks
from src.models.base import WEIGHT_KEY, Data, MixtureModel, Params, split_weight
from src.utils.errors import ModelError
from src.utils.messages import register, t

__all__ = ["RowEngine", "partition_stats", "add_partition_stats", "sum_in_order", "engine_em_map",
           "require_closed_form", "count_rows", "add_counts", "MemoryPartitions",
           "ParquetPartitions", "as_reader", "InMemoryEngine", "StreamingEngine",
           "DEFAULT_CHUNK_ROWS", "READ_AHEAD"]

#: rows per chunk when none is given (the ``chunk_size`` option's default)
DEFAULT_CHUNK_ROWS = 4096
#: chunks the streaming engine reads ahead on a background thread
READ_AHEAD = 2

register({
    "engine.no_closed_form": {
        "en": "Model {model} has no closed-form M-step (suff_stats and m_step), so it cannot be "
              "fitted over partitions of the data; load the data into memory or add the M-step.",
        "zh": "模型 {model} 没有闭式 M 步（suff_stats 和 m_step），因此不能按数据分区拟合；"
              "请把数据读入内存，或为模型加上 M 步。",
    },
    "engine.no_rows": {
        "en": "No partition of the data kept a row, so there is nothing to fit; check "
              "--drop-missing and the weights.",
        "zh": "数据的所有分区都没有保留任何一行，无法拟合；请检查 --drop-missing 和权重。",
    },
    "engine.no_partitions": {
        "en": "The data have no partitions to read; give at least one Parquet file with rows.",
        "zh": "数据没有可读取的分区；请至少提供一个有数据行的 Parquet 文件。",
    },
})


@runtime_checkable
class RowEngine(Protocol):
    """Where the rows live and how one pass over them runs (in process, or on a Dask cluster).

    ``n_obs``: the rows the model sees; ``weight_sum``: the sum of their weights (None when
    the rows carry none).
    """

    n_obs: int
    weight_sum: float | None

    def map_partitions(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``fn(chunks, *args)`` for every partition (``chunks``: an iterable of its data
        dicts in order), the results in partition index order."""
        ...

    def reduce_stats(self, model: MixtureModel, params: Params) -> tuple[dict[str, Any], float]:
        """``(stats, loglik)`` at ``params``: :func:`partition_stats` of every partition, folded
        in partition index order (:func:`sum_in_order`)."""
        ...

    def close(self) -> None:
        """Free what the engine holds (worker memory, clients it made)."""
        ...


# ----------------------------------------------------------------- the arithmetic
def partition_stats(model: MixtureModel, chunks: Iterable[Data], params: Params
                    ) -> tuple[dict[str, Any], float] | None:
    """``(stats, loglik)`` of one partition: its chunks' statistics summed in chunk order
    (None for a partition without chunks: every row dropped).

    Each chunk gives ``model.e_step_stats(chunk, params)``, or, when it carries row weights
    (:data:`WEIGHT_KEY`), ``model.e_step_stats_weighted(rows, params, w)`` after
    :func:`split_weight`.  The sums are formed as :func:`src.estimation.em.em_map` forms them
    (the first chunk's statistics, then ``total[k] + stats[k]``; the log-likelihood from 0.0),
    so one partition chunked as ``em_map`` chunks the rows gives its bits.  Exceptions raised
    inside a user model become a ModelError naming the method.
    """
    total: dict[str, Any] | None = None
    ll = 0.0
    for chunk in chunks:
        rows, w = split_weight(chunk)
        with checks.guarded(model, "e_step_stats"):
            if w is None:
                stats, chunk_ll = model.e_step_stats(rows, params)
            else:
                stats, chunk_ll = model.e_step_stats_weighted(rows, params, w)
        ll += float(chunk_ll)
        total = dict(stats) if total is None else {k: total[k] + v for k, v in stats.items()}
    return None if total is None else (total, ll)


def add_partition_stats(acc: tuple[dict[str, Any], float] | None,
                        part: tuple[dict[str, Any], float] | None
                        ) -> tuple[dict[str, Any], float] | None:
    """``acc + part`` for ``(stats, loglik)`` pairs (statistics key by key; None, a partition
    without rows, adds nothing)."""
    if part is None:
        return acc
    if acc is None:
        return dict(part[0]), float(part[1])
    stats, ll = acc
    more, more_ll = part
    if stats.keys() != more.keys():
        raise ValueError(f"partitions gave statistics with different keys: {sorted(stats)} and "
                         f"{sorted(more)}")
    return {k: stats[k] + more[k] for k in stats}, ll + float(more_ll)


def sum_in_order(results: Iterable[tuple[dict[str, Any], float] | None]
                 ) -> tuple[dict[str, Any], float]:
    """The partitions' ``(stats, loglik)`` (in partition index order) folded from the left."""
    acc: tuple[dict[str, Any], float] | None = None
    for part in results:
        acc = add_partition_stats(acc, part)
    if acc is None:
        raise ValueError(t("engine.no_rows"))
    return acc


def require_closed_form(model: MixtureModel) -> None:
    """A ModelError (one sentence) for a model whose statistics do not add up over rows."""
    if not model.has_closed_form_m_step:
        raise ModelError(t("engine.no_closed_form", model=getattr(model, "name", "") or
                           type(model).__name__))


def engine_em_map(model: MixtureModel, engine: RowEngine, params: Params) -> tuple[Params, float]:
    """One evaluation of the EM map over ``engine``: ``(M(params), loglik(params))``."""
    stats, ll = engine.reduce_stats(model, params)
    with checks.guarded(model, "m_step"):
        return model.m_step(stats), ll


# ------------------------------------------------------------------------ readers
def _n_rows(data: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(data.values())).shape[0])


def count_rows(chunks: Iterable[Data]) -> tuple[int, float | None]:
    """``(rows, sum of the row weights or None)`` of one partition's chunks."""
    n, total = 0, None
    for chunk in chunks:
        n += _n_rows(chunk)
        if WEIGHT_KEY in chunk:
            total = (0.0 if total is None else total) + float(np.sum(chunk[WEIGHT_KEY]))
    return n, total


def add_counts(counts: Iterable[tuple[int, float | None]]) -> tuple[int, float | None]:
    """The partitions' :func:`count_rows` added in order."""
    n, total = 0, None
    for rows, weight in counts:
        n += int(rows)
        if weight is not None:
            total = (0.0 if total is None else total) + float(weight)
    return n, total


class MemoryPartitions:
    """Partitions already in memory: each a data dict (cut into chunks of ``chunk_rows`` rows,
    as ``em_map`` cuts its rows) or a list of data dicts (the chunks as given)."""

    def __init__(self, partitions: Sequence[Data | Sequence[Data]],
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
        self.chunk_rows = int(chunk_rows)
        self.parts: list[list[Data]] = []
        for part in partitions:
            if isinstance(part, Mapping):
                n = _n_rows(part)
                part = [{k: v[a:a + self.chunk_rows] for k, v in part.items()}
                        for a in range(0, n, self.chunk_rows)]
            chunks = [dict(c) for c in part if _n_rows(c) > 0]
            if not chunks:
                raise ValueError("every partition must hold rows")
            self.parts.append(chunks)
        if not self.parts:
            raise ValueError(t("engine.no_partitions"))

    @property
    def n_partitions(self) -> int:
        return len(self.parts)

    @property
    def n_rows(self) -> int:
        return sum(_n_rows(c) for part in self.parts for c in part)

    def counts(self) -> tuple[int, float | None]:
        """``(rows, sum of the row weights or None)``."""
        return add_counts(count_rows(part) for part in self.parts)

    def nbytes(self) -> int:
        """Bytes the partitions' arrays take."""
        return sum(int(np.asarray(v).nbytes) for part in self.parts for c in part for v in c.values())

    def chunks(self, index: int) -> Iterator[Data]:
        return iter(self.parts[index])


class ParquetPartitions:
    """A partitioned Parquet source read chunk by chunk as the model's data dicts.

    ``source``: a :class:`src.data.partitions.PartitionedSource` (its text, to name the data
    in messages, and its partitions are kept, so the reader pickles small and a worker opens
    the files itself); ``cls``: the model class or its ``--model`` name; ``options``
    (``prepare_data``'s), ``meta`` (the scan's merged meta), ``chunk_rows``, ``columns``
    (the model's columns; None: every column but the weight column) and ``weight_column`` as
    for :func:`src.data.partitions.partition_chunks`.  :meth:`from_scan` takes them from the
    first pass.
    """

    def __init__(self, source: Any, cls: Any, options: Mapping[str, Any], meta: Mapping[str, Any],
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, *, columns: Sequence[str] | None = None,
                 weight_column: str | None = None) -> None:
        self.text = str(getattr(source, "text", source))
        self.partitions = list(source.partitions)
        if not self.partitions:
            raise ValueError(t("engine.no_partitions"))
        if columns is None:
            columns = [c for c in source.columns if c != weight_column]
        self.columns = [str(c) for c in columns]
        self.raw_rows = int(sum(p.n_rows for p in self.partitions))
        self.cls, self.options, self.meta = cls, dict(options), dict(meta)
        self.chunk_rows, self.weight_column = int(chunk_rows), weight_column

    @classmethod
    def from_scan(cls, source: Any, model_cls: Any, options: Mapping[str, Any],
                  scanned: Any) -> "ParquetPartitions":
        """The reader of ``source`` as :func:`src.data.partitions.scan` saw it (its meta,
        chunk rows, columns and weight column)."""
        return cls(source, model_cls, options, scanned.meta, scanned.chunk_rows,
                   columns=scanned.columns, weight_column=scanned.weight_column)

    @property
    def n_partitions(self) -> int:
        return len(self.partitions)

    def chunks(self, index: int) -> Iterator[Data]:
        from src.data.partitions import partition_chunks
        return partition_chunks(self.text, self.partitions[index], self.cls, self.options,
                                self.meta, self.chunk_rows, columns=self.columns,
                                weight_column=self.weight_column)

    def nbytes(self) -> int:
        """Estimated bytes of every partition's arrays (the first chunk's bytes per raw row)."""
        for i in range(self.n_partitions):
            first = next(iter(self.chunks(i)), None)
            if first is not None:
                per_row = sum(int(np.asarray(v).nbytes) for v in first.values()) / _n_rows(first)
                return int(per_row * self.raw_rows)
        return 0

    @property
    def n_rows(self) -> int:
        """Rows after preparation (a pass over the data)."""
        return self.counts()[0]

    def counts(self) -> tuple[int, float | None]:
        """``(rows after preparation, sum of their weights or None)``: a pass over the data."""
        return add_counts(count_rows(self.chunks(i)) for i in range(self.n_partitions))


def as_reader(source: Any, cls: Any = None, options: Mapping[str, Any] | None = None,
              meta: Mapping[str, Any] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS, *,
              columns: Sequence[str] | None = None, weight_column: str | None = None) -> Any:
    """A reader: given (anything with ``n_partitions`` and ``chunks``), an in-process engine's,
    or a :class:`ParquetPartitions` of a partitioned source."""
    if isinstance(source, _InProcessEngine):
        return source.reader
    if hasattr(source, "chunks") and hasattr(source, "n_partitions"):
        return source
    if cls is None or meta is None:
        raise ValueError("a partitioned source needs the model class and the scan's meta")
    return ParquetPartitions(source, cls, options or {}, meta, chunk_rows, columns=columns,
                             weight_column=weight_column)


# ------------------------------------------------------------------ in-process engines
class _ReadAhead:
    """Every partition's chunks, in order, read by a background thread up to ``depth`` chunks
    ahead of their use (reading Parquet and preparing the arrays mostly run outside the
    GIL, beside the E-step of the chunk before).  ``partitions()`` yields one chunk iterator
    per partition, in order; leaving early (an error, a closed generator) stops the thread."""

    _END = object()

    def __init__(self, reader: Any, depth: int) -> None:
        self.reader, self.queue = reader, queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="engine-read-ahead", daemon=True)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for i in range(int(self.reader.n_partitions)):
                for chunk in self.reader.chunks(i):
                    if not self._put((i, chunk)):
                        return
                if not self._put((i, self._END)):
                    return
        except BaseException as exc:   # handed to the consumer, raised there
            self._put((None, exc))

    def _take(self) -> tuple[Any, Any]:
        i, item = self.queue.get()
        if i is None:
            raise item
        return i, item

    def _chunks(self, index: int) -> Iterator[Data]:
        while True:
            i, item = self._take()
            if item is self._END:
                return
            yield item

    def partitions(self) -> Iterator[Iterator[Data]]:
        self.thread.start()
        try:
            for i in range(int(self.reader.n_partitions)):
                chunks = self._chunks(i)
                yield chunks
                for _ in chunks:   # what the consumer left of this partition
                    pass
        finally:
            self.stop.set()
            while self.thread.is_alive():
                try:
                    self.queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self.thread.join()


class _InProcessEngine:
    """Partitions read one after the other in this process (nothing held between passes
    beyond what the reader holds); ``read_ahead`` chunks read ahead by a thread (0: none)."""

    def __init__(self, reader: Any, n_obs: int | None = None,
                 weight_sum: float | None = None, read_ahead: int = 0) -> None:
        self.reader = reader
        self.read_ahead = int(read_ahead)
        self._counts = None if n_obs is None else (int(n_obs), weight_sum)

    def _counted(self) -> tuple[int, float | None]:
        if self._counts is None:
            self._counts = self.reader.counts()
        return self._counts

    @property
    def n_obs(self) -> int:
        """Rows the model sees (given, or counted in one pass on first use)."""
        return int(self._counted()[0])

    @property
    def weight_sum(self) -> float | None:
        """The sum of the row weights (None: unweighted rows)."""
        return self._counted()[1]

    @property
    def n_partitions(self) -> int:
        return int(self.reader.n_partitions)

    def _partitions(self) -> Iterator[Iterable[Data]]:
        """Each partition's chunks, in order (read ahead by a thread when asked)."""
        if self.read_ahead < 1:
            return (self.reader.chunks(i) for i in range(self.n_partitions))
        return _ReadAhead(self.reader, self.read_ahead).partitions()

    def map_partitions(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        parts = self._partitions()
        try:
            return [fn(chunks, *args) for chunks in parts]
        finally:
            getattr(parts, "close", lambda: None)()

    def reduce_stats(self, model: MixtureModel, params: Params) -> tuple[dict[str, Any], float]:
        require_closed_form(model)
        parts = self._partitions()
        try:
            return sum_in_order(partition_stats(model, chunks, params) for chunks in parts)
        finally:
            getattr(parts, "close", lambda: None)()

    def close(self) -> None:
        pass

    def __enter__(self) -> "_InProcessEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InMemoryEngine(_InProcessEngine):
    """Partitions given in memory (see :class:`MemoryPartitions`): for tests, and data that
    are already loaded."""

    def __init__(self, partitions: Sequence[Data | Sequence[Data]],
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        reader = partitions if isinstance(partitions, MemoryPartitions) else \
            MemoryPartitions(partitions, chunk_rows)
        super().__init__(reader)


class StreamingEngine(_InProcessEngine):
    """A partitioned Parquet source streamed chunk by chunk on every pass: memory bounded by a
    chunk (and the reader's buffers), not by the number of rows.

    ``source``: a :class:`src.data.partitions.PartitionedSource` (read through
    :class:`ParquetPartitions` with ``cls``, ``options``, ``meta``, ``chunk_rows``,
    ``columns`` and ``weight_column``), or any reader (``n_partitions``, ``chunks(index)``;
    the rest ignored).  ``n_obs``, ``weight_sum``: the kept rows and their weights' sum (the
    scan's; None for unweighted rows); without ``n_obs`` both are counted in one pass when
    first asked for.  :meth:`from_scan` takes all of these from the first pass.
    ``read_ahead``: chunks a background thread reads ahead (:data:`READ_AHEAD`; 0: none):
    the reading overlaps the E-step, at the cost of that many more chunks in memory; the
    chunks and their order, so the bits, are the same.
    """

    def __init__(self, source: Any, cls: Any, options: Mapping[str, Any], meta: Mapping[str, Any],
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, *, columns: Sequence[str] | None = None,
                 weight_column: str | None = None, n_obs: int | None = None,
                 weight_sum: float | None = None, read_ahead: int = READ_AHEAD) -> None:
        super().__init__(as_reader(source, cls, options, meta, chunk_rows, columns=columns,
                                   weight_column=weight_column), n_obs, weight_sum, read_ahead)

    @classmethod
    def from_scan(cls, source: Any, model_cls: Any, options: Mapping[str, Any], scanned: Any, *,
                  read_ahead: int = READ_AHEAD) -> "StreamingEngine":
        """The engine of ``source`` as :func:`src.data.partitions.scan` saw it."""
        return cls(ParquetPartitions.from_scan(source, model_cls, options, scanned), None, {},
                   None, n_obs=scanned.n_obs, weight_sum=scanned.weight_sum,
                   read_ahead=read_ahead)
