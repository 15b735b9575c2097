"""Fingerprints: what a phase's result depends on, and what changed between two runs.

A fingerprint is a flat dict of JSON values (option -> value, data hash, project version,
environment).  Resuming is caching: a stored result is used only while its fingerprint is
unchanged.
"""

from __future__ import annotations

import platform
import sys
from typing import Any, Mapping

__all__ = ["environment_fingerprint", "diff_fingerprints", "describe_changes"]


def environment_fingerprint() -> dict[str, Any]:
    """What bitwise-identical resume depends on besides options and data."""
    import numpy
    import scipy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "platform": sys.platform,
    }
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = sorted({f"{i.get('internal_api')}-{i.get('version')}-{i.get('architecture')}"
                              for i in threadpool_info() if i.get("user_api") == "blas"})
    except Exception:  # threadpoolctl missing or failing: fall back on versions only
        pass
    return env


def diff_fingerprints(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ (missing on one side counts as None)."""
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, dict) else "{...}"
    return text if len(text) <= 60 else text[:57] + "..."


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``key: old -> new`` for each change, joined with semicolons."""
    return "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items())
