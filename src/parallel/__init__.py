"""Executors for independent units of work (EM random starts, bootstrap replicates)."""

from .executors import DaskExecutor, InProcessExecutor, ProcessExecutor, make_executor

__all__ = ["DaskExecutor", "InProcessExecutor", "ProcessExecutor", "make_executor"]
