"""Turning SIGTERM and SIGINT into exceptions, deferred while a progress write is under way.

SIGTERM becomes :class:`Terminated` and SIGINT ``KeyboardInterrupt`` (both BaseException),
so the ``estimation_progress`` context saves the state on the way out.  A signal that
arrives while the guard says a write is under way is remembered and raised right after it.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["Terminated", "WriteGuard", "install_handlers", "restore_handlers"]


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler so that state is saved on the way out."""


class WriteGuard:
    """Marks the critical section of a write; signals inside it are deferred to its end."""

    def __init__(self) -> None:
        self.active = False
        self.pending: type[BaseException] | None = None

    def __enter__(self) -> "WriteGuard":
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False

    def raise_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            raise pending()


def install_handlers(guard: WriteGuard) -> Any:
    """SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt; returns what to restore."""
    def make(exc: type[BaseException]):
        def handler(signum, frame):  # runs in the main thread, between bytecodes
            if guard.active:
                guard.pending = exc
                return
            raise exc()
        return handler
    try:
        return (signal.signal(signal.SIGTERM, make(Terminated)),
                signal.signal(signal.SIGINT, make(KeyboardInterrupt)))
    except ValueError:  # not the main thread: leave signals alone
        return None


def restore_handlers(previous: Any) -> None:
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
        except ValueError:
            pass
