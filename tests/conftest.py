"""Shared test set-up: the repository root on sys.path, single-threaded BLAS, the slow files
first (so the two test processes finish together)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:  # the project's thread policy, in tests too: results must not depend on BLAS threads
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1)
except ImportError:  # pragma: no cover
    pass


#: the files that take longest (whole-script runs, SIGKILL and resume, the torture test),
#: longest first: run before the others, so that with two processes (pytest-xdist, each file
#: on one of them) no long file starts last while the other process has nothing left to do
SLOW_FILES = ("test_crash_resume.py", "test_torture.py", "test_progress_files.py",
              "test_main_script.py", "test_partitioned_run.py", "test_structural.py",
              "test_blrt.py", "test_cli_models.py", "test_enumeration.py", "test_covariates.py",
              "test_parallel_lifetime.py", "test_plots.py", "test_partitioned_covariates.py",
              "test_manage_progress.py", "test_background.py", "test_readme.py")


def pytest_collection_modifyitems(items: list) -> None:
    """The slow files first (longest first), the rest in their usual order; within a file
    the order is unchanged."""
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))
