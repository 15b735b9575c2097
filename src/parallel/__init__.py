"""Executors: in process, local processes and Dask, for independent units and ordered map-reduce.

The executors are imported when first asked for (``src.parallel.make_executor``), so a worker
that needs only :mod:`.protocol` does not import them."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DaskExecutor", "Executor", "InProcessExecutor", "Partitions", "ProcessExecutor",
           "make_executor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".executors", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
