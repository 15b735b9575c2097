"""Where work runs: in process, in local processes, on a Dask cluster — three equal executors.

Every executor follows the ``Executor`` protocol (``protocol.py``): ``map_unordered(fn,
args_list)`` for independent units (random starts, bootstrap replicates), yielding
``(index, result)`` as they finish; ``persist_partitions``/``map_reduce`` for statistics
summed over data partitions, folded in partition order so the result is bitwise identical
whatever the workers; ``workers``, ``close()``, and use as a context manager.  Leaving the
context (or an exception in the consumer) cancels the tasks not yet started.

Thread policy: inside every task BLAS is limited to one thread (threadpoolctl; local
workers limit it once for their whole life), so a task's numbers do not depend on where it
ran and our own parallelism (starts, replicates, partitions) is what uses the cores.

Modules: ``local.py`` (in process; local processes), ``dask_executor.py``, ``tasks.py``
(what runs in workers), ``shared.py`` (partitions workers map from memory), ``lifetime.py``
(workers die with the driver, even after SIGKILL), ``cleanup.py`` (task files; removing
those of dead runs).
"""

from __future__ import annotations

from typing import Any

from .cleanup import remove_stale_task_files
from .dask_executor import DaskExecutor
from .local import PRELOAD, InProcessExecutor, ProcessExecutor
from .protocol import Executor, Partitions, add_stats

__all__ = ["Executor", "Partitions", "InProcessExecutor", "ProcessExecutor", "DaskExecutor",
           "make_executor", "add_stats", "remove_stale_task_files", "PRELOAD"]


def make_executor(workers: int | None = None, scheduler: Any = None) -> Executor:
    """An executor: Dask when ``scheduler`` is given, local processes when ``workers > 1``,
    otherwise in-process."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None or int(workers) <= 1:
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return InProcessExecutor()
    return ProcessExecutor(int(workers))
