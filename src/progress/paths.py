"""Where a task's files live, which task and phase names are allowed, and refusing symlinks.

A task name becomes part of file names inside ``progress_dir``, and a phase name part of
artifact file names inside the task's artifact folder, so both are checked with a *full*
match (``re.fullmatch``: ``$`` would also match before a final newline) before any path is
built from them.  :func:`check_task_paths` refuses a task whose files are symbolic links:
the tracker writes, renames and deletes there, and must never do so through a link into
some other folder.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Mapping

from ..utils.errors import ProgressError, UsageError
from ..utils.messages import register, t

__all__ = ["TASK_NAME_PATTERN", "PHASE_NAME_PATTERN", "validate_task_name", "validate_phase_name",
           "is_safe_name", "task_paths", "check_task_paths", "ProgressPathUnsafe", "DEFAULT_TASK"]

DEFAULT_TASK = "main_estimation"
#: task names and phase names: 1-100 letters, digits, '.', '_', '-', not starting with '.'/'-'
TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PHASE_NAME_PATTERN = TASK_NAME_PATTERN

register({
    "progress.bad_name": {
        "en": "Task name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        "zh": "任务名 {name!r} 不合法：请使用 1-100 个字母、数字、'.'、'_' 或 '-'，并以字母或数字开头。"},
    "progress.bad_phase": {
        "en": "Phase name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        "zh": "阶段名 {name!r} 不合法：请使用 1-100 个字母、数字、'.'、'_' 或 '-'，并以字母或数字开头。"},
    "progress.symlink": {
        "en": "Progress path {path} is a symbolic link, which the progress tracker never follows; replace it with a real file or folder, or choose another --progress-dir.",
        "zh": "进度路径 {path} 是符号链接，进度跟踪不会跟随符号链接；请用真实的文件或文件夹替换它，或选择其他 --progress-dir。"},
})


class ProgressPathUnsafe(ProgressError):
    """A file of the task is a symbolic link (exit 3): refused, nothing is followed or deleted."""


def is_safe_name(name: object) -> bool:
    """True for a string that fully matches :data:`TASK_NAME_PATTERN` (task and phase names)."""
    return isinstance(name, str) and TASK_NAME_PATTERN.fullmatch(name) is not None


def validate_task_name(name: str) -> str:
    """The task name, or UsageError: it must not be able to leave ``progress_dir``."""
    if not is_safe_name(name):
        raise UsageError(t("progress.bad_name", name=name))
    return name


def validate_phase_name(name: str) -> str:
    """The phase name, or UsageError: it becomes part of artifact file names."""
    if not is_safe_name(name):
        raise UsageError(t("progress.bad_phase", name=name))
    return name


def task_paths(progress_dir: str | os.PathLike, task_name: str) -> dict[str, Path]:
    """Every file that belongs to a task."""
    d = Path(progress_dir)
    return {
        "progress": d / f"{task_name}_progress.json",
        "backup": d / f"{task_name}_progress.json.bak",
        "damaged": d / f"{task_name}_progress.json.damaged",
        "artifacts": d / f"{task_name}_artifacts",
        "lock": d / f"{task_name}.lock",
        "owner": d / f"{task_name}.owner.json",
    }


def check_task_paths(paths: Mapping[str, Path]) -> None:
    """Raise :class:`ProgressPathUnsafe` when any of a task's paths is a symbolic link.

    ``paths`` is what :func:`task_paths` returns.  Only the task's own entries are checked
    (``lstat``, never following them); the progress folder itself may be a link the user
    chose.  Used by the tracker at start and by ``files.clean`` before deleting.
    """
    for path in paths.values():
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError:  # unreadable folder etc.: the caller's own open/write will say so
            continue
        if stat.S_ISLNK(mode):
            raise ProgressPathUnsafe(t("progress.symlink", path=path))
