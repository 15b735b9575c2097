"""Partitioned input in the pipeline: the data phase's first pass, the engine, the sample.

A run whose ``--data`` is a folder or glob of Parquet files (or a Parquet file with
``--stream``) never holds the rows in memory.  The data phase makes one pass over the
partitions (:func:`src.data.partitions.scan`: every chunk validated through the family's
``prepare_data``, the one-step model's ``--covariates`` beside, the metas merged, the rows
counted) and records what it learnt; the
fingerprint of the input is the files' Parquet metadata (:meth:`PartitionedSource.fingerprint`;
``--hash-data``: every byte), so a resumed run refuses changed files without reading them.
:func:`materialise` then gives the later phases a row engine instead of arrays: the in-process
streaming engine (:class:`src.estimation.engines.StreamingEngine`), or with ``--scheduler``
the Dask engine (:class:`src.parallel.dask_engine.DaskEngine`, the workers read their
partitions), plus the random sample of ``--sample-rows`` rows the start search runs on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunOptions
from ..utils.errors import FingerprintMismatch
from ..utils.messages import register, t

__all__ = ["prepare_partitioned", "materialise_partitioned", "input_fingerprint"]

register({
    "partitioned.changed": {
        "en": "The Parquet files of {source} no longer match the progress (metadata fingerprint "
              "{old} -> {new}); rerun with --recompute-changed or --restart.",
        "zh": "{source} 的 Parquet 文件已与保存的进度不一致（元数据指纹 {old} -> {new}）；"
              "请使用 --recompute-changed 或 --restart 重新运行。"},
    "partitioned.read": {
        "en": "Partitioned input {source}: {files} files, {partitions} partitions, {rows} rows "
              "({kept} used); each pass streams them in chunks of {chunk} rows{where}.",
        "zh": "分区输入 {source}：{files} 个文件，{partitions} 个分区，{rows} 行（使用 {kept} 行）；"
              "每次迭代按每块 {chunk} 行流式读取{where}。"},
    "partitioned.on_workers": {"en": " on the Dask workers", "zh": "（在 Dask 工作进程上）"},
})


def _digest(fingerprint: Any) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(options: RunOptions) -> str:
    """The SHA-256 of the partitioned input's fingerprint (metadata, or every byte with
    ``--hash-data``): what the data phase's fingerprint holds instead of a file hash."""
    from ..data.partitions import PartitionedSource

    source = PartitionedSource.open(str(options.data))
    return _digest(source.fingerprint(hash_bytes=bool(options.hash_data)))


def _family(options: RunOptions) -> tuple[Any, dict[str, Any]]:
    from .phases import check_model_needs, model_class

    cls = model_class(options)
    check_model_needs(cls, options)
    return cls, {**options.model_options(cls), "source": str(options.data)}


def prepare_partitioned(options: RunOptions, reporter: Any = None) -> dict[str, Any]:
    """Phase ``data_preparation`` for partitioned input: the first pass; a small record."""
    from ..data.loading import check_enough_rows
    from ..data.partitions import PartitionedSource, scan
    from .phases import build_model

    from ..data.covariates import one_step_covariates

    cls, family_options = _family(options)
    source = PartitionedSource.open(str(options.data))
    scanned = scan(source, cls, family_options, chunk_rows=options.chunk_size,
                   columns=options.columns, weight_column=options.weights,
                   id_column=options.id, hash_bytes=bool(options.hash_data), reporter=reporter,
                   covariates=one_step_covariates(options))
    model = build_model(options, scanned.meta, cls)
    check_enough_rows(scanned.n_obs, model.n_free_parameters(), str(options.data))
    record = {"source": str(options.data), "path": str(options.data), "format": "parquet",
              "partitioned": True, "n_files": len(source.files),
              "n_partitions": len(source.partitions), "n_raw": scanned.n_raw,
              "n_obs": scanned.n_obs, "n_dropped": scanned.n_dropped + scanned.n_zero_weight,
              "n_zero_weight": scanned.n_zero_weight, "meta": scanned.meta,
              "columns": list(scanned.columns), "kept": list(scanned.kept),
              "chunk_kept": [list(c) for c in scanned.chunk_kept],
              "chunk_rows": int(scanned.chunk_rows), "fingerprint_sha256": _digest(scanned.fingerprint),
              "notes": list(scanned.notes)}
    if options.weights is not None:
        record.update(weight_column=options.weights, weight_type=options.weight_type,
                      weight_sum=float(scanned.weight_sum))
    covariates = one_step_covariates(options)
    if covariates:   # as prepare_frame's record: the covariates are not model columns
        record["covariates"] = list(covariates)
    if reporter is not None:
        reporter.message(t("partitioned.read", source=options.data, files=len(source.files),
                           partitions=len(source.partitions), rows=scanned.n_raw,
                           kept=scanned.n_obs, chunk=options.chunk_size,
                           where=t("partitioned.on_workers") if options.scheduler else ""))
    return record


def _scanned(record: dict[str, Any], source: Any) -> Any:
    from ..data.partitions import ScanResult

    return ScanResult(n_obs=int(record["n_obs"]), n_raw=int(record["n_raw"]),
                      n_dropped=int(record["n_dropped"]) - int(record.get("n_zero_weight", 0)),
                      n_zero_weight=int(record.get("n_zero_weight", 0)), meta=record["meta"],
                      kept=list(record["kept"]), chunk_kept=[list(c) for c in record["chunk_kept"]],
                      weight_sum=record.get("weight_sum"), fingerprint={},
                      chunk_rows=int(record["chunk_rows"]), columns=list(record["columns"]),
                      weight_column=record.get("weight_column"))


def materialise_partitioned(record: dict[str, Any], options: RunOptions) -> Any:
    """The later phases' view of partitioned input: a :class:`~src.pipeline.phases.Prepared`
    whose ``data`` is a row engine and whose ``sample`` holds the start search's rows.

    The files are checked against the record's fingerprint first (FingerprintMismatch, one
    sentence, when they changed)."""
    from ..data.partitions import PartitionedSource, sample
    from ..estimation.engines import ParquetPartitions, StreamingEngine
    from .phases import Prepared, build_model

    cls, family_options = _family(options)
    source = PartitionedSource.open(str(options.data))
    now = _digest(source.fingerprint(hash_bytes=bool(options.hash_data)))
    if now != record["fingerprint_sha256"]:
        raise FingerprintMismatch(t("partitioned.changed", source=options.data,
                                    old=record["fingerprint_sha256"][:12], new=now[:12]))
    meta = record["meta"]
    scanned = _scanned(record, source)
    rows, positions = sample(source, cls, family_options, scanned, int(options.sample_rows),
                             int(options.seed))
    reader = ParquetPartitions(source, cls, family_options, meta, int(record["chunk_rows"]),
                               weight_column=record.get("weight_column"),
                               columns=list(record["columns"]))
    if options.scheduler:
        from ..parallel.dask_engine import DaskEngine
        engine: Any = DaskEngine(options.scheduler, reader, n_obs=int(record["n_obs"]),
                                 weight_sum=record.get("weight_sum"))
    else:
        engine = StreamingEngine(reader, None, {}, {}, n_obs=int(record["n_obs"]),
                                 weight_sum=record.get("weight_sum"))
    prepared = Prepared(build_model(options, meta, cls), engine, meta, record,
                        None, None, None)
    prepared.sample = rows
    prepared.sample_positions = np.asarray(positions, dtype=np.int64)
    return prepared


# ------------------------------------------------------------------ the results
#: the folder of the results holding the posteriors of partitioned input, one file a partition
POSTERIORS_FOLDER = "posteriors"


def _labelled_chunks(prepared: Any, options: RunOptions, partition: Any) -> Any:
    """``(row labels, data dict)`` of each chunk of ``partition`` as the engines see it: the
    labels are the ``--id`` values of the kept rows, or their global 0-based row numbers."""
    from ..data.partitions import kept_chunks

    record = prepared.record
    cls, family_options = _family(options)
    extra = (options.id,) if options.id is not None else ()
    for rows, labels, data in kept_chunks(str(options.data), partition, cls, family_options,
                                          record["meta"], int(record["chunk_rows"]),
                                          columns=list(record["columns"]),
                                          weight_column=record.get("weight_column"),
                                          extra=extra):
        yield (labels.iloc[:, 0].to_numpy() if labels is not None else rows), data


def partitioned_conclusions(prepared: Any, params: dict[str, np.ndarray], options: RunOptions
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Posteriors of partitioned input written as Parquet (``posteriors/part-*.parquet`` in
    the results folder, one file a partition in input order, rows in file order; ids as for
    ``posteriors.csv``) in one pass over the rows, which also sums the classification
    quality (:class:`~src.inference.classification.ResponsibilitySums`).  Returns
    ``(classification summary, posteriors record for fit.json)``.

    Memory: one partition at a time.  The pass runs in this process (with ``--scheduler``
    too: the posteriors are not sent back through the scheduler)."""
    from ..data.partitions import PartitionedSource
    from ..inference.classification import ResponsibilitySums, classification_summary
    from ..models.base import split_weight
    from ..output.posteriors import write_posteriors_parquet

    model = prepared.model
    source = PartitionedSource.open(str(options.data))
    folder = Path(options.results_dir) / POSTERIORS_FOLDER
    sums = ResponsibilitySums(model.n_components)
    K = model.n_components

    def partitions() -> Any:
        for part in source.partitions:
            chunks = list(_labelled_chunks(prepared, options, part))
            if not chunks:
                yield np.zeros(0, dtype=np.int64), {"__empty__": np.zeros((0, K))}
                continue
            labels = np.concatenate([c[0] for c in chunks])
            data = {k: np.concatenate([c[1][k] for c in chunks]) for k in chunks[0][1]}
            rows, w = split_weight(data)
            resp, _ = model.e_step(rows, params)
            sums.add(resp, w)
            yield labels, rows

    paths = write_posteriors_parquet(partitions(), model, params, folder,
                                     id_column=options.id, chunk_size=int(options.chunk_size))
    summary = classification_summary(model, {}, params, resp=sums)
    return summary, {"format": "parquet", "folder": POSTERIORS_FOLDER, "files": len(paths)}


def _pattern_sums(chunks: Any, model: Any, params: Any) -> dict[str, np.ndarray]:
    """One partition's pattern table (a row engine maps it): each chunk's distinct answer
    rows with their counts and, for a covariate model, the sums of its rows' ``w_i pi_ik``
    (:func:`src.inference.goodness.pattern_table_of`), added over the chunks."""
    from ..inference.goodness import merge_pattern_tables, pattern_table_of

    return merge_pattern_tables(model, [pattern_table_of(model, chunk, params)
                                        for chunk in chunks])


def pattern_table(prepared: Any, params: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The whole data as distinct answer patterns (missing answers too) with their counts, a
    frequency-weighted data dict the size of the pattern table, not of N, for a family whose
    summaries read one (:data:`src.inference.summaries.PATTERN_SUMMARIES`: latent class
    models); None for the others.  For a one-step covariate model each pattern also carries
    the sum over its rows of their class probabilities at ``params`` (times the row
    weights), which its expected counts need.  It gives the family's goodness of fit what
    the rows themselves give (to rounding)."""
    from ..inference.goodness import merge_pattern_tables
    from ..inference.summaries import PATTERN_SUMMARIES

    model = prepared.model
    if not any(name in PATTERN_SUMMARIES for name in getattr(model, "summaries", ())):
        return None
    params = {k: np.asarray(v) for k, v in params.items()}
    table = merge_pattern_tables(model, prepared.data.map_partitions(_pattern_sums, model,
                                                                      params))
    return table or None
