"""Partitions reweighted for one Poisson-bootstrap replicate (data larger than memory).

The Poisson bootstrap (:mod:`src.inference.poisson`) never moves a row: replicate ``r`` gives
row i the weight Poisson(1) (Poisson(w_i) of a frequency weight, w_i * Poisson(1) of a
sampling weight), drawn by fixed blocks of **global row numbers**.  Over partitions, every
pass of the replicate's EM reads the chunks with their kept rows' global numbers
(:func:`src.data.partitions.kept_chunks`) and weights them on the fly, so the replicate is
the same however the files are split, and nothing is held between passes.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from src.models.base import WEIGHT_KEY, Data, split_weight

from .engines import ParquetPartitions, StreamingEngine, _InProcessEngine, add_counts, count_rows

__all__ = ["PoissonPartitions", "poisson_replicate_engine"]


class PoissonPartitions:
    """A Parquet reader's partitions as Poisson-bootstrap replicate ``replicate`` sees them:
    every kept row weighted by :func:`src.inference.poisson.poisson_weights_at` of its global
    row number, rows of weight 0 left out (a picklable reader: workers read it too)."""

    def __init__(self, base: ParquetPartitions, seed: int, replicate: int,
                 weight_type: str = "frequency") -> None:
        self.base, self.seed, self.replicate = base, int(seed), int(replicate)
        self.weight_type = str(weight_type)

    @property
    def n_partitions(self) -> int:
        return self.base.n_partitions

    def chunks(self, index: int) -> Iterator[Data]:
        from src.data.partitions import kept_chunks
        from src.inference.poisson import poisson_weights_at

        b = self.base
        for rows, _, data in kept_chunks(b.text, b.partitions[index], b.cls, b.options, b.meta,
                                         b.chunk_rows, columns=b.columns,
                                         weight_column=b.weight_column):
            rows_only, w = split_weight(data)
            m = poisson_weights_at(self.seed, self.replicate, rows, w,
                                   weight_type=self.weight_type)
            keep = np.flatnonzero(m > 0)
            if keep.size:
                yield {**{k: np.asarray(v)[keep] for k, v in rows_only.items()},
                       WEIGHT_KEY: m[keep]}

    def nbytes(self) -> int:
        return self.base.nbytes()

    def counts(self) -> tuple[int, float | None]:
        return add_counts(count_rows(self.chunks(i)) for i in range(self.n_partitions))

    @property
    def n_rows(self) -> int:
        return self.counts()[0]


def poisson_replicate_engine(engine: Any, seed: int, replicate: int,
                             weight_type: str = "frequency") -> Any:
    """An engine of ``engine``'s kind over replicate ``replicate``'s
    :class:`PoissonPartitions` of its Parquet partitions (Dask: re-read on every pass)."""
    reader = getattr(engine, "reader", None)
    if not isinstance(reader, ParquetPartitions):
        raise ValueError("the Poisson bootstrap over partitions needs Parquet partitions")
    weighted = PoissonPartitions(reader, seed, replicate, weight_type)
    if isinstance(engine, _InProcessEngine):
        return StreamingEngine(weighted, None, {}, {})
    from src.parallel.dask_engine import DaskEngine
    return DaskEngine(engine.client, weighted, persist=False)
