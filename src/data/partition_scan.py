"""The first pass over partitioned input: every chunk validated, the metas merged, the rows
counted (:func:`scan`; per partition :func:`scan_partition`, then :func:`finish_scan`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from src.data.chunk_preparation import (Z_KEY, _prepare, _read_columns, _resolve_class,
                                        _source_name, model_columns)
from src.data.covariates import DesignSummary, check_design_summary
from src.data.parquet_reading import (Partition, PartitionedSource, _release_arrow_memory,
                                      read_partition)
from src.utils.errors import DataError, PipelineError
from src.utils.messages import register, t

__all__ = ["PartitionScan", "ScanResult", "scan", "scan_partition", "finish_scan"]

register({
    "partitions.unit": {"en": "partitions read", "zh": "已读取的分区"},
})


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
