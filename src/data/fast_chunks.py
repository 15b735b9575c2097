"""The passes' fast path: a chunk read straight from Arrow into a family's float matrix.

A family whose arrays are made from one float matrix of its columns declares it
(:meth:`~src.models.base.MixtureModel.fast_chunk`); :func:`_fast_chunk` then copies each
record batch's columns into a float64 matrix (and the weights and covariates beside), checks
it and gives the family's arrays bit for bit as the slow path (:mod:`src.data.partitions`,
*The passes' fast path*).  Whether the passes take it is :data:`src.data.partitions.FAST_CHUNKS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from src.data.chunk_preparation import Z_KEY, _design
from src.data.parquet_reading import _Chunk

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
    if getattr(cls, "reads_text", False):
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
