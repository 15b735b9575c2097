"""The drawing process: figures and ``posteriors.csv`` made on another core while the run
goes on.

A run with plots (one K) starts a helper process as it begins (:func:`start`, from
:mod:`src.pipeline.tracked`); the helper imports matplotlib and Arrow and draws a small
figure to warm its fonts while the run reads the data and fits the model.  As soon as the
estimate is known the run computes the posteriors and sends the helper what the result files
need from them (:func:`submit_fit`): every figure's :class:`~.plots.spec.Spec` and, when the
rows are named by numbers, the arrays of ``posteriors.csv`` (raw arrays, a few megabytes).
The helper writes the CSV and draws the figures while the run computes the standard errors
and the first result files; :func:`src.output.plots.figures` and
:func:`src.output.posteriors.posteriors_csv` take its bytes (:func:`collect_figures`,
:func:`collect_posteriors_csv`) when asked for the same thing: the same model and data
objects, an equal estimate and equal posteriors (and for the CSV equal row names, id column
and chunk size).  Otherwise, or when the helper is not there (it could not start, died, or
answered with an error), they are made in the run's process from the same arrays: the bytes
are the same either way (the functions are deterministic and see the same arrays; tested).

Why a process and not a thread: matplotlib's import (0.3-0.45 s) and drawing (0.1-0.3 s a
figure) hold the GIL; in a thread they delay a fit that runs Python code (LCA's EM on answer
patterns), in a process they run beside it on the second core.

Lifetime: the helper never outlives the run.  It reads its requests from a pipe and exits at
end-of-file (sent once everything was collected, or by :func:`stop` as the run leaves, or
because the run is gone); on Linux it also asks the kernel for SIGKILL when the thread that
started it ends (``PR_SET_PDEATHSIG``, as the project's worker processes do,
:mod:`src.parallel.lifetime`), so a SIGKILLed run leaves no helper behind.  It ignores SIGINT
(Ctrl-C is the run's to handle).  Nothing the helper receives is code: messages are
:func:`~.plots.spec.pack` bytes (JSON and numeric arrays).
"""

from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .plots.layout import Plot
from .plots.spec import HEAD_SIZE, FormatError, Spec, message_size, pack, render, unpack

__all__ = ["start", "running", "submit", "submit_fit", "collect_figures",
           "collect_posteriors_csv", "stop", "helper_pid", "last_source", "wait_ready", "serve"]

#: the project's root (the folder holding ``src``), put on the helper's path
_ROOT = str(Path(__file__).resolve().parents[2])
#: how long a collect waits for the helper before making the item itself
WAIT_SECONDS = 600.0
#: the item name of posteriors.csv in a job (figures are named by their file)
CSV_ITEM = "posteriors.csv"
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
    """What was sent for one fit: the inputs it is valid for and one future per item."""

    model: Any
    data: Any
    params: dict[str, np.ndarray]
    post: Any
    specs: dict[str, Spec]
    csv: dict[str, Any] | None
    results: dict[str, Future] = field(default_factory=dict)

    def matches(self, model: Any, data: Any, params: Mapping[str, Any], post: Any) -> bool:
        return (model is self.model and data is self.data and _same_params(params, self.params)
                and _same_posteriors(post, self.post))


class _Helper:
    """The helper process and the two threads that write to and read from it."""

    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from src.output.background import serve; serve(int(sys.argv[2]))")
        self.proc = subprocess.Popen([sys.executable, "-c", code, _ROOT, str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=0,
                                     close_fds=True)
        self.pid = self.proc.pid
        self._to = self.proc.stdin.fileno()
        self._from = self.proc.stdout.fileno()
        self._outbox: queue.Queue = queue.Queue()
        self._pending: dict[tuple[int, str], Future] = {}
        self._lock = threading.Lock()
        self.alive = True
        self.finished = False
        #: the helper said it has matplotlib and Arrow imported and nothing to do: only
        #: then is posteriors.csv sent (a helper still starting up draws the figures first)
        self.csv_ready = False
        self.ready_event = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="figures-writer",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="figures-reader",
                                        daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, job_id: int, parts: list[Any], results: Mapping[str, Future]) -> None:
        with self._lock:
            if not self.alive or self.finished:
                for future in results.values():
                    future.set_exception(EOFError("the drawing process has ended"))
                return
            self._pending.update({(job_id, name): f for name, f in results.items()})
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
                if meta.get("ready"):
                    self.csv_ready = True
                    self.ready_event.set()
                    continue
                with self._lock:
                    future = self._pending.pop((int(meta["job"]), str(meta["item"])), None)
                if future is not None:
                    future.set_result((meta, arrays.get("bytes")))
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
        if not self.finished:
            self.finished = True
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
_LAST: dict[str, str] = {}


def start() -> bool:
    """Start the drawing process unless one is running; True when one is."""
    global _HELPER
    with _LOCK:
        helper = _HELPER
        if (helper is not None and helper.alive and not helper.finished
                and helper.proc.poll() is None):
            return True
        if helper is not None:
            helper.close()
        try:
            _HELPER = _Helper()
        except (OSError, ValueError, subprocess.SubprocessError):
            _HELPER = None
            return False
        return True


def running() -> bool:
    """Whether a drawing process is there to take work."""
    helper = _HELPER
    return helper is not None and helper.alive and not helper.finished


def helper_pid() -> int | None:
    """The drawing process's pid (None: none running)."""
    helper = _HELPER
    return helper.pid if helper is not None and helper.alive else None


def wait_ready(timeout: float | None = None) -> bool:
    """Wait until the drawing process is done starting up (matplotlib and Arrow imported);
    False when none runs or it is not ready within ``timeout`` seconds."""
    helper = _HELPER
    return helper is not None and helper.ready_event.wait(timeout) and helper.alive


def last_source(what: str = "figures") -> str | None:
    """Where the last figures :func:`src.output.plots.figures` returned were drawn
    (``what="posteriors.csv"``: where the last ``posteriors.csv`` of
    :func:`src.output.posteriors.posteriors_csv` given posteriors was written):
    ``"helper"`` (the drawing process; every figure), ``"here"`` (this process; at least
    one figure) or None (none yet)."""
    return _LAST.get(what)


def submit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any], resp: Any,
           *, row_labels: np.ndarray | None = None, id_column: str | None = None,
           chunk_size: int = 4096) -> bool:
    """Send every figure of this fit (:func:`~src.output.plots.figure_specs`) and, with
    numeric ``row_labels`` (one per row) and a helper done starting up, ``posteriors.csv``
    to the drawing process, to be taken by the collect functions; False when no process
    runs."""
    global _JOB, _NEXT_ID
    from src.inference.classification import as_posteriors

    from .plots import figure_specs

    helper = _HELPER
    if helper is None or not helper.alive or helper.finished:
        return False
    post = as_posteriors(resp)
    params = {k: np.array(v, copy=True) for k, v in params.items()}
    specs = figure_specs(model, data, params, post)
    items, arrays = [], {}
    csv = None
    if row_labels is not None and helper.csv_ready:
        labels = np.asarray(row_labels)
        if labels.dtype.kind in "iufb" and labels.ndim == 1 and labels.shape[0] == post.n_rows:
            csv = {"labels": labels, "id_column": id_column, "chunk_size": int(chunk_size)}
            parts = {"labels": labels, "tau": post.tau}
            if post.inverse is not None:
                parts["inverse"] = post.inverse
            items.append([CSV_ITEM, "posteriors.csv",
                          {"id_column": id_column, "chunk_size": int(chunk_size)}, list(parts)])
            arrays.update({f"{CSV_ITEM}/{k}": v for k, v in parts.items()})
    for name, spec in specs.items():
        items.append([name, spec.kind, spec.meta, list(spec.arrays)])
        arrays.update({f"{name}/{key}": value for key, value in spec.arrays.items()})
    with _LOCK:
        _NEXT_ID += 1
        job_id = _NEXT_ID
        job = _Job(model, data, params, post, specs, csv)
        job.results = {item[0]: Future() for item in items}
        _JOB = job
    helper.send(job_id, pack({"job": job_id, "items": items}, arrays), job.results)
    return True


def submit_fit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
               chunk_size: int, *, row_labels: np.ndarray | None = None,
               id_column: str | None = None) -> bool:
    """:func:`submit` with the posteriors computed here, as ``result_output`` computes them
    (:func:`~src.inference.classification.posteriors_of` with ``chunk_size``)."""
    if not running():
        return False
    try:
        from src.inference.classification import posteriors_of

        params = {k: np.asarray(v) for k, v in params.items()}
        post = posteriors_of(model, data, params, int(chunk_size))
        return submit(model, data, params, post, row_labels=row_labels, id_column=id_column,
                      chunk_size=chunk_size)
    except Exception:   # result_output meets the same error in its own phase
        return False


def _same_params(a: Mapping[str, Any], b: Mapping[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), b[k]) for k in b)


def _same_posteriors(a: Any, b: Any) -> bool:
    def same(x: Any, y: Any) -> bool:
        return (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    return same(a.tau, b.tau) and same(a.inverse, b.inverse) and same(a.counts, b.counts)


def _take(job: _Job, name: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """The helper's answer for item ``name`` of ``job`` (waiting for it), or ({}, None) when
    it has none; the helper is told to finish once every item was taken."""
    future = job.results.pop(name, None)
    answer: tuple[dict[str, Any], np.ndarray | None] = ({}, None)
    if future is not None:
        try:
            answer = future.result(timeout=WAIT_SECONDS)
        except Exception:   # the helper died, hung or answered nonsense
            answer = ({}, None)
    if not job.results:
        global _JOB
        with _LOCK:
            if _JOB is job:
                _JOB = None
        helper = _HELPER
        if helper is not None:
            helper.finish()  # its work is done: it exits while the run writes the files
    return answer


def _job_for(model: Any, data: Any, params: Mapping[str, Any], resp: Any) -> tuple[_Job, Any] | None:
    from src.inference.classification import as_posteriors

    job = _JOB
    if job is None or model is not job.model or data is not job.data:
        return None
    post = as_posteriors(resp)
    return (job, post) if job.matches(model, data, params, post) else None


def collect_figures(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                    resp: Any) -> dict[str, Plot] | None:
    """The figures :func:`submit` sent for this fit, ``{file name: Plot}`` (waiting for the
    drawing process if need be; a figure it could not draw is drawn here), or None when none
    were sent for these arguments.  Taken once."""
    found = _job_for(model, data, params, resp)
    if found is None or not any(name in found[0].results for name in found[0].specs):
        return None
    job = found[0]
    out: dict[str, Plot] = {}
    source = "helper"
    for name, spec in job.specs.items():
        meta, png = _take(job, name)
        if meta.get("error") is None and png is not None:
            out[name] = Plot(png.tobytes(), spec.caption, int(meta["width"]), int(meta["height"]))
        else:
            from .plots import _preloaded

            _preloaded()
            out[name] = render(spec)
            source = "here"
    _LAST["figures"] = source
    return out


def collect_posteriors_csv(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                           labels: np.ndarray, id_column: str | None, chunk_size: int,
                           resp: Any) -> bytes | None:
    """The bytes of ``posteriors.csv`` :func:`submit` sent for this fit with these row names,
    id column and chunk size (waiting if need be), or None when not sent or not made there."""
    found = _job_for(model, data, params, resp)
    if found is None or found[0].csv is None or CSV_ITEM not in found[0].results:
        return None
    job = found[0]
    csv = job.csv
    if not (csv["id_column"] == id_column and csv["chunk_size"] == int(chunk_size)
            and np.asarray(labels).dtype == csv["labels"].dtype
            and np.array_equal(labels, csv["labels"])):
        return None
    meta, body = _take(job, CSV_ITEM)
    if meta.get("error") is not None or body is None:
        return None
    _LAST[CSV_ITEM] = "helper"
    return body.tobytes()


def stop() -> None:
    """End the drawing process (if any) and forget a job not collected."""
    global _HELPER, _JOB
    with _LOCK:
        helper, _HELPER, _JOB = _HELPER, None, None
    if helper is not None:
        helper.close()


atexit.register(stop)


# ---------------------------------------------------------------------- server
def _waiting(fd: int) -> bool:
    """Whether a request is waiting on ``fd`` (then the helper does no more warming up)."""
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _start_up_to(out: int) -> None:
    """Import matplotlib, draw a small figure (fonts loaded, caches filled), import Arrow
    and write a small CSV, each step only while no request waits; then tell the run that
    posteriors.csv may be sent too."""
    from .plots import _import_matplotlib

    _import_matplotlib()
    if _waiting(0):
        return
    render(Spec("posterior", {"n": 3, "mean": 0.7},   # (not posterior_spec: no model imports)
                {"tau": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])}))
    if _waiting(0):
        return
    from .posteriors import csv_of_posteriors

    csv_of_posteriors(np.arange(2), np.array([[0.5, 0.5], [0.25, 0.75]]), None)
    if not _waiting(0):
        _write_all(out, pack({"ready": True}, {}))


def _make(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
          ) -> tuple[dict[str, Any], bytes]:
    if kind == "posteriors.csv":
        from .posteriors import csv_of_posteriors

        body = csv_of_posteriors(arrays["labels"], arrays["tau"], arrays.get("inverse"),
                                 meta["id_column"], int(meta["chunk_size"]))
        return {}, body
    plot = render(Spec(kind, dict(meta), dict(arrays)))
    return {"width": plot.width, "height": plot.height}, plot.png


def serve(parent: int) -> None:
    """The helper's main loop (``python -c``, started by :class:`_Helper`): jobs from stdin,
    one answer per item to stdout as it is made, until end-of-file."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from src.parallel.lifetime import set_parent_death_signal

    set_parent_death_signal()
    if os.getppid() != parent:  # the run ended before the signal was armed
        return
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not enter the answers
    try:
        _start_up_to(out)
    except Exception:   # matplotlib or Arrow missing or broken: the run makes everything
        pass
    while True:
        message = _read_message(0)
        if message is None:
            os._exit(0)  # nothing to flush (answers go out with os.write): no slow teardown
        meta, arrays = message
        for name, kind, item_meta, keys in meta["items"]:
            try:
                info, body = _make(kind, item_meta, {k: arrays[f"{name}/{k}"] for k in keys})
                answer = {"job": meta["job"], "item": name, "error": None, **info}
                blobs = {"bytes": np.frombuffer(body, dtype=np.uint8)}
            except Exception as exc:   # reported; the run makes this one itself
                answer = {"job": meta["job"], "item": name, "error": f"{type(exc).__name__}: {exc}"}
                blobs = {}
            _write_all(out, pack(answer, blobs))
