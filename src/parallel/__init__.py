"""Executors: in process, local processes and Dask, for independent units and ordered map-reduce."""

from .executors import (DaskExecutor, Executor, InProcessExecutor, Partitions, ProcessExecutor,
                        make_executor)

__all__ = ["DaskExecutor", "Executor", "InProcessExecutor", "Partitions", "ProcessExecutor",
           "make_executor"]
