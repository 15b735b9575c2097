"""Per-row posteriors: ``posteriors.csv``, or partitioned Parquet for data larger than memory.

One row per input row the model kept, in input order (rows dropped by ``--drop-missing``
are absent; the data record counts them, ``n_dropped``).  Columns:

* the row's name: with ``--id COLUMN`` a column named as that column, holding its values
  (a text file's cells as written, a missing id empty); otherwise ``row``, the row's 0-based
  position in the input as pandas counts (dropped rows counted, so positions may skip);
* ``p1`` .. ``pK``: the posterior probability of each class (``MixtureModel.e_step``: the
  responsibilities at the estimate), classes counted from 1 in the estimate's canonical
  order, as in ``estimates.csv``; full precision (shortest round-trip text, written by
  Arrow's CSV writer: ``1`` for 1.0, ``1e-7`` for 1e-07; read back, the same float64);
* ``class``: the modal class, 1..K (the first one on a tie).

Repeated ids are written as they come (each row keeps its line).  The posteriors are
computed ``chunk_size`` rows at a time, so the bytes do not depend on the chunk size beyond
the model's own rounding.

For partitioned input, :func:`write_posteriors_parquet` takes the partitions in input order
and writes one file per partition, ``part-00000000.parquet``, ``part-00000001.parquet``...:
reading the files in sorted order and their rows in file order gives the input order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # imported where used (a light module: background.py's thread uses it)
    from ..inference.classification import Posteriors
    from ..models.base import Data, MixtureModel, Params

__all__ = ["POSTERIORS_CSV", "posterior_columns", "posteriors_csv", "csv_of_posteriors",
           "csv_table", "write_csv_table", "CsvTable", "Cancelled", "write_posteriors_parquet", "part_name"]

#: the file name in the results folder
POSTERIORS_CSV = "posteriors.csv"
#: the name of the first column without ``--id``
ROW_COLUMN = "row"
#: rows per call of Arrow's CSV writer when the posteriors are given (each call releases
#: the GIL once)
_WRITE_ROWS = 1 << 20
#: rows given as distinct patterns (LCA) are written from each pattern's text when there are
#: at most this many patterns per row (:func:`_pattern_table`)
PATTERN_SHARE = 0.25


def posterior_columns(n_components: int, id_column: str | None = None) -> list[str]:
    """``[id_column or "row", "p1", ..., "pK", "class"]``."""
    return ([str(id_column) if id_column is not None else ROW_COLUMN]
            + [f"p{k + 1}" for k in range(int(n_components))] + ["class"])


def _id_strings(values: Sequence[Any]) -> list[str | None]:
    """Ids of mixed or unknown kinds as text (None for a missing one)."""
    out: list[str | None] = []
    for v in values:
        if v is None or (isinstance(v, (float, np.floating)) and v != v):
            out.append(None)
        elif isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) < 2 ** 53:
            out.append(str(int(v)))
        else:
            out.append(str(v.item() if isinstance(v, np.generic) else v))
    return out


def _id_array(labels: np.ndarray) -> Any:
    """The ids as an Arrow array: numbers and booleans as they are (NaN: missing), anything
    else as text."""
    import pyarrow as pa

    if labels.dtype.kind in "iu":
        return _numbers(labels)
    if labels.dtype.kind in "fb":
        return pa.array(labels, from_pandas=True)
    values = labels.tolist()
    if all(v is None or isinstance(v, str) or (isinstance(v, float) and v != v) for v in values):
        return pa.array(values, type=pa.string(), from_pandas=True)
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = None
    if arr is None or not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
                           or pa.types.is_boolean(arr.type) or pa.types.is_temporal(arr.type)):
        arr = pa.array(_id_strings(values), type=pa.string())
    return arr


def _numbers(values: np.ndarray) -> Any:
    """Integers or floats as an Arrow array of their type, values as they are (no missing),
    over the array's memory (``pyarrow.array`` would import pandas to inspect it: 0.2 s
    where pandas is not imported yet)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), values.size,
                                 [None, pa.py_buffer(values)])


def _table(n_components: int, ids: Any, tau: np.ndarray, schema: Any = None,
           names: Sequence[str] | None = None) -> Any:
    """One chunk as an Arrow table: id (an Arrow array), p1..pK (float64), class (int64)."""
    import pyarrow as pa

    tau = np.asarray(tau, dtype=np.float64)
    columns = [ids] + [_numbers(tau[:, k]) for k in range(n_components)]
    columns.append(_numbers((tau.argmax(axis=1) + 1).astype(np.int64)))
    names = list(names) if names is not None else [f"c{j}" for j in range(len(columns))]
    table = pa.Table.from_arrays(columns, names=names)
    return table if schema is None else table.cast(schema)


def _field(text: str) -> str:
    """A CSV field as the csv module writes it (quoted when it holds , " or a line end)."""
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _needs_quotes(arr: Any) -> bool:
    import pyarrow as pa

    if not pa.types.is_string(arr.type) or len(arr) == 0:
        return False
    import pyarrow.compute as pc   # (0.05 s to import: only for text ids)

    return bool(pc.any(pc.match_substring_regex(arr, '[,"\r\n]')).as_py())


def posteriors_csv(model: MixtureModel, data: Data, params: Params,
                   ids: Sequence[Any] | np.ndarray | None = None, *,
                   id_column: str | None = None, chunk_size: int = 4096,
                   resp: Posteriors | np.ndarray | None = None) -> bytes:
    """The bytes of ``posteriors.csv`` (UTF-8, ``\\n`` line ends, as ``estimates.csv``).

    ``ids``: one name per row of ``data`` (the pipeline's ``Prepared.row_labels``: the
    ``--id`` values or the input positions); None: 0..n-1.  ``id_column``: the ``--id``
    column's name (``Prepared.id_column``), which heads the first column (None: ``row``).
    ``resp``: the posteriors of ``data``'s rows when already computed
    (:func:`src.inference.classification.posteriors_of`, or an (n, K) array); None:
    computed here, ``chunk_size`` rows at a time.

    Written by Arrow's CSV writer (ten times faster than Python's formatting): floats as
    their shortest round-trip text (``0.25``, ``1``, ``1e-7`` style: read back, every value
    is the float64 the model computed), text ids unquoted unless one of them holds a comma,
    a quote or a line end (then every text id is quoted), a missing id empty.

    When the run began this file in a thread as soon as the estimate was known
    (:mod:`.background`: the same model and data objects, equal estimate, posteriors, ids,
    id column and chunk size), the thread's bytes are taken (waiting for it: they are the
    bytes :func:`csv_of_posteriors` gives here); otherwise, or when the thread failed, it is
    written here.
    """
    from ..inference.classification import as_posteriors, responsibility_chunks

    n = int(next(iter(data.values())).shape[0])
    labels = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} ids for {n} rows")
    K = int(model.n_components)
    if resp is None:
        return _csv(labels, K, id_column, responsibility_chunks(model, data, params, chunk_size))
    post = as_posteriors(resp)
    if post.n_rows != n:
        raise ValueError(f"posteriors of {post.n_rows} rows for {n} rows")
    from . import background

    done = background.collect_posteriors_csv(model, data, params, labels, id_column,
                                             int(chunk_size), post)
    if done is not None:
        return done
    background._LAST[background.CSV_ITEM] = "here"
    return csv_of_posteriors(labels, post.tau, post.inverse, id_column, chunk_size)


class Cancelled(Exception):
    """:func:`write_csv_table` was told to stop (its ``cancelled`` said so)."""


@dataclass(frozen=True)
class CsvTable:
    """``posteriors.csv`` before its text is made (:func:`csv_table`): the header line, every
    row as one Arrow table (id, p1..pK, class), Arrow's CSV options, and an upper bound of
    the text's size (None: none known)."""

    header: bytes
    table: Any
    options: Any
    size_bound: int | None = None


#: the longest text Arrow's CSV writer gives a value of each kind (a float64's shortest
#: round-trip text: ``-2.2250738585072014e-308``, 24 characters; an int64: 20; dates and
#: times: at most ~35, with a zone)
_FIELD_BOUND = {"number": 24, "temporal": 64}


def _size_bound(header: bytes, table: Any) -> int | None:
    """An upper bound of the bytes of ``table`` as CSV text after ``header`` (each field at its
    longest, every text field quoted with every character doubled), or None for a column of
    another kind."""
    import pyarrow as pa

    n = table.num_rows
    total = len(header) + n * table.num_columns   # separators and line ends
    for column in table.columns:
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            total += n * _FIELD_BOUND["number"]
        elif pa.types.is_temporal(kind):
            total += n * _FIELD_BOUND["temporal"]
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            total += 2 * column.nbytes + 2 * n
        elif pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
            longest = max((_longest(chunk.dictionary) for chunk in column.chunks), default=0)
            total += n * (2 * longest + 2)
        else:
            return None
    return total


def _longest(texts: Any) -> int:
    """Bytes of the longest value of a string array (its offsets' largest step)."""
    if len(texts) == 0:
        return 0
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset:texts.offset + len(texts) + 1]
    return int(np.diff(offsets).max())


def _texts(values: Any, options: Any) -> Any:
    """The text Arrow's CSV writer gives each value of ``values`` (an Arrow array of
    numbers, no missing value) with ``options``, as a string array: one writer call, the
    values cut at the line ends (no per-value Python)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.Table.from_arrays([values], names=["v"]), sink, write_options=options)
    text = sink.getvalue().to_pybytes()
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("\n"))
    if ends.size != len(values):
        raise ValueError("a value's text holds a line end")
    offsets = np.concatenate([[0], ends - np.arange(ends.size)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets),
                                       pa.py_buffer(text.replace(b"\n", b"")))


def _pattern_table(n_components: int, ids: Any, tau: np.ndarray, inverse: np.ndarray,
                   options: Any) -> Any:
    """:func:`_table` of the rows ``tau[inverse]`` made from the patterns' text: each
    pattern's p1..pK and class formatted once by Arrow's CSV writer (:func:`_texts`), each
    row's fields that text looked up by ``inverse`` (dictionary columns, which the writer
    writes as their values).  The same bytes as :func:`_table`'s (unquoted fields only:
    with ``quoting_style="needed"`` Arrow quotes every text value); for LCA's 1e5 rows of
    1024 answer patterns 22 -> 9 ms."""
    import pyarrow as pa

    tau = np.asarray(tau, dtype=np.float64)
    index = _numbers(np.asarray(inverse, dtype=np.int64))
    per_pattern = [_numbers(np.ascontiguousarray(tau[:, k])) for k in range(n_components)]
    per_pattern.append(_numbers((tau.argmax(axis=1) + 1).astype(np.int64)))
    columns = [ids] + [pa.DictionaryArray.from_arrays(index, _texts(values, options))
                       for values in per_pattern]
    return pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(len(columns))])


def _layout(ids: Any, K: int, id_column: str | None) -> tuple[bytes, Any]:
    """The header line and Arrow's CSV options for rows named by ``ids`` (an Arrow array):
    every text id quoted when one of them needs it, none otherwise."""
    import pyarrow.csv as pacsv

    header = ",".join(_field(c) for c in posterior_columns(K, id_column)) + "\n"
    quoting = "needed" if _needs_quotes(ids) else "none"
    return header.encode("utf-8"), pacsv.WriteOptions(include_header=False,
                                                      quoting_style=quoting, eol="\n")


def csv_table(labels: np.ndarray, tau: np.ndarray, inverse: np.ndarray | None,
              id_column: str | None = None) -> CsvTable:
    """The first half of :func:`csv_of_posteriors`: the rows as an Arrow table (the part that
    holds the GIL: NumPy copies of the columns, row names as Arrow values, whether a text
    name needs quotes)."""
    K = int(tau.shape[1])
    n = tau.shape[0] if inverse is None else np.asarray(inverse).shape[0]
    if n != labels.shape[0]:
        raise ValueError(f"posteriors of {n} rows for {labels.shape[0]} row names")
    ids = _id_array(labels)
    header, options = _layout(ids, K, id_column)
    if inverse is not None and 0 < tau.shape[0] <= PATTERN_SHARE * n \
            and options.quoting_style == "none":
        table = _pattern_table(K, ids, tau, inverse, options)
    else:
        table = _table(K, ids, tau if inverse is None else tau[inverse])
    return CsvTable(header, table, options, _size_bound(header, table))


def write_csv_table(prepared: CsvTable, cancelled: Callable[[], bool] | None = None) -> bytes:
    """The second half of :func:`csv_of_posteriors`: the file's bytes, made by Arrow's CSV
    writer without the GIL (one call per :data:`_WRITE_ROWS` rows: a thread doing this
    beside a run that holds the GIL waits for it a few times only), into a buffer of the
    size bound (a buffer grown as the text comes was reallocated by Arrow's allocator at up
    to 0.2 s of system time in a thread, against 0.03 s for the whole file; the pages past
    the text are never touched).  ``cancelled``: asked before each block of rows; when it
    returns True, :class:`Cancelled` is raised."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def write(sink: Any) -> None:
        sink.write(prepared.header)
        table = prepared.table
        for a in range(0, max(table.num_rows, 1), _WRITE_ROWS):
            if cancelled is not None and cancelled():
                raise Cancelled("posteriors.csv was cancelled")
            if table.num_rows:
                pacsv.write_csv(table.slice(a, _WRITE_ROWS), sink, write_options=prepared.options)

    if prepared.size_bound is not None:
        try:   # (no room for the bound, or past it: it is one) grown as it comes
            buffer = pa.allocate_buffer(prepared.size_bound)
            sink = pa.FixedSizeBufferWriter(buffer)
            write(sink)
            return buffer.slice(0, sink.tell()).to_pybytes()
        except (pa.ArrowException, OSError, MemoryError):
            pass
    sink = pa.BufferOutputStream()
    write(sink)
    return sink.getvalue().to_pybytes()


def csv_of_posteriors(labels: np.ndarray, tau: np.ndarray, inverse: np.ndarray | None,
                      id_column: str | None = None, chunk_size: int = 4096) -> bytes:
    """:func:`posteriors_csv` of given posteriors as plain arrays: ``tau`` (n, K) one row per
    data row, or (m, K) per pattern with ``inverse`` (n,) naming each row's pattern (as
    :class:`~src.inference.classification.Posteriors` holds them); ``labels`` (n,).

    :func:`write_csv_table` of :func:`csv_table`: the rows as one table (a copy of the
    posteriors, smaller than the text), written in blocks of :data:`_WRITE_ROWS` rows
    (``chunk_size`` does not change the bytes; kept for the callers)."""
    return write_csv_table(csv_table(labels, tau, inverse, id_column))


def _csv(labels: np.ndarray, K: int, id_column: str | None,
         chunks: Iterable[tuple[int, np.ndarray]]) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    id_all = _id_array(labels)
    header, options = _layout(id_all, K, id_column)
    sink = pa.BufferOutputStream()
    sink.write(header)
    writer = None
    try:
        for a, tau in chunks:
            table = _table(K, id_all.slice(a, tau.shape[0]), tau)
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema, write_options=options)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return sink.getvalue().to_pybytes()


def part_name(index: int) -> str:
    """The file of partition ``index`` (0-based): names sort in partition order."""
    if not 0 <= int(index) < 10 ** 8:
        raise ValueError(f"partition index {index} out of range 0..99999999")
    return f"part-{int(index):08d}.parquet"


def write_posteriors_parquet(parts: Iterable[tuple[Sequence[Any] | np.ndarray, Data]],
                             model: MixtureModel, params: Params, folder: str | Path, *,
                             id_column: str | None = None,
                             chunk_size: int = 4096) -> list[Path]:
    """Write the posteriors of partitioned data as Parquet files in ``folder``, one per
    partition, and return their paths in order.

    ``parts``: ``(ids, data)`` per partition in input order (ids: the partition's row names,
    as for :func:`posteriors_csv`; data: its arrays).  Each file has the columns of
    :func:`posterior_columns` (the id's type taken from the first partition, ``p1..pK``
    float64, ``class`` int64) and one row group per ``chunk_size`` rows, so memory is bounded
    by a partition.  Each file is written under a temporary name and renamed when complete;
    files ``part-*.parquet`` already in ``folder`` beyond the last partition are removed, so
    the folder holds exactly this result.
    """
    import pyarrow.parquet as pq

    from ..inference.classification import responsibility_chunks

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = posterior_columns(model.n_components, id_column)
    schema = None
    written: list[Path] = []
    for index, (ids, part) in enumerate(parts):
        labels = np.asarray(ids)
        n = int(next(iter(part.values())).shape[0])
        if labels.shape[0] != n:
            raise ValueError(f"partition {index}: {labels.shape[0]} ids for {n} rows")
        id_all = _id_array(labels)
        path = folder / part_name(index)
        tmp = folder / f".{path.name}.tmp"
        writer = None
        try:
            for a, tau in responsibility_chunks(model, part, params, chunk_size):
                table = _table(model.n_components, id_all.slice(a, tau.shape[0]), tau, schema,
                               names)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table)
            if writer is None:  # an empty partition: an empty file (the schema so far)
                empty = _table(model.n_components, id_all, np.zeros((0, model.n_components)),
                               schema, names)
                writer = pq.ParquetWriter(tmp, empty.schema)
                writer.write_table(empty)
        finally:
            if writer is not None:
                writer.close()
        os.replace(tmp, path)
        written.append(path)
    keep = {p.name for p in written}
    for old in folder.glob("part-*.parquet"):
        if old.name not in keep:
            old.unlink()
    return written
