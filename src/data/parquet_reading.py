"""Parquet files as partitions and chunks: the source, its fingerprint, the reading.

:class:`PartitionedSource` opens a Parquet file, a folder or a glob from the files' footers
(their order, schema and row groups; :mod:`src.data.partitions` says what the input order,
partitions and chunk grid are), and :func:`read_partition` / :func:`_read_chunks` read one
partition's chunks in record batches of at most :data:`_BATCH_ROWS` rows, decoded in
jemalloc's pool when pyarrow has it, so memory is bounded by about a chunk.  Plain values
and pure functions: a Dask worker needs only a :class:`Partition`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from src.data.loading import _as_text_column, _check_header, check_parquet_file
from src.data.sources import classify_source, parquet_files
from src.utils.errors import DataError, PipelineError
from src.utils.messages import register, t

__all__ = ["Partition", "PartitionedSource", "read_partition"]

register({
    "partitions.no_parquet": {
        "en": "{source} holds no Parquet file (named .parquet or .pq; {n_text} CSV/TSV files are "
              "there), so there is nothing to read; point --data at a Parquet file, a folder of "
              "Parquet files or a pattern matching them.",
        "zh": "{source} 中没有 Parquet 文件（以 .parquet 或 .pq 结尾；其中有 {n_text} 个 CSV/TSV 文件），"
              "没有可读取的数据；请让 --data 指向一个 Parquet 文件、一个 Parquet 文件夹或匹配它们的模式。"},
    "partitions.builtin": {
        "en": "{source} is a built-in table, not partitioned input; read it with --data as it is.",
        "zh": "{source} 是内置数据表，不是分区输入；请直接用 --data 读取。"},
    "partitions.columns_differ": {
        "en": "The Parquet file {path} has the columns {columns} but {first} has {first_columns}; "
              "every file of {source} must have the same columns, so rewrite {path} or move it "
              "out of the data.",
        "zh": "Parquet 文件 {path} 的列为 {columns}，而 {first} 的列为 {first_columns}；{source} 的每个文件"
              "必须有相同的列，请重写 {path} 或把它移出数据。"},
    "partitions.kind_differs": {
        "en": "Column {column!r} holds {kind} in the Parquet file {path} but {first_kind} in "
              "{first}; every file of {source} must store it the same way, so rewrite {path} or "
              "move it out of the data.",
        "zh": "列 {column!r} 在 Parquet 文件 {path} 中是{kind}，而在 {first} 中是{first_kind}；"
              "{source} 的每个文件必须以相同方式存储该列，请重写 {path} 或把它移出数据。"},
    "partitions.kind.number": {"en": "numbers", "zh": "数值"},
    "partitions.kind.text": {"en": "text", "zh": "文本"},
    "partitions.kind.boolean": {"en": "booleans", "zh": "布尔值"},
    "partitions.no_rows": {
        "en": "The {n_files} Parquet files of {source} hold no rows; check that they were "
              "written completely.",
        "zh": "{source} 的 {n_files} 个 Parquet 文件中没有任何数据行；请检查它们是否完整写出。"},
})

#: rows per record batch asked of pyarrow at most (the batches are re-sliced into chunks;
#: the passes' fast path copies them one by one, so it holds one batch of Arrow memory)
_BATCH_ROWS = 16384
#: how files are opened: no pre-buffering (pyarrow would otherwise buffer every row group
#: asked for, the whole file) and buffered column reads (pages as needed, not whole column
#: chunks), so reading holds about a chunk, not a row group (measured: a 400 MB file read in
#: chunks of 65536 rows peaks at 46 MB of Arrow memory, 415 MB with pyarrow's defaults);
#: the buffer is per column (in pyarrow's default pool): 256 KB, not 1 MB, saved 10-30 MB of
#: a pass's peak resident memory over 10 columns at no measurable cost in time
_OPEN = {"pre_buffer": False, "buffer_size": 1 << 18}


@functools.lru_cache(maxsize=1)
def _reading_pool() -> Any:
    """The memory pool the files are decoded in: jemalloc's when pyarrow has it, else None
    (pyarrow's default pool).  Reading allocates and frees a chunk's pages, dictionaries and
    columns over and over; pyarrow's default (mimalloc) keeps about twice the live bytes
    resident (measured: 10 float columns read in chunks of 65536 rows, 28 MB live at most:
    62-68 MB resident with mimalloc, 29-36 MB with jemalloc, 40-53 MB with the system's)."""
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except Exception:   # a pyarrow built without jemalloc (Windows, some conda builds)
        return None


def _release_arrow_memory() -> None:
    """Hand back to the system what Arrow's pools (the default one and
    :func:`_reading_pool`'s) hold unused: done after a partition's scan, whose pandas path
    leaves pages that the later passes (on another thread: the read-ahead's) would not reuse
    (measured: a pass's peak 80 MB above set-up after a scan, 68-74 MB with this)."""
    import pyarrow as pa

    for pool in (pa.default_memory_pool(), _reading_pool()):
        release = getattr(pool, "release_unused", None)
        if release is not None:
            release()


def _parquet_file(path: str) -> Any:
    """``pq.ParquetFile(path)`` opened as :data:`_OPEN` says, its reader decoding into
    :func:`_reading_pool` (when pyarrow lets a reader be given a pool; else its default)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, **_OPEN)
    pool = _reading_pool()
    if pool is not None:
        try:
            reader = pq.ParquetReader(memory_pool=pool)
            reader.open(path, use_memory_map=False, metadata=pf.metadata,
                        buffer_size=_OPEN["buffer_size"], pre_buffer=_OPEN["pre_buffer"])
        except Exception:   # another pyarrow's reader: the default pool (memory only)
            return pf
        pf.reader = reader
    return pf


# --------------------------------------------------------------------- the source
@dataclass(frozen=True)
class Partition:
    """One unit of work of the engines: a file, or a run of its row groups.

    ``index``: position in the order of partitions (0-based); ``path``: the absolute path of
    the Parquet file; ``row_groups``: its row groups (in order); ``n_rows``: their raw rows
    (before ``--drop-missing``); ``first_row``: the global row number of their first row.
    Its chunks are those of its file's chunk grid that start in these rows (module docstring).
    """

    index: int
    path: str
    row_groups: tuple[int, ...]
    n_rows: int
    first_row: int


@dataclass(frozen=True)
class _File:
    path: str
    first_row: int
    group_rows: tuple[int, ...]     # raw rows of each row group

    @property
    def n_rows(self) -> int:
        return int(sum(self.group_rows))


def _value_kind(arrow_type: Any) -> str:
    """``number``, ``text``, ``boolean``, ``null`` or the type's own name."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return _value_kind(arrow_type.value_type)
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) \
            or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) \
            or getattr(pa.types, "is_string_view", lambda _: False)(arrow_type):
        return "text"
    return str(arrow_type)


def _kind_name(kind: str) -> str:
    return t(f"partitions.kind.{kind}") if kind in ("number", "text", "boolean") else kind


def _unreadable(path: str, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return DataError(t("data.unreadable", path=path, kind="PARQUET", reason=reason))


def _is_read_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, ValueError)) or type(exc).__module__.startswith("pyarrow")


def _schema_of(path: str) -> tuple[Any, list[str], dict[str, str]]:
    """(file metadata, column names without pandas index columns, kind of each column)."""
    import pyarrow.parquet as pq

    try:
        check_parquet_file(Path(path))
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except PipelineError:
        raise
    except Exception as exc:
        if _is_read_error(exc):
            raise _unreadable(path, exc) from None
        raise
    index_cols: set[str] = set()
    pandas_meta = schema.pandas_metadata if schema.metadata else None
    if pandas_meta:
        index_cols = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
    names = [str(n) for n in schema.names if n not in index_cols]
    kinds = {str(f.name): _value_kind(f.type) for f in schema if f.name not in index_cols}
    return meta, names, kinds


class PartitionedSource:
    """A Parquet file, a folder of Parquet files (nested ``key=value`` folders too) or a glob.

    Attributes: ``text`` (as given), ``files`` (absolute paths in input order),
    ``partitions`` (:class:`Partition` list), ``n_rows`` (raw rows), ``columns`` (the
    schema's names, the first file's order), ``target_rows``.  Picklable: a worker can be
    sent it (or only a :class:`Partition`, which is all :func:`partition_chunks` reads).
    """

    def __init__(self, text: str, files: list[_File], columns: list[str],
                 target_rows: int | None) -> None:
        self.text = str(text)
        self._files = list(files)
        self.files = [f.path for f in self._files]
        self.columns = list(columns)
        self.target_rows = None if target_rows is None else int(target_rows)
        self.n_rows = int(sum(f.n_rows for f in self._files))
        self.partitions = self._partition()

    def __repr__(self) -> str:
        return (f"PartitionedSource({self.text!r}: {len(self.files)} files, {self.n_rows} rows, "
                f"{len(self.partitions)} partitions)")

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, text: str, *, target_rows: int | None = None) -> "PartitionedSource":
        """Open ``text`` (a Parquet file, folder or pattern) from the files' footers.

        A DataError (one sentence) for: nothing there, no Parquet file, a file that is not
        Parquet or is damaged, files whose columns differ (naming the odd file), no rows.
        """
        text = str(text)
        if target_rows is not None and int(target_rows) < 1:
            raise ValueError(f"target_rows must be at least 1, got {target_rows!r}")
        info = classify_source(text)
        if info.kind == "builtin":
            raise DataError(t("partitions.builtin", source=text))
        if info.kind == "missing":
            raise DataError(t("data.file_missing", path=text))
        if info.kind == "other":
            raise DataError(t("data.not_regular", path=text))
        paths = [str(p) for p in parquet_files(info)]
        if not paths:
            raise DataError(t("partitions.no_parquet", source=text, n_text=info.n_text))
        files: list[_File] = []
        first_names: list[str] = []
        first_kinds: dict[str, str] = {}
        row = 0
        for i, path in enumerate(paths):
            meta, names, kinds = _schema_of(path)
            _check_header(names, None, path)
            if i == 0:
                first_names, first_kinds = names, kinds
            else:
                _check_same_schema(text, paths[0], first_names, first_kinds, path, names, kinds)
                for name, kind in kinds.items():   # an all-null first column takes a kind later
                    if first_kinds.get(name) == "null":
                        first_kinds[name] = kind
            groups = tuple(int(meta.row_group(g).num_rows) for g in range(meta.num_row_groups))
            files.append(_File(path, row, groups))
            row += sum(groups)
        if row == 0:
            raise DataError(t("partitions.no_rows", n_files=len(paths), source=text))
        return cls(text, files, first_names, target_rows)

    def _partition(self) -> list[Partition]:
        parts: list[Partition] = []
        for f in self._files:
            offsets = np.concatenate([[0], np.cumsum(f.group_rows, dtype=np.int64)])
            groups: list[int] = []
            for g, n in enumerate(f.group_rows):
                if n == 0:
                    continue
                if groups and (self.target_rows is None
                               or offsets[g] - offsets[groups[0]] + n <= self.target_rows):
                    groups.append(g)
                    continue
                if groups:
                    parts.append(self._part(len(parts), f, groups, offsets))
                groups = [g]
            if groups:
                parts.append(self._part(len(parts), f, groups, offsets))
        return parts

    @staticmethod
    def _part(index: int, f: _File, groups: list[int], offsets: np.ndarray) -> Partition:
        a, b = int(offsets[groups[0]]), int(offsets[groups[-1] + 1])
        return Partition(index, f.path, tuple(groups), b - a, f.first_row + a)

    # ------------------------------------------------------------- fingerprint
    def fingerprint(self, *, hash_bytes: bool = False) -> dict[str, Any]:
        """What the run's data fingerprint records of this source (JSON-able).

        ``sha256`` hashes, file by file in input order, the row counts of its row groups and
        the SHA-256 of its footer (the Parquet metadata: schema, row groups, column
        statistics), or with ``hash_bytes`` the SHA-256 of every byte of the file.  Paths,
        sizes and times are left out: a copy of the data elsewhere has the same fingerprint.
        """
        from src.data.loading import file_sha256

        h = hashlib.sha256()
        for f in self._files:
            digest = file_sha256(f.path) if hash_bytes else _footer_sha256(f.path)
            h.update(json.dumps([list(f.group_rows), digest]).encode())
        return {"format": "parquet", "files": len(self._files), "rows": self.n_rows,
                "hashed": "bytes" if hash_bytes else "footers", "sha256": h.hexdigest()}

    # ----------------------------------------------------------------- reading
    def iter_frames(self, partition: Partition, columns: Sequence[str] | None, chunk_rows: int,
                    *, as_text: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
        """``(global row number of the first row, frame)`` for each chunk of ``partition``.

        Each frame holds exactly ``chunk_rows`` raw rows (its file's last chunk fewer), is
        indexed by the rows' global row numbers and holds ``columns`` (None: every column);
        ``as_text``: every cell as text, missing kept missing (whole floats without ``.0``,
        decided per chunk).
        """
        cols = self.columns if columns is None else [str(c) for c in columns]
        return read_partition(partition, cols, chunk_rows, as_text=as_text)

    def read_rows(self, rows: Sequence[int] | np.ndarray, columns: Sequence[str] | None, *,
                  as_text: bool = False) -> pd.DataFrame:
        """The raw rows with the given global row numbers (sorted ascending), indexed by them.

        Only the row groups holding them are read, one at a time.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = self.columns if columns is None else [str(c) for c in columns]
        if rows.size and (np.any(np.diff(rows) < 0) or rows[0] < 0 or rows[-1] >= self.n_rows):
            raise ValueError(f"rows must be sorted global row numbers in [0, {self.n_rows})")
        starts = np.array([f.first_row for f in self._files], dtype=np.int64)
        frames: list[pd.DataFrame] = []
        which = np.searchsorted(starts, rows, side="right") - 1
        for i in np.unique(which):
            f = self._files[int(i)]
            local = rows[which == i] - f.first_row
            offsets = np.concatenate([[0], np.cumsum(f.group_rows, dtype=np.int64)])
            group = np.searchsorted(offsets, local, side="right") - 1
            for g in np.unique(group):
                within = local[group == g] - offsets[g]
                table = _read_group(f.path, int(g), cols).take(within)
                frames.append(_to_frame(table, f.first_row + offsets[g] + within, as_text))
        if not frames:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols},
                                index=pd.Index([], dtype=np.int64))
        return pd.concat(frames) if len(frames) > 1 else frames[0]


def _check_same_schema(source: str, first: str, first_names: list[str],
                       first_kinds: dict[str, str], path: str, names: list[str],
                       kinds: dict[str, str]) -> None:
    if set(names) != set(first_names):
        raise DataError(t("partitions.columns_differ", path=path, columns=", ".join(names) or "-",
                          first=first, first_columns=", ".join(first_names) or "-",
                          source=source))
    for name in first_names:
        a, b = first_kinds[name], kinds[name]
        if a != b and "null" not in (a, b):
            raise DataError(t("partitions.kind_differs", column=name, kind=_kind_name(b),
                              path=path, first_kind=_kind_name(a), first=first, source=source))


def _footer_sha256(path: str) -> str:
    """SHA-256 of a Parquet file's footer (its metadata), read from the file's end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(size - 8)
            tail = fh.read(8)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1" or length + 12 > size:
                raise DataError(t("data.parquet_truncated", path=path))
            fh.seek(size - 8 - length)
            return hashlib.sha256(fh.read(length)).hexdigest()
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _to_pandas(table: Any) -> pd.DataFrame:
    """An Arrow table as pandas, the way ``pd.read_parquet`` converts it."""
    try:
        from pandas.io._util import arrow_table_to_pandas
    except ImportError:  # pragma: no cover - an older or newer pandas
        return table.to_pandas()
    return arrow_table_to_pandas(table)


def _to_frame(table: Any, rows: Any, as_text: bool) -> pd.DataFrame:
    frame = _to_pandas(table)
    frame.index = pd.Index(np.asarray(rows, dtype=np.int64)) if not isinstance(rows, range) \
        else pd.RangeIndex(rows.start, rows.stop)
    if as_text:
        frame = pd.DataFrame({c: _as_text_column(frame[c]) for c in frame.columns},
                             index=frame.index)
    return frame


def _read_group(path: str, group: int, columns: list[str]) -> Any:
    try:
        return _parquet_file(path).read_row_group(group, columns=columns)
    except Exception as exc:
        if _is_read_error(exc):
            raise _unreadable(path, exc) from None
        raise


def _grid(partition: Partition, group_rows: Sequence[int],
          chunk_rows: int) -> tuple[int, list[tuple[int, int]]]:
    """(global row of the file's first row, file-local [start, stop) of each of the
    partition's chunks)."""
    offsets = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
    g0, g1 = partition.row_groups[0], partition.row_groups[-1]
    a, b = int(offsets[g0]), int(offsets[g1 + 1])
    file_first = partition.first_row - a
    n_file = int(offsets[-1])
    c = int(chunk_rows)
    start = -(-a // c) * c
    return file_first, [(s, min(s + c, n_file)) for s in range(start, b, c)]


def read_partition(partition: Partition, columns: list[str], chunk_rows: int, *,
                   as_text: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
    """:meth:`PartitionedSource.iter_frames` from the partition alone (a worker needs no
    source): its file's footer gives the row groups."""
    def frame(chunk: _Chunk) -> tuple[int, pd.DataFrame]:
        return chunk.first, _to_frame(chunk.table(), chunk.rows(), as_text)

    return _read_chunks(partition, columns, chunk_rows, frame)


class _Chunk:
    """One chunk as :func:`_read_chunks` hands it over: ``first`` (the global row number of
    its first row), ``n_rows``, and its rows read once, in order, either as record batches
    (:meth:`pieces`, each dropped by the reader once taken) or as one Arrow table
    (:meth:`table`); :meth:`reread` reads its rows from the file again (an Arrow table)."""

    def __init__(self, first: int, n_rows: int, pieces: Iterator[Any],
                 reread: Callable[[], Any]) -> None:
        self.first, self.n_rows = int(first), int(n_rows)
        self._pieces, self.reread = pieces, reread

    def rows(self) -> range:
        return range(self.first, self.first + self.n_rows)

    def pieces(self) -> Iterator[Any]:
        return self._pieces

    def table(self) -> Any:
        import pyarrow as pa

        return pa.Table.from_batches(list(self._pieces))


def _read_chunks(partition: Partition, columns: list[str], chunk_rows: int,
                 convert: Callable[[_Chunk], Any]) -> Iterator[Any]:
    """``convert(chunk)`` (:class:`_Chunk`) for each chunk of ``partition`` (the grid of
    :func:`_grid`), in order.  The file is read in record batches of at most
    :data:`_BATCH_ROWS` rows, handed to ``convert`` as the chunk's pieces (sliced where a
    batch straddles two chunks), so a converter that takes the pieces one by one holds one
    batch of Arrow memory, not a chunk's; what ``convert`` leaves of its pieces is read past.
    The reader holds no reference to a chunk's Arrow data once ``convert`` returns."""
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    path = partition.path
    try:
        pf = _parquet_file(path)
        md = pf.metadata
        group_rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    except Exception as exc:
        if _is_read_error(exc):
            raise _unreadable(path, exc) from None
        raise
    file_first, bounds = _grid(partition, group_rows, chunk_rows)
    if not bounds:
        return
    offsets = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
    start, stop = bounds[0][0], bounds[-1][1]
    g0 = int(np.searchsorted(offsets, start, side="right") - 1)
    g1 = int(np.searchsorted(offsets, stop - 1, side="right") - 1)
    batches = pf.iter_batches(batch_size=min(int(chunk_rows), _BATCH_ROWS),
                              row_groups=list(range(g0, g1 + 1)), columns=columns,
                              use_threads=False)
    state: dict[str, Any] = {"skip": start - int(offsets[g0]), "pending": None}

    def next_batch() -> Any:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                raise _unreadable(path, EOFError("fewer rows than its metadata says")) from None
            except Exception as exc:
                if _is_read_error(exc):
                    raise _unreadable(path, exc) from None
                raise
            if state["skip"]:
                if batch.num_rows <= state["skip"]:
                    state["skip"] -= batch.num_rows
                    continue
                batch = batch.slice(state["skip"])
                state["skip"] = 0
            return batch

    def pieces(need: int) -> Iterator[Any]:
        while need > 0:
            batch = state["pending"] if state["pending"] is not None else next_batch()
            state["pending"] = None
            if batch.num_rows > need:
                batch, state["pending"] = batch.slice(0, need), batch.slice(need)
            need -= batch.num_rows
            yield batch
            batch = None

    try:
        for s, e in bounds:
            taken = pieces(e - s)
            item = convert(_Chunk(file_first + s, e - s, taken,
                                  functools.partial(_read_table_range, path, s, e, columns,
                                                    group_rows)))
            for _ in taken:   # what convert left of the chunk
                pass
            taken = None
            yield item
            item = None
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _read_table_range(path: str, start: int, stop: int, columns: list[str],
                      group_rows: Sequence[int]) -> Any:
    """File-local rows [start, stop) of ``path`` as an Arrow table (whole row groups read)."""
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
    g0 = int(np.searchsorted(offsets, start, side="right") - 1)
    g1 = int(np.searchsorted(offsets, stop - 1, side="right") - 1)
    tables = [_read_group(path, g, columns) for g in range(g0, g1 + 1)]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return table.slice(start - int(offsets[g0]), stop - start)


def _read_range(path: str, file_first: int, start: int, stop: int, columns: list[str],
                group_rows: Sequence[int]) -> pd.DataFrame:
    """File-local rows [start, stop) of ``path`` as a frame (global row numbers as index)."""
    return _to_frame(_read_table_range(path, start, stop, columns, group_rows),
                     range(file_first + start, file_first + stop), False)
