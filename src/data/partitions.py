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

Where each part lives (every public name importable from here as before):
:mod:`src.data.parquet_reading` (the files, partitions, fingerprint and reading chunks),
:mod:`src.data.chunk_preparation` (a raw chunk through the family: arrays, weights, design,
conforming), :mod:`src.data.partition_scan` (the first pass), :mod:`src.data.meta_merging`
(merging the chunks' metas), :mod:`src.data.fast_chunks` (the passes' fast path) and
:mod:`src.data.partition_sample` (the sample); this module keeps the later passes
(:func:`partition_chunks`, :func:`kept_chunks`) and :data:`FAST_CHUNKS`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from src.data.chunk_preparation import (Z_KEY, _conform, _prepare, _read_columns,
                                        _resolve_class, _source_name, model_columns)
from src.data.covariates import covariate_names, family_meta
from src.data.fast_chunks import _fast_chunk, _fast_plan
from src.data.meta_merging import merge_equal, weighted_mean
from src.data.parquet_reading import (Partition, PartitionedSource, _Chunk, _read_chunks,
                                      _reading_pool, _to_frame, read_partition)
from src.data.partition_sample import SAMPLE_PURPOSE, sample
from src.data.partition_scan import PartitionScan, ScanResult, finish_scan, scan, scan_partition
from src.utils.errors import DataError
from src.utils.messages import t

__all__ = ["Partition", "PartitionedSource", "ScanResult", "PartitionScan", "scan",
           "scan_partition", "finish_scan", "partition_chunks", "kept_chunks", "sample",
           "model_columns", "read_partition", "merge_equal", "weighted_mean", "SAMPLE_PURPOSE",
           "Z_KEY", "FAST_CHUNKS"]

#: helpers of the modules above that tests and benchmarks reach through this module
_KEPT_HERE = (_reading_pool, _read_chunks, _fast_chunk, _fast_plan)

#: whether the passes after the scan take the fast path (:mod:`src.data.fast_chunks`) for
#: families declaring ``fast_chunk`` (False: every chunk through pandas and ``prepare_data``,
#: as the scan; for measuring what the fast path saves)
FAST_CHUNKS = True


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
    plan = _fast_plan(cls, cols, options) if FAST_CHUNKS else None
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
