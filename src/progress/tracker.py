"""Progress tracking and resume for long estimation runs.

* :class:`EstimationProgressTracker` keeps ``{progress_dir}/{task_name}_progress.json``:
  which phases are done, their results, the last checkpoint inside the running phase,
  and the fingerprint of what each result depends on.
* :func:`estimation_progress` is the context manager that starts a tracker, saves on
  exit, exception, SIGINT or SIGTERM, and releases the task's lock.
* :func:`resume_estimation_phase` runs a phase, or skips it when it has completed and
  hands back its saved result.

The tracker knows no model: phases hand it JSON values, numpy arrays and DataFrames
(stored beside the JSON as ``.npz``/Parquet, never pickled).  Writes are atomic
(temporary file, fsync, rename) and the previous good file is kept as ``.bak``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..utils.errors import FingerprintMismatch, ProgressCorrupt
from ..utils.messages import register, t
from . import faults
from .artifacts import ArtifactError, Unstorable, decode, encode
from .atomic import atomic_write_bytes, fsync_dir, replace_with_link
from .document import SCHEMA_VERSION, Damaged, FutureSchema, parse, serialise
from .fingerprint import describe_changes, diff_fingerprints
from .lock import TaskLock
from .paths import task_paths, validate_task_name
from .save_policy import IntervalPolicy
from .signals import Terminated, WriteGuard, install_handlers, restore_handlers

__all__ = ["EstimationProgressTracker", "estimation_progress", "resume_estimation_phase",
           "Terminated", "SCHEMA_VERSION", "validate_task_name", "task_paths"]

log = logging.getLogger(__name__)

register({
    "progress.skip": {"en": "Phase '{phase}' already completed, skipping",
                      "zh": "阶段 '{phase}' 已完成，跳过执行"},
    "progress.resumed": {"en": "Resuming task '{task}' from {path} (completed: {done})",
                         "zh": "从 {path} 恢复任务 '{task}'（已完成：{done}）"},
    "progress.damaged_backup_used": {
        "en": "Warning: progress file {path} {reason}; it was kept as {kept} and the run resumes from its backup {backup}.",
        "zh": "警告：进度文件 {path} {reason}；已保留为 {kept}，并从备份 {backup} 继续运行。"},
    "progress.missing_backup_used": {
        "en": "Warning: progress file {path} is missing; the run resumes from its backup {backup}.",
        "zh": "警告：进度文件 {path} 不存在；从备份 {backup} 继续运行。"},
    "progress.damaged": {
        "en": "Progress file {path} {reason} and no usable backup exists; rerun with --restart to start over (the damaged file is kept) or remove it with 'python scripts/manage_progress.py clean --task {task}'.",
        "zh": "进度文件 {path} {reason}，且没有可用的备份；请使用 --restart 重新开始（损坏的文件会被保留），或用 'python scripts/manage_progress.py clean --task {task}' 删除。"},
    "progress.future": {
        "en": "Progress file {path} was written by a newer version of this pipeline (schema {found}, this version reads {ours}); upgrade, or rerun with --restart to start over.",
        "zh": "进度文件 {path} 由更新版本的程序写入（格式版本 {found}，本版本支持 {ours}）；请升级，或使用 --restart 重新开始。"},
    "progress.mismatch": {
        "en": "The saved progress of task '{task}' was computed with different inputs ({changes}), which affects {phases}; rerun with --recompute-changed to keep the phases that still match, or --restart to start over.",
        "zh": "任务 '{task}' 已保存的进度基于不同的输入（{changes}），影响阶段 {phases}；请使用 --recompute-changed 保留仍然匹配的阶段，或使用 --restart 重新开始。"},
    "progress.recompute": {"en": "Inputs changed ({changes}); recomputing {phases}",
                           "zh": "输入已改变（{changes}）；重新计算 {phases}"},
    "progress.unstorable": {
        "en": "Warning: the result of phase '{phase}' contains {what}, which cannot be stored without pickling; the phase will run again on resume.",
        "zh": "警告：阶段 '{phase}' 的结果包含{what}，无法在不使用 pickle 的情况下保存；恢复时将重新执行该阶段。"},
    "reason.artifact": {"en": "refers to a missing or damaged artifact ({detail})",
                        "zh": "引用的附属文件缺失或损坏（{detail}）"},
    "reason.future": {"en": "was written by a newer version of this pipeline (schema {found}, this version reads {ours})",
                      "zh": "由更新版本的程序写入（格式版本 {found}，本版本支持 {ours}）"},
})


class EstimationProgressTracker:
    """Tracks the phases of one task and saves them to ``{progress_dir}/{task_name}_progress.json``.

    Also the :class:`~src.utils.checkpointing.Checkpointer` of the running phase:
    ``checkpoint(state)`` after each unit of work, ``resume_state()`` at its start.
    With ``enabled=False`` nothing is read or written (the traditional mode).
    """

    def __init__(self, task_name: str = "main_estimation", save_interval: float = 10,
                 progress_dir: str | os.PathLike = "progress", *, enabled: bool = True,
                 fingerprints: Mapping[str, Mapping[str, Any]] | None = None,
                 restart: bool = False, recompute_changed: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        self.task_name = validate_task_name(task_name)
        self.enabled = enabled
        self.progress_dir = Path(progress_dir)
        self.paths = task_paths(self.progress_dir, task_name)
        self.policy = IntervalPolicy(save_interval)
        self.fingerprints = {k: dict(v) for k, v in (fingerprints or {}).items()}
        self.restart = restart
        self.recompute_changed = recompute_changed
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
        self._checkpoint_state: dict | None = None    # latest state, maybe unsaved
        self._checkpoint_phase: str | None = None
        self._checkpoint_count = 0
        self._dirty = False
        self._writes_in_phase = 0
        self._lock = TaskLock(self.task_name, self.paths["lock"], self.paths["owner"])
        self._refs_current: set[str] = set()
        self._refs_previous: set[str] = set()
        self.guard = WriteGuard()   # signals wait until a write under way has finished

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "EstimationProgressTracker":
        """Lock the task, load (or discard) earlier progress, check fingerprints."""
        if not self.enabled:
            self.status = "running"
            return self
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._lock.write_owner()  # at once: a second run refused from now on can name us
            if self.restart:
                self._set_aside_unusable()
                self._remove_task_files(keep_lock=True, keep_damaged=True)
            else:
                self._load_existing()
                self._check_fingerprints()
                if self.completed_phases or self._checkpoint_state is not None:
                    self.notify(t("progress.resumed", task=self.task_name,
                                  path=self.paths["progress"],
                                  done=", ".join(self.completed_phases) or "-"))
            self.status = "running"
            self.end_reason = None
            self._write()
        except BaseException:
            self._lock.release()
            raise
        return self

    def finish(self, status: str, reason: str | None = None) -> None:
        """Record how the run ended, write, and release the lock."""
        if not self.enabled:
            return
        try:
            self.status = status
            self.end_reason = reason
            self._write()
        finally:
            self._lock.release()

    # ------------------------------------------------------------- phases
    def is_completed(self, phase: str) -> bool:
        return phase in self.completed_phases and phase in self.phase_results

    def get_phase_result(self, phase: str) -> Any:
        return self.phase_results[phase]

    def begin_phase(self, phase: str) -> None:
        """Mark ``phase`` current and write (a phase boundary always writes)."""
        if self.current_phase != phase:
            self.step_count += 1
        self.current_phase = phase
        self._writes_in_phase = 0
        if self._checkpoint_phase != phase:
            self._checkpoint_state, self._checkpoint_phase = None, None
        log.debug("phase %s started", phase)
        self._write()

    def complete_phase(self, phase: str, result: Any) -> None:
        """Store ``phase``'s result and fingerprint, drop its checkpoint, write."""
        self.phase_results[phase] = result
        if phase not in self.completed_phases:
            self.completed_phases.append(phase)
        if phase in self.fingerprints:
            self.phase_fingerprints[phase] = self.fingerprints[phase]
        self._stored_results.pop(phase, None)
        if self._checkpoint_phase == phase:
            self._checkpoint_state, self._checkpoint_phase = None, None
        log.debug("phase %s completed", phase)
        self._write()

    def invalidate_phase(self, phase: str) -> None:
        """Forget a completed phase so that it runs again (e.g. its output files are gone)."""
        if phase in self.completed_phases:
            self.completed_phases.remove(phase)
        for store in (self.phase_results, self._stored_results, self.phase_fingerprints):
            store.pop(phase, None)

    # --------------------------------------------------- Checkpointer protocol
    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpointed state of the current phase (None when fresh)."""
        if self._checkpoint_phase is not None and self._checkpoint_phase == self.current_phase:
            return self._checkpoint_state
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        """Record ``state`` after one unit of work; write when the save policy says so."""
        self._checkpoint_state = state
        self._checkpoint_phase = self.current_phase
        self._checkpoint_count += 1
        self._dirty = True
        if not self.enabled:
            return False
        if force or self.policy.should_save(time.monotonic()):
            self._write()
            return True
        return False

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
        if not self.enabled:
            return
        with self.guard:
            self.last_update = time.time()
            doc, refs = self._document()
            data = serialise(doc)
            main, backup = self.paths["progress"], self.paths["backup"]
            if main.exists():
                replace_with_link(main, backup)
            atomic_write_bytes(main, data)
            self._refs_previous, self._refs_current = self._refs_current, refs
            self._collect_garbage()
            self._dirty = False
            self._writes_in_phase += 1
            self.policy.saved(time.monotonic())
            log.debug("progress written: phase=%s writes_in_phase=%d bytes=%d",
                      self.current_phase, self._writes_in_phase, len(data))
        self.guard.raise_pending()  # a signal arrived during the write: act on it now
        faults.after_write(self.current_phase, self._writes_in_phase)

    def _collect_garbage(self) -> None:
        folder = self.paths["artifacts"]
        if not folder.is_dir():
            return
        keep = self._refs_current | self._refs_previous
        for f in folder.iterdir():
            if f.name not in keep:
                try:
                    f.unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------ loading
    def _load_existing(self) -> None:
        main, backup = self.paths["progress"], self.paths["backup"]
        if not main.exists() and not backup.exists():
            return
        try:
            doc = self._read_valid(main)
        except (Damaged, FutureSchema) as problem:
            # A newer version's file is unusable here just like a damaged one: fall back on
            # a good backup (the newer file is kept aside), else refuse naming the version.
            future = problem if isinstance(problem, FutureSchema) else None
            reason = (t("reason.future", found=future.found, ours=SCHEMA_VERSION) if future
                      else problem.reason)
            try:
                doc = self._read_valid(backup)
            except FutureSchema as exc:
                path, found = (main, future.found) if future else (backup, exc.found)
                raise ProgressCorrupt(t("progress.future", path=path, found=found,
                                        ours=SCHEMA_VERSION)) from None
            except Damaged:
                if future:
                    raise ProgressCorrupt(t("progress.future", path=main, found=future.found,
                                            ours=SCHEMA_VERSION)) from None
                raise ProgressCorrupt(t("progress.damaged", path=main, reason=reason,
                                        task=self.task_name)) from None
            kept = self.paths["damaged"]
            if main.exists():
                os.replace(main, kept)
                fsync_dir(main.parent)
                self.notify(t("progress.damaged_backup_used", path=main, reason=reason,
                              kept=kept, backup=backup))
            else:
                self.notify(t("progress.missing_backup_used", path=main, backup=backup))
        self._adopt(doc)

    def _set_aside_unusable(self) -> None:
        """On --restart, keep an unreadable progress file as ``.damaged`` (as promised)."""
        main = self.paths["progress"]
        if not main.exists():
            return
        try:
            self._read_valid(main)
        except (Damaged, FutureSchema):
            os.replace(main, self.paths["damaged"])
            fsync_dir(main.parent)

    def _read_valid(self, path: Path) -> dict:
        if not path.exists():
            raise Damaged(t("reason.missing"))
        doc = parse(path.read_bytes(), self.task_name)
        folder = self.paths["artifacts"]
        try:
            doc["_decoded"] = {p: decode(r, folder) for p, r in doc["phase_results"].items()
                               if "value" in r}
            ck = doc.get("checkpoint")
            doc["_checkpoint"] = decode(ck["state"], folder) if ck else None
        except (ArtifactError, KeyError, TypeError, ValueError, OSError) as exc:
            raise Damaged(t("reason.artifact", detail=exc)) from None
        return doc

    def _adopt(self, doc: dict) -> None:
        self.current_phase = doc["current_phase"]
        self.phase_results = dict(doc["_decoded"])
        self.completed_phases = [p for p in doc["completed_phases"] if p in self.phase_results]
        self._stored_results = {p: doc["phase_results"][p] for p in self.completed_phases}
        self.phase_fingerprints = dict(doc.get("phase_fingerprints") or {})
        ck = doc.get("checkpoint")
        if ck and doc["_checkpoint"] is not None:
            self._checkpoint_state, self._checkpoint_phase = doc["_checkpoint"], ck["phase"]
            self._checkpoint_count = int(ck.get("count", 0))
            self._checkpoint_fingerprint = ck.get("fingerprint")
        self.start_time = float(doc["start_time"])
        self.step_count = int(doc["step_count"])
        self.resume_count = int(doc.get("resume_count", 0)) + 1
        self.is_resumed = True
        refs = set()
        for r in doc["phase_results"].values():
            refs.update(f["file"] for f in r.get("files", []))
        if ck:
            refs.update(f["file"] for f in ck["state"].get("files", []))
        self._refs_current = refs

    def _check_fingerprints(self) -> None:
        """Refuse (or, with recompute_changed, drop) results whose inputs changed."""
        if not self.fingerprints:
            return
        changes: dict[str, tuple] = {}
        affected: list[str] = []
        stored = dict(self.phase_fingerprints)
        if self._checkpoint_phase and getattr(self, "_checkpoint_fingerprint", None) is not None:
            stored.setdefault(self._checkpoint_phase, self._checkpoint_fingerprint)
        for phase, new in self.fingerprints.items():  # in phase order
            old = stored.get(phase)
            if old is None:
                continue
            diff = diff_fingerprints(old, new)
            if diff:
                changes.update(diff)
                affected.append(phase)
        if not affected:
            return
        text = describe_changes(changes)
        if not self.recompute_changed:
            raise FingerprintMismatch(t("progress.mismatch", task=self.task_name, changes=text,
                                        phases=", ".join(affected)))
        self.notify(t("progress.recompute", changes=text, phases=", ".join(affected)))
        for phase in affected:
            if phase in self.completed_phases:
                self.completed_phases.remove(phase)
            self.phase_results.pop(phase, None)
            self._stored_results.pop(phase, None)
            self.phase_fingerprints.pop(phase, None)
            if self._checkpoint_phase == phase:
                self._checkpoint_state, self._checkpoint_phase = None, None

    # ------------------------------------------------------------- files
    def _remove_task_files(self, *, keep_lock: bool, keep_damaged: bool = False) -> None:
        for key, path in self.paths.items():
            if keep_lock and key in ("lock", "owner"):
                continue
            if keep_damaged and key == "damaged":
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()


@contextmanager
def estimation_progress(task_name: str = "main_estimation", save_interval: float = 10,
                        progress_dir: str | os.PathLike = "progress", **options: Any
                        ) -> Iterator[EstimationProgressTracker]:
    """Track a run: resume earlier progress, save on exit, exception, SIGINT and SIGTERM.

    Keyword options go to :class:`EstimationProgressTracker` (``enabled``,
    ``fingerprints``, ``restart``, ``recompute_changed``, ``notify``).  A SIGTERM is turned
    into :class:`Terminated` (a BaseException) so the state is written before the
    process ends; the caller maps it to exit 143 (and KeyboardInterrupt to 130).
    """
    tracker = EstimationProgressTracker(task_name, save_interval, progress_dir, **options)
    previous = install_handlers(tracker.guard)
    try:
        tracker.start()
        try:
            yield tracker
        except KeyboardInterrupt:
            tracker.finish("interrupted", "SIGINT")
            raise
        except Terminated:
            tracker.finish("interrupted", "SIGTERM")
            raise
        except BaseException as exc:
            tracker.finish("failed", f"{type(exc).__name__}: {exc}"[:500])
            raise
        else:
            tracker.finish("completed", None)
    finally:
        restore_handlers(previous)


def resume_estimation_phase(tracker: EstimationProgressTracker, name: str,
                            fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run phase ``name`` as ``fn(*args, **kwargs)``, or return its saved result.

    A completed phase is skipped with the message ``Phase 'name' already completed,
    skipping`` (Chinese: ``阶段 'name' 已完成，跳过执行``).
    """
    if tracker.is_completed(name):
        tracker.notify(t("progress.skip", phase=name))
        log.debug("phase %s skipped (completed)", name)
        return tracker.get_phase_result(name)
    tracker.begin_phase(name)
    result = fn(*args, **kwargs)
    tracker.complete_phase(name, result)
    return result
