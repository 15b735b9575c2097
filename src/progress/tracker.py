"""Progress tracking and resume for long estimation runs.

* :class:`EstimationProgressTracker` keeps ``{progress_dir}/{task_name}_progress.json``:
  which phases are done, their results, the last checkpoint inside the running phase,
  and the fingerprint of what each result depends on.
* :func:`estimation_progress` is the context manager that starts a tracker, saves on
  exit, exception, SIGINT, SIGTERM or SIGHUP, and releases the task's lock.
* :func:`resume_estimation_phase` runs a phase, or skips it when it has completed and
  hands back its saved result.

The tracker knows no model: phases hand it JSON values, numpy arrays and DataFrames
(stored beside the JSON as ``.npz``/Parquet, never pickled).  Writes are atomic
(temporary file, fsync, rename) and the previous good file is kept as ``.bak``.

Nothing read back is trusted: the document is checked (checksum, then schema), every
artifact by name and hash, and a damaged part costs only what depends on it (a bad
checkpoint: the phase starts again; a bad result: that phase and the later ones run
again), with one warning each and the damaged files kept as ``*.damaged``.  Tracking never
costs the result: when the progress folder cannot be written the run goes on without
checkpoints after one warning.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..utils.checkpointing import CheckpointInvalid
from ..utils.errors import FingerprintMismatch, ProgressCorrupt
from ..utils.messages import register, t
from . import faults
from .artifacts import (ArtifactError, Unstorable, collect_garbage, decode, encode, references,
                        set_aside)
from .atomic import atomic_write_bytes, fsync_dir, replace_with_link
from .document import SCHEMA_VERSION, Damaged, FutureSchema, parse, serialise
from .fingerprint import describe_changes, diff_fingerprints
from .lock import TaskLock
from .paths import check_task_paths, task_paths, validate_phase_name, validate_task_name
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
        "en": "The saved progress of task '{task}' was computed with different inputs ({changes}), which affects {phases}; for a different analysis rerun with --task-name NEW, to redo this one rerun with --restart, or rerun with --recompute-changed to keep the phases that still match.",
        "zh": "任务 '{task}' 已保存的进度基于不同的输入（{changes}），影响阶段 {phases}；若是另一项分析，请使用 --task-name 新名称；若要重做本任务，请使用 --restart；或使用 --recompute-changed 保留仍然匹配的阶段。"},
    "progress.recompute": {"en": "Inputs changed ({changes}); recomputing {phases}",
                           "zh": "输入已改变（{changes}）；重新计算 {phases}"},
    "progress.unstorable": {
        "en": "Warning: the result of phase '{phase}' contains {what}, which cannot be stored without pickling; the phase will run again on resume.",
        "zh": "警告：阶段 '{phase}' 的结果包含{what}，无法在不使用 pickle 的情况下保存；恢复时将重新执行该阶段。"},
    "progress.results_dropped": {
        "en": "Warning: progress file {path}: the saved result of phase '{phase}' {reason}; {phases} will be computed again (damaged artifacts are kept as *.damaged).",
        "zh": "警告：进度文件 {path}：阶段 '{phase}' 保存的结果{reason}；将重新计算 {phases}（损坏的附属文件保留为 *.damaged）。"},
    "progress.checkpoint_dropped": {
        "en": "Warning: progress file {path}: the checkpoint of phase '{phase}' {reason}; it is dropped and the phase starts again from its beginning (completed phases are kept).",
        "zh": "警告：进度文件 {path}：阶段 '{phase}' 的检查点{reason}；已丢弃该检查点，此阶段将从头开始（已完成的阶段保留）。"},
    "progress.checkpoint_invalid": {
        "en": "Warning: the saved checkpoint of phase '{phase}' does not fit this run ({detail}); it is dropped (the progress file is kept as {kept}) and the phase starts again from its beginning.",
        "zh": "警告：阶段 '{phase}' 保存的检查点与本次运行不符（{detail}）；已丢弃该检查点（进度文件保留为 {kept}），此阶段将从头开始。"},
    "progress.unwritable": {
        "en": "Warning: the progress folder {dir} cannot be written ({error}); the run goes on without saving its progress, so an interruption cannot be resumed.",
        "zh": "警告：无法写入进度文件夹 {dir}（{error}）；运行将继续但不保存进度，中断后无法恢复。"},
    "progress.end_unsaved": {
        "en": "Warning: the end of the run could not be recorded in {path} ({error}).",
        "zh": "警告：无法在 {path} 中记录运行的结束（{error}）。"},
    "reason.artifact": {"en": "refers to a missing or damaged artifact ({detail})",
                        "zh": "引用的附属文件缺失或损坏（{detail}）"},
    "reason.future": {"en": "was written by a newer version of this pipeline (schema {found}, this version reads {ours})",
                      "zh": "由更新版本的程序写入（格式版本 {found}，本版本支持 {ours}）"},
})


def _os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass
class _Candidate:
    """One readable progress document (the main file or its backup) and what decoded."""

    key: str                      # "progress" or "backup"
    path: Path
    doc: dict
    results: dict[str, Any] = field(default_factory=dict)   # phase -> decoded result
    bad_results: dict[str, str] = field(default_factory=dict)  # phase -> detail
    checkpoint: Any = None
    bad_checkpoint: str | None = None

    @property
    def sound(self) -> bool:
        return not self.bad_results and self.bad_checkpoint is None

    def kept_phases(self) -> list[str]:
        """Completed phases usable in order: up to the first whose result is bad."""
        kept = []
        for phase in self.doc["completed_phases"]:
            if phase in self.bad_results:
                break
            kept.append(phase)
        return kept


class EstimationProgressTracker:
    """Tracks the phases of one task and saves them to ``{progress_dir}/{task_name}_progress.json``.

    Also the :class:`~src.utils.checkpointing.Checkpointer` of the running phase:
    ``checkpoint(state)`` after each unit of work, ``resume_state()`` at its start.
    With ``enabled=False`` nothing is read or written (the traditional mode); a progress
    folder that cannot be written turns the tracker into that mode after one warning.
    ``phases``: the phase names this run knows (a saved file naming another is damaged);
    None accepts any safe name.
    """

    def __init__(self, task_name: str = "main_estimation", save_interval: float = 10,
                 progress_dir: str | os.PathLike = "progress", *, enabled: bool = True,
                 fingerprints: Mapping[str, Mapping[str, Any]] | None = None,
                 restart: bool = False, recompute_changed: bool = False,
                 notify: Callable[[str], None] | None = None,
                 phases: Sequence[str] | None = None) -> None:
        self.task_name = validate_task_name(task_name)
        self.enabled = enabled
        self.progress_dir = Path(progress_dir)
        self.paths = task_paths(self.progress_dir, task_name)
        self.policy = IntervalPolicy(save_interval)
        self.fingerprints = {k: dict(v) for k, v in (fingerprints or {}).items()}
        self.phases = None if phases is None else tuple(validate_phase_name(p) for p in phases)
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
        self.source: Path | None = None               # the file progress was resumed from
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
                if self.restart:
                    self._set_aside_unusable()
                    self._remove_task_files()
                else:
                    self._load_existing()
                    self._check_fingerprints()
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

    def begin_phase(self, phase: str) -> None:
        """Mark ``phase`` current and write (a phase boundary always writes)."""
        validate_phase_name(phase)
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
        validate_phase_name(phase)
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
            self.notify(t("progress.unwritable", dir=self.progress_dir, error=_os_error(exc)))

    def _probe_folder(self) -> None:
        """Create the progress folder and a file in it (removed at once): OSError when the
        folder cannot be written, before anything else is tried there."""
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        probe = self.progress_dir / f".tmp-{self.task_name}.probe.{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.close(fd)
        os.unlink(probe)

    # ------------------------------------------------------------ loading
    def _parse_file(self, path: Path) -> dict:
        """The checked document in ``path`` (Damaged / FutureSchema), artifacts not read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise Damaged(t("reason.missing")) from None
        except OSError as exc:
            raise Damaged(t("reason.unreadable", detail=_os_error(exc))) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Damaged(t("reason.shape"))
            with os.fdopen(fd, "rb", closefd=False) as fh:
                raw = fh.read()
        except OSError as exc:
            raise Damaged(t("reason.unreadable", detail=_os_error(exc))) from None
        finally:
            os.close(fd)
        return parse(raw, self.task_name, self.phases)

    def _candidate(self, key: str) -> _Candidate:
        path = self.paths[key]
        cand = _Candidate(key, path, self._parse_file(path))
        doc, folder = cand.doc, self.paths["artifacts"]
        for phase in doc["completed_phases"]:
            stored = doc["phase_results"].get(phase)
            if stored is None or "value" not in stored:
                continue  # not stored (unstorable): the phase runs again, no damage
            try:
                cand.results[phase] = decode(stored, folder)
            except Exception as exc:  # untrusted content: any failure to decode is damage
                cand.bad_results[phase] = _detail(exc)
        ck = doc.get("checkpoint")
        if ck is not None:
            try:
                cand.checkpoint = decode(ck["state"], folder)
            except Exception as exc:
                cand.bad_checkpoint = _detail(exc)
        return cand

    def _load_existing(self) -> None:
        main, backup = self.paths["progress"], self.paths["backup"]
        if not os.path.lexists(main) and not os.path.lexists(backup):
            return
        found: dict[str, _Candidate] = {}
        problems: dict[str, Damaged | FutureSchema] = {}
        for key in ("progress", "backup"):
            try:
                found[key] = self._candidate(key)
            except (Damaged, FutureSchema) as problem:
                problems[key] = problem
            if key == "progress" and key in found and found[key].sound:
                break  # the main file is whole: the backup is not needed
        if "progress" in found and found["progress"].sound:
            self._adopt(found["progress"])
            return
        if "backup" in found and found["backup"].sound:
            self._use_backup(found["backup"], problems.get("progress"), found.get("progress"))
            self._adopt(found["backup"])
            return
        if found:  # readable, but some artifacts are bad: keep what does not depend on them
            best = max(found.values(), key=lambda c: (len(c.kept_phases()), not c.bad_results,
                                                      c.key == "progress"))
            if best.key == "backup":
                self._use_backup(best, problems.get("progress"), found.get("progress"))
            self._salvage(best)
            return
        self._refuse(problems)

    def _use_backup(self, cand: _Candidate, problem: Damaged | FutureSchema | None,
                    main_cand: _Candidate | None) -> None:
        """Set a damaged main file aside as ``.damaged`` and say the backup is used."""
        main, kept = self.paths["progress"], self.paths["damaged"]
        if os.path.lexists(main):
            if isinstance(problem, FutureSchema):
                reason = t("reason.future", found=problem.found, ours=SCHEMA_VERSION)
            elif problem is not None:
                reason = problem.reason
            else:  # readable, but an artifact is bad
                detail = next(iter(main_cand.bad_results.values()), main_cand.bad_checkpoint)
                reason = t("reason.artifact", detail=detail)
            self._set_main_aside()
            self.notify(t("progress.damaged_backup_used", path=main, reason=reason,
                          kept=kept, backup=cand.path))
        else:
            self.notify(t("progress.missing_backup_used", path=main, backup=cand.path))

    def _set_main_aside(self) -> None:
        main = self.paths["progress"]
        if os.path.lexists(main):
            os.replace(main, self.paths["damaged"])
            fsync_dir(main.parent)

    def _salvage(self, cand: _Candidate) -> None:
        """Adopt ``cand`` without its bad parts: warn, keep damaged artifacts and the file."""
        folder = self.paths["artifacts"]
        kept_phases = cand.kept_phases()
        good_refs: set[str] = set()
        for phase in kept_phases:
            good_refs |= references(cand.doc["phase_results"][phase])
        bad_values = [cand.doc["phase_results"][p] for p in cand.bad_results]
        if cand.bad_checkpoint is not None:
            bad_values.append(cand.doc["checkpoint"]["state"])
        for stored in bad_values:
            try:
                names = references(stored)
            except ArtifactError:
                continue
            for name in sorted(names - good_refs):
                set_aside(folder, name)
        if cand.key == "progress":  # keep the file as read (the next writes rotate it away)
            replace_with_link(cand.path, self.paths["damaged"])
        if cand.bad_results:
            first = next(p for p in cand.doc["completed_phases"] if p in cand.bad_results)
            dropped = [p for p in cand.doc["completed_phases"] if p not in kept_phases]
            later = [cand.doc["current_phase"]] if cand.doc["current_phase"] not in (None, *dropped) else []
            self.notify(t("progress.results_dropped", path=cand.path, phase=first,
                          reason=t("reason.artifact", detail=cand.bad_results[first]),
                          phases=", ".join(dropped + later)))
        elif cand.bad_checkpoint is not None:
            self.notify(t("progress.checkpoint_dropped", path=cand.path,
                          phase=cand.doc["checkpoint"]["phase"],
                          reason=t("reason.artifact", detail=cand.bad_checkpoint)))
        self._adopt(cand, kept_phases, use_checkpoint=not cand.bad_results
                    and cand.bad_checkpoint is None)

    def _refuse(self, problems: Mapping[str, Damaged | FutureSchema]) -> None:
        """No usable document: exit 3 naming the newer version or the damage."""
        main, backup = self.paths["progress"], self.paths["backup"]
        first, second = problems.get("progress"), problems.get("backup")
        if isinstance(first, FutureSchema):
            raise ProgressCorrupt(t("progress.future", path=main, found=first.found,
                                    ours=SCHEMA_VERSION))
        if isinstance(second, FutureSchema):
            raise ProgressCorrupt(t("progress.future", path=backup, found=second.found,
                                    ours=SCHEMA_VERSION))
        reason = first.reason if first is not None else t("reason.missing")
        raise ProgressCorrupt(t("progress.damaged", path=main, reason=reason, task=self.task_name))

    def _set_aside_unusable(self) -> None:
        """On --restart, keep an unreadable progress file as ``.damaged`` (as promised)."""
        main = self.paths["progress"]
        if not os.path.lexists(main):
            return
        try:
            self._parse_file(main)
        except (Damaged, FutureSchema):
            self._set_main_aside()

    def _adopt(self, cand: _Candidate, kept: Sequence[str] | None = None,
               use_checkpoint: bool = True) -> None:
        doc = cand.doc
        kept = list(doc["completed_phases"]) if kept is None else list(kept)
        self.source = cand.path
        self.current_phase = doc["current_phase"]
        self.phase_results = {p: cand.results[p] for p in kept if p in cand.results}
        self.completed_phases = [p for p in kept if p in self.phase_results]
        self._stored_results = {p: doc["phase_results"][p] for p in self.completed_phases}
        self.phase_fingerprints = {p: dict(fp) for p, fp in
                                   (doc.get("phase_fingerprints") or {}).items()
                                   if p in self.completed_phases and fp is not None}
        ck = doc.get("checkpoint")
        if ck and use_checkpoint and cand.checkpoint is not None:
            self._checkpoint_state, self._checkpoint_phase = cand.checkpoint, ck["phase"]
            self._checkpoint_count = int(ck.get("count", 0))
            self._checkpoint_fingerprint = ck.get("fingerprint")
        self.start_time = float(doc["start_time"])
        self.step_count = int(doc["step_count"])
        self.resume_count = int(doc.get("resume_count", 0)) + 1
        self.is_resumed = True
        refs: set[str] = set()
        for stored in doc["phase_results"].values():
            refs |= references(stored)
        if ck:
            refs |= references(ck["state"])
        self._refs_current = refs

    def _check_fingerprints(self) -> None:
        """Refuse (or, with recompute_changed, drop) results whose inputs changed."""
        if not self.fingerprints:
            return
        changes: dict[str, tuple] = {}
        affected: list[str] = []
        stored = dict(self.phase_fingerprints)
        if self._checkpoint_phase and self._checkpoint_fingerprint is not None:
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
    def _remove_task_files(self) -> None:
        """On --restart: remove the progress file, its backup and the artifacts, never
        following a link; the lock, the owner file and ``*.damaged`` files stay."""
        for key in ("progress", "backup"):
            path = self.paths[key]
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        folder = self.paths["artifacts"]
        collect_garbage(folder, ())
        try:
            os.rmdir(folder)
        except OSError:  # absent, or damaged artifacts kept in it
            pass


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {text}"[:200]


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
    ``fingerprints``, ``restart``, ``recompute_changed``, ``notify``, ``phases``).  SIGTERM
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
    """
    validate_phase_name(name)
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
