"""The random sample of kept rows that the start search of partitioned input runs on."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from src.data.chunk_preparation import _conform, _prepare, _read_columns, _resolve_class
from src.data.covariates import covariate_names, family_meta
from src.data.parquet_reading import PartitionedSource, _grid, _read_range
from src.data.partition_scan import ScanResult
from src.utils.rng import stream

__all__ = ["sample", "SAMPLE_PURPOSE"]

#: the purpose of the sample's random stream: ``stream(seed, "sample")``
SAMPLE_PURPOSE = "sample"


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
