"""The drawing process's side of :mod:`.background`: its main loop (:func:`serve`, started
as ``python -c`` by the run), what it does while idle, and the pipe framing both sides use.

Requests come on stdin as :func:`~.plots.spec.pack` messages (JSON and numeric arrays, no
code): ``prepare`` (first stages of figures) and ``finish`` (second stages, and both stages
of any figure not prepared).  Each figure is answered on stdout as soon as it is drawn (a PNG,
or the error's text for the run to draw it itself).  The first figure of one ``finish`` is
drawn by the helper, the others by a fork of it that starts when the run is done computing
(its go signal, :data:`GO_SIGNAL`) or the helper with its own (:func:`_finish_all`).  The
loop ends at end-of-file.  Imports here are light (NumPy and the drawing modules): nothing
of the models or inference.
(``posteriors.csv`` is not made here: a thread of the run writes it, :mod:`.background`.)
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from typing import Any, Mapping

import numpy as np

from .plots.spec import HEAD_SIZE, finish, message_size, pack, unpack
from .plots.spec import start as start_drawing
from ..parallel.lifetime import set_parent_death_signal

__all__ = ["serve", "write_all", "read_message"]

_READ = 1 << 20


# ---------------------------------------------------------------------- pipes
def write_all(fd: int, parts: list[Any]) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view.nbytes:
            written = os.write(fd, view)
            view = view[written:]


def read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at end-of-file before any byte (a clean end)."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        chunk = os.readv(fd, [view[got:got + _READ]])
        if chunk == 0:
            if got == 0:
                return None
            raise EOFError(f"the pipe ended after {got} of {size} bytes")
        got += chunk
    return bytes(buf)


def read_message(fd: int) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    head = read_exactly(fd, HEAD_SIZE)
    if head is None:
        return None
    rest = read_exactly(fd, message_size(head)) or b""
    return unpack(head, rest)


# ---------------------------------------------------------------------- the loop
class _Inbox:
    """The helper's requests, read from ``fd`` as needed (or ahead, to see whether one waits)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: collections.deque = collections.deque()

    def waiting(self, timeout: float = 0.0) -> bool:
        """Whether a request waits, or comes within ``timeout`` seconds."""
        import select

        if self.queue:
            return True
        try:
            if not select.select([self.fd], [], [], timeout)[0]:
                return False
        except (OSError, ValueError):
            return False
        message = read_message(self.fd)
        if message is not None:
            self.queue.append(message)
        return True   # (end-of-file: the loop sees it next)

    def next(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        if self.queue:
            return self.queue.popleft()
        return read_message(self.fd)


def _warm_ups(out: int, drawn: Any) -> list[tuple[float, Any]]:
    """What the helper does while it has nothing else to do, in order, each after that many
    seconds without a request: import matplotlib, draw a small figure (:func:`.plots.layout.
    warm_up`: the first-draw costs paid before the estimate comes; not once a figure was
    finished, ``drawn()``), then tell the run it is ready (:func:`.background.wait_ready`;
    ``warmed``: whether the small figure was drawn).  The first stages of a prepare message
    come first when it waits (matplotlib imports for about a second, a run's data are often
    read by then): the small figure still follows them -- it used to be skipped once any
    request had come, and the run's first figures then paid 30-50 ms each more in its
    output phase."""
    from .plots import _import_matplotlib
    from .plots.layout import warm_up

    warmed = [False]

    def figure() -> None:
        if not drawn():
            warm_up()
            warmed[0] = True

    def ready() -> None:
        write_all(out, pack({"ready": True, "warmed": warmed[0]}, {}))

    return [(0.0, _import_matplotlib), (0.0, figure), (0.0, ready)]


def _make(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
          drawing: Any = None) -> tuple[dict[str, Any], bytes]:
    if drawing is None:
        drawing = start_drawing(kind, meta, arrays)
        meta, arrays = {}, {}
    elif isinstance(drawing, Exception):
        raise drawing   # its first stage failed
    png, width, height = finish(drawing, meta, arrays)
    return {"width": width, "height": height}, png


def _answer(job: int, name: str, kind: str, meta: Mapping[str, Any],
            arrays: Mapping[str, np.ndarray], drawing: Any) -> list[Any]:
    """The packed answer for one figure: its PNG (with the pid of the process that drew it
    and the monotonic clock's seconds when its second stage began and ended), or the error's
    text (the run then draws that figure itself)."""
    try:
        began = time.monotonic()
        info, body = _make(kind, meta, arrays, drawing)
        answer = {"job": job, "item": name, "error": None, "pid": os.getpid(),
                  "began": began, "ended": time.monotonic(), **info}
        blobs = {"bytes": np.frombuffer(body, dtype=np.uint8)}
    except Exception as exc:   # reported; the run makes this one itself
        answer = {"job": job, "item": name, "error": f"{type(exc).__name__}: {exc}"}
        blobs = {}
    return pack(answer, blobs)


#: whether a finish message's figures may be drawn in two processes (a fork of this one)
CAN_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")
#: whether the figures of a finish message are drawn by this process and a fork of it
#: (:func:`_finish_all`; tests set it)
SPLIT = True
#: the signal the run sends the drawing process when it is done computing (its output
#: phase begins, or it waits for a figure: :func:`.background.hurry`): the fork of
#: :func:`_finish_all` may start drawing
GO_SIGNAL = getattr(signal, "SIGUSR1", None)
#: ``fd``: the write end of the waiting fork's go pipe, while there is one; ``early``: a go
#: came while there was none (the run was done before this process forked: the next fork
#: starts at once)
_GO: dict[str, Any] = {"fd": None, "early": False}


def _go(signum: int = 0, frame: Any = None) -> None:
    """:data:`GO_SIGNAL`'s handler: let the waiting fork start (a byte on its go pipe)."""
    fd = _GO["fd"]
    if fd is None:
        _GO["early"] = True
        return
    try:
        os.write(fd, b"g")
    except OSError:
        pass


def _finish_all(out: int, job: int, work: list[tuple[str, str, dict, dict, Any]],
                split: bool = True) -> None:
    """Finish ``work`` (``(name, kind, meta, arrays, drawing)`` per figure) and answer each on
    ``out``.  With ``split``, two figures or more and :data:`CAN_FORK`, the first is drawn
    here and the others by a fork of this process (every first stage and matplotlib's state
    are already there, so it costs a fork, not a start-up), which sends its answers through
    a pipe of its own for this process to pass on (one writer to ``out``).  A fork that
    fails or dies leaves its figures' answers as errors (the run draws those itself).

    The fork waits before drawing, until the run says it is done computing
    (:data:`GO_SIGNAL`, also when it came before the fork) or this process is done with its
    own: the second stages come while
    the run computes the standard errors and writes ``posteriors.csv`` in a thread, and on
    two cores a second drawing process then takes CPU from them (measured, a fork drawing at
    once: an LCA run's SE phase 0.03-0.05 s longer for nothing saved, a one-panel scatter's
    run 35 ms longer there to save 17 ms in its output phase).  The run sends the go as its
    output phase begins (:func:`.background.hurry`): from there it mostly writes files and
    waits, and the last figures are drawn side by side (16 paired rounds against the fork
    that drew at once for scatter matrices only: the output phase 10 ms shorter for gmm2,
    gmm5 and lca10)."""
    if len(work) < 2 or not CAN_FORK or not split:
        _answer_each(out, job, work)
        return
    mine, theirs = work[:1], work[1:]
    pipes: list[int] = []
    try:
        read_end, write_end = os.pipe()
        pipes += [read_end, write_end]
        go_read, go_write = os.pipe()
        pipes += [go_read, go_write]
        pid = os.fork()
    except OSError:   # no pipe or no fork: everything here, in turn
        for fd in pipes:
            os.close(fd)
        _answer_each(out, job, work)
        return
    if pid == 0:   # the fork: wait for the go, draw its figures, send them, leave at once
        code = 0
        try:
            _GO["fd"] = None
            os.close(read_end)
            os.close(go_write)
            set_parent_death_signal()
            os.read(go_read, 1)   # a byte (the run's go), or end-of-file (this one's done)
            _answer_each(write_end, job, theirs)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    os.close(go_read)
    _GO["fd"] = go_write
    if _GO["early"]:   # (the handler runs between this thread's steps: no go is lost)
        _GO["early"] = False
        _go()
    try:
        try:
            _answer_each(out, job, mine)
        finally:   # (the handler sees None first)
            _GO["fd"] = None
            os.close(go_write)   # end-of-file: the fork starts if it has not
        missing = {name for name, *_ in theirs}
        try:
            while missing:
                head = read_exactly(read_end, HEAD_SIZE)
                if head is None:
                    break
                rest = read_exactly(read_end, message_size(head)) or b""
                missing.discard(str(unpack(head, rest)[0].get("item")))
                write_all(out, [head, rest])
        except (OSError, EOFError, ValueError):
            pass
        for name in sorted(missing):   # the fork died: the run draws these
            write_all(out, pack({"job": job, "item": name,
                                 "error": "the drawing process's fork ended early"}, {}))
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


def _answer_each(fd: int, job: int, work: list[tuple[str, str, dict, dict, Any]]) -> None:
    """Finish each figure of ``work`` in turn and write its answer to ``fd``."""
    for name, kind, meta, arrays, drawing in work:
        write_all(fd, _answer(job, name, kind, meta, arrays, drawing))


def serve(parent: int) -> None:
    """The helper's main loop (``python -c``, started by :mod:`.launch`): requests from
    stdin, one answer per item to stdout as it is made, until end-of-file."""
    import gc

    # A collection of everything the helper holds (matplotlib's modules, the data columns)
    # took 0.1-0.2 s, often in the middle of a figure; the helper lives one run and makes a
    # few figures, so what their cycles hold is left to the end.
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if GO_SIGNAL is not None:   # (blocked since the run started this process: launch.spawn)
        signal.signal(GO_SIGNAL, _go)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {GO_SIGNAL})
    set_parent_death_signal()
    if os.getppid() != parent:  # the run ended before the signal was armed
        return
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not enter the answers
    inbox = _Inbox(0)
    drawings: dict[tuple[int, str], Any] = {}   # first stages done: (job, figure) -> Drawing
    finished = [0]   # finish messages handled
    warm_ups = _warm_ups(out, lambda: finished[0] > 0)
    while True:
        while warm_ups and not inbox.waiting(warm_ups[0][0]):   # (matplotlib: needed anyway)
            try:
                warm_ups.pop(0)[1]()
            except Exception:   # matplotlib missing or broken: the run draws every figure
                warm_ups.clear()
        message = inbox.next()
        if message is None:
            os._exit(0)  # nothing to flush (answers go out with os.write): no slow teardown
        meta, arrays = message
        job = int(meta["job"])
        finished[0] += meta["op"] != "prepare"
        work = []
        for name, kind, item_meta, keys, *base in meta["items"]:
            item_arrays = {k: arrays[f"{name}/{k}"] for k in keys}
            if meta["op"] == "prepare":
                try:   # (ahead of the estimate unless it has come meanwhile: a short fit)
                    drawings[job, name] = start_drawing(kind, item_meta, item_arrays,
                                                        ahead=not inbox.waiting())
                except Exception as exc:   # reported when the second stage comes
                    drawings[job, name] = exc
                continue
            drawing = drawings.pop((base[0], name), None) if base and base[0] else None
            work.append((name, kind, item_meta, item_arrays, drawing))
        _finish_all(out, job, work, SPLIT)
