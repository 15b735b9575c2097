"""Inspecting and removing progress files (``manage_progress.py``, ``--check-progress``).

Reads progress JSON without trusting it: each file is validated as the tracker does
(:func:`document.parse`, then every artifact it refers to decoded with its SHA-256
checked), never through a symbolic link, and a damaged file is reported, not raised.  ``clean`` works under the task's own lock (taken with
timeout 0, so a running task is refused), never deletes the lock file a run may be
holding, and never follows a symbolic link.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Callable

from ..utils.errors import ProgressError, TaskRunning
from ..utils.messages import register, t
from .artifacts import decode
from .atomic import TMP_PREFIX, temp_pattern
from .document import SCHEMA_VERSION, Damaged, FutureSchema, parse
from .lock import TaskLock, lock_is_held, read_owner
from .paths import check_task_paths, task_paths

__all__ = ["list_tasks", "task_info", "render_check", "render_list", "clean", "is_running"]

register({
    "manage.none": {"en": "No progress files in {dir}.", "zh": "{dir} 中没有进度文件。"},
    "manage.cleaned": {"en": "Removed {n} progress file(s) of {tasks} from {dir}.",
                       "zh": "已从 {dir} 删除 {tasks} 的 {n} 个进度文件。"},
    "manage.running": {"en": "Task '{task}' is running now (process {pid}); stop it before cleaning its progress.",
                       "zh": "任务 '{task}' 正在运行（进程 {pid}）；请先停止它再清理其进度。"},
    "manage.remove_failed": {"en": "Could not remove {path} ({err}); remove it by hand or fix its permissions, then clean again.",
                             "zh": "无法删除 {path}（{err}）；请手动删除或修正其权限后再次清理。"},
    "manage.lock_failed": {"en": "Could not take the lock {path} of task '{task}' ({err}); nothing was removed: make it a plain file or remove it by hand, then clean again.",
                           "zh": "无法获取任务 '{task}' 的锁 {path}（{err}）；未删除任何文件：请将其改为普通文件或手动删除后再次清理。"},
    "manage.header": {"en": "Task '{task}'", "zh": "任务 '{task}'"},
    "manage.missing": {"en": "missing", "zh": "不存在"},
    "manage.damaged": {"en": "damaged ({reason})", "zh": "已损坏（{reason}）"},
    "manage.future": {"en": "written by a newer version (schema {found}; this version reads {ours})",
                      "zh": "由更新的版本写入（模式版本 {found}；本版本读取 {ours}）"},
    "manage.artifact": {"en": "refers to a missing or changed artifact: {detail}",
                        "zh": "引用的附属文件缺失或已被修改：{detail}"},
    "manage.from_backup": {"en": "(progress file {problem}; shown from its backup, which passes its checks)",
                           "zh": "（进度文件{problem}；以下内容来自其备份，备份通过了校验）"},
    "manage.no_file": {"en": "progress file: {problem}", "zh": "进度文件：{problem}"},
    "manage.backup": {"en": "backup:        {problem}", "zh": "备份：{problem}"},
})

#: files that mean a task has progress (a lone ``{task}.lock`` does not: clean leaves it)
_PROGRESS_SUFFIXES = ("_progress.json", "_progress.json.bak", "_progress.json.damaged",
                      "_artifacts", ".owner.json")
#: the task's files ``clean`` removes, in this order (the lock and owner file are the lock's)
_CLEANED = ("progress", "backup", "damaged", "artifacts")
#: files whose interrupted atomic writes can leave temporaries in the progress folder
_TEMP_OF = ("progress", "backup", "owner")


def list_tasks(progress_dir: str | Path) -> list[str]:
    """Names of every task with progress in ``progress_dir`` (a lone lock file is none)."""
    d = Path(progress_dir)
    if not d.is_dir():
        return []
    names = set()
    for f in d.iterdir():
        for suffix in _PROGRESS_SUFFIXES:
            if f.name.endswith(suffix) and not f.name.startswith("."):
                names.add(f.name[: -len(suffix)])
    return sorted(n for n in names if n)


def is_running(progress_dir: str | Path, task: str) -> bool:
    return lock_is_held(task_paths(progress_dir, task)["lock"])


def _size(path: Path) -> int:
    """Bytes of a file or of a folder's files, never following a symbolic link."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, names in os.walk(path):  # os.walk does not descend into linked folders
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``: never through a symbolic link, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Damaged(t("reason.shape"))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _read_valid(path: Path, task: str, artifacts: Path) -> tuple[dict | None, str | None]:
    """The checked document at ``path``, or None and why it cannot be used, decided as the
    tracker decides: :func:`document.parse` (checksum, schema, task), then every artifact
    of its completed phases and checkpoint decoded with its SHA-256 checked."""
    try:
        doc = parse(_read_regular(path), task)
        for phase in doc["completed_phases"]:
            stored = doc["phase_results"].get(phase)
            if isinstance(stored, dict) and "value" in stored:
                decode(stored, artifacts)
        if doc.get("checkpoint") is not None:
            decode(doc["checkpoint"]["state"], artifacts)
    except FileNotFoundError:
        return None, t("manage.missing")
    except OSError as exc:
        return None, t("manage.damaged", reason=exc.strerror or type(exc).__name__)
    except Damaged as exc:
        return None, t("manage.damaged", reason=exc.reason)
    except FutureSchema as exc:
        return None, t("manage.future", found=exc.found, ours=SCHEMA_VERSION)
    except Exception as exc:  # untrusted content: any failure to decode is damage, as in the tracker
        return None, t("manage.damaged", reason=t("manage.artifact", detail=exc))
    return doc, None


def task_info(progress_dir: str | Path, task: str) -> dict[str, Any]:
    """Status of one task: phases, steps, times, how the last run ended, running now."""
    paths = task_paths(progress_dir, task)
    doc, problem = _read_valid(paths["progress"], task, paths["artifacts"])
    source = "progress" if doc is not None else None
    backup_problem = None
    if doc is None and os.path.lexists(paths["backup"]):
        doc, backup_problem = _read_valid(paths["backup"], task, paths["artifacts"])
        source = "backup" if doc is not None else None
    now = time.time()
    running = is_running(progress_dir, task)
    info: dict[str, Any] = {"task_name": task, "running": running, "read_from": source,
                            "problem": problem, "backup_problem": backup_problem}
    if running:
        info["owner"] = read_owner(paths["owner"])
    if doc is not None:
        ck = doc.get("checkpoint") or {}
        info.update({
            "current_phase": doc.get("current_phase"),
            "completed_phases": doc.get("completed_phases"),
            "step_count": doc.get("step_count"),
            "checkpoints": ck.get("count"),
            "start_time": doc.get("start_time"),
            "last_update": doc.get("last_update"),
            "elapsed_seconds": (doc.get("last_update") or now) - (doc.get("start_time") or now),
            "seconds_since_update": now - (doc.get("last_update") or now),
            "status": doc.get("status"),
            "end_reason": doc.get("end_reason"),
            "is_resumed": doc.get("is_resumed"),
            "schema_version": doc.get("schema_version"),
        })
        if info["status"] == "running" and not running:
            info["status"] = "killed"  # it said running, but nobody holds the lock
    files = []
    for key, p in paths.items():
        if key == "lock":
            continue
        try:
            files.append({"path": str(p), "bytes": _size(p),
                          "age_seconds": now - os.lstat(p).st_mtime})
        except OSError:
            continue
    info["files"] = files
    return info


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def render_check(progress_dir: str | Path, task: str | None, *, as_json: bool = False) -> str:
    tasks = [task] if task else list_tasks(progress_dir)
    infos = [task_info(progress_dir, name) for name in tasks]
    if as_json:
        return json.dumps(infos, indent=2, default=str)
    if not infos:
        return t("manage.none", dir=progress_dir)
    lines = []
    for i in infos:
        lines.append(t("manage.header", task=i["task_name"]))
        if "current_phase" not in i:
            lines.append("  " + t("manage.no_file", problem=i.get("problem")))
            if i.get("backup_problem"):
                lines.append("  " + t("manage.backup", problem=i["backup_problem"]))
        else:
            lines += [
                f"  current phase:     {i['current_phase']}",
                f"  completed phases:  {', '.join(i['completed_phases'] or []) or '-'}",
                f"  step count:        {i['step_count']} (checkpoints in phase: {i.get('checkpoints') or 0})",
                f"  elapsed:           {i['elapsed_seconds']:.1f} s",
                f"  last update:       {_fmt_time(i['last_update'])} ({i['seconds_since_update']:.0f} s ago)",
                f"  last run ended:    {i['status']}" + (f" ({i['end_reason']})" if i.get("end_reason") else ""),
            ]
            if i["read_from"] == "backup":
                lines.append("  " + t("manage.from_backup", problem=i["problem"]))
        lines.append(f"  running now:       {'yes, pid ' + str(i.get('owner', {}).get('pid', '?')) if i['running'] else 'no'}")
    return "\n".join(lines)


def render_list(progress_dir: str | Path, *, as_json: bool = False) -> str:
    rows = []
    for name in list_tasks(progress_dir):
        for f in task_info(progress_dir, name)["files"]:
            rows.append({"task_name": name, **f})
    if as_json:
        return json.dumps(rows, indent=2)
    if not rows:
        return t("manage.none", dir=progress_dir)
    width = max(len(r["path"]) for r in rows)
    return "\n".join(f"{r['path']:<{width}}  {r['bytes']:>10} B  {r['age_seconds']:>8.0f} s old"
                     for r in rows)


def _stray_temporaries(folder: Path, paths: dict[str, Path]) -> list[Path]:
    """Temporary files an interrupted write of this task's progress, backup or owner file
    left in ``folder`` (any naming this project has used; no other task's)."""
    patterns = [temp_pattern(paths[key].name) for key in _TEMP_OF]
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TMP_PREFIX)]
    except OSError:
        return []
    return [folder / n for n in sorted(names) if any(p.match(n) for p in patterns)]


def _remove(path: Path) -> bool:
    """Remove a file or folder, never following a symbolic link: a link is removed itself
    (shutil.rmtree removes links inside a folder, never their targets)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ProgressError(t("manage.remove_failed", path=path, err=exc.strerror or exc)) from None
    return True


def _has_files(folder: Path, paths: dict[str, Path]) -> bool:
    return (any(os.path.lexists(p) for key, p in paths.items() if key != "lock")
            or bool(_stray_temporaries(folder, paths)))


def clean(progress_dir: str | Path, task: str | None, *,
          while_locked: Callable[[list[str]], None] | None = None) -> str:
    """Remove every file of ``task`` (or of every task) but its lock file, under its lock.

    Each task's lock is taken with timeout 0 before anything is deleted, so a task that is
    running is refused (exit 3 naming the process, nothing removed) and no run can start
    while its files go; the lock file stays (a run may be waiting on it).  A task whose
    files are symbolic links is refused (exit 3).  ``while_locked(tasks)`` is called once
    every lock is held, before the first deletion (tests start a run there).
    """
    folder = Path(progress_dir)
    tasks = [task] if task else list_tasks(folder)
    todo = []
    for name in tasks:
        paths = task_paths(folder, name)
        check_task_paths(paths)
        if folder.is_dir() and _has_files(folder, paths):
            todo.append((name, paths))
    locks: list[TaskLock] = []
    try:
        for name, paths in todo:
            lock = TaskLock(name, paths["lock"], paths["owner"])
            try:
                lock.acquire()
            except TaskRunning:
                owner = read_owner(paths["owner"])
                raise TaskRunning(t("manage.running", task=name, pid=owner.get("pid", "?"))) from None
            except OSError as exc:  # e.g. a folder where the lock file should be
                raise ProgressError(t("manage.lock_failed", path=paths["lock"], task=name,
                                      err=exc.strerror or type(exc).__name__)) from None
            locks.append(lock)
            lock.write_owner()  # a run refused meanwhile names this process
        if while_locked is not None:
            while_locked([name for name, _ in todo])
        n = 0
        for name, paths in todo:
            check_task_paths(paths)  # again, right before deleting
            for key in _CLEANED:
                n += _remove(paths[key])
            for stray in _stray_temporaries(folder, paths):
                n += _remove(stray)
    finally:
        for lock in reversed(locks):
            lock.release()  # also removes the owner file this clean wrote
    return t("manage.cleaned", n=n, tasks=", ".join(tasks) or "-", dir=progress_dir)
