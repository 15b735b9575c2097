"""One chunk of partitioned input through the family: its arrays, meta, weights and design.

:func:`_prepare` is what every pass over partitioned input does with a raw chunk (the scan,
the slow path of the later passes, the sample): the ``--weights`` and ``--covariates``
columns checked as in memory (naming the file and the global row), the family's
``prepare_data`` on the model's columns (so ``--drop-missing`` and the data errors behave as
in memory), the rows of weight 0 or with a missing covariate left out, and the kept rows'
weights and design ``Z`` added; :func:`_conform` maps its arrays onto the whole data's meta.
:func:`model_columns` says which columns are the model's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from src.data.covariates import check_covariate_columns, covariate_values
from src.data.loading import _as_text_column, _check_columns, _check_unique
from src.data.parquet_reading import PartitionedSource
from src.data.rows import check_id_column, check_weight_column, kept_positions, weight_values
from src.utils.errors import DataError, PipelineError
from src.utils.messages import t

__all__ = ["model_columns", "Z_KEY"]

#: the design's key in a data dict (:data:`src.models.covariates.Z_KEY`; the models package
#: is not imported here at module level)
Z_KEY = "Z"


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
