"""The drawing process: the figures of a run drawn on another core while the run goes on.

A run with plots (one K) starts a helper process as it begins (:func:`start`, from
:mod:`src.pipeline.tracked`); the helper imports matplotlib and draws a small figure to
warm its fonts while the run reads the data and fits the model.  As soon as the estimate is
known, the run sends it every figure's :class:`~.spec.Spec` (:func:`submit_fit`: the
posteriors, then the specs -- raw arrays, a few megabytes at most); the helper draws them while
the run computes standard errors and the first result files.  :func:`src.output.plots.figures`
then takes the PNGs (:func:`collect`) when it is asked for the same figures: the same model
and data objects, an equal estimate and equal posteriors.  Otherwise, or when the helper is
not there (it could not start, died, or answered with an error), the figures are drawn in the
run's process from the same specs: the bytes are the same either way (the drawing functions
are deterministic and see the same arrays; tested).

Why a process and not a thread: matplotlib's import (0.3-0.45 s) and drawing (0.1-0.3 s a
figure) hold the GIL; in a thread they delay a fit that runs Python code (LCA's EM on answer
patterns), in a process they run beside it on the second core.

Lifetime: the helper never outlives the run.  It reads its requests from a pipe and exits at
end-of-file (the run closed it, :func:`stop`, or the run is gone); on Linux it also asks the
kernel for SIGKILL when the thread that started it ends (``PR_SET_PDEATHSIG``, as the
project's worker processes do, :mod:`src.parallel.lifetime`), so a SIGKILLed run leaves no
helper drawing on.  It ignores SIGINT (Ctrl-C is the run's to handle).  Nothing the helper
receives is code: messages are :func:`~.spec.pack` bytes (JSON and numeric arrays).
"""

from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .layout import Plot
from .spec import HEAD_SIZE, FormatError, Spec, message_size, pack, render, unpack

__all__ = ["start", "running", "submit", "submit_fit", "collect", "stop", "helper_pid", "last_source", "serve"]

#: the project's root (the folder holding ``src``), put on the helper's path
_ROOT = str(Path(__file__).resolve().parents[3])
#: how long :func:`collect` waits for the helper's figures before drawing them itself
WAIT_SECONDS = 600.0
_READ = 1 << 20


# ---------------------------------------------------------------------- pipes
def _write_all(fd: int, parts: list[Any]) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view.nbytes:
            written = os.write(fd, view)
            view = view[written:]


def _read_exactly(fd: int, size: int) -> bytes | None:
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


def _read_message(fd: int) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    head = _read_exactly(fd, HEAD_SIZE)
    if head is None:
        return None
    rest = _read_exactly(fd, message_size(head)) or b""
    return unpack(head, rest)


# ---------------------------------------------------------------------- client
@dataclass
class _Job:
    model: Any
    data: Any
    params: dict[str, np.ndarray]
    post: Any
    specs: dict[str, Spec]
    result: Future


class _Helper:
    """The helper process and the two threads that write to and read from it."""

    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from src.output.plots.background import serve; serve(int(sys.argv[2]))")
        self.proc = subprocess.Popen([sys.executable, "-c", code, _ROOT, str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=0,
                                     close_fds=True)
        self.pid = self.proc.pid
        self._to = self.proc.stdin.fileno()
        self._from = self.proc.stdout.fileno()
        self._outbox: queue.Queue = queue.Queue()
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.alive = True
        self._finished = False
        self._writer = threading.Thread(target=self._write_loop, name="figures-writer",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="figures-reader",
                                        daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, job_id: int, parts: list[Any], result: Future) -> None:
        with self._lock:
            if not self.alive or self._finished:
                result.set_exception(EOFError("the drawing process has ended"))
                return
            self._pending[job_id] = result
        self._outbox.put(parts)

    def _write_loop(self) -> None:
        while True:
            parts = self._outbox.get()
            if parts is None:
                break
            try:
                _write_all(self._to, parts)
            except OSError:
                self._dead()
                break
        try:
            self.proc.stdin.close()  # end-of-file: the helper exits
        except OSError:
            pass

    def _read_loop(self) -> None:
        try:
            while True:
                message = _read_message(self._from)
                if message is None:
                    break
                meta, arrays = message
                with self._lock:
                    future = self._pending.pop(int(meta["job"]), None)
                if future is not None:
                    future.set_result((meta, arrays))
        except (OSError, EOFError, FormatError, KeyError, TypeError, ValueError):
            pass
        self._dead()

    def _dead(self) -> None:
        with self._lock:
            self.alive = False
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(EOFError("the drawing process has ended"))

    def finish(self) -> None:
        """End-of-file to the helper once what was sent is written (it then exits)."""
        if not self._finished:
            self._finished = True
            self._outbox.put(None)

    def close(self, timeout: float = 5.0) -> None:
        """End-of-file to the helper, wait for it to exit (killed after ``timeout``)."""
        self.finish()
        self._writer.join(timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)
        self._dead()
        try:
            self.proc.stdout.close()
        except OSError:
            pass


_LOCK = threading.Lock()
_HELPER: _Helper | None = None
_JOB: _Job | None = None
_NEXT_ID = 0
_LAST: list[str | None] = [None]


def start() -> bool:
    """Start the drawing process unless one is running; True when one is."""
    global _HELPER
    with _LOCK:
        if (_HELPER is not None and _HELPER.alive and not _HELPER._finished
                and _HELPER.proc.poll() is None):
            return True
        if _HELPER is not None:
            _HELPER.close()
        try:
            _HELPER = _Helper()
        except (OSError, ValueError, subprocess.SubprocessError):
            _HELPER = None
            return False
        return True


def running() -> bool:
    """Whether a drawing process is there to take figures."""
    helper = _HELPER
    return helper is not None and helper.alive


def helper_pid() -> int | None:
    """The drawing process's pid (None: none running)."""
    helper = _HELPER
    return helper.pid if helper is not None and helper.alive else None


def submit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
           resp: Any) -> bool:
    """Send every figure of this fit (:func:`~src.output.plots.figure_specs`) to the
    drawing process, to be taken by :func:`collect`; False when no process runs."""
    global _JOB, _NEXT_ID
    from src.inference.classification import as_posteriors

    from . import figure_specs

    helper = _HELPER
    if helper is None or not helper.alive:
        return False
    post = as_posteriors(resp)
    params = {k: np.array(v, copy=True) for k, v in params.items()}
    specs = figure_specs(model, data, params, post)
    figures, arrays = [], {}
    for i, (name, spec) in enumerate(specs.items()):
        figures.append([name, spec.kind, spec.meta, list(spec.arrays)])
        arrays.update({f"{i}/{key}": value for key, value in spec.arrays.items()})
    with _LOCK:
        _NEXT_ID += 1
        job_id = _NEXT_ID
        job = _Job(model, data, params, post, specs, Future())
        _JOB = job
    helper.send(job_id, pack({"job": job_id, "figures": figures}, arrays), job.result)
    return True


def submit_fit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
               chunk_size: int) -> bool:
    """:func:`submit` with the posteriors computed here, as ``result_output`` computes them
    (:func:`~src.inference.classification.posteriors_of` with ``chunk_size``)."""
    from src.inference.classification import posteriors_of

    if not running():
        return False
    try:
        params = {k: np.asarray(v) for k, v in params.items()}
        return submit(model, data, params, posteriors_of(model, data, params, int(chunk_size)))
    except Exception:   # result_output meets the same error in its own phase
        return False


def _same_params(a: Mapping[str, Any], b: Mapping[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), b[k]) for k in b)


def _same_posteriors(a: Any, b: Any) -> bool:
    def same(x: Any, y: Any) -> bool:
        return (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    return same(a.tau, b.tau) and same(a.inverse, b.inverse) and same(a.counts, b.counts)


def collect(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
            resp: Any) -> dict[str, Plot] | None:
    """The figures :func:`submit` sent for this fit, ``{file name: Plot}`` (waiting for the
    drawing process if need be; any figure it could not draw is drawn here), or None when
    none were sent for these arguments.  A job is taken once."""
    global _JOB
    from src.inference.classification import as_posteriors

    job = _JOB
    if job is None or model is not job.model or data is not job.data:
        return None
    post = as_posteriors(resp)
    if not (_same_params(params, job.params) and _same_posteriors(post, job.post)):
        return None
    with _LOCK:
        if _JOB is job:
            _JOB = None
    try:
        meta, arrays = job.result.result(timeout=WAIT_SECONDS)
        done = {name: (w, h, error) for name, w, h, error in meta["figures"]}
    except Exception:   # the helper died, hung or answered nonsense: draw here
        meta, arrays, done = {}, {}, {}
    helper = _HELPER
    if helper is not None:
        helper.finish()  # its work is done: it exits while the run writes the files
    out: dict[str, Plot] = {}
    source = "helper"
    for name, spec in job.specs.items():
        w, h, error = done.get(name, (0, 0, "not drawn"))
        png = arrays.get(name)
        if error is None and png is not None:
            out[name] = Plot(png.tobytes(), spec.caption, int(w), int(h))
        else:
            from . import _preloaded

            _preloaded()
            out[name] = render(spec)
            source = "here"
    _LAST[0] = source
    return out


def last_source() -> str | None:
    """Where the figures :func:`src.output.plots.figures` returned last were drawn:
    ``"helper"`` (every one by the drawing process), ``"here"`` (at least one in this
    process) or None (none yet)."""
    return _LAST[0]


def stop() -> None:
    """End the drawing process (if any) and forget a job not collected."""
    global _HELPER, _JOB
    with _LOCK:
        helper, _HELPER, _JOB = _HELPER, None, None
    if helper is not None:
        helper.close()


atexit.register(stop)


# ---------------------------------------------------------------------- server
def _warm_up() -> None:
    """Draw a small figure (fonts loaded, caches filled) so the first real one is quick."""
    from .posterior import posterior_spec

    render(posterior_spec(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])))


def serve(parent: int) -> None:
    """The helper's main loop (``python -c``, started by :class:`_Helper`): requests from
    stdin, PNGs to stdout, until end-of-file."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from src.parallel.lifetime import set_parent_death_signal

    set_parent_death_signal()
    if os.getppid() != parent:  # the run ended before the signal was armed
        return
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not enter the replies
    try:
        from . import _import_matplotlib

        _import_matplotlib()
        _warm_up()
    except Exception:   # matplotlib missing or broken: every figure is drawn in the run
        pass
    while True:
        message = _read_message(0)
        if message is None:
            os._exit(0)  # nothing to flush (replies go out with os.write): no slow teardown
        meta, arrays = message
        figures, pngs = [], {}
        for i, (name, kind, spec_meta, keys) in enumerate(meta["figures"]):
            try:
                spec = Spec(kind, spec_meta, {key: arrays[f"{i}/{key}"] for key in keys})
                plot = render(spec)
                pngs[name] = np.frombuffer(plot.png, dtype=np.uint8)
                figures.append([name, plot.width, plot.height, None])
            except Exception as exc:   # reported; the run draws this one itself
                figures.append([name, 0, 0, f"{type(exc).__name__}: {exc}"])
        _write_all(out, pack({"job": meta["job"], "figures": figures}, pngs))
