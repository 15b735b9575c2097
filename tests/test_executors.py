"""Executors: in process, local processes and a real Dask cluster give identical results
(independent units and the ordered map-reduce over persisted partitions).

One Dask ``LocalCluster`` (2 worker processes, 1 thread each, no dashboard) is started for
the whole test session by the ``dask_cluster`` fixture and closed at the end.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from src.inference.bootstrap import bootstrap_se
from src.models.registry import get_model_class
from src.parallel.executors import (DaskExecutor, InProcessExecutor, ProcessExecutor,
                                    make_executor)
from tests.test_bootstrap import MemoryCheckpointer, same, small
from tests.test_parallel_map_reduce import (BROADCASTS, fail_on_second, identical, moments,
                                            order_sensitive_partitions, reference)


def blas_threads(x):
    """Inside a task: the largest BLAS thread count any loaded BLAS library reports."""
    from threadpoolctl import threadpool_info
    counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return x, max(counts) if counts else 1


def square_or_fail(x):
    if x == 3:
        raise ArithmeticError("three")
    return x * x


USER_MODEL = textwrap.dedent('''
    import numpy as np
    from src.models.base import MixtureModel, ParamSpec

    class FileGauss(MixtureModel):
        """A 1-D Gaussian mixture defined in a user's file (reaches workers by value)."""
        name = "file_gauss"
        has_closed_form_m_step = True

        def param_specs(self):
            return [ParamSpec("weight", (), "simplex"), ParamSpec("mean", ()),
                    ParamSpec("var", (), "positive")]

        def log_joint(self, data, params):
            x = data["x"][:, None]
            v = params["var"]
            return (np.log(params["weight"]) - 0.5 * np.log(2 * np.pi * v)
                    - 0.5 * (x - params["mean"]) ** 2 / v)

        def suff_stats(self, data, resp):
            x = data["x"]
            return {"n": resp.sum(0), "s1": resp.T @ x, "s2": resp.T @ x ** 2}

        def m_step(self, stats):
            n = stats["n"]
            m = stats["s1"] / n
            return {"weight": n / n.sum(), "mean": m, "var": stats["s2"] / n - m ** 2}
''')


@pytest.fixture(scope="session")
def dask_cluster():
    """One real Dask LocalCluster for the session: 2 processes x 1 thread, no dashboard."""
    import distributed
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    started = [p for p in me.children(recursive=True) if p.pid not in before]
    try:
        yield cluster
    finally:
        cluster.close()
        # no worker (nor anything it started) may outlive the session
        for proc in started:
            try:
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(started, timeout=10)


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("usermodel") / "my_model.py"
    path.write_text(USER_MODEL)
    return get_model_class(f"{path}:FileGauss")


class TestMakeExecutor:
    def test_kinds(self):
        assert isinstance(make_executor(), InProcessExecutor)
        assert isinstance(make_executor(1), InProcessExecutor)
        with make_executor(2) as ex:
            assert isinstance(ex, ProcessExecutor) and ex.workers == 2
        with pytest.raises(ValueError, match="workers"):
            make_executor(0)


class TestLocal:
    @pytest.mark.parametrize("workers", [1, 2])
    def test_all_tasks_once_with_one_blas_thread(self, workers):
        """Every task runs once, results carry their index, BLAS is at 1 thread inside."""
        with make_executor(workers) as ex:
            out = dict(ex.map_unordered(blas_threads, [(i,) for i in range(7)]))
        assert sorted(out) == list(range(7))
        assert all(out[i] == (i, 1) for i in range(7))

    @pytest.mark.parametrize("workers", [1, 2])
    def test_task_error_reaches_the_driver(self, workers):
        with make_executor(workers) as ex, pytest.raises(ArithmeticError, match="three"):
            list(ex.map_unordered(square_or_fail, [(i,) for i in range(6)]))

    def test_bootstrap_same_in_process_and_two_processes(self, user_model):
        """A user model from a file reaches 2 worker processes; results are bitwise equal."""
        model, data, params = small()
        mine = user_model(2)
        a = bootstrap_se(mine, data, params, n_bootstrap=10, seed=7)
        with make_executor(2) as ex:
            b = bootstrap_se(mine, data, params, n_bootstrap=10, seed=7, executor=ex)
        same(a, b)
        assert a.extra["n_ok"] == 10


class TestDask:
    def test_tasks_and_threads(self, dask_cluster):
        with DaskExecutor(dask_cluster.scheduler_address) as ex:
            assert ex.workers == 2
            out = dict(ex.map_unordered(blas_threads, [(i,) for i in range(5)]))
        assert out == {i: (i, 1) for i in range(5)}

    def test_map_reduce_bitwise_identical_in_process_processes_and_dask(self, dask_cluster):
        """An order-sensitive reduction over persisted partitions is bitwise the same with 1 worker, 2 processes and Dask."""
        parts = order_sensitive_partitions()
        with make_executor(1) as one, make_executor(2) as two, \
                make_executor(scheduler=dask_cluster.scheduler_address) as dask:
            assert isinstance(dask, DaskExecutor)
            handles = [(ex, ex.persist_partitions(parts)) for ex in (one, two, dask)]
            for broadcast in BROADCASTS:  # each call sends only the broadcast value
                ref = reference(parts, broadcast)
                for ex, handle in handles:
                    assert identical(ex.map_reduce(moments, handle, broadcast=broadcast), ref)
            with pytest.raises(ArithmeticError, match="partition one"):
                dask.map_reduce(fail_on_second, [{"i": np.array(i)} for i in range(3)])

    def test_bootstrap_identical_everywhere_and_after_interruption(self, dask_cluster, user_model):
        """In process, 2 local processes, the Dask cluster, and Dask after an interruption agree."""
        model, data, params = small()
        kw = dict(n_bootstrap=12, seed=13)
        base = bootstrap_se(model, data, params, **kw)
        with make_executor(2) as ex:
            same(bootstrap_se(model, data, params, executor=ex, **kw), base)
        with make_executor(scheduler=dask_cluster.scheduler_address) as ex:
            same(bootstrap_se(model, data, params, executor=ex, **kw), base)
            ck = MemoryCheckpointer()

            def stop(r, status, n_done, n_total):
                if n_done == 4:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                bootstrap_se(model, data, params, executor=ex, checkpoint=ck, on_replicate=stop,
                             **kw)
            state = ck.states[-1]
            assert len(state["replicates"]) == 4
            computed = []
            resumed = bootstrap_se(model, data, params, executor=ex,
                                   checkpoint=MemoryCheckpointer(state),
                                   on_replicate=lambda r, *a: computed.append(r), **kw)
            same(resumed, base)
            assert sorted(computed) == sorted(set(range(12)) - {int(k) for k in state["replicates"]})
            # a user model loaded from a file reaches the Dask workers too
            mine = user_model(2)
            same(bootstrap_se(mine, data, params, executor=ex, **kw),
                 bootstrap_se(mine, data, params, **kw))
        assert np.all(np.isfinite(base.se))
