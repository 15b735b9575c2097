"""Where a task's files live, and which task names are allowed.

A task name becomes part of file names inside ``progress_dir``, so it is checked with a
full match against :data:`TASK_NAME_PATTERN` before any path is built from it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..utils.errors import UsageError
from ..utils.messages import register, t

__all__ = ["TASK_NAME_PATTERN", "validate_task_name", "task_paths", "DEFAULT_TASK"]

DEFAULT_TASK = "main_estimation"
TASK_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

register({
    "progress.bad_name": {
        "en": "Task name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        "zh": "任务名 {name!r} 不合法：请使用 1-100 个字母、数字、'.'、'_' 或 '-'，并以字母或数字开头。"},
})


def validate_task_name(name: str) -> str:
    """The task name, or UsageError: it must not be able to leave ``progress_dir``."""
    if not isinstance(name, str) or not TASK_NAME_PATTERN.match(name):
        raise UsageError(t("progress.bad_name", name=name))
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
