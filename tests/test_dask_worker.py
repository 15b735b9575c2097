"""src.parallel.dask_worker: what our compute tasks set inside a Dask worker (real LocalCluster)."""

from __future__ import annotations

import time

import pytest

from src.parallel.dask_worker import compute, tune_malloc
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


def _profiler_running_on(dask_worker) -> bool:
    """client.run: whether the worker's profiler runs (outside any task)."""
    return dask_worker.periodic_callbacks["profile"].is_running()


def _states_inside_compute() -> list[bool | None]:
    """The profiler's state before, inside, nested inside, after the nested block, after."""
    states = [_profiler_running()]
    with compute():
        states.append(_profiler_running(want=False))
        with compute():
            states.append(_profiler_running(want=False))
        time.sleep(0.05)   # the inner block's end must not start it again
        states.append(_profiler_running())
    states.append(_profiler_running(want=True))
    return states


def _blas_threads_inside() -> tuple[int, int]:
    from threadpoolctl import threadpool_info
    with compute():
        inside = max((lib["num_threads"] for lib in threadpool_info()), default=1)
    return inside, int(tune_malloc())


def test_profiler_paused_while_a_compute_task_runs(dask_cluster):  # noqa: F811
    """Inside compute() the worker's profiler is stopped (nested blocks counted); it runs
    again when the last block ends, and a task outside compute() leaves it alone."""
    from distributed import Client
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        worker = sorted(client.scheduler_info()["workers"])[0]
        states = client.submit(_states_inside_compute, pure=False, workers=[worker]).result()
        if states[0] is None:
            pytest.skip("the workers run without a statistical profiler")
        assert states == [True, False, False, False, True]
        assert client.run(_profiler_running_on, workers=[worker])[worker] is True


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
