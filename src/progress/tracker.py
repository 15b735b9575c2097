"""Progress tracking and resume for long estimation runs.

* :class:`EstimationProgressTracker` keeps ``{progress_dir}/{task_name}_progress.json``: the
  phases done, their results and fingerprints, the last checkpoint of the running phase.
* :func:`estimation_progress` starts a tracker, saves on exit, exception, SIGINT, SIGTERM
  or SIGHUP, and releases the task's lock.
* :func:`resume_estimation_phase` runs a phase, or skips it when completed (its result back).

The tracker knows no model: phases hand it JSON values, numpy arrays and DataFrames
(stored beside the JSON as ``.npz``/Parquet, never pickled).  Writes are atomic
(temporary file, fsync, rename) and the previous good file is kept as ``.bak``.

Nothing read back is trusted: what a run resumes from is what ``recovery.py`` can recover
(a damaged part costs only what depends on it; :meth:`~EstimationProgressTracker.stale_result`
offers what ``--recompute-changed`` dropped).  Tracking never costs the result: an unwritable
progress folder gives one warning.  A phase name outside ``phases=`` is a ValueError.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..utils.checkpointing import CheckpointInvalid
from ..utils.messages import register, t
from . import faults
from .artifacts import Unstorable, collect_garbage, encode
from .atomic import atomic_write_bytes, remove_stray_temporaries, replace_with_link
from .document import SCHEMA_VERSION, serialise
from .lock import TaskLock
from .paths import check_task_paths, task_paths, validate_phase_name, validate_task_name
from .recovery import Recovered, SavedProgress
from .save_policy import IntervalPolicy
from .signals import (Terminated, WriteGuard, exception_for, install_handlers,
                      restore_handlers)

__all__ = ["EstimationProgressTracker", "estimation_progress", "resume_estimation_phase",
           "Terminated", "SCHEMA_VERSION", "validate_task_name", "task_paths"]

log = logging.getLogger(__name__)

register({
    "progress.skip": {"en": "Phase '{phase}' already completed, skipping",
                      "zh": "阶段 '{phase}' 已完成，跳过执行"},
    "progress.resumed": {"en": "Resuming task '{task}' from {path} (completed: {done})",
                         "zh": "从 {path} 恢复任务 '{task}'（已完成：{done}）"},
    "progress.unstorable": {
        "en": "Warning: the result of phase '{phase}' contains {what}, which cannot be stored without pickling; the phase will run again on resume.",
        "zh": "警告：阶段 '{phase}' 的结果包含{what}，无法在不使用 pickle 的情况下保存；恢复时将重新执行该阶段。"},
    "progress.checkpoint_invalid": {
        "en": "Warning: the saved checkpoint of phase '{phase}' does not fit this run ({detail}); it is dropped (the progress file is kept as {kept}) and the phase starts again from its beginning.",
        "zh": "警告：阶段 '{phase}' 保存的检查点与本次运行不符（{detail}）；已丢弃该检查点（进度文件保留为 {kept}），此阶段将从头开始。"},
    "progress.unwritable": {
        "en": "Warning: the progress folder {dir} cannot be written ({error}); the run goes on without saving its progress, so an interruption cannot be resumed.",
        "zh": "警告：无法写入进度文件夹 {dir}（{error}）；运行将继续但不保存进度，中断后无法恢复。"},
    "progress.end_unsaved": {
        "en": "Warning: the end of the run could not be recorded in {path} ({error}).",
        "zh": "警告：无法在 {path} 中记录运行的结束（{error}）。"},
})


class EstimationProgressTracker:
    """Tracks the phases of one task and saves them to ``{progress_dir}/{task_name}_progress.json``.

    Also the :class:`~src.utils.checkpointing.Checkpointer` of the running phase:
    ``checkpoint(state)`` after each unit of work, ``resume_state()`` at its start.
    With ``enabled=False`` nothing is read or written (the traditional mode); a progress
    folder that cannot be written turns the tracker into that mode after one warning.
    ``phases``: the phase names this run knows (a saved file naming another is damaged,
    beginning or completing another is a ValueError); None accepts any safe name.
    """

    def __init__(self, task_name: str = "main_estimation", save_interval: float = 10,
                 progress_dir: str | os.PathLike = "progress", *, enabled: bool = True,
                 fingerprints: Mapping[str, Mapping[str, Any]] | None = None,
                 restart: bool = False, recompute_changed: bool = False,
                 notify: Callable[[str], None] | None = None,
                 phases: Sequence[str] | None = None,
                 rederivable: Sequence[str] = ()) -> None:
        self.task_name = validate_task_name(task_name)
        self.enabled = enabled
        self.progress_dir = Path(progress_dir)
        self.paths = task_paths(self.progress_dir, task_name)
        self.policy = IntervalPolicy(save_interval)
        self.fingerprints = {k: dict(v) for k, v in (fingerprints or {}).items()}
        self.phases = None if phases is None else tuple(validate_phase_name(p) for p in phases)
        self.restart = restart
        self.recompute_changed = recompute_changed
        #: phases redone without --recompute-changed when only their own inputs changed
        self.rederivable = tuple(rederivable)
        self.notify = notify or print
        now = time.time()
        self.current_phase: str | None = None
        self.completed_phases: list[str] = []
        self.phase_results: dict[str, Any] = {}
        self._stored_results: dict[str, dict] = {}   # encoded form of completed results
        self.phase_fingerprints: dict[str, dict] = {}
        self.start_time = now
        self.last_update = now
        self.step_count = 0
        self.is_resumed = False
        self.status = "new"
        self.end_reason: str | None = None
        self.resume_count = 0
        self.source: Path | None = None               # the file progress was resumed from
        self._stale: dict[str, tuple[Any, dict | None]] = {}  # dropped by recompute_changed
        self._checkpoint_state: dict | None = None    # latest state, maybe unsaved
        self._checkpoint_phase: str | None = None
        self._checkpoint_count = 0
        self._checkpoint_fingerprint: dict | None = None
        self._dirty = False
        self._writes_in_phase = 0
        self._writable = enabled                      # False: nothing more is written
        self._started = False                         # True once this run owns the file
        self._lock = TaskLock(self.task_name, self.paths["lock"], self.paths["owner"])
        self._refs_current: set[str] = set()
        self._refs_previous: set[str] = set()
        self.guard = WriteGuard()   # signals wait until a write under way has finished

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "EstimationProgressTracker":
        """Lock the task, load (or discard) earlier progress, check fingerprints.

        A progress folder that cannot be created or written gives one warning and the
        run goes on untracked; symbolic links among the task's files are refused
        (ProgressPathUnsafe, exit 3) before anything is opened through them.
        """
        self.status = "running"
        if not self.enabled:
            return self
        check_task_paths(self.paths)
        try:
            self._probe_folder()
            self._lock.acquire()
        except OSError as exc:
            self._degrade(exc)
            return self
        try:
            try:
                self._lock.write_owner()  # at once: a second run refused from now on can name us
                # what a write killed half-way left (ours alone: we hold the task's lock)
                remove_stray_temporaries(self.progress_dir, [
                    self.paths[k].name for k in ("progress", "backup", "owner", "damaged")])
                saved = SavedProgress(self.paths, self.task_name, self.phases, self.notify)
                if self.restart:
                    saved.discard()
                else:
                    recovered = saved.recover(self.fingerprints, self.recompute_changed,
                                              self.rederivable)
                    if recovered is not None:
                        self._adopt(recovered)
                    if self.completed_phases or self._checkpoint_state is not None:
                        self.notify(t("progress.resumed", task=self.task_name, path=self.source,
                                      done=", ".join(self.completed_phases) or "-"))
            except OSError as exc:
                self._degrade(exc)
            self.end_reason = None
            self._started = True
            self._write()
        except BaseException:
            if not self._started:
                self._lock.release()
            raise
        return self

    def finish(self, status: str, reason: str | None = None) -> None:
        """Record how the run ended, write, and release the lock.

        From here on signals are ignored (the end is being recorded); a final write that
        fails is reported in one warning and never hides the exception that ended the run.
        """
        self.guard.closing = True
        self.status = status
        self.end_reason = reason
        try:
            if self._started and self._writable:
                try:
                    with self.guard:
                        self._save()
                except Exception as exc:  # e.g. a checkpoint state that cannot be stored
                    log.debug("final write failed", exc_info=True)
                    self.notify(t("progress.end_unsaved", path=self.paths["progress"],
                                  error=f"{type(exc).__name__}: {exc}"))
        finally:
            self._lock.release()

    # ------------------------------------------------------------- phases
    def is_completed(self, phase: str) -> bool:
        return phase in self.completed_phases and phase in self.phase_results

    def get_phase_result(self, phase: str) -> Any:
        return self.phase_results[phase]

    def stale_result(self, phase: str) -> tuple[Any, dict | None] | None:
        """``(result, fingerprint)`` of ``phase`` as completed before ``--recompute-changed``
        dropped it for changed inputs (None: not dropped), for reusing its unchanged parts."""
        return self._stale.get(phase)

    def check_phase(self, phase: str) -> str:
        """``phase``, when it is a safe name and (given ``phases``) a known one.

        An unknown name is a programming error (ValueError) and is refused before anything
        is written: stored, it would make the next run find its own progress file damaged.
        """
        validate_phase_name(phase)
        if self.phases is not None and phase not in self.phases:
            raise ValueError(f"phase {phase!r} is not one of the phases this tracker was given "
                             f"({', '.join(self.phases)}); add it to src.config.PHASES "
                             f"(the phases= of estimation_progress) before using it")
        return phase

    def begin_phase(self, phase: str) -> None:
        """Mark ``phase`` current and write (a phase boundary always writes)."""
        self.check_phase(phase)
        with self.guard:
            if self.current_phase != phase:
                self.step_count += 1
            self.current_phase = phase
            self._writes_in_phase = 0
            if self._checkpoint_phase != phase:
                self._checkpoint_state, self._checkpoint_phase = None, None
            log.debug("phase %s started", phase)
            written = self._save()
        self._after_write(written)

    def complete_phase(self, phase: str, result: Any) -> None:
        """Store ``phase``'s result and fingerprint, drop its checkpoint, write."""
        self.check_phase(phase)
        with self.guard:
            self.phase_results[phase] = result
            if phase not in self.completed_phases:
                self.completed_phases.append(phase)
            if phase in self.fingerprints:
                self.phase_fingerprints[phase] = self.fingerprints[phase]
            self._stored_results.pop(phase, None)
            if self._checkpoint_phase == phase:
                self._checkpoint_state, self._checkpoint_phase = None, None
            log.debug("phase %s completed", phase)
            written = self._save()
        self._after_write(written)

    def invalidate_phase(self, phase: str) -> None:
        """Forget a completed phase so that it runs again (e.g. its output files are gone)."""
        with self.guard:
            if phase in self.completed_phases:
                self.completed_phases.remove(phase)
            for store in (self.phase_results, self._stored_results, self.phase_fingerprints):
                store.pop(phase, None)
        self.guard.raise_pending()

    def drop_checkpoint(self, detail: str) -> None:
        """A consumer found the resumed state unusable (CheckpointInvalid): warn once, keep
        the progress file that held it as ``.damaged``, forget it, and write."""
        phase = self._checkpoint_phase or self.current_phase
        kept = self.paths["damaged"]
        if self._writable and self._started:
            try:
                replace_with_link(self.paths["progress"], kept)
            except OSError:
                pass
        self.notify(t("progress.checkpoint_invalid", phase=phase, detail=detail, kept=kept))
        with self.guard:
            self._checkpoint_state, self._checkpoint_phase = None, None
            self._checkpoint_fingerprint = None
            written = self._save()
        self._after_write(written)

    # --------------------------------------------------- Checkpointer protocol
    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpointed state of the current phase (None when fresh)."""
        if self._checkpoint_phase is not None and self._checkpoint_phase == self.current_phase:
            return self._checkpoint_state
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        """Record ``state`` after one unit of work; write when the save policy says so."""
        with self.guard:
            self._checkpoint_state = state
            self._checkpoint_phase = self.current_phase
            self._checkpoint_count += 1
            self._dirty = True
            written = False
            if self._writable and (force or self.policy.should_save(time.monotonic())):
                written = self._save()
        self._after_write(written)
        return written

    def save(self) -> None:
        """Write now (used at exit)."""
        self._write()

    # ------------------------------------------------------------ writing
    def _fingerprint_for(self, phase: str | None) -> dict | None:
        return self.fingerprints.get(phase) if phase else None

    def _document(self) -> tuple[dict, set[str]]:
        refs: set[str] = set()
        stored: dict[str, Any] = {}
        folder = self.paths["artifacts"]
        for phase in self.completed_phases:
            if phase not in self._stored_results:
                try:
                    enc, files = encode(self.phase_results[phase], folder, f"result-{phase}")
                except Unstorable as exc:
                    self.notify(t("progress.unstorable", phase=phase, what=str(exc)))
                    enc = {"unstorable": str(exc)}
                self._stored_results[phase] = enc
            enc = self._stored_results[phase]
            stored[phase] = enc
            refs.update(f["file"] for f in enc.get("files", []))
        checkpoint = None
        if self._checkpoint_state is not None and self._checkpoint_phase is not None:
            enc, files = encode(self._checkpoint_state, folder, f"checkpoint-{self._checkpoint_phase}")
            refs.update(f["file"] for f in files)
            checkpoint = {"phase": self._checkpoint_phase, "count": self._checkpoint_count,
                          "state": enc, "fingerprint": self._fingerprint_for(self._checkpoint_phase)}
        doc = {
            "schema_version": SCHEMA_VERSION,
            "task_name": self.task_name,
            "current_phase": self.current_phase,
            "completed_phases": list(self.completed_phases),
            "phase_results": stored,
            "phase_fingerprints": self.phase_fingerprints,
            "checkpoint": checkpoint,
            "start_time": self.start_time,
            "last_update": self.last_update,
            "step_count": self.step_count,
            "is_resumed": self.is_resumed,
            "resume_count": self.resume_count,
            "status": self.status,
            "end_reason": self.end_reason,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        return doc, refs

    def _write(self) -> None:
        with self.guard:
            written = self._save()
        self._after_write(written)

    def _save(self) -> bool:
        """Write the progress file now (call inside ``with self.guard``); True when written.

        An OSError (folder read-only, disk full, folder gone) turns tracking off after one
        warning: the file on disk stays the last good one.
        """
        if not (self._writable and self._started):
            return False
        try:
            self.last_update = time.time()
            doc, refs = self._document()
            data = serialise(doc)
            main, backup = self.paths["progress"], self.paths["backup"]
            if main.exists():
                replace_with_link(main, backup)
            atomic_write_bytes(main, data)
        except OSError as exc:
            self._degrade(exc)
            return False
        self._refs_previous, self._refs_current = self._refs_current, refs
        try:
            collect_garbage(self.paths["artifacts"], self._refs_current | self._refs_previous)
        except OSError:  # e.g. the folder was replaced by a link: delete nothing
            log.debug("artifact garbage collection skipped", exc_info=True)
        self._dirty = False
        self._writes_in_phase += 1
        self.policy.saved(time.monotonic())
        log.debug("progress written: phase=%s writes_in_phase=%d bytes=%d",
                  self.current_phase, self._writes_in_phase, len(data))
        return True

    def _after_write(self, written: bool) -> None:
        self.guard.raise_pending()  # a signal arrived during the write: act on it now
        if written:
            faults.after_write(self.current_phase, self._writes_in_phase)

    def _degrade(self, exc: OSError) -> None:
        """Stop writing for the rest of the run; say so once."""
        if self._writable:
            self._writable = False
            log.debug("progress tracking off", exc_info=True)
            self.notify(t("progress.unwritable", dir=self.progress_dir,
                          error=exc.strerror or type(exc).__name__))

    def _probe_folder(self) -> None:
        """Create the progress folder and a file in it (removed at once): OSError when the
        folder cannot be written, before anything else is tried there."""
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        probe = self.progress_dir / f".tmp-{self.task_name}.probe.{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.close(fd)
        os.unlink(probe)

    def _adopt(self, rec: Recovered) -> None:
        """Continue from the progress :class:`SavedProgress` recovered: one more resume."""
        self.source = rec.source
        self.current_phase, self.phase_results = rec.current_phase, rec.phase_results
        self.completed_phases, self._stored_results = rec.completed_phases, rec.stored_results
        self.phase_fingerprints, self._stale = rec.phase_fingerprints, rec.stale
        self._checkpoint_state, self._checkpoint_phase = rec.checkpoint_state, rec.checkpoint_phase
        self._checkpoint_count = rec.checkpoint_count
        self._checkpoint_fingerprint = rec.checkpoint_fingerprint
        self.start_time, self.step_count = rec.start_time, rec.step_count
        self.resume_count = rec.resume_count + 1
        self.is_resumed = True
        self._refs_current = rec.refs


def _ending(exc: BaseException | None, guard: WriteGuard) -> tuple[str, str | None]:
    """``(status, end_reason)`` of a run that ended with ``exc`` (None: completed)."""
    if guard.signal is not None:
        return "interrupted", guard.signal  # the first signal names the end
    if exc is None:
        return "completed", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "SIGINT"
    if isinstance(exc, Terminated):
        return "interrupted", exc.signame
    return "failed", f"{type(exc).__name__}: {exc}"[:500]


def _end_run(tracker: EstimationProgressTracker, exc: BaseException | None) -> BaseException | None:
    """Record the end of the run; return the exception the run ends with.

    A first signal can still land before ``finish`` marks the run as closing: then the run
    ends by that signal (recorded and raised), whatever was under way.  After the first
    signal every further one is ignored, so this loops at most twice.
    """
    while True:
        try:
            status, reason = _ending(exc, tracker.guard)
            if tracker.guard.signal is not None and not isinstance(exc, (KeyboardInterrupt,
                                                                         Terminated)):
                exc = exception_for(tracker.guard.signal)  # exit code of the first signal
            tracker.finish(status, reason)
            return exc
        except (KeyboardInterrupt, Terminated) as signalled:  # the first signal, just now
            exc = signalled


@contextmanager
def estimation_progress(task_name: str = "main_estimation", save_interval: float = 10,
                        progress_dir: str | os.PathLike = "progress", **options: Any
                        ) -> Iterator[EstimationProgressTracker]:
    """Track a run: resume earlier progress, save on exit, exception, SIGINT, SIGTERM, SIGHUP.

    Keyword options go to :class:`EstimationProgressTracker` (``enabled``,
    ``fingerprints``, ``restart``, ``recompute_changed``, ``notify``, ``phases``,
    ``rederivable``).  SIGTERM
    and SIGHUP become :class:`Terminated` (``exit_code`` 143 / 129, ``signame``) and
    SIGINT ``KeyboardInterrupt`` (130), so the state is written before the process ends.
    The first signal decides the end: later ones are ignored, and after a signal-ended run
    the three signals stay ignored so the process can report its exit code.
    """
    tracker = EstimationProgressTracker(task_name, save_interval, progress_dir, **options)
    previous = install_handlers(tracker.guard)
    try:
        outcome: BaseException | None = None
        try:
            tracker.start()
            yield tracker
        except BaseException as exc:
            outcome = exc
        final = _end_run(tracker, outcome)
        if final is not None:
            if final is outcome:
                raise final
            raise final from outcome
    finally:
        restore_handlers(previous, tracker.guard)


def resume_estimation_phase(tracker: EstimationProgressTracker, name: str,
                            fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run phase ``name`` as ``fn(*args, **kwargs)``, or return its saved result.

    A completed phase is skipped with the message ``Phase 'name' already completed,
    skipping`` (Chinese: ``阶段 'name' 已完成，跳过执行``).  When ``fn`` raises
    :class:`~src.utils.checkpointing.CheckpointInvalid` about the state it resumed from,
    the checkpoint is dropped with one warning and ``fn`` runs again from its beginning.
    A name the tracker was not given in ``phases`` is refused (ValueError) before ``fn`` runs.
    """
    tracker.check_phase(name)
    if tracker.is_completed(name):
        tracker.notify(t("progress.skip", phase=name))
        log.debug("phase %s skipped (completed)", name)
        return tracker.get_phase_result(name)
    tracker.begin_phase(name)
    resumed = tracker.resume_state() is not None
    try:
        result = fn(*args, **kwargs)
    except CheckpointInvalid as exc:
        if not resumed:
            raise
        tracker.drop_checkpoint(str(exc))
        result = fn(*args, **kwargs)
    tracker.complete_phase(name, result)
    return result
