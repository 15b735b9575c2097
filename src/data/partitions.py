"""Partitioned Parquet input: data read chunk by chunk, never as one table.

``--data`` may name a Parquet file, a folder of Parquet files or a file pattern (glob).
:class:`PartitionedSource` opens it from the files' metadata only (their footers):

* **files**: a folder is searched with its subfolders (``key=value`` folders of partitioned
  data sets; the folder names are not read as columns); a pattern's matching folders are
  searched the same way; names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``,
  ``_metadata``) are skipped (:func:`src.data.sources.parquet_files`).  The files are taken
  in **sorted order of their paths** (as text), and each file's rows in file order: this is
  the **input order**, and a row's **global row number** is its 0-based position in it
  (what messages, ``posteriors`` and the sample name rows by).
* **schema**: every file must have the same columns, each stored as the same kind of value
  (numbers, text, booleans; an all-null column fits any); otherwise one sentence names the
  odd file.  pandas index columns stored in a file are not columns of the data.
* **partitions** (:class:`Partition`, the engines' unit of work): by default one per file;
  with ``target_rows`` a file's row groups are grouped in order into partitions of at most
  about that many rows (a row group is never split).
* **chunks**: rows are handed out in chunks of exactly ``chunk_rows`` rows on a grid that
  starts at each file's first row (the file's last chunk shorter).  A partition yields the
  chunks of its file **that start in its rows** (the last one may read on into the next row
  group), so the chunks are the same whatever ``target_rows`` (by default a partition is a
  file, so its chunks restart at each partition).  Every engine therefore sees the same
  chunks; the files are read in record batches of at most 16,384 rows
  (``ParquetFile.iter_batches``, one decoding thread, decoded in jemalloc's pool when pyarrow
  has it), so memory is bounded by about a chunk's arrays plus a batch and the reader's
  buffers.
* **fingerprint** (:meth:`PartitionedSource.fingerprint`): from the metadata: the files'
  order, row counts and the SHA-256 of each file's footer (schema, row groups, column
  statistics), or with ``hash_bytes`` the SHA-256 of every byte.  Absolute paths, file sizes
  and times are not part of it, so a copy of the folder elsewhere resumes a run.

From frames to a family's arrays (plain functions of plain values, so a Dask worker can
call them): :func:`scan` is the first pass over the data: it validates every chunk through
the family's ``prepare_data`` (so ``--drop-missing`` and data errors behave as in memory,
naming the file and the global row), counts the rows kept, and merges the chunks' meta
(:meth:`~src.models.base.MixtureModel.merge_meta`).  :func:`partition_chunks` then yields a
partition's data dicts chunk by chunk, conformed to the merged meta
(:meth:`~src.models.base.MixtureModel.conform_data`: LCA's codes re-mapped to the merged
categories; :func:`kept_chunks` adds each chunk's kept rows, as global row numbers, and
columns such as ``--id``).  :func:`sample` draws a random sample of kept rows for the
starting values.  An engine may run the scan's partitions on workers
(:func:`scan_partition`, then :func:`finish_scan`).  A partition whose rows are all dropped
yields no chunk.

**The passes' fast path.**  A family whose arrays are made from one float matrix of its
columns declares it (:meth:`~src.models.base.MixtureModel.fast_chunk`: GMM's ``X``, the
mixture of regressions' ``X`` and ``y``); the passes after the scan then copy each record
batch's columns straight into a float64 matrix in C order (no pandas frame, no
``prepare_data``), check it (finite; missing values an error unless ``--drop-missing``, which
leaves those rows out; weights finite and not negative, rows of weight 0 left out) and give
the family's arrays, **bit for bit** those of the slow path (tested).  A chunk with a column
not stored as numbers, or with a value the scan would refuse (the files changed since), goes
through ``prepare_data``, which raises the scan's sentence.  ``FAST_CHUNKS = False`` turns the
fast path off (for measuring it).

Cost of a pass (measured, 1e6 rows x 10 float columns, snappy and dictionary-encoded, chunks
of 65536 rows, one core): pyarrow's decoding 0.045-0.06 s, the fast path 0.07-0.09 s in all,
the slow path (pandas and ``prepare_data``) 0.15-0.18 s; a GMM E-step of K = 5 full
covariances 0.11-0.12 s.

How a family sees a chunk: ``prepare_data(frame, options)`` with
``options["_chunk"] = {"path": <the Parquet file>}`` (absent for whole data), the frame
indexed by the rows' global row numbers and ``frame.attrs["_chunk"]`` the same dict (for
:func:`src.data.loading.numeric_matrix`, which sees no options).  A family then skips the
checks that need every row (LCA: an item with no answer; GMM: a constant column; mixreg:
a constant or collinear predictor; any: a column with no value, no complete row) and its
:meth:`~src.models.base.MixtureModel.chunk_meta` adds to the chunk's meta, under keys
starting with ``_``, what :meth:`~src.models.base.MixtureModel.merge_meta` needs to make
those checks over the whole data after the pass.  ``options["source"]`` stays the
``--data`` text; the file is named by ``options["_chunk"]["path"]``.

Text codes (families with ``reads_text``): a float column is written as text per chunk,
``1.0`` as ``1`` when every value of the chunk is whole, as the in-memory reader decides for
the whole column: a float column mixing whole and fractional codes should be stored as text.

Covariates of the one-step model (``covariates``, ``--covariates``): read beside the model's
columns and checked as in memory (:func:`src.data.covariates.covariate_values`, after the
weights, naming the file and the global row; a row with a missing covariate dropped under
``--drop-missing``); the scan decides "constant" and "linearly dependent" over every kept row
from a :class:`~src.data.covariates.DesignSummary` folded over the chunks, and names the
covariates in the merged meta (:data:`~src.models.covariates.COVARIATES_META`, after the
family's keys: the in-memory meta).  Every later pass (:func:`kept_chunks`, :func:`sample`, the
fast path) reads the names from that meta and adds each chunk's design ``Z`` (intercept
first, :data:`Z_KEY`) after its weights, as :func:`src.pipeline.phases.prepare_frame` does.

Row weights (``weight_column``, ``--weights``): read beside the model's columns and checked
as in memory (:func:`src.data.rows.split_weights`' rules and sentences, naming the file and
the global row), each chunk validated whole through ``prepare_data``, then its rows of
weight 0 (and, with ``--drop-missing``, of a missing weight) left out and its arrays made
again from the others (one note for the rows of weight 0); the weights travel under
``WEIGHT_KEY`` in the data dicts.  Errors are found in input order, chunk by chunk (in a
chunk the weights first).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from src.data.covariates import (DesignSummary, check_covariate_columns,
                                 check_design_summary, covariate_names, covariate_values,
                                 family_meta)
from src.data.loading import (_as_text_column, _check_columns, _check_header, _check_unique,
                              check_parquet_file)
from src.data.rows import check_id_column, check_weight_column, kept_positions, weight_values
from src.data.sources import classify_source, parquet_files
from src.utils.errors import DataError, PipelineError
from src.utils.messages import register, t
from src.utils.rng import stream

#: the design's key in a data dict (:data:`src.models.covariates.Z_KEY`; the models package
#: is not imported here at module level)
Z_KEY = "Z"

__all__ = ["Partition", "PartitionedSource", "ScanResult", "PartitionScan", "scan",
           "scan_partition", "finish_scan", "partition_chunks", "kept_chunks", "sample",
           "model_columns", "read_partition", "merge_equal", "weighted_mean", "SAMPLE_PURPOSE"]

#: the purpose of the sample's random stream: ``stream(seed, "sample")``
SAMPLE_PURPOSE = "sample"

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
    "partitions.meta_differs": {
        "en": "The chunks of {source} give model {model!r} different {key!r} ({first} and {other}), "
              "so they cannot be fitted as one data set; make the files agree or fit them "
              "separately.",
        "zh": "{source} 的各数据块为模型 {model!r} 给出了不同的 {key!r}（{first} 与 {other}），"
              "无法作为一个数据集拟合；请使各文件一致，或分别拟合。"},
    "partitions.unit": {"en": "partitions read", "zh": "已读取的分区"},
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


# ------------------------------------------------------------- merging metas
def weighted_mean(values: Sequence[Any], counts: Sequence[int]) -> Any:
    """The count-weighted mean of numbers or of equal-length lists of numbers (each entry
    summed with ``math.fsum``, so the order of the chunks changes nothing); chunks with
    count 0 are left out."""
    pairs = [(v, int(c)) for v, c in zip(values, counts) if int(c) > 0]
    total = sum(c for _, c in pairs)
    if not pairs:
        return values[0] if values else None
    if isinstance(pairs[0][0], (list, tuple, np.ndarray)):
        width = len(pairs[0][0])
        return [math.fsum(float(v[j]) * c for v, c in pairs) / total for j in range(width)]
    return math.fsum(float(v) * c for v, c in pairs) / total


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def merge_equal(metas: Sequence[Mapping[str, Any]], counts: Sequence[int], *,
                source: str = "the data", model: str = "", summed: Sequence[str] = ("n_dropped",),
                averaged: Sequence[str] = (), skip: Sequence[str] = ()) -> dict[str, Any]:
    """The default merge of chunks' meta (:meth:`~src.models.base.MixtureModel.merge_meta`).

    ``summed`` keys are added up over every chunk, ``averaged`` ones are the count-weighted
    mean (:func:`weighted_mean`) over the chunks that kept rows, ``skip`` ones and those
    starting with ``_`` are left out (the caller fills them), and every other key must be
    equal in all chunks that kept rows (all chunks when none did): otherwise a DataError
    naming the key.
    """
    metas = [dict(m) for m in metas]
    counts = [int(c) for c in counts]
    if not metas:
        return {}
    with_rows = [m for m, c in zip(metas, counts) if c > 0] or metas
    out: dict[str, Any] = {}
    for key in metas[0]:
        if key.startswith("_") or key in skip:
            continue
        if key in summed:
            out[key] = sum(int(m.get(key, 0) or 0) for m in metas)
        elif key in averaged:
            out[key] = weighted_mean([m[key] for m in metas], counts)
        else:
            first = with_rows[0].get(key)
            for m in with_rows[1:]:
                if m.get(key) != first:
                    raise DataError(t("partitions.meta_differs", source=source, model=model,
                                      key=key, first=_show(first), other=_show(m.get(key))))
            out[key] = first
    return out


# ----------------------------------------------------------- chunk preparation
@dataclass
class _Prepared:
    """One chunk through the family's ``prepare_data`` (before conforming)."""

    first_row: int
    n_raw: int
    n_kept: int
    rows: np.ndarray | None           # global row numbers of the kept rows (None: unknown)
    data: dict[str, np.ndarray] | None
    meta: dict[str, Any] | None       # chunk_meta; None when no row reached prepare_data
    present: np.ndarray               # per model column: a value in some row
    n_zero: int = 0
    zero_row: int | None = None
    n_used: int = 0                   # rows of weight > 0 (all rows without weights)


def _weights(values: pd.Series, column: str, path: str, drop_missing: bool) -> np.ndarray:
    """The weight of every row of a chunk (NaN: missing, with ``drop_missing``), checked by
    the rules of :func:`src.data.rows.split_weights` and its sentences, the file and the
    global row named."""
    return weight_values(values, column, path, drop_missing, by_label=True)


def _chunk_options(options: Mapping[str, Any], source: str, path: str) -> dict[str, Any]:
    opts = {k: v for k, v in options.items() if k != "n_components"}
    opts["source"] = source
    opts["_chunk"] = {"path": path}
    return opts


def _prepare(frame: pd.DataFrame, cls: Any, options: Mapping[str, Any], source: str,
             path: str, columns: list[str], weight_column: str | None, *,
             summarise: bool = True, covariates: Sequence[str] | None = None) -> _Prepared:
    """The family's arrays and chunk meta of one raw chunk (rows named by the frame's index);
    ``summarise=False``: ``prepare_data``'s meta without :meth:`chunk_meta`'s additions
    (enough to conform the arrays).  ``covariates``: the one-step model's columns, checked
    as in memory (:func:`src.data.covariates.covariate_values`), their design ``Z`` of the
    kept rows added to the data dict (rows with a missing covariate left out, with
    ``--drop-missing``)."""
    from src.models.base import WEIGHT_KEY

    first = int(frame.index[0]) if len(frame) else 0
    n_raw = int(len(frame))
    drop_missing = bool(options.get("drop_missing", False))
    model_frame = frame[columns]
    if cls.reads_text:
        model_frame = pd.DataFrame({c: _as_text_column(model_frame[c]) for c in columns},
                                   index=frame.index)
    w = None
    n_zero, zero_row = 0, None
    if weight_column is not None:   # weights first, as split_weights checks them first
        w = _weights(frame[weight_column], weight_column, path, drop_missing)
    X = None
    if covariates:   # then the covariates, as prepare_frame checks them
        X = covariate_values(frame, list(covariates), path, drop_missing, by_label=True)
    opts = _chunk_options(options, source, path)
    model_frame.attrs["_chunk"] = {"path": path}
    data, meta = _family_arrays(cls, model_frame, opts, drop_missing)
    used = None
    n_used = n_raw
    if w is not None:   # every row validated; the family's arrays of the rows of weight > 0
        used = w > 0
        n_used = int(used.sum())
        zero = np.flatnonzero(w == 0)
        n_zero = int(zero.size)
        zero_row = int(frame.index[zero[0]]) if zero.size else None
    if X is not None:   # and of the rows with every covariate (--drop-missing)
        complete = np.isfinite(X).all(axis=1)
        used = complete if used is None else used & complete
    if used is not None and not used.all():
        model_frame = model_frame[used]
        w = None if w is None else w[used]
        X = None if X is None else X[used]
        model_frame.attrs["_chunk"] = {"path": path}
        if len(model_frame) == 0:
            return _Prepared(first, n_raw, 0, np.zeros(0, dtype=np.int64), None, None,
                             np.zeros(len(columns), dtype=bool), n_zero, zero_row, n_used)
        data, meta = _family_arrays(cls, model_frame, opts, drop_missing)
    present = model_frame.notna().to_numpy().any(axis=0) if summarise \
        else np.zeros(len(columns), dtype=bool)
    data = dict(data)
    n_kept = int(next(iter(data.values())).shape[0]) if data else 0
    positions = kept_positions(model_frame, n_kept)
    rows = None if positions is None else model_frame.index.to_numpy(dtype=np.int64)[positions]
    if w is not None:
        if positions is None:
            raise DataError(t("data.weights_unmatched", model=cls.name, n_kept=n_kept,
                              n_rows=int(len(model_frame)), source=path))
        data[WEIGHT_KEY] = np.ascontiguousarray(w[positions], dtype=np.float64)
    rows_only = data if WEIGHT_KEY not in data else \
        {k: v for k, v in data.items() if k != WEIGHT_KEY}
    meta = cls.chunk_meta(rows_only, dict(meta)) if summarise else dict(meta)
    if X is not None:   # the design of the kept rows, as prepare_frame makes it
        if positions is None:
            raise DataError(t("covariates.unmatched", model=cls.name, n_kept=n_kept,
                              n_rows=int(len(model_frame)), source=path))
        data[Z_KEY] = _design(X[positions], covariates)
    return _Prepared(first, n_raw, n_kept, rows, data, meta, present, n_zero, zero_row,
                     n_used)


def _design(X: np.ndarray, covariates: Sequence[str]) -> np.ndarray:
    """The design of the kept rows' covariates (intercept first), C-ordered float64: what
    :func:`src.pipeline.phases.prepare_frame` puts under ``Z``."""
    from src.models.logit import design

    return np.ascontiguousarray(design(X, list(covariates))[0])


def _family_arrays(cls: Any, frame: pd.DataFrame, options: dict[str, Any],
                   drop_missing: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``cls.prepare_data`` of a chunk; its ValueError a DataError."""
    try:
        if drop_missing and not frame.notna().all(axis=1).any():
            with warnings.catch_warnings():   # no row kept: a family's means of nothing
                warnings.simplefilter("ignore", RuntimeWarning)
                return cls.prepare_data(frame, options)
        return cls.prepare_data(frame, options)
    except PipelineError:
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _resolve_class(cls_spec: Any) -> Any:
    if isinstance(cls_spec, str):
        from src.models.registry import get_model_class

        return get_model_class(cls_spec)
    return cls_spec


def _read_columns(columns: list[str], weight_column: str | None,
                  covariates: Sequence[str] | None = None) -> list[str]:
    return columns + ([weight_column] if weight_column is not None else []) \
        + [str(c) for c in covariates or ()]


def model_columns(source: "PartitionedSource", columns: Sequence[str] | None = None, *,
                  weight_column: str | None = None, id_column: str | None = None,
                  covariates: Sequence[str] | None = None) -> list[str]:
    """The model's columns: ``columns`` (checked: in the files, each once, not the id,
    weight or covariate columns) or every column of the files but those."""
    available = list(source.columns)
    check_id_column(id_column, columns, available, source.text)
    check_weight_column(weight_column, columns, available, source.text, id_column)
    check_covariate_columns(covariates, columns, available, source.text, id_column,
                            weight_column)
    if columns is None:
        special = {id_column, weight_column, *[str(c) for c in covariates or ()]}
        return [c for c in available if c not in special]
    cols = [str(c) for c in columns]
    _check_unique(cols)
    _check_columns(available, cols, source.text)
    return cols


def _source_name(source: Any) -> str:
    if isinstance(source, PartitionedSource):
        return source.text
    if source is None or isinstance(source, (list, tuple)):
        return "the data"
    return str(source)


# ------------------------------------------------------------------- the scan
@dataclass
class PartitionScan:
    """What the first pass learnt of one partition (:func:`scan_partition`)."""

    index: int
    n_raw: int = 0
    metas: list[dict[str, Any] | None] = field(default_factory=list)   # per chunk
    chunk_kept: list[int] = field(default_factory=list)                # per chunk
    weight_sums: list[float] = field(default_factory=list)             # per chunk
    present: np.ndarray | None = None
    n_zero: int = 0
    zero_row: int | None = None
    n_used: int = 0
    error: PipelineError | None = None
    design: DesignSummary | None = None   # the kept rows' covariates (--covariates)

    @property
    def kept(self) -> int:
        return int(sum(self.chunk_kept))


@dataclass
class ScanResult:
    """The first pass over partitioned input (:func:`scan`).

    ``n_obs``: rows kept (the model's rows); ``n_raw``: rows in the files; ``n_dropped``:
    rows left out for a missing value (``--drop-missing``, a missing weight);
    ``n_zero_weight``: rows of weight 0 left out; ``meta``: the merged meta (the family's
    ``merge_meta``); ``kept``: kept rows per partition; ``chunk_kept``: per partition, kept
    rows per chunk (what :func:`sample` locates rows by); ``weight_sum``: sum of the kept
    rows' weights (None without weights); ``fingerprint``: the source's
    (:meth:`PartitionedSource.fingerprint`); ``chunk_rows``; ``columns``: the model's
    columns; ``weight_column``; ``notes``: one-line sentences for the caller to print.
    """

    n_obs: int
    n_raw: int
    n_dropped: int
    n_zero_weight: int
    meta: dict[str, Any]
    kept: list[int]
    chunk_kept: list[list[int]]
    weight_sum: float | None
    fingerprint: dict[str, Any]
    chunk_rows: int
    columns: list[str]
    weight_column: str | None = None
    notes: list[str] = field(default_factory=list)


def scan_partition(source: Any, partition: Partition, cls_spec: Any, options: Mapping[str, Any],
                   chunk_rows: int, columns: list[str], *,
                   weight_column: str | None = None,
                   covariates: Sequence[str] | None = None) -> PartitionScan:
    """The first pass over one partition (a pure function: a worker can run it).

    ``source``: the :class:`PartitionedSource` or its ``--data`` text (only named in
    messages); ``columns``: the model's columns (:func:`model_columns`); ``covariates``: the
    one-step model's (checked chunk by chunk, their design summarised for the checks over
    every row, :class:`~src.data.covariates.DesignSummary`).  A DataError of a
    chunk is kept in ``error`` (so :func:`finish_scan` reports the first one in input order
    whatever ran first); the pass over the partition stops there.
    """
    cls = _resolve_class(cls_spec)
    name = _source_name(source)
    out = PartitionScan(partition.index, present=np.zeros(len(columns), dtype=bool))
    try:
        for _, frame in read_partition(partition, _read_columns(columns, weight_column,
                                                                covariates), chunk_rows):
            p = _prepare(frame, cls, options, name, partition.path, columns, weight_column,
                         covariates=covariates)
            if covariates and p.data is not None:
                out.design = (out.design or DesignSummary()).add(p.data[Z_KEY])
            out.n_raw += p.n_raw
            out.metas.append(p.meta)
            out.chunk_kept.append(p.n_kept)
            out.present |= p.present
            if p.data is not None and weight_column is not None:
                from src.models.base import WEIGHT_KEY
                out.weight_sums.append(math.fsum(p.data[WEIGHT_KEY]))
            out.n_used += p.n_used
            if p.n_zero:
                if out.zero_row is None:
                    out.zero_row = p.zero_row
                out.n_zero += p.n_zero
    except PipelineError as exc:
        out.error = exc
    _release_arrow_memory()
    return out


def finish_scan(source: "PartitionedSource", cls_spec: Any, parts: Sequence[PartitionScan],
                chunk_rows: int, columns: list[str], *, weight_column: str | None = None,
                hash_bytes: bool = False, covariates: Sequence[str] | None = None) -> ScanResult:
    """:func:`scan`'s result from every partition's :class:`PartitionScan` (any order):
    the first error in input order, then the merged meta and the checks over every row.
    With ``covariates`` the meta names them (:data:`~src.models.covariates.COVARIATES_META`,
    after the family's keys, as in memory) and their design is checked over every kept row
    (:func:`~src.data.covariates.check_design_summary`: the in-memory sentences)."""
    cls = _resolve_class(cls_spec)
    parts = sorted(parts, key=lambda p: p.index)
    for p in parts:
        if p.error is not None:
            raise p.error
    metas: list[dict[str, Any]] = []
    counts: list[int] = []
    for p in parts:
        for m, c in zip(p.metas, p.chunk_kept):
            if m is not None:
                metas.append(m)
                counts.append(c)
    n_obs = int(sum(counts))
    present = np.zeros(len(columns), dtype=bool)
    for p in parts:
        present |= p.present if p.present is not None else False
    if weight_column is not None and not any(p.n_used for p in parts):
        raise DataError(t("data.all_zero_weights", source=source.text, column=weight_column))
    meta = cls.merge_meta(metas, counts, source=source.text) if metas else {}
    for j, col in enumerate(columns):
        if not present[j]:
            raise DataError(t("data.column_all_missing", column=col, source=source.text))
    if n_obs == 0:
        raise DataError(t("data.no_complete_rows", source=source.text))
    if covariates:
        from src.models.covariates import COVARIATES_META

        meta = {**meta, COVARIATES_META: [str(c) for c in covariates]}
        design = DesignSummary()
        for p in parts:
            design.merge(p.design)
        check_design_summary(design, [str(c) for c in covariates], source.text)
    n_raw = int(sum(p.n_raw for p in parts))
    n_zero = int(sum(p.n_zero for p in parts))
    notes = []
    if n_zero:
        first = next(p for p in parts if p.n_zero)
        notes.append(t("data.note.zero_weights", count=n_zero, source=source.text,
                       column=weight_column, row=first.zero_row))
    weight_sum = None
    if weight_column is not None:
        weight_sum = math.fsum(s for p in parts for s in p.weight_sums)
    return ScanResult(n_obs=n_obs, n_raw=n_raw, n_dropped=n_raw - n_obs - n_zero,
                      n_zero_weight=n_zero, meta=meta, kept=[p.kept for p in parts],
                      chunk_kept=[list(p.chunk_kept) for p in parts], weight_sum=weight_sum,
                      fingerprint=source.fingerprint(hash_bytes=hash_bytes),
                      chunk_rows=int(chunk_rows), columns=list(columns),
                      weight_column=weight_column, notes=notes)


def scan(source: "PartitionedSource | str", cls: Any, options: Mapping[str, Any], *,
         chunk_rows: int, columns: Sequence[str] | None = None,
         weight_column: str | None = None, id_column: str | None = None,
         hash_bytes: bool = False, reporter: Any = None,
         covariates: Sequence[str] | None = None) -> ScanResult:
    """The first pass over partitioned input, in process (module docstring).

    ``cls``: the family's class (or its ``--model`` name); ``options``: what its
    ``prepare_data`` reads (``RunOptions.model_options``: ``drop_missing`` and the family's
    options); ``columns``: the model's columns (None: every column but the id and weight
    columns); ``id_column``: only checked (present, not a model column); ``covariates``:
    the one-step covariate model's columns (``--covariates``), read beside the model's
    (:mod:`src.data.covariates`).  ``reporter``:
    ``unit`` after each partition, ``message`` for the notes.  Partition by partition
    through :func:`scan_partition`, then :func:`finish_scan` (an engine may map the first
    over workers and call the second).
    """
    src = source if isinstance(source, PartitionedSource) else PartitionedSource.open(source)
    cols = model_columns(src, columns, weight_column=weight_column, id_column=id_column,
                         covariates=covariates)
    parts: list[PartitionScan] = []
    total = len(src.partitions)
    for i, part in enumerate(src.partitions):
        result = scan_partition(src, part, cls, options, chunk_rows, cols,
                                weight_column=weight_column, covariates=covariates)
        parts.append(result)
        if result.error is not None:
            break
        if reporter is not None and hasattr(reporter, "unit"):
            reporter.unit(t("partitions.unit"), i + 1, total)
    result = finish_scan(src, cls, parts, chunk_rows, cols, weight_column=weight_column,
                         hash_bytes=hash_bytes, covariates=covariates)
    if reporter is not None and hasattr(reporter, "message"):
        for note in result.notes:
            reporter.message(note)
    return result


# ------------------------------------------------------------ model's chunks
def partition_chunks(source: Any, partition: Partition, cls_spec: Any,
                     options: Mapping[str, Any], meta: Mapping[str, Any], chunk_rows: int, *,
                     columns: Sequence[str], weight_column: str | None = None
                     ) -> Iterator[dict[str, np.ndarray]]:
    """The model's data dicts of one partition, chunk by chunk (chunks that keep no row are
    skipped, so a partition whose rows were all dropped yields none), conformed to the whole
    data's ``meta`` (``cls.conform_data``), the weights under ``WEIGHT_KEY``.

    Plain arguments (a worker needs no source object): ``source`` only names the data in
    messages (the :class:`PartitionedSource` or its text); ``columns``: the model's columns
    (``ScanResult.columns``); ``options``, ``chunk_rows``, ``weight_column``: as in the scan.
    """
    for _, _, data in kept_chunks(source, partition, cls_spec, options, meta, chunk_rows,
                                  columns=columns, weight_column=weight_column):
        yield data


def kept_chunks(source: Any, partition: Partition, cls_spec: Any, options: Mapping[str, Any],
                meta: Mapping[str, Any], chunk_rows: int, *, columns: Sequence[str],
                weight_column: str | None = None, extra: Sequence[str] = ()
                ) -> Iterator[tuple[np.ndarray, pd.DataFrame | None, dict[str, np.ndarray]]]:
    """:func:`partition_chunks` with each chunk's kept rows: ``(global row numbers of the
    kept rows (-1 where a family drops rows by a rule of its own), the ``extra`` columns of
    those rows (e.g. ``--id``; None without), the data dict)``.

    A family with a :meth:`~src.models.base.MixtureModel.fast_chunk` has its chunks read
    straight from Arrow into its float matrix (:func:`_fast_chunk`: the same arrays, bit for
    bit); a chunk the fast path cannot take (a column not stored as numbers, a value the
    family's ``prepare_data`` would refuse) goes through ``prepare_data``, which raises the
    error a chunk of the scan would."""
    cls = _resolve_class(cls_spec)
    name = _source_name(source)
    cols = [str(c) for c in columns]
    covs = covariate_names(meta)
    meta = family_meta(meta)
    more = [str(c) for c in extra
            if str(c) not in cols and str(c) != weight_column and str(c) not in (covs or ())]
    extra_cols = [str(c) for c in extra]
    plan = _fast_plan(cls, cols, options)
    drop_missing = bool(options.get("drop_missing", False))

    def convert(chunk: _Chunk) -> Any:
        if plan is not None:
            fast = _fast_chunk(plan, chunk, weight_column, drop_missing, extra_cols, covs or ())
            if isinstance(fast, tuple):
                rows, data, labels = fast
                if rows.size == 0:
                    return None
                if labels is not None:
                    labels = _to_frame(labels, chunk.rows(), False).loc[rows]
                return rows, labels, data
            table = fast
        else:
            table = chunk.table()
        frame = _to_frame(table, chunk.rows(), False)
        table = None
        p = _prepare(frame, cls, options, name, partition.path, cols, weight_column,
                     summarise=False, covariates=covs)
        if p.data is None or p.n_kept == 0:
            return None
        rows = p.rows if p.rows is not None else np.full(p.n_kept, -1, dtype=np.int64)
        labels = None
        if extra_cols:
            if p.rows is None:
                raise DataError(t("data.id_unmatched", model=cls.name, n_kept=p.n_kept,
                                  n_rows=len(frame), source=partition.path))
            labels = frame.loc[p.rows, extra_cols]
        return rows, labels, _conform(cls, p, meta)

    for item in _read_chunks(partition, _read_columns(cols, weight_column, covs) + more,
                             chunk_rows, convert):
        if item is not None:
            yield item


def _conform(cls: Any, p: _Prepared, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The family's arrays of a prepared chunk conformed to the whole data's ``meta`` (the
    family's keys only), then its weights and its covariates' design, in that order."""
    from src.models.base import WEIGHT_KEY

    assert p.data is not None and p.meta is not None
    rows = {k: v for k, v in p.data.items() if k not in (WEIGHT_KEY, Z_KEY)}
    out = dict(cls.conform_data(rows, p.meta, meta))
    for key in (WEIGHT_KEY, Z_KEY):
        if key in p.data:
            out[key] = p.data[key]
    return out


# ------------------------------------------------------- the fast path of the passes
#: whether the passes after the scan take :func:`_fast_chunk` for families declaring
#: ``fast_chunk`` (False: every chunk through pandas and ``prepare_data``, as the scan; for
#: measuring what the fast path saves)
FAST_CHUNKS = True


@dataclass(frozen=True)
class _FastPlan:
    """A family's float matrix: its columns (in order) and how its arrays are made of it."""

    columns: list[str]
    make: Callable[[np.ndarray], dict[str, np.ndarray]]


def _fast_plan(cls: Any, columns: list[str], options: Mapping[str, Any]) -> _FastPlan | None:
    """The family's :meth:`~src.models.base.MixtureModel.fast_chunk` for these columns and
    options, or None: none declared, text-reading families, or a subclass that makes its
    arrays (``prepare_data``) or conforms them (``conform_data``) otherwise than the class
    that declared it."""
    if not FAST_CHUNKS or getattr(cls, "reads_text", False):
        return None
    owner = next((k for k in getattr(cls, "__mro__", ()) if "fast_chunk" in vars(k)), None)
    if owner is None:
        return None
    for name in ("prepare_data", "conform_data"):
        mine, theirs = getattr(cls, name, None), getattr(owner, name, None)
        if getattr(mine, "__func__", mine) is not getattr(theirs, "__func__", theirs):
            return None
    plan = cls.fast_chunk(list(columns), options)
    if plan is None:
        return None
    matrix, make = plan
    return _FastPlan([str(c) for c in matrix], make)


def _numeric_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type))


def _fast_chunk(plan: _FastPlan, chunk: _Chunk, weight_column: str | None,
                drop_missing: bool, extra: Sequence[str] = (),
                covariates: Sequence[str] = ()) -> Any:
    """One chunk straight from Arrow to the family's arrays: ``(global row numbers of the
    kept rows, data dict, Arrow table of the ``extra`` columns of every row or None)``, or,
    when the chunk needs the slow path, its Arrow table.

    The chunk's record batches are copied one by one into a float64 matrix in C order (the
    matrix columns; the weights into a vector), each batch dropped once copied, then checked
    (finite, no missing value unless ``drop_missing``, weights finite and not negative); the
    rows with a missing value (``drop_missing``) or a weight of 0 are left out and the
    family's arrays made of the rest.  ``covariates`` (the one-step model's columns) are
    copied the same way into a second matrix, checked alike (a row with a missing covariate
    left out with ``drop_missing``) and given as the design ``Z`` of the kept rows.  The slow
    path takes a chunk with a column not stored as numbers (integers and floats; booleans
    too), and one with a value it would refuse (read again from the file; it then raises the
    sentence of the scan).  The arrays equal the slow path's bit for
    bit: each column becomes float64 the same way (Arrow's conversion to numpy, then numpy's
    cast, as pandas converts it) and the same rows are kept in the same order."""
    import pyarrow as pa

    from src.models.base import WEIGHT_KEY

    pieces = chunk.pieces()
    batch = next(pieces)
    schema = batch.schema
    covariates = [str(c) for c in covariates]
    names = plan.columns + ([weight_column] if weight_column is not None else []) + covariates
    if not all(_numeric_type(schema.field(c).type) for c in names):
        return pa.Table.from_batches([batch, *pieces])
    index = [schema.get_field_index(c) for c in plan.columns]
    n = chunk.n_rows
    values = np.empty((n, len(index)), dtype=np.float64)
    w = None if weight_column is None else np.empty(n, dtype=np.float64)
    w_index = None if weight_column is None else schema.get_field_index(weight_column)
    c_index = [schema.get_field_index(c) for c in covariates]
    cov = np.empty((n, len(c_index)), dtype=np.float64) if covariates else None
    kept_extra: list[Any] = []
    a = 0
    while batch is not None:
        k = batch.num_rows
        for j, i in enumerate(index):
            values[a:a + k, j] = batch.column(i).to_numpy(zero_copy_only=False)
        for j, i in enumerate(c_index):
            cov[a:a + k, j] = batch.column(i).to_numpy(zero_copy_only=False)
        if w is not None:
            w[a:a + k] = batch.column(w_index).to_numpy(zero_copy_only=False)
        if extra:
            kept_extra.append(batch.select(list(extra)))
        a += k
        batch = next(pieces, None)
    keep = None
    if not np.isfinite(values).all():
        missing = np.isnan(values)
        if not drop_missing or np.isinf(values).any():
            return chunk.reread()
        keep = ~missing.any(axis=1)
    if w is not None:
        if not np.isfinite(w).all() and (not drop_missing or np.isinf(w).any()):
            return chunk.reread()
        if (w < 0).any():
            return chunk.reread()
        used = w > 0   # a missing weight (drop_missing) is left out too
        keep = used if keep is None else keep & used
    if cov is not None and not np.isfinite(cov).all():
        if not drop_missing or np.isinf(cov).any():
            return chunk.reread()
        complete = ~np.isnan(cov).any(axis=1)
        keep = complete if keep is None else keep & complete
    labels = pa.Table.from_batches(kept_extra) if extra else None
    if keep is None or keep.all():
        rows = np.arange(chunk.first, chunk.first + n, dtype=np.int64)
    else:
        where = np.flatnonzero(keep)
        rows = where + chunk.first
        values = values[where]
        if w is not None:
            w = w[where]
        if cov is not None:
            cov = cov[where]
    if rows.size == 0:
        return rows, {}, labels
    data = dict(plan.make(values))
    if w is not None:
        data[WEIGHT_KEY] = np.ascontiguousarray(w, dtype=np.float64)
    if cov is not None:
        data[Z_KEY] = _design(cov, covariates)
    return rows, data, labels


# ------------------------------------------------------------------ the sample
def sample(source: "PartitionedSource | str", cls: Any, options: Mapping[str, Any],
           scanned: ScanResult, n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A simple random sample (without replacement) of ``min(n, n_obs)`` kept rows, as one
    in-memory data dict, and their global row numbers (ascending; -1 where a family drops
    rows by a rule of its own).

    Which rows: ``stream(seed, "sample").choice(n_obs, m, replace=False)``, sorted, taken as
    ranks among the kept rows in input order, so the sample does not depend on how the rows
    are split into files, partitions or chunks (the same data give the same sample).  The
    rows are read again (only their chunks) and conformed to ``scanned.meta``; with weights
    they carry them (``WEIGHT_KEY``).  ``scanned``: the scan of the same source, options
    and columns.
    """
    cls = _resolve_class(cls)
    src = source if isinstance(source, PartitionedSource) else PartitionedSource.open(source)
    m = int(min(int(n), scanned.n_obs))
    if m < 1:
        raise ValueError(f"the sample needs at least one row, got n={n!r}")
    ranks = np.sort(stream(int(seed), SAMPLE_PURPOSE).choice(scanned.n_obs, size=m,
                                                             replace=False)).astype(np.int64)
    flat = [c for per in scanned.chunk_kept for c in per]
    where = [(pi, ci) for pi, per in enumerate(scanned.chunk_kept) for ci in range(len(per))]
    ends = np.cumsum(flat, dtype=np.int64)
    chunk_of_rank = np.searchsorted(ends, ranks, side="right")
    pieces: list[dict[str, np.ndarray]] = []
    raw_rows: list[np.ndarray] = []
    cols = list(scanned.columns)
    covs = covariate_names(scanned.meta)
    meta = family_meta(scanned.meta)
    read_cols = _read_columns(cols, scanned.weight_column, covs)
    files = {f.path: f for f in src._files}
    for flat_index in np.unique(chunk_of_rank):
        pi, ci = where[int(flat_index)]
        part = src.partitions[pi]
        f = files[part.path]
        file_first, bounds = _grid(part, f.group_rows, scanned.chunk_rows)
        start, stop = bounds[ci]
        frame = _read_range(part.path, file_first, start, stop, read_cols, f.group_rows)
        p = _prepare(frame, cls, options, src.text, part.path, cols, scanned.weight_column,
                     summarise=False, covariates=covs)
        before = int(ends[flat_index] - flat[flat_index])
        local = ranks[chunk_of_rank == flat_index] - before
        data = _conform(cls, p, meta)
        pieces.append({k: np.asarray(v)[local] for k, v in data.items()})
        raw_rows.append(p.rows[local] if p.rows is not None
                        else np.full(local.size, -1, dtype=np.int64))
    keys = list(pieces[0])
    out = {k: np.concatenate([piece[k] for piece in pieces]) for k in keys}
    return out, np.concatenate(raw_rows)
