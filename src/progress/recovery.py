"""Reading saved progress without trust, and recovering what can be recovered.

:meth:`SavedProgress.recover` chooses between ``{task}_progress.json`` and its ``.bak``,
decodes every artifact they reference and hands the tracker a :class:`Recovered`: the
completed phases (results decoded and in their stored form), fingerprints, the checkpoint
and the counters.  A damaged part costs only what depends on it: a bad checkpoint is
dropped, a bad result drops its phase and the later ones; the damaged files are kept as
``*.damaged`` and each loss is said in one warning through ``notify``.  Nothing usable:
:class:`~src.utils.errors.ProgressCorrupt` in one sentence (exit 3), nothing deleted.
Results whose inputs changed are refused (:class:`~src.utils.errors.FingerprintMismatch`)
or, with ``recompute_changed``, dropped; a dropped result is still handed over as *stale*
(``Recovered.stale``: result and the fingerprint it was computed with), so a phase made of
independent parts (one fit per number of classes) can keep the parts whose own inputs did
not change.  :meth:`SavedProgress.discard` is ``--restart``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

from ..utils.errors import FingerprintMismatch, ProgressCorrupt
from ..utils.messages import register, t
from .artifacts import ArtifactError, collect_garbage, decode, references, set_aside
from .atomic import fsync_dir, replace_with_link
from .document import SCHEMA_VERSION, Damaged, FutureSchema, parse
from .fingerprint import describe_changes, diff_fingerprints

__all__ = ["SavedProgress", "Recovered"]

register({
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
    "progress.results_dropped": {
        "en": "Warning: progress file {path}: the saved result of phase '{phase}' {reason}; {phases} will be computed again (damaged artifacts are kept as *.damaged).",
        "zh": "警告：进度文件 {path}：阶段 '{phase}' 保存的结果{reason}；将重新计算 {phases}（损坏的附属文件保留为 *.damaged）。"},
    "progress.checkpoint_dropped": {
        "en": "Warning: progress file {path}: the checkpoint of phase '{phase}' {reason}; it is dropped and the phase starts again from its beginning (completed phases are kept).",
        "zh": "警告：进度文件 {path}：阶段 '{phase}' 的检查点{reason}；已丢弃该检查点，此阶段将从头开始（已完成的阶段保留）。"},
    "progress.mismatch": {
        "en": "The saved progress of task '{task}' was computed with different inputs ({changes}), which affects {phases}; for a different analysis rerun with --task-name NEW, to redo this one rerun with --restart, or rerun with --recompute-changed to keep the phases that still match.",
        "zh": "任务 '{task}' 已保存的进度基于不同的输入（{changes}），影响阶段 {phases}；若是另一项分析，请使用 --task-name 新名称；若要重做本任务，请使用 --restart；或使用 --recompute-changed 保留仍然匹配的阶段。"},
    "progress.recompute": {"en": "Inputs changed ({changes}); recomputing {phases}",
                           "zh": "输入已改变（{changes}）；重新计算 {phases}"},
    "reason.artifact": {"en": "refers to a missing or damaged artifact ({detail})",
                        "zh": "引用的附属文件缺失或损坏（{detail}）"},
    "reason.future": {"en": "was written by a newer version of this pipeline (schema {found}, this version reads {ours})",
                      "zh": "由更新版本的程序写入（格式版本 {found}，本版本支持 {ours}）"},
})


@dataclass
class Recovered:
    """What the tracker adopts from saved progress (``resume_count`` as saved)."""

    source: Path                                  # the file the progress comes from
    current_phase: str | None
    completed_phases: list[str]
    phase_results: dict[str, Any]                 # phase -> decoded result
    stored_results: dict[str, dict]               # phase -> stored (encoded) form
    phase_fingerprints: dict[str, dict]
    checkpoint_state: Any = None                  # None: no usable checkpoint
    checkpoint_phase: str | None = None
    checkpoint_count: int = 0
    checkpoint_fingerprint: dict | None = None
    start_time: float = 0.0
    step_count: int = 0
    resume_count: int = 0
    refs: set[str] = field(default_factory=set)   # artifacts the adopted file refers to
    #: phase -> (result, its fingerprint) of completed phases dropped by recompute_changed
    stale: dict[str, tuple[Any, dict | None]] = field(default_factory=dict)


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


def _os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {text}"[:200]


class SavedProgress:
    """The saved progress of one task, read without trust.

    ``paths`` is what :func:`~src.progress.paths.task_paths` returns; ``phases`` the phase
    names the run knows (None: any safe name); ``notify`` receives the warnings.
    """

    def __init__(self, paths: Mapping[str, Path], task_name: str,
                 phases: Sequence[str] | None, notify: Callable[[str], None]) -> None:
        self.paths = paths
        self.task_name = task_name
        self.phases = phases
        self.notify = notify

    def recover(self, fingerprints: Mapping[str, Mapping[str, Any]] | None = None,
                recompute_changed: bool = False,
                rederivable: Sequence[str] = ()) -> Recovered | None:
        """What can be resumed (None: no saved progress), its results checked against
        this run's ``fingerprints`` (phase -> inputs).  ``rederivable``: phases recomputed
        without asking when only their own inputs changed (writing the results in another
        form or language redoes no estimation).  Damaged files may be set aside, never
        deleted."""
        rec = self._load()
        if rec is not None and fingerprints:
            self._check_fingerprints(rec, fingerprints, recompute_changed, rederivable)
        return rec

    def discard(self) -> None:
        """On --restart: keep an unreadable progress file as ``.damaged`` (as promised),
        then remove the progress file, its backup and the artifacts, never following a
        link; the lock, the owner file and ``*.damaged`` files stay."""
        self._set_aside_unusable()
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

    # ------------------------------------------------------------ reading
    def _load(self) -> Recovered | None:
        """The best usable document, without its bad parts; ProgressCorrupt when none."""
        main, backup = self.paths["progress"], self.paths["backup"]
        if not os.path.lexists(main) and not os.path.lexists(backup):
            return None
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
            return self._adopt(found["progress"])
        if "backup" in found and found["backup"].sound:
            self._use_backup(found["backup"], problems.get("progress"), found.get("progress"))
            return self._adopt(found["backup"])
        if found:  # readable, but some artifacts are bad: keep what does not depend on them
            best = max(found.values(), key=lambda c: (len(c.kept_phases()), not c.bad_results,
                                                      c.key == "progress"))
            if best.key == "backup":
                self._use_backup(best, problems.get("progress"), found.get("progress"))
            return self._salvage(best)
        self._refuse(problems)

    def _set_aside_unusable(self) -> None:
        main = self.paths["progress"]
        if not os.path.lexists(main):
            return
        try:
            self._parse_file(main)
        except (Damaged, FutureSchema):
            self._set_main_aside()

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

    # ------------------------------------------------------------ choosing
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

    def _salvage(self, cand: _Candidate) -> Recovered:
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
        return self._adopt(cand, kept_phases, use_checkpoint=not cand.bad_results
                           and cand.bad_checkpoint is None)

    def _refuse(self, problems: Mapping[str, Damaged | FutureSchema]) -> NoReturn:
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

    def _adopt(self, cand: _Candidate, kept: Sequence[str] | None = None,
               use_checkpoint: bool = True) -> Recovered:
        """The :class:`Recovered` of ``cand``, keeping the completed phases ``kept``."""
        doc = cand.doc
        kept = list(doc["completed_phases"]) if kept is None else list(kept)
        results = {p: cand.results[p] for p in kept if p in cand.results}
        completed = [p for p in kept if p in results]
        rec = Recovered(
            source=cand.path, current_phase=doc["current_phase"],
            completed_phases=completed, phase_results=results,
            stored_results={p: doc["phase_results"][p] for p in completed},
            phase_fingerprints={p: dict(fp) for p, fp in
                                (doc.get("phase_fingerprints") or {}).items()
                                if p in completed and fp is not None},
            start_time=float(doc["start_time"]), step_count=int(doc["step_count"]),
            resume_count=int(doc.get("resume_count", 0)))
        ck = doc.get("checkpoint")
        if ck and use_checkpoint and cand.checkpoint is not None:
            rec.checkpoint_state, rec.checkpoint_phase = cand.checkpoint, ck["phase"]
            rec.checkpoint_count = int(ck.get("count", 0))
            rec.checkpoint_fingerprint = ck.get("fingerprint")
        for stored in doc["phase_results"].values():
            rec.refs |= references(stored)
        if ck:
            rec.refs |= references(ck["state"])
        return rec

    # ------------------------------------------------------------ inputs
    def _check_fingerprints(self, rec: Recovered, fingerprints: Mapping[str, Mapping[str, Any]],
                            recompute_changed: bool, rederivable: Sequence[str] = ()) -> None:
        """Refuse (or, with recompute_changed, drop) results whose inputs changed."""
        changes: dict[str, tuple] = {}
        affected: list[str] = []
        stored = dict(rec.phase_fingerprints)
        if rec.checkpoint_phase and rec.checkpoint_fingerprint is not None:
            stored.setdefault(rec.checkpoint_phase, rec.checkpoint_fingerprint)
        for phase, new in fingerprints.items():  # in phase order
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
        if not recompute_changed and not set(affected) <= set(rederivable):
            raise FingerprintMismatch(t("progress.mismatch", task=self.task_name, changes=text,
                                        phases=", ".join(affected)))
        self.notify(t("progress.recompute", changes=text, phases=", ".join(affected)))
        for phase in affected:
            if phase in rec.completed_phases:
                rec.completed_phases.remove(phase)
                rec.stale[phase] = (rec.phase_results[phase], rec.phase_fingerprints.get(phase))
            rec.phase_results.pop(phase, None)
            rec.stored_results.pop(phase, None)
            rec.phase_fingerprints.pop(phase, None)
            if rec.checkpoint_phase == phase:
                rec.checkpoint_state, rec.checkpoint_phase = None, None
