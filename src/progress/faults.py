"""Fault injection for crash tests (documented in docs/progress.md).

Set ``EM_PIPELINE_FAULT=ACTION:PHASE:N`` and the process performs ACTION right after the
N-th progress write made while PHASE is the current phase (the write that starts the phase
is number 1).  ACTION is ``kill`` (SIGKILL), ``term`` (SIGTERM), ``int`` (SIGINT) or
``raise`` (a RuntimeError).  Unset, it costs one dict lookup per write.
"""

from __future__ import annotations

import os
import signal

__all__ = ["after_write"]

ENV = "EM_PIPELINE_FAULT"


def after_write(phase: str | None, count: int) -> None:
    spec = os.environ.get(ENV)
    if not spec or phase is None:
        return
    try:
        action, target, n = spec.split(":")
        n = int(n)
    except ValueError:
        return
    if target != phase or count != n:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "raise":
        raise RuntimeError(f"fault injected after write {n} of phase {phase}")
