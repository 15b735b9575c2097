"""Shared test set-up: the repository root on sys.path, single-threaded BLAS."""

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
