"""Figures made in a second process, and ``posteriors.csv`` in a thread, while the run goes
on.

A run with plots (one K) starts a helper process as it begins (:func:`start`, from
:mod:`src.pipeline.tracked`), or adopts the one the script started before its own imports
(:mod:`.launch`); the helper imports matplotlib at once and, whenever it has nothing else to
do, draws a small figure (fonts loaded; also after a first stage, not once it finished a
figure), then says it is ready.  The run sends it:

1. once the data are read, the first stage of every figure (:func:`submit_data`: column and
   item names, the data columns; :mod:`.plots.spec`), which the helper draws while the model
   is fitted: canvas, axes, histograms of the data, labels, empty point and ellipse artists;
2. once the estimate is known, the second stage (:func:`submit_fit`: the posteriors computed
   here, then the estimate's arrays of every figure); the helper finishes the figures while
   the run computes the standard errors.

At that same point (:func:`submit`, given the rows' names) a thread of the run's process
begins ``posteriors.csv`` (:func:`~.posteriors.csv_of_posteriors` of those posteriors, the
function the run would call): Arrow's CSV writer releases the GIL while it formats, so the
file is made beside the standard errors instead of in ``result_output``.  Any kind of row
name goes to the thread (nothing crosses a pipe), the ``--id`` column's text included.
``submit_fit(..., figures=False)`` starts the thread alone (no drawing process needed).

:func:`src.output.plots.figures` and :func:`src.output.posteriors.posteriors_csv` then take the
helper's PNGs and the thread's bytes (:func:`collect_figures`, :func:`collect_posteriors_csv`,
each waiting for what is not done yet) when asked for the same thing -- the same model and
data objects, an equal estimate and equal posteriors (and for the CSV equal row names, id
column and chunk size); :func:`posteriors_for` gives the posteriors computed for it.

Whatever is not delivered (the helper could not start, died, answered with an error, or was
not sent that stage; the thread raised) is made in the run's process from the same arrays:
the bytes are the same either way (the drawing functions are deterministic and see the same
arrays, the two stages make the same artists in the same order; the thread runs the run's own
function on the same arrays; tested).  A thread that raised is not trusted: the run writes
the file itself, and meets the same error then if it was not a passing one.

Why a process for the figures and not a thread: matplotlib's import (0.3-0.45 s) and drawing
(0.1-0.3 s a figure) hold the GIL; in a thread they delay a fit that runs Python code (LCA's
EM on answer patterns), in a process they run beside it on the second core.  The helper
collects no garbage (a full collection took 0.1-0.2 s in the middle of a figure; it lives one
run).  The CSV needs no process: its text is made by Arrow's C++ without the GIL; what
holds the GIL (the rows' Arrow table, and with it every import) is done by :func:`submit` in
the calling thread first (a thread needing the GIL waits up to 5 ms each time while the run
holds it; and an import in a thread beside the run's own could deadlock importlib's locks).

The helper's side (its loop, idle work and the pipe framing) is :mod:`.helper`.

Lifetime: the helper never outlives the run.  It reads its requests from a pipe and exits at
end-of-file (sent once every figure was collected, or by :func:`stop` as the run leaves, or
because the run is gone; a helper still busy then is killed after 0.5 s); on Linux it also
asks the kernel for SIGKILL when the thread that started it ends (``PR_SET_PDEATHSIG``, as the
project's worker processes do, :mod:`src.parallel.lifetime`), so a SIGKILLed run leaves no
helper behind.  It ignores SIGINT (Ctrl-C is the run's to handle).  Nothing the helper
receives is code: messages are :func:`~.plots.spec.pack` bytes (JSON and numeric arrays).
:func:`stop` also tells a CSV thread not collected to stop (before its next 65,536 rows) and
waits for it briefly; it is a daemon thread that holds nothing but the file's bytes.
"""

from __future__ import annotations

import atexit
import queue
import signal
import subprocess
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import launch
from .helper import read_message, write_all
from .plots.layout import Plot
from .plots.spec import FormatError, Spec, pack, render

__all__ = ["start", "running", "submit_data", "submit", "submit_fit", "collect_figures", "Figures",
           "collect_posteriors_csv", "posteriors_for", "stop", "helper_pid", "last_source",
           "wait_ready"]

#: how long a collect waits for the helper or the thread before making the item itself
WAIT_SECONDS = 600.0
#: the name of posteriors.csv for :func:`last_source`
CSV_ITEM = "posteriors.csv"
#: how long :func:`stop` waits for a CSV thread it told to stop
STOP_SECONDS = 0.5


def _items(specs: Mapping[str, Spec], part: str) -> tuple[list[Any], dict[str, np.ndarray]]:
    """A message's items (``[name, kind, meta, array keys]``) and arrays (``name/key``) for
    ``part`` of each spec: ``"first"`` stage, ``"second"`` stage or ``"all"``."""
    items, arrays = [], {}
    for name, spec in specs.items():
        meta, arrs = ((spec.meta, spec.arrays) if part == "all"
                      else spec.first() if part == "first" else spec.second())
        items.append([name, spec.kind, meta, list(arrs)])
        arrays.update({f"{name}/{key}": value for key, value in arrs.items()})
    return items, arrays


# ---------------------------------------------------------------------- client
class _CsvThread:
    """``posteriors.csv`` of one fit, made as :func:`~.posteriors.csv_of_posteriors` makes it
    (the run's own function, in its two halves): the rows' Arrow table here
    (:func:`~.posteriors.csv_table`: the part that holds the GIL, a few ms at 1e5 rows, and
    every import it needs done in this thread), the text in a daemon thread
    (:func:`~.posteriors.write_csv_table`: Arrow's CSV writer, one call without the GIL per
    2**20 rows, into a buffer of the text's size bound).  A thread that needed the GIL often
    would wait up to the interpreter's switch interval (5 ms) each time while the run holds
    it (measured: 0.15 s instead of 0.035 s for 1e5 rows when it made its own table).  It
    runs at the run's priority: a lower one (nice 10) was no faster on a quiet machine and
    would starve it on a busy one while the run waits for it."""

    def __init__(self, labels: np.ndarray, post: Any, id_column: str | None,
                 chunk_size: int) -> None:
        from . import posteriors

        self.labels, self.id_column, self.chunk_size = labels, id_column, int(chunk_size)
        self.body: bytes | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        prepared = posteriors.csv_table(labels, post.tau, post.inverse, id_column)
        self._thread = threading.Thread(
            target=self._write, args=(posteriors.write_csv_table, prepared),
            name="posteriors-csv", daemon=True)
        self._thread.start()

    def _write(self, write: Any, prepared: Any) -> None:
        try:
            self.body = write(prepared, self._stop.is_set)
        except BaseException as exc:   # (Cancelled too) the run writes the file itself
            self.error = exc

    def matches(self, labels: Any, id_column: str | None, chunk_size: int) -> bool:
        """Whether the file asked for is this one: the same row names (the same array, or
        one of the same type, shape and values), id column and chunk size."""
        if self.id_column != id_column or self.chunk_size != int(chunk_size):
            return False
        if labels is self.labels:
            return True
        labels = np.asarray(labels)
        if labels.dtype != self.labels.dtype or labels.shape != self.labels.shape:
            return False
        try:
            return bool(np.array_equal(labels, self.labels,
                                       equal_nan=labels.dtype.kind in "fc"))
        except Exception:   # values that cannot be compared: written again
            return False

    def result(self, timeout: float | None = None) -> bytes | None:
        """The file's bytes, waiting up to ``timeout`` seconds for the thread; None when it
        raised or is not done by then."""
        self._thread.join(timeout)
        return None if self._thread.is_alive() or self.error is not None else self.body

    def stop(self, timeout: float = 0.0) -> None:
        """Tell the thread to stop before its next block of rows; wait up to ``timeout``
        seconds for it (0: not at all)."""
        self._stop.set()
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()


@dataclass
class _Job:
    """What was handed off for one fit: the inputs it is valid for, one future per figure
    sent to the drawing process, and the CSV thread."""

    job_id: int
    model: Any
    data: Any
    params: dict[str, np.ndarray]
    post: Any
    specs: dict[str, Spec]
    csv: _CsvThread | None
    chunk_size: int = 0
    results: dict[str, Future] = field(default_factory=dict)
    figures_collected: bool = False
    csv_taken: bool = False
    hurried: bool = False   # the drawing process was told the run is done computing (hurry)

    def matches(self, model: Any, data: Any, params: Mapping[str, Any], post: Any) -> bool:
        return (model is self.model and data is self.data and _same_params(params, self.params)
                and _same_posteriors(post, self.post))


@dataclass
class _Prepared:
    """The first stages sent for a model and data (job ``job_id``)."""

    job_id: int
    model: Any
    data: Any
    specs: dict[str, Spec]


class _Helper:
    """The helper process and the two threads that write to and read from it."""

    def __init__(self) -> None:
        # the process the script started before its imports, else a new one
        self.proc = launch.take_early() or launch.spawn()
        self.pid = self.proc.pid
        self._to = self.proc.stdin.fileno()
        self._from = self.proc.stdout.fileno()
        self._outbox: queue.Queue = queue.Queue()
        self._pending: dict[tuple[int, str], Future] = {}
        self._lock = threading.Lock()
        self.alive = True
        self.finished = False
        self.ready = threading.Event()   # matplotlib imported, a figure drawn, nothing waiting
        self._writer = threading.Thread(target=self._write_loop, name="figures-writer",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="figures-reader",
                                        daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, parts: list[Any], job_id: int | None = None,
             results: Mapping[str, Future] | None = None) -> bool:
        """Queue a message; ``results``: the futures of its items (job ``job_id``)."""
        with self._lock:
            if not self.alive or self.finished:
                for future in (results or {}).values():
                    future.set_exception(EOFError("the drawing process has ended"))
                return False
            self._pending.update({(job_id, name): f for name, f in (results or {}).items()})
        self._outbox.put(parts)
        return True

    def _write_loop(self) -> None:
        while True:
            parts = self._outbox.get()
            if parts is None:
                break
            try:
                write_all(self._to, parts)
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
                message = read_message(self._from)
                if message is None:
                    break
                meta, arrays = message
                if meta.get("ready"):
                    self.ready.set()
                    continue
                key = (int(meta["job"]), str(meta["item"]))
                with self._lock:
                    future = self._pending.pop(key, None)
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

    def close(self, timeout: float = 0.5) -> None:
        """End-of-file to the helper and wait for it to exit; killed after ``timeout`` (still
        busy with what nobody will collect: it holds nothing worth a clean exit)."""
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
_PREPARED: _Prepared | None = None
_NEXT_ID = 0
_LAST: dict[str, str] = {}


def _next_id() -> int:
    global _NEXT_ID
    with _LOCK:
        _NEXT_ID += 1
        return _NEXT_ID


def start() -> bool:
    """Start the drawing process unless one is running; True when one is."""
    global _HELPER, _PREPARED
    with _LOCK:
        helper = _HELPER
        if (helper is not None and helper.alive and not helper.finished
                and helper.proc.poll() is None):
            return True
        if helper is not None:
            helper.close()
        _PREPARED = None
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
    """Wait until the drawing process is done starting up (matplotlib imported, fonts loaded
    by a first figure); False when none runs or it is not ready within ``timeout`` seconds."""
    helper = _HELPER
    return helper is not None and helper.ready.wait(timeout) and helper.alive


def last_source(what: str = "figures") -> str | None:
    """Where the last figures :func:`src.output.plots.figures` returned were drawn:
    ``"helper"`` (the drawing process; every figure), ``"here"`` (this process; at least
    one figure) or None (none yet).  ``what="posteriors.csv"``: where the last
    ``posteriors.csv`` of :func:`src.output.posteriors.posteriors_csv` given posteriors was
    written: ``"thread"`` (the thread :func:`submit` started), ``"here"`` (by the call
    itself) or None."""
    return _LAST.get(what)


def submit_data(model: Any, data: Mapping[str, np.ndarray]) -> bool:
    """Send the first stage of every figure of ``model`` on ``data``
    (:func:`~src.output.plots.figure_data_specs`), drawn while the model is fitted; False
    when no process runs (or the specs cannot be made: the second stage then sends all)."""
    global _PREPARED
    from .plots import figure_data_specs

    helper = _HELPER
    if helper is None or not helper.alive or helper.finished:
        return False
    try:
        specs = figure_data_specs(model, data)
    except Exception:   # result_output meets the same error in its own phase
        return False
    job_id = _next_id()
    items, arrays = _items(specs, "first")
    if not helper.send(pack({"op": "prepare", "job": job_id, "items": items}, arrays)):
        return False
    with _LOCK:
        _PREPARED = _Prepared(job_id, model, data, specs)
    return True


def submit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any], resp: Any,
           *, row_labels: Any = None, id_column: str | None = None,
           chunk_size: int = 4096, figures: bool = True) -> bool:
    """Hand off what can be made of this fit before ``result_output`` asks for it: with
    ``row_labels`` (one name per row, any type), ``posteriors.csv`` to a thread started at
    once; with ``figures`` and a drawing process running, every figure
    (:func:`~src.output.plots.figure_specs`: the second stage of those :func:`submit_data`
    sent for the same model and data, both stages of the others).  The collect functions
    take them.  True when anything was handed off."""
    global _JOB
    from src.inference.classification import as_posteriors

    post = as_posteriors(resp)
    params = {k: np.array(v, copy=True) for k, v in params.items()}
    helper = _HELPER
    specs: dict[str, Spec] = {}
    items, arrays = [], {}
    if figures and helper is not None and helper.alive and not helper.finished:
        from .plots import figure_specs

        try:
            specs = figure_specs(model, data, params, post)
        except Exception:   # result_output meets the same error in its own phase
            specs = {}
        prepared = _PREPARED
        base = (prepared.job_id if prepared is not None and prepared.model is model
                and prepared.data is data else None)
        for name, spec in specs.items():
            first = base is not None and name in prepared.specs \
                and prepared.specs[name].kind == spec.kind
            more, more_arrays = _items({name: spec}, "second" if first else "all")
            items += [item + [base if first else None] for item in more]
            arrays.update(more_arrays)
    labels = None
    if row_labels is not None:
        labels = row_labels if isinstance(row_labels, np.ndarray) else np.asarray(row_labels)
        if labels.ndim != 1 or labels.shape[0] != post.n_rows:
            labels = None
    if labels is None and not items:
        return False
    job = _Job(_next_id(), model, data, params, post, specs, None, int(chunk_size))
    job.results = {item[0]: Future() for item in items}
    with _LOCK:
        old, _JOB = _JOB, job
    if old is not None and old.csv is not None:
        old.csv.stop()   # (not waited for: it stops before its next block of rows)
    sent = bool(items) and helper.send(   # the figures first: the helper has the most to do
        pack({"op": "finish", "job": job.job_id, "items": items}, arrays),
        job.job_id, job.results)
    if labels is not None:
        try:
            job.csv = _CsvThread(labels, post, id_column, chunk_size)
        except Exception:   # (e.g. Arrow missing) result_output meets it in its own phase
            job.csv = None
    return sent or job.csv is not None


def submit_fit(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
               chunk_size: int, *, row_labels: Any = None, id_column: str | None = None,
               figures: bool = True) -> bool:
    """:func:`submit` with the posteriors computed here, as ``result_output`` computes them
    (:func:`~src.inference.classification.posteriors_of` with ``chunk_size``).  Without a
    drawing process (or with ``figures=False``) only ``posteriors.csv`` is handed off; with
    neither row names nor a drawing process, nothing is done (False)."""
    if row_labels is None and not (figures and running()):
        return False
    try:
        from src.inference.classification import posteriors_of

        params = {k: np.asarray(v) for k, v in params.items()}
        post = posteriors_of(model, data, params, int(chunk_size))
        return submit(model, data, params, post, row_labels=row_labels, id_column=id_column,
                      chunk_size=chunk_size, figures=figures)
    except Exception:   # result_output meets the same error in its own phase
        return False


def posteriors_for(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                   chunk_size: int) -> Any:
    """The posteriors :func:`submit_fit` computed for this fit (the same model and data
    objects, an equal estimate and chunk size), or None: ``result_output`` can take them
    instead of computing them again (an E-step over every row: 20-30 ms at 1e5 rows of a
    Gaussian mixture)."""
    job = _JOB
    if (job is None or model is not job.model or data is not job.data
            or job.chunk_size != int(chunk_size) or not _same_params(params, job.params)):
        return None
    return job.post


def _same_params(a: Mapping[str, Any], b: Mapping[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), b[k]) for k in b)


def _same_posteriors(a: Any, b: Any) -> bool:
    def same(x: Any, y: Any) -> bool:
        return (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    return same(a.tau, b.tau) and same(a.inverse, b.inverse) and same(a.counts, b.counts)


def _settled(job: _Job) -> None:
    """Once every figure of ``job`` was taken, let the helper exit; once the CSV was taken
    too (or there is none), forget the job."""
    global _JOB, _PREPARED
    if job.results:
        return
    helper = _HELPER
    if job.specs and helper is not None:
        helper.finish()  # its work is done: it exits while the run writes the files
    if job.csv is not None and not job.csv_taken:
        return
    with _LOCK:
        if _JOB is job:
            _JOB = None
            _PREPARED = None


def _take(job: _Job, name: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """The helper's answer for item ``name`` of ``job`` (waiting for it), or ({}, None) when
    it has none."""
    future = job.results.pop(name, None)
    answer: tuple[dict[str, Any], np.ndarray | None] = ({}, None)
    if future is not None:
        if not future.done():
            hurry(job)
        try:
            answer = future.result(timeout=WAIT_SECONDS)
        except Exception:   # the helper died, hung or answered nonsense
            answer = ({}, None)
    _settled(job)
    return answer


def hurry(job: _Job | None = None) -> None:
    """Tell the drawing process that the run is done computing -- it writes its results, or
    waits for a figure of ``job`` (default: the last submitted) -- once per job: its fork,
    which waits while the run computes (``helper._finish_all``), starts drawing."""
    job = _JOB if job is None else job
    helper = _HELPER
    go = getattr(signal, "SIGUSR1", None)
    if job is None or job.hurried or helper is None or go is None or not helper.alive:
        return
    job.hurried = True
    try:   # (send_signal polls first: a process that ended, even unreaped, is not signalled)
        helper.proc.send_signal(go)
    except OSError:   # (it has just ended: its answers are errors, the run draws)
        pass


def _job_for(model: Any, data: Any, params: Mapping[str, Any], resp: Any) -> _Job | None:
    from src.inference.classification import as_posteriors

    job = _JOB
    if job is None or model is not job.model or data is not job.data:
        return None
    return job if job.matches(model, data, params, as_posteriors(resp)) else None


class Figures(Mapping[str, Plot]):
    """The figures of one job, ``{file name: Plot}`` in order, each taken from the drawing
    process the first time it is looked up (waiting for it then; a figure it could not draw
    is drawn here), so the run can go on with what needs no figure meanwhile."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self._got: dict[str, Plot] = {}

    def __getitem__(self, name: str) -> Plot:
        got = self._got.get(name)
        if got is None:
            spec = self._job.specs[name]
            meta, png = _take(self._job, name)
            if meta.get("error") is None and png is not None:
                got = Plot(png.tobytes(), spec.caption, int(meta["width"]), int(meta["height"]))
            else:
                from .plots import _preloaded

                _preloaded()
                got = render(spec)
                _LAST["figures"] = "here"
            self._got[name] = got
        return got

    def __iter__(self) -> Any:
        return iter(self._job.specs)

    def __len__(self) -> int:
        return len(self._job.specs)

    def __repr__(self) -> str:
        return f"Figures({list(self._job.specs)})"


def collect_figures(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                    resp: Any) -> Figures | None:
    """The figures :func:`submit` sent for this fit as a :class:`Figures` mapping (each
    waited for when first looked up), or None when none were sent for these arguments.
    Taken once."""
    job = _job_for(model, data, params, resp)
    if job is None or job.figures_collected or not any(name in job.results for name in job.specs):
        return None
    job.figures_collected = True
    _LAST["figures"] = "helper"
    return Figures(job)


def collect_posteriors_csv(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, Any],
                           labels: np.ndarray, id_column: str | None, chunk_size: int,
                           resp: Any) -> bytes | None:
    """The bytes of ``posteriors.csv`` the thread :func:`submit` started for this fit with
    these row names, id column and chunk size (waiting for it), or None: none was started
    for these arguments, it was taken already, or the thread raised (the caller writes the
    file itself).  Taken once."""
    job = _job_for(model, data, params, resp)
    if job is None or job.csv is None or job.csv_taken:
        return None
    if not job.csv.matches(labels, id_column, chunk_size):
        return None
    job.csv_taken = True
    body = job.csv.result(WAIT_SECONDS)
    _settled(job)
    if body is None:
        return None
    _LAST[CSV_ITEM] = "thread"
    return body


def stop() -> None:
    """End the drawing process (if any), stop a CSV thread not collected, and forget what
    was handed off."""
    global _HELPER, _JOB, _PREPARED
    with _LOCK:
        helper, job = _HELPER, _JOB
        _HELPER, _JOB, _PREPARED = None, None, None
    if job is not None and job.csv is not None:
        job.csv.stop(STOP_SECONDS)
    if helper is not None:
        helper.close()
    launch.discard_early()   # started by the script for a run that draws nothing here


atexit.register(stop)


