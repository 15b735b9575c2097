"""SIGTERM, SIGHUP and SIGINT as exceptions, deferred while a progress write is under way.

SIGTERM and SIGHUP become :class:`Terminated` (carrying the signal's name and exit code:
143 and 129) and SIGINT ``KeyboardInterrupt`` (exit 130), all BaseException, so the
``estimation_progress`` context saves the state on the way out.

The :class:`WriteGuard` is the only thing the handlers touch:

* inside ``with guard:`` (a progress write, or a change of the tracker's state) a signal is
  remembered and raised when the outermost block ends, never half-way through;
* the *first* signal decides how the run ends: from then on every further SIGTERM, SIGHUP
  or SIGINT is ignored, so a second signal can neither interrupt nor relabel the final
  save, and :func:`restore_handlers` then leaves the three signals ignored (the process is
  on its way out; a signal arriving after the handlers were put back would otherwise kill
  it before it reports its exit code);
* once the run is ending for another reason (``guard.closing``), signals are ignored too.

"First" means first to arrive: Python runs the handlers of signals that arrived during one
long C call (a write, an fsync) in signal-number order, so the handlers read the order of
arrival from the wakeup file descriptor (``signal.set_wakeup_fd``), where the C-level
handler writes each signal's number as it arrives.
"""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ["Terminated", "WriteGuard", "install_handlers", "restore_handlers", "HANDLED",
           "exception_for"]

#: the signals turned into exceptions, by name
HANDLED = tuple(name for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM/SIGHUP handler so that state is saved on the
    way out.  ``signame`` names the signal, ``exit_code`` is ``128 + signal number``."""

    def __init__(self, signame: str = "SIGTERM") -> None:
        super().__init__(signame)
        self.signame = signame
        number = getattr(signal, signame, signal.SIGTERM)
        self.exit_code = 128 + int(number)


def exception_for(signame: str) -> BaseException:
    """The exception a signal becomes: KeyboardInterrupt for SIGINT, else Terminated."""
    if signame == "SIGINT":
        return KeyboardInterrupt()
    return Terminated(signame)


class WriteGuard:
    """Critical sections and the run's first signal; the interface between handlers and tracker.

    ``with guard:`` nests; the signal that arrived inside is raised by :meth:`raise_pending`
    (the tracker calls it after the outermost block).  ``signal`` is the name of the first
    signal received (None before), ``closing`` is set when the run's end is being recorded.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.signal: str | None = None
        self.pending = False
        self.closing = False

    @property
    def active(self) -> bool:
        return self.depth > 0

    def __enter__(self) -> "WriteGuard":
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1

    def notice(self, signame: str) -> None:
        """Called by a handler: record the first signal, raise it now or after the write."""
        if self.signal is not None or self.closing:
            return  # the run is already ending: ignore
        self.signal = signame
        if self.active:
            self.pending = True
            return
        raise exception_for(signame)

    def raise_pending(self) -> None:
        """Raise the signal that arrived during a critical section (outermost level only)."""
        if self.pending and not self.active:
            self.pending = False
            raise exception_for(self.signal or "SIGTERM")


class _ArrivalOrder:
    """A non-blocking pipe set as the wakeup fd: the C-level handler writes each signal's
    number into it on arrival, so a Python handler can tell which handled signal came first."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        self.previous = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.numbers = {int(getattr(signal, name)) for name in HANDLED}

    def first(self, default: int) -> int:
        """The earliest handled signal still unread in the pipe, else ``default``."""
        try:
            data = os.read(self.read_fd, 4096)
        except (BlockingIOError, OSError):
            return default
        return next((n for n in data if n in self.numbers), default)

    def close(self) -> None:
        try:
            signal.set_wakeup_fd(self.previous)
        except (ValueError, OSError):
            pass
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def install_handlers(guard: WriteGuard) -> Any:
    """SIGTERM/SIGHUP -> Terminated, SIGINT -> KeyboardInterrupt; returns what to restore."""
    try:
        order: _ArrivalOrder | None = _ArrivalOrder()
    except (ValueError, OSError):  # not the main thread, or no pipe: numbers only
        order = None

    def handler(signum, frame):  # runs in the main thread, between bytecodes
        first = order.first(signum) if order is not None else signum
        guard.notice(signal.Signals(first).name)

    previous = {}
    try:
        for name in HANDLED:
            number = getattr(signal, name)
            previous[number] = signal.signal(number, handler)
    except ValueError:  # not the main thread: leave signals alone
        for number, old in previous.items():
            signal.signal(number, old)
        if order is not None:
            order.close()
        return None
    return previous, order


def restore_handlers(previous: Any, guard: WriteGuard | None = None) -> None:
    """Put the previous handlers back, or, when the run ends by a signal (``guard.signal``),
    ignore the handled signals so that the process reports its exit code."""
    if previous is None:
        return
    handlers, order = previous
    ending = guard is not None and guard.signal is not None
    try:
        for number, old in handlers.items():
            signal.signal(number, signal.SIG_IGN if ending else old)
    except ValueError:
        pass
    if order is not None:
        order.close()
