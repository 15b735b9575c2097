"""Row engines: the EM map over partitions equals em_map's on the same rows (bitwise with the
same chunking), in process, streamed from Parquet, and on a real Dask cluster with one or two
workers, also when a worker is killed in the middle of a pass.

The Dask tests use the session's ``LocalCluster`` (2 worker processes with nannies) of
``tests/test_executors.py``; "one worker" restricts the engine's tasks to one of them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from src.estimation.em import em_map, start_params
from src.estimation.engines import (InMemoryEngine, MemoryPartitions, RowEngine, engine_em_map,
                                    partition_stats)
from src.models.base import WEIGHT_KEY
from src.models.gmm import GaussianMixtureModel
from src.utils.errors import DataError, ModelError
from src.utils.rng import stream
from tests.test_executors import dask_cluster  # noqa: F401  (the session's Dask cluster)
from tests.test_lca import build as build_lca, simulate as simulate_lca
from tests.test_mixreg import build as build_mixreg, two_lines


def gmm_case(n: int = 6000, seed: int = 3, K: int = 3):
    """A 3-column, K-class Gaussian mixture, its data dict and random parameters."""
    rng = stream(seed, "test-data")
    X = rng.normal(size=(n, 3)) + rng.integers(0, K, size=n)[:, None] * np.array([3.0, -2.0, 1.0])
    data, meta = GaussianMixtureModel.prepare_data(pd.DataFrame(X, columns=["a", "b", "c"]), {})
    model = GaussianMixtureModel(K)
    model.setup(meta)
    return model, data, start_params(model, data, seed, 1)


def lca_case(n: int = 3000):
    model, data = build_lca(simulate_lca(n, seed=5)[0], 3)
    return model, data, start_params(model, data, 5, 1)


def mixreg_case(n: int = 3000):
    model, data = build_mixreg(two_lines(n, seed=6), 2)
    return model, data, start_params(model, data, 6, 1)


def split(data: dict, cuts) -> list[dict]:
    """The rows cut at ``cuts`` into consecutive partitions."""
    edges = [0, *cuts, len(next(iter(data.values())))]
    return [{k: v[a:b] for k, v in data.items()} for a, b in zip(edges[:-1], edges[1:])]


def same_bits(a: tuple, b: tuple) -> bool:
    """Two ``(params or stats, loglik)`` pairs are bitwise equal."""
    return (a[0].keys() == b[0].keys() and a[1] == b[1]
            and all(np.array_equal(a[0][k], b[0][k]) for k in a[0]))


def close(a: tuple, b: tuple, rel: float = 1e-12) -> bool:
    """Two ``(params, loglik)`` pairs agree to ``rel`` (relative to each array's largest entry)."""
    return (abs(a[1] - b[1]) <= rel * abs(b[1])
            and all(np.max(np.abs(a[0][k] - b[0][k])) <= rel * max(np.max(np.abs(b[0][k])), 1.0)
                    for k in b[0]))


class SlowGMM(GaussianMixtureModel):
    """The Gaussian mixture, each chunk's E-step 40 ms slower (so a pass can be interrupted)."""

    def e_step_stats(self, data, params):
        time.sleep(0.04)
        return super().e_step_stats(data, params)


def count_rows(chunks, plus):
    """Rows of a partition plus ``plus`` (a map_partitions function)."""
    return sum(len(c["X"]) for c in chunks) + plus


class FailingReader(MemoryPartitions):
    """In-memory partitions whose partition ``bad`` fails after its first chunk."""

    def __init__(self, partitions, chunk_rows, bad):
        super().__init__(partitions, chunk_rows)
        self.bad = bad

    def chunks(self, index):
        for j, chunk in enumerate(super().chunks(index)):
            if index == self.bad and j == 1:
                raise DataError("row 7 of part 2 is not a number")
            yield chunk


class TestInProcess:
    def test_one_partition_is_em_maps_bits(self):
        """One partition chunked as em_map chunks the rows gives em_map's bits (gmm, mixreg)."""
        for model, data, params in (gmm_case(), mixreg_case()):
            engine = InMemoryEngine([data], chunk_rows=700)
            assert isinstance(engine, RowEngine) and engine.n_obs == len(next(iter(data.values())))
            assert engine.weight_sum is None
            assert same_bits(engine_em_map(model, engine, params),
                             em_map(model, data, params, chunk_size=700))

    def test_partitions_agree_with_em_map(self):
        """Uneven partitions (their own chunking) agree with em_map to 1e-12 (gmm, lca, mixreg)."""
        for model, data, params in (gmm_case(), lca_case(), mixreg_case()):
            engine = InMemoryEngine(split(data, [1, 1000, 1999, 2500]), chunk_rows=300)
            assert close(engine_em_map(model, engine, params), em_map(model, data, params))

    def test_given_chunks_are_kept(self):
        """Partitions given as lists of chunks are summed chunk by chunk as given."""
        model, data, params = gmm_case(2000)
        chunks = split(data, [500, 1200])
        by_hand = partition_stats(model, chunks, params)
        ll = 0.0
        for c in chunks:
            ll += model.e_step_stats(c, params)[1]
        assert by_hand[1] == ll
        engine = InMemoryEngine([chunks])
        assert same_bits(engine.reduce_stats(model, params), by_hand)

    def test_weights_equal_replicated_rows(self):
        """Integer row weights give the statistics of the rows replicated (to 1e-12)."""
        model, data, params = gmm_case(1500)
        w = stream(8, "test-weights").integers(1, 4, size=1500).astype(float)
        weighted = dict(data, **{WEIGHT_KEY: w})
        repeated = {k: np.repeat(v, w.astype(int), axis=0) for k, v in data.items()}
        engine = InMemoryEngine(split(weighted, [400, 900]), chunk_rows=256)
        a = engine_em_map(model, engine, params)
        b = engine_em_map(model, InMemoryEngine([repeated]), params)
        assert close(a, b)
        assert engine.n_obs == 1500 and engine.weight_sum == pytest.approx(w.sum(), abs=0)

    def test_read_ahead_same_bits_and_errors_reach_the_caller(self):
        """Chunks read ahead by a thread give the same bits; a reading error reaches the
        caller and the thread ends."""
        from src.estimation.engines import StreamingEngine
        model, data, params = gmm_case(3000)
        parts = split(data, [700, 1900])
        want = InMemoryEngine(parts, chunk_rows=256).reduce_stats(model, params)
        for ahead in (1, 3):
            engine = StreamingEngine(MemoryPartitions(parts, 256), None, {}, None, read_ahead=ahead)
            assert same_bits(engine.reduce_stats(model, params), want)
            assert engine.map_partitions(count_rows, 0) == [700, 1200, 1100]
        before = threading.active_count()
        failing = StreamingEngine(FailingReader(parts, 256, bad=1), None, {}, None, read_ahead=2)
        with pytest.raises(DataError, match="row 7"):
            failing.reduce_stats(model, params)
        assert threading.active_count() == before

    def test_map_partitions_in_order(self):
        """map_partitions gives each partition's result in partition order."""
        engine = InMemoryEngine(split(gmm_case(900)[1], [100, 150, 600]), chunk_rows=64)
        assert engine.map_partitions(count_rows, 1) == [101, 51, 451, 301]

    def test_model_without_closed_form_m_step_refused(self):
        """A model whose statistics do not add up is refused with one sentence."""
        model, data, params = gmm_case(200)
        model.has_closed_form_m_step = False
        with pytest.raises(ModelError, match="closed-form M-step"):
            InMemoryEngine([data]).reduce_stats(model, params)


class TestDask:
    def test_one_and_two_workers_identical_to_in_process(self, dask_cluster):  # noqa: F811
        """Held and re-read partitions on one or two workers give the in-process bits, pass
        after pass."""
        from distributed import Client
        from src.parallel.dask_engine import DaskEngine
        model, data, params = gmm_case(8000)
        reader = MemoryPartitions(split(data, [1000, 2500, 2600, 4000, 6000, 7000]), chunk_rows=500)
        local = InMemoryEngine(reader)
        steps = [params, engine_em_map(model, local, params)[0]]
        expected = [local.reduce_stats(model, p) for p in steps]
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            one = sorted(client.scheduler_info()["workers"])[:1]
            for persist, workers in ((True, one), (True, None), (False, None)):
                with DaskEngine(client, reader, persist=persist, workers=workers) as engine:
                    assert isinstance(engine, RowEngine)
                    for p, want in zip(steps, expected):
                        assert same_bits(engine.reduce_stats(model, p), want)
                    if persist and workers is None:
                        assert engine.n_obs == 8000 and engine.weight_sum is None
                        assert engine.map_partitions(count_rows, 0) == [
                            1000, 1500, 100, 1400, 2000, 1000, 1000]

    def test_held_partitions_spread_over_the_workers(self, dask_cluster):  # noqa: F811
        """Held partitions are loaded round-robin on the workers (not most on the first to
        ask), and each worker's allocator is tuned once (glibc)."""
        from distributed import Client
        from src.parallel.dask_engine import DaskEngine
        from src.parallel.dask_worker import tune_malloc
        model, data, params = gmm_case(2000)
        reader = MemoryPartitions(split(data, [300, 600, 900, 1200, 1500, 1800]), chunk_rows=300)
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            with DaskEngine(client, reader, persist=True) as engine:
                engine.reduce_stats(model, params)
                held = client.who_has(engine._chunks())
                assert all(len(ws) == 1 for ws in held.values())
                places = [ws[0] for ws in held.values()]
                assert sorted(places.count(w) for w in set(places)) == [3, 4]
                assert set(client.run(tune_malloc).values()) == {tune_malloc()}

    def test_worker_killed_mid_pass_same_bits(self, dask_cluster):  # noqa: F811
        """A worker killed (SIGKILL) while a pass runs: its partitions are loaded again
        elsewhere and the pass returns the same bits."""
        from distributed import Client
        from src.parallel.dask_engine import DaskEngine
        model, data, params = gmm_case(4000)
        slow = SlowGMM(3)
        slow.setup(model.meta)
        reader = MemoryPartitions(split(data, [500, 1000, 1500, 2000, 2500, 3000, 3500]),
                                  chunk_rows=250)
        want = InMemoryEngine(reader).reduce_stats(model, params)
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            pids = client.run(os.getpid)
            with DaskEngine(client, reader, persist=True) as engine:
                assert same_bits(engine.reduce_stats(model, params), want)   # loaded on both
                killed: list[str] = []

                def kill_when_busy() -> None:
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        busy = [w for w, keys in client.processing().items()
                                if any("-stats-" in str(k) for k in keys)]
                        if busy:
                            os.kill(pids[busy[0]], signal.SIGKILL)
                            killed.append(busy[0])
                            return
                        time.sleep(0.005)

                killer = threading.Thread(target=kill_when_busy)
                killer.start()
                got = engine.reduce_stats(slow, params)
                killer.join()
                assert killed and same_bits(got, want)
            # the nanny restarts the worker: leave the session's cluster as it was
            deadline = time.monotonic() + 60
            while (len(client.scheduler_info()["workers"]) < 2
                   or killed[0] in client.scheduler_info()["workers"]):
                assert time.monotonic() < deadline
                time.sleep(0.1)


def write_parquet(folder, frame: pd.DataFrame, cuts, row_group: int) -> list[str]:
    """``frame`` cut at ``cuts`` into Parquet files (row groups of ``row_group`` rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    edges = [0, *cuts, len(frame)]
    paths = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        path = folder / f"part-{i}.parquet"
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False), path,
                       row_group_size=row_group)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def parquet_case(tmp_path_factory):
    """Three Parquet files of a weighted 3-column mixture, scanned; the same rows in memory."""
    from src.data.partitions import PartitionedSource, scan
    rng = stream(9, "test-data")
    n = 3200
    X = rng.normal(size=(n, 3)) + rng.integers(0, 3, size=n)[:, None] * np.array([3.0, -2.0, 1.0])
    w = rng.integers(1, 4, size=n).astype(float)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(w=w)
    folder = tmp_path_factory.mktemp("parts")
    write_parquet(folder, frame, [1000, 2700], row_group=400)
    source = PartitionedSource.open(str(folder))
    scanned = scan(source, GaussianMixtureModel, {}, chunk_rows=300, weight_column="w")
    model = GaussianMixtureModel(3)
    model.setup(scanned.meta)
    data = {"X": X, WEIGHT_KEY: w}
    return source, scanned, model, data, start_params(model, {"X": X}, 9, 1)


class TestParquet:
    def test_streaming_is_in_memory_bits(self, parquet_case):
        """Streaming the files gives the bits of the same rows in memory, cut alike, weights too."""
        from src.estimation.engines import StreamingEngine
        source, scanned, model, data, params = parquet_case
        engine = StreamingEngine.from_scan(source, GaussianMixtureModel, {}, scanned)
        assert engine.n_obs == 3200 and engine.weight_sum == pytest.approx(data[WEIGHT_KEY].sum())
        memory = InMemoryEngine(split(data, [1000, 2700]), chunk_rows=300)
        assert same_bits(engine.reduce_stats(model, params), memory.reduce_stats(model, params))
        assert close(engine_em_map(model, engine, params), em_map(model, data, params))

    def test_dask_reads_the_files(self, parquet_case, dask_cluster):  # noqa: F811
        """Dask workers reading the files (held or re-read) give the streaming engine's bits."""
        from distributed import Client
        from src.estimation.engines import StreamingEngine
        from src.parallel.dask_engine import DaskEngine
        source, scanned, model, data, params = parquet_case
        want = StreamingEngine.from_scan(source, GaussianMixtureModel, {}, scanned) \
            .reduce_stats(model, params)
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            for persist in (True, False):
                with DaskEngine.from_scan(client, source, GaussianMixtureModel, {}, scanned,
                                          persist=persist) as engine:
                    assert same_bits(engine.reduce_stats(model, params), want)
