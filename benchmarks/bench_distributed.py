"""EM over partitioned Parquet: in memory, streamed, on a Dask LocalCluster, against Spark MLlib.

The data: N rows of the 10-dimensional, 5-component mixture of ``bench_gmm_vs_sklearn.py``
(``full`` covariances), written once as ``--partitions`` Parquet files (``part-000.parquet``
...; row groups of 65,536 rows; columns x1..x10 as float64) in a folder under ``--workdir``
(kept for later runs; its disk use is reported).  Every engine starts from the same parameters
(our ``gmm`` start 0 of the first 100,000 rows) and the same ``meta`` (columns and the
column means), and runs the same EM iterations; each measurement runs in its own
subprocess with BLAS at one thread.

* ``inmemory``: the whole matrix in memory, one :func:`src.estimation.em.em_map` per
  iteration (``chunk_size`` 4096): the reference.
* ``streaming``: :class:`src.estimation.engines.StreamingEngine` (``chunk_rows`` 65,536) from
  the files on every pass; its peak memory above the resident size after the imports and the
  engine's set-up (``psutil`` sampled every 2 ms, and ``ru_maxrss``) over the scan and over two
  EM passes, then ``--iters`` timed passes without the sampler, at ``--sizes``.
* ``streaming`` with ``--readers arrow``: the same engine over a plain pyarrow-to-numpy reader
  (no validation, no pandas): the floor of reading these files.
* ``streaming`` with ``--readers slow``: the project's reader without its fast path (every
  chunk through pandas and the family's ``prepare_data``, decoded in pyarrow's default memory
  pool: ``src.data.partitions.FAST_CHUNKS`` off, ``_reading_pool`` None), at ``--sizes``: what
  a family without ``fast_chunk`` costs.  ``--read-ahead N``: the streaming engine's depth
  (default its ``READ_AHEAD``).
* ``dask``: :class:`src.parallel.dask_engine.DaskEngine` on a ``LocalCluster`` of 1 and one of
  2 worker processes (1 thread each), partitions held on the workers (``persist``);
  ``--rounds`` rounds, each starting, loading, timing ``--passes`` EM iterations (default 3,
  one after another) on, and closing each cluster in turn, in alternating order (the ratio is
  taken within a round): only the measured cluster is up, as when a user runs one
  (``--clusters side-by-side``: both started and loaded first and kept up throughout; the
  idle cluster's processes -- their event loops' ticks, profilers, heartbeats -- then take
  10-15% from the 1-worker cluster on 2 cores, measured 2026-12-02: 1.31 instead of 1.14 s a
  pass); per pass: wall time, each worker's busy time
  from the task stream (overhead = wall - the busiest worker's time), each worker's CPU time
  (psutil; the speed-up "from CPU" is what an otherwise idle machine would give), and the
  engine's own submit / wait / reduce split.
* ``overhead``: the scaling simulation: tiny partitions (100 rows) so a pass is pure
  overhead, P in {50, 100}, on W worker processes (``--process-workers``, TCP) and on W
  in-process workers (``--fake-workers``: threads of one process, so many fake workers do
  not fight over 2 cores); a least-squares fit ``wall = a + b W + c P`` per kind gives the
  per-pass fixed cost, the cost per worker and the scheduling + reduce cost per partition.
  Passes whose partitions also sleep 20 ms (a fake worker's compute, using no core) check the
  model's compute term ``ceil(P/W) nap``.  With the compute time per row of the 1-worker
  cluster (CPU time), ``T(W) = C N ceil(P/W) / P + a + b W + c P`` predicts a pass on 10-100
  workers (P = max(24, 2W)).
* ``spark``: ``pyspark.ml.clustering.GaussianMixture`` (K=5, ``tol=0``) in local mode
  (``local[2]``) on the same files (``VectorAssembler``, cached and counted first, a warm-up
  fit); time per iteration = (fit with ``maxIter = 1 + iters`` - fit with ``maxIter = 1``) /
  iters, median of 2 rounds.  Optional: needs ``pyspark`` (the ``bench`` extra) and Java 17.

Usage: ``python benchmarks/bench_distributed.py [--n 1e7] [--partitions 24] [--iters 3]
[--sizes 1e6 1e7] [--rounds 3] [--spark-n N] [--skip inmemory,streaming,dask,overhead,spark]
[--readers project,slow,arrow] [--read-ahead N] [--clusters side-by-side|one-at-a-time]
[--passes N] [--json F]``; smaller data sets (``--sizes``) are written as files of the same size as the
largest's, fewer of them.  Per-iteration wall and CPU times are both recorded (a shared
machine's load shows in the wall times).  Results go to
``benchmarks/out/distributed/`` (not in git).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D, K, SEED, REG = 10, 5, 20261128, 1e-6
ROW_GROUP = 65_536
CHUNK_ROWS = 65_536
COLUMNS = [f"x{j + 1}" for j in range(D)]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------------- the data
def mixture() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The means, covariance Cholesky factors and weights of bench_gmm_vs_sklearn's mixture."""
    rng = np.random.default_rng(SEED)
    means = rng.normal(0.0, 0.8, size=(K, D))
    chols = []
    for _ in range(K):
        A = rng.normal(size=(D, D))
        chols.append(np.linalg.cholesky(0.2 * A @ A.T / D + np.eye(D)))
    return means, chols, np.array([0.3, 0.25, 0.2, 0.15, 0.1])


def partition_rows(n: int, parts: int) -> list[int]:
    """Rows of each of ``parts`` files (as equal as possible)."""
    return [n // parts + (1 if p < n % parts else 0) for p in range(parts)]


def write_data(folder: Path, n: int, parts: int) -> dict:
    """The Parquet files of N rows (kept when a complete manifest says they are there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = folder / "manifest.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        if info.get("n") == n and info.get("partitions") == parts:
            return info
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    means, chols, weights = mixture()
    sums = np.zeros(D)
    t0 = time.perf_counter()
    for p, rows in enumerate(partition_rows(n, parts)):
        rng = np.random.default_rng([SEED, p])
        X = np.empty((rows, D))
        z = rng.choice(K, size=rows, p=weights)
        e = rng.normal(size=(rows, D))
        for k in range(K):
            sel = z == k
            X[sel] = means[k] + e[sel] @ chols[k].T
        sums += X.sum(axis=0)
        table = pa.table({c: X[:, j] for j, c in enumerate(COLUMNS)})
        pq.write_table(table, folder / f"part-{p:03d}.parquet", row_group_size=ROW_GROUP)
    info = {"n": n, "partitions": parts, "shift": list(sums / n), "columns": COLUMNS,
            "bytes_on_disk": sum(f.stat().st_size for f in folder.glob("*.parquet")),
            "bytes_in_memory": n * D * 8, "write_seconds": time.perf_counter() - t0}
    manifest.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------- inside the children
def _model(info: dict):
    sys.path.insert(0, str(ROOT))
    from src.models.gmm import GaussianMixtureModel

    model = GaussianMixtureModel(K, covariance="full", reg_covar=REG)
    model.setup({"columns": info["columns"], "shift": info["shift"]})
    return model


def _params(path: str) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


class ArrowReader:
    """A plain pyarrow reader of the files (x1..x10 as ``X``), used only when the project's
    partitioned source (``src.data.partitions``) is not there."""

    def __init__(self, folder: str, chunk_rows: int) -> None:
        self.files = sorted(str(p) for p in Path(folder).glob("*.parquet"))
        self.chunk_rows = chunk_rows

    @property
    def n_partitions(self) -> int:
        return len(self.files)

    def chunks(self, index: int):
        import pyarrow.parquet as pq
        for batch in pq.ParquetFile(self.files[index]).iter_batches(batch_size=self.chunk_rows,
                                                                    columns=COLUMNS):
            yield {"X": np.stack([c.to_numpy() for c in batch.columns], axis=1)}

    def counts(self):
        import pyarrow.parquet as pq
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files), None

    @property
    def n_rows(self) -> int:
        return self.counts()[0]

    def nbytes(self) -> int:
        return self.n_rows * D * 8


def reader_of(folder: str, info: dict, chunk_rows: int, kind: str = "project"):
    """``(reader, kind)``: the project's Parquet partitions (``kind="project"``, when they
    exist), else the plain :class:`ArrowReader`."""
    sys.path.insert(0, str(ROOT))
    try:
        from src.data.partitions import PartitionedSource
    except ImportError:
        kind = "arrow"
    if kind == "arrow":
        return ArrowReader(folder, chunk_rows), "arrow"
    if kind == "slow":   # the slow path in pyarrow's default pool
        import src.data.partitions as partitions
        import src.data.parquet_reading as reading
        partitions.FAST_CHUNKS = False
        reading._reading_pool = lambda: None
    from src.estimation.engines import ParquetPartitions
    from src.models.gmm import GaussianMixtureModel
    source = PartitionedSource.open(folder)
    meta = {"columns": info["columns"], "shift": info["shift"], "n_dropped": 0}
    return ParquetPartitions(source, GaussianMixtureModel, {"covariance": "full"}, meta,
                             chunk_rows, columns=COLUMNS), kind


class PeakRSS:
    """The largest resident set size seen by a thread sampling every ``every`` seconds."""

    def __init__(self, every: float = 0.002) -> None:
        import psutil
        self.proc, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _iterate(step, params: dict, iters: int) -> tuple[list[float], float, list[float]]:
    """``iters`` timed EM iterations ``params <- step(params)``: (wall seconds each, last
    loglik, CPU seconds each of this process, every thread)."""
    import psutil
    proc = psutil.Process()
    times, cpus, ll = [], [], float("nan")
    for _ in range(iters):
        c0 = sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        params, ll = step(params)
        times.append(time.perf_counter() - t0)
        cpus.append(sum(proc.cpu_times()[:2]) - c0)
    return times, ll, cpus


def child_inmemory(cfg: dict) -> dict:
    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits
    info = cfg["info"]
    model = _model(info)
    from src.estimation.em import em_map
    files = sorted(Path(cfg["folder"]).glob("*.parquet"))
    X = np.empty((info["n"], D))
    a = 0
    for f in files:
        t = pq.read_table(f, columns=COLUMNS)
        X[a:a + t.num_rows] = np.stack([c.to_numpy() for c in t.columns], axis=1)
        a += t.num_rows
    data = {"X": X}
    with threadpool_limits(1):
        times, ll, cpus = _iterate(lambda p: em_map(model, data, p, 4096),
                                   _params(cfg["params"]), cfg["iters"])
    return {"seconds": times, "cpu_seconds": cpus, "loglik": ll}


def child_streaming(cfg: dict) -> dict:
    """Peak memory above the RSS after imports and set-up: of the first pass (the scan:
    validation, row counts, meta) and of the EM passes; time of each."""
    import pyarrow.parquet  # noqa: F401  (imported before the baseline, as the reader needs it)
    import psutil
    from threadpoolctl import threadpool_limits
    info = cfg["info"]
    model = _model(info)
    from src.estimation.engines import StreamingEngine, engine_em_map
    reader, kind = reader_of(cfg["folder"], info, cfg["chunk_rows"], cfg.get("reader", "project"))
    more = {} if cfg.get("read_ahead") is None else {"read_ahead": int(cfg["read_ahead"])}
    engine = StreamingEngine(reader, None, {}, None, n_obs=info["n"], **more)
    params = _params(cfg["params"])
    out: dict = {"reader": kind, "chunk_bytes": cfg["chunk_rows"] * D * 8}
    base = psutil.Process().memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if kind in ("project", "slow"):
        from src.data.partitions import PartitionedSource, scan
        from src.models.gmm import GaussianMixtureModel
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            scanned = scan(PartitionedSource.open(cfg["folder"]), GaussianMixtureModel, {},
                           chunk_rows=cfg["chunk_rows"], columns=COLUMNS)
            out["scan_seconds"] = time.perf_counter() - t0
        out["scan_peak_above_setup"] = peak.peak - base
        out["scan_n_obs"] = scanned.n_obs
        del scanned
    step = lambda p: engine_em_map(model, engine, p)  # noqa: E731
    with threadpool_limits(1):
        with PeakRSS() as peak:   # memory: the first passes, sampled every 2 ms
            _iterate(step, params, int(cfg.get("memory_passes", 2)))
        # time: passes without the sampler (its thread, waking every 2 ms for the GIL, cost
        # the two threads of the engine 10-50 % of a pass: measured 1.26-1.38 s against 1.40-1.97)
        times, ll, cpus = _iterate(step, params, cfg["iters"])
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(seconds=times, cpu_seconds=cpus, loglik=ll, rss_after_setup=base,
               peak_above_setup_sampled=peak.peak - base, maxrss_before=maxrss_before,
               maxrss_after=maxrss_after, peak_above_setup_maxrss=max(0, maxrss_after - base))
    return out


def _busy(stream: list[dict], prefix: str) -> dict[str, float]:
    """Seconds each worker spent computing tasks whose key contains ``prefix``."""
    out: dict[str, float] = {}
    for task in stream:
        if prefix not in str(task["key"]):
            continue
        spent = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
        out[task["worker"]] = out.get(task["worker"], 0.0) + spent
    return out


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process of ``pids`` so far."""
    import psutil
    return {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}


def child_dask(cfg: dict) -> dict:
    """Clusters of each size in ``cfg["workers"]``, then ``rounds`` rounds of one EM iteration
    on each, in alternating order: ratios within a round see the same load.  ``side-by-side``
    (``cfg["clusters"]``): every cluster started and loaded first and kept up (the idle one's
    processes stay); ``one-at-a-time``: each round starts, loads, times and closes each cluster
    in turn, so only the cluster measured is up (what a user's machine runs).  Per pass: wall
    time, each worker's busy time (task stream) and its CPU time (psutil), the driver's
    submit / wait / reduce split."""
    import distributed
    info = cfg["info"]
    model = _model(info)
    from src.parallel.dask_engine import DaskEngine
    from src.estimation.engines import engine_em_map
    reader, kind = reader_of(cfg["folder"], info, cfg["chunk_rows"])
    one_at_a_time = cfg.get("clusters") == "one-at-a-time"
    out = {"reader": kind, "clusters_up": cfg.get("clusters", "side-by-side"),
           "clusters": {str(w): {"passes": [], "cluster_start": [], "first_pass_with_load": []}
                        for w in cfg["workers"]}}
    params = {w: _params(cfg["params"]) for w in cfg["workers"]}

    def start(w: int) -> tuple:
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
        row = out["clusters"][str(w)]
        row["cluster_start"].append(time.perf_counter() - t0)
        engine = DaskEngine(client, reader, n_obs=info["n"], persist=True)
        t0 = time.perf_counter()
        engine_em_map(model, engine, _params(cfg["params"]))   # loads
        row["first_pass_with_load"].append(time.perf_counter() - t0)
        pids = list(client.run(os.getpid).values())
        engine.timings.update(submit=0.0, wait=0.0, reduce=0.0, passes=0)
        return w, cluster, client, engine, pids

    def close(setup: tuple) -> None:
        w, cluster, client, engine, pids = setup
        tm = out["clusters"][str(w)].setdefault(
            "timings", {"submit": 0.0, "wait": 0.0, "reduce": 0.0, "passes": 0})
        for part in tm:
            tm[part] += engine.timings[part]
        engine.close()
        client.close()
        cluster.close()

    def timed_pass(setup: tuple, r: int) -> None:
        w, cluster, client, engine, pids = setup
        cpu0 = _cpu_seconds(pids)
        with distributed.get_task_stream(client) as ts:
            t0 = time.perf_counter()
            params[w], ll = engine_em_map(model, engine, params[w])
            wall = time.perf_counter() - t0
        cpu1 = _cpu_seconds(pids)
        cpu = {str(pid): cpu1[pid] - cpu0[pid] for pid in pids}
        busy = _busy(ts.data, "-stats-")
        out["clusters"][str(w)]["passes"].append(
            {"round": r, "wall": wall, "busy": busy, "worker_cpu": cpu,
             "overhead": wall - max(busy.values()), "loglik": ll,
             "load_average_1min": os.getloadavg()[0]})

    setups: dict[int, tuple] = {}
    try:
        if not one_at_a_time:
            for w in cfg["workers"]:
                setups[w] = start(w)
        for r in range(cfg["rounds"]):
            order = cfg["workers"] if r % 2 == 0 else cfg["workers"][::-1]
            for w in order:
                if one_at_a_time:
                    setups[w] = start(w)
                for _ in range(int(cfg.get("passes", 1))):
                    timed_pass(setups[w], r)
                if one_at_a_time:
                    close(setups.pop(w))
    finally:
        for setup in setups.values():
            close(setup)
    return out


def child_overhead(cfg: dict) -> dict:
    """One cluster of ``cfg["workers"]`` worker processes; passes over tiny partitions
    (``rows`` rows each): with no nap, a pass is the engine's and Dask's overhead; with a
    nap per partition, the fake workers' compute (sleep) is added, as on a large cluster."""
    import distributed
    from threadpoolctl import threadpool_limits
    info = cfg["info"]
    from src.estimation.engines import MemoryPartitions
    from src.models.gmm import GaussianMixtureModel
    from src.parallel.dask_engine import DaskEngine

    class Sleepy(GaussianMixtureModel):
        nap = 0.0

        def e_step_stats(self, data, params):
            if self.nap:
                time.sleep(self.nap)
            return super().e_step_stats(data, params)

    params = _params(cfg["params"])
    rng = np.random.default_rng(1)
    rows = []
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=cfg["workers"], threads_per_worker=1,
                                       processes=cfg["processes"], dashboard_address=None)
    client = distributed.Client(cluster)
    start = time.perf_counter() - t0
    try:
        for P, nap in cfg["cases"]:
            model = Sleepy(K, covariance="full", reg_covar=REG)
            model.setup({"columns": info["columns"], "shift": info["shift"]})
            model.nap = nap
            reader = MemoryPartitions([{"X": rng.normal(size=(cfg["rows"], D))} for _ in range(P)],
                                      chunk_rows=cfg["rows"])
            with DaskEngine(client, reader, n_obs=P * cfg["rows"], persist=True) as engine, \
                    threadpool_limits(1):
                engine.reduce_stats(model, params)
                engine.timings.update(submit=0.0, wait=0.0, reduce=0.0, passes=0)
                walls = []
                for _ in range(cfg["repeats"]):
                    t0 = time.perf_counter()
                    engine.reduce_stats(model, params)
                    walls.append(time.perf_counter() - t0)
                tm = engine.timings
                rows.append({"W": cfg["workers"], "P": P, "nap": nap,
                             "kind": "processes" if cfg["processes"] else "threads",
                             "wall": statistics.median(walls), "walls": walls,
                             "submit": tm["submit"] / tm["passes"],
                             "reduce": tm["reduce"] / tm["passes"],
                             "wait": tm["wait"] / tm["passes"]})
    finally:
        client.close()
        cluster.close()
    return {"rows": rows, "cluster_start": start}


def child_spark(cfg: dict) -> dict:
    os.environ.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", cfg["driver_memory"])
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        frame = spark.read.parquet(str(Path(cfg["folder"]) / "*.parquet"))
        df = VectorAssembler(inputCols=COLUMNS, outputCol="features").transform(frame) \
            .select("features").cache()
        t0 = time.perf_counter()
        n = df.count()
        load = time.perf_counter() - t0
        out = {"n": n, "load_and_cache": load, "partitions": df.rdd.getNumPartitions(), "fits": []}
        GaussianMixture(k=K, maxIter=1, tol=0.0, seed=SEED).fit(df)   # warm-up (JIT, caches)
        per = []
        for _ in range(cfg.get("rounds", 2)):
            pair = []
            for iters in (1, 1 + cfg["iters"]):
                gm = GaussianMixture(k=K, maxIter=iters, tol=0.0, seed=SEED)
                t0 = time.perf_counter()
                fitted = gm.fit(df)
                pair.append({"seconds": time.perf_counter() - t0,
                             "iterations": fitted.summary.numIter,
                             "loglik": fitted.summary.logLikelihood})
            out["fits"] += pair
            per.append((pair[1]["seconds"] - pair[0]["seconds"])
                       / (pair[1]["iterations"] - pair[0]["iterations"]))
        out["per_iteration_rounds"] = per
        out["per_iteration"] = statistics.median(per)
        out["spark_version"] = spark.version
        return out
    finally:
        spark.stop()


CHILDREN = {"inmemory": child_inmemory, "streaming": child_streaming, "dask": child_dask,
            "overhead": child_overhead, "spark": child_spark}


# ----------------------------------------------------------------------- the parent
def run_child(kind: str, cfg: dict) -> dict:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(cfg)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_seconds"] = time.perf_counter() - t0
    out["load_average_1min_after"] = os.getloadavg()[0]
    return out


def start_params_file(folder: Path, info: dict, path: Path) -> None:
    """Our gmm start 0 of the first 100,000 rows of the first file, saved for every child."""
    import pyarrow.parquet as pq
    sys.path.insert(0, str(ROOT))
    from src.estimation.em import start_params
    t = pq.read_table(sorted(folder.glob("*.parquet"))[0], columns=COLUMNS)
    X = np.stack([c.to_numpy() for c in t.columns], axis=1)[:100_000]
    params = start_params(_model(info), {"X": X}, SEED, 0)
    np.savez(path, **params)


def scaling_model(sim: list[dict], compute_per_row: float, ns: list[float]) -> dict:
    """Per kind of fake worker: :func:`fit_overhead`."""
    return {kind: fit_overhead([r for r in sim if r.get("kind", "processes") == kind],
                               compute_per_row, ns)
            for kind in sorted({r.get("kind", "processes") for r in sim})}


def fit_overhead(sim: list[dict], compute_per_row: float, ns: list[float]) -> dict:
    """Least squares ``wall = a + b W + c P`` on the simulation's passes without naps, the
    naps' passes predicted by ``ceil(P/W) nap + a + b W + c P`` (the check), and the pass
    time ``T(W) = compute_per_row N ceil(P/W) / P + a + b W + c P`` for P = max(24, 2W)."""
    bare = [r for r in sim if not r["nap"]]
    A = np.array([[1.0, r["W"], r["P"]] for r in bare])
    y = np.array([r["wall"] for r in bare])
    (a, b, c), *_ = np.linalg.lstsq(A, y, rcond=None)
    over = lambda W, P: a + b * W + c * P  # noqa: E731
    check = [{"W": r["W"], "P": r["P"], "nap": r["nap"], "measured": r["wall"],
              "predicted": math.ceil(r["P"] / r["W"]) * r["nap"] + over(r["W"], r["P"])}
             for r in sim if r["nap"]]
    pred = {}
    for n in ns:
        rows = {}
        for W in (1, 2, 10, 20, 50, 100):
            P = max(24, 2 * W)
            compute = compute_per_row * n * math.ceil(P / W) / P
            rows[W] = {"P": P, "compute": compute, "overhead": over(W, P),
                       "total": compute + over(W, P)}
        for W, row in rows.items():
            row["speedup_vs_1"] = rows[1]["total"] / row["total"]
            pred[f"N={n:.0e},W={W}"] = row
    return {"a_fixed": a, "b_per_worker": b, "c_per_partition": c,
            "fit_residual_max": float(np.max(np.abs(y - A @ np.array([a, b, c])))),
            "check_with_naps": check, "compute_per_row": compute_per_row, "predictions": pred}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e7)
    ap.add_argument("--partitions", type=int, default=24)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1e6, 1e7])
    ap.add_argument("--spark-n", type=float, default=None, help="rows for Spark (default --n)")
    ap.add_argument("--spark-memory", default="8g")
    ap.add_argument("--rounds", type=int, default=3, help="Dask: rounds of 1 vs 2 workers")
    ap.add_argument("--process-workers", type=int, nargs="*", default=[1, 2, 4, 8],
                    help="simulation: worker processes (TCP) per cluster")
    ap.add_argument("--fake-workers", type=int, nargs="*", default=[1, 4, 16, 32],
                    help="simulation: in-process workers (threads, no TCP) per cluster")
    ap.add_argument("--readers", default="project,arrow",
                    help="streaming readers: project (src.data.partitions), arrow (plain "
                         "pyarrow to numpy, no validation: the floor of reading), slow (the "
                         "project's reader without its fast path, in pyarrow's default pool)")
    ap.add_argument("--read-ahead", type=int, default=None,
                    help="streaming: chunks read ahead (default the engine's READ_AHEAD)")
    ap.add_argument("--clusters", choices=["side-by-side", "one-at-a-time"],
                    default="one-at-a-time",
                    help="Dask: only the cluster measured up (started, loaded and closed each "
                         "round, as a user runs one), or both up throughout")
    ap.add_argument("--passes", type=int, default=3,
                    help="Dask: timed EM iterations on a cluster in each round, one after another")
    ap.add_argument("--skip", default="")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_DATA", "/tmp/bench_distributed"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks/out/distributed/results.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    n = int(args.n)
    if args.spark_n is None:
        args.spark_n = n
    work = Path(args.workdir)
    sizes = sorted({int(s) for s in args.sizes} | {n})
    datasets = {}
    rows_per_file = n / args.partitions   # smaller sets: files of the same size, fewer
    for size in sizes + ([int(args.spark_n)] if "spark" not in skip else []):
        if size not in datasets:
            parts = args.partitions if size == n else max(1, round(size / rows_per_file))
            datasets[size] = (work / f"n{size:.0e}", write_data(work / f"n{size:.0e}", size, parts))
    folder, info = datasets[n]
    params = work / "start.npz"
    start_params_file(folder, info, params)
    results: dict = {"n": n, "partitions": args.partitions, "iters": args.iters,
                     "data": {f"{k:.0e}": v[1] for k, v in datasets.items()}, "cpu": os.cpu_count()}

    def cfg(size: int, **more) -> dict:
        f, i = datasets[size]
        return {"folder": str(f), "info": i, "params": str(params), "iters": args.iters,
                "chunk_rows": CHUNK_ROWS, "read_ahead": args.read_ahead, **more}

    def show(name: str, value) -> None:
        print(f"{name}: {json.dumps(value, default=str)[:600]}", flush=True)

    if "inmemory" not in skip:
        results["inmemory"] = run_child("inmemory", cfg(n))
        show("inmemory", results["inmemory"])
    if "streaming" not in skip:
        results["streaming"] = {f"{s:.0e}": run_child("streaming", cfg(s)) for s in sizes}
        show("streaming", results["streaming"])
        if "arrow" in args.readers.split(","):
            results["streaming_arrow"] = run_child("streaming", cfg(n, reader="arrow"))
            show("streaming_arrow", results["streaming_arrow"])
        if "slow" in args.readers.split(","):
            results["streaming_slow"] = {f"{s:.0e}": run_child("streaming", cfg(s, reader="slow"))
                                         for s in sizes}
            show("streaming_slow", results["streaming_slow"])
    if "dask" not in skip:
        results["dask"] = run_child("dask", cfg(n, workers=[1, 2], rounds=args.rounds,
                                                clusters=args.clusters, passes=args.passes))
        show("dask", results["dask"])
    if "overhead" not in skip:
        sim = []
        cases = [(50, 0.0), (100, 0.0), (100, 0.02)]   # naps of 20 ms check the compute term
        for processes, workers in ((True, args.process_workers), (False, args.fake_workers)):
            for w in workers:
                sim += run_child("overhead", cfg(n, workers=w, cases=cases, rows=100, repeats=3,
                                                 processes=processes))["rows"]
        results["overhead"] = sim
        show("overhead", sim)
    if "spark" not in skip:
        try:
            import pyspark  # noqa: F401
            results["spark"] = run_child("spark", cfg(int(args.spark_n),
                                                      driver_memory=args.spark_memory))
        except Exception as exc:   # documented in the results, not fatal
            results["spark"] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
        show("spark", results["spark"])
    summarise(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"written {out}")


def summarise(r: dict) -> None:
    """Ratios and the scaling model, added to ``r["summary"]`` and printed."""
    s: dict = {}
    med = statistics.median
    big = f"{r['n']:.0e}"
    if "inmemory" in r:
        s["inmemory_s_per_iter"] = med(r["inmemory"]["seconds"])
        s["inmemory_cpu_s_per_iter"] = med(r["inmemory"]["cpu_seconds"])
    def per_size(prefix: str, size: str, row: dict) -> None:
        s[f"{prefix}_{size}_s_per_iter"] = med(row["seconds"])
        s[f"{prefix}_{size}_cpu_s_per_iter"] = med(row["cpu_seconds"])
        s[f"{prefix}_{size}_peak_above_setup_mb"] = row["peak_above_setup_sampled"] / 2**20
        s[f"{prefix}_{size}_peak_in_chunks"] = row["peak_above_setup_sampled"] / row["chunk_bytes"]

    if "streaming" in r:
        for size, row in r["streaming"].items():
            per_size("streaming", size, row)
            if "scan_seconds" in row:
                s[f"scan_{size}_seconds"] = row["scan_seconds"]
                s[f"scan_{size}_peak_above_setup_mb"] = row["scan_peak_above_setup"] / 2**20
        if "inmemory" in r and big in r["streaming"]:
            s["streaming_over_inmemory"] = s[f"streaming_{big}_s_per_iter"] / s["inmemory_s_per_iter"]
        peaks = [row["peak_above_setup_sampled"] for row in r["streaming"].values()]
        if len(peaks) > 1:
            s["streaming_peak_largest_over_smallest_n"] = peaks[-1] / peaks[0]
    if "streaming_slow" in r:
        for size, row in r["streaming_slow"].items():
            per_size("slow", size, row)
        if "inmemory" in r and big in r["streaming_slow"]:
            s["slow_over_inmemory"] = s[f"slow_{big}_s_per_iter"] / s["inmemory_s_per_iter"]
    if "streaming_arrow" in r:
        s["streaming_arrow_s_per_iter"] = med(r["streaming_arrow"]["seconds"])
        if "inmemory" in r:
            s["streaming_arrow_over_inmemory"] = s["streaming_arrow_s_per_iter"] / s["inmemory_s_per_iter"]
    if "dask" in r:
        cl = r["dask"]["clusters"]
        for w, row in cl.items():
            s[f"dask_{w}w_s_per_iter"] = med(p["wall"] for p in row["passes"])
            s[f"dask_{w}w_overhead_s"] = med(p["overhead"] for p in row["passes"])
            tm = row["timings"]
            for part in ("submit", "wait", "reduce"):
                s[f"dask_{w}w_{part}_s"] = tm[part] / max(tm["passes"], 1)
        if "1" in cl and "2" in cl:
            one, two = cl["1"]["passes"], cl["2"]["passes"]
            ratios = [a["wall"] / b["wall"] for a, b in zip(one, two)]
            s["dask_speedup_2_over_1_rounds"] = ratios
            s["dask_speedup_2_over_1"] = med(ratios)
            # the same from CPU time: what an otherwise idle 2-core machine gives
            cpu = [(sum(a["worker_cpu"].values()) + a["overhead"])
                   / (max(b["worker_cpu"].values()) + b["overhead"]) for a, b in zip(one, two)]
            s["dask_speedup_2_over_1_from_cpu"] = med(cpu)
            compute_per_row = med(sum(p["worker_cpu"].values()) for p in one) / r["n"]
            if "overhead" in r:
                s["scaling"] = scaling_model(r["overhead"], compute_per_row, [1e7, 1e8])
    if "spark" in r and "per_iteration" in r["spark"]:
        s["spark_s_per_iter"] = r["spark"]["per_iteration"]
        if r["spark"]["n"] == r["n"]:
            for name in ("inmemory_s_per_iter", f"streaming_{big}_s_per_iter",
                         "dask_1w_s_per_iter", "dask_2w_s_per_iter"):
                if name in s:
                    s[f"ours_{name[:-11]}_over_spark"] = s[name] / s["spark_s_per_iter"]
    r["summary"] = s
    print(json.dumps(s, indent=1, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        result = CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))
        print(json.dumps(result, default=float))
    else:
        main()
