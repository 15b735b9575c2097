"""src.parallel.dask_worker: what our compute tasks set inside a Dask worker (real LocalCluster)."""

from __future__ import annotations

import time

import pytest

from src.parallel.dask_worker import QUIET_TICK_MS, compute, tune_malloc
from tests.test_executors import dask_cluster  # noqa: F401  (the session's Dask cluster)


def _profiler_running(timeout: float = 5.0, want: bool | None = None) -> bool | None:
    """Whether this worker's statistical profiler is running (None: it has none); with
    ``want``, waits up to ``timeout`` for that state (it changes on the worker's event loop)."""
    from distributed import get_worker
    callback = get_worker().periodic_callbacks.get("profile")
    if callback is None:
        return None
    deadline = time.monotonic() + timeout
    while want is not None and callback.is_running() != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return callback.is_running()


def _tick_ms() -> float:
    from distributed import get_worker
    return get_worker().periodic_callbacks["tick"].callback_time


def _quiet_state_on(dask_worker) -> tuple[bool, float]:
    """client.run: whether the worker's profiler runs and its tick's interval (no task)."""
    return (dask_worker.periodic_callbacks["profile"].is_running(),
            dask_worker.periodic_callbacks["tick"].callback_time)


def _states_inside_compute() -> list[tuple[bool | None, float]]:
    """The profiler's state and the tick's interval before, inside, nested inside, after the
    nested block, after."""
    states = [(_profiler_running(), _tick_ms())]
    with compute():
        states.append((_profiler_running(want=False), _tick_ms()))
        with compute():
            states.append((_profiler_running(want=False), _tick_ms()))
        time.sleep(0.05)   # the inner block's end must not restore them
        states.append((_profiler_running(), _tick_ms()))
    running = _profiler_running(want=True)
    time.sleep(0.05)
    states.append((running, _tick_ms()))
    return states


def _blas_threads_inside() -> tuple[int, int]:
    from threadpoolctl import threadpool_info
    with compute():
        inside = max((lib["num_threads"] for lib in threadpool_info()), default=1)
    return inside, int(tune_malloc())


def test_worker_diagnostics_quiet_while_a_compute_task_runs(dask_cluster):  # noqa: F811
    """Inside compute() the worker's profiler is stopped and its health tick slowed to once a
    second (nested blocks counted); both are restored when the last block ends."""
    from distributed import Client
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        worker = sorted(client.scheduler_info()["workers"])[0]
        states = client.submit(_states_inside_compute, pure=False, workers=[worker]).result()
        if states[0][0] is None:
            pytest.skip("the workers run without a statistical profiler")
        tick = states[0][1]
        assert tick < QUIET_TICK_MS
        quiet = (False, QUIET_TICK_MS)
        assert states == [(True, tick), quiet, quiet, quiet, (True, tick)]
        assert client.run(_quiet_state_on, workers=[worker])[worker] == (True, tick)


def test_compute_limits_blas_and_tunes_the_allocator_on_workers(dask_cluster):  # noqa: F811
    """compute(): one BLAS thread inside; on a worker the allocator is tuned (glibc) too."""
    from distributed import Client
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        inside, tuned = client.submit(_blas_threads_inside, pure=False).result()
    assert inside == 1
    assert tuned == int(tune_malloc())


def test_compute_outside_a_worker_only_limits_blas():
    """In a process that is not a Dask worker compute() is threadpool_limits(1) alone."""
    from threadpoolctl import threadpool_info
    with compute():
        assert max((lib["num_threads"] for lib in threadpool_info()), default=1) == 1
