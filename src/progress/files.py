"""Inspecting and removing progress files (``manage_progress.py``, ``--check-progress``).

Reads progress JSON without trusting it: a damaged file is reported, not raised.  A task
whose OS lock is held is running now; ``clean`` refuses to touch it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..utils.errors import TaskRunning
from ..utils.messages import register, t
from .lock import lock_is_held, read_owner
from .paths import task_paths

__all__ = ["list_tasks", "task_info", "render_check", "render_list", "clean", "is_running"]

register({
    "manage.none": {"en": "No progress files in {dir}.", "zh": "{dir} 中没有进度文件。"},
    "manage.cleaned": {"en": "Removed {n} progress file(s) of {tasks} from {dir}.",
                       "zh": "已从 {dir} 删除 {tasks} 的 {n} 个进度文件。"},
    "manage.running": {"en": "Task '{task}' is running now (process {pid}); stop it before cleaning its progress.",
                       "zh": "任务 '{task}' 正在运行（进程 {pid}）；请先停止它再清理其进度。"},
    "manage.header": {"en": "Task '{task}'", "zh": "任务 '{task}'"},
})

_SUFFIXES = ("_progress.json", "_progress.json.bak", "_progress.json.damaged", "_artifacts",
             ".lock", ".owner.json")


def list_tasks(progress_dir: str | Path) -> list[str]:
    """Names of every task with a file in ``progress_dir``."""
    d = Path(progress_dir)
    if not d.is_dir():
        return []
    names = set()
    for f in d.iterdir():
        for suffix in _SUFFIXES:
            if f.name.endswith(suffix) and not f.name.startswith("."):
                names.add(f.name[: -len(suffix)])
    return sorted(n for n in names if n)


def is_running(progress_dir: str | Path, task: str) -> bool:
    return lock_is_held(task_paths(progress_dir, task)["lock"])


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _read(path: Path) -> tuple[dict | None, str | None]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "completed_phases" not in doc:
            return None, "not a progress file"
        return doc, None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError, UnicodeDecodeError):
        return None, "damaged (not valid JSON)"


def task_info(progress_dir: str | Path, task: str) -> dict[str, Any]:
    """Status of one task: phases, steps, times, how the last run ended, running now."""
    paths = task_paths(progress_dir, task)
    doc, problem = _read(paths["progress"])
    source = "progress"
    if doc is None and paths["backup"].exists():
        doc, _ = _read(paths["backup"])
        source = "backup"
    now = time.time()
    running = is_running(progress_dir, task)
    info: dict[str, Any] = {"task_name": task, "running": running, "read_from": source,
                            "problem": problem}
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
    info["files"] = [{"path": str(p), "bytes": _size(p), "age_seconds": now - p.stat().st_mtime}
                     for key, p in paths.items() if p.exists() and key != "lock"]
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
            lines.append(f"  progress file: {i.get('problem')}")
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
                lines.append(f"  (progress file {i['problem']}; shown from its backup)")
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


def clean(progress_dir: str | Path, task: str | None) -> str:
    """Remove every file of ``task`` (or of every task); refuse a task that is running."""
    tasks = [task] if task else list_tasks(progress_dir)
    for name in tasks:
        if is_running(progress_dir, name):
            owner = read_owner(task_paths(progress_dir, name)["owner"])
            raise TaskRunning(t("manage.running", task=name, pid=owner.get("pid", "?")))
    n = 0
    folder = Path(progress_dir)
    for name in tasks:
        if folder.is_dir():  # temporary files left by a write that was killed half-way
            for stray in folder.glob(f".tmp-{name}_progress.json*"):
                stray.unlink(missing_ok=True)
        for key, path in task_paths(progress_dir, name).items():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                n += 1
            elif path.exists():
                path.unlink()
                n += 1
    return t("manage.cleaned", n=n, tasks=", ".join(tasks) or "-", dir=progress_dir)
