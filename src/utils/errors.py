"""Errors the user can act on, each with its exit code.

    PipelineError                 base; ``exit_code`` says how the script ends
    ├── UsageError        (2)     bad flag, config key or value
    ├── DataError         (2)     unusable input data (names the file/column and the fix)
    ├── ModelError        (2)     a model or method that cannot run with these settings
    └── ProgressError     (3)     progress that cannot be resumed
        ├── ProgressCorrupt       damaged progress file with no good backup
        ├── FingerprintMismatch   inputs changed since the progress was saved
        └── TaskRunning           the same task is running in another process

The message is one sentence, already in the user's language (see ``messages.t``).
"""

from __future__ import annotations

__all__ = ["PipelineError", "UsageError", "DataError", "ModelError", "ProgressError",
           "ProgressCorrupt", "FingerprintMismatch", "TaskRunning"]


class PipelineError(Exception):
    exit_code = 1


class UsageError(PipelineError, ValueError):
    exit_code = 2


class DataError(PipelineError, ValueError):
    exit_code = 2


class ModelError(PipelineError, ValueError):
    exit_code = 2


class ProgressError(PipelineError):
    exit_code = 3


class ProgressCorrupt(ProgressError):
    pass


class FingerprintMismatch(ProgressError):
    pass


class TaskRunning(ProgressError):
    pass
